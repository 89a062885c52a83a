"""The guide's Performance Issues as runbooks (playbooks/runbooks/performance), each against the
fault it is for, made for real on the converged lab and healed before the next test."""

from __future__ import annotations

import pytest
from support.runbooks import assert_changes_nothing, wait_for, wait_healthy

pytestmark = pytest.mark.lab

HIGH_CPU = "playbooks/runbooks/performance/high_cpu.yml"


def test_high_cpu_names_a_burning_foreign_process_and_applies_workers_and_cache_only_when_asked(lab, stack):
    lab.exec("app1", "setsid python3 -c 'while True: pass' >/dev/null 2>&1 < /dev/null &")
    try:
        wait_for(
            lambda: lab.exec("app1", "pgrep -f '[w]hile True'", check=False).stdout.strip(), 10, "the burner"
        )
        run = lab.runbook(HIGH_CPU)
        assert run.ok and run.changed == 0, run.describe()
        burners = [f for f in run.findings(host="app1", check="top_consumer") if "while True" in f["summary"]]
        assert burners and burners[0]["severity"] == "warning" and "pid" in burners[0]["summary"], (
            run.describe()
        )
        (told,) = run.findings(host="app1", check="cpu_settings")
        assert "high_cpu_apply=true" in told["summary"] and told["variable"] == "high_cpu_apply", told
        assert not [
            f for f in run.findings(host="app2", check="top_consumer") if "while True" in f["summary"]
        ]
    finally:
        lab.exec("app1", "pkill -f '[w]hile True'", check=False)

    # On one host: the rolling restart itself is proven by the high-memory runbook's test.
    settings = {"audit_api_workers": 3, "audit_cache_enabled": True, "audit_cache_ttl": 45}
    applied = lab.runbook(HIGH_CPU, limit="app1:localhost", extra_vars={"high_cpu_apply": True, **settings})
    assert applied.ok and applied.changed > 0, applied.describe()
    (named,) = applied.findings(host="app1", check="settings_applied")
    assert set(named["variable"].split(", ")) == set(settings), named
    env = lab.exec("app1", "cat /etc/audit-service/audit-service.env").stdout
    assert "API_WORKERS=3" in env and "CACHE_TTL=45" in env and "CACHE_ENABLED=true" in env, env
    # uvicorn's worker processes (multiprocessing's spawn), one per API_WORKERS.
    wait_for(
        lambda: lab.exec("app1", "pgrep -fc '[m]ultiprocessing.spawn'", check=False).stdout.strip() == "3",
        60,
        "three API worker processes on app1",
    )
    back = lab.playbook("playbooks/site.yml", limit="app1:localhost")
    assert back.ok, back.describe()
    assert "API_WORKERS=2" in lab.exec("app1", "cat /etc/audit-service/audit-service.env").stdout
    wait_healthy()
    assert_changes_nothing(lab, HIGH_CPU)
