"""The guide's Performance Issues as runbooks (playbooks/runbooks/performance), each against the
fault it is for, made for real on the converged lab and healed before the next test."""

from __future__ import annotations

import subprocess

import pytest
from support.ingest import service_invocations
from support.runbooks import api_processes, assert_changes_nothing, wait_for, wait_healthy

pytestmark = pytest.mark.lab

HIGH_CPU = "playbooks/runbooks/performance/high_cpu.yml"


@pytest.mark.leaves_lab_changed
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
    before = service_invocations(lab, ["app1"], ("audit-api",))
    applied = lab.runbook(HIGH_CPU, limit="app1:localhost", extra_vars={"high_cpu_apply": True, **settings})
    assert applied.ok and applied.changed > 0, applied.describe()
    (named,) = applied.findings(host="app1", check="settings_applied")
    assert set(named["variable"].split(", ")) == set(settings), named
    env = lab.exec("app1", "cat /etc/audit-service/audit-service.env").stdout
    assert "API_WORKERS=3" in env and "CACHE_TTL=45" in env and "CACHE_ENABLED=true" in env, env
    assert service_invocations(lab, ["app1"], ("audit-api",)) != before, "the API was not restarted"
    wait_for(lambda: api_processes(lab, "app1") == 3, 60, "three API worker processes on app1")
    wait_healthy()
    assert_changes_nothing(lab, HIGH_CPU)
    # The settings stay (the test runs among the last, leaves_lab_changed): no converge back.


DISK_IO = "playbooks/runbooks/performance/disk_io.yml"

# Rewrites 256 MB of one file, 4 MB at a time, each written through to the disk (fsync): one
# process that keeps the database host's disk busy.
IO_LOAD = """\
import os
fd = os.open("/var/tmp/io-load", os.O_WRONLY | os.O_CREAT, 0o600)
chunk = os.urandom(4 << 20)
while True:
    for offset in range(0, 256 << 20, 4 << 20):
        os.pwrite(fd, chunk, offset)
        os.fsync(fd)
"""


def postmaster_start(lab) -> str:
    return lab.exec(
        "db1", "runuser -u postgres -- psql -tAc 'SELECT pg_postmaster_start_time()'"
    ).stdout.strip()


@pytest.mark.leaves_lab_changed
def test_disk_io_names_a_heavy_writer_reports_postgresqls_block_io_and_applies_tunables_with_a_reload(
    lab, stack
):
    lab.put("db1", "/root/io_load.py", IO_LOAD)
    lab.exec("db1", "setsid python3 /root/io_load.py >/dev/null 2>&1 < /dev/null &")
    try:
        run = lab.runbook(DISK_IO, extra_vars={"disk_io_process_mib": 5})
        assert run.ok and run.changed == 0, run.describe()
        writers = [f for f in run.findings(host="db1", check="top_consumer") if "io_load.py" in f["summary"]]
        assert writers and "MiB/s of disk I/O" in writers[0]["summary"], run.describe()
        (block,) = run.findings(host="db1", check="block_io")
        assert block["evidence"]["table_io"] and "heap_blks_read" in block["evidence"]["table_io"][0], block
        assert "random_page_cost" in block["summary"] and block["variable"] == "disk_io_apply", block
        assert any(p["write_bytes_per_s"] > 0 for p in block["evidence"]["processes"]), block
    finally:
        lab.exec("db1", "pkill -f /root/io_load.py; rm -f /var/tmp/io-load", check=False)

    started = postmaster_start(lab)
    applied = lab.runbook(
        DISK_IO,
        limit="audit_db:localhost",
        extra_vars={
            "disk_io_apply": True,
            "postgresql_random_page_cost": 1.5,
            "postgresql_effective_cache_size": "2GB",
        },
    )
    assert applied.ok and applied.changed > 0, applied.describe()
    (named,) = applied.findings(host="db1", check="settings_applied")
    assert "postgresql_random_page_cost=1.5" in named["summary"], named
    show = "runuser -u postgres -- psql -tAc 'SHOW random_page_cost' -c 'SHOW effective_cache_size'"
    assert lab.exec("db1", show).stdout.split() == ["1.5", "2GB"]
    assert postmaster_start(lab) == started, "a reload was enough, PostgreSQL was restarted"
    wait_healthy()
    assert_changes_nothing(lab, DISK_IO)
    # The settings stay (the test runs among the last, leaves_lab_changed): no converge back.


NETWORK_LATENCY = "playbooks/runbooks/performance/network_latency.yml"
SYSCTL_FILE = "/etc/sysctl.d/60-audit-log.conf"
SYSCTL_LINES = ["net.core.rmem_max=16777216", "net.core.wmem_max=16777216"]  # the common role's defaults


def docker_host_veth(lab, host: str) -> str:
    """The Docker host's end of a lab container's eth0 (the interface whose index is its iflink)."""
    iflink = lab.exec(host, "cat /sys/class/net/eth0/iflink").stdout.strip()
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    for line in links.splitlines():
        index, name = line.split(":")[:2]
        if index.strip() == iflink:
            return name.strip().split("@")[0]
    raise AssertionError(f"no interface of index {iflink} on the Docker host for {host}")


def connect_ms(lab, source: str, target: str, port: int) -> float:
    probe = (
        "import socket, time; t = time.perf_counter();"
        f" socket.create_connection(('{target}', {port}), timeout=5).close();"
        " print((time.perf_counter() - t) * 1000)"
    )
    return float(lab.exec(source, ["python3", "-c", probe]).stdout)


def test_network_latency_names_the_host_whose_links_are_slow_and_saves_the_kernel_settings_only_when_asked(
    lab, stack
):
    # app1's link made slow for real: the Docker host's end of its interface shaped to 2 Mbit/s
    # with a queue of 150 ms (tbf; this kernel has no netem), kept full by a bulk TCP transfer
    # from db1 to app1, so that every packet into app1 waits behind it: bufferbloat.
    veth = docker_host_veth(lab, "app1")
    sink = "import socket; c, _ = socket.create_server(('', 9009)).accept()\nwhile c.recv(1 << 16): pass"
    flood = (
        "import socket; c = socket.create_connection(('app1', 9009))\nwhile True: c.sendall(bytes(1 << 16))"
    )
    # And app2's saved settings lost (a hand-cleaned /etc/sysctl.d).
    lab.exec("app2", f"rm {SYSCTL_FILE}")
    try:
        shaper = ["tbf", "rate", "2mbit", "burst", "4kb", "latency", "150ms"]
        subprocess.run(["tc", "qdisc", "add", "dev", veth, "root", *shaper], check=True)
        lab.exec("app1", ["systemd-run", "--unit=lab-sink", "--collect", "python3", "-c", sink])
        wait_for(lambda: "9009" in lab.exec("app1", "ss -ltnH").stdout, 10, "the sink listening")
        lab.exec("db1", ["systemd-run", "--unit=lab-flood", "--collect", "python3", "-c", flood])
        wait_for(lambda: connect_ms(lab, "app1", "db1", 5432) > 50, 30, "app1's link slow")

        run = lab.runbook(NETWORK_LATENCY)
        assert run.ok, run.describe()
        (suspect,) = [f for f in run.findings(check="latency_suspect") if f["severity"] != "info"]
        assert suspect["evidence"]["host"] == "app1" and suspect["severity"] in ("warning", "critical"), (
            suspect
        )
        assert suspect["summary"].startswith("every link from app1 is slow (5 of 5"), suspect
        assert "lb1 -> api app1" in suspect["summary"], suspect  # nginx's link into it too
        slow = {f["evidence"]["target"] for f in run.findings(host="app1", check="latency")}
        assert slow == {"postgresql", "redis", "nats mq1", "nats mq2", "nats mq3"}, run.describe()
        assert run.findings(host="app2", check="latency") == [], run.describe()
        # The settings: nothing written without the variable, and the container's kernel says no.
        (unsaved,) = run.findings(host="app2", check="sysctl_file")
        assert unsaved["remediation"] is None and "network_latency_apply_sysctls=true" in unsaved["summary"]
        assert lab.exec("app2", f"test -e {SYSCTL_FILE}", check=False).returncode == 1
        caps = run.findings(host="app1", check="sysctl")
        assert {f["evidence"]["name"] for f in caps} == {"net.core.rmem_max", "net.core.wmem_max"}, caps
        assert all("read-only" in f["summary"] and f["evidence"]["settable"] is False for f in caps), caps

        # --check with the variable: said, not done.
        apply = {"network_latency_apply_sysctls": True}
        checked = lab.runbook(NETWORK_LATENCY, limit="app2:localhost", check=True, extra_vars=apply)
        assert checked.ok, checked.describe()
        (would,) = checked.findings(host="app2", check="sysctl_file")
        assert would["remediation"] is None and would["summary"].startswith(f"{SYSCTL_FILE} lacks"), would
        assert lab.exec("app2", f"test -e {SYSCTL_FILE}", check=False).returncode == 1

        saved = lab.runbook(NETWORK_LATENCY, limit="app2:localhost", extra_vars=apply)
        assert saved.ok and saved.changed > 0, saved.describe()
        (written,) = saved.findings(host="app2", check="sysctl_file")
        assert written["remediation"] == f"written to {SYSCTL_FILE}", written
        assert sorted(lab.exec("app2", f"cat {SYSCTL_FILE}").stdout.split()) == SYSCTL_LINES
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", veth, "root"], check=False)
        for host, unit in (("db1", "lab-flood"), ("app1", "lab-sink")):
            lab.exec(host, f"systemctl stop {unit}", check=False)
        if lab.exec("app2", f"test -e {SYSCTL_FILE}", check=False).returncode:
            lab.put("app2", SYSCTL_FILE, "\n".join(SYSCTL_LINES) + "\n")

    again = assert_changes_nothing(lab, NETWORK_LATENCY, extra_vars={"network_latency_apply_sysctls": True})
    assert again.findings(check="latency") == [] and again.findings(check="sysctl_file") == [], (
        again.describe()
    )
    (calm,) = again.findings(check="latency_suspect")
    assert calm["severity"] == "info" and calm["summary"].startswith("every one of 12 links under 20 ms"), (
        calm
    )
