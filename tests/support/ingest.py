"""Ingest through the lab's nginx while something else happens (a rolling restart, a runbook's
repair): every acknowledged id and every failure kept, for the test to check afterwards."""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
from audit_devtools import lab as lablib

CLI = "set -a; . /etc/audit-service/audit-service.env; set +a; /opt/audit-service/bin/audit-service"


class Sender(threading.Thread):
    """Sends events through nginx until stopped; keeps every id acknowledged and every failure."""

    def __init__(self, key: str):
        super().__init__(daemon=True)
        self.key = key
        self.acked: list[str] = []
        self.failures: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        with lablib.lb(headers={"X-API-Key": self.key}) as client:
            n = 0
            while not self.stopped.is_set():
                n += 1
                try:
                    if n % 2:
                        r = client.post("/api/v1/audit/logs", json={"actor": f"u{n}", "action": "roll"})
                        ids = [r.json()["id"]] if r.status_code == 202 else []
                    else:
                        events = [{"actor": f"u{n}-{i}", "action": "roll"} for i in range(5)]
                        r = client.post("/api/v1/audit/logs/batch", json={"events": events})
                        ids = r.json()["ids"] if r.status_code == 202 else []
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code == 202:
                    self.acked.extend(ids)
                else:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")
                time.sleep(0.02)


def tenant_key(lab) -> tuple[str, str]:
    tenant = json.loads(lab.exec("app1", f"{CLI} create-tenant roll-{uuid.uuid4().hex[:8]}").stdout)
    key = json.loads(lab.exec("app1", f"{CLI} create-api-key {tenant['tenant_id']}").stdout)["api_key"]
    return tenant["tenant_id"], key


def key_mirrored(lab, key: str) -> bool:
    """Is the API key in the API's Redis mirror of its key snapshot (on mq1)? Every API process
    writes it at each refresh; while PostgreSQL is down a process that has not seen the key since
    it was made takes it from there."""
    import hashlib

    from support.runbooks import redis_cli

    mirror = lab.exec("mq1", f"{redis_cli(lab)} GET audit:keys:audit_logs").stdout
    return hashlib.sha256(key.encode()).hexdigest() in mirror


def stored(lab, tenant_id: str) -> list[str]:
    """The ids of the tenant's stored events, as PostgreSQL has them (duplicates kept)."""
    sql = f"SELECT event_id FROM audit_logs WHERE tenant_id = '{tenant_id}'"  # noqa: S608 (our UUID)
    return lab.exec("db1", f'runuser -u postgres -- psql -qAt -d audit_logs -c "{sql}"').stdout.split()


def assert_stored_once(lab, tenant_id: str, acked: list[str], timeout: float = 180) -> None:
    """Every acknowledged event is stored (waiting for the workers to catch up), none twice."""
    deadline = time.monotonic() + timeout
    while not set(acked) <= set(ids := stored(lab, tenant_id)) and time.monotonic() < deadline:
        time.sleep(1)
    assert set(acked) <= set(ids), f"{len(set(acked) - set(ids))} acknowledged events not stored"
    assert len(ids) == len(set(ids)), "an event was stored twice"


def invocation(lab, host: str, unit: str) -> str:
    """systemd's id of the unit's current run: a restart gives a new one."""
    return lab.exec(host, ["systemctl", "show", "-p", "InvocationID", "--value", unit]).stdout.strip()


def service_invocations(
    lab, hosts: list[str], units: tuple[str, ...] = ("audit-api", "audit-worker")
) -> dict[tuple[str, str], str]:
    """The current run of each unit (audit-api and audit-worker) on each host: (host, unit) -> invocation."""
    return {(h, u): invocation(lab, h, u) for h in hosts for u in units}


def assert_restarted_in_turn(lab, before: dict[tuple[str, str], str]) -> None:
    """Every unit of `before` (service_invocations, taken earlier) was restarted, and the second
    host's API went down only after the first's was up again (the containers share the kernel's
    monotonic clock)."""
    hosts = sorted({host for host, _ in before})
    after = service_invocations(lab, hosts, tuple(sorted({unit for _, unit in before})))
    assert all(after[k] != before[k] for k in before), f"a unit was not restarted: {before} -> {after}"
    names = ["InactiveEnterTimestampMonotonic", "ActiveEnterTimestampMonotonic"]
    stamps = {}
    for host in hosts:
        out = lab.exec(host, ["systemctl", "show", "-p", ",".join(names), "audit-api"]).stdout
        stamps[host] = {k: int(v) for k, v in (line.split("=", 1) for line in out.split())}
    first, second = sorted(hosts, key=lambda h: stamps[h]["InactiveEnterTimestampMonotonic"])
    assert (
        stamps[second]["InactiveEnterTimestampMonotonic"] > stamps[first]["ActiveEnterTimestampMonotonic"]
    ), stamps
