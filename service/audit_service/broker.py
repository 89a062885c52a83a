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
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

log = logging.getLogger(__name__)

CONSUMER = "audit-worker"
MESSAGE_VERSION = 1


class PayloadTooLarge(ValueError):
    pass


def subject(settings: Any, tenant_id: Any) -> str:
    return f"{settings.stream_subject_prefix}.{tenant_id}"


def stream_config(settings: Any) -> StreamConfig:
    # Limits retention: messages stay for STREAM_MAX_AGE_DAYS after they are acked, so that a
    # database restored from a backup can be caught up by replaying the stream.
    return StreamConfig(
        name=settings.stream_name,
        subjects=[f"{settings.stream_subject_prefix}.>"],
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=settings.stream_max_age_days * 86400,
        duplicate_window=float(settings.stream_duplicate_window_seconds),
        num_replicas=settings.stream_replicas,
    )


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
        ack_wait=60.0,
        inactive_threshold=60.0,
    )


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
        max_reconnect_attempts=-1,  # keep trying for ever: a restarted server comes back
        reconnect_time_wait=0.5,
        connect_timeout=5,
        allow_reconnect=True,
        error_cb=callbacks.get("error_cb", on_error),
        disconnected_cb=callbacks.get("disconnected_cb", on_disconnect),
        reconnected_cb=callbacks.get("reconnected_cb", on_reconnect),
    )
    return nc, nc.jetstream(timeout=settings.api_timeout)


async def ensure_stream(js: JetStreamContext, settings: Any) -> dict[str, Any]:
    """Create the stream, or update it when its settings differ. Returns what changed."""
    wanted = stream_config(settings)
    try:
        info = await js.stream_info(settings.stream_name)
    except NotFoundError:
        await js.add_stream(wanted)
        return {"created": True, "changed": {}}
    have = info.config
    diff = {}
    for field in (
        "subjects",
        "retention",
        "storage",
        "max_age",
        "duplicate_window",
        "discard",
        "num_replicas",
    ):
        if getattr(have, field) != getattr(wanted, field):
            diff[field] = {"before": getattr(have, field), "after": getattr(wanted, field)}
    if diff:
        await js.update_stream(wanted)
    return {"created": False, "changed": diff}


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


async def queue_stats(js: JetStreamContext, settings: Any) -> dict[str, Any]:
    info = await js.stream_info(settings.stream_name)
    out: dict[str, Any] = {
        "stream": settings.stream_name,
        "messages": info.state.messages,
        "bytes": info.state.bytes,
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
