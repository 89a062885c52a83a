"""Liveness, the components' health, statistics and the Prometheus metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from fastapi import APIRouter, Request, Response
from nats.js.errors import NotFoundError

from ... import broker, db, metrics, store
from ...models import HealthOut
from ...resilience import describe
from ..deps import State, get_state, is_admin, json_response

log = logging.getLogger("audit_service.api")

PROBE_TIMEOUT = 2.0

router = APIRouter()


@router.get("/health", tags=["health"])
async def liveness() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/api/v1/metrics/health",
    response_model=HealthOut,
    tags=["health"],
    responses={503: {"description": "Unhealthy", "model": HealthOut}},
)
async def health(request: Request) -> Response:
    st = get_state(request)
    components = await probe_components(st)
    status = overall_status(components)
    if not is_admin(request):
        # Anonymous callers (the public, through nginx) learn the state, not the internals.
        components = {name: {k: v for k, v in c.items() if k != "error"} for name, c in components.items()}
    return json_response({"status": status, "components": components}, 503 if status == "unhealthy" else 200)


@router.get("/api/v1/metrics/stats", tags=["health"])
async def stats(request: Request) -> Response:
    st = get_state(request)
    out: dict[str, Any] = {"database": db.pool_stats(st.pool, st.settings.database_pool_size)}
    out["cache"] = await st.cache.stats()
    try:
        if st.js is None:
            raise RuntimeError("not connected")
        out["queue"] = await asyncio.wait_for(broker.queue_stats(st.js, st.settings), PROBE_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        out["queue"] = {"stream": st.settings.stream_name, "error": describe(exc)}
    return json_response(out)


@router.get("/api/v1/metrics", tags=["health"], response_class=Response)
async def prometheus(request: Request) -> Response:
    await refresh_gauges(get_state(request))
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)


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
