"""The worker: pulls events from JetStream, stores them in PostgreSQL, acks after commit.

A message is acked only after the transaction holding its events has committed, so a worker
killed at any point, a database that goes away or a broker restart loses nothing: unacked
messages are delivered again, and events already stored are recognised by (tenant, event_id).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import asyncpg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError
from prometheus_client import start_http_server

from . import broker, chain, config, db, jsonlog, metrics, store
from .cache import Cache
from .resilience import DB_RETRYABLE, describe, until_nats_ready

log = logging.getLogger("audit_service.worker")

# Events per transaction: large enough to amortise the commit, small enough to keep locks short.
CHUNK_EVENTS = 2000
# The correlation ids one "batch stored" line names at most (a line stays under 10 KiB).
LOGGED_IDS_PER_LINE = 200
RETRY_DELAY = 1.0
MAX_INFLIGHT = 2
# While idle, how often the worker makes sure its consumer still exists (someone may delete it).
CONSUMER_CHECK_SECONDS = 5.0
# How often the worker looks at the stream's fill (broker.trim_window).
TRIM_CHECK_SECONDS = 5.0
# A fetch (the worker's and a replay's) is bounded by size as well as by count. A message holds up
# to a batch of 1,000 events (about 500 KB): 500 of them would pass the NATS client's pending limit
# (256 MB), and what the client drops is not delivered again until the consumer's ack wait has
# passed. See next_fetch_size.
FETCH_BYTES = 32 * 2**20
# How long a replay waits for messages delivered and not acked (dropped) to come again.
REPLAY_REDELIVERY_SECONDS = 300.0


class Worker:
    def __init__(self, settings: config.Settings):
        self.settings = settings
        self.stopping = asyncio.Event()
        self.pool: asyncpg.Pool | None = None
        self.cache = Cache(settings)
        self.nc: Any = None
        self.js: Any = None
        self.known_months: set[str] = set()
        self.totals: Counter[str] = Counter()
        self.max_deliveries = settings.worker_max_deliveries
        self.fetch_size = 1  # first_fetch_size once connected, then next_fetch_size

    async def _connect(self) -> Any:
        """Bind to the durable consumer (made when missing); retried until the stream exists.

        The worker owns its consumer, not the stream: a missing or misconfigured stream is
        reported (log, audit_worker_consuming 0, the API's health), never created here.
        """
        metrics.worker_consuming.set(0)
        sub = await until_nats_ready(self._bind, log, self.stopping)
        if sub is not None:
            metrics.worker_consuming.set(1)
        return sub

    async def _bind(self) -> Any:
        if self.nc is None:
            self.nc, self.js = await broker.connect(self.settings, "audit-worker")
        self.fetch_size = first_fetch_size(self.settings.worker_batch_size, self.nc.max_payload)
        for problem in await broker.check_stream(self.js, self.settings):
            log.error("stream misconfigured", extra={"error": problem})
        await broker.ensure_consumer(self.js, self.settings)
        return await self.js.pull_subscribe_bind(broker.CONSUMER, self.settings.stream_name)

    async def _trim(self) -> None:
        try:
            purged = await broker.trim_window(self.js, self.settings)
        except Exception as exc:  # noqa: BLE001 - tried again at the next check
            log.debug("trim check failed", extra={"error": describe(exc)})
            return
        if purged:
            metrics.stream_trimmed.inc(purged)
            log.warning(
                "stream nearly full: replay window shrunk",
                extra={"purged_messages": purged, "stream": self.settings.stream_name},
            )

    async def _rebind_if_gone(self, sub: Any) -> Any:
        """The subscription to use: `sub`, or a new one when the consumer (or stream) was deleted."""
        try:
            await self.js.consumer_info(self.settings.stream_name, broker.CONSUMER)
            return sub
        except NotFoundError:
            log.error("consumer %s is gone; making it again", broker.CONSUMER)
        except Exception as exc:  # noqa: BLE001 - the broker is away: fetch retries on its own
            log.debug("consumer check failed", extra={"error": describe(exc)})
            return sub
        await _quiet(sub.unsubscribe())
        return await self._connect()

    async def _ensure_partitions(self, pending: list[store.Pending]) -> None:
        # One receipt time per message: look at each distinct one once, not at every event.
        times = list({id(p.event["created_at"]): p.event["created_at"] for p in pending}.values())
        months = {db.partition_name(db.month_start(t)) for t in times}
        if months <= self.known_months:
            return
        async with self.pool.acquire() as conn:
            await db.ensure_partitions(
                conn, min(times), self.settings.partition_months_ahead, last=max(times)
            )
            self.known_months = {p["relname"] for p in await db.partitions(conn)}

    async def _store(self, pending: list[store.Pending]) -> store.AppendResult:
        await self._ensure_partitions(pending)
        async with self.pool.acquire() as conn, conn.transaction():
            return await store.append(conn, pending)

    async def handle(self, msgs: list[Any]) -> None:
        """Store a fetched set of messages in chunks; ack each chunk after its commit."""
        chunk: list[tuple[Any, list[store.Pending]]] = []
        size = 0
        metrics.worker_redeliveries.inc(sum(1 for msg in msgs if (msg.metadata.num_delivered or 1) > 1))
        for msg in msgs:
            try:
                events = broker.decode(msg.data, msg.subject, msg.metadata.sequence.stream)
            except broker.BadMessage as exc:
                metrics.worker_errors.labels("undecodable").inc()
                self.totals["undecodable"] += 1
                await self._failed(msg, str(exc))
                continue
            chunk.append((msg, events))
            size += len(events)
            if size >= CHUNK_EVENTS:
                await self._commit(chunk)
                chunk, size = [], 0
        if chunk:
            await self._commit(chunk)

    async def _failed(self, msg: Any, error: str) -> None:
        """A message that cannot be stored as it is. It is tried again (after 1, 2, 4... s) until it
        was delivered WORKER_MAX_DELIVERIES times, then kept in the dead_letters table, for the
        operator to inspect and re-drive (`audit-service dead-letters`), and only then acked: an
        accepted event is never dropped, nor left to expire with the stream's window."""
        seq = msg.metadata.sequence.stream
        deliveries = msg.metadata.num_delivered or 1
        if deliveries < self.max_deliveries:
            log.warning(
                "message failed; it will be delivered again",
                extra={"error": error, "stream_seq": seq, "deliveries": deliveries},
            )
            await _quiet(msg.nak(delay=min(2 ** (deliveries - 1), 60)))
            return
        try:
            async with self.pool.acquire() as conn:
                await store.add_dead_letter(
                    conn,
                    stream_seq=seq,
                    subject=msg.subject,
                    msg_id=(msg.headers or {}).get("Nats-Msg-Id"),
                    data=msg.data,
                    error=error,
                    deliveries=deliveries,
                )
        except DB_RETRYABLE as exc:
            log.warning("dead letter not written; retried", extra={"error": describe(exc)})
            await _quiet(msg.nak(delay=RETRY_DELAY))
            return
        metrics.dead_letters.inc()
        self.totals["dead_letters"] += 1
        log.error(
            "message moved to the dead letters",
            extra={"error": error, "stream_seq": seq, "deliveries": deliveries, "subject": msg.subject},
        )
        await _quiet(msg.ack())

    async def _commit(self, chunk: list[tuple[Any, list[store.Pending]]]) -> None:
        pending = [p for _, events in chunk for p in events]
        start = time.perf_counter()
        try:
            result = await self._store(pending)
        except DB_RETRYABLE as exc:
            metrics.worker_errors.labels("database_unavailable").inc()
            log.warning(
                "store failed; messages will be redelivered",
                extra={"error": describe(exc), "messages": len(chunk)},
            )
            for msg, _ in chunk:
                await _quiet(msg.nak(delay=RETRY_DELAY))
            await asyncio.sleep(RETRY_DELAY)
            return
        except (asyncpg.PostgresError, ValueError) as exc:
            if len(chunk) > 1:
                # Find the one message that cannot be stored; store the others.
                for one in chunk:
                    await self._commit([one])
                return
            metrics.worker_errors.labels("unstorable").inc()
            self.totals["unstorable"] += 1
            await self._failed(chunk[0][0], f"cannot be stored: {type(exc).__name__}: {exc}")
            return
        for msg, _ in chunk:
            await _quiet(msg.ack())
        elapsed = time.perf_counter() - start
        metrics.worker_batch_seconds.observe(elapsed)
        metrics.worker_batches.inc()
        metrics.events_stored.inc(result.stored)
        metrics.events_duplicate.inc(result.duplicates)
        self.totals.update(messages=len(chunk), stored=result.stored, duplicates=result.duplicates)
        oldest = min(p.event["created_at"] for p in pending)
        metrics.worker_lag.set((datetime.now(UTC) - oldest).total_seconds())
        if result.heads:
            await self.cache.invalidate(result.heads.keys())
        # One line a batch (more when it has many requests), naming the requests (correlation ids)
        # whose events it stored: the runbooks' log analysis follows a request from nginx through
        # the API to here.
        cids = sorted({p.event["correlation_id"] for p in pending if p.event["correlation_id"]})
        parts = max(1, -(-len(cids) // LOGGED_IDS_PER_LINE))
        for part in range(parts):
            log.info(
                "batch stored",
                extra={
                    "stored": result.stored,
                    "duplicates": result.duplicates,
                    "messages": len(chunk),
                    "duration_ms": round(elapsed * 1000, 2),
                    "correlation_ids": cids[part * LOGGED_IDS_PER_LINE : (part + 1) * LOGGED_IDS_PER_LINE],
                    **({"part": f"{part + 1}/{parts}"} if parts > 1 else {}),
                },
            )

    async def run(self) -> None:
        self.pool = await db.create_pool(self.settings, "audit-worker", min_size=0)
        sub = await self._connect()
        log.info("worker started", extra={"settings": self.settings.safe_summary()})
        last_partition_check = last_consumer_check = last_trim = 0.0
        # Two fetched batches in flight: one decodes and hashes while the other waits on
        # PostgreSQL. Each is acked after its own commit, so order does not matter.
        inflight: set[asyncio.Task[None]] = set()
        while not self.stopping.is_set():
            if time.monotonic() - last_partition_check > 3600:
                try:
                    async with self.pool.acquire() as conn:
                        await db.ensure_partitions(conn, chain.utcnow(), self.settings.partition_months_ahead)
                    last_partition_check = time.monotonic()
                except DB_RETRYABLE as exc:
                    log.warning("partition check failed", extra={"error": describe(exc)})
            if time.monotonic() - last_trim > TRIM_CHECK_SECONDS:
                last_trim = time.monotonic()
                await self._trim()
            try:
                msgs = await sub.fetch(self.fetch_size, timeout=1.0)
            except NatsTimeout:
                if time.monotonic() - last_consumer_check > CONSUMER_CHECK_SECONDS:
                    sub = await self._rebind_if_gone(sub)
                    last_consumer_check = time.monotonic()
                continue
            except (NatsError, OSError, TimeoutError) as exc:
                log.warning("fetch failed", extra={"error": describe(exc)})
                await asyncio.sleep(RETRY_DELAY)
                sub = await self._rebind_if_gone(sub)
                continue
            self.fetch_size = next_fetch_size(self.settings.worker_batch_size, self.fetch_size, msgs)
            if len(inflight) >= MAX_INFLIGHT:
                _, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.create_task(self.handle(msgs))
            task.add_done_callback(_log_failure)
            inflight.add(task)
        log.info("worker stopping")
        if inflight:
            await asyncio.wait(inflight)
        if self.nc is not None:
            # Not drain(): it waits on the pull subscription's queue for ever. Flushing sends the
            # last acks; anything not acked is simply delivered again.
            await _quiet(self.nc.flush(timeout=2))
            await _quiet(self.nc.close())
        await _quiet(asyncio.wait_for(self.pool.close(), 10))
        await self.cache.close()
        log.info("worker stopped")

    async def replay(self, from_seq: int | None = None) -> dict[str, Any]:
        """Store every event of the stream from `from_seq` (default: its first message) on.

        After a restore from backup this brings the database up to date: events it already has
        are recognised and skipped, the rest are appended to their chains. Safe while the normal
        worker runs. Ends once it has passed the stream's last message as of the start.
        """
        self.pool = await db.create_pool(self.settings, "audit-replay", min_size=1)
        # A replayed message is delivered once: what cannot be stored goes to the dead letters at once
        # (where the normal worker may have put it already).
        self.max_deliveries = 1
        self.nc, self.js = await broker.connect(self.settings, "audit-replay")
        try:
            info = await self.js.stream_info(self.settings.stream_name)
            first, last = info.state.first_seq, info.state.last_seq
            start = max(from_seq or first, first)
            report: dict[str, Any] = {"stream": self.settings.stream_name, "from_seq": start, "to_seq": last}
            if info.state.messages == 0 or start > last:
                return {**report, "messages": 0, "stored": 0, "duplicates": 0}
            sub = await self.js.pull_subscribe(
                f"{self.settings.stream_subject_prefix}.>",
                stream=self.settings.stream_name,
                config=broker.replay_consumer_config(start),
            )
            fetch = first_fetch_size(self.settings.worker_batch_size, self.nc.max_payload)
            seen = 0
            deadline: float | None = None
            failing_since: float | None = None
            while True:
                try:
                    msgs = await sub.fetch(fetch, timeout=2.0)
                except NatsTimeout:
                    msgs = []
                except (NatsError, OSError, TimeoutError) as exc:
                    failing_since = await _broker_unavailable(exc, failing_since)
                    continue
                if msgs:
                    # The broker answers (a fetch that only timed out proves nothing of it).
                    failing_since = None
                    fetch = next_fetch_size(self.settings.worker_batch_size, fetch, msgs)
                    seen = max(seen, *(m.metadata.sequence.stream for m in msgs))
                    await self.handle(msgs)
                    log.info("replay progress", extra={"seq": seen, "last": last, **self.totals})
                    if seen < last:
                        continue
                # Done once every message up to `last` was handled (acked). A message delivered
                # and never handled (the client dropped it) is still pending an ack: it comes again
                # after the ack wait. Nothing pending below `last` when seen < last: the stream's
                # limits removed the rest.
                try:
                    consumer = await sub.consumer_info()
                except (NatsError, OSError, TimeoutError) as exc:
                    failing_since = await _broker_unavailable(exc, failing_since)
                    continue
                failing_since = None
                if consumer.num_ack_pending == 0 and (seen >= last or consumer.num_pending == 0):
                    break
                deadline = deadline or time.monotonic() + REPLAY_REDELIVERY_SECONDS
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"replay: {consumer.num_ack_pending} message(s) delivered and not stored,"
                        f" {consumer.num_pending} not delivered, after {REPLAY_REDELIVERY_SECONDS:.0f} s"
                    )
            await _quiet(sub.unsubscribe())
            return {**report, "messages": 0, "stored": 0, "duplicates": 0, **self.totals}
        finally:
            await _quiet(self.nc.close())
            await self.pool.close()
            await self.cache.close()


async def _broker_unavailable(exc: Exception, since: float | None) -> float:
    """A replay's request to the broker failed: the connection dropped (the client reconnects on
    its own, and the replay's consumer outlives 60 s without it) or the consumer's leader was being
    elected. Waits and returns when the failures began; raises after REPLAY_REDELIVERY_SECONDS."""
    since = since or time.monotonic()
    if time.monotonic() - since > REPLAY_REDELIVERY_SECONDS:
        failing = f"{REPLAY_REDELIVERY_SECONDS:.0f} s"
        raise RuntimeError(f"replay: the broker has not answered for {failing}") from exc
    log.warning("replay: broker request failed; trying again", extra={"error": describe(exc)})
    await asyncio.sleep(RETRY_DELAY)
    return since


def first_fetch_size(batch_size: int, max_payload: int) -> int:
    """Messages in the first fetch: as many of the largest message the broker takes as fit in
    FETCH_BYTES (at most WORKER_BATCH_SIZE)."""
    return max(1, min(batch_size, FETCH_BYTES // max(1, max_payload)))


def next_fetch_size(batch_size: int, current: int, msgs: list[Any]) -> int:
    """Messages in the next fetch: twice as many as this one (up to WORKER_BATCH_SIZE), but no
    more of the largest message just fetched than fit in FETCH_BYTES. A backlog of large messages
    (after a restart, or a stall) is then fetched a few at a time, small ones 500 at a time."""
    largest = max((len(m.data) for m in msgs), default=0)
    return max(1, min(batch_size, 2 * current, FETCH_BYTES // max(1, largest)))


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        # The batch's messages were not acked and will come again; say why.
        log.error("batch failed", exc_info=task.exception())


async def _quiet(coro: Any) -> None:
    """An ack or nak that fails is harmless: the message is simply delivered again."""
    try:
        await coro
    except Exception as exc:  # noqa: BLE001
        log.debug("ack/nak failed", extra={"error": describe(exc)})


def main(settings: config.Settings) -> None:
    jsonlog.setup(settings.log_level, "audit-worker")
    if settings.worker_metrics_port:
        start_http_server(settings.worker_metrics_port, addr=settings.worker_metrics_host)

    async def runner() -> None:
        jsonlog.start_flusher()
        worker = Worker(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stopping.set)
        await worker.run()

    asyncio.run(runner())
