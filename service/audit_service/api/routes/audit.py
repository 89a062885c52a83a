"""Audit events: ingest (one or a batch), reads, and chain verification."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from nats.errors import Error as NatsError
from pydantic import BaseModel, ValidationError

from ... import broker, chain, jsonlog, metrics, store
from ...models import (
    INT64,
    Accepted,
    BatchAccepted,
    BatchIn,
    EventIn,
    EventOut,
    EventPage,
    Timestamp,
    VerifyOut,
    dumps,
)
from ...resilience import describe
from ..deps import Authenticated, Caller, Tenant, get_state, invalid_query, json_response

log = logging.getLogger("audit_service.api")

# Seconds a client is asked to wait when the stream is full: the worker frees room in batches.
QUEUE_FULL_RETRY_AFTER = 5

router = APIRouter()


@router.post("/api/v1/audit/logs", status_code=202, response_model=Accepted, tags=["audit"])
async def ingest_one(request: Request, caller: Authenticated) -> Response:
    event = await parse_body(request, EventIn)
    ids = await _accept(request, caller, [event])
    return json_response({"id": ids[0], "status": "accepted"}, 202)


@router.post("/api/v1/audit/logs/batch", status_code=202, response_model=BatchAccepted, tags=["audit"])
async def ingest_batch(request: Request, caller: Authenticated) -> Response:
    batch = await parse_body(request, BatchIn)
    ids = await _accept(request, caller, batch.events)
    return json_response({"accepted": len(ids), "ids": ids}, 202)


@router.get("/api/v1/audit/logs", response_model=EventPage, tags=["audit"])
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
    st = get_state(request)
    for name, value in (("actor", actor), ("action", action), ("target", target)):
        if value is not None and "\x00" in value:
            raise invalid_query(name, "must not contain NUL characters")
    before = None
    if cursor is not None:
        try:
            before = store.decode_cursor(cursor)
            if before >= INT64:
                raise ValueError("cursor is not one this API returned")
        except ValueError as exc:
            raise invalid_query("cursor", str(exc)) from None
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


@router.get(
    "/api/v1/audit/logs/{event_id}",
    response_model=EventOut,
    tags=["audit"],
    responses={404: {"description": "No such event for this tenant"}},
)
async def get_event(request: Request, event_id: uuid.UUID, tenant: Tenant) -> Response:
    event = await store.get_event(get_state(request).pool, tenant, event_id)
    if event is None:
        raise HTTPException(404, "event not found")
    return json_response(event)


@router.get("/api/v1/audit/verify", response_model=VerifyOut, tags=["audit"])
async def verify(
    request: Request, tenant: Tenant, since: Timestamp | None = None, until: Timestamp | None = None
) -> Response:
    result = await store.verify(get_state(request).pool, tenant, since, until)
    if not result.valid:
        metrics.chain_verify_invalid.inc()  # alert AuditChainVerifyFailing
    return json_response(result.as_dict())


# The ingest bodies are parsed by pydantic's Rust JSON parser straight into the models
# (model_validate_json), which is several times cheaper than FastAPI's json.loads followed by
# validation; the routes then declare their bodies to OpenAPI themselves.
# nginx's $request_id: 32 hex digits.
REQUEST_ID_RE = re.compile(r"^[0-9a-fA-F]{16,64}$")

INGEST_BODIES = {"/api/v1/audit/logs": EventIn, "/api/v1/audit/logs/batch": BatchIn}


async def parse_body(request: Request, model: type[BaseModel]) -> Any:
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None


async def _accept(request: Request, caller: Caller, events: list[EventIn]) -> list[str]:
    st = get_state(request)
    tenant_id = caller.tenant_id
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
    fresh = iter(
        new_event_ids(sum(1 for e in events if e.event_id is None), await retry_seed(request, tenant_id))
    )
    for e in events:
        doc = e.model_dump()
        doc["event_id"] = str(doc["event_id"]) if doc["event_id"] else next(fresh)
        doc["occurred_at"] = doc["occurred_at"] or received_at
        docs.append(doc)
    ids = [d["event_id"] for d in docs]
    payload = broker.encode(tenant_id, received_at, jsonlog.correlation_id.get(), caller.principal, docs)
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


async def retry_seed(request: Request, tenant_id: uuid.UUID) -> bytes | None:
    """What the ids of a request's new events derive from when nginx sent it, else None (random).

    nginx sets X-Request-ID once per client request and passes a request that one API host
    dropped (a restart, a crash) on to the next host. Ids derived from that id and the body make
    the retry the same events, with the same Nats-Msg-Id, which JetStream stores once; another
    request, or the same id with another body, gets other ids.
    """
    request_id = request.headers.get("x-request-id")
    if not request_id or not REQUEST_ID_RE.match(request_id):
        return None
    return hashlib.sha256(b"\n".join([tenant_id.bytes, request_id.encode(), await request.body()])).digest()


def new_event_ids(n: int, seed: bytes | None = None) -> list[str]:
    """n version-4-shaped UUIDs, as text: random, from one read of the OS's random source
    (uuid4() reads it once per id), or derived from seed (the same seed, the same ids)."""
    if seed is None:
        raw = bytearray(os.urandom(16 * n))
    else:
        raw = bytearray(b"".join(hashlib.sha256(seed + i.to_bytes(4, "big")).digest()[:16] for i in range(n)))
    out = []
    for i in range(0, 16 * n, 16):
        raw[i + 6] = (raw[i + 6] & 0x0F) | 0x40  # version 4
        raw[i + 8] = (raw[i + 8] & 0x3F) | 0x80  # RFC 4122 variant
        h = raw[i : i + 16].hex()
        out.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out
