"""The guide's PostgreSQL sections as runbooks (playbooks/runbooks/postgres, database), each
against the fault it is for, injected for real on the converged lab and healed before the next test."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from audit_devtools import lab as lablib
from support.ingest import tenant_key
from support.runbooks import assert_changes_nothing, critical, wait_for, wait_healthy

pytestmark = pytest.mark.lab

PSQL = "runuser -u postgres -- psql -d audit_logs -tAc"
SERVICE_PYTHON = "set -a; . /etc/audit-service/audit-service.env; set +a; /opt/audit-service/bin/python"

# Opens the service's own login (its DATABASE_URL, over TLS) until PostgreSQL refuses one more,
# then holds every connection idle: a client that leaks its connections.
LEAK = """\
import asyncio, os
import asyncpg

async def main():
    conns = []
    while True:
        try:
            conns.append(await asyncpg.connect(
                os.environ["DATABASE_URL"], server_settings={"application_name": "leaky-client"}))
        except Exception as exc:
            print(len(conns), type(exc).__name__, flush=True)
            break
    await asyncio.sleep(900)

asyncio.run(main())
"""

# One more connection, as a new API process would open it: "ok", or the server's refusal.
CONNECT = """\
import asyncio, os
import asyncpg

async def main():
    try:
        await (await asyncpg.connect(os.environ["DATABASE_URL"])).close()
        print("ok")
    except Exception as exc:
        print(type(exc).__name__)

asyncio.run(main())
"""


def sql(lab, query: str) -> str:
    return lab.exec("db1", f'{PSQL} "{query}"').stdout.strip()


def leaked_sessions(lab) -> int:
    return int(sql(lab, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'leaky-client'"))


def new_connection(lab) -> str:
    return lab.exec("app2", f"{SERVICE_PYTHON} /root/connect.py").stdout.strip()


def test_connection_pool_names_the_leaking_client_and_ends_its_sessions_only_when_asked(lab, stack):
    lab.put("app1", "/root/leak.py", LEAK)
    lab.put("app2", "/root/connect.py", CONNECT)
    lab.exec("app1", f"{SERVICE_PYTHON} /root/leak.py > /root/leak.out 2>&1 < /dev/null & echo")
    try:
        wait_for(
            lambda: lab.exec("app1", "cat /root/leak.out").stdout.strip(), 60, "the leak to fill the slots"
        )
        held = leaked_sessions(lab)
        assert held > 50, held
        assert new_connection(lab) == "TooManyConnectionsError"
        # Idle for over 2 s, the threshold of these runs.
        idle = "SELECT min(now() - state_change) > interval '2 s' FROM pg_stat_activity"
        wait_for(
            lambda: sql(lab, f"{idle} WHERE application_name = 'leaky-client'") == "t", 30, "idle sessions"
        )
        extra = {"pool_idle_seconds": 2}

        run = lab.runbook("playbooks/runbooks/postgres/connection_pool.yml", extra_vars=extra)
        assert run.ok and run.changed == 0, run.describe()
        (full,) = run.findings(host="db1", check="connections")
        assert full["severity"] in ("warning", "critical") and "leaky-client" in full["summary"], full
        (leak,) = [f for f in run.findings(host="db1", check="idle") if "leaky-client" in f["summary"]]
        assert f"{held} sessions" in leak["summary"] and leak["remediation"] is None, leak
        told = run.findings(host="db1", check="pool_terminate")
        assert told and told[0]["variable"] == "pool_terminate", run.describe()
        assert leaked_sessions(lab) == held  # without its variable nobody is ended

        fixed = lab.runbook(
            "playbooks/runbooks/postgres/connection_pool.yml", extra_vars={**extra, "pool_terminate": True}
        )
        assert fixed.ok and fixed.changed > 0, fixed.describe()
        (ended,) = [f for f in fixed.findings(host="db1", check="idle") if "leaky-client" in f["summary"]]
        assert ended["remediation"].startswith("ended pid"), ended
        freed = fixed.findings(host="db1", check="connections_freed")
        assert freed and freed[0]["remediation"], fixed.describe()
        assert leaked_sessions(lab) == 0
        assert new_connection(lab) == "ok"
        # The service's own pools were left alone: its sessions are still there.
        assert int(sql(lab, "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'audit-api'")) > 0
    finally:
        lab.exec("app1", "pkill -f /root/leak.py", check=False)
    wait_healthy()
    again = assert_changes_nothing(
        lab, "playbooks/runbooks/postgres/connection_pool.yml", extra_vars={"pool_terminate": True}
    )
    assert critical(again) == [], again.describe()


def consumer_drained(lab) -> bool:
    """The worker's consumer has nothing pending and nothing awaiting its ack (on the leader's view)."""
    for host in ("mq1", "mq2", "mq3"):
        jsz = lab.exec(host, "curl -fsS 'http://127.0.0.1:8222/jsz?consumers=true'", check=False)
        if jsz.returncode != 0:
            continue
        for account in json.loads(jsz.stdout).get("account_details", []):
            for stream in account.get("stream_detail", []):
                for c in stream.get("consumer_detail", []):
                    if c.get("cluster", {}).get("leader") == host:
                        return c["num_pending"] == 0 and c["num_ack_pending"] == 0
    return False


def test_lock_contention_names_the_blocker_of_the_workers_inserts_and_ends_it_only_when_asked(lab, stack):
    tenant_id, key = tenant_key(lab)
    # A session of an operator's, idle in a transaction that holds the tenant's chain head: every
    # insert of the tenant's events waits for it.
    hold = f"BEGIN; SELECT seq FROM chain_heads WHERE tenant_id = '{tenant_id}' FOR UPDATE;"
    lab.exec(
        "db1", f'(echo "{hold}"; sleep 600) | runuser -u postgres -- psql -d audit_logs -q >/dev/null 2>&1 &'
    )
    try:
        waiting = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
        holder_sql = (
            "SELECT pid FROM pg_stat_activity WHERE state = 'idle in transaction' AND usename = 'postgres'"
        )
        holder = int(wait_for(lambda: sql(lab, holder_sql), 30, "the holding session"))
        ids = []
        for i in range(5):
            r = lablib.lb_request(
                "POST",
                "/api/v1/audit/logs",
                json={"actor": f"a{i}", "action": "locked"},
                headers={"X-API-Key": key},
            )
            assert r.status_code == 202, r.text
            ids.append(r.json()["id"])
        wait_for(lambda: sql(lab, waiting) != "0", 60, "the worker to wait for the lock")
        blocked = (
            f"SELECT min(now() - query_start) > interval '2 s' FROM ({waiting.replace('count(*)', '*')}) w"
        )
        wait_for(lambda: sql(lab, blocked) == "t", 30, "a wait of over 2 s")
        extra = {"lock_blocking_seconds": 2}

        run = lab.runbook("playbooks/runbooks/database/lock_contention.yml", extra_vars=extra)
        assert run.ok and run.changed == 0, run.describe()
        pairs = [
            f for f in run.findings(host="db1", check="lock_wait") if f"by pid {holder} " in f["summary"]
        ]
        assert pairs, run.describe()
        pair = pairs[0]["evidence"]
        assert "chain_heads" in pair["blocked_query"], pair  # the worker's append, waiting
        assert (
            pair["waiting_mode"] and pair["blocking_mode"] and pair["blocking_state"] == "idle in transaction"
        )
        (blocker,) = critical(run, host="db1", check="blocking")
        assert f"(pid {holder})" in blocker["summary"] and blocker["remediation"] is None, blocker
        assert critical(run, host="db1", check="lock_terminate")[0]["variable"] == "lock_terminate"
        assert sql(lab, f"SELECT count(*) FROM pg_stat_activity WHERE pid = {holder}") == "1"

        fixed = lab.runbook(
            "playbooks/runbooks/database/lock_contention.yml", extra_vars={**extra, "lock_terminate": True}
        )
        assert fixed.ok and fixed.changed > 0, fixed.describe()
        (ended,) = critical(fixed, host="db1", check="blocking")
        assert ended["remediation"] == f"ended pid {holder} (pg_terminate_backend)", ended
        # The runbook waited until the backlog was gone: every event is stored, none pending.
        assert fixed.findings(check="backlog_drained"), fixed.describe()
        assert consumer_drained(lab)
        stored = sql(lab, f"SELECT count(*) FROM audit_logs WHERE tenant_id = '{tenant_id}'")
        assert stored == str(len(ids)), stored
    finally:
        lab.exec("db1", "pkill -f 'sleep 600'", check=False)
    again = assert_changes_nothing(
        lab, "playbooks/runbooks/database/lock_contention.yml", extra_vars={"lock_terminate": True}
    )
    assert critical(again) == [], again.describe()


def chained_rows(tenant_id: str, times: list[datetime]) -> tuple[str, str]:
    """INSERTs of one tenant's chain (seq 1..n at `times`), hashed as the worker hashes them
    (audit_service.chain, version 2); returns (the SQL, the last hash)."""
    from audit_service import chain

    prev, values = chain.GENESIS_HASH, []
    for seq, at in enumerate(times, start=1):
        event = {
            "tenant_id": tenant_id,
            "event_id": str(uuid.uuid4()),
            "created_at": at,
            "occurred_at": at,
            "actor": f"old-{seq}",
            "action": "archived",
            "target": None,
            "outcome": "success",
            "source_ip": None,
            "user_agent": None,
            "metadata": None,
            "correlation_id": None,
            "principal": None,
        }
        digest = chain.link_canonical(prev, seq, chain.canonical(event, 2))
        values.append(
            f"('{tenant_id}', {seq}, '{event['event_id']}', '{at.isoformat()}', '{at.isoformat()}',"
            f" '{event['actor']}', 'archived', 'success', 0, '{prev}', '{digest}', 2)"
        )
        prev = digest
    columns = "tenant_id, seq, event_id, created_at, occurred_at, actor, action, outcome, stream_seq"
    return (
        f"INSERT INTO audit_logs ({columns}, prev_hash, hash, chain_version) VALUES {', '.join(values)};",
        prev,
    )


def test_disk_space_reports_sizes_and_applies_retention_only_when_asked_and_the_chain_still_verifies(
    lab, stack
):
    tenant_id, key = tenant_key(lab)
    now = datetime.now(UTC).replace(microsecond=0)
    old = [now - timedelta(days=120, minutes=i) for i in range(30, 0, -1)]  # past the lab's 90 days
    recent = [now - timedelta(days=1, minutes=i) for i in range(10, 0, -1)]
    insert, head = chained_rows(tenant_id, old + recent)
    month = old[0].replace(day=1, hour=0, minute=0, second=0)
    partition = f"audit_logs_p{month:%Y_%m}"
    load = (
        f"SELECT audit_create_partition('{month.isoformat()}'); {insert}"
        f" UPDATE chain_heads SET seq = 40, hash = '{head}' WHERE tenant_id = '{tenant_id}';"
    )
    lab.put("db1", "/root/old_rows.sql", load)
    lab.exec("db1", "runuser -u postgres -- psql -d audit_logs -q -v ON_ERROR_STOP=1 < /root/old_rows.sql")

    def verify() -> dict:
        r = lablib.lb_request("GET", "/api/v1/audit/verify", headers={"X-API-Key": key}, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()

    assert verify()["valid"] is True and verify()["checked"] == 40
    # All that is past the window (these 30 rows, and any an earlier run left behind).
    past = int(sql(lab, "SELECT count(*) FROM audit_logs WHERE created_at < now() - interval '90 days'"))
    assert past >= 30, past
    run = lab.runbook("playbooks/runbooks/postgres/disk_space.yml")
    assert run.ok and run.changed == 0, run.describe()
    (sizes,) = run.findings(host="db1", check="sizes")
    assert "audit_logs" in sizes["summary"] and sizes["evidence"]["tables"], sizes
    (would,) = run.findings(check="retention")
    assert would["evidence"]["removed_rows"] == past and would["evidence"]["dry_run"] is True, would
    assert run.findings(check="disk_space_apply_retention")[0]["variable"] == "disk_space_apply_retention"
    assert sql(lab, f"SELECT count(*) FROM audit_logs WHERE tenant_id = '{tenant_id}'") == "40"

    applied = lab.runbook(
        "playbooks/runbooks/postgres/disk_space.yml", extra_vars={"disk_space_apply_retention": True}
    )
    assert applied.ok and applied.changed > 0, applied.describe()
    (done,) = applied.findings(check="retention")
    assert done["evidence"]["removed_rows"] == past and done["remediation"], done
    assert partition in [p["name"] for p in done["evidence"]["dropped_partitions"]], done
    # The newer rows are untouched, and the chain still verifies from its anchor.
    assert sql(lab, f"SELECT count(*) FROM audit_logs WHERE tenant_id = '{tenant_id}'") == "10"
    assert sql(lab, f"SELECT count(*) FROM pg_class WHERE relname = '{partition}'") == "0"
    result = verify()
    assert result["valid"] is True and result["checked"] == 10, result
    again = assert_changes_nothing(
        lab, "playbooks/runbooks/postgres/disk_space.yml", extra_vars={"disk_space_apply_retention": True}
    )
    assert critical(again) == [], again.describe()


# The slow pattern of the slow-queries test: a filter on an unindexed column of a scratch table in
# the service's database, 20 times (one entry of pg_stat_statements, its constant a $1).
SLOW_ROWS = 200_000
SLOW_CALLS = 20
SLOW_QUERY = "SELECT count(*) FROM slow_demo WHERE code = $1"


def test_slow_queries_names_the_statement_its_plan_and_index_and_makes_it_and_resets_when_asked(lab, stack):
    lab.exec(
        "db1",
        f'{PSQL} "CREATE TABLE slow_demo (id int PRIMARY KEY, code int NOT NULL, note text NOT NULL);'
        f" INSERT INTO slow_demo SELECT g, g % 50000, md5(g::text) FROM generate_series(1, {SLOW_ROWS}) g;"
        ' ANALYZE slow_demo"',
        timeout=300,
    )
    try:
        sql(lab, "SELECT pg_stat_statements_reset()")
        sql(lab, " ".join(f"SELECT count(*) FROM slow_demo WHERE code = {i};" for i in range(SLOW_CALLS)))
        # A seq scan of 200,000 rows takes milliseconds: a threshold under it, and only the
        # statements run as often as this one (not the service's own).
        extra = {"slow_queries_min_mean_ms": 1, "slow_queries_min_calls": SLOW_CALLS}

        run = lab.runbook("playbooks/runbooks/database/slow_queries.yml", extra_vars=extra)
        assert run.ok and run.changed == 0, run.describe()
        (slow,) = [f for f in run.findings(host="db1", check="slow_statement") if SLOW_QUERY in f["summary"]]
        ev = slow["evidence"]
        assert slow["severity"] == "warning" and ev["calls"] == SLOW_CALLS and ev["mean_ms"] > 0, slow
        assert ev["total_ms"] >= ev["mean_ms"] and ev["database"] == "audit_logs", ev
        # PostgreSQL 17 on db1 (trixie): the generic plan of the statement, never run.
        assert ev["plan_method"] == "generic_plan" and "Seq Scan on public.slow_demo" in ev["plan"], ev
        index = "CREATE INDEX CONCURRENTLY IF NOT EXISTS slow_demo_code_idx ON public.slow_demo (code)"
        assert ev["suggested_indexes"] == [index], ev
        (missing,) = [
            f for f in run.findings(host="db1", check="missing_index") if "slow_demo" in f["summary"]
        ]
        assert "public.slow_demo (code)" in missing["summary"] and missing["remediation"] is None, missing
        told = run.findings(host="db1", check="slow_queries_create_indexes")
        assert told and told[0]["variable"] == "slow_queries_create_indexes", run.describe()
        reset = run.findings(host="db1", check="slow_queries_reset_statistics")
        assert reset and reset[0]["variable"] == "slow_queries_reset_statistics", run.describe()
        assert sql(lab, "SELECT count(*) FROM pg_indexes WHERE indexname = 'slow_demo_code_idx'") == "0"

        fixed = lab.runbook(
            "playbooks/runbooks/database/slow_queries.yml",
            extra_vars={**extra, "slow_queries_create_indexes": True, "slow_queries_reset_statistics": True},
        )
        assert fixed.ok and fixed.changed > 0, fixed.describe()
        (made,) = [
            f for f in fixed.findings(host="db1", check="missing_index") if "slow_demo" in f["summary"]
        ]
        assert made["remediation"].startswith("created slow_demo_code_idx"), made
        valid = "SELECT indisvalid FROM pg_index WHERE indexrelid = 'public.slow_demo_code_idx'::regclass"
        assert sql(lab, valid) == "t"
        after = fixed.findings(host="db1", check="slow_statement")
        (slow,) = [f for f in after if SLOW_QUERY in f["summary"]]
        assert "slow_demo_code_idx" in slow["evidence"]["plan_after"], slow
        assert fixed.findings(host="db1", check="statistics_reset"), fixed.describe()
        assert sql(lab, "SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%slow_demo WHERE%'") == "0"
    finally:
        sql(lab, "DROP TABLE IF EXISTS slow_demo")
    again = assert_changes_nothing(
        lab,
        "playbooks/runbooks/database/slow_queries.yml",
        extra_vars={"slow_queries_create_indexes": True, "slow_queries_reset_statistics": True},
    )
    assert critical(again) == [], again.describe()
