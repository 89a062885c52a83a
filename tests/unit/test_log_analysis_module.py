"""auditlog.ops.log_analysis's logic (module_utils/loganalysis.py and the module's findings): the
patterns, the quantiles, the window, the correlation, entering a file by bisection, and what
systemd's lines say about a unit. The module against real logs: tests/lab/test_runbooks_logs.py."""

from __future__ import annotations

import io
import json
import random

import pytest
from ansible_collections.auditlog.ops.plugins.module_utils import loganalysis as la
from ansible_collections.auditlog.ops.plugins.modules import log_analysis as mod

TENANT = "7d1f0e36-2f0a-4c8e-9c59-3b8f1b1f2a10"


def api(ts, message, level="INFO", cid=None, **fields):
    doc = {"timestamp": ts, "level": level, "service": "api", "host": "app1", "message": message}
    if cid:
        doc["correlation_id"] = cid
    doc.update(fields)
    return json.dumps(doc, separators=(",", ":"))


def nginx(msec, method, path, status, seconds, cid=""):
    return json.dumps(
        {
            "time": "x",
            "msec": msec,
            "method": method,
            "path": path,
            "status": status,
            "request_time": seconds,
            "correlation_id": cid,
        },
        separators=(",", ":"),
    )


def test_path_template_blanks_ids_and_drops_the_query():
    assert la.path_template(f"/api/v1/audit/logs/{TENANT}") == "/api/v1/audit/logs/{id}"
    assert la.path_template("/api/v1/tenants/42/keys?x=1") == "/api/v1/tenants/{id}/keys"
    assert la.path_template("/api/v1/audit/logs") == "/api/v1/audit/logs"


def test_message_pattern_makes_alike_lines_one():
    a = la.message_pattern(f"store failed; seq 1234 for {TENANT}: 'connection refused' after 2.5s")
    b = la.message_pattern(
        "store failed; seq 99 for 00000000-0000-4000-8000-000000000001: 'timeout' after 10s"
    )
    assert a == b == "store failed; seq <n> for <uuid>: <s> after <n>s"


def test_histogram_quantiles_within_one_percent_of_the_exact_ones():
    rng = random.Random(7)
    values = [rng.lognormvariate(3, 1.2) for _ in range(20000)]
    h = la.Histogram()
    for v in values:
        h.add(v)
    exact = sorted(values)
    for q in (0.5, 0.99):
        want = exact[int(q * len(exact)) - 1]
        assert abs(h.quantile(q) - want) / want < 0.011, (q, h.quantile(q), want)
    assert h.quantile(1.0) <= h.max == max(values)
    assert la.Histogram().quantile(0.5) is None


def window():
    return la.Analysis(
        since="2026-12-01T15:00:00.000",
        until="2026-12-01T15:15:00.000",
        correlation_id="cid-7",
        slow_ms=500,
        top=3,
    )


def test_errors_responses_requests_slow_and_one_correlation_id_over_three_sources():
    a = window()
    lines = [
        api(
            "2026-12-01T14:59:59.999+00:00",
            "Request completed",
            method="GET",
            path="/x",
            status=500,
            duration_ms=9,
        ),
        api(
            "2026-12-01T15:01:00.000+00:00",
            "Incoming request",
            cid="cid-7",
            method="POST",
            path="/api/v1/audit/logs",
        ),
        api(
            "2026-12-01T15:01:00.004+00:00",
            "Request completed",
            cid="cid-7",
            method="POST",
            path="/api/v1/audit/logs",
            status=202,
            duration_ms=4,
            tenant_id=TENANT,
        ),
    ]
    for i in range(30):
        lines.append(
            api(
                f"2026-12-01T15:02:{i:02d}.000+00:00",
                "Request completed",
                cid=f"bad-{i}",
                method="POST",
                path="/api/v1/audit/logs",
                status=422,
                duration_ms=2 + i,
                tenant_id=TENANT,
            )
        )
    lines += [
        api(
            "2026-12-01T15:03:00.000+00:00",
            "store failed; messages will be redelivered",
            "WARNING",
            error="connection refused (1)",
        ),
        api(
            "2026-12-01T15:03:05.000+00:00",
            "store failed; messages will be redelivered",
            "WARNING",
            error="connection refused (2)",
        ),
        api(
            "2026-12-01T15:04:00.000+00:00",
            "Incoming request",
            cid="slow-1",
            method="GET",
            path=f"/api/v1/audit/logs/{TENANT}",
        ),
        api(
            "2026-12-01T15:04:01.200+00:00",
            "Request completed",
            cid="slow-1",
            method="GET",
            path=f"/api/v1/audit/logs/{TENANT}",
            status=200,
            duration_ms=1200.5,
        ),
        "Traceback (most recent call last):",
        "not json and nothing wrong",
    ]
    for line in lines:
        a.feed_service(line, "app1", "api")
    a.feed_service(
        json.dumps(
            {
                "timestamp": "2026-12-01T15:01:00.300+00:00",
                "level": "INFO",
                "service": "worker",
                "host": "app2",
                "message": "batch stored",
                "correlation_ids": ["cid-6", "cid-7"],
            }
        ),
        "app2",
        "worker",
    )
    a.feed_nginx(nginx(1796137260.005, "POST", "/api/v1/audit/logs", 202, 0.005, "cid-7"), "lb1")
    a.feed_nginx(nginx(1796137200.0 - 60, "GET", "/old", 502, 9.0), "lb1")  # before the window
    r = a.result()

    (warn, text) = r["errors"]
    assert warn["count"] == 2 and warn["level"] == "WARNING" and warn["pattern"].startswith("store failed")
    assert text["level"] == "TEXT" and "Traceback" in text["pattern"]
    (bad,) = r["responses"]
    assert (bad["status"], bad["tenant_id"], bad["count"]) == (422, TENANT, 30)
    assert bad["correlation_ids"] == [f"bad-{i}" for i in range(la.MAX_SAMPLE_IDS)]
    posts = next(q for q in r["requests"] if q["status"] == 422)
    assert posts["count"] == 30 and posts["p50_ms"] == pytest.approx(16, rel=0.011)
    assert posts["p99_ms"] == pytest.approx(31, rel=0.011) and posts["max_ms"] == 31
    assert {(q["source"], q["path"]) for q in r["requests"]} >= {
        ("api", "/api/v1/audit/logs/{id}"),
        ("nginx", "/api/v1/audit/logs"),
    }
    assert r["slow_count"] == 1 and r["slow_requests"][0]["correlation_id"] == "slow-1"
    assert [(c["source"], c["host"]) for c in r["correlation"]] == [
        ("api", "app1"),
        ("api", "app1"),
        ("nginx", "lb1"),
        ("worker", "app2"),
    ]
    assert r["correlation"][0]["time"] == "2026-12-01T15:01:00.000Z"
    assert r["unparsed"] == 2 and r["lines"] == len(lines) + 3


def test_the_slowest_are_kept_slowest_first_and_counted_all():
    a = window()
    for i in range(10):
        a.feed_service(
            api(
                f"2026-12-01T15:05:{i:02d}.000+00:00",
                "Request completed",
                method="GET",
                path="/s",
                status=200,
                duration_ms=500 + i,
            ),
            "app1",
        )
    r = a.result()
    assert r["slow_count"] == 10
    assert [s["duration_ms"] for s in r["slow_requests"]] == [509, 508, 507]


def test_line_time_of_both_formats():
    assert la.line_time(api("2026-12-01T15:01:00.123+00:00", "m")) == "2026-12-01T15:01:00.123"
    assert la.line_time(nginx(1796137260.5, "GET", "/", 200, 0.1)) == "2026-12-01T15:01:00.500"
    assert la.line_time("plain") is None


def test_seek_window_enters_a_file_near_the_windows_start():
    lines = [
        api(f"2026-12-01T{10 + i // 3600:02d}:{i // 60 % 60:02d}:{i % 60:02d}.000+00:00", "m")
        for i in range(20000)
    ]
    data = ("\n".join(lines) + "\n").encode()
    f = io.BytesIO(data)
    start = la.seek_window(f, "2026-12-01T14:00:00.000", len(data), margin_bytes=4096)
    first = f.readline().decode()
    assert 0 < start < data.index(b"2026-12-01T14:00:00.000")
    assert data.index(b"2026-12-01T14:00:00.000") - start <= 2 * 4096 + 200
    assert first.startswith('{"timestamp":"2026-12-01T13:59')
    f.seek(0)
    assert la.seek_window(f, None, len(data)) == 0


def journal(pid, message, priority="notice", unit=None, about=None, time="2026-12-01T15:01:00.000Z"):
    return {"time": time, "pid": pid, "identifier": "systemd" if pid == "1" else "x", "message": message,
            "priority": priority, "unit": unit, "about_unit": about}  # fmt: skip


def test_system_report_names_killed_oom_killed_and_failed_units():
    entries = [
        journal(
            "1",
            "audit-worker.service: Main process exited, code=killed, status=9/KILL",
            about="audit-worker.service",
        ),
        journal(
            "1", "audit-worker.service: Failed with result 'signal'.", "warning", about="audit-worker.service"
        ),
        journal(
            "1",
            "oom-demo.service: A process of this unit has been killed by the OOM killer.",
            "warning",
            about="oom-demo.service",
        ),
        journal("1", "oom-demo.service: Failed with result 'oom-kill'.", "warning", about="oom-demo.service"),
        journal("812", "code=killed, status=9/KILL said an application", "info", unit="app.service"),
        journal("1", "Started audit-api.service", "info", about="audit-api.service"),
        journal(
            "1", "retention.service: Failed with result 'exit-code'.", "warning", about="retention.service"
        ),
    ]
    system = mod.system_report(entries, [], False, "warning", 20)
    events = {(u["unit"], u["event"], u["detail"]) for u in system["units"]}
    assert events == {  # each "Failed with result" that only repeats the line before it is left out
        ("audit-worker.service", "killed", "9/KILL"),
        ("oom-demo.service", "oom", None),
        ("retention.service", "failed", "exit-code"),
    }
    assert system["journal_count"] == 4 and not system["kernel"]["available"]
    findings = mod.analysis_findings(
        {"errors": [], "responses": [], "requests": [], "slow_count": 0, "system": system}, None, 1000, "app2"
    )
    by_check = {f["check"]: f for f in findings}
    assert (
        by_check["unit_killed"]["severity"] == "critical" and by_check["unit_killed"]["component"] == "worker"
    )
    assert "killed by signal 9/KILL" in by_check["unit_killed"]["summary"]
    assert by_check["unit_oom"]["severity"] == "critical" and by_check["unit_failed"]["severity"] == "warning"
    assert "retention.service failed (exit-code)" in by_check["unit_failed"]["summary"]
    assert "cannot be read on app2" in by_check["kernel_log"]["summary"]


def test_findings_name_the_tenant_of_a_burst_of_client_errors_and_the_slowest_request():
    a = window()
    for i in range(5):
        a.feed_service(
            api(
                f"2026-12-01T15:02:0{i}.000+00:00",
                "Request completed",
                method="POST",
                path="/p",
                status=422,
                duration_ms=3,
                tenant_id=TENANT,
            ),
            "app1",
        )
    a.feed_service(
        api(
            "2026-12-01T15:02:09.000+00:00",
            "Request completed",
            method="GET",
            path="/g",
            status=503,
            duration_ms=900,
        ),
        "app1",
    )
    findings = {f["check"]: f for f in mod.analysis_findings(a.result(), None, 500, "app1")}
    assert findings["client_errors"]["severity"] == "info"
    assert f"5x 422 POST /p (api) for tenant {TENANT}" in findings["client_errors"]["summary"]
    assert (
        findings["server_errors"]["severity"] == "warning"
        and "503 GET /g" in findings["server_errors"]["summary"]
    )
    assert "the slowest 900 ms: GET /g" in findings["slow_requests"]["summary"]


def test_401_and_403_answers_are_counted_by_client_address_and_key_prefix_and_a_burst_is_named():
    a = window()

    def refused(i, address, prefix, status=401):
        doc = json.loads(nginx(1796137320.0 + i, "POST", "/api/v1/audit/logs", status, 0.002))
        doc.update(remote_addr=address, key_prefix=prefix)
        a.feed_nginx(json.dumps(doc), "lb1")

    for i in range(25):
        refused(i, "192.0.2.6", "alk_bad123" if i % 2 else "alk_bad456")
    for i in range(3):
        refused(30 + i, "198.51.100.9", "", status=403)
    rows = a.result()["auth_failures"]
    assert [(r["address"], r["key_prefix"], r["status"], r["count"]) for r in rows] == [
        ("192.0.2.6", "alk_bad456", 401, 13),
        ("192.0.2.6", "alk_bad123", 401, 12),
        ("198.51.100.9", None, 403, 3),
    ]
    assert rows[0]["paths"] == {"/api/v1/audit/logs": 13}
    burst = [f for f in mod.analysis_findings(a.result(), None, 500, "lb1") if f["check"] == "auth_failures"]
    # Only the address over the threshold (20) is named, with both its key prefixes.
    assert len(burst) == 1 and burst[0]["severity"] == "warning"
    assert burst[0]["summary"].startswith("192.0.2.6: 25 answer(s) 401/403")
    assert burst[0]["summary"].endswith("key prefix(es) alk_bad123, alk_bad456")
    assert len(mod.auth_failure_findings(a.result()["auth_failures"], 3)) == 2
