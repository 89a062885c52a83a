"""What the routes share: the process's State (pool, cache, NATS, key snapshot), the caller
(its tenant and principal) from its API key, and small helpers."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import asyncpg
from fastapi import Depends, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader

from .. import broker, config, db, metrics, store
from ..cache import Cache
from ..models import dumps
from ..resilience import DB_UNAVAILABLE, describe, until_nats_ready

log = logging.getLogger("audit_service.api")

KEY_CACHE_MAX = 10_000
# An unknown key is not looked up again for this long.
MISS_CACHE_SECONDS = 5.0
# How long a request waits for a new process's first key refresh (a PostgreSQL that does not
# answer at all could hold that refresh for its connect timeout).
FIRST_REFRESH_WAIT_SECONDS = 5.0


class KeySnapshot:
    """Every live API key by its hash (its tenant and id), and the tenants: what ingest checks a
    caller against without asking PostgreSQL."""

    def __init__(self) -> None:
        self._keys: dict[str, store.LiveKey] = {}
        self._tenants: set[uuid.UUID] = set()
        self.loaded = False

    def replace(self, keys: dict[str, store.LiveKey], tenants: set[uuid.UUID]) -> None:
        self._keys, self._tenants, self.loaded = keys, tenants, True

    def add(self, digest: str, key: store.LiveKey) -> None:
        self._keys[digest] = key
        self._tenants.add(key.tenant_id)

    def get(self, digest: str) -> store.LiveKey | None:
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
        # Set once the first refresh has loaded keys, or found neither PostgreSQL nor a mirror.
        self._first_refresh = asyncio.Event()

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
            self._first_refresh.set()
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

    async def live_key(self, key: str) -> store.LiveKey | None:
        """A live API key (its tenant and id). Known keys are answered from the key snapshot, so
        ingest needs no database; only an unknown key is looked up (a key made since the last
        refresh), and a bad key's miss is remembered briefly so that a flood of them does not
        reach the database."""
        digest = store.hash_key(key)
        found = self.keys.get(digest)
        if found is None and not self.keys.loaded:
            # A process that has just started: its first refresh (from PostgreSQL, or from the
            # Redis mirror while PostgreSQL is away) answers, not a lookup that fails the same way.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._first_refresh.wait(), FIRST_REFRESH_WAIT_SECONDS)
            found = self.keys.get(digest)
        if found is not None:
            return found
        now = time.monotonic()
        if self._misses.get(digest, 0.0) > now:
            return None
        try:
            found = await store.live_key(self.pool, digest)
        except DB_UNAVAILABLE:
            # PostgreSQL is away: a key made since this process's last refresh is still known if
            # another process refreshed since and mirrored it to Redis.
            found = await self.mirrored_key(digest)
            if found is None:
                raise
            self.keys.add(digest, found)
            return found
        if found is None:
            if len(self._misses) >= KEY_CACHE_MAX:
                self._misses.clear()
            self._misses[digest] = now + MISS_CACHE_SECONDS
        else:
            self.keys.add(digest, found)
        return found

    async def mirrored_key(self, digest: str) -> store.LiveKey | None:
        """A live key from the Redis mirror of the key snapshot, or None (not there, no mirror)."""
        mirrored = await self.cache.mirrored_keys()
        return mirrored[0].get(digest) if mirrored else None

    def is_admin_key(self, key: str | None) -> bool:
        return bool(key and self.admin_hash and hmac.compare_digest(store.hash_key(key), self.admin_hash))

    async def tenant_exists(self, tenant_id: uuid.UUID) -> bool:
        return self.keys.has_tenant(tenant_id) or await store.tenant_exists(self.pool, tenant_id)


def invalid_query(name: str, msg: str, kind: str = "value_error") -> RequestValidationError:
    """A 422 in the documented shape (a list naming the parameter), like pydantic's own."""
    return RequestValidationError([{"type": kind, "loc": ("query", name), "msg": msg, "input": None}])


def get_state(request: Request) -> State:
    return request.app.state.audit


api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="Tenant or admin API key")


# Where authenticate leaves the request's tenant for the request's log line.
TENANT_STATE = "audit_tenant_id"

# The principal of what the admin key submits (a tenant key's is its id, a UUID).
ADMIN_PRINCIPAL = "admin"


@dataclass(frozen=True)
class Caller:
    """Whom a request acts for (tenant_id) and who sends it (principal, stored with its events)."""

    tenant_id: uuid.UUID
    principal: str


async def authenticate(
    request: Request,
    api_key: Annotated[str | None, Depends(api_key_header)],
    tenant_id: Annotated[uuid.UUID | None, Query(description="Tenant to act for (admin key only)")] = None,
) -> Caller:
    st = get_state(request)
    if not api_key:
        raise HTTPException(401, "missing X-API-Key header", headers={"WWW-Authenticate": "ApiKey"})
    if st.is_admin_key(api_key):
        if tenant_id is None:
            raise invalid_query("tenant_id", "the admin key must name tenant_id", "missing")
        if not await st.tenant_exists(tenant_id):
            raise HTTPException(404, "tenant not found")
        _log_tenant(request, tenant_id)
        return Caller(tenant_id, ADMIN_PRINCIPAL)
    key = await st.live_key(api_key)
    if key is None:
        await _count_auth_failure(request)
        raise HTTPException(401, "invalid API key", headers={"WWW-Authenticate": "ApiKey"})
    if tenant_id is not None and tenant_id != key.tenant_id:
        raise HTTPException(403, "this key belongs to another tenant")
    _log_tenant(request, key.tenant_id)
    return Caller(key.tenant_id, str(key.key_id))


def _log_tenant(request: Request, tenant_id: uuid.UUID) -> None:
    """The tenant a request acts for, on its "Request completed" line (api/middleware.py): the
    runbooks' log analysis counts each tenant's errors."""
    request.scope.setdefault("state", {})[TENANT_STATE] = str(tenant_id)


Authenticated = Annotated[Caller, Depends(authenticate)]


async def caller_tenant(caller: Authenticated) -> uuid.UUID:
    return caller.tenant_id


async def _count_auth_failure(request: Request) -> None:
    """Guessing keys is slowed down: past AUTH_FAILURE_LIMIT_PER_MINUTE failures from one address in
    a minute, its requests with a bad key get 429 (its good keys keep working)."""
    st = get_state(request)
    limit = st.settings.auth_failure_limit_per_minute
    source = request.client.host if request.client else "unknown"
    if limit and await st.cache.auth_failures(source) > limit:
        metrics.auth_failures_limited.inc()
        raise HTTPException(
            429, "too many failed authentications from this address", headers={"Retry-After": "60"}
        )


def is_admin(request: Request) -> bool:
    return get_state(request).is_admin_key(request.headers.get("x-api-key"))


Tenant = Annotated[uuid.UUID, Depends(caller_tenant)]


def json_response(body: Any, status: int = 200) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")
