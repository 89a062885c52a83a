"""Nothing lost: every event answered 202 ends up in PostgreSQL exactly once, whatever dies.

These tests stop and kill real servers, so they run on a stack of their own.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from conftest import Client, sql, wait_for
from stack import Service, Stack


@pytest.fixture(scope="module")
def own_stack() -> Iterator[Stack]:
    s = Stack().start()
    yield s
    s.stop()


@pytest.fixture
def svc(own_stack: Stack, request) -> Iterator[Service]:
    s = Service(own_stack, f"audit_{request.node.name[5:40]}", RATE_LIMIT_PER_MINUTE="0").start()
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
    time.sleep(1)  # late duplicates, if any, would land now
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


def test_postgresql_stopped_while_events_arrive(svc, own_stack):
    tenant_id, key = svc.tenant("pgdown")
    client = Client(svc.url, key, tenant_id)
    acked = client.batch([{"actor": "before", "action": "a"} for _ in range(100)]).json()["ids"]
    own_stack.pg.stop()
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
        time.sleep(3)  # the worker meets the outage and keeps the messages unacked
    finally:
        own_stack.pg.start()
    svc.wait_healthy(60)
    assert_exactly_once(svc, tenant_id, acked)
    assert "store failed; messages will be redelivered" in svc.workers[0].log()


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
