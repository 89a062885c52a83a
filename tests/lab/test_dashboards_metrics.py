"""Grafana is disabled in the lab (its package repository is out of reach), so its dashboards are
checked against the lab instead: every metric they query is one the lab's Prometheus holds."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest
from audit_devtools import lab as lablib
from support import dashboards

pytestmark = pytest.mark.lab

PROMETHEUS = lablib.PROMETHEUS_URL


def test_every_dashboard_metric_is_exported_in_the_lab(lab, stack):
    # Traffic first: some series appear once there is a tenant, an event and a health probe.
    env = "set -a; . /etc/audit-service/audit-service.env; set +a; /opt/audit-service/bin/audit-service"
    tenant = json.loads(lab.exec("app1", f"{env} create-tenant dash-{uuid.uuid4().hex[:8]}").stdout)
    key = json.loads(lab.exec("app1", f"{env} create-api-key {tenant['tenant_id']}").stdout)["api_key"]
    r = lablib.lb_request(
        "POST", "/api/v1/audit/logs", json={"actor": "a", "action": "b"}, headers={"X-API-Key": key}
    )
    assert r.status_code == 202, r.text
    assert lablib.lb_request("GET", "/api/v1/metrics/health", timeout=30).status_code == 200

    wanted: dict[str, set[str]] = {}  # metric name -> the dashboards that query it
    for file, dash in dashboards.load().items():
        for query in dashboards.queries(dash):
            for name in dashboards.metric_names(query):
                wanted.setdefault(name, set()).add(file)
    assert len(wanted) > 20
    deadline = time.monotonic() + 90  # a few scrape intervals (15 s) for the new series
    while True:
        names = set(httpx.get(f"{PROMETHEUS}/api/v1/label/__name__/values", timeout=10).json()["data"])
        missing = {name: files for name, files in wanted.items() if name not in names}
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert missing == {}, f"queried by the dashboards, not in the lab's Prometheus: {missing}"
