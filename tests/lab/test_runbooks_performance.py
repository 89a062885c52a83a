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
    back = lab.playbook("playbooks/site.yml", limit="audit_db:localhost")
    assert back.ok, back.describe()
    assert lab.exec("db1", show).stdout.split() == ["1.1", "1GB"]
    wait_healthy()
    assert_changes_nothing(lab, DISK_IO)
