"""The guide's Grafana procedures as a runbook (playbooks/runbooks/monitoring/grafana.yml) on the
converged lab.

The lab has no Grafana (grafana_enabled false: Grafana's apt repository is out of its reach), so
this proves only that the runbook says so plainly on every monitoring host, as a finding and not a
failure, and that its repairs, even when asked for, change nothing there. The module's logic
against Grafana's API (health, datasources, login, settings, the password reset) is proven by
tests/unit/test_grafana_module.py on recorded answers.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from support.runbooks import assert_changes_nothing, critical, wait_for

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


# -- Prometheus Metrics Not Collected, Prometheus High Memory Usage ---------------------------------------

PROMETHEUS_RUNBOOK = "playbooks/runbooks/monitoring/prometheus.yml"
PROMETHEUS_CONFIG = "/etc/prometheus/prometheus.yml"
PROMETHEUS_BACKUP = "/root/prometheus.yml.before-test"
# A job promtool refuses ("not a valid duration string"), appended to scrape_configs.
BROKEN_JOB = (
    '\n  - job_name: broken\n    scrape_interval: soon\n    static_configs:\n      - targets: ["nowhere:1"]\n'
)


class PrometheusApi:
    """Prometheus' HTTP API on its host, read with curl through docker exec (None while it does not
    answer)."""

    def __init__(self, lab, host: str):
        self.lab, self.host = lab, host
        args = lab.exec(host, "cat /etc/default/prometheus").stdout
        self.address = re.search(r"--web\.listen-address=([^\s\"]+)", args)[1]

    def get(self, path: str) -> str | None:
        proc = self.lab.exec(
            self.host, ["curl", "-sf", "-m", "5", f"http://{self.address}{path}"], check=False
        )
        return proc.stdout if proc.returncode == 0 else None

    def data(self, path: str):
        text = self.get(path)
        return json.loads(text)["data"] if text else None

    def target(self, instance: str) -> dict | None:
        targets = self.data("/api/v1/targets") or {"activeTargets": []}
        return next((t for t in targets["activeTargets"] if t["labels"]["instance"] == instance), None)

    def health(self, instance: str, health: str) -> dict | None:
        """The target once Prometheus has scraped it with that health."""
        target = self.target(instance)
        return target if target and target["health"] == health else None

    def retention(self) -> str | None:
        flags = self.data("/api/v1/status/flags")
        return flags["storage.tsdb.retention.time"] if flags else None

    def last_reload(self) -> float:
        text = self.get("/metrics") or ""
        m = re.search(r"^prometheus_config_last_reload_success_timestamp_seconds (\S+)$", text, re.M)
        return float(m[1]) if m else 0.0


@pytest.mark.leaves_lab_changed
def test_prometheus_names_a_down_exporter_and_a_broken_config_and_repairs_only_when_asked(lab, stack):
    host = monitoring_hosts(lab)[0]
    prometheus = PrometheusApi(lab, host)
    original = lab.exec(host, f"cat {PROMETHEUS_CONFIG}").stdout
    loaded = prometheus.last_reload()
    assert loaded > 0
    lab.exec("mq2", "systemctl stop prometheus-node-exporter")
    lab.exec(host, f"cp -p {PROMETHEUS_CONFIG} {PROMETHEUS_BACKUP}")
    try:
        lab.put(host, PROMETHEUS_CONFIG, original + BROKEN_JOB)
        # Not a sleep: until Prometheus has scraped the stopped exporter (every 15 s) and failed.
        down = wait_for(lambda: prometheus.health("mq2:9100", "down"), 45, "mq2's node exporter scraped down")

        run = lab.runbook(PROMETHEUS_RUNBOOK)
        assert run.ok and run.changed == 0, run.describe()
        (target,) = run.findings(host=host, check="target_down")
        assert target["component"] == "node_exporter" and target["severity"] == "warning", target
        assert target["summary"].startswith("node target mq2:9100 is down: "), target
        assert "connection refused" in target["evidence"]["last_error"], target
        assert target["evidence"]["last_error"] in target["summary"], target
        assert down["scrapeUrl"] == target["evidence"]["scrape_url"], target
        assert "prometheus-node-exporter.service on mq2" in target["summary"], target
        (broken,) = critical(run, host=host, check="config_check")
        assert 'not a valid duration string: "soon"' in broken["summary"], broken
        assert broken["summary"].startswith(f"promtool check config {PROMETHEUS_CONFIG} fails"), broken
        (told,) = critical(run, host=host, check="prometheus_restore_config")
        assert told["variable"] == "prometheus_restore_config" and told["remediation"] is None, told
        # The memory and the TSDB head, with the settings that bound them.
        (usage,) = run.findings(host=host, check="memory_usage")
        assert usage["evidence"]["memory"]["rss_bytes"] > 0 and usage["evidence"]["tsdb"]["num_series"] > 0, (
            usage
        )
        assert usage["evidence"]["tsdb"]["top_series"] and " head series" in usage["summary"], usage
        assert "retention 15d" in usage["summary"] and "prometheus_retention_time" in usage["variable"], usage
        # Diagnosis changed nothing: the broken file is still there, not loaded.
        assert lab.exec(host, f"cat {PROMETHEUS_CONFIG}").stdout == original + BROKEN_JOB
        assert prometheus.last_reload() == loaded

        restored = lab.runbook(PROMETHEUS_RUNBOOK, extra_vars={"prometheus_restore_config": True})
        assert restored.ok and restored.changed > 0, restored.describe()
        (fixed,) = restored.findings(host=host, check="config_restored")
        assert fixed["severity"] == "critical" and "reloaded Prometheus" in fixed["remediation"], fixed
        assert lab.exec(host, f"cat {PROMETHEUS_CONFIG}").stdout == original
        assert lab.exec(host, f"promtool check config {PROMETHEUS_CONFIG}", check=False).returncode == 0
        assert prometheus.last_reload() > loaded
        assert prometheus.data("/api/v1/status/runtimeinfo")["reloadConfigSuccess"] is True
    finally:
        lab.exec("mq2", "systemctl start prometheus-node-exporter")
        if lab.exec(host, f"cmp -s {PROMETHEUS_BACKUP} {PROMETHEUS_CONFIG}", check=False).returncode != 0:
            lab.exec(host, f"cp -p {PROMETHEUS_BACKUP} {PROMETHEUS_CONFIG} && systemctl reload prometheus")
        lab.exec(host, f"rm -f {PROMETHEUS_BACKUP}")

    # prometheus_apply: a setting of the prometheus role, applied by the role.
    applied = lab.runbook(
        PROMETHEUS_RUNBOOK, extra_vars={"prometheus_apply": True, "prometheus_retention_time": "10d"}
    )
    assert applied.ok and applied.changed > 0, applied.describe()
    assert wait_for(lambda: prometheus.retention() == "10d", 30, "retention 10d in /api/v1/status/flags")
    (settings,) = applied.findings(host=host, check="settings_applied")
    assert (
        "prometheus_retention_time=10d" in settings["summary"] and "now retention 10d" in settings["summary"]
    )
    # The retention stays (the test runs among the last, leaves_lab_changed): no converge back.
    wait_for(lambda: prometheus.health("mq2:9100", "up"), 45, "mq2's node exporter scraped up again")

    again = assert_changes_nothing(lab, PROMETHEUS_RUNBOOK, extra_vars={"prometheus_restore_config": True})
    assert critical(again) == [] and again.findings(check="target_down") == [], again.describe()
