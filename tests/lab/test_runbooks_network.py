"""The guide's Network Issues as runbooks (playbooks/runbooks/network), each against the fault it
is for, injected for real on the converged lab and healed before the next test."""

from __future__ import annotations

import pytest
from support.runbooks import assert_changes_nothing, critical, wait_healthy

pytestmark = pytest.mark.lab


def test_dns_names_a_wrong_hosts_entry_and_fixes_it_only_when_asked(lab, stack):
    # Docker writes the container's /etc/hosts; a line of ours maps db1 somewhere else.
    lab.exec("app2", "cp /etc/hosts /root/hosts.good && echo '192.0.2.10 db1 db1.wrong' >> /etc/hosts")
    try:
        run = lab.runbook("playbooks/runbooks/network/dns.yml")
        assert run.ok and run.changed == 0, run.describe()
        wrong = critical(run, host="app2", component="dns")
        assert wrong and "db1" in wrong[0]["summary"] and "192.0.2.10" in str(wrong[0]), run.describe()
        assert not critical(run, host="app1"), run.describe()
        # Every host reported what it resolves: app1 resolves db1 (no finding), app2 does not.
        checked = lab.runbook(
            "playbooks/runbooks/network/dns.yml",
            limit="app2",
            extra_vars={"dns_fix_hosts_file": True},
            check=True,
        )
        assert checked.ok, checked.describe()
        assert "192.0.2.10 db1 db1.wrong" in lab.exec("app2", "cat /etc/hosts").stdout

        fixed = lab.runbook(
            "playbooks/runbooks/network/dns.yml",
            limit="app2",
            extra_vars={"dns_fix_hosts_file": True},
            diff=True,
        )
        assert fixed.ok and fixed.changed == 1, fixed.describe()
        lines = lab.exec("app2", "cat /etc/hosts").stdout.splitlines()
        # db1 left the wrong line; the line's other name stayed.
        assert "192.0.2.10 db1.wrong" in [" ".join(line.split()) for line in lines], lines
    finally:
        lab.exec("app2", "cat /root/hosts.good > /etc/hosts")
    again = assert_changes_nothing(
        lab, "playbooks/runbooks/network/dns.yml", extra_vars={"dns_fix_hosts_file": True}
    )
    assert critical(again) == [], again.describe()


def test_port_conflicts_name_a_foreign_listener_on_the_redis_port_and_end_it_only_when_asked(lab, stack):
    lab.exec("mq1", "systemctl stop redis-server")
    port = 6379
    lab.exec("mq1", f"setsid python3 -m http.server {port} >/dev/null 2>&1 < /dev/null &")
    try:
        run = lab.runbook("playbooks/runbooks/network/port_conflicts.yml", limit="mq1")
        assert run.ok and run.changed == 0, run.describe()
        taken = critical(run, host="mq1", component="redis", check="port_owner")
        assert taken and "http.server" in taken[0]["summary"], run.describe()
        move = run.findings(host="mq1", check="port_move")
        assert move and move[0]["variable"] == "redis_port", run.describe()
        assert lab.exec("mq1", f"pgrep -f '[h]ttp.server {port}'", check=False).returncode == 0

        fixed = lab.runbook(
            "playbooks/runbooks/network/port_conflicts.yml",
            limit="mq1",
            extra_vars={"port_conflicts_kill": True},
        )
        assert fixed.ok and fixed.changed > 0, fixed.describe()
        assert lab.exec("mq1", f"pgrep -f '[h]ttp.server {port}'", check=False).returncode != 0
        assert lab.exec("mq1", "systemctl is-active redis-server").stdout.strip() == "active"
    finally:
        lab.exec("mq1", f"pkill -f '[h]ttp.server {port}'; systemctl start redis-server", check=False)
    wait_healthy()
    # The whole fleet: every component holds its own ports (nginx both of lb1's).
    again = assert_changes_nothing(lab, "playbooks/runbooks/network/port_conflicts.yml")
    assert critical(again) == [], again.describe()
