"""auditlog.ops' report callback, finding and verdict in a real ansible-playbook run: a tiny
runbook under a temporary runbooks/ directory, run against the controller itself (connection
local, nothing but the controller is touched), with this checkout's ansible.cfg and collection."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECRET = "Sup3r-s3cret-value"

RUNBOOK = """\
- name: Tiny runbook
  hosts: localhost
  gather_facts: false
  vars:
    probe_password: "{{ secret_value }}"
  tasks:
    - name: A probe finds Redis down
      auditlog.ops.finding:
        severity: critical
        component: redis
        check: unit_state
        summary: redis-server is not running
        evidence: {ActiveState: failed}
        variable: redis_port

    - name: A finding of a no_log task
      auditlog.ops.finding:
        severity: warning
        component: postgresql
        check: auth
        summary: "password {{ probe_password }} was refused"
      no_log: true

    - name: A note
      auditlog.ops.finding:
        severity: info
        component: host
        check: load
        summary: load is fine

    - name: A repair (changed)
      ansible.builtin.command: /bin/true
      changed_when: true

    - name: Verdict
      auditlog.ops.verdict:
        fail_on: "{{ runbook_fail_on | default('never') }}"
"""


@pytest.fixture
def workdir(tmp_path):
    book = tmp_path / "runbooks" / "diagnostics" / "tiny.yml"
    book.parent.mkdir(parents=True)
    book.write_text(RUNBOOK)
    (tmp_path / "site.yml").write_text(RUNBOOK)
    return tmp_path


def playbook(path, *args, report_dir, cwd=None, extra_env=None):
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        AUDITLOG_REPORT_DIR=str(report_dir),
        ANSIBLE_NOCOLOR="1",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    env.pop("AUDITLOG_REPORT", None)
    env.update(extra_env or {})
    cmd = [
        str(Path(sys.executable).parent / "ansible-playbook"),
        "-i",
        "localhost,",
        "-c",
        "local",
        str(path),
    ]
    cmd += ["-e", f"ansible_python_interpreter={sys.executable}", "-e", f"secret_value={SECRET}", *args]
    return subprocess.run(cmd, cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=300)


def reports(report_dir, runbook="diagnostics-tiny"):
    """The run's stamped JSON reports, oldest first (not the -latest copy)."""
    stamped = [p for p in report_dir.glob(f"{runbook}-*.json") if not p.name.endswith("-latest.json")]
    return sorted(stamped, key=lambda p: p.stat().st_mtime_ns)


def test_a_runbook_writes_its_json_and_markdown_report_and_fails_on_critical(workdir):
    out = workdir / "out"
    run = playbook(
        workdir / "runbooks/diagnostics/tiny.yml", "-e", "runbook_fail_on=critical", report_dir=out
    )
    assert run.returncode != 0, run.stdout
    (stamped,) = reports(out)
    assert stamped.name.startswith("diagnostics-tiny-") and stamped.name.endswith("Z.json")
    report = json.loads(stamped.read_text())
    assert report == json.loads((out / "diagnostics-tiny-latest.json").read_text())
    assert stamped.with_suffix(".md").read_text() == (out / "diagnostics-tiny-latest.md").read_text()

    assert report["schema_version"] == 1
    assert report["runbook"] == "diagnostics-tiny"
    assert report["playbook"].endswith("runbooks/diagnostics/tiny.yml")
    assert report["check_mode"] is False and report["diff_mode"] is False
    assert report["status"] == "critical"
    # The no_log task's finding is censored out of the report (and its summary held the secret).
    assert report["summary"] == {"critical": 1, "warning": 0, "info": 1}
    first = report["findings"][0]
    assert first == {
        "severity": "critical",
        "host": "localhost",
        "component": "redis",
        "check": "unit_state",
        "summary": "redis-server is not running",
        "evidence": {"ActiveState": "failed"},
        "remediation": None,
        "variable": "redis_port",
    }
    assert report["remediations"] == [
        {
            "host": "localhost",
            "play": "Tiny runbook",
            "task": "A repair (changed)",
            "action": "ansible.builtin.command",
        }
    ]
    (failure,) = report["failures"]
    assert failure["task"] == "Verdict" and failure["verdict"] is True
    assert "redis-server is not running" in failure["msg"]
    stats = report["hosts"]["localhost"]
    assert stats["failed"] == 1 and stats["changed"] == 1

    md = stamped.with_suffix(".md").read_text()
    assert "# Runbook report: diagnostics-tiny" in md
    assert "### 1. critical: localhost / redis: redis-server is not running" in md
    for text in (stamped.read_text(), md, run.stdout):
        assert SECRET not in text

    assert "RUNBOOK REPORT diagnostics-tiny: CRITICAL" in run.stdout
    assert "critical localhost redis: redis-server is not running" in run.stdout
    assert f"report: {stamped}" in run.stdout


def test_fail_on_never_exits_zero_and_a_second_run_gets_its_own_report(workdir):
    out = workdir / "out"
    for _ in range(2):
        run = playbook(workdir / "runbooks/diagnostics/tiny.yml", report_dir=out)
        assert run.returncode == 0, run.stdout + run.stderr
    first, second = reports(out)
    assert json.loads(second.read_text())["status"] == "critical"
    assert json.loads(second.read_text())["failures"] == []
    assert (out / "diagnostics-tiny-latest.json").read_text() == second.read_text()


def test_check_mode_is_reported_and_the_verdict_still_decides(workdir):
    out = workdir / "out"
    run = playbook(
        workdir / "runbooks/diagnostics/tiny.yml", "--check", "-e", "runbook_fail_on=warning", report_dir=out
    )
    # The no_log task's warning counts for the verdict though the report hides it.
    assert run.returncode != 0, run.stdout
    (stamped,) = reports(out)
    report = json.loads(stamped.read_text())
    assert report["check_mode"] is True
    assert report["remediations"] == []  # command does not run in check mode: skipped
    assert report["hosts"]["localhost"]["skipped"] == 1
    assert "(check mode)" in run.stdout


def test_findings_of_an_earlier_run_in_a_persistent_fact_cache_are_not_judged_again(workdir, tmp_path):
    out = workdir / "out"
    cache = {
        "ANSIBLE_CACHE_PLUGIN": "ansible.builtin.jsonfile",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(tmp_path / "facts"),
    }
    book = workdir / "runbooks" / "diagnostics" / "tiny.yml"
    assert playbook(book, report_dir=out, extra_env=cache).returncode == 0
    # Ansible caches the facts of every action but set_fact: the first run's findings are there.
    assert "runbook_findings" in next((tmp_path / "facts").iterdir()).read_text()
    quiet = workdir / "runbooks" / "diagnostics" / "quiet.yml"
    quiet.write_text(
        "- name: Quiet\n  hosts: localhost\n  gather_facts: false\n  tasks:\n"
        "    - name: Verdict\n      auditlog.ops.verdict:\n        fail_on: info\n"
    )
    run = playbook(quiet, report_dir=out, extra_env=cache)
    assert run.returncode == 0, run.stdout
    assert "0 critical, 0 warning, 0 info" in run.stdout


def test_a_playbook_outside_runbooks_writes_no_report(workdir):
    out = workdir / "out"
    run = playbook(workdir / "site.yml", report_dir=out, cwd=workdir)
    assert run.returncode == 0, run.stdout + run.stderr
    assert not out.exists()
    assert not (workdir / "reports").exists()
    assert "RUNBOOK REPORT" not in run.stdout


def test_auditlog_report_1_reports_on_any_playbook_under_the_default_reports_dir(workdir):
    env = {"AUDITLOG_REPORT": "1"}
    result = playbook(workdir / "site.yml", report_dir="reports", cwd=workdir, extra_env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert (workdir / "reports" / "site-latest.json").is_file()
    assert json.loads((workdir / "reports" / "site-latest.json").read_text())["runbook"] == "site"
