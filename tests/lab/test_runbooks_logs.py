"""The guide's Log Analysis section as one runbook (playbooks/runbooks/logs/analysis.yml), against
the faults it is for, made for real on the converged lab: a burst of one tenant's bad requests,
requests held up by a lock, one request followed through nginx, the API and the worker, and units
killed by a signal and by the OOM killer."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from audit_devtools import lab as lablib
from support.ingest import tenant_key
from support.runbooks import assert_changes_nothing, critical, wait_active, wait_for

pytestmark = pytest.mark.lab

RUNBOOK = "playbooks/runbooks/logs/analysis.yml"
PSQL = "runuser -u postgres -- psql -d audit_logs -tAc"


def since_now() -> str:
    """This moment (less a second), as the runbook's logs_since takes it: the window of one test
    holds only what the test did (the lab's hosts keep UTC)."""
    return (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S")


def stored(lab, tenant_id: str) -> int:
    sql = f"SELECT count(*) FROM audit_logs WHERE tenant_id = '{tenant_id}'"
    return int(lab.exec("db1", f'{PSQL} "{sql}"').stdout.strip())


def test_log_analysis_counts_a_tenants_error_burst_follows_one_request_everywhere_and_lists_slow_requests(
    lab, stack
):
    since = since_now()
    tenant_id, key = tenant_key(lab)
    headers = {"X-API-Key": key}
    burst = [f"burst-{uuid.uuid4().hex[:12]}" for _ in range(25)]
    for cid in burst:  # no `action`: 422, answered by the API after it knew the tenant
        r = lablib.lb_request(
            "POST", "/api/v1/audit/logs", json={"actor": "a"}, headers={**headers, "X-Correlation-ID": cid}
        )
        assert r.status_code == 422, r.text
    follow = f"follow-{uuid.uuid4().hex[:12]}"
    r = lablib.lb_request(
        "POST",
        "/api/v1/audit/logs",
        json={"actor": "a", "action": "traced"},
        headers={**headers, "X-Correlation-ID": follow},
    )
    assert r.status_code == 202 and r.headers["x-correlation-id"] == follow, r.text
    wait_for(lambda: stored(lab, tenant_id) == 1, 60, "the traced event stored")

    # Reads held up by a lock on the events' table for 3 s: slow requests.
    lab.exec(
        "db1",
        f"{PSQL} 'BEGIN; LOCK TABLE audit_logs IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(3); COMMIT'"
        " > /dev/null 2>&1 &",
    )
    wait_for(
        lambda: (
            lab.exec(
                "db1",
                f"{PSQL} \"SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted\"",
            ).stdout.strip()
            != "0"
        ),
        10,
        "the lock",
    )
    for i in range(4):  # each query its own, so that no cached answer comes back
        r = lablib.lb_request("GET", f"/api/v1/audit/logs?actor=slow-{i}", headers=headers, timeout=30)
        assert r.status_code == 200, r.text

    run = lab.runbook(
        RUNBOOK, extra_vars={"logs_since": since, "logs_correlation_id": follow, "logs_slow_ms": 1000}
    )
    assert run.ok and run.changed == 0, run.describe()

    bursts = [f for f in run.findings(check="client_errors") if f["component"] == "api"]
    assert {f["host"] for f in bursts} <= {"app1", "app2"} and bursts, run.describe()
    counted = [r for f in bursts for r in f["evidence"] if r["tenant_id"] == tenant_id and r["status"] == 422]
    assert sum(r["count"] for r in counted) == 25, counted
    assert {cid for r in counted for cid in r["correlation_ids"]} <= set(burst)

    (trace,) = run.findings(host="localhost", check="correlation_trace")
    sources = [line["source"] for line in trace["evidence"]]
    assert {"nginx", "api", "worker"} <= set(sources), trace
    assert sources.index("worker") > sources.index("api"), trace  # in time order: stored after accepted
    times = [line["time"] for line in trace["evidence"]]
    assert times == sorted(times), trace

    slow = run.findings(host="lb1", check="slow_requests")
    assert slow and slow[0]["severity"] == "warning", run.describe()
    slowest = slow[0]["evidence"]
    assert len([s for s in slowest if s["path"] == "/api/v1/audit/logs" and s["method"] == "GET"]) >= 1, (
        slowest
    )
    assert all(s["duration_ms"] >= 1000 for s in slowest), slowest

    (patterns,) = run.findings(host="lb1", check="request_patterns")
    by_key = {(p["method"], p["path"], p["status"]): p for p in patterns["evidence"]}
    assert by_key[("POST", "/api/v1/audit/logs", 422)]["count"] == 25, by_key
    gets = by_key[("GET", "/api/v1/audit/logs", 200)]
    assert (
        gets["count"] >= 4 and gets["p50_ms"] <= gets["p99_ms"] <= gets["max_ms"] and gets["max_ms"] >= 1000
    ), gets

    assert_changes_nothing(lab, RUNBOOK, extra_vars={"logs_since": since, "logs_correlation_id": follow})


def test_log_analysis_names_units_killed_by_a_signal_or_a_memory_limit_and_says_kernel_lines_are_unreadable(
    lab, stack
):
    since = since_now()
    lab.exec("app2", "systemctl kill -s KILL audit-worker")
    # A unit held to 32 MB that takes more: the kernel's OOM killer of its cgroup ends it. The lab's
    # containers have cgroup v1, where systemd sees only the SIGKILL (with cgroup v2 it says
    # 'oom-kill': tests/unit/test_log_analysis_module.py), and no /dev/kmsg for the kernel's line.
    lab.exec(
        "app2",
        "systemd-run --unit=oom-demo -p MemoryMax=32M -p MemorySwapMax=0 --wait "
        "python3 -c 'b = bytearray(256 * 2**20); b[::4096] = b\"x\" * len(b[::4096])'",
        check=False,
    )
    wait_active(lab, "app2", "audit-worker")
    try:
        run = lab.runbook(RUNBOOK, limit="app2:localhost", extra_vars={"logs_since": since})
        assert run.ok and run.changed == 0, run.describe()
        killed = {f["evidence"]["unit"]: f for f in critical(run, host="app2", check="unit_killed")}
        assert set(killed) == {"audit-worker.service", "oom-demo.service"}, killed
        assert killed["audit-worker.service"]["component"] == "worker", killed
        assert all("was killed by signal 9/KILL" in f["summary"] for f in killed.values()), killed
        (kernel,) = run.findings(host="app2", check="kernel_log")
        assert "cannot be read on app2" in kernel["summary"], kernel
    finally:
        lab.exec("app2", "systemctl reset-failed oom-demo.service", check=False)
    assert_changes_nothing(lab, RUNBOOK, limit="app2:localhost", extra_vars={"logs_since": since})
