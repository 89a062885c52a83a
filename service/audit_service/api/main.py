"""The app's assembly: settings, lifespan, middleware, exception handlers, routers, OpenAPI."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from .. import config, jsonlog
from ..resilience import DB_UNAVAILABLE, describe
from .deps import State, json_response
from .middleware import RequestContext
from .routes import audit, health

log = logging.getLogger("audit_service.api")


def create_app(settings: config.Settings | None = None) -> FastAPI:
    settings = settings or config.load()
    jsonlog.setup(settings.log_level, "audit-api")

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        jsonlog.start_flusher()
        st = State(settings)
        app.state.audit = st
        await st.start()
        log.info("api started", extra={"settings": settings.safe_summary()})
        try:
            yield
        finally:
            await st.stop()

    app = FastAPI(
        title="Audit Log service",
        version="1.0.0",
        lifespan=lifespan,
    )
    app.add_middleware(RequestContext, timeout=settings.api_timeout, max_body=settings.max_request_bytes)

    app.add_exception_handler(RequestValidationError, invalid_input)
    for exc_type in (asyncpg.PostgresError, OSError, TimeoutError, asyncpg.InterfaceError):
        app.add_exception_handler(exc_type, database_failed)
    app.include_router(audit.router)
    app.include_router(health.router)
    app.openapi = lambda: openapi_with_bodies(app)
    return app


async def invalid_input(request: Request, exc: RequestValidationError) -> Response:
    """422 with each error's field named."""
    errors = []
    for err in exc.errors():
        errors.append(
            {
                "loc": list(err.get("loc", ())),
                "field": ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query")),
                "msg": err.get("msg"),
                "type": err.get("type"),
            }
        )
    return json_response({"detail": errors}, 422)


async def database_failed(request: Request, exc: Exception) -> Response:
    """PostgreSQL away: 503, the client may retry; any other database error: 500, logged."""
    if not isinstance(exc, DB_UNAVAILABLE):
        log.error("database error", extra={"error": str(exc), "error_type": type(exc).__name__})
        return json_response({"detail": "internal database error"}, 500)
    log.warning("database unavailable", extra={"error": describe(exc)})
    return JSONResponse({"detail": "database unavailable; retry"}, 503, headers={"Retry-After": "1"})


def openapi_with_bodies(app: FastAPI) -> dict[str, Any]:
    """The generated schema plus the ingest bodies, which those routes parse themselves."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for path, model in audit.INGEST_BODIES.items():
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(body.pop("$defs", {}))
            components[model.__name__] = body
            schema["paths"][path]["post"]["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}
                },
            }
        app.openapi_schema = schema
    return app.openapi_schema
