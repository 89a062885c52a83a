"""auditlog.ops.prometheus_diagnostics without a Prometheus: the lab Prometheus' answers, recorded in
tests/unit/data/prometheus/ (its README says how), served by a real HTTP server on loopback (a
thread); promtool is a script in tmp_path that replays promtool's recorded output, or the real
promtool that scripts/deps.sh unpacks, on the lab's configuration broken as the lab test breaks it.

The lab proves the runbook around it (tests/lab/test_runbooks_monitoring.py).
"""

from __future__ import annotations

import copy
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from ansible_collections.auditlog.ops.plugins.module_utils import prometheus_api as api
from ansible_collections.auditlog.ops.plugins.modules import prometheus_diagnostics as pd

DATA = Path(__file__).parent / "data" / "prometheus"
ROOT = Path(__file__).resolve().parents[2]
PROMTOOL = ROOT / ".cache" / "tools" / "promtool"  # scripts/deps.sh unpacks it
MEM_TOTAL = 24683584 * 1024  # the lab host's MemTotal
LAST_CONFIG_TIME = api.parse_time("2026-12-02T07:51:40Z")  # runtimeinfo.json's lastConfigTime


def recorded(name: str):
    return json.loads((DATA / name).read_text())


# -- a Prometheus on loopback --------------------------------------------------------------------------


class FakePrometheus:
    """Serves the recorded answers; `answers` maps a path to a file name of DATA or to a document."""

    def __init__(self, **answers):
        self.answers = {
            "/api/v1/status/buildinfo": "buildinfo.json",
            "/api/v1/targets": "targets.json",
            "/api/v1/status/tsdb": "tsdb.json",
            "/api/v1/status/runtimeinfo": "runtimeinfo.json",
            "/api/v1/status/flags": "flags.json",
            "/api/v1/status/config": "config.json",
            "/metrics": "metrics.txt",
            **answers,
        }
        self.paths: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server's name
                fake.paths.append(self.path)
                answer = fake.answers.get(self.path)
                if answer is None:
                    status, data = 404, b"404 page not found\n"
                elif isinstance(answer, str):
                    status, data = 200, (DATA / answer).read_bytes()
                else:
                    status, data = 200, json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def prometheus():
    with FakePrometheus() as fake:
        yield fake


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- promtool replaying a recorded run, and the configuration file -------------------------------------

REPLAY = """#!{python}
import json, sys
run = json.load(open({path!r}))
sys.stdout.write(run["stdout"])
sys.stderr.write(run["stderr"])
sys.exit(run["rc"])
"""


def replaying_promtool(tmp_path: Path, name: str) -> str:
    script = tmp_path / "bin" / "promtool"
    script.parent.mkdir(exist_ok=True)
    script.write_text(REPLAY.format(python=sys.executable, path=str(DATA / name)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def config_file(tmp_path: Path, mtime: float = LAST_CONFIG_TIME - 3600, text: str | None = None) -> str:
    path = tmp_path / "prometheus.yml"
    path.write_text((DATA / "prometheus.yml").read_text() if text is None else text)
    os.utime(path, (mtime, mtime))
    return str(path)


# -- the module with a stand-in for AnsibleModule --------------------------------------------------------


class FakeModule:
    """What diagnose() uses of AnsibleModule: params, get_bin_path, run_command (systemctl answered
    from `systemctl_show`, anything else really run)."""

    def __init__(self, systemctl_show=None, **params):
        defaults = {k: v.get("default") for k, v in pd.argument_spec().items()}
        self.params = {**defaults, **params}
        self.check_mode = False
        self.systemctl_show = (
            (DATA / "systemctl_show.txt").read_text() if systemctl_show is None else systemctl_show
        )
        self.commands: list[list[str]] = []

    def get_bin_path(self, name, required=False, opt_dirs=None):
        return {"systemctl": "/usr/bin/systemctl"}.get(name)

    def run_command(self, args, **_kwargs):
        self.commands.append(list(args))
        if args[0] == "/usr/bin/systemctl":
            return 0, self.systemctl_show, ""
        proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
        return proc.returncode, proc.stdout, proc.stderr


def diagnose(monkeypatch, url, tmp_path, promtool="promtool_ok.json", **params):
    monkeypatch.setattr(pd, "mem_total", lambda: MEM_TOTAL)
    if "config_file" not in params:
        params["config_file"] = config_file(tmp_path)
    if promtool.endswith(".json"):
        promtool = replaying_promtool(tmp_path, promtool)
    module = FakeModule(
        url=url, promtool=promtool, **{k: v for k, v in params.items() if k != "systemctl_show"}
    )
    if "systemctl_show" in params:
        module.systemctl_show = params["systemctl_show"]
    return pd.diagnose(module), module


def checks(result, **match) -> list[dict]:
    return [f for f in result["findings"] if all(f.get(k) == v for k, v in match.items())]


# -- a healthy Prometheus ------------------------------------------------------------------------------


def test_the_lab_prometheus_all_up_gives_its_figures_and_no_finding(monkeypatch, tmp_path, prometheus):
    result, module = diagnose(monkeypatch, prometheus.url, tmp_path)
    assert result["available"] and not result["changed"] and result["version"] == "2.42.0+ds"
    assert result["findings"] == [] and result["errors"] == {}
    assert result["targets_summary"] == {"total": 14, "up": 14, "down": 0, "unknown": 0, "down_targets": []}
    node = next(t for t in result["targets"] if t["instance"] == "mq2:9100")
    assert node == {
        "job": "node",
        "instance": "mq2:9100",
        "host": "mq2",
        "health": "up",
        "last_error": None,
        "last_scrape": "2026-12-02T08:03:41.385476254Z",
        "last_scrape_duration": node["last_scrape_duration"],
        "scrape_url": "http://mq2:9100/metrics",
        "component": "node_exporter",
        "unit": "prometheus-node-exporter.service",
    }
    # TSDB head, and the metric names with the most series.
    assert result["tsdb"]["num_series"] == 8290 and result["tsdb"]["chunks"] == 16240
    assert result["tsdb"]["top_series"][0] == {"name": "node_systemd_unit_state", "series": 2480}
    assert len(result["tsdb"]["top_series"]) == 10
    # The retention and the configuration file, from the flags and runtimeinfo.
    assert result["flags"]["retention_time"] == "15d" and result["flags"]["retention_size"] is None
    assert result["flags"]["config_file"] == "/etc/prometheus/prometheus.yml"
    assert result["runtime"]["reload_config_success"] is True
    assert result["runtime"]["storage_retention"] == "15d"
    # Its own memory, against the host's (no MemoryMax on the lab's unit).
    assert result["unit"]["memory_max"] is None and result["unit"]["active_state"] == "active"
    memory = result["memory"]
    assert memory["rss_bytes"] == 84013056 and memory["limit_source"] == "MemTotal"
    assert memory["limit_bytes"] == MEM_TOTAL and memory["warning_bytes"] == pytest.approx(0.8 * MEM_TOTAL)
    # The jobs Prometheus runs, and the file on disk checked.
    assert result["config"]["loaded_jobs"] == [
        "prometheus",
        "audit-api",
        "audit-worker",
        "node",
        "postgres",
        "redis",
    ]
    assert result["config"]["check"]["ok"] is True and result["config"]["changed_since_load"] is False
    assert [c[1:] for c in module.commands if c[0] != "/usr/bin/systemctl"] == [
        ["check", "config", str(tmp_path / "prometheus.yml")]
    ]


# -- Prometheus Metrics Not Collected -----------------------------------------------------------------


def test_a_down_exporter_is_named_with_its_last_error_and_what_starts_it(monkeypatch, tmp_path):
    with FakePrometheus(**{"/api/v1/targets": "targets_mq2_down.json"}) as fake:
        result, _ = diagnose(monkeypatch, fake.url, tmp_path)
    assert result["targets_summary"]["down"] == 1 and result["targets_summary"]["down_targets"] == [
        "node/mq2:9100"
    ]
    (down,) = checks(result, check="target_down")
    error = 'Get "http://mq2:9100/metrics": dial tcp 172.18.0.3:9100: connect: connection refused'
    assert down["severity"] == "warning" and down["component"] == "node_exporter"
    assert down["summary"].startswith(
        f"node target mq2:9100 is down: {error} (last scrape 2026-12-02T08:03:41"
    )
    assert "prometheus-node-exporter.service on mq2 (component node_exporter)" in down["summary"]
    assert "playbooks/site.yml --limit mq2" in down["summary"]
    assert (
        down["evidence"]["last_error"] == error
        and down["evidence"]["scrape_url"] == "http://mq2:9100/metrics"
    )
    assert result["findings"] == [down]


def test_a_down_api_target_is_critical_and_names_the_services_runbook(monkeypatch, tmp_path):
    targets = recorded("targets.json")
    app1 = next(t for t in targets["data"]["activeTargets"] if t["labels"]["instance"] == "app1:8000")
    app1.update(health="down", lastError='Get "http://app1:8000/api/v1/metrics": context deadline exceeded')
    with FakePrometheus(**{"/api/v1/targets": targets}) as fake:
        result, _ = diagnose(monkeypatch, fake.url, tmp_path)
    (down,) = checks(result, check="target_down")
    assert down["severity"] == "critical" and down["component"] == "api"
    assert "context deadline exceeded" in down["summary"]
    assert (
        "audit-api.service on app1 (component api): playbooks/runbooks/common/services_wont_start.yml"
        in (down["summary"])
    )
    # Which jobs are critical is an option.
    with FakePrometheus(**{"/api/v1/targets": targets}) as fake:
        result, _ = diagnose(monkeypatch, fake.url, tmp_path, critical_jobs=[])
    assert checks(result, check="target_down")[0]["severity"] == "warning"


def test_a_target_not_scraped_yet_is_unknown_and_no_finding():
    targets = copy.deepcopy(recorded("targets.json")["data"])
    targets["activeTargets"][0].update(health="unknown", lastScrape="0001-01-01T00:00:00Z", lastError="")
    items = api.targets(targets)
    assert api.targets_summary(items)["unknown"] == 1
    assert [t["last_scrape"] for t in items if t["health"] == "unknown"] == [None]
    assert api.target_findings(items, {"audit-api"}) == []


def test_promtools_output_is_read_into_its_verdict_and_errors():
    ok = recorded("promtool_ok.json")
    verdict = api.promtool_result(ok["argv"], ok["rc"], ok["stdout"], ok["stderr"])
    assert verdict["ok"] is True and verdict["errors"] == []
    assert (
        "SUCCESS: /etc/prometheus/prometheus.yml is valid prometheus config file syntax" in verdict["output"]
    )
    for name, error in [
        ("promtool_bad_duration.json", 'not a valid duration string: "soon"'),
        ("promtool_bad_yaml.json", "yaml: line 2: did not find expected key"),
    ]:
        bad = recorded(name)
        verdict = api.promtool_result(bad["argv"], bad["rc"], bad["stdout"], bad["stderr"])
        assert verdict["ok"] is False and verdict["rc"] == 1
        assert verdict["errors"] == [f"parsing YAML file /etc/prometheus/prometheus.yml: {error}"], name


def test_a_broken_configuration_pushed_but_not_loaded_is_critical(monkeypatch, tmp_path, prometheus):
    pushed = config_file(tmp_path, mtime=LAST_CONFIG_TIME + 600)
    result, _ = diagnose(
        monkeypatch, prometheus.url, tmp_path, promtool="promtool_bad_duration.json", config_file=pushed
    )
    (broken,) = checks(result, check="config_check")
    assert broken["severity"] == "critical" and broken["component"] == "prometheus"
    assert broken["summary"] == (
        f"promtool check config {pushed} fails: parsing YAML file /etc/prometheus/prometheus.yml: "
        'not a valid duration string: "soon"; a reload would keep the old configuration and a restart would '
        "not come up"
    )
    assert broken["evidence"]["changed_since_load"] is True
    assert result["config"]["check"]["rc"] == 1
    # Prometheus itself still runs the configuration it loaded: no reload failed yet.
    assert checks(result, check="config_reload") == []


@pytest.mark.skipif(not PROMTOOL.exists(), reason="promtool missing: scripts/deps.sh unpacks it")
def test_the_real_promtool_fails_on_the_labs_configuration_broken_as_the_lab_test_breaks_it(
    monkeypatch, tmp_path, prometheus
):
    good = config_file(tmp_path)
    result, _ = diagnose(monkeypatch, prometheus.url, tmp_path, promtool=str(PROMTOOL), config_file=good)
    assert result["config"]["check"]["ok"] is True, result["config"]
    broken = (DATA / "prometheus.yml").read_text() + "\n  - job_name: broken\n    scrape_interval: soon\n"
    bad = config_file(tmp_path, text=broken)
    result, _ = diagnose(monkeypatch, prometheus.url, tmp_path, promtool=str(PROMTOOL), config_file=bad)
    (check,) = checks(result, check="config_check")
    assert f'parsing YAML file {bad}: not a valid duration string: "soon"' in check["summary"]


def test_a_failed_reload_is_critical_and_a_valid_file_not_loaded_yet_is_a_warning(monkeypatch, tmp_path):
    with FakePrometheus(**{"/api/v1/status/runtimeinfo": "runtimeinfo_reload_failed.json"}) as fake:
        result, _ = diagnose(monkeypatch, fake.url, tmp_path)
    (reload,) = checks(result, check="config_reload")
    assert reload["severity"] == "critical" and "2026-12-02T07:51:40Z" in reload["summary"]

    with FakePrometheus() as fake:
        result, _ = diagnose(
            monkeypatch, fake.url, tmp_path, config_file=config_file(tmp_path, LAST_CONFIG_TIME + 60)
        )
    (pending,) = checks(result, check="config_pending")
    assert pending["severity"] == "warning" and "not applied until a reload" in pending["summary"]
    # Within lastConfigTime's second: loaded.
    assert api.changed_since_load(LAST_CONFIG_TIME + 0.9, "2026-12-02T07:51:40Z") is False


def test_nothing_answering_is_critical_and_the_file_is_still_checked(monkeypatch, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    inactive = (
        "Id=prometheus.service\nLoadState=loaded\nActiveState=failed\nSubState=failed\nMemoryMax=infinity\n"
    )
    result, _ = diagnose(
        monkeypatch, url, tmp_path, promtool="promtool_bad_yaml.json", systemctl_show=inactive
    )
    assert not result["available"] and "Connection refused" in result["error"]
    (down,) = checks(result, check="reachable")
    assert down["severity"] == "critical" and "prometheus.service failed (failed)" in down["summary"]
    (broken,) = checks(result, check="config_check")
    assert "did not find expected key" in broken["summary"]


# -- Prometheus High Memory Usage ---------------------------------------------------------------------


def test_memory_against_the_units_memorymax_and_against_thresholds_in_bytes(
    monkeypatch, tmp_path, prometheus
):
    limited = (DATA / "systemctl_show.txt").read_text().replace("MemoryMax=infinity", "MemoryMax=100000000")
    result, _ = diagnose(monkeypatch, prometheus.url, tmp_path, systemctl_show=limited)
    assert result["unit"]["memory_max"] == 100_000_000
    memory = result["memory"]
    assert memory["limit_source"] == "MemoryMax" and memory["fraction"] == pytest.approx(0.8401, abs=1e-4)
    (high,) = checks(result, check="memory")
    assert high["severity"] == "warning" and high["component"] == "prometheus"
    assert high["summary"].startswith(
        "Prometheus uses 80.1 MiB resident, 84.0 % of its MemoryMax 95.4 MiB; 8290 head series"
        " (most node_systemd_unit_state, 2480): over the warning threshold 76.3 MiB"
    )
    assert high["evidence"]["top_series"][0]["name"] == "node_systemd_unit_state"

    # Thresholds in bytes apply whatever the limit; a fraction needs one.
    result, _ = diagnose(monkeypatch, prometheus.url, tmp_path, memory_warning=50e6, memory_critical=80e6)
    assert checks(result, check="memory")[0]["severity"] == "critical"
    assert api.memory({"process_resident_memory_bytes": 10}, {}, None, 0.8, 0.9)["warning_bytes"] is None


def test_the_recorded_metrics_systemd_and_times_are_read():
    metrics = api.own_metrics((DATA / "metrics.txt").read_text())
    assert metrics["process_resident_memory_bytes"] == 84013056
    assert metrics["prometheus_tsdb_head_series"] == 8290
    assert metrics["prometheus_config_last_reload_successful"] == 1
    unit = api.parse_systemctl_show((DATA / "systemctl_show.txt").read_text())
    assert unit == {
        "unit": "prometheus.service",
        "exists": True,
        "active_state": "active",
        "sub_state": "running",
        "memory_max": None,
        "memory_high": None,
        "memory_current": 57495552,
    }
    assert api.parse_time("2026-12-02T08:03:41.385476254Z") == pytest.approx(1796198621.385476, abs=1e-6)
    assert api.parse_time("0001-01-01T00:00:00Z") is None
    assert api.human_bytes(1536) == "1.5 KiB" and api.human_bytes(None) == "?"


def test_an_endpoint_answering_an_error_is_recorded_not_fatal(monkeypatch, tmp_path):
    with FakePrometheus(**{"/api/v1/status/tsdb": {"status": "error", "error": "not ready"}}) as fake:
        result, _ = diagnose(monkeypatch, fake.url, tmp_path)
    assert result["available"] and result["errors"] == {
        "/api/v1/status/tsdb": "GET /api/v1/status/tsdb: not ready"
    }
    assert result["tsdb"]["num_series"] is None and result["targets_summary"]["up"] == 14


def test_the_action_plugin_is_the_probes_one():
    action = ROOT / "collections/ansible_collections/auditlog/ops/plugins/action"
    mine = (action / "prometheus_diagnostics.py").read_text()
    assert " ".join(mine.split()) == " ".join(
        (action / "pg_diagnostics.py").read_text().replace("pg_diagnostics", "prometheus_diagnostics").split()
    )
    # The pure logic: the standard library only (the targets have nothing else).
    source = (
        ROOT / "collections/ansible_collections/auditlog/ops/plugins/module_utils/prometheus_api.py"
    ).read_text()
    imports = {line.split()[1] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {
        "json",
        "re",
        "urllib.error",
        "urllib.parse",
        "urllib.request",
        "datetime",
        "ansible_collections.auditlog.ops.plugins.module_utils.findings",
    }
