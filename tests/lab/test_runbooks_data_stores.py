"""The guide's Redis and NATS sections as runbooks (playbooks/runbooks/redis, nats), each against
the fault it is for, injected for real on the converged lab and healed before the next test."""

from __future__ import annotations

import pytest
import yaml
from audit_devtools import lab as lablib
from support.ingest import tenant_key
from support.runbooks import assert_changes_nothing, critical, wait_active, wait_for, wait_healthy

pytestmark = pytest.mark.lab

# Holds raw TCP connections to Redis' port (no TLS handshake, no login) from an app host: a
# client that opens connections and never closes them.
HOLD = """\
import socket, sys, time
held = [socket.create_connection(("mq1", int(sys.argv[1])), timeout=5) for _ in range(int(sys.argv[2]))]
print(len(held), flush=True)
time.sleep(900)
"""


REDIS = "redis-cli --no-auth-warning --user audit-admin -h 127.0.0.1 --tls --cacert /etc/redis/tls/ca.crt"


def on_mq1(lab, command: str, **kwargs):
    """A shell command on mq1 with the admin's password in REDISCLI_AUTH (for every redis-cli in it)."""
    password = yaml.safe_load(lablib.LAB_SECRETS.read_text())["audit_redis_admin_password"]
    return lab.exec("mq1", f"export REDISCLI_AUTH={password}; {command}", **kwargs)


def test_redis_connections_name_the_slots_holder_a_hung_and_a_stopped_redis_and_restart_only_when_asked(
    lab, stack
):
    on_mq1(lab, f"{REDIS} CONFIG SET maxclients 20")
    lab.put("app1", "/root/hold.py", HOLD)
    lab.exec("app1", "python3 /root/hold.py 6379 30 > /root/hold.out 2>&1 < /dev/null & echo")
    app1 = lab.exec("app1", "hostname -i").stdout.split()[0]
    try:
        wait_for(lambda: lab.exec("app1", "cat /root/hold.out").stdout.strip(), 30, "the connections")
        run = lab.runbook("playbooks/runbooks/redis/connections.yml")
        assert run.ok and run.changed == 0, run.describe()
        assert critical(run, host="mq1", check="clients"), run.describe()
        (holders,) = critical(run, host="mq1", check="connection_holders")
        assert f"most from {app1}" in holders["summary"] and holders["variable"] == "redis_restart", holders
        assert holders["remediation"] is None

        fixed = lab.runbook("playbooks/runbooks/redis/connections.yml", extra_vars={"redis_restart": True})
        assert fixed.ok and fixed.changed > 0, fixed.describe()
        (restarted,) = critical(fixed, host="mq1", check="connection_holders")
        assert restarted["remediation"].startswith("Redis restarted"), restarted
        assert on_mq1(lab, f"{REDIS} CONFIG GET maxclients").stdout.split()[-1] == "10000"
    finally:
        lab.exec("app1", "pkill -f /root/hold.py", check=False)
    wait_healthy()

    # A Redis that runs but answers nothing: its process frozen.
    lab.exec("mq1", "systemctl kill --signal=SIGSTOP redis-server")
    try:
        hung = lab.runbook("playbooks/runbooks/redis/connections.yml")
        assert hung.ok and hung.changed == 0, hung.describe()
        assert critical(hung, host="mq1", check="reachable"), hung.describe()
        (told,) = critical(hung, host="mq1", check="connection_holders")
        assert told["variable"] == "redis_restart" and told["remediation"] is None, told
        restarted = lab.runbook(
            "playbooks/runbooks/redis/connections.yml", extra_vars={"redis_restart": True}
        )
        assert restarted.ok and restarted.changed > 0, restarted.describe()
        (mended,) = critical(restarted, host="mq1", check="connection_holders")
        assert mended["remediation"].startswith("Redis restarted"), mended
        assert on_mq1(lab, f"{REDIS} PING").stdout.strip() == "PONG"
    finally:
        lab.exec("mq1", "systemctl kill --signal=SIGCONT redis-server", check=False)
    wait_healthy()

    lab.exec("mq1", "systemctl stop redis-server")
    try:
        stopped = lab.runbook("playbooks/runbooks/redis/connections.yml")
        assert stopped.ok and stopped.changed == 0, stopped.describe()
        (told,) = critical(stopped, host="mq1", check="redis_restart")
        assert "not running" in told["summary"], told
        assert lab.exec("mq1", "systemctl is-active redis-server", check=False).stdout.strip() != "active"
        started = lab.runbook("playbooks/runbooks/redis/connections.yml", extra_vars={"redis_restart": True})
        assert started.ok and started.changed > 0, started.describe()
    finally:
        lab.exec("mq1", "systemctl start redis-server", check=False)
    wait_active(lab, "mq1", "redis-server")
    wait_healthy()
    again = assert_changes_nothing(
        lab, "playbooks/runbooks/redis/connections.yml", extra_vars={"redis_restart": True}
    )
    assert critical(again) == [], again.describe()


@pytest.mark.leaves_lab_changed
def test_redis_memory_reports_foreign_keys_clears_only_the_service_cache_and_applies_maxmemory(lab, stack):
    # 110,000 keys of someone else's, 1 KiB each (about 2 KiB each in Redis): about 88 % of the lab's 256 MB.
    fill = (
        "python3 -c \"import sys; v = 'x' * 1024; "
        "sys.stdout.write(''.join(f'SET foreign:{i} {v}\\r\\n' for i in range(110000)))\""
        f" | {REDIS} --pipe > /dev/null"
    )
    on_mq1(lab, fill, timeout=300)
    # And 50 cached query results of the service's.
    on_mq1(lab, f"{REDIS} EVAL \"for i=1,50 do redis.call('SET', 'audit:q:fill:' .. i, 'v') end\" 0")
    try:
        run = lab.runbook("playbooks/runbooks/redis/memory.yml")
        assert run.ok and run.changed == 0, run.describe()
        (memory,) = run.findings(host="mq1", check="memory")
        assert memory["severity"] in ("warning", "critical"), memory
        (usage,) = run.findings(host="mq1", check="memory_usage")
        keys = sum(db["keys"] for db in usage["evidence"]["keyspace"].values())
        assert keys >= 110_050 and usage["evidence"]["service_keys"]["by_prefix"]["audit:q"] >= 50, usage
        assert run.findings(host="mq1", check="redis_clear_cache")[0]["variable"] == "redis_clear_cache"

        cleared = lab.runbook("playbooks/runbooks/redis/memory.yml", extra_vars={"redis_clear_cache": True})
        assert cleared.ok and cleared.changed > 0, cleared.describe()
        assert cleared.findings(host="mq1", check="cache_cleared")[0]["remediation"], cleared.describe()
        assert on_mq1(lab, f"{REDIS} --scan --pattern 'audit:q:*' | wc -l").stdout.strip() == "0"
        assert on_mq1(lab, f"{REDIS} DBSIZE").stdout.strip() != "0"  # the foreign keys stay
        assert on_mq1(lab, f"{REDIS} GET foreign:7").stdout.strip() == "x" * 1024

        applied = lab.runbook(
            "playbooks/runbooks/redis/memory.yml",
            limit="audit_cache:localhost",
            extra_vars={"redis_apply": True, "redis_maxmemory": "768mb"},
        )
        assert applied.ok and applied.changed > 0, applied.describe()
        assert on_mq1(lab, f"{REDIS} CONFIG GET maxmemory").stdout.split()[-1] == str(768 * 2**20)
        assert applied.findings(host="mq1", check="settings_applied"), applied.describe()
    finally:
        on_mq1(lab, f"{REDIS} --scan --pattern 'foreign:*' | xargs -r -n 1000 {REDIS} UNLINK > /dev/null")
    wait_healthy()
    again = assert_changes_nothing(
        lab, "playbooks/runbooks/redis/memory.yml", extra_vars={"redis_clear_cache": True}
    )
    assert critical(again) == [], again.describe()
    # maxmemory stays (the test runs among the last, leaves_lab_changed): no converge back.


def stored(lab, tenant_id: str) -> int:
    sql = f"SELECT count(*) FROM audit_logs WHERE tenant_id = '{tenant_id}'"
    return int(lab.exec("db1", f'runuser -u postgres -- psql -d audit_logs -tAc "{sql}"').stdout.strip())


def test_nats_backlog_reports_the_stopped_workers_backlog_refuses_to_purge_it_and_drains_it_when_asked(
    lab, stack
):
    tenant_id, key = tenant_key(lab)
    for host in ("app1", "app2"):
        lab.exec(host, "systemctl stop audit-worker")
    try:
        for i in range(40):
            r = lablib.lb_request(
                "POST",
                "/api/v1/audit/logs",
                json={"actor": f"a{i}", "action": "queued"},
                headers={"X-API-Key": key},
            )
            assert r.status_code == 202, r.text
        run = lab.runbook("playbooks/runbooks/nats/backlog.yml")
        assert run.ok and run.changed == 0, run.describe()
        (backlog,) = run.findings(host="mq1", check="consumer_backlog")
        assert backlog["severity"] == "warning" and backlog["evidence"]["num_pending"] >= 40, backlog
        told = critical(run, check="backlog_restart_workers")
        assert {f["host"] for f in told} == {"app1", "app2"} and told[0][
            "variable"
        ] == "backlog_restart_workers"

        # A purge of the whole stream would lose the 40 events nobody has stored: refused.
        refused = lab.runbook("playbooks/runbooks/nats/backlog.yml", extra_vars={"backlog_purge": True})
        assert refused.ok and refused.changed == 0, refused.describe()
        (no,) = critical(refused, host="mq1", check="purge_refused")
        assert "purge_unacknowledged=true" in no["summary"], no
        assert stored(lab, tenant_id) == 0

        fixed = lab.runbook(
            "playbooks/runbooks/nats/backlog.yml", extra_vars={"backlog_restart_workers": True}
        )
        assert fixed.ok and fixed.changed > 0, fixed.describe()
        assert fixed.findings(host="mq1", check="backlog_drained"), fixed.describe()
        assert stored(lab, tenant_id) == 40
    finally:
        for host in ("app1", "app2"):
            lab.exec(host, "systemctl start audit-worker", check=False)
    again = assert_changes_nothing(
        lab, "playbooks/runbooks/nats/backlog.yml", extra_vars={"backlog_restart_workers": True}
    )
    assert critical(again) == [], again.describe()


# A client of NATS with the service's CA and a host certificate but a wrong password: TLS passes,
# the login does not (three tries, each a closed connection the broker remembers).
BAD_LOGIN = """\
import asyncio, ssl
import nats

async def main():
    tls = ssl.create_default_context(cafile="/etc/audit-service/tls/ca.crt")
    tls.load_cert_chain("/etc/audit-service/tls/server.crt", "/etc/audit-service/tls/server.key")
    for _ in range(3):
        try:
            await nats.connect("tls://mq1:4222", user="audit-api", password="not-the-password", tls=tls,
                               allow_reconnect=False, max_reconnect_attempts=0, connect_timeout=3)
        except Exception as exc:
            print(exc, flush=True)

asyncio.run(main())
"""


def test_nats_connections_name_a_stopped_broker_and_the_client_with_a_bad_password_and_start_it_when_asked(
    lab, stack
):
    lab.put("app2", "/root/bad_login.py", BAD_LOGIN)
    refused = lab.exec("app2", "/opt/audit-service/bin/python /root/bad_login.py 2>/dev/null").stdout
    assert refused.count("Authorization Violation") == 3, refused
    app2 = lab.exec("app2", "hostname -i").stdout.split()[0]
    lab.exec("mq3", "systemctl stop nats-server")
    try:
        run = lab.runbook("playbooks/runbooks/nats/connections.yml")
        assert run.ok and run.changed == 0, run.describe()
        (down,) = critical(run, host="mq3", check="nats_restart")
        assert "not running" in down["summary"], down
        short = [f for f in run.findings(check="routes") if f["host"] in ("mq1", "mq2")]
        assert len(short) == 2 and "reaches 1 other server" in short[0]["summary"], run.describe()
        (failing,) = run.findings(host="mq1", check="failing_clients")
        assert f"{app2} as audit-api" in failing["summary"], failing

        fixed = lab.runbook("playbooks/runbooks/nats/connections.yml", extra_vars={"nats_restart": True})
        assert fixed.ok and fixed.changed > 0, fixed.describe()
        assert fixed.findings(host="mq3", check="routes") == [], fixed.describe()
        (back,) = fixed.findings(host="mq3", check="connections")
        assert "routes to 2 of the 2" in back["summary"], back
    finally:
        lab.exec("mq3", "systemctl start nats-server", check=False)
    wait_active(lab, "mq3", "nats-server")
    wait_healthy()
    again = assert_changes_nothing(
        lab, "playbooks/runbooks/nats/connections.yml", extra_vars={"nats_restart": True}
    )
    assert critical(again) == [], again.describe()
