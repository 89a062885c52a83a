"""NATS JetStream: the durable queue between the API and the worker.

One JetStream message carries one request's events (one for the single endpoint, up to 1000 for
the batch endpoint), so a request is accepted wholly or not at all. `Nats-Msg-Id` is the event id
for a single event and a digest of the event ids for a batch: a re-sent request inside the
duplicate window is dropped by JetStream, and any later re-send is dropped by the worker, which
stores each (tenant, event_id) once.
"""

from __future__ import annotations

import hashlib
import logging
import math
import ssl
import uuid
from datetime import datetime
from typing import Any

import nats
import orjson
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
)
from nats.js.errors import NotFoundError

from . import store
from .models import dumps

log = logging.getLogger(__name__)

CONSUMER = "audit-worker"
# Fields are only ever added, optional, within a version: "principal" came later (absent, it is
# stored as null), and workers of an older release, which ignore it, keep working meanwhile.
MESSAGE_VERSION = 1


class PayloadTooLarge(ValueError):
    pass


def subject(settings: Any, tenant_id: Any) -> str:
    return f"{settings.stream_subject_prefix}.{tenant_id}"


# --- the message between the API and the worker -------------------------------------------------


class BadMessage(ValueError):
    pass


def encode(
    tenant_id: Any, received_at: datetime, correlation_id: str | None, principal: str, events: list[dict]
) -> bytes:
    """One request's events as the API publishes them (to the tenant's own subject), with who
    sent them (the principal: the API key's id, or "admin")."""
    return dumps(
        {
            "v": MESSAGE_VERSION,
            "tenant_id": tenant_id,
            "received_at": received_at,
            "correlation_id": correlation_id,
            "principal": principal,
            "events": events,
        }
    )


def decode(data: bytes, msg_subject: str, stream_seq: int) -> list[store.Pending]:
    """A stream message's events, in the shape store.append takes.

    The tenant is the one of the subject the message was published to: the API may publish only
    to its caller's subject (NATS permissions), so a payload cannot name another tenant.
    """
    try:
        tenant_id = uuid.UUID(msg_subject.rsplit(".", 1)[-1])
        doc = orjson.loads(data)
        if doc.get("v") != MESSAGE_VERSION:
            raise BadMessage(f"unknown message version {doc.get('v')!r}")
        if doc.get("tenant_id") is not None and uuid.UUID(doc["tenant_id"]) != tenant_id:
            raise BadMessage(f"payload names tenant {doc['tenant_id']}, subject {msg_subject}")
        received_raw = doc["received_at"]
        received_at = datetime.fromisoformat(received_raw)
        correlation_id = doc.get("correlation_id")
        principal = doc.get("principal")
        if principal is not None and not isinstance(principal, str):
            raise BadMessage(f"principal {principal!r} is not a string")
        out = []
        for e in doc["events"]:
            occurred_raw = e["occurred_at"]
            event = {
                "event_id": e["event_id"],  # the API wrote it in canonical form; PostgreSQL checks it
                "created_at": received_at,
                # Most events default occurred_at to the receipt time: skip parsing it again.
                "occurred_at": received_at
                if occurred_raw == received_raw
                else datetime.fromisoformat(occurred_raw),
                "actor": e["actor"],
                "action": e["action"],
                "target": e.get("target"),
                "outcome": e.get("outcome") or "unknown",
                "source_ip": e.get("source_ip"),
                "user_agent": e.get("user_agent"),
                "metadata": e.get("metadata"),
                "correlation_id": correlation_id,
                "principal": principal,
            }
            out.append(store.Pending(tenant_id, event, stream_seq).prepare())
        return out
    except (KeyError, TypeError, ValueError, AttributeError, orjson.JSONDecodeError) as exc:
        raise BadMessage(f"undecodable message at stream seq {stream_seq}: {exc}") from exc


def consumer_config(settings: Any) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=CONSUMER,
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.worker_ack_wait_seconds,
        max_deliver=-1,
        max_ack_pending=20000,
    )


def replay_consumer_config(start_seq: int) -> ConsumerConfig:
    # Ephemeral: removed by the server a minute after the replay stops using it.
    return ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=start_seq,
        ack_policy=AckPolicy.EXPLICIT,
        # A message delivered and not acked (the client dropped it) comes again after this.
        ack_wait=30.0,
        inactive_threshold=60.0,
    )


def tls_context(settings: Any) -> ssl.SSLContext | None:
    """The TLS context for NATS_TLS_* (None without a CA: plain TCP, or the system's CAs for tls://)."""
    if not settings.nats_tls_ca_file:
        return None
    context = ssl.create_default_context(cafile=settings.nats_tls_ca_file)
    if settings.nats_tls_cert_file:
        context.load_cert_chain(settings.nats_tls_cert_file, settings.nats_tls_key_file or None)
    return context


async def connect(settings: Any, name: str, **callbacks: Any) -> tuple[Client, JetStreamContext]:
    async def on_error(exc: Exception) -> None:
        log.warning("nats error", extra={"error": str(exc)})

    async def on_disconnect() -> None:
        log.warning("nats disconnected")

    async def on_reconnect() -> None:
        log.info("nats reconnected")

    nc = await nats.connect(
        servers=[s.strip() for s in settings.nats_url.split(",")],
        name=name,
        tls=tls_context(settings),
        max_reconnect_attempts=-1,  # keep trying for ever: a restarted server comes back
        reconnect_time_wait=0.5,
        connect_timeout=5,
        allow_reconnect=True,
        error_cb=callbacks.get("error_cb", on_error),
        disconnected_cb=callbacks.get("disconnected_cb", on_disconnect),
        reconnected_cb=callbacks.get("reconnected_cb", on_reconnect),
    )
    return nc, nc.jetstream(timeout=settings.api_timeout)


class StreamMissing(RuntimeError):
    pass


async def check_stream(js: JetStreamContext, settings: Any) -> list[str]:
    """What is wrong with the stream for the service, as sentences; [] when nothing is.

    The stream has one owner, the deployment (role nats, module auditlog.ops.nats_stream): the
    service never creates or changes it, so that a setting changed there stays changed. It only
    checks what it depends on: the stream exists, takes the service's subjects, keeps messages on
    disk and keeps acked ones (limits retention) for the catch-up after a restore. Raises
    StreamMissing when there is no stream at all.
    """
    try:
        info = await js.stream_info(settings.stream_name)
    except NotFoundError:
        raise StreamMissing(
            f"stream {settings.stream_name} does not exist: the deployment creates it (role nats)"
        ) from None
    problems = []
    name, wanted, cfg = settings.stream_name, f"{settings.stream_subject_prefix}.>", info.config
    if wanted not in (cfg.subjects or []):
        problems.append(f"stream {name} does not take {wanted} (its subjects: {cfg.subjects})")
    if cfg.storage != StorageType.FILE:
        problems.append(f"stream {name} keeps messages in memory: they would not survive a restart")
    if cfg.retention != RetentionPolicy.LIMITS:
        problems.append(
            f"stream {name} has {cfg.retention} retention: acked messages would be removed, so a "
            "restored database could not be caught up"
        )
    return problems


async def ensure_consumer(js: JetStreamContext, settings: Any) -> None:
    """Create the worker's durable consumer, or update its ack wait when that setting changed."""
    wanted = consumer_config(settings)
    try:
        info = await js.consumer_info(settings.stream_name, CONSUMER)
    except NotFoundError:
        await js.add_consumer(settings.stream_name, wanted)
        return
    if info.config.ack_wait != wanted.ack_wait:
        await js.add_consumer(settings.stream_name, wanted)


def message_id(tenant_id: Any, event_ids: list[str]) -> str:
    # Event ids are unique per tenant only: two tenants may use the same one.
    if len(event_ids) == 1:
        return f"{tenant_id}:{event_ids[0]}"
    return f"{tenant_id}:batch-" + hashlib.sha256("\n".join(event_ids).encode()).hexdigest()


# JetStream acks in milliseconds; a publish still unacked after this long was lost (typically in a
# reconnect) and will not be acked at all.
PUBLISH_ACK_TIMEOUT = 5.0


def publish_timeout(settings: Any) -> float:
    """How long a publish waits for its ack: well inside API_TIMEOUT, so that a lost publish is
    answered 503 "retry" (a re-send is safe: Nats-Msg-Id) instead of running into a 504."""
    return max(0.05, min(PUBLISH_ACK_TIMEOUT, settings.api_timeout / 2))


async def publish(
    js: JetStreamContext, nc: Client, settings: Any, tenant_id: Any, payload: bytes, event_ids: list[str]
) -> int:
    """Publish one request's events; returns the stream sequence once JetStream has acked."""
    if len(payload) > nc.max_payload:
        raise PayloadTooLarge(
            f"encoded events take {len(payload)} bytes; the broker accepts at most {nc.max_payload}"
        )
    ack = await js.publish(
        subject(settings, tenant_id),
        payload,
        timeout=publish_timeout(settings),
        stream=settings.stream_name,
        headers={"Nats-Msg-Id": message_id(tenant_id, event_ids)},
    )
    return ack.seq


async def republish(js: JetStreamContext, settings: Any, msg_subject: str, data: bytes, msg_id: str) -> int:
    """Put a kept message back into the stream (a dead letter's re-drive); returns its new sequence."""
    if not msg_subject.startswith(settings.stream_subject_prefix + "."):
        raise ValueError(f"subject {msg_subject} is not one of stream {settings.stream_name}")
    ack = await js.publish(
        msg_subject,
        bytes(data),
        timeout=publish_timeout(settings),
        stream=settings.stream_name,
        headers={"Nats-Msg-Id": msg_id},
    )
    return ack.seq


# --- the replay window under pressure ---------------------------------------------------------

# The stream keeps acked messages for its max_age (the window a restored database is caught up
# from) within max_bytes, and refuses new messages when full (discard new): nothing unstored is
# ever dropped. Above TRIM_HIGH of max_bytes the worker shrinks the window instead, purging the
# oldest messages down to TRIM_LOW, but only below the consumer's ack floor: messages that are in
# PostgreSQL already. Only when the stored ones are not enough does the API refuse (503).
TRIM_HIGH = 0.8
TRIM_LOW = 0.6


def trim_point(
    stored_bytes: int, messages: int, first_seq: int, max_bytes: int, ack_floor: int
) -> int | None:
    """The sequence to purge below (messages first_seq .. result-1 go), or None: nothing to do."""
    if max_bytes <= 0 or messages <= 0 or stored_bytes <= TRIM_HIGH * max_bytes:
        return None
    average = stored_bytes / messages
    drop = math.ceil((stored_bytes - TRIM_LOW * max_bytes) / average)
    cut = min(first_seq + drop, ack_floor + 1)
    return cut if cut > first_seq else None


async def trim_window(js: JetStreamContext, settings: Any) -> int:
    """Shrink the replay window when the stream fills (see TRIM_HIGH); returns messages purged."""
    info = await js.stream_info(settings.stream_name)
    consumer = await js.consumer_info(settings.stream_name, CONSUMER)
    ack_floor = consumer.ack_floor.stream_seq if consumer.ack_floor else 0
    state = info.state
    cut = trim_point(state.bytes, state.messages, state.first_seq, info.config.max_bytes or 0, ack_floor)
    if cut is None:
        return 0
    await js.purge_stream(settings.stream_name, seq=cut)
    return cut - state.first_seq


def is_store_full(exc: Exception) -> bool:
    """A publish refused because the stream (or the server's store) is full."""
    text = str(exc).lower()
    return "maximum bytes" in text or "maximum messages" in text or "insufficient resources" in text


async def queue_stats(js: JetStreamContext, settings: Any) -> dict[str, Any]:
    info = await js.stream_info(settings.stream_name)
    out: dict[str, Any] = {
        "stream": settings.stream_name,
        "messages": info.state.messages,
        "bytes": info.state.bytes,
        "max_bytes": info.config.max_bytes,
        "first_seq": info.state.first_seq,
        "last_seq": info.state.last_seq,
    }
    try:
        c = await js.consumer_info(settings.stream_name, CONSUMER)
        out.update(
            consumer=CONSUMER,
            consumer_pending=c.num_pending,
            consumer_ack_pending=c.num_ack_pending,
            consumer_redelivered=c.num_redelivered,
            consumer_ack_floor=c.ack_floor.stream_seq if c.ack_floor else 0,
        )
    except NotFoundError:
        out.update(consumer=None, consumer_pending=None, consumer_ack_pending=None)
    return out
