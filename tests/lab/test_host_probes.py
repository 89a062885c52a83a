"""auditlog.ops host_facts, component and port_owner on a real systemd host.

One private Debian 13 container (audit-t-probe1, network audit-t-probe, inventory in a temporary
directory), beside the shared lab. Into it go stand-ins of two stack units under their real names:
audit-api.service (a Python HTTP server on the API's port 8000) and audit-worker.service, which
crash-loops on a bad environment value, as a unit with a wrong setting does; and, outside any
unit, two foreign processes: an HTTP server on Redis' port 6379 and a CPU hog. The modules run
through `ansible` with this worktree's collection (and its action plugins), as a runbook runs them.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from audit_devtools import lab as lablib

pytestmark = pytest.mark.lab

ROOT = Path(__file__).resolve().parents[2]
HOST = "probe1"
NETWORK = "audit-t-probe"
INVENTORY = """\
all:
  hosts:
    probe1:
      ansible_host: audit-t-probe1
      lab_image: local/debian-systemd:trixie
"""

API_UNIT = """\
[Unit]
Description=stand-in of the audit API (tests/lab/test_host_probes.py)
[Service]
ExecStart=/usr/bin/python3 -m http.server 8000 --bind 0.0.0.0
Restart=always
[Install]
WantedBy=multi-user.target
"""

# A worker with a bad setting: says which and exits, and systemd restarts it, again and again.
WORKER_UNIT = """\
[Unit]
Description=stand-in of the audit worker, crash-looping (tests/lab/test_host_probes.py)
StartLimitIntervalSec=0
[Service]
Environment=WORKER_BATCH_SIZE=lots
ExecStart=/bin/sh -c 'echo "invalid WORKER_BATCH_SIZE=$WORKER_BATCH_SIZE: not a whole number" >&2; exit 3'
Restart=always
RestartSec=1
"""

FOREIGN_LISTENER = "python3 -m http.server 6379 --bind 127.0.0.1"
HOG = "python3 -c 'while True: pass'"


def start_detached(lab, command: str) -> int:
    """Start a process in the host outside any unit (as a person's shell would); its pid."""
    out = lab.exec(HOST, f"setsid nohup {command} >/dev/null 2>&1 < /dev/null & echo $!").stdout
    return int(out.strip())


def run_module(lab, module: str, check: bool = False, **args) -> tuple[int, dict]:
    """The module once on the host through `ansible`; (exit code, the host's result)."""
    env = lablib._env() | {
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
    }
    cmd = [lablib._tool("ansible"), HOST, "-i", str(lab.inventory), "-m", f"auditlog.ops.{module}"]
    cmd += ["-a", json.dumps(args)]
    if check:
        cmd.append("--check")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    try:
        data = json.loads(proc.stdout)
        result = data["plays"][0]["tasks"][0]["hosts"][HOST]
    except (ValueError, KeyError, IndexError):
        raise AssertionError(
            f"{shlex.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        ) from None
    return proc.returncode, result


def alive(lab, pid: int) -> bool:
    return (
        lab.exec(
            HOST, f"test -d /proc/{pid} && ! grep -q '^State:.*Z' /proc/{pid}/status", check=False
        ).returncode
        == 0
    )


LISTENING = (
    "import sys; print(any(l.split()[3] == '0A'"
    " and int(l.split()[1].rsplit(':', 1)[1], 16) == int(sys.argv[1])"
    " for f in ('/proc/net/tcp', '/proc/net/tcp6') for l in open(f).readlines()[1:]))"
)


def listening(lab, port: int) -> bool:
    """Does anything listen on the port in the host (read as the module does not: by the kernel's table)."""
    return lab.exec(HOST, ["python3", "-c", LISTENING, str(port)]).stdout.strip() == "True"


def wait(predicate, timeout=20.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def probe_lab(tmp_path_factory):
    with lablib.private_lab(
        tmp_path_factory.mktemp("probe-lab"), INVENTORY, NETWORK, "the probe host"
    ) as lab:
        lab.exec(HOST, ["sh", "-c", f"cat > /etc/systemd/system/audit-api.service <<'EOF'\n{API_UNIT}EOF"])
        lab.exec(
            HOST, ["sh", "-c", f"cat > /etc/systemd/system/audit-worker.service <<'EOF'\n{WORKER_UNIT}EOF"]
        )
        lab.exec(HOST, "systemctl daemon-reload && systemctl start audit-api audit-worker")
        wait(lambda: listening(lab, 8000), what="the API stand-in on 8000")
        lab.foreign = start_detached(lab, FOREIGN_LISTENER)
        wait(lambda: listening(lab, 6379), what="the foreign listener on 6379")
        yield lab


@pytest.fixture
def hog(probe_lab):
    pid = start_detached(probe_lab, HOG)
    time.sleep(1)
    yield pid
    probe_lab.exec(HOST, f"kill {pid}", check=False)


def _by_check(result, check):
    return [f for f in result["findings"] if f["check"] == check]


# -- host_facts ------------------------------------------------------------------------------------


def test_host_facts_reports_the_host_and_the_stack_units(probe_lab, hog):
    # A busy machine shares its CPUs: the hog gets a good part of one, not always 50%.
    rc, r = run_module(probe_lab, "host_facts", sample_seconds=2, top=5, process_cpu_warning=10)
    assert rc == 0, r
    assert r["changed"] is False
    assert r["cpu"]["count"] >= 1 and r["cpu"]["busy_percent"] is not None
    assert r["memory"]["total_bytes"] > 0 and 0 < r["memory"]["available_percent"] <= 100
    assert any(d["mount"] == "/" and d["total_bytes"] > 0 and d["inodes_total"] >= 0 for d in r["disks"])
    assert r["io"] is not None and set(r["load"]) >= {"1", "5", "15", "per_cpu"}
    # only the stack's units that exist on the host
    assert set(r["units"]) == {"audit-api.service", "audit-worker.service"}
    api = r["units"]["audit-api.service"]
    assert api["active"] and api["component"] == "api" and api["main_pid"]
    assert "memory_current" in api
    worker = r["units"]["audit-worker.service"]
    # systemd resets Result when a run starts: a worker caught in one of its short runs says
    # "success" there, and only its restart count tells of the loop.
    assert worker["n_restarts"] >= 1, worker
    assert worker["result"] == "exit-code" or worker["active_state"] == "active", worker

    # Between two runs (auto-restart), failed, or caught in one of its short runs (a busy machine
    # makes those longer): reported as a critical state of the worker either way.
    (unit,) = _by_check(r, "unit_state")
    assert unit["severity"] == "critical" and unit["component"] == "worker" and unit["host"] == HOST
    assert unit["summary"].startswith("audit-worker.service is "), unit["summary"]
    assert any(s in unit["summary"] for s in ("(auto-restart)", "failed", "restarts=")), unit["summary"]

    # The CPU hog, outside any unit, is named with its pid and command; the API's server is not.
    tops = _by_check(r, "top_consumer")
    assert [f["evidence"]["pid"] for f in tops] == [hog], r["processes"]["by_cpu"]
    assert f"pid {hog} (python3 -c while True: pass" in tops[0]["summary"]
    assert tops[0]["severity"] == "warning"
    # Its share is what the machine's other work leaves it (a CI run's last was 33 %): the test
    # asks only that it lead and pass the warning threshold it was named for.
    top_cpu = r["processes"]["by_cpu"][0]
    assert top_cpu["pid"] == hog and top_cpu["stack"] is False and top_cpu["cpu_percent"] >= 10


def test_host_facts_named_units_and_a_missing_one(probe_lab):
    rc, r = run_module(probe_lab, "host_facts", units=["audit-api", "redis-server"], sample_seconds=0.2)
    assert rc == 0, r
    assert r["units"]["redis-server.service"]["exists"] is False
    (f,) = _by_check(r, "unit_state")
    assert f["component"] == "redis" and "does not exist" in f["summary"]


# -- component -----------------------------------------------------------------------------------


def test_component_status_of_a_running_unit(probe_lab):
    rc, r = run_module(probe_lab, "component", name="api", logs=True, tail=5)
    assert rc == 0, r
    assert r["changed"] is False and r["unit"] == "audit-api.service" and r["mode"] == "systemd"
    assert r["status"]["active"] and r["findings"] == []
    assert 0 < len(r["logs"]) <= 5
    assert all({"time", "unit", "host", "priority", "message"} <= set(e) for e in r["logs"])


def test_component_names_the_crash_loop_and_its_cause(probe_lab):
    rc, r = run_module(probe_lab, "component", name="worker")
    assert rc == 0, r
    (f,) = r["findings"]
    assert (f["severity"], f["component"], f["check"], f["host"]) == (
        "critical",
        "worker",
        "crash_loop",
        HOST,
    )
    assert r["status"]["crash_loop"] is True
    assert any("invalid WORKER_BATCH_SIZE=lots" in line for line in f["evidence"]["journal"]), f


def test_component_logs_since_tail_grep(probe_lab):
    rc, r = run_module(
        probe_lab, "component", name="worker", logs=True, since="-10min", tail=3, grep="WORKER_BATCH"
    )
    assert rc == 0, r
    assert 1 <= len(r["logs"]) <= 3
    assert all("WORKER_BATCH_SIZE" in e["message"] for e in r["logs"])
    assert all(e["unit"] == "audit-worker.service" and e["time"].endswith("Z") for e in r["logs"])


def write_file(lab, path: str, text: str) -> None:
    lab.exec(HOST, ["sh", "-c", f"mkdir -p $(dirname {path}) && cat > {path} <<'EOF'\n{text}EOF"])


def ago(seconds: float) -> datetime:
    # the container shares the machine's clock
    return datetime.now(UTC) - timedelta(seconds=seconds)


def test_component_logs_from_the_default_log_files(probe_lab):
    # nginx's default access and error logs, without nginx (its unit does not exist)
    access = "".join(
        f'10.0.0.1 - - [{ago(s).strftime("%d/%b/%Y:%H:%M:%S +0000")}] "GET {p} HTTP/1.1" {st} 2 "-" "x"\n'
        for s, p, st in ((600, "/old", 200), (20, "/api/v1/logs", 502))
    )
    write_file(probe_lab, "/var/log/nginx/access.log", access)
    write_file(
        probe_lab,
        "/var/log/nginx/error.log",
        f"{ago(30).strftime('%Y/%m/%d %H:%M:%S')} [error] 9#9: *1 connect() failed (111)\n",
    )
    rc, r = run_module(probe_lab, "component", name="nginx", logs=True, since="-5min")
    assert rc == 0, r
    assert [(e["source"], e["priority"]) for e in r["logs"]] == [
        ("/var/log/nginx/error.log", "err"),
        ("/var/log/nginx/access.log", "err"),
    ], r["logs"]
    assert all(e["unit"] == "nginx.service" and e["host"] for e in r["logs"])
    assert [(s["source"], s["available"]) for s in r["log_sources"]] == [
        ("journal", True),
        ("/var/log/nginx/access.log", True),
        ("/var/log/nginx/error.log", True),
    ]
    assert [f["check"] for f in r["findings"]] == ["unit_state"]  # nginx.service does not exist


def test_component_logs_merge_the_journal_and_a_file(probe_lab):
    # a file's line between two restarts of the API stand-in (systemd's lines in its journal)
    probe_lab.exec(HOST, "systemctl restart audit-api && sleep 1.2")
    write_file(probe_lab, "/tmp/between.log", f"{ago(0).strftime('%Y/%m/%d %H:%M:%S')} [warn] 1#1: between\n")
    probe_lab.exec(HOST, "sleep 1.2 && systemctl restart audit-api")
    rc, r = run_module(
        probe_lab, "component", name="api", logs=True, since="-1min", log_files=["/tmp/between.log"], tail=0
    )
    assert rc == 0, r
    sources = [e["source"] for e in r["logs"]]
    i = sources.index("/tmp/between.log")
    assert "journal" in sources[:i] and "journal" in sources[i + 1 :], r["logs"]
    times = [e["time"] for e in r["logs"]]
    assert times == sorted(times)
    assert r["logs"][i]["priority"] == "warning" and r["logs"][i]["unit"] == "audit-api.service"


def test_component_a_restart_that_does_not_come_up_fails_with_the_journal(probe_lab):
    rc, r = run_module(probe_lab, "component", name="worker", state="restarted", wait_seconds=4)
    assert rc != 0 and r.get("failed"), r
    assert "is not up 4" in r["msg"] and "invalid WORKER_BATCH_SIZE=lots" in r["msg"]


def test_component_stop_and_start_with_check_mode(probe_lab):
    pid = run_module(probe_lab, "component", name="api")[1]["status"]["main_pid"]

    rc, r = run_module(probe_lab, "component", check=True, name="api", state="stopped")
    assert rc == 0 and r["changed"] and r["operation"] == "stop", r
    assert run_module(probe_lab, "component", name="api")[1]["status"]["main_pid"] == pid  # untouched

    rc, r = run_module(probe_lab, "component", name="api", state="stopped")
    assert rc == 0 and r["changed"] and not r["status"]["active"] and r["findings"] == [], r
    rc, r = run_module(probe_lab, "component", name="api", state="stopped")
    assert rc == 0 and not r["changed"], r

    # stopped, a status probe finds it down, with the journal's last lines
    rc, r = run_module(probe_lab, "component", name="api")
    (f,) = r["findings"]
    assert (f["severity"], f["check"]) == ("critical", "unit_state")
    assert any("audit-api.service" in line for line in f["evidence"]["journal"])

    rc, r = run_module(probe_lab, "component", check=True, name="api", state="started")
    assert rc == 0 and r["changed"] and not r["status"]["active"], r
    rc, r = run_module(probe_lab, "component", name="api", state="started", wait_seconds=20)
    assert rc == 0 and r["changed"] and r["status"]["active"] and r["findings"] == [], r
    wait(lambda: listening(probe_lab, 8000), what="the API stand-in back on 8000")
    rc, r = run_module(probe_lab, "component", name="api", state="started")
    assert rc == 0 and not r["changed"]


def test_component_compose_mode_is_not_there_yet(probe_lab):
    rc, r = run_module(probe_lab, "component", name="api", mode="compose")
    assert rc != 0 and "compose is not implemented yet" in r["msg"]


# -- port_owner ----------------------------------------------------------------------------------

EXPECTED = {"8000": "api", "6379": "redis", "4222": "nats"}


def test_port_owner_names_the_holders(probe_lab):
    rc, r = run_module(probe_lab, "port_owner", expected=EXPECTED)
    assert rc == 0 and r["changed"] is False, r
    api = r["ports"]["8000"]
    assert (
        api["ok"]
        and api["owners"][0]["unit"] == "audit-api.service"
        and api["owners"][0]["component"] == "api"
    )
    redis = r["ports"]["6379"]
    assert not redis["ok"] and redis["owners"][0]["pid"] == probe_lab.foreign
    assert redis["owners"][0]["unit"] is None and redis["owners"][0]["user"] == "root"
    by_component = {f["component"]: f for f in r["findings"]}
    assert set(by_component) == {"redis", "nats"}
    assert by_component["redis"]["severity"] == "critical"
    assert f"pid {probe_lab.foreign} (python3 -m http.server 6379" in by_component["redis"]["summary"]
    assert (by_component["nats"]["severity"], by_component["nats"]["summary"]) == (
        "warning",
        "nothing listens on port 4222 (expected: nats)",
    )


def test_port_owner_terminate_in_check_mode_ends_nobody(probe_lab):
    rc, r = run_module(probe_lab, "port_owner", check=True, expected=EXPECTED, terminate=True)
    assert rc == 0 and r["changed"], r
    assert [(t["pid"], t["signal"]) for t in r["terminated"]] == [(probe_lab.foreign, "would SIGTERM")]
    (f,) = [f for f in r["findings"] if f["component"] == "redis"]
    assert f["remediation"].startswith(f"would end pid {probe_lab.foreign}")
    assert alive(probe_lab, probe_lab.foreign)


def test_port_owner_without_terminate_ends_nobody(probe_lab):
    rc, r = run_module(probe_lab, "port_owner", expected=EXPECTED)
    assert rc == 0 and r["terminated"] == [] and alive(probe_lab, probe_lab.foreign)


def test_port_owner_terminate_ends_the_foreign_holder_never_a_stack_unit(probe_lab):
    api_pid = run_module(probe_lab, "component", name="api")[1]["status"]["main_pid"]
    # 8000 "expected" to be Redis': its holder is audit-api, a stack unit, so it stays.
    rc, r = run_module(
        probe_lab, "port_owner", expected={"8000": "redis", "6379": "redis"}, terminate=True, grace_seconds=3
    )
    assert rc == 0 and r["changed"], r
    assert [t["pid"] for t in r["terminated"]] == [probe_lab.foreign]
    assert r["terminated"][0]["signal"] in ("SIGTERM", "SIGKILL")
    (f,) = [f for f in r["findings"] if f["evidence"]["owners"][0]["pid"] == probe_lab.foreign]
    assert f["remediation"].startswith(f"ended pid {probe_lab.foreign}")
    wait(lambda: not alive(probe_lab, probe_lab.foreign), what="the foreign listener to end")
    assert not listening(probe_lab, 6379)
    assert alive(probe_lab, api_pid) and listening(probe_lab, 8000)

    # nothing left to end: a second run changes nothing
    rc, r = run_module(probe_lab, "port_owner", expected={"6379": "redis"}, terminate=True)
    assert rc == 0 and not r["changed"] and r["terminated"] == []
    assert [f["severity"] for f in r["findings"]] == ["warning"]
