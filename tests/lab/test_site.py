"""site.yml on the lab: converge, a second converge and a --check run that change nothing, and
the stack working end to end through nginx."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

pytestmark = pytest.mark.lab

LB = "http://127.0.0.1:18080"  # lb1's port 80, published on the controller's loopback only


@pytest.fixture(scope="module")
def site(lab):
    first = lab.playbook("playbooks/site.yml")
    assert first.ok, first.describe()
    return first


def cli(lab, host: str, *args: str) -> dict:
    """audit-service on an app host, with the deployed environment file."""
    command = (
        "set -a; . /etc/audit-service/audit-service.env; set +a; /opt/audit-service/bin/audit-service "
        + " ".join(args)
    )
    return json.loads(lab.exec(host, ["sh", "-c", command]).stdout)


def psql(lab, sql: str) -> str:
    return lab.exec(
        "db1", ["runuser", "-u", "postgres", "--", "psql", "-qAt", "-d", "audit_logs", "-c", sql]
    ).stdout.strip()


def test_a_second_converge_changes_nothing(lab, site):
    # (The first converge changes plenty on a new lab; with LAB_KEEP=1 the lab may be converged.)
    second = lab.playbook("playbooks/site.yml")
    assert second.ok, second.describe()
    assert second.changed == 0, second.describe()


def test_check_mode_reports_nothing_to_change(lab, site):
    check = lab.playbook("playbooks/site.yml", "--check")
    assert check.ok, check.describe()
    assert check.changed == 0, check.describe()


def test_units_are_active_and_enabled(lab, site):
    expected = {
        "db1": ["postgresql"],
        "mq1": ["redis-server", "nats-server"],
        "app1": ["audit-api", "audit-worker"],
        "app2": ["audit-api", "audit-worker"],
        "lb1": ["nginx"],
    }
    for host, units in expected.items():
        for unit in units:
            assert lab.exec(host, ["systemctl", "is-active", unit], check=False).stdout.strip() == "active", (
                host,
                unit,
            )
            assert (
                lab.exec(host, ["systemctl", "is-enabled", unit], check=False).stdout.strip() == "enabled"
            ), (host, unit)


def test_secret_files_are_private(lab, site):
    for host in ("app1", "app2"):
        stat = lab.exec(host, ["stat", "-c", "%a %U", "/etc/audit-service/audit-service.env"]).stdout.split()
        assert stat == ["600", "root"], host


def test_events_through_nginx_are_stored_isolated_and_verifiable(lab, site):
    a = cli(lab, "app1", "create-tenant", f"site-a-{uuid.uuid4().hex[:8]}")
    b = cli(lab, "app1", "create-tenant", f"site-b-{uuid.uuid4().hex[:8]}")
    key_a = cli(lab, "app2", "create-api-key", a["tenant_id"])["api_key"]
    key_b = cli(lab, "app2", "create-api-key", b["tenant_id"])["api_key"]
    ha, hb = {"X-API-Key": key_a}, {"X-API-Key": key_b}
    r = httpx.post(
        f"{LB}/api/v1/audit/logs/batch",
        json={"events": [{"actor": f"u{i}", "action": "login"} for i in range(50)]},
        headers=ha,
        timeout=30,
    )
    assert r.status_code == 202, r.text
    ids = r.json()["ids"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if psql(lab, f"SELECT count(*) FROM audit_logs WHERE tenant_id = '{a['tenant_id']}'") == "50":
            break
        time.sleep(0.5)
    assert psql(lab, f"SELECT count(*) FROM audit_logs WHERE tenant_id = '{a['tenant_id']}'") == "50"
    assert httpx.get(f"{LB}/api/v1/audit/logs/{ids[0]}", headers=ha, timeout=30).status_code == 200
    assert httpx.get(f"{LB}/api/v1/audit/logs/{ids[0]}", headers=hb, timeout=30).status_code == 404
    assert httpx.get(f"{LB}/api/v1/audit/logs", headers=hb, timeout=30).json()["items"] == []
    verify = httpx.get(f"{LB}/api/v1/audit/verify", headers=ha, timeout=30).json()
    assert verify == {"valid": True, "checked": 50, "first_invalid": None, "reason": None}
    health = httpx.get(f"{LB}/api/v1/metrics/health", timeout=30).json()
    assert health["status"] == "healthy", health
