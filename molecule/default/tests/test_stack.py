"""The stack end to end, from the controller through lb1 (nginx's HTTPS and Prometheus, published
on the controller's loopback: audit_devtools.lab knows where, for the lab AUDIT_LAB names): once,
not per host."""

import time
import uuid

import httpx
from audit_devtools import lab as lablib

testinfra_hosts = ["ansible://lb1"]

LB_URL = lablib.LB_URL
# nginx's certificate is checked against the lab's CA (made by the common role).
LAB_TLS = lablib.lab_tls()
PROMETHEUS_URL = lablib.PROMETHEUS_URL


def test_events_through_nginx_are_stored_isolated_and_verifiable(lab_host, audit_cli):
    a = audit_cli("app1", "create-tenant", f"verify-a-{uuid.uuid4().hex[:8]}")
    b = audit_cli("app1", "create-tenant", f"verify-b-{uuid.uuid4().hex[:8]}")
    ha = {"X-API-Key": audit_cli("app2", "create-api-key", a["tenant_id"])["api_key"]}
    hb = {"X-API-Key": audit_cli("app2", "create-api-key", b["tenant_id"])["api_key"]}

    r = httpx.post(
        f"{LB_URL}/api/v1/audit/logs/batch",
        json={"events": [{"actor": f"u{i}", "action": "login"} for i in range(40)]},
        headers=ha,
        timeout=30,
        verify=LAB_TLS,
    )
    assert r.status_code == 202, r.text
    ids = r.json()["ids"]

    # Stored in PostgreSQL on db1, under tenant a.
    count_sql = f"SELECT count(*) FROM audit_logs WHERE tenant_id = '{a['tenant_id']}'"  # noqa: S608 (our UUID)
    psql = f'runuser -u postgres -- psql -qAt -d audit_logs -c "{count_sql}"'
    deadline = time.monotonic() + 60
    while lab_host("db1").check_output(psql) != "40" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert lab_host("db1").check_output(psql) == "40"

    # Readable by a, invisible to b, and a's chain verifies.
    assert (
        httpx.get(f"{LB_URL}/api/v1/audit/logs/{ids[0]}", headers=ha, timeout=30, verify=LAB_TLS).status_code
        == 200
    )
    assert (
        httpx.get(f"{LB_URL}/api/v1/audit/logs/{ids[0]}", headers=hb, timeout=30, verify=LAB_TLS).status_code
        == 404
    )
    assert (
        httpx.get(f"{LB_URL}/api/v1/audit/logs", headers=hb, timeout=30, verify=LAB_TLS).json()["items"] == []
    )
    verify = httpx.get(f"{LB_URL}/api/v1/audit/verify", headers=ha, timeout=30, verify=LAB_TLS).json()
    assert verify == {"valid": True, "checked": 40, "first_invalid": None, "reason": None}
    health = httpx.get(f"{LB_URL}/api/v1/metrics/health", timeout=30, verify=LAB_TLS).json()
    assert health["status"] == "healthy", health


def test_prometheus_has_every_target_up():
    # A target added by this converge is up after its first scrape (15 s interval).
    deadline = time.monotonic() + 60
    while True:
        targets = httpx.get(f"{PROMETHEUS_URL}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        down = [(t["labels"]["instance"], t["lastError"]) for t in targets if t["health"] != "up"]
        if not down or time.monotonic() > deadline:
            break
        time.sleep(2)
    jobs = {t["labels"]["job"] for t in targets}
    assert jobs == {"prometheus", "audit-api", "audit-worker", "node", "postgres", "redis"}
    assert len(targets) == 1 + 2 + 2 + 7 + 1 + 1  # app1+app2 twice, node on all seven hosts
    assert down == []


def test_nginx_keeps_the_internals_from_the_public():
    # Docs, schema, metrics and stats: refused through nginx (Prometheus scrapes the API hosts).
    for path in ("/docs", "/openapi.json", "/api/v1/metrics", "/api/v1/metrics/stats"):
        r = httpx.get(f"{LB_URL}{path}", timeout=30, verify=LAB_TLS)
        assert r.status_code == 403, (path, r.status_code)
    # Health is public, but without the components' error texts.
    health = httpx.get(f"{LB_URL}/api/v1/metrics/health", timeout=30, verify=LAB_TLS).json()
    assert health["components"] and all("error" not in c for c in health["components"].values())


def test_prometheus_evaluates_the_alerts_and_sends_them_to_alertmanager():
    groups = httpx.get(f"{PROMETHEUS_URL}/api/v1/rules", timeout=10).json()["data"]["groups"]
    alerts = {r["name"] for g in groups for r in g["rules"] if r["type"] == "alerting"}
    assert {"AuditComponentDown", "AuditDeadLetters", "AuditStreamStoreFilling"} <= alerts
    deadline = time.monotonic() + 60
    while True:
        managers = httpx.get(f"{PROMETHEUS_URL}/api/v1/alertmanagers", timeout=10).json()["data"]
        if managers["activeAlertmanagers"] or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert [m["url"] for m in managers["activeAlertmanagers"]] == [
        m["url"] for m in managers["activeAlertmanagers"] if m["url"].endswith(":9093/api/v2/alerts")
    ]
    assert len(managers["activeAlertmanagers"]) == 1
