"""auditlog.ops.ingest_load against the real service (an API and a worker on PostgreSQL, Redis and
NATS JetStream on loopback): every acknowledged id recorded per tenant, each stored once, and a
refused key's requests counted as failures, not as acknowledged events."""

from __future__ import annotations

import json
import time

import pytest
from audit_devtools.stack import Service, Stack
from support import modules

pytestmark = pytest.mark.service


@pytest.fixture(scope="module")
def svc():
    stack = Stack().start()
    service = Service(stack, "audit_ingest_load").start()
    yield service
    service.stop()
    stack.stop()


def stored(svc, tenant_id: str) -> list[str]:
    sql = f"SELECT event_id FROM audit_logs WHERE tenant_id = '{tenant_id}'"  # noqa: S608 (our UUID)
    return svc.stack.pg.psql(sql, db="audit_ingest_load").split()


def test_every_acknowledged_id_is_recorded_per_tenant_and_stored_once(svc, tmp_path):
    tenants = {name: svc.tenant(name) for name in ("load-a", "load-b")}
    senders = [{"name": name, "key": key} for name, (_, key) in tenants.items()]
    senders.append({"name": "nobody", "key": "alk_not-a-key"})
    record = tmp_path / "acked.json"
    rc, r, out = modules.run_module(
        "ingest_load",
        {"url": svc.url, "tenants": senders, "events": 300, "batch": 25, "rate": 0, "record": str(record)},
    )
    assert rc == 0 and r["changed"], out
    # 12 requests of 25, in turn over three keys: four each; the made-up key's four are refused.
    assert r["acked"] == {"load-a": 100, "load-b": 100, "nobody": 0}, r
    assert r["failed_requests"] == 4 and all(f.startswith("nobody: 401") for f in r["failures"]), r[
        "failures"
    ]
    assert "alk_not-a-key" not in out
    written = json.loads(record.read_text())
    for name, (tenant_id, _) in tenants.items():
        acked = written["tenants"][name]
        assert len(acked) == len(set(acked)) == 100
        deadline = time.monotonic() + 60
        while not set(acked) <= set(ids := stored(svc, tenant_id)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert sorted(ids) == sorted(acked), name


def test_check_mode_sends_nothing(svc, tmp_path):
    tenant_id, key = svc.tenant("load-check")
    record = tmp_path / "acked.json"
    rc, r, out = modules.run_module(
        "ingest_load",
        {"url": svc.url, "tenants": [{"name": "c", "key": key}], "record": str(record)},
        "--check",
    )
    assert rc == 0 and not r["changed"] and not record.exists(), out
    assert stored(svc, tenant_id) == []
