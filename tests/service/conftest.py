"""Fixtures on real servers: one PostgreSQL + Redis + NATS JetStream for the session, and the
service's API and worker as real processes on a database of their own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import httpx
import pytest
from audit_devtools.stack import Service, Stack

pytestmark = pytest.mark.service


def sql(url: str, query: str, *args: Any) -> list[asyncpg.Record]:
    """Run one statement with a fresh connection (tests use this to look at or damage data)."""

    async def go() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url, server_settings={"TimeZone": "UTC"})
        try:
            return await conn.fetch(query, *args)
        finally:
            await conn.close()

    return asyncio.run(go())


class Client:
    """One tenant's view of the API."""

    def __init__(self, base_url: str, key: str, tenant_id: str | None = None):
        self.http = httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=30)
        self.tenant_id = tenant_id

    def post(self, event: dict[str, Any], **kw: Any) -> httpx.Response:
        return self.http.post("/api/v1/audit/logs", json=event, **kw)

    def batch(self, events: list[dict[str, Any]], **kw: Any) -> httpx.Response:
        return self.http.post("/api/v1/audit/logs/batch", json={"events": events}, **kw)

    def list(self, **params: Any) -> httpx.Response:
        return self.http.get("/api/v1/audit/logs", params=params)

    def get(self, event_id: str) -> httpx.Response:
        return self.http.get(f"/api/v1/audit/logs/{event_id}")

    def verify(self, **params: Any) -> dict[str, Any]:
        r = self.http.get("/api/v1/audit/verify", params=params)
        assert r.status_code == 200, r.text
        return r.json()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.1, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def js_call(svc: Service, action) -> Any:
    """Run `action(js)` against the service's NATS server (a fresh connection); returns its result."""
    import nats

    async def go() -> Any:
        nc = await nats.connect(svc.stack.nats.url)  # the tests' own user: may do anything
        try:
            return await action(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(go())


def consumer_drained(svc: Service) -> bool:
    """Nothing waits for the worker: the consumer's pending and ack-pending are both 0."""
    info = js_call(svc, lambda js: js.consumer_info(svc.env["STREAM_NAME"], "audit-worker"))
    return info.num_pending == 0 and info.num_ack_pending == 0


def stored_count(url: str, tenant_id: str) -> int:
    return sql(url, "SELECT count(*) AS n FROM audit_logs WHERE tenant_id = $1", tenant_id)[0]["n"]


def wait_stored(svc: Service, tenant_id: str, n: int, timeout: float = 60.0) -> None:
    wait_for(lambda: stored_count(svc.database_url, tenant_id) >= n, timeout, what=f"{n} stored events")
    assert stored_count(svc.database_url, tenant_id) == n


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    s = Stack().start()
    yield s
    s.stop()


@pytest.fixture(scope="session")
def service(stack: Stack) -> Iterator[Service]:
    # No rate limits here (their own tests have their own services): many tests share this one.
    svc = Service(
        stack, "audit_logs", RATE_LIMIT_PER_MINUTE="0", AUTH_FAILURE_LIMIT_PER_MINUTE="0", CACHE_TTL="300"
    ).start()
    yield svc
    svc.stop()


_names = iter(range(10**6))


@pytest.fixture
def tenant(service: Service) -> Client:
    tenant_id, key = service.tenant(f"tenant-{next(_names)}-{time.monotonic_ns()}")
    return Client(service.url, key, tenant_id)


@pytest.fixture
def make_tenant(service: Service):
    def make() -> Client:
        tenant_id, key = service.tenant(f"tenant-{next(_names)}-{time.monotonic_ns()}")
        return Client(service.url, key, tenant_id)

    return make
