"""Nothing lost: every event answered 202 ends up in PostgreSQL exactly once, whatever dies.

These tests stop and kill real servers, so they run on a stack of their own.
"""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
import zlib
from collections.abc import Iterator

import httpx
import pytest
from audit_devtools.stack import Service, Stack, free_port
from conftest import Client, consumer_drained, sql, wait_for


@pytest.fixture(scope="module")
def own_stack() -> Iterator[Stack]:
    s = Stack().start()
    yield s
    s.stop()


@pytest.fixture
def svc(own_stack: Stack, request) -> Iterator[Service]:
    # A database per test (parametrized ones too): a short name and the test id's checksum.
    name = f"audit_{request.node.name[5:28]}_{zlib.crc32(request.node.name.encode()):08x}"
    s = Service(own_stack, name, RATE_LIMIT_PER_MINUTE="0").start()
    yield s
    s.stop()


class Sender(threading.Thread):
    """Sends batches until told to stop; remembers exactly which events were acknowledged."""

    def __init__(self, client: Client, batches: int, size: int = 50, pause: float = 0.0):
        super().__init__(daemon=True)
        self.client, self.batches, self.size, self.pause = client, batches, size, pause
        self.acked: list[str] = []
        self.refused = 0
        # Answers other than 202 or 503. Kept, not asserted here: an assertion in a thread would
        # only be a warning; the test asserts this is empty.
        self.unexpected: list[str] = []
        self.done = threading.Event()

    def run(self) -> None:
        try:
            for b in range(self.batches):
                events = [{"actor": f"u{b}-{i}", "action": "write"} for i in range(self.size)]
                try:
                    r = self.client.batch(events)
                except httpx.HTTPError:
                    self.refused += 1
                    continue
                if r.status_code == 202:
                    self.acked += r.json()["ids"]
                elif r.status_code == 503:  # a dependency down: refused, never a 500 or a timeout
                    self.refused += 1
                else:
                    self.unexpected.append(f"{r.status_code} {r.text}")
                if self.pause:
                    time.sleep(self.pause)
        finally:
            self.done.set()


def assert_exactly_once(svc: Service, tenant_id: str, acked: list[str], timeout: float = 90) -> None:
    def all_there() -> bool:
        rows = sql(svc.database_url, "SELECT count(*) AS n FROM audit_logs WHERE tenant_id = $1", tenant_id)
        return rows[0]["n"] >= len(acked)

    wait_for(all_there, timeout, 0.5, what=f"{len(acked)} acknowledged events stored")
    # Nothing left to deliver or to ack: no late duplicate can land after this.
    wait_for(lambda: consumer_drained(svc), 60, 0.2, what="the consumer's pending and ack-pending at 0")
    rows = sql(
        svc.database_url, "SELECT event_id::text AS id FROM audit_logs WHERE tenant_id = $1", tenant_id
    )
    stored = [r["id"] for r in rows]
    assert len(stored) == len(set(stored)), "an event was stored twice"
    assert set(acked) <= set(stored), f"{len(set(acked) - set(stored))} acknowledged events lost"
    verify = httpx.get(
        f"{svc.url}/api/v1/audit/verify",
        params={"tenant_id": tenant_id},
        headers={"X-API-Key": svc.admin_key},
        timeout=60,
    ).json()
    assert verify["valid"] and verify["checked"] == len(stored)


def test_worker_killed_with_sigkill_mid_run(svc):
    tenant_id, key = svc.tenant("kill")
    sender = Sender(Client(svc.url, key, tenant_id), batches=60, size=100)
    sender.start()
    wait_for(
        lambda: sql(svc.database_url, "SELECT count(*) AS n FROM audit_logs")[0]["n"] > 500,
        30,
        0.05,
        what="the worker to be busy",
    )
    svc.workers[0].stop(signal.SIGKILL)  # no chance to ack, commit or clean up
    stored_at_kill = sql(svc.database_url, "SELECT count(*) AS n FROM audit_logs")[0]["n"]
    time.sleep(1)
    svc.workers[0].start()
    sender.join(120)
    assert sender.done.is_set() and len(sender.acked) == 6000, sender.refused
    assert sender.unexpected == []
    assert stored_at_kill < 6000  # the kill really happened mid-run
    assert_exactly_once(svc, tenant_id, sender.acked)


def test_a_backlog_of_large_messages_is_stored_with_no_message_delivered_twice(own_stack):
    """360 batches of 1,000 events with 600 bytes of metadata each (about 0.75 MB a message, 270 MB
    in all) wait while the worker is stopped. Fetched 500 at a time (WORKER_BATCH_SIZE), they would
    pass the NATS client's pending limit (256 MB): it drops the rest, which comes again after the
    ack wait. The worker fetches by size as well, so each message is delivered once."""
    port = free_port()
    # The deployment's ack wait (the tests' 5 s could pass while a busy machine stores a fetch).
    env = {"RATE_LIMIT_PER_MINUTE": "0", "WORKER_METRICS_PORT": str(port), "WORKER_ACK_WAIT_SECONDS": "30"}
    svc = Service(own_stack, "audit_large_backlog", **env).start()
    try:
        tenant_id, key = svc.tenant("large")
        client = Client(svc.url, key, tenant_id)
        svc.workers[0].stop()
        pad = "x" * 600
        batches = 360
        for b in range(batches):
            events = [
                {"actor": f"u{i}", "action": "fill", "metadata": {"pad": pad, "b": b}} for i in range(1000)
            ]
            r = client.batch(events, timeout=60)
            assert r.status_code == 202, r.text
        svc.workers[0].start()
        wait_for(lambda: consumer_drained(svc), 600, interval=1, what="the worker to store the backlog")
        metrics = httpx.get(f"http://127.0.0.1:{port}/", timeout=10).text
        assert "audit_worker_events_stored_total 360000.0" in metrics, metrics
        assert "audit_worker_redeliveries_total 0.0" in metrics, metrics
        assert sql(svc.database_url, "SELECT count(*) AS n FROM audit_logs")[0]["n"] == batches * 1000
    finally:
        svc.stop()


@pytest.mark.parametrize("mode", ["fast", "immediate"])  # immediate: a crash, recovered from WAL
def test_postgresql_stopped_while_events_arrive(svc, own_stack, mode):
    tenant_id, key = svc.tenant("pgdown")
    client = Client(svc.url, key, tenant_id)
    acked = client.batch([{"actor": "before", "action": "a"} for _ in range(100)]).json()["ids"]
    own_stack.pg.stop(mode)
    try:
        health = httpx.get(f"{svc.url}/api/v1/metrics/health", timeout=10)
        assert health.status_code == 503 and health.json()["components"]["database"]["status"] == "unhealthy"
        # Writes still go to JetStream and are acknowledged.
        for b in range(20):
            r = client.batch([{"actor": f"during-{b}", "action": "a"} for _ in range(50)])
            assert r.status_code == 202, r.text
            acked += r.json()["ids"]
        # Reads need the database: 503, not 500.
        assert client.list().status_code == 503
        # The worker meets the outage and keeps the messages unacked.
        wait_for(
            lambda: "store failed; messages will be redelivered" in svc.workers[0].log(),
            30,
            what="the worker to meet the outage",
        )
    finally:
        own_stack.pg.start()
    svc.wait_healthy(60)
    assert_exactly_once(svc, tenant_id, acked)


def test_nats_restarted_while_the_worker_consumes(svc, own_stack):
    tenant_id, key = svc.tenant("natsrestart")
    sender = Sender(Client(svc.url, key, tenant_id), batches=150, size=40, pause=0.01)
    sender.start()
    wait_for(lambda: len(sender.acked) > 1000, 30, 0.05, what="traffic")
    own_stack.nats.stop()
    time.sleep(1)
    own_stack.nats.start()
    sender.join(180)
    assert sender.done.is_set()
    assert len(sender.acked) > 1000
    assert sender.unexpected == []  # e.g. a 504 from a publish that waited out API_TIMEOUT
    assert_exactly_once(svc, tenant_id, sender.acked)
    svc.wait_healthy(30)


def test_nats_killed_keeps_acknowledged_events(svc, own_stack):
    """SIGKILL, not a clean shutdown: JetStream's file store still has every acked message."""
    tenant_id, key = svc.tenant("natskill")
    for w in svc.workers:
        w.stop()  # let the events sit in the stream
    client = Client(svc.url, key, tenant_id)
    acked = []
    for b in range(10):
        acked += client.batch([{"actor": f"k{b}", "action": "a"} for _ in range(100)]).json()["ids"]
    own_stack.nats.stop(signal.SIGKILL)
    try:
        health = httpx.get(f"{svc.url}/api/v1/metrics/health", timeout=10)
        assert health.status_code == 503 and health.json()["components"]["nats"]["status"] == "unhealthy"
        refused = client.post({"actor": "while-down", "action": "a"})
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert client.list().status_code == 200  # reads do not need NATS
    finally:
        own_stack.nats.start()
    for w in svc.workers:
        w.start()
    assert_exactly_once(svc, tenant_id, acked)


def queue(svc: Service) -> dict:
    return httpx.get(f"{svc.url}/api/v1/metrics/stats", timeout=10).json()["queue"]


def test_a_full_stream_refuses_with_retry_after_and_trims_only_stored_events(own_stack):
    """A 64 KiB stream (discard new) filled for real: while PostgreSQL is down nothing stored can
    be trimmed, so the API refuses with 503 + Retry-After and every accepted event survives; once
    the events are stored, the worker trims them to make room and ingest goes on."""
    svc = Service(
        own_stack,
        "audit_full_stream",
        RATE_LIMIT_PER_MINUTE="0",
        stream={"max_bytes": 65536, "discard": "new"},
    ).start()
    try:
        tenant_id, key = svc.tenant("full")
        client = Client(svc.url, key, tenant_id)
        event = {"actor": "a", "action": "fill", "metadata": {"pad": "x" * 400}}
        acked = [client.post(event).json()["id"]]  # the API knows the key from now on
        own_stack.pg.stop()
        try:
            refused = None
            for _ in range(1000):
                r = client.post(event)
                if r.status_code != 202:
                    refused = r
                    break
                acked.append(r.json()["id"])
            assert refused is not None and refused.status_code == 503, "the stream never filled"
            assert refused.headers["retry-after"] == "5" and "full" in refused.json()["detail"]
            # The worker runs its trim checks all along, but nothing is stored: nothing goes.
            wait_for(lambda: "store failed" in svc.workers[0].log(), 30, what="the worker to meet the outage")
            time_in_full = queue(svc)
            assert time_in_full["first_seq"] == 1 and time_in_full["messages"] == len(acked)
        finally:
            own_stack.pg.start()
        svc.wait_healthy(60)
        assert_exactly_once(svc, tenant_id, acked)

        # Stored now: the worker trims them as the stream fills again, and ingest goes on.
        for _ in range(3 * len(acked)):
            r = client.post(event)
            if r.status_code == 202:
                acked.append(r.json()["id"])
            else:
                assert r.status_code == 503 and r.headers["retry-after"] == "5", r.text
        assert_exactly_once(svc, tenant_id, acked)
        wait_for(lambda: queue(svc)["first_seq"] > 1, 30, what="the worker to trim stored messages")
        assert "stream nearly full: replay window shrunk" in svc.workers[0].log()
        assert queue(svc)["bytes"] <= 65536
    finally:
        svc.stop()


@contextlib.contextmanager
def database_down(stack: Stack, svc: Service) -> Iterator[None]:
    """PostgreSQL stopped (and the service's API seeing the outage) for the block; started after."""
    stack.pg.stop()
    try:
        wait_for(
            lambda: httpx.get(f"{svc.url}/api/v1/metrics/health", timeout=10).status_code == 503,
            30,
            what="the API to see the outage",
        )
        yield
    finally:
        stack.pg.start()


def wait_key_mirrored(stack: Stack, database: str, key: str) -> None:
    """Until the API's Redis mirror of its key snapshot (for the service on `database`) holds the key."""
    import hashlib

    import redis

    mirror = redis.Redis.from_url(stack.redis.admin_url)
    digest = hashlib.sha256(key.encode()).hexdigest()
    wait_for(
        lambda: digest.encode() in (mirror.get(f"audit:keys:{database}") or b""),
        30,
        what=f"the key mirrored to Redis (audit:keys:{database})",
    )


def test_ingest_needs_no_database_for_known_keys(own_stack):
    """A database outage many key refreshes long, with two API processes, one of them started
    during the outage: known tenant and admin keys are still accepted, from the key snapshot
    (the restarted processes take it from its Redis mirror), and every event is stored after."""
    from audit_devtools.stack import run_cli

    svc = Service(
        own_stack,
        "audit_no_db_ingest",
        RATE_LIMIT_PER_MINUTE="0",
        API_WORKERS="2",
        API_KEY_REFRESH_SECONDS="0.5",
    )
    svc.migrate()
    svc.ensure_stream()
    tenant_id = json.loads(run_cli(svc.env, "create-tenant", "nodb").stdout)["tenant_id"]
    key = json.loads(run_cli(svc.env, "create-api-key", "nodb").stdout)["api_key"]
    svc.start_processes()
    try:
        wait_key_mirrored(own_stack, "audit_no_db_ingest", key)
        acked: list[str] = []

        def post_fresh(headers: dict, params: dict | None = None) -> None:
            # A new connection each time: requests spread over both API processes.
            r = httpx.post(
                f"{svc.url}/api/v1/audit/logs",
                json={"actor": "a", "action": "nodb"},
                headers=headers,
                params=params,
                timeout=30,
            )
            assert r.status_code == 202, r.text
            acked.append(r.json()["id"])

        with database_down(own_stack, svc):
            deadline = time.monotonic() + 6  # a dozen key refreshes
            while time.monotonic() < deadline:
                post_fresh({"X-API-Key": key})
                post_fresh({"X-API-Key": svc.admin_key}, {"tenant_id": tenant_id})
            # Both API processes started anew while the database is down.
            svc.api.stop()
            svc.api.start()
            wait_for(lambda: _alive(svc), 30, what="the API to start")
            for _ in range(10):
                post_fresh({"X-API-Key": key})
            unknown = httpx.post(
                f"{svc.url}/api/v1/audit/logs",
                json={"actor": "a", "action": "x"},
                headers={"X-API-Key": "alk_unknown"},
                timeout=30,
            )
            assert unknown.status_code in (401, 503), unknown.text  # never accepted
        assert_exactly_once(svc, tenant_id, acked)
    finally:
        svc.stop()


def test_a_key_made_since_an_api_processs_last_refresh_is_taken_from_the_redis_mirror_during_an_outage(
    own_stack,
):
    """Two API processes of one deployment; one refreshes its key snapshot rarely (it has not
    seen a new key), the other often (it mirrors the key to Redis). While PostgreSQL is down the
    first accepts the new key from the mirror, and still refuses a key the mirror does not hold;
    every accepted event is stored after."""
    from audit_devtools.stack import ServiceProcess, run_cli

    svc = Service(
        own_stack, "audit_mirror_fallback", RATE_LIMIT_PER_MINUTE="0", API_KEY_REFRESH_SECONDS="3600"
    )
    svc.migrate()
    svc.ensure_stream()
    svc.start_processes()  # its one refresh is done: the key below is new to it
    fresh_port = free_port()
    fresh = ServiceProcess(
        ["api"],
        {**svc.api_env, "API_PORT": str(fresh_port), "API_KEY_REFRESH_SECONDS": "0.5"},
        svc.logdir / "api-fresh.log",
    )
    try:
        tenant_id = json.loads(run_cli(svc.env, "create-tenant", "mirrored").stdout)["tenant_id"]
        key = json.loads(run_cli(svc.env, "create-api-key", "mirrored").stdout)["api_key"]
        fresh.start()
        wait_key_mirrored(own_stack, "audit_mirror_fallback", key)  # by the often-refreshing process
        with database_down(own_stack, svc):
            acked = []
            for i in range(5):
                r = httpx.post(
                    f"{svc.url}/api/v1/audit/logs",
                    json={"actor": f"a{i}", "action": "mirrored"},
                    headers={"X-API-Key": key},
                    timeout=30,
                )
                assert r.status_code == 202, r.text
                acked.append(r.json()["id"])
            unknown = httpx.post(
                f"{svc.url}/api/v1/audit/logs",
                json={"actor": "a", "action": "x"},
                headers={"X-API-Key": "alk_never_made"},
                timeout=30,
            )
            assert unknown.status_code == 503, unknown.text  # unknown here and in the mirror: not accepted
        assert_exactly_once(svc, tenant_id, acked)
    finally:
        fresh.stop()
        svc.stop()


def _alive(svc: Service) -> bool:
    try:
        return httpx.get(f"{svc.url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_retention_runs_beside_a_worker_appending(own_stack):
    """Retention in small transactions while events arrive: it removes exactly the aged prefix,
    never an event newer than the cut-off, blocks nobody for long, and the chains verify."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    import asyncpg
    from audit_devtools.stack import run_cli
    from audit_service import db

    svc = Service(own_stack, "audit_retention_live", RATE_LIMIT_PER_MINUTE="0").start()
    try:
        tenant_id, key = svc.tenant("ret")
        client = Client(svc.url, key, tenant_id)
        aged = client.batch([{"actor": f"old-{i}", "action": "a"} for i in range(900)]).json()["ids"]
        wait_for(lambda: consumer_drained(svc), 60, what="the first events stored")
        old = datetime.now(UTC) - timedelta(days=120)

        async def age() -> None:
            conn = await asyncpg.connect(svc.database_url)
            try:
                await db.ensure_partitions(conn, old, 2)
                await conn.execute(
                    "UPDATE audit_logs SET created_at = $2 WHERE tenant_id = $1", tenant_id, old
                )
            finally:
                await conn.close()

        asyncio.run(age())
        sender = Sender(client, batches=60, size=50)
        sender.start()
        wait_for(lambda: len(sender.acked) > 200, 30, what="traffic")
        report = json.loads(run_cli(svc.retention_env, "retention", "--days", "90").stdout)
        sender.join(120)
        assert sender.done.is_set() and sender.unexpected == []
        assert report["removed_rows"] == len(aged), report
        assert report["dropped_partitions"], report  # the aged month went whole
        assert_exactly_once(svc, tenant_id, sender.acked)  # every newer event stayed; chain valid
        left = sql(svc.database_url, "SELECT count(*) AS n FROM audit_logs WHERE tenant_id = $1", tenant_id)
        assert left[0]["n"] == len(sender.acked)

        # Shorter than the stream's 7-day replay window: refused, nothing removed.
        refused = run_cli(svc.retention_env, "retention", "--days", "3")
        assert refused.returncode == 1 and "shorter than the stream's replay window" in refused.stderr
    finally:
        svc.stop()
