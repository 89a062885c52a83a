"""The alerting rules (roles/prometheus/files/rules): valid for promtool, each alert with a
severity and a runbook field, and behaving as their unit tests say (promtool test rules)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "roles" / "prometheus" / "files" / "rules" / "audit.rules.yml"
RULE_TESTS = ROOT / "roles" / "prometheus" / "files" / "rules_tests" / "audit.rules.test.yml"
PROMTOOL = ROOT / ".cache" / "tools" / "promtool"  # scripts/deps.sh unpacks it


def promtool(*args: str) -> subprocess.CompletedProcess:
    assert PROMTOOL.exists(), "promtool is missing: run scripts/deps.sh (make deps)"
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=60)


def alerts() -> list[dict]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_accepts_the_rules():
    out = promtool("check", "rules", str(RULES))
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in out.stdout + out.stderr


def test_the_rules_fire_as_their_unit_tests_expect():
    out = promtool("test", "rules", str(RULE_TESTS))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr


def test_every_alert_has_a_severity_a_summary_and_a_runbook_field():
    names = [a["alert"] for a in alerts()]
    assert len(names) == len(set(names))
    for a in alerts():
        assert a["labels"]["severity"] in ("warning", "critical"), a["alert"]
        assert a["annotations"]["summary"] and "runbook" in a["annotations"], a["alert"]


def test_every_alert_the_issue_names_exists():
    wanted = {
        "AuditComponentDown",
        "AuditWorkerNotConsuming",
        "AuditWorkerLagGrowing",
        "AuditStreamStoreFilling",
        "AuditDeadLetters",
        "AuditDbPoolNearLimit",
        "AuditRedisNearMaxmemory",
        "AuditDiskFilling",
        "AuditApi5xxRate",
        "AuditChainVerifyFailing",
        "AuditPrometheusMemoryHigh",
        "AuditSlowQueries",
        "AuditLockWaits",
        "AuditDiskBusy",
    }
    assert wanted <= {a["alert"] for a in alerts()}


# The alerts whose runbook is not written yet (none now).
RUNBOOK_PENDING: set[str] = set()


def test_every_alerts_runbook_exists():
    named = {a["alert"]: a["annotations"]["runbook"] for a in alerts()}
    assert {name for name, runbook in named.items() if not runbook} == RUNBOOK_PENDING
    for name, runbook in named.items():
        if runbook:
            assert runbook.startswith("playbooks/runbooks/") and (ROOT / runbook).is_file(), (name, runbook)


def test_prometheus_own_memory_alert_watches_prometheus_only_and_names_its_runbook():
    (rule,) = [a for a in alerts() if a["alert"] == "AuditPrometheusMemoryHigh"]
    assert 'process_resident_memory_bytes{job="prometheus"}' in rule["expr"]
    assert rule["labels"]["severity"] == "warning"
    assert rule["annotations"]["runbook"] == "playbooks/runbooks/monitoring/prometheus.yml"
