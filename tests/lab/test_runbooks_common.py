"""The guide's Common Issues as runbooks (playbooks/runbooks/common), each against the fault it is
for, injected for real on the converged lab and healed before the next test."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from audit_devtools import lab as lablib
from support import APP_HOSTS
from support.ingest import (
    Sender,
    assert_restarted_in_turn,
    assert_stored_once,
    service_invocations,
    tenant_key,
)
from support.runbooks import assert_changes_nothing, critical, redis_cli, wait_active, wait_healthy

pytestmark = pytest.mark.lab


def test_services_wont_start_ends_a_foreign_process_on_the_api_port_only_when_asked(lab, stack):
    lab.exec("app1", "systemctl stop audit-api")
    lab.exec("app1", "setsid python3 -m http.server 8000 >/dev/null 2>&1 < /dev/null &")
    try:
        run = lab.runbook("playbooks/runbooks/common/services_wont_start.yml", limit="app1")
        taken = critical(run, host="app1", component="api", check="port_owner")
        assert taken and "http.server" in taken[0]["summary"] and "pid" in taken[0]["summary"], run.describe()
        assert critical(run, host="app1", check="port_taken"), run.describe()
        # Without its variable the process lives on, and the API stays down.
        assert lab.exec("app1", "pgrep -f '[h]ttp.server 8000'", check=False).returncode == 0

        fixed = lab.runbook(
            "playbooks/runbooks/common/services_wont_start.yml",
            limit="app1",
            extra_vars={"services_kill_foreign": True},
        )
        assert fixed.ok and fixed.changed > 0, fixed.describe()
        ended = [f for f in critical(fixed, host="app1", check="port_owner") if f["remediation"]]
        assert ended, fixed.describe()
        assert lab.exec("app1", "pgrep -f '[h]ttp.server 8000'", check=False).returncode != 0
        assert lab.exec("app1", "systemctl is-active audit-api").stdout.strip() == "active"
    finally:
        lab.exec("app1", "pkill -f '[h]ttp.server 8000'; systemctl start audit-api", check=False)
    wait_healthy()
    again = assert_changes_nothing(lab, "playbooks/runbooks/common/services_wont_start.yml", limit="app1")
    assert critical(again) == [], again.describe()


def test_services_wont_start_gives_postgresqls_data_directory_back_and_starts_it(lab, stack):
    data_dir = lab.exec("db1", "ls -d /var/lib/postgresql/*/main").stdout.strip()
    unit = "postgresql@$(ls /etc/postgresql)-main"
    lab.exec("db1", f"systemctl stop {unit}; chown -R root:root {data_dir}; chmod 0755 {data_dir}")
    try:
        run = lab.runbook("playbooks/runbooks/common/services_wont_start.yml", limit="db1")
        assert run.ok and run.changed > 0, run.describe()
        wrong = critical(run, host="db1", component="postgresql", check="data_dir_permissions")
        assert wrong and "root:root" in wrong[0]["summary"] and wrong[0]["remediation"], run.describe()
        owner = lab.exec("db1", f"stat -c '%U:%G %a' {data_dir}").stdout.split()
        assert owner == ["postgres:postgres", "700"], owner
        assert lab.exec("db1", f"find {data_dir} ! -user postgres | head -1").stdout.strip() == ""
        assert (
            lab.exec("db1", "systemctl is-active postgresql@$(ls /etc/postgresql)-main").stdout.strip()
            == "active"
        )
    finally:
        lab.exec("db1", f"chown -R postgres:postgres {data_dir}; chmod 0700 {data_dir}", check=False)
        lab.exec("db1", "systemctl start postgresql@$(ls /etc/postgresql)-main", check=False)
    wait_healthy()
    again = assert_changes_nothing(lab, "playbooks/runbooks/common/services_wont_start.yml", limit="db1")
    assert critical(again) == [], again.describe()


def test_services_wont_start_names_the_bad_setting_of_a_crash_looping_unit(lab, stack):
    env_file = "/etc/audit-service/audit-worker.env"
    lab.exec("app2", f"cp {env_file} /root/worker.env.good && echo DATABASE_POOL_SIZE=lots >> {env_file}")
    lab.exec("app2", "systemctl restart audit-worker", check=False)
    try:
        run = lab.runbook("playbooks/runbooks/common/services_wont_start.yml", limit="app2")
        looping = critical(run, host="app2", component="worker")
        assert looping, run.describe()
        evidence = " ".join(str(f["evidence"]) for f in looping)
        assert "DATABASE_POOL_SIZE" in evidence, run.describe()
    finally:
        # Past its start limit after the crash loop: reset, then restart.
        lab.exec("app2", f"cp /root/worker.env.good {env_file} && systemctl reset-failed audit-worker")
        lab.exec("app2", "systemctl restart audit-worker")
    wait_active(lab, "app2", "audit-worker")
    again = assert_changes_nothing(lab, "playbooks/runbooks/common/services_wont_start.yml", limit="app2")
    assert critical(again) == [], again.describe()


def test_database_connection_starts_postgresql_and_resets_a_changed_password_only_when_asked(lab, stack):
    lab.exec("db1", "systemctl stop postgresql@$(ls /etc/postgresql)-main")
    started = lab.runbook(
        "playbooks/runbooks/common/database_connection.yml", extra_vars={"database_amcheck": False}
    )
    assert started.ok and started.changed > 0, started.describe()
    assert critical(started, host="db1", component="postgresql"), started.describe()
    assert (
        lab.exec("db1", "systemctl is-active postgresql@$(ls /etc/postgresql)-main").stdout.strip()
        == "active"
    )
    wait_healthy()

    lab.exec("db1", "runuser -u postgres -- psql -qc \"ALTER ROLE audit_user PASSWORD 'not-the-secret'\"")
    try:
        refused = lab.runbook(
            "playbooks/runbooks/common/database_connection.yml", extra_vars={"database_amcheck": False}
        )
        assert refused.ok and refused.changed == 0, refused.describe()
        told = critical(refused, host="db1", check="service_password")
        assert told and told[0]["variable"] == "database_reset_password", refused.describe()
        links = critical(refused, host="app1", component="postgresql")
        assert any("28P01" in str(f) for f in links), refused.describe()
    finally:
        reset = lab.runbook(
            "playbooks/runbooks/common/database_connection.yml", extra_vars={"database_reset_password": True}
        )
    assert reset.ok and reset.changed > 0, reset.describe()
    assert [f for f in critical(reset, host="db1", check="service_password") if f["remediation"]], (
        reset.describe()
    )
    amcheck = reset.findings(host="db1", check="amcheck")
    assert amcheck and amcheck[0]["severity"] == "info", reset.describe()
    wait_healthy()
    again = assert_changes_nothing(
        lab, "playbooks/runbooks/common/database_connection.yml", extra_vars={"database_amcheck": False}
    )
    assert critical(again) == [], again.describe()


def test_high_memory_names_a_hungry_foreign_process_and_clears_only_the_service_cache(lab, stack):
    # A tenth of the host's memory (the lab host's is the machine's), named from 5 % on.
    tenth = "int(open('/proc/meminfo').read().split()[1]) * 102"
    hog = f'python3 -c "import time; b = bytearray({tenth}); time.sleep(600)"'
    lab.exec("app1", f"setsid {hog} >/dev/null 2>&1 < /dev/null &")
    # Some cached query results, and a key of someone else's that must survive.
    _, key = tenant_key(lab)
    for _ in range(3):
        lablib.lb_request("GET", "/api/v1/audit/logs", headers={"X-API-Key": key})
    redis = redis_cli(lab)
    lab.exec("mq1", f"{redis} SET foreign:key keep >/dev/null")
    try:
        run = lab.runbook(
            "playbooks/runbooks/common/high_memory.yml",
            extra_vars={"high_memory_clear_cache": True, "high_memory_process_percent": 5},
        )
        assert run.ok, run.describe()
        hungry = [f for f in run.findings(host="app1", check="top_consumer") if "bytearray" in f["summary"]]
        assert hungry and "pid" in hungry[0]["summary"], run.describe()
        cleared = run.findings(host="mq1", check="cache_cleared")
        assert cleared and cleared[0]["remediation"], run.describe()
        left = lab.exec("mq1", f"{redis} --scan --pattern 'audit:q:*' | wc -l").stdout.strip()
        assert left == "0", left
        assert lab.exec("mq1", f"{redis} GET foreign:key").stdout.strip() == "keep"
    finally:
        lab.exec("app1", "pkill -f '[b]ytearray'", check=False)
        lab.exec("mq1", f"{redis} DEL foreign:key >/dev/null", check=False)
    again = assert_changes_nothing(
        lab, "playbooks/runbooks/common/high_memory.yml", extra_vars={"high_memory_clear_cache": True}
    )
    assert critical(again) == [], again.describe()


@pytest.mark.leaves_lab_changed
def test_high_memory_applies_pool_and_memory_limits_restarting_the_app_hosts_in_turn_while_ingest_answers(
    lab, stack
):
    """The runbook applies its settings through site.yml, so this is also the proof of the
    deployment's rolling restart (docs/deployment.md): each app host's units restart in turn, no
    request through nginx fails, and every acknowledged event is stored once."""
    settings = {
        "audit_database_pool_size": 3,
        "audit_api_memory_max": "768M",
        "audit_worker_memory_max": "512M",
    }
    tenant_id, key = tenant_key(lab)
    before = service_invocations(lab, APP_HOSTS)
    sender = Sender(key)
    sender.start()
    try:
        deadline = time.monotonic() + 30
        while len(sender.acked) < 10 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sender.acked, f"ingest did not start: {sender.failures[:5]}"
        extra = {"high_memory_apply": True, **settings}
        run = lab.runbook(
            "playbooks/runbooks/common/high_memory.yml",
            limit="audit_api:audit_worker:audit_cache:localhost",
            extra_vars=extra,
        )
        acked_during = len(sender.acked)
    finally:
        sender.stopped.set()
        sender.join(60)
    assert run.ok and run.changed > 0, run.describe()
    assert_restarted_in_turn(lab, before)
    assert sender.failures == [], sender.failures[:10]
    assert acked_during > 50, "too little ingest during the rolling restart to show anything"
    assert_stored_once(lab, tenant_id, sender.acked)
    named = run.findings(host="app1", check="settings_applied")
    assert named and "audit_database_pool_size" in named[0]["variable"], run.describe()
    for host in APP_HOSTS:
        env = lab.exec(host, "cat /etc/audit-service/audit-service.env").stdout
        assert "DATABASE_POOL_SIZE=3" in env, env
        assert lab.exec(host, "systemctl show -p MemoryMax --value audit-api").stdout.strip() == str(
            768 * 2**20
        )
    # The settings stay (the test runs among the last, leaves_lab_changed): no converge back.
    wait_healthy()


# The large table of the API-timeouts test: one tenant's rows in this month's partition, over its
# first 1,000 seconds (so they need no partition of their own), placeholders for the chain: the rows
# are removed again at the end, and no test verifies this tenant.
LARGE_TABLE_ROWS = 300_000
MONTH_START = "date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"


def uses_tenant_created_index(lab, psql: str, tenant_id: str, since: datetime) -> bool:
    """Whether the planner serves the API's list query for the tenant's window from the
    (tenant_id, created_at) index (on the partition its name is <partition>_tenant_id_created_at_idx)."""
    until = since + timedelta(seconds=1)
    query = (
        f"EXPLAIN SELECT seq FROM audit_logs WHERE tenant_id = '{tenant_id}'"
        f" AND created_at >= '{since.isoformat()}' AND created_at < '{until.isoformat()}'"
        " ORDER BY seq DESC LIMIT 51"
    )
    plan = lab.exec("db1", f'{psql} "{query}"').stdout
    return "tenant_id_created_at_idx" in plan or "idx_audit_logs_tenant_created" in plan


def test_api_timeouts_finds_a_dropped_index_under_a_large_table_and_rebuilds_it(lab, stack):
    psql = "runuser -u postgres -- psql -d audit_logs -tAc"
    tenant_id, key = tenant_key(lab)
    load = (
        "INSERT INTO audit_logs (tenant_id, seq, event_id, created_at, occurred_at, actor, action, outcome,"
        " stream_seq, prev_hash, hash)"
        f" SELECT '{tenant_id}', g, gen_random_uuid(), {MONTH_START} + (g % 1000) * interval '1 second',"
        f" now(), 'load', 'read', 'success', 0, 'load', 'load' FROM generate_series(1, {LARGE_TABLE_ROWS}) g"
    )
    lab.exec("db1", f'{psql} "{load}"', timeout=600)
    lab.exec("db1", f"{psql} 'DROP INDEX idx_audit_logs_tenant_created'")
    try:
        lab.exec("db1", f"{psql} 'ANALYZE audit_logs'", timeout=600)
        # A window of this month that holds none of the tenant's rows.
        month = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        since = month + timedelta(seconds=2000)
        assert not uses_tenant_created_index(lab, psql, tenant_id, since)
        # From here pg_stat_statements times the API's list query (the load and ANALYZE left out).
        lab.exec("db1", f"{psql} 'SELECT pg_stat_statements_reset()'")
        for i in range(5):  # windows of their own: none is answered from the service's cache
            until = since + timedelta(seconds=1, milliseconds=i)
            window = {"since": since.isoformat(), "until": until.isoformat()}
            r = lablib.lb_request(
                "GET", "/api/v1/audit/logs", params=window, headers={"X-API-Key": key}, timeout=60
            )
            assert r.status_code == 200 and r.json()["items"] == [], r.text
        run = lab.runbook("playbooks/runbooks/common/api_timeouts.yml")
        assert run.ok and run.changed == 0, run.describe()
        missing = critical(run, host="db1", check="missing_index")
        assert [f for f in missing if "idx_audit_logs_tenant_created" in f["summary"]], run.describe()
        assert "(tenant_id, created_at)" in missing[0]["evidence"]["definition"]
        top = run.findings(host="db1", check="top_statements")
        assert top, run.describe()
        listed = [
            s
            for s in top[0]["evidence"]["top"]
            if "FROM audit_logs" in s["query"] and "created_at >=" in s["query"]
        ]
        assert listed and listed[0]["calls"] >= 5 and listed[0]["mean_ms"] > 0, top[0]["evidence"]
        timing = [f for f in run.report["findings"] if f["host"] in ("app1", "lb1")]
        assert timing == [] or all(f["severity"] != "critical" for f in timing), run.describe()

        fixed = lab.runbook(
            "playbooks/runbooks/common/api_timeouts.yml", extra_vars={"api_timeouts_rebuild_indexes": True}
        )
        assert fixed.ok and fixed.changed > 0, fixed.describe()
        # Rebuilt and analysed: the planner takes the index for the tenant's window again.
        assert uses_tenant_created_index(lab, psql, tenant_id, since)
    finally:
        index = "idx_audit_logs_tenant_created ON audit_logs (tenant_id, created_at)"
        lab.exec("db1", f"{psql} 'CREATE INDEX IF NOT EXISTS {index}'", timeout=600)
        lab.exec("db1", f"{psql} \"DELETE FROM audit_logs WHERE tenant_id = '{tenant_id}'\"", timeout=600)
    definition = lab.exec(
        "db1", f"{psql} \"SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_audit_logs_tenant_created'\""
    )
    assert "(tenant_id, created_at)" in definition.stdout, definition.stdout
    recent = "last_analyze > now() - interval '15 minutes'"
    sql = f"SELECT count(*) FROM pg_stat_user_tables WHERE relname LIKE 'audit_logs%' AND {recent}"
    assert int(lab.exec("db1", f'{psql} "{sql}"').stdout.strip()) > 0, "ANALYZE did not run"
    again = assert_changes_nothing(
        lab, "playbooks/runbooks/common/api_timeouts.yml", extra_vars={"api_timeouts_rebuild_indexes": True}
    )
    assert critical(again) == [], again.describe()
