"""The one ASGI middleware: correlation id, request log lines, metrics, body limit, timeout."""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
import uuid
from typing import Any

from fastapi import HTTPException

from .. import jsonlog, metrics
from ..models import dumps
from .deps import TENANT_STATE

log = logging.getLogger("audit_service.api")

CORRELATION_RE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


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
            done = {"method": method, "path": path, "status": status, "duration_ms": round(elapsed * 1000, 2)}
            state = scope.get("state")
            if isinstance(state, dict) and TENANT_STATE in state:
                done["tenant_id"] = state[TENANT_STATE]
            log.info("Request completed", extra=done)
            jsonlog.correlation_id.reset(token)
