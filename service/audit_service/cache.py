"""Redis: the per-tenant ingest rate limit and the optional query cache.

Redis is an optimisation here, never a dependency of correctness: when it fails, the rate limit
lets requests through, the cache is skipped, and after a failure Redis is left alone for a short
while so that a dead server does not add its timeout to every request.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .store import LiveKey

log = logging.getLogger(__name__)

BACKOFF_SECONDS = 2.0
RATE_WINDOW_SECONDS = 60
RESERVE_MAX = 100


class Cache:
    def __init__(self, settings: Any):
        self.settings = settings
        self.client = redis.Redis.from_url(
            settings.redis_url,
            socket_timeout=0.5,
            socket_connect_timeout=0.5,
            health_check_interval=0,
            # One quick retry on a fresh connection: pooled connections go stale when Redis restarts.
            retry=Retry(NoBackoff(), 1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
        self._down_until = 0.0
        self.hits = 0
        self.misses = 0
        self.errors = 0
        self._reserved: dict[Any, tuple[int, int]] = {}  # tenant -> (window, tokens held here)
        # Keys that are per deployment carry its database's name: deployments (and tests) may
        # share a Redis server.
        self._namespace = urlsplit(settings.database_url or "").path.lstrip("/") or "default"

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._down_until

    def _failed(self, exc: Exception, what: str) -> None:
        self.errors += 1
        self._down_until = time.monotonic() + BACKOFF_SECONDS
        log.warning("redis unavailable", extra={"operation": what, "error": str(exc)})

    async def ping(self) -> None:
        await self.client.ping()
        self._down_until = 0.0

    async def close(self) -> None:
        await self.client.aclose()

    # --- the API key mirror ------------------------------------------------------------------

    @property
    def _keys_name(self) -> str:
        return f"audit:keys:{self._namespace}"

    async def mirror_keys(self, keys: dict[str, LiveKey], tenants: set[Any]) -> None:
        """Keep a copy of the key snapshot for API processes that start while PostgreSQL is down."""
        if not self.available:
            return
        # "keys" (digest: tenant) is the shape older releases read; "key_ids" came with principals.
        doc = orjson.dumps(
            {
                "keys": {k: str(v.tenant_id) for k, v in keys.items()},
                "key_ids": {k: str(v.key_id) for k, v in keys.items()},
                "tenants": [str(t) for t in tenants],
            }
        )
        try:
            await self.client.set(self._keys_name, doc)
        except RedisError as exc:
            self._failed(exc, "mirror keys")

    async def mirrored_keys(self) -> tuple[dict[str, LiveKey], set[uuid.UUID]] | None:
        """The mirrored snapshot; None when there is none, or an older release wrote it (no key
        ids: the keys' principals would be unknown)."""
        try:
            raw = await self.client.get(self._keys_name)
        except RedisError as exc:
            self._failed(exc, "read mirrored keys")
            return None
        if raw is None:
            return None
        doc = orjson.loads(raw)
        if "key_ids" not in doc:
            return None
        keys = {k: LiveKey(uuid.UUID(t), uuid.UUID(doc["key_ids"][k])) for k, t in doc["keys"].items()}
        return keys, {uuid.UUID(t) for t in doc["tenants"]}

    # --- rate limit -------------------------------------------------------------------------

    async def take(self, tenant_id: Any, count: int) -> int | None:
        """Count `count` events against the tenant's minute window.

        Returns None when allowed, else the seconds until the window resets (Retry-After).
        Tokens are taken from Redis a few at a time beyond the request's own (at most a
        thousandth of the limit), so a busy tenant costs a Redis round trip per batch of
        requests, not per request; with a small limit the count stays exact.
        """
        limit = self.settings.rate_limit_per_minute
        if limit == 0 or not self.available:
            return None
        now = time.time()
        window = int(now // RATE_WINDOW_SECONDS)
        held_window, held = self._reserved.get(tenant_id, (window, 0))
        if held_window == window and held >= count:
            self._reserved[tenant_id] = (window, held - count)
            return None
        extra = min(RESERVE_MAX, limit // 1000)
        key = f"audit:rate:{tenant_id}:{window}"
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.incrby(key, count + extra)
                pipe.expire(key, RATE_WINDOW_SECONDS * 2)
                used, _ = await pipe.execute()
            if used <= limit:
                self._reserved[tenant_id] = (window, extra)
                return None
            over = used - limit
            if over <= extra:  # the request fits; only part of the reserve does not
                await self.client.decrby(key, over)
                self._reserved[tenant_id] = (window, extra - over)
                return None
            # Refused: give the tokens back so that it does not use up the next ones.
            await self.client.decrby(key, count + extra)
        except (RedisError, OSError) as exc:
            self._failed(exc, "rate_limit")
            return None
        self._reserved[tenant_id] = (window, 0)
        return max(1, int((window + 1) * RATE_WINDOW_SECONDS - now + 0.999))

    async def auth_failures(self, source: str) -> int:
        """Count one failed authentication from `source` in this minute; returns the count so far
        (0 when Redis is away: the limit then does not apply)."""
        if not self.available:
            return 0
        key = f"audit:authfail:{self._namespace}:{source}:{int(time.time() // RATE_WINDOW_SECONDS)}"
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.incr(key)
                pipe.expire(key, RATE_WINDOW_SECONDS * 2)
                count, _ = await pipe.execute()
            return int(count)
        except (RedisError, OSError) as exc:
            self._failed(exc, "auth_failures")
            return 0

    # --- query cache ------------------------------------------------------------------------

    async def _generation(self, tenant_id: Any) -> bytes:
        return await self.client.get(f"audit:gen:{tenant_id}") or b"0"

    def _key(self, tenant_id: Any, generation: bytes, params: dict[str, Any]) -> str:
        digest = hashlib.sha256(orjson.dumps(params, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
        return f"audit:q:{tenant_id}:{generation.decode()}:{digest}"

    async def get_query(self, tenant_id: Any, params: dict[str, Any]) -> tuple[bytes | None, str | None]:
        """Returns (cached body or None, key to store under or None when not caching)."""
        if not self.settings.cache_enabled or not self.available:
            return None, None
        try:
            key = self._key(tenant_id, await self._generation(tenant_id), params)
            body = await self.client.get(key)
        except (RedisError, OSError) as exc:
            self._failed(exc, "cache_get")
            return None, None
        if body is None:
            self.misses += 1
        else:
            self.hits += 1
        return body, key

    async def put_query(self, key: str, body: bytes) -> None:
        try:
            await self.client.set(key, body, ex=self.settings.cache_ttl)
        except (RedisError, OSError) as exc:
            self._failed(exc, "cache_put")

    async def invalidate(self, tenant_ids: Any) -> None:
        """Bump the tenants' generation: cached pages of theirs are never served again."""
        if not self.available:
            return
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for t in tenant_ids:
                    pipe.incr(f"audit:gen:{t}")
                    pipe.expire(f"audit:gen:{t}", 86400)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed(exc, "invalidate")

    async def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "enabled": self.settings.cache_enabled,
            "ttl_seconds": self.settings.cache_ttl,
            "hits": self.hits,
            "misses": self.misses,
            "errors": self.errors,
        }
        try:
            info = await self.client.info("memory")
            out["used_memory_bytes"] = info.get("used_memory")
            out["maxmemory_bytes"] = info.get("maxmemory")
            out["keys"] = await self.client.dbsize()
            out["available"] = True
        except (RedisError, OSError) as exc:
            out["available"] = False
            out["error"] = type(exc).__name__
        return out
