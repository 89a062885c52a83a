"""auditlog.ops host-side probes (host_facts, component, port_owner, api_health): their pure logic,
on sample /proc text, systemctl and journalctl output, and fake commands; no systemd, no server
(api_health's timed GET runs against a stdlib HTTP server on loopback)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
from ansible_collections.auditlog.ops.plugins.module_utils import components as comp
from ansible_collections.auditlog.ops.plugins.module_utils import procfs
from ansible_collections.auditlog.ops.plugins.modules import api_health, component, host_facts, port_owner

# -- procfs ----------------------------------------------------------------------------------------

MEMINFO = """\
MemTotal:        4000000 kB
MemFree:          200000 kB
MemAvailable:     160000 kB
Buffers:           10000 kB
Cached:           300000 kB
SwapTotal:       1000000 kB
SwapFree:         400000 kB
"""


def test_meminfo_in_bytes_with_percentages():
    m = procfs.parse_meminfo(MEMINFO)
    assert m["memory"]["total_bytes"] == 4000000 * 1024
    assert m["memory"]["available_percent"] == 4.0
    assert m["swap"]["used_bytes"] == 600000 * 1024
    assert m["swap"]["used_percent"] == 60.0


def test_meminfo_without_swap_or_memavailable():
    m = procfs.parse_meminfo("MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 50 kB\nCached: 50 kB\n")
    assert m["memory"]["available_bytes"] == 200 * 1024
    assert m["swap"] == {"total_bytes": 0, "free_bytes": 0, "used_bytes": 0, "used_percent": 0.0}


def test_load_and_cpu_busy():
    assert procfs.parse_loadavg("0.50 1.25 2.00 3/456 7890\n") == (0.5, 1.25, 2.0)
    before = procfs.parse_cpu_times("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n")
    after = procfs.parse_cpu_times("cpu  200 0 200 800 200 0 0 0 0 0\n")
    assert procfs.cpu_busy_percent(before, after) == (50.0, 25.0)
    assert procfs.cpu_busy_percent(after, after) == (0.0, 0.0)


MOUNTS = r"""sysfs /sys sysfs rw 0 0
proc /proc proc rw 0 0
/dev/vda1 / ext4 rw 0 0
tmpfs /run tmpfs rw 0 0
/dev/vdb1 /var/lib/postgresql ext4 rw 0 0
/dev/vdc1 /mnt/with\040space xfs rw 0 0
cgroup2 /sys/fs/cgroup cgroup2 rw 0 0
overlay /var/lib/docker/overlay2/abc/merged overlay rw 0 0
"""


def test_mounts_skip_pseudo_filesystems_and_unescape():
    mounts = procfs.parse_mounts(MOUNTS)
    assert [m["mount"] for m in mounts] == [
        "/",
        "/var/lib/postgresql",
        "/mnt/with space",
        "/var/lib/docker/overlay2/abc/merged",
    ]


def test_disk_usage_as_df_counts_it():
    st = SimpleNamespace(f_blocks=1000, f_frsize=4096, f_bfree=100, f_bavail=50, f_files=200, f_ffree=20)
    u = procfs.disk_usage(st)
    assert u["total_bytes"] == 4096000
    assert u["used_bytes"] == 900 * 4096
    assert u["available_bytes"] == 50 * 4096
    assert u["used_percent"] == round(100 * 900 / 950, 1)
    assert u["inodes_used_percent"] == 90.0
    assert procfs.disk_usage(SimpleNamespace(**{**vars(st), "f_files": 0}))["inodes_used_percent"] is None


def test_read_disks_once_per_filesystem_and_not_the_excluded(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "file").write_text("")
    mounts = tmp_path / "mounts"
    mounts.write_text(
        f"/dev/vda1 {tmp_path} ext4 rw 0 0\n"
        f"/dev/vda1 {tmp_path}/data ext4 rw 0 0\n"
        f"/dev/vda1 {tmp_path}/file ext4 rw 0 0\n"
        "/dev/vdb1 /var/lib/docker/x ext4 rw 0 0\n"
    )
    st = SimpleNamespace(f_blocks=10, f_frsize=1, f_bfree=5, f_bavail=5, f_files=10, f_ffree=5, f_fsid=7)
    disks = procfs.read_disks(str(mounts), statvfs=lambda _p: st)
    assert [d["mount"] for d in disks] == [str(tmp_path)]
    assert disks[0]["also_mounted_at"] == [f"{tmp_path}/data"]

    def broken(_p):
        raise OSError("Stale file handle")

    assert procfs.read_disks(str(mounts), statvfs=broken)[0] == {
        "device": "/dev/vda1",
        "mount": str(tmp_path),
        "fstype": "ext4",
        "available": False,
        "error": "Stale file handle",
    }


DISKSTATS_1 = """\
 253       0 vda 1000 0 2000 500 3000 0 8000 900 0 1000 1400 0 0 0 0
   7       0 loop0 5 0 10 0 0 0 0 0 0 0 0
"""
DISKSTATS_2 = """\
 253       0 vda 1100 0 2200 600 3500 0 9000 1000 1 1500 1600 0 0 0 0
"""


def test_diskstats_counters_and_rates():
    a = procfs.parse_diskstats(DISKSTATS_1)
    b = procfs.parse_diskstats(DISKSTATS_2)
    assert list(a) == ["vda"]
    assert a["vda"]["read_bytes"] == 2000 * 512
    rates = procfs.diskstats_rates(a, b, 2.0)["vda"]
    assert rates["reads_per_s"] == 50.0
    assert rates["writes_per_s"] == 250.0
    assert rates["write_bytes_per_s"] == 1000 * 512 / 2
    assert rates["util_percent"] == 25.0


def test_pid_stat_with_a_command_name_of_spaces_and_parentheses():
    text = (
        "4242 (my (odd) cmd) R 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 12345 1000000 300 ..."
    )
    s = procfs.parse_pid_stat(text)
    assert s == {
        "comm": "my (odd) cmd",
        "state": "R",
        "ppid": 1,
        "ticks": 300,
        "starttime": 12345,
        "rss_pages": 300,
    }


@pytest.mark.parametrize(
    ("text", "unit"),
    [
        ("0::/system.slice/audit-api.service\n", "audit-api.service"),
        (
            "0::/system.slice/system-postgresql.slice/postgresql@17-main.service\n",
            "postgresql@17-main.service",
        ),
        ("0::/user.slice/user-0.slice/session-3.scope\n", "session-3.scope"),
        ("0::/\n", None),
        ("0::/system.slice/docker-0123.scope\n", None),
        ("12:pids:/x\n1:name=systemd:/system.slice/nginx.service\n", "nginx.service"),
        ("0::/system.slice/docker-abc.scope/system.slice/redis-server.service\n", "redis-server.service"),
        ("9:name=systemd:/docker/abc/system.slice/audit-api.service\n0::/\n", "audit-api.service"),
        ("9:name=systemd:/docker/abc\n0::/docker/abc\n", None),
    ],
)
def test_cgroup_unit(text, unit):
    assert procfs.parse_cgroup_unit(text) == unit


NET_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1111 1 0
   1: 00000000:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000   110        0 2222 1 0
   2: 0100007F:1F40 0100007F:D2A4 01 00000000:00000000 00:00000000 00000000     0        0 3333 1 0
"""
_TAIL6 = " 0A 00000000:00000000 00:00000000 00000000     0        0"
NET_TCP6 = f"""\
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000{_TAIL6} 4444 1 0
   1: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000{_TAIL6} 5555 1 0
"""


def test_net_tcp_listeners_only_with_addresses():
    assert procfs.parse_net_tcp(NET_TCP) == [
        {"address": "127.0.0.1", "port": 8000, "family": "ipv4", "inode": 1111},
        {"address": "0.0.0.0", "port": 6379, "family": "ipv4", "inode": 2222},
    ]
    assert procfs.parse_net_tcp(NET_TCP6, "ipv6") == [
        {"address": "::1", "port": 80, "family": "ipv6", "inode": 4444},
        {"address": "::", "port": 443, "family": "ipv6", "inode": 5555},
    ]


def test_socket_inode():
    assert procfs.socket_inode("socket:[12345]") == 12345
    assert procfs.socket_inode("pipe:[12345]") is None
    assert procfs.socket_inode("/dev/null") is None


def test_the_real_proc_of_this_process():
    me = procfs.read_process(os.getpid())
    assert me["pid"] == os.getpid() and me["ticks"] >= 0 and me["cmdline"]
    assert procfs.read_process(2**22 + 12345) is None


def _proc(pid, ticks, rss, unit=None, start=1, cmd="x"):
    return {
        "pid": pid,
        "comm": cmd,
        "cmdline": cmd,
        "user": "root",
        "unit": unit,
        "ticks": ticks,
        "rss_pages": rss,
        "starttime": start,
        "ppid": 1,
    }


def test_top_io_rates_of_the_sample_iotop_style():
    def io(proc, r, w):
        return dict(proc, io={"read_bytes": r, "write_bytes": w})

    before = {1: io(_proc(1, 0, 1), 0, 0), 2: io(_proc(2, 0, 1), 0, 0), 3: io(_proc(3, 0, 1, start=5), 0, 0)}
    after = {
        1: io(_proc(1, 0, 1), 0, 40 * 2**20),
        2: io(_proc(2, 0, 1), 2**20, 0),
        3: io(_proc(3, 0, 1, start=9), 0, 99 * 2**20),  # pid reused: no rate
        4: dict(_proc(4, 0, 1), io=None),
    }
    rows = procfs.top_io(before, after, 2.0, 5)
    assert [(r["pid"], r["read_bytes_per_s"], r["write_bytes_per_s"]) for r in rows] == [
        (1, 0, 20 * 2**20),
        (2, 2**19, 0),
    ]
    assert procfs.parse_pid_io("rchar: 5\nread_bytes: 4096\nwrite_bytes: 8192\n") == {
        "read_bytes": 4096,
        "write_bytes": 8192,
    }


def test_top_processes_by_cpu_and_memory():
    before = {1: _proc(1, 0, 10), 2: _proc(2, 0, 500), 3: _proc(3, 100, 20, start=5)}
    after = {1: _proc(1, 100, 10), 2: _proc(2, 10, 500), 3: _proc(3, 0, 20, start=9), 4: _proc(4, 50, 1)}
    by_cpu, by_mem = procfs.top_processes(before, after, 1.0, 100, 4096, 4096 * 1000, 2)
    assert [(r["pid"], r["cpu_percent"]) for r in by_cpu] == [(1, 100.0), (2, 10.0)]
    assert [(r["pid"], r["memory_percent"]) for r in by_mem] == [(2, 50.0), (3, 2.0)]
    # pid 3 was reused (another start time): no CPU figure from the old one
    assert (
        next(r for r in procfs.top_processes(before, after, 1.0, 100, 4096, 0, 5)[0] if r["pid"] == 3)[
            "cpu_percent"
        ]
        == 0.0
    )


# -- components ------------------------------------------------------------------------------------


def test_units_and_components():
    assert comp.unit_name("audit-api") == "audit-api.service"
    assert comp.unit_name("audit-retention.timer") == "audit-retention.timer"
    assert comp.component_of_unit("postgresql@17-main.service") == "postgresql"
    assert comp.component_of_unit("audit-retention.service") == "worker"
    assert comp.component_of_unit("redis-server") == "redis"
    assert comp.component_of_unit("session-3.scope") is None
    assert comp.component_of_unit(None) is None
    assert comp.unit_matches("audit-api.service", "api")
    assert comp.unit_matches("audit-api.service", "audit-api")
    assert comp.unit_matches("postgresql@15-main.service", "postgresql@*")
    assert not comp.unit_matches("redis-server.service", "api")
    assert not comp.unit_matches(None, "api")


def test_postgresql_unit_resolved_from_the_clusters(tmp_path):
    for version in ("15", "17"):
        (tmp_path / version / "main").mkdir(parents=True)
        (tmp_path / version / "main" / "postgresql.conf").write_text("")
    assert comp.resolve_unit("postgresql", etc_dir=str(tmp_path)) == "postgresql@17-main.service"
    assert comp.resolve_unit(
        "postgresql", ["postgresql@15-main.service"], etc_dir=str(tmp_path / "none")
    ) == ("postgresql@15-main.service")
    with pytest.raises(comp.ComponentError, match="no postgresql unit"):
        comp.resolve_unit("postgresql", [], etc_dir=str(tmp_path / "none"))
    assert comp.resolve_unit("api") == "audit-api.service"
    with pytest.raises(comp.ComponentError, match="unknown component 'mysql'"):
        comp.resolve_unit("mysql")


SHOW = """\
Id=audit-api.service
LoadState=loaded
ActiveState=active
SubState=running
UnitFileState=enabled
MainPID=812
MemoryCurrent=73400320
NRestarts=0
ExecMainStatus=0
ExecMainCode=0
Result=success
ActiveEnterTimestamp=Tue 2026-12-01 10:00:00 UTC

Id=crashy.service
LoadState=loaded
ActiveState=activating
SubState=auto-restart
UnitFileState=
MainPID=0
MemoryCurrent=[not set]
NRestarts=7
ExecMainStatus=1
ExecMainCode=1
Result=exit-code
ActiveEnterTimestamp=

Id=nope.service
LoadState=not-found
ActiveState=inactive
SubState=dead
MemoryCurrent=18446744073709551615
"""


def test_parse_show():
    api, crashy, nope = comp.parse_show(SHOW)
    assert api["active"] and api["main_pid"] == 812 and api["memory_current"] == 73400320
    assert not crashy["active"] and crashy["main_pid"] is None and crashy["memory_current"] is None
    assert crashy["n_restarts"] == 7 and crashy["exec_main_status"] == 1
    assert not nope["exists"] and nope["memory_current"] is None
    assert comp.describe_state(crashy) == "activating (auto-restart) status=1 restarts=7"


def test_crash_loop():
    api, crashy, _nope = comp.parse_show(SHOW)
    assert not comp.is_crash_looping(api)
    assert comp.is_crash_looping(crashy)
    running = dict(api, n_restarts=2)
    assert comp.is_crash_looping(running, previous=dict(api, n_restarts=1))
    assert not comp.is_crash_looping(running, previous=running)
    assert comp.is_crash_looping(dict(api, active=False, active_state="failed", n_restarts=5))
    assert not comp.is_crash_looping(dict(api, n_restarts=5))  # restarted long ago, now fine


JOURNAL = "\n".join(
    [
        json.dumps(
            {
                "__REALTIME_TIMESTAMP": "1764583200000000",
                "_SYSTEMD_UNIT": "audit-api.service",
                "_HOSTNAME": "app1",
                "PRIORITY": "6",
                "MESSAGE": "started",
            }
        ),
        json.dumps(
            {
                "__REALTIME_TIMESTAMP": "1764583201500000",
                "UNIT": "audit-api.service",
                "PRIORITY": "3",
                "_HOSTNAME": "app1",
                "MESSAGE": "audit-api.service: Main process exited, status=1/FAILURE",
            }
        ),
        json.dumps({"MESSAGE": [104, 105, 255], "PRIORITY": "x"}),
        "not json",
    ]
)


def test_journal_entries():
    entries = comp.parse_journal_json(JOURNAL, default_unit="audit-api.service")
    assert entries[0] == {
        "time": "2025-12-01T10:00:00.000Z",
        "unit": "audit-api.service",
        "host": "app1",
        "priority": "info",
        "message": "started",
        "source": "journal",
    }
    assert entries[1]["priority"] == "err" and entries[1]["time"].endswith("01.500Z")
    assert entries[2]["message"] == "hi\ufffd" and entries[2]["priority"] is None
    assert entries[2]["unit"] == "audit-api.service"
    assert len(entries) == 3
    assert comp.journal_command("x.service", "-5min", 20, "ERROR") == [
        "journalctl", "--no-pager", "-o", "json", "-u", "x.service",
        "--since", "-5min", "--lines", "20", "--grep", "ERROR",
    ]  # fmt: skip


class FakeSystemd:
    """systemctl and journalctl as a script of states: each `show` returns the next state."""

    def __init__(self, states, journal=JOURNAL, fail=None):
        self.states = list(states)
        self.journal = journal
        self.calls = []
        self.fail = fail or {}

    def __call__(self, argv):
        self.calls.append(argv)
        if argv[:2] == ["systemctl", "show"]:
            text = self.states.pop(0) if len(self.states) > 1 else self.states[0]
            return 0, text, ""
        if argv[:2] == ["systemctl", "list-units"]:
            return 0, "postgresql@17-main.service loaded active running PostgreSQL Cluster 17-main\n", ""
        if argv[0] == "journalctl":
            return 0, self.journal, ""
        if argv[0] == "systemctl" and argv[1] in self.fail:
            return 1, "", self.fail[argv[1]]
        return 0, "", ""


def _show(active="active", sub="running", restarts=0, pid=812, unit="audit-api.service"):
    return (
        f"Id={unit}\nLoadState=loaded\nActiveState={active}\nSubState={sub}\nMainPID={pid}\n"
        f"NRestarts={restarts}\nMemoryCurrent=1000\nResult=success\n"
    )


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, s):
        self.now += s


def _backend(run):
    clock = Clock()
    return comp.SystemdBackend(run, sleep=clock.sleep, clock=clock)


def test_systemd_backend_resolves_postgresql_from_its_units(monkeypatch):
    monkeypatch.setattr(comp, "postgresql_units_from_dirs", lambda etc_dir="": [])
    b = _backend(FakeSystemd([_show()]))
    assert b.target("postgresql") == "postgresql@17-main.service"
    assert b.target("api", unit="my-api") == "my-api.service"


def test_wait_active_wants_the_unit_to_stay_up():
    run = FakeSystemd([_show("activating", "start"), _show(), _show(), _show(), _show(), _show()])
    ok, state = _backend(run).wait_active("audit-api.service", 10, settle=1.0, interval=0.5)
    assert ok and state["active"]
    # up for a moment after each start, then down again: never stable
    flapping = [
        _show(pid=p, restarts=p) if p % 2 else _show("activating", "auto-restart") for p in range(1, 60)
    ]
    ok, state = _backend(FakeSystemd(flapping)).wait_active("audit-api.service", 10, settle=2.0, interval=0.5)
    assert not ok


def test_compose_mode_says_it_is_not_there_yet():
    b = comp.backend("compose", FakeSystemd([_show()]))
    with pytest.raises(comp.ComponentError, match="compose is not implemented yet"):
        b.status("api")
    with pytest.raises(comp.ComponentError, match="unknown mode"):
        comp.backend("k8s", None)


# -- component module ----------------------------------------------------------------------------


class ModuleExit(Exception):
    def __init__(self, result, failed):
        super().__init__(result.get("msg"))
        self.result = result
        self.failed = failed


class FakeModule:
    def __init__(self, check_mode=False, **params):
        defaults = {a: s.get("default") for a, s in component.argument_spec().items()}
        self.params = {**defaults, **params}
        self.check_mode = check_mode

    def exit_json(self, **result):
        raise ModuleExit(result, False)

    def fail_json(self, **result):
        raise ModuleExit(result, True)


def run_component(run, check_mode=False, **params):
    with pytest.raises(ModuleExit) as e:
        component.run_component(FakeModule(check_mode, **params), _backend(run))
    return e.value


def test_component_status_of_a_running_unit():
    out = run_component(FakeSystemd([_show()]), name="api")
    assert not out.failed and out.result["changed"] is False and out.result["findings"] == []
    assert out.result["status"]["main_pid"] == 812 and out.result["unit"] == "audit-api.service"


def test_component_status_of_a_stopped_unit_is_critical_with_its_journal():
    out = run_component(FakeSystemd([_show("failed", "failed", pid=0)]), name="api")
    (f,) = out.result["findings"]
    assert f["severity"] == "critical" and f["component"] == "api" and f["check"] == "unit_state"
    assert any("Main process exited" in line for line in f["evidence"]["journal"])


def test_component_crash_loop_names_the_failure():
    out = run_component(FakeSystemd([_show("activating", "auto-restart", restarts=4, pid=0)]), name="api")
    (f,) = out.result["findings"]
    assert f["check"] == "crash_loop" and "keeps crashing" in f["summary"]
    assert f["evidence"]["journal"] == [
        "2025-12-01T10:00:01.500Z audit-api.service: audit-api.service: Main process exited, status=1/FAILURE"
    ]


def test_component_restarts_climbing_while_running_is_a_crash_loop():
    out = run_component(FakeSystemd([_show(restarts=1), _show(restarts=2, pid=900)]), name="api")
    assert [f["check"] for f in out.result["findings"]] == ["crash_loop"]


def test_component_start_in_check_mode_changes_nothing():
    run = FakeSystemd([_show("inactive", "dead", pid=0)])
    out = run_component(run, check_mode=True, name="api", state="started")
    assert out.result["changed"] and out.result["operation"] == "start"
    assert not any(c[1] == "start" for c in run.calls if c[0] == "systemctl")
    assert out.result["findings"][0]["remediation"] == "would start audit-api.service"


def test_component_start_waits_until_up():
    run = FakeSystemd([_show("inactive", "dead", pid=0), _show("activating", "start"), _show()])
    out = run_component(run, name="api", state="started", wait_seconds=10)
    assert not out.failed and out.result["changed"] and out.result["status"]["active"]
    assert ["systemctl", "start", "--", "audit-api.service"] in run.calls
    assert out.result["findings"] == []


def test_component_start_that_does_not_come_up_fails_with_the_journal():
    run = FakeSystemd(
        [_show("inactive", "dead", pid=0), _show("activating", "auto-restart", restarts=1, pid=0)]
    )
    out = run_component(run, name="api", state="started", wait_seconds=3)
    assert out.failed and "is not up 3" in out.result["msg"] and "status=1/FAILURE" in out.result["msg"]
    assert out.result["findings"][0]["remediation"] == "started audit-api.service"


def test_component_started_when_running_and_stopped_when_stopped_do_nothing():
    assert run_component(FakeSystemd([_show()]), name="api", state="started").result["changed"] is False
    out = run_component(FakeSystemd([_show("inactive", "dead", pid=0)]), name="api", state="stopped")
    assert out.result["changed"] is False and out.result["findings"] == []


def test_component_logs():
    out = run_component(FakeSystemd([_show()]), name="api", logs=True, since="-1h", tail=10, grep="exit")
    assert [e["message"] for e in out.result["logs"]][:1] == ["started"]


# -- host_facts ----------------------------------------------------------------------------------


def _facts(**over):
    facts = {
        "load": {"1": 1.0, "5": 1.0, "15": 1.0, "per_cpu": {"1": 0.5, "5": 0.5, "15": 0.5}},
        "cpu": {"count": 2, "busy_percent": 10.0},
        "memory": {"available_percent": 50.0, "available_bytes": 2**31, "total_bytes": 2**32},
        "swap": {"total_bytes": 0, "used_percent": 0.0},
        "disks": [
            {
                "mount": "/",
                "used_percent": 40.0,
                "inodes_used_percent": 10.0,
                "available_bytes": 1,
                "total_bytes": 2,
            }
        ],
        "processes": {"by_cpu": [], "by_memory": []},
        "units": {"audit-api.service": {"exists": True, "active": True, "component": "api"}},
    }
    facts.update(over)
    return facts


def test_a_healthy_host_has_no_findings():
    assert host_facts.host_findings(_facts()) == []


def test_host_thresholds():
    facts = _facts(
        load={"1": 7.0, "5": 1, "15": 1, "per_cpu": {"1": 3.5, "5": 0.5, "15": 0.5}},
        memory={"available_percent": 10.0, "available_bytes": 1, "total_bytes": 10},
        swap={"total_bytes": 10, "used_bytes": 9, "used_percent": 90.0},
        disks=[
            {
                "mount": "/",
                "used_percent": 96.0,
                "inodes_used_percent": 86.0,
                "available_bytes": 1,
                "total_bytes": 2,
                "inodes_free": 3,
            },
            {"mount": "/srv", "available": False, "error": "Stale file handle"},
        ],
    )
    got = {(f["check"], f["severity"]) for f in host_facts.host_findings(facts)}
    assert got == {
        ("load", "critical"),
        ("memory_available", "warning"),
        ("swap_used", "critical"),
        ("disk_used", "critical"),
        ("inodes_used", "warning"),
        ("disk", "warning"),
    }
    relaxed = {
        (f["check"], f["severity"]) for f in host_facts.host_findings(facts, {"load_per_cpu_critical": 10})
    }
    assert ("load", "warning") in relaxed


def test_host_units_failed_inactive_or_missing_are_critical():
    units = {
        "audit-api.service": {
            "exists": True,
            "active": False,
            "active_state": "failed",
            "sub_state": "failed",
            "component": "api",
        },
        "redis-server.service": {
            "exists": True,
            "active": False,
            "active_state": "inactive",
            "sub_state": "dead",
            "component": "redis",
        },
        "audit-retention.service": {"exists": True, "active": False, "component": "worker"},
        "gone.service": {"exists": False, "component": None},
    }
    got = sorted((f["component"], f["summary"]) for f in host_facts.host_findings(_facts(units=units)))
    assert got == [
        ("api", "audit-api.service is failed (failed)"),
        ("host", "unit gone.service does not exist on this host"),
        ("redis", "redis-server.service is inactive (dead)"),
    ]
    (f,) = host_facts.host_findings(_facts(units={"available": False, "error": "no systemd"}))
    assert f["severity"] == "critical" and "no systemd" in f["summary"]


def test_a_crash_looping_unit_caught_in_one_of_its_short_runs_is_critical():
    # systemd resets Result to success when a run starts: the restarts climbing during the
    # sample are what tell of the loop.
    running = {"exists": True, "active": True, "active_state": "active", "sub_state": "running"}
    units = {
        "audit-worker.service": {
            **running,
            "component": "worker",
            "n_restarts": 2,
            "result": "success",
            "restarts_in_sample": 1,
        },
        "audit-api.service": {
            **running,
            "component": "api",
            "n_restarts": 0,
            "result": "success",
            "restarts_in_sample": 0,
        },
    }
    (f,) = host_facts.host_findings(_facts(units=units))
    assert f["severity"] == "critical" and f["component"] == "worker" and f["check"] == "unit_state"
    assert f["summary"] == "audit-worker.service is active (running) restarts=2"


def test_a_unit_that_restarted_in_the_past_and_now_runs_steadily_is_no_finding():
    running = {"exists": True, "active": True, "active_state": "active", "sub_state": "running"}
    units = {
        "audit-worker.service": {
            **running,
            "component": "worker",
            "n_restarts": 4,
            "result": "success",
            "restarts_in_sample": 0,
        }
    }
    assert host_facts.host_findings(_facts(units=units)) == []


def test_a_foreign_top_consumer_is_named_and_the_stack_own_are_not():
    hog = {
        "pid": 4321,
        "cmdline": "python3 -c while True: pass",
        "user": "root",
        "unit": None,
        "cpu_percent": 99.0,
        "memory_percent": 1.0,
        "rss_bytes": 10,
        "stack": False,
    }
    pg = dict(hog, pid=100, cmdline="postgres: checkpointer", unit="postgresql@17-main.service", stack=True)
    eater = dict(hog, pid=555, cmdline="stress --vm 1", cpu_percent=1.0, memory_percent=40.0, rss_bytes=2**31)
    facts = _facts(processes={"by_cpu": [pg, hog, eater], "by_memory": [eater, hog, pg]})
    found = host_facts.host_findings(facts)
    assert [(f["check"], f["evidence"]["pid"]) for f in found] == [
        ("top_consumer", 4321),
        ("top_consumer", 555),
    ]
    assert (
        "pid 4321 (python3 -c while True: pass" in found[0]["summary"] and "99.0% CPU" in found[0]["summary"]
    )
    assert "40.0% of memory" in found[1]["summary"]


def test_a_foreign_writer_and_a_busy_device_are_named():
    dd = {"pid": 77, "cmdline": "dd if=/dev/zero of=/var/tmp/x", "user": "root", "unit": None, "stack": False,
          "read_bytes_per_s": 0, "write_bytes_per_s": 60 * 2**20}  # fmt: skip
    wal = dict(dd, pid=78, cmdline="postgres: walwriter", unit="postgresql@17-main.service", stack=True)
    io = {"sda": {"util_percent": 97.0, "read_bytes_per_s": 0, "write_bytes_per_s": 60 * 2**20}}
    found = host_facts.host_findings(
        _facts(io=io, processes={"by_cpu": [], "by_memory": [], "by_io": [dd, wal]})
    )
    assert [(f["check"], f["severity"]) for f in found] == [
        ("disk_busy", "warning"),
        ("top_consumer", "warning"),
    ]
    assert "sda busy 97.0%" in found[0]["summary"]
    assert (
        "pid 77 (dd if=/dev/zero" in found[1]["summary"] and "60.0 MiB/s of disk I/O" in found[1]["summary"]
    )


def test_read_units_default_is_the_stack_units_that_exist(monkeypatch):
    monkeypatch.setattr(comp, "postgresql_units_from_dirs", lambda etc_dir="": [])

    class Run:
        def __call__(self, argv):
            if argv[:2] == ["systemctl", "list-units"]:
                return 0, "", ""
            if argv[:2] == ["systemctl", "show"]:
                units = argv[argv.index("--") + 1 :]
                return 0, "\n".join(
                    (_show(unit=u) if u in ("audit-api.service", "nginx.service") else
                     f"Id={u}\nLoadState=not-found\nActiveState=inactive\n")
                    for u in units
                ), ""  # fmt: skip
            raise AssertionError(argv)

    units = host_facts.read_units(comp.SystemdBackend(Run()), None)
    assert sorted(units) == ["audit-api.service", "nginx.service"]
    assert units["nginx.service"]["component"] == "nginx"
    assert (
        host_facts.read_units(comp.SystemdBackend(Run()), ["redis-server"])["redis-server.service"]["exists"]
        is False
    )


def test_own_ancestry():
    procs = {10: {"ppid": 5}, 5: {"ppid": 1}, 7: {"ppid": 1}}
    assert host_facts.own_ancestry(procs, 10) == {10, 5}


# -- port_owner ----------------------------------------------------------------------------------

PROCS = {
    812: {
        "comm": "uvicorn",
        "cmdline": "/opt/audit/bin/python -m uvicorn",
        "user": "audit-service",
        "unit": "audit-api.service",
    },
    900: {"comm": "python3", "cmdline": "python3 -m http.server 8000", "user": "root", "unit": None},
    901: {
        "comm": "redis-server",
        "cmdline": "/usr/bin/redis-server 127.0.0.1:6379",
        "user": "redis",
        "unit": "redis-server.service",
    },
}


def _rows(listeners, owners):
    return port_owner.listeners_with_owners(listeners, owners, PROCS.get)


def test_port_owner_names_a_foreign_holder_and_a_missing_listener():
    listeners = [
        {"port": 8000, "address": "0.0.0.0", "family": "ipv4", "inode": 1},
        {"port": 6379, "address": "127.0.0.1", "family": "ipv4", "inode": 2},
    ]
    rows = _rows(listeners, {1: [900], 2: [901]})
    assert rows[0]["user"] == "root" and rows[0]["stack"] is False and rows[1]["component"] == "redis"
    report = port_owner.port_report(rows, {8000, 6379}, {8000: "api", 6379: "redis", 4222: "nats"})
    assert report[6379]["ok"] and not report[8000]["ok"] and not report[4222]["listening"]
    findings = port_owner.port_findings(report)
    assert [(f["severity"], f["component"]) for f in findings] == [("warning", "nats"), ("critical", "api")]
    crit = next(f for f in findings if f["severity"] == "critical")
    assert "pid 900 (python3 -m http.server 8000, user root, no unit)" in crit["summary"]


def test_port_owner_unknown_holder_and_expected_by_unit():
    rows = _rows([{"port": 8000, "address": "::", "family": "ipv6", "inode": 1}], {})
    assert rows[0]["pid"] is None
    report = port_owner.port_report(
        _rows([{"port": 8000, "address": "::", "family": "ipv6", "inode": 1}], {1: [812]}),
        {8000},
        {8000: "audit-api"},
    )
    assert report[8000]["ok"] and port_owner.port_findings(report) == []
    assert port_owner.normalise_expected({"8000": "api"}) == {8000: "api"}
    with pytest.raises(ValueError, match="no port number"):
        port_owner.normalise_expected({"http": "api"})


def test_only_foreign_holders_may_be_ended():
    api = port_owner.owner_info(812, PROCS.get)
    foreign = port_owner.owner_info(900, PROCS.get)
    redis = port_owner.owner_info(901, PROCS.get)
    assert port_owner.is_foreign(foreign, "api")
    assert not port_owner.is_foreign(api, "api")
    assert not port_owner.is_foreign(redis, "api")  # a stack unit on the wrong port: never ended
    assert not port_owner.is_foreign({"pid": 1, "stack": False}, "api")
    assert not port_owner.is_foreign({"pid": None, "stack": False}, "api")


def test_terminate_sigterm_then_sigkill():
    sent = []
    alive = {10: True, 11: True}

    def kill(pid, sig):
        sent.append((pid, sig))
        if sig == signal.SIGTERM and pid == 10:
            alive[10] = False
        if sig == signal.SIGKILL:
            alive[pid] = False

    clock = Clock()
    out = port_owner.terminate(
        [10, 11], 1.0, False, kill=kill, alive=lambda p: alive[p], sleep=clock.sleep, clock=clock
    )
    assert out == {10: "SIGTERM", 11: "SIGKILL"}
    assert (11, signal.SIGKILL) in sent and (10, signal.SIGKILL) not in sent
    assert port_owner.terminate([10], 1.0, True, kill=None) == {10: "would SIGTERM"}


# -- api_health ----------------------------------------------------------------------------------


def _entry(checks, component="api", url="http://127.0.0.1:8000"):
    return {"url": url, "component": component, "checks": checks}


def _check(code=200, body=None, total=5.0, error=None):
    return {
        "status_code": code,
        "body": body,
        "error": error,
        "timing": {"dns_ms": 0.1, "connect_ms": 0.1, "tls_ms": None, "ttfb_ms": total - 1, "total_ms": total},
    }


DEGRADED = {
    "status": "degraded",
    "components": {
        "database": {"status": "healthy"},
        "redis": {"status": "unhealthy", "error": "ConnectionRefusedError: [Errno 111]"},
        "nats": {"status": "healthy"},
        "worker": {"status": "healthy"},
    },
}


def test_api_health_degraded_names_the_component():
    entry = _entry({"/health": _check(body={"status": "ok"}), api_health.HEALTH: _check(body=DEGRADED)})
    (f,) = api_health.endpoint_findings("direct", entry, 1000)
    assert f["severity"] == "critical" and f["component"] == "redis"
    assert "the API is degraded: redis unhealthy (ConnectionRefusedError" in f["summary"]
    assert api_health.worst_status({"direct": entry}) == "degraded"


def test_api_health_unreachable_once_per_endpoint_and_slow():
    down = _entry(
        {p: _check(None, error="ConnectionRefusedError: refused") for p in api_health.DEFAULT_PATHS}
    )
    (f,) = api_health.endpoint_findings("app1", down, 1000)
    assert f["check"] == "reachable" and f["severity"] == "critical" and "refused" in f["summary"]
    slow = _entry({"/health": _check(body={"status": "ok"}, total=1500.0)}, component="nginx")
    (f,) = api_health.endpoint_findings("lb", slow, 1000)
    assert (f["severity"], f["component"], f["check"]) == ("warning", "nginx", "latency")


def test_api_health_status_codes():
    entry = _entry(
        {
            "/health": _check(502, "<html>Bad Gateway</html>"),
            "/api/v1/metrics/stats": _check(403, "<html>403</html>"),
            api_health.HEALTH: _check(
                503,
                {
                    "status": "unhealthy",
                    "components": {"database": {"status": "unhealthy"}, "nats": {"status": "healthy"}},
                },
            ),
        },
        component="nginx",
    )
    got = [
        (f["severity"], f["component"], f["check"]) for f in api_health.endpoint_findings("lb", entry, 1000)
    ]
    assert got == [
        ("critical", "nginx", "http_status"),
        ("info", "nginx", "http_status"),
        ("critical", "postgresql", "api_health"),
    ]
    assert api_health.endpoint_component({"url": "https://lb"}) == "nginx"
    assert api_health.endpoint_component({"url": "http://app1:8000"}) == "api"


@pytest.fixture
def http_server():
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append((self.path, self.headers.get("X-API-Key"), self.headers.get("Host")))
            body = json.dumps({"status": "ok", "path": self.path}).encode()
            self.send_response(200 if self.path != "/missing" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen
    server.shutdown()
    server.server_close()


def test_timed_get_against_a_real_server(http_server):
    url, seen = http_server
    r = api_health.timed_get(url + "/prefix/", "/health", headers={"X-API-Key": "k"})
    assert r["error"] is None and r["status_code"] == 200
    assert json.loads(r["body"]) == {"status": "ok", "path": "/prefix/health"}
    t = r["timing"]
    assert t["tls_ms"] is None
    assert t["dns_ms"] >= 0 and t["connect_ms"] >= 0 and t["ttfb_ms"] <= t["total_ms"]
    assert seen[-1][1] == "k"


def test_probe_sends_the_key_to_the_api_paths_only(http_server):
    url, seen = http_server
    out = api_health.probe([{"name": "direct", "url": url}], api_health.DEFAULT_PATHS, api_key="secret")
    entry = out["direct"]
    assert entry["available"] and set(entry["checks"]) == set(api_health.DEFAULT_PATHS)
    keys = {path: key for path, key, _host in seen}
    assert keys == {"/health": None, "/api/v1/metrics/health": "secret", "/api/v1/metrics/stats": "secret"}


def test_timed_get_of_nothing_is_data_not_an_exception():
    r = api_health.timed_get("http://127.0.0.1:1", "/health", timeout=2)
    assert r["status_code"] is None and "ConnectionRefused" in r["error"] and r["timing"]["total_ms"] >= 0
    r = api_health.timed_get("http://no-such-host.invalid", "/health", timeout=2)
    assert r["error"] and r["timing"]["connect_ms"] is None
    assert "not an http(s) URL" in api_health.timed_get("ftp://x", "/")["error"]


@pytest.fixture
def tls_server(tmp_path, http_server):
    """The same server behind a TLS relay, with a self-signed certificate for 127.0.0.1."""
    if not shutil.which("openssl"):
        pytest.skip("needs openssl")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    url, _seen = http_server
    backend_port = int(url.rsplit(":", 1)[1])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def relay(a, b):
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        for s in (a, b):
            with contextlib.suppress(OSError):
                s.close()

    def serve():
        while True:
            try:
                raw, _addr = listener.accept()
            except OSError:
                return
            try:
                client = ctx.wrap_socket(raw, server_side=True)
            except (OSError, ssl.SSLError):
                raw.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", backend_port))
            threading.Thread(target=relay, args=(client, upstream), daemon=True).start()
            threading.Thread(target=relay, args=(upstream, client), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    yield f"https://127.0.0.1:{port}", cert
    listener.close()


def test_timed_get_over_tls_checks_the_certificate(tls_server):
    url, cert = tls_server
    r = api_health.timed_get(url, "/health", ssl_context=ssl.create_default_context(cafile=str(cert)))
    assert r["error"] is None and r["status_code"] == 200, r
    assert r["timing"]["tls_ms"] is not None and r["timing"]["ttfb_ms"] <= r["timing"]["total_ms"]
    # the system's CAs do not know this one: reported, not raised
    r = api_health.timed_get(url, "/health", ssl_context=ssl.create_default_context(), timeout=3)
    assert r["status_code"] is None and "CERTIFICATE_VERIFY_FAILED" in r["error"]
