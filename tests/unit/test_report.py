"""auditlog.ops' runbook report (plugin_utils/report.py) and the findings' way to it (the action
plugins' findings_action, the verdict): pure logic, no Ansible run."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone

import pytest
from ansible_collections.auditlog.ops.plugins.action.verdict import judge
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding
from ansible_collections.auditlog.ops.plugins.plugin_utils import findings_action as fa
from ansible_collections.auditlog.ops.plugins.plugin_utils import report as rpt

STARTED = datetime(2026, 12, 1, 15, 0, 33, tzinfo=UTC)
FINISHED = STARTED + timedelta(seconds=12.5)


def make_report(collector, hosts=None, check=False):
    return rpt.build_report(
        runbook="diagnostics-health_check",
        playbook="playbooks/runbooks/diagnostics/health_check.yml",
        started=STARTED,
        finished=FINISHED,
        check_mode=check,
        diff_mode=False,
        hosts=hosts or {"db-1": {"ok": 3, "changed": 1, "failed": 0}},
        findings=collector.findings,
        remediations=collector.remediations,
        failures=collector.failures,
    )


def redis_down():
    return finding(
        "critical", "redis", "unit_state", "redis-server is not running", {"ActiveState": "failed"}
    )


# --- schema -------------------------------------------------------------------------------------


def test_the_report_has_every_field_of_schema_1():
    c = rpt.Collector()
    c.task_result("db-1", "Probe", "Health", "auditlog.ops.host_facts", {"findings": [redis_down()]}, "ok")
    report = make_report(c)
    assert list(report) == [
        "schema_version",
        "runbook",
        "playbook",
        "started",
        "finished",
        "duration_seconds",
        "check_mode",
        "diff_mode",
        "status",
        "summary",
        "hosts",
        "findings",
        "remediations",
        "failures",
    ]
    assert report["schema_version"] == 1
    assert report["started"] == "2026-12-01T15:00:33Z"
    assert report["finished"] == "2026-12-01T15:00:45Z"
    assert report["duration_seconds"] == 12.5
    assert report["hosts"] == {
        "db-1": {
            "ok": 3,
            "changed": 1,
            "failed": 0,
            "unreachable": 0,
            "skipped": 0,
            "rescued": 0,
            "ignored": 0,
        }
    }
    assert report["summary"] == {"critical": 1, "warning": 0, "info": 0}
    (f,) = report["findings"]
    assert f == {
        "severity": "critical",
        "host": "db-1",
        "component": "redis",
        "check": "unit_state",
        "summary": "redis-server is not running",
        "evidence": {"ActiveState": "failed"},
        "remediation": None,
        "variable": None,
    }
    assert json.loads(rpt.to_json(report)) == report


# --- status -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("severities", "failure", "expected"),
    [
        ([], None, "ok"),
        (["info"], None, "ok"),
        (["info", "warning"], None, "warning"),
        (["warning", "critical", "info"], None, "critical"),
        (["info"], {}, "critical"),
        (["info"], {"ignored": True}, "ok"),
        (["warning"], {"rescued": True}, "warning"),
        (["warning"], {"verdict": True}, "warning"),
        ([], {"unreachable": True}, "critical"),
    ],
)
def test_status_is_the_worst_finding_or_critical_on_a_counted_failure(severities, failure, expected):
    findings = [{"severity": s} for s in severities]
    failures = [] if failure is None else [failure]
    assert rpt.status(findings, failures) == expected


def test_findings_are_sorted_worst_first_keeping_the_run_order_within_a_severity():
    found = [{"severity": "info", "summary": "a"}, {"severity": "critical", "summary": "b"}]
    found += [{"severity": "info", "summary": "c"}, {"severity": "warning", "summary": "d"}]
    assert [f["summary"] for f in rpt.sort_findings(found)] == ["b", "d", "a", "c"]


# --- gathering: host, loops, dedupe, remediations, failures -------------------------------------


def test_a_finding_without_host_gets_the_results_host_and_one_with_a_host_keeps_it():
    c = rpt.Collector()
    other = redis_down() | {"host": "db-2"}
    c.task_result(
        "app-1", "Probe", "P", "auditlog.ops.service_links", {"findings": [redis_down(), other]}, "ok"
    )
    assert [f["host"] for f in c.findings] == ["app-1", "db-2"]


def test_findings_come_from_the_findings_key_only_never_the_accumulated_fact_or_the_verdict():
    c = rpt.Collector()
    first = redis_down() | {"host": "db-1"}
    c.task_result(
        "db-1",
        "Probe",
        "P",
        "auditlog.ops.host_facts",
        {"findings": [first], "ansible_facts": {"runbook_findings": [first]}},
        "ok",
    )
    c.task_result(
        "db-1",
        "Note",
        "P",
        "auditlog.ops.finding",
        {"findings": [], "ansible_facts": {"runbook_findings": [first]}},
        "ok",
    )
    verdict = {"failed": True, "msg": "1 finding(s)", "failing": [first], "counts": {"critical": 1}}
    c.task_result("db-1", "Verdict", "P", "auditlog.ops.verdict", verdict, "failed")
    assert len(c.findings) == 1
    report = make_report(c)
    assert report["summary"]["critical"] == 1
    assert report["failures"][0]["verdict"] is True


def test_a_loops_items_findings_are_gathered_once_each():
    c = rpt.Collector()
    items = [{"findings": [redis_down()]}, {"findings": [finding("info", "dns", "resolve", "ok")]}]
    c.task_result("app-1", "Probe", "P", "auditlog.ops.name_resolution", {"results": items}, "ok")
    assert [f["component"] for f in c.findings] == ["redis", "dns"]


def test_changed_tasks_are_remediations_and_failed_or_unreachable_ones_failures():
    c = rpt.Collector()
    c.task_result("db-1", "Start redis", "Repair", "ansible.builtin.service", {"changed": True}, "ok")
    c.task_result("db-1", "Look", "Repair", "ansible.builtin.command", {"changed": False}, "ok")
    c.task_result("app-1", "Probe", "Repair", "auditlog.ops.api_health", {"msg": "boom"}, "failed")
    c.task_result("app-2", "Probe", "Repair", "auditlog.ops.api_health", {"msg": "no route"}, "unreachable")
    assert c.remediations == [
        {"host": "db-1", "play": "Repair", "task": "Start redis", "action": "ansible.builtin.service"}
    ]
    assert [(f["host"], f["msg"], f["unreachable"]) for f in c.failures] == [
        ("app-1", "boom", False),
        ("app-2", "no route", True),
    ]
    assert make_report(c)["status"] == "critical"


# --- secrets ------------------------------------------------------------------------------------


def test_a_censored_result_and_a_censored_loop_item_contribute_no_findings():
    c = rpt.Collector()
    censored = {"censored": "hidden", "_ansible_no_log": True, "findings": [redis_down()], "changed": True}
    c.task_result("db-1", "Secret", "P", "auditlog.ops.pg_diagnostics", censored, "ok")
    loop = {"results": [{"_ansible_no_log": True, "findings": [redis_down()]}, {"findings": []}]}
    c.task_result("db-1", "Secret loop", "P", "auditlog.ops.pg_diagnostics", loop, "ok")
    assert c.findings == []
    assert c.remediations == [
        {"host": "db-1", "play": "P", "task": "Secret", "action": "auditlog.ops.pg_diagnostics"}
    ]


def test_module_args_never_reach_the_report():
    """The collector takes no args at all; a result's `invocation` (module_args) is not copied."""
    secret = "s3cr3t-pa55word"
    c = rpt.Collector()
    result = {
        "changed": True,
        "invocation": {"module_args": {"password": secret}},
        "findings": [finding("warning", "postgresql", "auth", "password authentication failed")],
    }
    c.task_result("db-1", "Probe", "P", "auditlog.ops.pg_diagnostics", result, "ok")
    c.task_result(
        "db-1", "Fail", "P", "auditlog.ops.pg_diagnostics", {"msg": "x", "invocation": result}, "failed"
    )
    report = make_report(c)
    assert secret not in rpt.to_json(report)
    assert secret not in rpt.render_markdown(report)
    assert secret not in "\n".join(rpt.render_summary(report))


# --- naming -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "name"),
    [
        ("/repo/playbooks/runbooks/diagnostics/health_check.yml", "diagnostics-health_check"),
        ("playbooks/runbooks/fleet_health.yml", "fleet_health"),
        ("/x/runbooks/network/dns.yaml", "network-dns"),
        ("/tmp/a/runbooks/b/runbooks/c/d.yml", "c-d"),
        ("/repo/playbooks/site.yml", "site"),
    ],
)
def test_the_runbook_is_named_after_its_path_under_runbooks(path, name):
    assert rpt.runbook_name(path) == name


def test_only_playbooks_under_a_runbooks_directory_are_runbooks():
    assert rpt.is_runbook("/repo/playbooks/runbooks/network/dns.yml")
    assert not rpt.is_runbook("/repo/playbooks/site.yml")
    assert not rpt.is_runbook("/repo/playbooks/myrunbooks.yml")


def test_report_files_are_named_by_runbook_and_utc_start_and_never_overwrite():
    base = rpt.report_base("/r", "network-dns", STARTED, exists=lambda p: False)
    assert base == "/r/network-dns-20261201T150033Z"
    taken = {"/r/network-dns-20261201T150033Z.json", "/r/network-dns-20261201T150033Z-2.md"}
    assert rpt.report_base("/r", "network-dns", STARTED, exists=taken.__contains__) == (
        "/r/network-dns-20261201T150033Z-3"
    )
    assert rpt.latest_base("/r", "network-dns") == "/r/network-dns-latest"
    plus_one = datetime(2026, 12, 1, 16, 0, 33, tzinfo=UTC).astimezone(timezone(timedelta(hours=1)))
    assert rpt.stamp(plus_one) == "20261201T160033Z"


# --- markdown and summary -----------------------------------------------------------------------


def test_markdown_has_status_hosts_findings_with_evidence_remediations_and_failures():
    c = rpt.Collector()
    fixed = finding(
        "critical",
        "redis",
        "unit_state",
        "redis-server was down",
        "Active: failed",
        "started",
        "redis_enabled",
    )
    c.task_result("db-1", "Probe", "Health", "auditlog.ops.component", {"findings": [fixed]}, "ok")
    c.task_result("db-1", "Start | redis", "Health", "ansible.builtin.service", {"changed": True}, "ok")
    c.task_result("app-1", "Probe", "Health", "auditlog.ops.api_health", {"msg": "a|b\nc"}, "failed")
    md = rpt.render_markdown(make_report(c))
    assert md.startswith("# Runbook report: diagnostics-health_check\n")
    assert "**Status: critical** (1 critical, 0 warning, 0 info)" in md
    assert "| db-1 | 3 | 1 | 0 | 0 | 0 | 0 | 0 |" in md
    assert "### 1. critical: db-1 / redis: redis-server was down" in md
    assert "- Remediation: started" in md
    assert "- Variable: `redis_enabled`" in md
    assert "```\nActive: failed\n```" in md
    assert "| db-1 | Health | Start \\| redis | ansible.builtin.service |" in md
    assert "| app-1 | Probe | a\\|b c |" in md
    for section in ("## Hosts", "## Findings", "## Remediations (changed tasks)", "## Failures"):
        assert section in md


def test_evidence_holding_a_fence_gets_a_longer_one():
    c = rpt.Collector()
    c.task_result("h", "t", "p", "a", {"findings": [finding("info", "x", "y", "z", "```\ncode\n```")]}, "ok")
    assert "````\n```\ncode\n```\n````" in rpt.render_markdown(make_report(c))


def test_the_summary_fits_a_screen():
    c = rpt.Collector()
    found = [finding("warning", "host", "load", f"load {n} " + "x" * 200) for n in range(30)]
    c.task_result("app-1", "Probe", "P", "auditlog.ops.host_facts", {"findings": found}, "ok")
    lines = rpt.render_summary(make_report(c, check=True), ["reports/a.json", "reports/a.md"], top=10)
    assert lines[0] == "RUNBOOK REPORT diagnostics-health_check: WARNING (check mode)"
    assert "0 critical, 30 warning, 0 info" in lines[1]
    assert "  ... and 20 more in the report" in lines
    assert lines[-2:] == ["  report: reports/a.json", "  report: reports/a.md"]
    assert len(lines) <= 24
    assert all(len(line) <= 110 for line in lines)


def test_a_report_without_findings_says_none():
    md = rpt.render_markdown(make_report(rpt.Collector()))
    assert "## Findings\n\nNone." in md
    assert "**Status: ok**" in md


# --- findings_action and the verdict ------------------------------------------------------------


def test_record_adds_the_host_and_accumulates_the_runs_findings_without_caching():
    task_vars = {"inventory_hostname": "db-1"}
    first = fa.record({}, task_vars, [redis_down()], run="run-1")
    assert first["findings"][0]["host"] == "db-1"
    assert first["_ansible_facts_cacheable"] is False
    assert first["ansible_facts"]["runbook_findings_run"] == "run-1"
    task_vars |= first["ansible_facts"]
    second = fa.record({}, task_vars, [finding("info", "host", "load", "fine")], run="run-1")
    assert [f["check"] for f in second["ansible_facts"]["runbook_findings"]] == ["unit_state", "load"]
    assert [f["check"] for f in second["findings"]] == ["load"]


def test_findings_of_another_run_from_a_fact_cache_are_dropped():
    stale = {"inventory_hostname": "db-1", "runbook_findings": [redis_down()], "runbook_findings_run": "old"}
    assert fa.findings_so_far(stale, run="new") == []
    result = fa.record({}, stale, [], run="new")
    assert result["ansible_facts"]["runbook_findings"] == []
    assert fa.findings_so_far({"runbook_findings": [redis_down()]}, run="new") == []


def test_a_no_log_tasks_findings_are_kept_for_the_verdict_without_their_evidence():
    result = fa.record({}, {"inventory_hostname": "db-1"}, [redis_down()], run="r", no_log=True)
    (kept,) = result["ansible_facts"]["runbook_findings"]
    assert kept["severity"] == "critical" and kept["evidence"] is None and kept["summary"] == fa.HIDDEN


def test_the_run_id_is_the_same_for_every_call_of_one_process():
    assert fa.run_id() == fa.run_id()


@pytest.mark.parametrize(
    ("fail_on", "failed", "failing"),
    [("never", False, 0), ("critical", True, 1), ("warning", True, 2), ("info", True, 3)],
)
def test_the_verdict_fails_on_findings_at_or_above_fail_on(fail_on, failed, failing):
    found = [
        finding("info", "dns", "resolve", "resolves"),
        finding("critical", "redis", "unit_state", "down") | {"host": "db-1"},
        finding("warning", "host", "load", "high") | {"host": "db-1"},
        finding("critical", "nats", "unit_state", "down") | {"host": "db-2"},
    ]
    got_failed, msg, counts, worst, got = judge(found, "db-1", fail_on)
    assert (got_failed, len(got)) == (failed, failing)
    assert counts == {"critical": 1, "warning": 1, "info": 1}
    assert worst == "critical"
    if failed:
        assert got[0]["severity"] == "critical"
        assert "critical: redis unit_state: down" in msg
        assert "nats" not in msg


def test_info_findings_leave_the_worst_ok_and_fail_only_with_fail_on_info():
    failed, msg, counts, worst, failing = judge([finding("info", "dns", "resolve", "ok")], "h", "info")
    assert failed and worst == "ok"
    failed, msg, counts, worst, failing = judge([finding("info", "dns", "resolve", "ok")], "h", "warning")
    assert not failed and worst == "ok"
    failed, msg, counts, worst, failing = judge([], "h", "critical")
    assert not failed and worst == "ok" and failing == []
