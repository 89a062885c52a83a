"""The HTTP API (DESIGN.md section 3, "HTTP contract")."""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import random
import re
import time
import uuid
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import asyncpg
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import APIKeyHeader
from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError
from pydantic import BaseModel, ValidationError

from . import broker, chain, config, db, jsonlog, metrics, store
from .cache import Cache
from .models import (
    INT64,
    Accepted,
    BatchAccepted,
    BatchIn,
    EventIn,
    EventOut,
    EventPage,
    HealthOut,
    Timestamp,
    VerifyOut,
    dumps,
)
from .resilience import DB_UNAVAILABLE, describe, until_nats_ready

log = logging.getLogger("audit_service.api")

CORRELATION_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
KEY_CACHE_MAX = 10_000
# An unknown key is not looked up again for this long.
MISS_CACHE_SECONDS = 5.0
PROBE_TIMEOUT = 2.0
# Seconds a client is asked to wait when the stream is full: the worker frees room in batches.
QUEUE_FULL_RETRY_AFTER = 5


class KeySnapshot:
    """Every live API key's hash with its tenant, and the tenants: what ingest checks a caller
    against without asking PostgreSQL."""

    def __init__(self) -> None:
        self._keys: dict[str, uuid.UUID] = {}
        self._tenants: set[uuid.UUID] = set()
        self.loaded = False

    def replace(self, keys: dict[str, uuid.UUID], tenants: set[uuid.UUID]) -> None:
        self._keys, self._tenants, self.loaded = keys, tenants, True

    def add(self, digest: str, tenant: uuid.UUID) -> None:
        self._keys[digest] = tenant
        self._tenants.add(tenant)

    def tenant(self, digest: str) -> uuid.UUID | None:
        return self._keys.get(digest)

    def has_tenant(self, tenant_id: uuid.UUID) -> bool:
        return tenant_id in self._tenants


class State:
    """Everything the routes share; one per process."""

    def __init__(self, settings: config.Settings):
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self.cache = Cache(settings)
        self.nc: Any = None
        self.js: Any = None
        self.keys = KeySnapshot()
        self._misses: dict[str, float] = {}
        self.admin_hash = store.hash_key(settings.admin_api_key) if settings.admin_api_key else None
        self._nats_task: asyncio.Task[None] | None = None
        self._keys_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # min_size=0: the API starts (and reports unhealthy) while PostgreSQL is down.
        self.pool = await db.create_pool(self.settings, "audit-api", min_size=0)
        self._nats_task = asyncio.create_task(self._connect_nats())
        self._keys_task = asyncio.create_task(self._refresh_keys())

    async def _refresh_keys(self) -> None:
        """Keep the key snapshot current: from PostgreSQL every API_KEY_REFRESH_SECONDS (and
        mirrored to Redis); while PostgreSQL is away the last snapshot stays in use, and a process
        that starts then takes the mirror from Redis. A revoked key stops working within one
        refresh."""
        while True:
            try:
                async with self.pool.acquire() as conn:
                    keys, tenants = await store.live_keys(conn)
                self.keys.replace(keys, tenants)
                await self.cache.mirror_keys(keys, tenants)
            except DB_UNAVAILABLE + (asyncpg.PostgresError,) as exc:
                if not self.keys.loaded:
                    mirrored = await self.cache.mirrored_keys()
                    if mirrored is not None:
                        self.keys.replace(*mirrored)
                        log.warning("keys from the redis mirror: database unavailable")
                log.debug("key refresh failed", extra={"error": describe(exc)})
            await asyncio.sleep(self.settings.api_key_refresh_seconds)

    async def _connect_nats(self) -> None:
        """Connect (retried until it works), then say what is wrong with the stream, if anything.

        The stream belongs to the deployment (role nats): the API publishes to it and never
        creates or changes it. A missing stream shows in health (nats unhealthy) and refuses
        ingest with 503, so an operator sees it at once.
        """
        self.nc, self.js = await until_nats_ready(lambda: broker.connect(self.settings, "audit-api"), log)
        try:
            problems = await broker.check_stream(self.js, self.settings)
        except Exception as exc:  # noqa: BLE001 - health reports it from now on
            problems = [describe(exc)]
        metrics.stream_problems.set(len(problems))
        for problem in problems:
            log.error("stream misconfigured", extra={"error": problem})
        log.info("nats ready", extra={"stream": self.settings.stream_name})

    async def stop(self) -> None:
        for task in (self._nats_task, self._keys_task):
            if task:
                task.cancel()
        if self.nc is not None:
            await self.nc.drain()
        if self.pool is not None:
            await self.pool.close()
        await self.cache.close()

    async def tenant_for_key(self, key: str) -> uuid.UUID | None:
        """The tenant of a live API key. Known keys are answered from the key snapshot, so
        ingest needs no database; only an unknown key is looked up (a key made since the last
        refresh), and a bad key's miss is remembered briefly so that a flood of them does not
        reach the database."""
        digest = store.hash_key(key)
        tenant = self.keys.tenant(digest)
        if tenant is not None:
            return tenant
        now = time.monotonic()
        if self._misses.get(digest, 0.0) > now:
            return None
        tenant = await store.tenant_for_key_hash(self.pool, digest)
        if tenant is None:
            if len(self._misses) >= KEY_CACHE_MAX:
                self._misses.clear()
            self._misses[digest] = now + MISS_CACHE_SECONDS
        else:
            self.keys.add(digest, tenant)
        return tenant

    async def tenant_exists(self, tenant_id: uuid.UUID) -> bool:
        return self.keys.has_tenant(tenant_id) or await store.tenant_exists(self.pool, tenant_id)


def _invalid_query(name: str, msg: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 in the documented shape (a list naming the parameter), like pydantic's own."""
    return RequestValidationError([{"type": kind, "loc": ("query", name), "msg": msg, "input": None}])


def _state(request: Request) -> State:
    return request.app.state.audit


api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Tenant or admin API key")


async def caller_tenant(
    request: Request,
    api_key: Annotated[str | None, Depends(api_key_header)],
    tenant_id: Annotated[uuid.UUID | None, Query(description="Tenant to act for (admin key only)")] = None,
) -> uuid.UUID:
    st = _state(request)
    if not api_key:
        raise HTTPException(401, "missing X-API-Key header", headers={"WWW-Authenticate": "ApiKey"})
    if st.admin_hash and hmac.compare_digest(store.hash_key(api_key), st.admin_hash):
        if tenant_id is None:
            raise _invalid_query("tenant_id", "the admin key must name tenant_id", "missing")
        if not await st.tenant_exists(tenant_id):
            raise HTTPException(404, "tenant not found")
        return tenant_id
    tenant = await st.tenant_for_key(api_key)
    if tenant is None:
        await _count_auth_failure(request)
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "ApiKey"})
    if tenant_id is not None and tenant_id != tenant:
        raise HTTPException(403, "this key belongs to another tenant")
    return tenant


async def _count_auth_failure(request: Request) -> None:
    """Guessing keys is slowed down: past AUTH_FAILURE_LIMIT_PER_MINUTE failures from one address in
    a minute, its requests with a bad key get 429 (its good keys keep working)."""
    st = _state(request)
    limit = st.settings.auth_failure_limit_per_minute
    source = request.client.host if request.client else "unknown"
    if limit and await st.cache.auth_failures(source) > limit:
        metrics.auth_failures_limited.inc()
        raise HTTPException(
            429, "too many failed authentications from this address", headers={"Retry-After": "60"}
        )


def is_admin(request: Request) -> bool:
    st = _state(request)
    key = request.headers.get("x-api-key")
    return bool(key and st.admin_hash and hmac.compare_digest(store.hash_key(key), st.admin_hash))


Tenant = Annotated[uuid.UUID, Depends(caller_tenant)]


def _json(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


# --- ingest -----------------------------------------------------------------------------------


async def _accept(request: Request, tenant_id: uuid.UUID, events: list[EventIn]) -> list[str]:
    st = _state(request)
    retry_after = await st.cache.take(tenant_id, len(events))
    if retry_after is not None:
        metrics.events_rejected.labels("rate_limited").inc(len(events))
        raise HTTPException(
            429, "ingest rate limit reached for this tenant", headers={"Retry-After": str(retry_after)}
        )
    if st.js is None or st.nc is None or not st.nc.is_connected:
        metrics.events_rejected.labels("queue_unavailable").inc(len(events))
        raise HTTPException(503, "event queue unavailable; retry", headers={"Retry-After": "1"})
    received_at = chain.utcnow()
    docs = []
    fresh = iter(new_event_ids(sum(1 for e in events if e.event_id is None)))
    for e in events:
        doc = e.model_dump()
        doc["event_id"] = str(doc["event_id"]) if doc["event_id"] else next(fresh)
        doc["occurred_at"] = doc["occurred_at"] or received_at
        docs.append(doc)
    ids = [d["event_id"] for d in docs]
    payload = broker.encode(tenant_id, received_at, jsonlog.correlation_id.get(), docs)
    try:
        await broker.publish(st.js, st.nc, st.settings, tenant_id, payload, ids)
    except broker.PayloadTooLarge as exc:
        metrics.events_rejected.labels("too_large").inc(len(events))
        raise HTTPException(413, str(exc)) from None
    except (NatsError, TimeoutError, OSError) as exc:
        if broker.is_store_full(exc):
            # Back-pressure: the stream holds only unstored events (the worker trims stored ones).
            metrics.events_rejected.labels("queue_full").inc(len(events))
            log.warning("publish refused: stream full", extra={"error": str(exc)})
            raise HTTPException(
                503, "event queue full; retry later", headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER)}
            ) from None
        metrics.events_rejected.labels("queue_unavailable").inc(len(events))
        log.warning("publish failed", extra={"error": describe(exc)})
        raise HTTPException(
            503, "event queue did not acknowledge; retry", headers={"Retry-After": "1"}
        ) from None
    metrics.events_accepted.inc(len(events))
    return ids


def new_event_ids(n: int) -> list[str]:
    """n random version-4 UUIDs, as text, from one read of the OS's random source (uuid4()
    reads it once per id, and builds an object that would only be turned back into text)."""
    raw = bytearray(os.urandom(16 * n))
    out = []
    for i in range(0, 16 * n, 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40  # version 4
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80  # RFC 4122 variant
        h = raw[i : i + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


# --- app --------------------------------------------------------------------------------------


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

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
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
        return _json({"detail": errors}, 422)

    @app.exception_handler(asyncpg.PostgresError)
    @app.exception_handler(OSError)
    @app.exception_handler(TimeoutError)
    @app.exception_handler(asyncpg.InterfaceError)
    async def _unavailable(request: Request, exc: Exception) -> Response:
        if not isinstance(exc, DB_UNAVAILABLE):
            log.error("database error", extra={"error": str(exc), "error_type": type(exc).__name__})
            return _json({"detail": "internal database error"}, 500)
        log.warning("database unavailable", extra={"error": describe(exc)})
        return JSONResponse({"detail": "database unavailable; retry"}, 503, headers={"Retry-After": "1"})

    @app.post("/api/v1/audit/logs", status_code=202, response_model=Accepted, tags=["audit"])
    async def ingest_one(request: Request, tenant: Tenant) -> Response:
        event = await parse_body(request, EventIn)
        ids = await _accept(request, tenant, [event])
        return _json({"id": ids[0], "status": "accepted"}, 202)

    @app.post("/api/v1/audit/logs/batch", status_code=202, response_model=BatchAccepted, tags=["audit"])
    async def ingest_batch(request: Request, tenant: Tenant) -> Response:
        batch = await parse_body(request, BatchIn)
        ids = await _accept(request, tenant, batch.events)
        return _json({"accepted": len(ids), "ids": ids}, 202)

    @app.get("/api/v1/audit/logs", response_model=EventPage, tags=["audit"])
    async def list_events(
        request: Request,
        tenant: Tenant,
        actor: Annotated[str | None, Query(max_length=256)] = None,
        action: Annotated[str | None, Query(max_length=256)] = None,
        target: Annotated[str | None, Query(max_length=1024)] = None,
        outcome: Literal["success", "failure", "unknown"] | None = None,
        since: Timestamp | None = None,
        until: Timestamp | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
        cursor: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        st = _state(request)
        for name, value in (("actor", actor), ("action", action), ("target", target)):
            if value is not None and "\x00" in value:
                raise _invalid_query(name, "must not contain NUL characters")
        before = None
        if cursor is not None:
            try:
                before = store.decode_cursor(cursor)
                if before >= INT64:
                    raise ValueError("cursor is not one this API returned")
            except ValueError as exc:
                raise _invalid_query("cursor", str(exc)) from None
        params = {
            "actor": actor,
            "action": action,
            "target": target,
            "outcome": outcome,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "limit": limit,
            "cursor": before,
        }
        body, cache_key = await st.cache.get_query(tenant, params)
        if body is not None:
            return Response(body, media_type="application/json", headers={"X-Cache": "hit"})
        items, next_seq = await store.query_events(
            st.pool,
            tenant,
            actor=actor,
            action=action,
            target=target,
            outcome=outcome,
            since=since,
            until=until,
            limit=limit,
            before_seq=before,
        )
        body = dumps({"items": items, "next_cursor": store.encode_cursor(next_seq) if next_seq else None})
        if cache_key:
            await st.cache.put_query(cache_key, body)
        return Response(body, media_type="application/json", headers={"X-Cache": "miss"})

    @app.get(
        "/api/v1/audit/logs/{event_id}",
        response_model=EventOut,
        tags=["audit"],
        responses={404: {"description": "No such event for this tenant"}},
    )
    async def get_event(request: Request, event_id: uuid.UUID, tenant: Tenant) -> Response:
        event = await store.get_event(_state(request).pool, tenant, event_id)
        if event is None:
            raise HTTPException(404, "event not found")
        return _json(event)

    @app.get("/api/v1/audit/verify", response_model=VerifyOut, tags=["audit"])
    async def verify(
        request: Request, tenant: Tenant, since: Timestamp | None = None, until: Timestamp | None = None
    ) -> Response:
        result = await store.verify(_state(request).pool, tenant, since, until)
        if not result.valid:
            metrics.chain_verify_invalid.inc()  # alert AuditChainVerifyFailing
        return _json(result.as_dict())

    @app.get("/health", tags=["health"])
    async def liveness() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/api/v1/metrics/health",
        response_model=HealthOut,
        tags=["health"],
        responses={503: {"description": "Unhealthy", "model": HealthOut}},
    )
    async def health(request: Request) -> Response:
        st = _state(request)
        components = await probe_components(st)
        status = overall_status(components)
        if not is_admin(request):
            # Anonymous callers (the public, through nginx) learn the state, not the internals.
            components = {
                name: {k: v for k, v in c.items() if k != "error"} for name, c in components.items()
            }
        return _json({"status": status, "components": components}, 503 if status == "unhealthy" else 200)

    @app.get("/api/v1/metrics/stats", tags=["health"])
    async def stats(request: Request) -> Response:
        st = _state(request)
        out: dict[str, Any] = {"database": db.pool_stats(st.pool, settings.database_pool_size)}
        out["cache"] = await st.cache.stats()
        try:
            if st.js is None:
                raise RuntimeError("not connected")
            out["queue"] = await asyncio.wait_for(broker.queue_stats(st.js, settings), PROBE_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - reported, not raised
            out["queue"] = {"stream": settings.stream_name, "error": describe(exc)}
        return _json(out)

    @app.get("/api/v1/metrics", tags=["health"], response_class=Response)
    async def prometheus(request: Request) -> Response:
        await refresh_gauges(_state(request))
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    app.openapi = lambda: openapi_with_bodies(app)
    return app


# The ingest bodies are parsed by pydantic's Rust JSON parser straight into the models
# (model_validate_json), which is several times cheaper than FastAPI's json.loads followed by
# validation; the routes then declare their bodies to OpenAPI themselves.
INGEST_BODIES = {"/api/v1/audit/logs": EventIn, "/api/v1/audit/logs/batch": BatchIn}


async def parse_body(request: Request, model: type[BaseModel]) -> Any:
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


def openapi_with_bodies(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for path, model in INGEST_BODIES.items():
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


async def _timed(coro: Any) -> dict[str, Any]:
    start = time.perf_counter()
    try:
        await asyncio.wait_for(coro, PROBE_TIMEOUT)
        return {"status": "healthy", "latency_ms": round((time.perf_counter() - start) * 1000, 2)}
    except Exception as exc:  # noqa: BLE001 - a failed probe is a finding, not an error
        return {
            "status": "unhealthy",
            "latency_ms": round((time.perf_counter() - start) * 1000, 2),
            "error": describe(exc),
        }


async def _nats_probe(st: State) -> None:
    if st.nc is None or not st.nc.is_connected:
        raise ConnectionError("not connected")
    problems = await broker.check_stream(st.js, st.settings)
    metrics.stream_problems.set(len(problems))


async def _worker_probe(st: State) -> None:
    """Is a worker consuming? Its durable consumer exists, and messages that wait are pulled."""
    if st.nc is None or not st.nc.is_connected:
        raise ConnectionError("not connected")
    try:
        c = await st.js.consumer_info(st.settings.stream_name, broker.CONSUMER)
    except NotFoundError:
        raise LookupError(f"consumer {broker.CONSUMER} does not exist: no worker is consuming") from None
    if c.num_pending and not c.num_ack_pending and not c.num_waiting:
        raise RuntimeError(f"{c.num_pending} messages wait and no worker pulls them")


async def probe_components(st: State) -> dict[str, Any]:
    database, redis_, nats_, worker = await asyncio.gather(
        _timed(st.pool.fetchval("SELECT 1")),
        _timed(st.cache.ping()),
        _timed(_nats_probe(st)),
        _timed(_worker_probe(st)),
    )
    components = {"database": database, "redis": redis_, "nats": nats_, "worker": worker}
    for name, comp in components.items():
        metrics.component_up.labels(name).set(1 if comp["status"] == "healthy" else 0)
    return components


def overall_status(components: dict[str, Any]) -> str:
    # Without PostgreSQL nothing can be read, without NATS nothing can be written: unhealthy.
    # Without Redis only the cache and the rate limit are lost, and without a worker events wait
    # in the stream (nothing is lost, reads fall behind): degraded.
    if any(components[c]["status"] != "healthy" for c in ("database", "nats")):
        return "unhealthy"
    if any(components[c]["status"] != "healthy" for c in ("redis", "worker")):
        return "degraded"
    return "healthy"


async def refresh_gauges(st: State) -> None:
    for state, value in db.pool_stats(st.pool, st.settings.database_pool_size).items():
        metrics.db_pool.labels(state).set(value)
    try:
        q = await asyncio.wait_for(broker.queue_stats(st.js, st.settings), PROBE_TIMEOUT)
        metrics.queue_messages.set(q["messages"])
        metrics.queue_bytes.set(q["bytes"])
        metrics.queue_max_bytes.set(max(q["max_bytes"] or 0, 0))
        if q.get("consumer_pending") is not None:
            metrics.queue_pending.set(q["consumer_pending"])
            metrics.queue_ack_pending.set(q["consumer_ack_pending"])
    except Exception as exc:  # noqa: BLE001
        log.debug("queue stats unavailable", extra={"error": str(exc)})
    try:
        held = await asyncio.wait_for(store.count_dead_letters(st.pool), PROBE_TIMEOUT)
        metrics.dead_letters_held.set(held)
    except Exception as exc:  # noqa: BLE001
        log.debug("dead letters unavailable", extra={"error": str(exc)})
    try:
        heads = await asyncio.wait_for(store.chain_heads(st.pool), PROBE_TIMEOUT)
        for h in heads:
            metrics.chain_head_seq.labels(str(h["tenant_id"])).set(h["seq"])
    except Exception as exc:  # noqa: BLE001
        log.debug("chain heads unavailable", extra={"error": str(exc)})


async def _send_json(send: Any, status: int, doc: Any) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": dumps(doc)})


class RequestContext:
    """Correlation id, the request log lines, metrics, MAX_REQUEST_BYTES and API_TIMEOUT, as one
    layer of plain ASGI: every layer of middleware costs each request its own wrapping."""

    def __init__(self, app: Any, timeout: float, max_body: int):
        self.app = app
        self.timeout = timeout
        self.max_body = max_body

    def _limit_body(self, scope: dict[str, Any], receive: Any) -> Any:
        """Refuse a body over the limit: at once by its Content-Length, else while it streams."""
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                raise HTTPException(413, f"request body larger than MAX_REQUEST_BYTES={self.max_body}")
        received = 0

        async def limited() -> dict[str, Any]:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_body:
                raise HTTPException(413, f"request body larger than MAX_REQUEST_BYTES={self.max_body}")
            return message

        return limited

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cid = None
        for name, value in scope["headers"]:
            if name == b"x-correlation-id":
                text = value.decode("latin-1")
                cid = text if CORRELATION_RE.match(text) else None
                break
        # Not uuid4(): a correlation id needs no OS randomness, and each read is a system call.
        cid = cid or str(uuid.UUID(int=random.getrandbits(128), version=4))
        token = jsonlog.correlation_id.set(cid)
        method, path = scope["method"], scope["path"]
        log.info("Incoming request", extra={"method": method, "path": path})
        start = time.perf_counter()
        status = 500
        started = False

        async def send_with_id(message: dict[str, Any]) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-correlation-id", cid.encode())]
            await send(message)

        try:
            deadline = asyncio.timeout(self.timeout)
            try:
                async with deadline:
                    if method in ("POST", "PUT", "PATCH"):
                        try:
                            receive = self._limit_body(scope, receive)
                        except HTTPException as exc:
                            await _send_json(send_with_id, exc.status_code, {"detail": exc.detail})
                            return
                    await self.app(scope, receive, send_with_id)
            except TimeoutError:
                if not deadline.expired() or started:
                    raise
                await _send_json(
                    send_with_id, 504, {"detail": f"request took longer than API_TIMEOUT={self.timeout}s"}
                )
        finally:
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            label = getattr(route, "path", "unmatched")
            metrics.http_requests.labels(method, label, str(status)).inc()
            metrics.http_latency.labels(method, label).observe(elapsed)
            log.info(
                "Request completed",
                extra={
                    "method": method,
                    "path": path,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            jsonlog.correlation_id.reset(token)
