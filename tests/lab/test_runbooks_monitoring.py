"""The guide's Grafana procedures as a runbook (playbooks/runbooks/monitoring/grafana.yml) on the
converged lab.

The lab has no Grafana (grafana_enabled false: Grafana's apt repository is out of its reach), so
this proves only that the runbook says so plainly on every monitoring host, as a finding and not a
failure, and that its repairs, even when asked for, change nothing there. The module's logic
against Grafana's API (health, datasources, login, settings, the password reset) is proven by
tests/unit/test_grafana_module.py on recorded answers.
"""

from __future__ import annotations

import pytest
import yaml
from support.runbooks import assert_changes_nothing, critical

pytestmark = pytest.mark.lab

RUNBOOK = "playbooks/runbooks/monitoring/grafana.yml"
REPAIRS = {"grafana_restart": True, "grafana_reset_admin_password": True}


def monitoring_hosts(lab) -> list[str]:
    inventory = yaml.safe_load((lab.inventory / "hosts.yml").read_text())
    return sorted(inventory["all"]["children"]["audit_monitoring"]["hosts"])


def assert_only_absent(run, hosts: list[str]) -> None:
    """Exactly one finding per monitoring host, grafana_absent, saying Grafana is not installed."""
    for host in hosts:
        (absent,) = run.findings(host=host)
        assert absent["check"] == "grafana_absent" and absent["component"] == "grafana", run.describe()
        assert absent["severity"] == "info", absent
        assert absent["summary"].startswith("Grafana is not installed on this host"), absent
        assert absent["remediation"] is None, absent
    assert critical(run) == [], run.describe()


def test_grafana_on_hosts_without_it_says_so_plainly_and_changes_nothing_even_when_asked_to_repair(
    lab, stack
):
    hosts = monitoring_hosts(lab)
    assert hosts
    for host in hosts:
        # No unit, no binary: the lab never installed Grafana.
        assert lab.exec(host, "systemctl cat grafana-server.service", check=False).returncode != 0
        assert lab.exec(host, "command -v grafana-cli grafana-server grafana", check=False).stdout == ""

    run = lab.runbook(RUNBOOK)
    assert run.ok and run.changed == 0, run.describe()
    assert_only_absent(run, hosts)

    asked = lab.runbook(RUNBOOK, extra_vars=REPAIRS)
    assert asked.ok and asked.changed == 0, asked.describe()
    assert_only_absent(asked, hosts)
    for host in hosts:
        assert lab.exec(host, "systemctl cat grafana-server.service", check=False).returncode != 0

    again = assert_changes_nothing(lab, RUNBOOK, extra_vars=REPAIRS)
    assert_only_absent(again, hosts)
