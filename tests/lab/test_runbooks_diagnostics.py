"""The guide's Quick Diagnostics as runbooks (playbooks/runbooks/diagnostics), each against the
fault it is for, injected for real on the converged lab and healed before the next test."""

from __future__ import annotations

import uuid

import pytest
from audit_devtools import lab as lablib
from support.runbooks import assert_changes_nothing, critical, wait_healthy

pytestmark = pytest.mark.lab


def test_health_check_names_a_stopped_redis_and_the_degraded_api(lab, stack):
    lab.exec("mq1", "systemctl stop redis-server")
    try:
        run = lab.runbook("playbooks/runbooks/diagnostics/health_check.yml")
        assert run.ok, run.describe()  # runbook_fail_on defaults to never
        assert critical(run, host="mq1", component="redis", check="unit_state"), run.describe()
        assert critical(run, host="mq1", component="redis", check="reachable") or critical(
            run, host="mq1", component="redis"
        ), run.describe()
        # The API says degraded and names Redis, on its host and through nginx.
        degraded = [f for f in critical(run, check="api_health") if f["host"] in ("app1", "app2", "lb1")]
        assert {f["host"] for f in degraded} >= {"app1", "lb1"}, run.describe()
        assert any("redis" in f["summary"] for f in degraded), run.describe()
        # Every host's load, memory, disk and units are in the report, healthy or not.
        summaries = {f["host"]: f for f in run.findings(check="host_summary")}
        assert set(summaries) == set(lab.hosts), run.describe()
        assert {"load", "memory", "disks", "units"} <= set(summaries["mq1"]["evidence"]), summaries["mq1"]
        assert summaries["mq1"]["evidence"]["units"]["redis-server.service"]["active_state"] == "inactive"
        assert set(run.report["hosts"]) == set(lab.hosts)

        failing = lab.runbook(
            "playbooks/runbooks/diagnostics/health_check.yml", extra_vars={"runbook_fail_on": "critical"}
        )
        assert not failing.ok, "a critical finding must fail the run when runbook_fail_on=critical"
    finally:
        lab.exec("mq1", "systemctl start redis-server")
    wait_healthy()
    again = assert_changes_nothing(
        lab, "playbooks/runbooks/diagnostics/health_check.yml", extra_vars={"runbook_fail_on": "critical"}
    )
    assert critical(again) == [], again.describe()


def test_connectivity_names_the_failing_links_and_the_servers_errors(lab, stack):
    lab.exec("mq2", "systemctl stop nats-server")
    lab.exec("db1", "runuser -u postgres -- psql -qc \"ALTER ROLE audit_user PASSWORD 'not-the-secret'\"")
    try:
        run = lab.runbook("playbooks/runbooks/diagnostics/connectivity.yml")
        assert run.ok, run.describe()
        for host in ("app1", "app2"):
            pg = critical(run, host=host, component="postgresql")
            assert pg and any("28P01" in str(f) or "password authentication failed" in str(f) for f in pg), (
                run.describe()
            )
            nats = critical(run, host=host, component="nats")
            assert nats and any("mq2" in str(f) for f in nats), run.describe()
            assert not critical(run, host=host, component="redis"), run.describe()
    finally:
        lab.exec("mq2", "systemctl start nats-server")
        reset = lab.runbook(
            "playbooks/runbooks/common/database_connection.yml", extra_vars={"database_reset_password": True}
        )
        assert reset.ok, reset.describe()
    wait_healthy()
    again = assert_changes_nothing(lab, "playbooks/runbooks/diagnostics/connectivity.yml")
    assert critical(again) == [], again.describe()


def test_logs_show_a_burst_of_failing_requests_by_host_unit_and_time(lab, stack):
    marker = f"no-such-key-{uuid.uuid4().hex[:8]}"
    for _ in range(20):
        r = lablib.lb_request("GET", "/api/v1/audit/logs", headers={"X-API-Key": marker})
        assert r.status_code in (401, 403), r.text
    run = lab.runbook(
        "playbooks/runbooks/diagnostics/logs.yml", extra_vars={"logs_since": "-5min", "logs_tail": 200}
    )
    assert run.ok, run.describe()
    components = {f["component"] for f in run.findings(check="log_lines")} | {
        f["component"] for f in run.findings(check="log_errors")
    }
    assert {"api", "nginx"} <= components, run.describe()
    lines = [e for f in run.findings(component="api") for e in f["evidence"]]
    assert lines and all({"time", "unit", "host", "message"} <= set(e) for e in lines), lines[:3]
    assert any(
        " 401" in e["message"] or '"status": 401' in e["message"] or "401" in e["message"] for e in lines
    )

    only_api = lab.runbook(
        "playbooks/runbooks/diagnostics/logs.yml",
        extra_vars={"logs_components": ["api"], "logs_since": "-5min", "logs_grep": "401"},
    )
    assert only_api.ok, only_api.describe()
    assert {f["component"] for f in only_api.report["findings"]} == {"api"}, only_api.describe()
    assert all("401" in e["message"] for f in only_api.report["findings"] for e in f["evidence"])

    tail = lab.runbook(
        "playbooks/runbooks/diagnostics/logs.yml", extra_vars={"logs_components": ["api"], "logs_tail": 2}
    )
    assert tail.ok and all(len(f["evidence"]) <= 2 for f in tail.report["findings"]), tail.describe()
    assert tail.changed == 0


def test_fleet_health_lists_every_host_in_one_table_and_names_a_stopped_unit(lab, stack):
    lab.exec("mq3", "systemctl stop nats-server")
    try:
        run = lab.runbook("playbooks/runbooks/fleet_health.yml")
        assert run.ok and run.changed == 0, run.describe()
        rows = {f["host"]: f["evidence"] for f in run.findings(check="fleet_row")}
        assert set(rows) == set(lab.hosts), run.describe()
        assert rows["mq3"]["units_down"] == ["nats-server.service"], rows["mq3"]
        assert rows["mq1"]["units_down"] == [] and rows["mq1"]["units_up"] == rows["mq1"]["units_total"]
        assert critical(run, host="mq3", component="nats", check="unit_state"), run.describe()
        assert "Fleet table" in run.output and "nats-server.service" in run.output, run.describe()
    finally:
        lab.exec("mq3", "systemctl start nats-server")
    wait_healthy()
