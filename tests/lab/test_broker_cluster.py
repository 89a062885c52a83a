"""The lab's three brokers form a NATS cluster with the stream on all three: a broker host that
dies during ingest (its container killed, as a power cut would) costs no acknowledged event.
The killed host is started again at the end, and the cluster is whole before the next test."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid

import httpx
import pytest
from audit_devtools import lab as lablib

pytestmark = pytest.mark.lab

CLI = "set -a; . /etc/audit-service/audit-service.env; set +a; /opt/audit-service/bin/audit-service"
BROKERS = ["mq1", "mq2", "mq3"]


def stream_state(lab, host: str) -> dict:
    jsz = lab.exec(host, "curl -fsS 'http://127.0.0.1:8222/jsz?streams=true&config=true'").stdout
    return next(s for a in json.loads(jsz)["account_details"] for s in a.get("stream_detail", []))


def leader_view(lab) -> dict | None:
    """The stream as its leader sees it (only the leader knows whether its replicas are current)."""
    for host in BROKERS:
        try:
            state = stream_state(lab, host)
        except AssertionError:  # the host is down
            continue
        if state.get("cluster", {}).get("leader") == host:
            return state
    return None


def cluster_whole(lab) -> bool:
    """Every broker answers /healthz and the stream's leader has two current replicas."""
    for host in BROKERS:
        if lab.exec(host, "curl -fsS http://127.0.0.1:8222/healthz", check=False).returncode != 0:
            return False
    view = leader_view(lab)
    replicas = (view or {}).get("cluster", {}).get("replicas") or []
    return len(replicas) == 2 and all(r.get("current") for r in replicas)


def wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stored_ids(lab, tenant_id: str) -> list[str]:
    sql = f"SELECT event_id FROM audit_logs WHERE tenant_id = '{tenant_id}'"  # noqa: S608 (our UUID)
    return lab.exec("db1", f'runuser -u postgres -- psql -qAt -d audit_logs -c "{sql}"').stdout.split()


def test_the_stream_is_replicated_on_every_broker(lab, stack):
    wait(lambda: cluster_whole(lab), 120, "the cluster and the stream's replicas")
    state = leader_view(lab)
    assert state["config"]["num_replicas"] == 3
    peers = {state["cluster"]["leader"], *(r["name"] for r in state["cluster"]["replicas"])}
    assert peers == set(BROKERS)


def test_a_broker_host_killed_during_ingest_loses_no_acknowledged_event(lab, stack):
    wait(lambda: cluster_whole(lab), 120, "the cluster and the stream's replicas")
    tenant = json.loads(lab.exec("app1", f"{CLI} create-tenant crash-{uuid.uuid4().hex[:8]}").stdout)
    key = json.loads(lab.exec("app1", f"{CLI} create-api-key {tenant['tenant_id']}").stdout)["api_key"]
    acked: list[str] = []
    unexpected: list[str] = []
    done = threading.Event()

    def send() -> None:
        with lablib.lb(headers={"X-API-Key": key}) as client:
            for b in range(150):
                events = [{"actor": f"u{b}-{i}", "action": "crash.test"} for i in range(20)]
                try:
                    r = client.post("/api/v1/audit/logs/batch", json={"events": events})
                except httpx.HTTPError:
                    continue  # not acknowledged: the client would send it again
                if r.status_code == 202:
                    acked.extend(r.json()["ids"])
                elif r.status_code != 503:
                    unexpected.append(f"{r.status_code} {r.text[:200]}")
        done.set()

    # The stream's leader, unless that is mq1 (which also runs Redis): then a replica.
    leader = leader_view(lab)["cluster"]["leader"]
    victim = leader if leader != "mq1" else "mq3"
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    wait(lambda: len(acked) > 400, 60, "ingest under way")
    killed = subprocess.run(["docker", "kill", lab.container(victim)], capture_output=True)
    assert killed.returncode == 0, killed.stderr
    try:
        sender.join(300)
        assert done.is_set(), "the sender did not finish"
        assert unexpected == []
        assert len(acked) > 1000, "ingest did not go on without the broker"
        # Every acknowledged event is stored, once. (A 503 whose publish did reach the stream may be
        # stored too: its sender was told to retry, which Nats-Msg-Id makes safe.)
        wait(
            lambda: set(acked) <= set(stored_ids(lab, tenant["tenant_id"])),
            180,
            f"{len(acked)} events stored",
        )
        ids = stored_ids(lab, tenant["tenant_id"])
        assert len(ids) == len(set(ids)), "an event was stored twice"
    finally:
        subprocess.run(["docker", "start", lab.container(victim)], check=True, capture_output=True)
        wait(lambda: cluster_whole(lab), 180, f"{victim} back in the cluster")
