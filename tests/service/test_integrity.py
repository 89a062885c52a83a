"""Tamper evidence, chains under concurrent workers, partitions, retention and migrations."""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import threading
import uuid
from datetime import UTC, datetime, timedelta
from unittest import mock

import asyncpg
import httpx
import pytest
from audit_devtools.stack import VENV_BIN, Service, run_cli
from audit_service import chain, db, store
from conftest import Client, sql, stored_count, wait_stored


def ev(i: int, **over):
    return {"actor": f"user-{i}", "action": "record.update", "target": f"rec-{i}", **over}


def fill(service, tenant: Client, n: int) -> list[dict]:
    assert tenant.batch([ev(i, metadata={"i": i, "f": i / 4}) for i in range(n)]).status_code == 202
    wait_stored(service, tenant.tenant_id, n)
    return sql(
        service.database_url,
        "SELECT seq, event_id FROM audit_logs WHERE tenant_id = $1 ORDER BY seq",
        tenant.tenant_id,
    )


def first_stream_seq(service, tenant: Client) -> int:
    """The stream sequence of the tenant's first stored message: where its replay starts."""
    return sql(
        service.database_url,
        "SELECT min(stream_seq) AS s FROM audit_logs WHERE tenant_id = $1",
        tenant.tenant_id,
    )[0]["s"]


def test_verify_finds_a_row_changed_with_sql(service, tenant):
    rows = fill(service, tenant, 20)
    assert tenant.verify()["valid"]
    victim = rows[7]
    sql(
        service.database_url,
        "UPDATE audit_logs SET actor = 'mallory' WHERE event_id = $1",
        victim["event_id"],
    )
    result = tenant.verify()
    assert result["valid"] is False
    assert result["first_invalid"] == str(victim["event_id"])
    assert result["checked"] == 8


def test_verify_finds_changed_metadata(service, tenant):
    rows = fill(service, tenant, 5)
    sql(
        service.database_url,
        """UPDATE audit_logs SET metadata = jsonb_set(metadata, '{i}', '99') WHERE event_id = $1""",
        rows[2]["event_id"],
    )
    assert tenant.verify()["first_invalid"] == str(rows[2]["event_id"])


def test_verify_finds_a_changed_principal(service, tenant):
    rows = fill(service, tenant, 5)
    victim = rows[3]["event_id"]
    stored = sql(
        service.database_url, "SELECT principal, chain_version FROM audit_logs WHERE event_id = $1", victim
    )[0]
    assert stored["chain_version"] == 2 and stored["principal"]
    sql(service.database_url, "UPDATE audit_logs SET principal = 'admin' WHERE event_id = $1", victim)
    result = tenant.verify()
    assert result["valid"] is False and result["first_invalid"] == str(victim) and result["checked"] == 4
    # Nor can the row pass for one from before principals (version 1 leaves the principal out).
    sql(
        service.database_url,
        "UPDATE audit_logs SET principal = NULL, chain_version = 1 WHERE event_id = $1",
        victim,
    )
    assert tenant.verify()["first_invalid"] == str(victim)
    sql(
        service.database_url,
        "UPDATE audit_logs SET principal = $2, chain_version = 2 WHERE event_id = $1",
        victim,
        stored["principal"],
    )
    assert tenant.verify()["valid"]


def test_verify_finds_a_row_deleted_from_the_middle(service, tenant):
    rows = fill(service, tenant, 20)
    sql(service.database_url, "DELETE FROM audit_logs WHERE event_id = $1", rows[10]["event_id"])
    result = tenant.verify()
    assert result["valid"] is False
    assert result["first_invalid"] == str(rows[11]["event_id"])
    assert "gap" in result["reason"]


def test_verify_finds_the_first_row_deleted(service, tenant):
    rows = fill(service, tenant, 5)
    sql(service.database_url, "DELETE FROM audit_logs WHERE event_id = $1", rows[0]["event_id"])
    result = tenant.verify()
    assert result["valid"] is False and result["first_invalid"] == str(rows[1]["event_id"])


def test_cutting_off_the_newest_rows_is_detected_and_visible_in_metrics(service, tenant):
    fill(service, tenant, 20)
    sql(service.database_url, "DELETE FROM audit_logs WHERE tenant_id = $1 AND seq > 15", tenant.tenant_id)
    result = tenant.verify()
    assert result["valid"] is False and "seq 20" in result["reason"]
    # The chain head stays exported: a monitoring system that saw seq 20 sees it still.
    text = httpx.get(f"{service.url}/api/v1/metrics").text
    assert any(
        f'tenant_id="{tenant.tenant_id}"' in line and line.endswith(" 20.0") for line in text.splitlines()
    )


def test_verify_a_time_window(service, tenant):
    rows = fill(service, tenant, 10)
    since = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    assert tenant.verify(since=since)["checked"] == 10
    sql(
        service.database_url,
        "UPDATE audit_logs SET outcome = 'failure' WHERE event_id = $1",
        rows[4]["event_id"],
    )
    assert tenant.verify(since=since)["first_invalid"] == str(rows[4]["event_id"])
    assert tenant.verify(until=(datetime.now(UTC) - timedelta(hours=1)).isoformat())["checked"] == 0


def test_concurrent_workers_never_fork_a_chain(stack):
    svc = Service(stack, "audit_concurrent", workers=3, WORKER_BATCH_SIZE="5").start()
    try:
        clients = [Client(svc.url, k, t) for t, k in (svc.tenant("c-a"), svc.tenant("c-b"))]
        errors: list[str] = []

        def send(client: Client, k: int) -> None:
            for j in range(20):
                r = client.batch([ev(k * 1000 + j * 10 + i) for i in range(10)])
                if r.status_code != 202:
                    errors.append(r.text)

        threads = [threading.Thread(target=send, args=(c, k)) for c in clients for k in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        for c in clients:
            wait_stored(svc, c.tenant_id, 600)
            seqs = sql(
                svc.database_url, "SELECT seq FROM audit_logs WHERE tenant_id = $1 ORDER BY seq", c.tenant_id
            )
            assert [r["seq"] for r in seqs] == list(range(1, 601))
            assert c.verify() == {"valid": True, "checked": 600, "first_invalid": None, "reason": None}
        # All three workers took part.
        stored_by = [w.log().count('"worker started"') for w in svc.workers]
        assert stored_by == [1, 1, 1]
    finally:
        svc.stop()


def test_partitions_and_index_exist(service):
    parts = sql(
        service.database_url,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'audit_logs' ORDER BY 1",
    )
    names = [r["relname"] for r in parts]
    now = datetime.now(UTC)
    ahead = db.month_start(now)
    expected = []
    for _ in range(3):  # this month and PARTITION_MONTHS_AHEAD=2 more
        expected.append(db.partition_name(ahead))
        ahead = db.next_month(ahead)
    assert set(expected) <= set(names)
    idx = sql(
        service.database_url,
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_audit_logs_tenant_created'",
    )
    assert "(tenant_id, created_at)" in idx[0]["indexdef"]


def test_retention_drops_old_partitions_deletes_boundary_rows_and_keeps_chains_verifiable(stack):
    svc = Service(stack, "audit_retention").start()
    try:
        tenant_id, key = svc.tenant("ret")
        c = Client(svc.url, key, tenant_id)
        assert c.batch([ev(i) for i in range(30)]).status_code == 202
        wait_stored(svc, tenant_id, 30)
        now = datetime.now(UTC)
        very_old, boundary_old = now - timedelta(days=200), now - timedelta(days=91)

        async def age_rows() -> None:
            conn = await asyncpg.connect(svc.database_url, server_settings={"TimeZone": "UTC"})
            try:
                await db.ensure_partitions(conn, very_old, 2)
                # Row movement across partitions: seq 1-10 become 200 days old, 11-20 91 days.
                await conn.execute(
                    "UPDATE audit_logs SET created_at = $2 WHERE tenant_id = $1 AND seq <= 10",
                    c.tenant_id,
                    very_old,
                )
                await conn.execute(
                    "UPDATE audit_logs SET created_at = $2::timestamptz + (seq || ' seconds')::interval "
                    "WHERE tenant_id = $1 AND seq BETWEEN 11 AND 20",
                    c.tenant_id,
                    boundary_old,
                )
            finally:
                await conn.close()

        asyncio.run(age_rows())
        before = sql(svc.database_url, "SELECT count(*) AS n FROM audit_logs")[0]["n"]
        dry = run_cli(svc.retention_env, "retention", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        dry_report = json.loads(dry.stdout)
        assert dry_report["dry_run"] and dry_report["removed_rows"] == 20
        assert (
            sql(svc.database_url, "SELECT count(*) AS n FROM audit_logs")[0]["n"] == before
        )  # nothing changed

        out = run_cli(svc.retention_env, "retention")
        assert out.returncode == 0, out.stderr
        report = json.loads(out.stdout)
        old_part = db.partition_name(db.month_start(very_old))
        assert old_part in [p["name"] for p in report["dropped_partitions"]]
        assert report["removed_rows"] == 20
        remaining = sql(
            svc.database_url, "SELECT seq FROM audit_logs WHERE tenant_id = $1 ORDER BY seq", tenant_id
        )
        assert [r["seq"] for r in remaining] == list(range(21, 31))
        assert c.verify() == {"valid": True, "checked": 10, "first_invalid": None, "reason": None}

        again = json.loads(run_cli(svc.retention_env, "retention").stdout)
        assert again["removed_rows"] == 0 and again["dropped_partitions"] == []

        # Deleting the oldest remaining row is still caught: the anchor names its predecessor.
        sql(svc.database_url, "DELETE FROM audit_logs WHERE tenant_id = $1 AND seq = 21", tenant_id)
        assert c.verify()["valid"] is False
    finally:
        svc.stop()


# The columns of audit_logs before migration 0004, as the worker of that release wrote them.
COLUMNS_BEFORE_0004 = [
    "tenant_id", "seq", "event_id", "created_at", "occurred_at", "actor", "action", "target", "outcome",
    "source_ip", "user_agent", "metadata", "correlation_id", "stream_seq", "prev_hash", "hash",
]  # fmt: skip


def test_a_chain_begun_before_principals_were_stored_goes_on_and_verifies(stack):
    """Rows of the release before migration 0004 (chain version 1, no principal), then the
    migration, then rows of this one (version 2, with their principal): one chain, verified whole
    and in windows, and a changed old row is still found."""
    svc = Service(stack, "audit_mixed_chain")
    older = [m for m in db.load_migrations() if m.version < 4]
    now = datetime.now(UTC)

    async def older_release() -> tuple[uuid.UUID, uuid.UUID, str]:
        conn = await asyncpg.connect(svc.database_url, server_settings={"TimeZone": "UTC"})
        try:
            with mock.patch.object(db, "load_migrations", lambda: older):
                await db.migrate(conn)
            tenant_id = await store.create_tenant(conn, "mixed")
            key_id, key = await store.create_api_key(conn, tenant_id)
            prev, records = chain.GENESIS_HASH, []
            for seq in range(1, 6):
                row = {
                    "tenant_id": tenant_id,
                    "seq": seq,
                    "event_id": uuid.uuid4(),
                    "created_at": now - timedelta(seconds=10 - seq),
                    "occurred_at": now - timedelta(minutes=1),
                    "actor": f"old-{seq}",
                    "action": "record.update",
                    "target": None,
                    "outcome": "unknown",
                    "source_ip": None,
                    "user_agent": None,
                    "metadata": {"seq": seq},
                    "correlation_id": None,
                    "stream_seq": seq,
                    "prev_hash": prev,
                }
                row["hash"] = prev = chain.link_canonical(prev, seq, chain.canonical(row, 1))
                row["metadata"] = json.dumps(row["metadata"])
                records.append(tuple(row[c] for c in COLUMNS_BEFORE_0004))
            await conn.copy_records_to_table("audit_logs", records=records, columns=COLUMNS_BEFORE_0004)
            await conn.execute(
                "UPDATE chain_heads SET seq = 5, hash = $2 WHERE tenant_id = $1", tenant_id, prev
            )
            return tenant_id, key_id, key
        finally:
            await conn.close()

    tenant_id, key_id, key = asyncio.run(older_release())
    svc.start()  # migrates: 0004 alone
    try:
        c = Client(svc.url, key, str(tenant_id))
        assert c.verify() == {"valid": True, "checked": 5, "first_invalid": None, "reason": None}
        assert c.batch([ev(i) for i in range(5)]).status_code == 202
        wait_stored(svc, str(tenant_id), 10)
        rows = sql(
            svc.database_url,
            "SELECT event_id, principal, chain_version FROM audit_logs WHERE tenant_id = $1 ORDER BY seq",
            tenant_id,
        )
        old, new = [(1, None)] * 5, [(2, str(key_id))] * 5
        assert [(r["chain_version"], r["principal"]) for r in rows] == old + new
        assert c.verify() == {"valid": True, "checked": 10, "first_invalid": None, "reason": None}
        # A window that starts inside the old rows: anchored on an old row's hash.
        assert c.verify(since=(now - timedelta(seconds=8.5)).isoformat())["checked"] == 9
        sql(
            svc.database_url,
            "UPDATE audit_logs SET actor = 'mallory' WHERE event_id = $1",
            rows[2]["event_id"],
        )
        assert c.verify()["first_invalid"] == str(rows[2]["event_id"])
    finally:
        svc.stop()


def test_migrate_is_safe_twice_and_from_several_hosts_at_once(stack):
    url = stack.pg.create_database("audit_migrate")
    env = stack.env(url)
    procs = [
        subprocess.Popen(
            [str(VENV_BIN / "audit-service"), "migrate"], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    outs = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sum(1 for o in outs if o["changed"]) == 1  # exactly one applied it
    versions = sql(url, "SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in versions] == [m.version for m in db.load_migrations()]
    assert len(versions) >= 2
    second = run_cli(env, "migrate")
    assert second.returncode == 0 and json.loads(second.stdout) == {"applied": [], "changed": False}


def test_a_changed_migration_is_refused(stack):
    url = stack.pg.create_database("audit_migrate_changed")
    env = stack.env(url)
    assert run_cli(env, "migrate").returncode == 0
    sql(url, "UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
    out = run_cli(env, "migrate")
    assert out.returncode == 1 and "was changed after it was applied" in out.stderr


def test_cli_tenants_and_keys(service):
    out = run_cli(service.env, "create-tenant", "cli-tenant")
    assert out.returncode == 0
    tenant_id = json.loads(out.stdout)["tenant_id"]
    dup = run_cli(service.env, "create-tenant", "cli-tenant")
    assert dup.returncode == 1 and "already exists" in dup.stderr
    key_out = run_cli(service.env, "create-api-key", "cli-tenant")
    key = json.loads(key_out.stdout)["api_key"]
    stored = sql(
        service.database_url, "SELECT key_hash, key_prefix FROM api_keys WHERE tenant_id = $1", tenant_id
    )
    assert stored[0]["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    dump = sql(service.database_url, "SELECT string_agg(api_keys::text, ',') AS t FROM api_keys")[0]["t"]
    assert key not in dump  # only the hash is kept
    assert Client(service.url, key, tenant_id).list().status_code == 200
    # By id too; an unknown tenant is named in the error.
    assert run_cli(service.env, "create-api-key", tenant_id).returncode == 0
    missing = run_cli(service.env, "create-api-key", "no-such-tenant")
    assert missing.returncode == 1 and "no-such-tenant" in missing.stderr


@pytest.mark.parametrize(
    ("name", "value"), [("DATABASE_POOL_SIZE", "many"), ("API_TIMEOUT", "-1"), ("NATS_URL", "http://x")]
)
def test_bad_config_stops_start_up_naming_the_variable(service, name, value):
    for command in ("api", "worker", "migrate"):
        out = run_cli({**service.env, name: value}, command)
        assert out.returncode == 2
        assert name in out.stderr and "configuration error" in out.stderr


def test_replay_catches_up_a_database_restored_from_an_older_backup(service, tenant):
    rows = fill(service, tenant, 50)
    # As if the database came back from a backup taken when the chain was at seq 20.
    at_20 = sql(
        service.database_url,
        "SELECT hash FROM audit_logs WHERE tenant_id = $1 AND seq = 20",
        tenant.tenant_id,
    )
    sql(service.database_url, "DELETE FROM audit_logs WHERE tenant_id = $1 AND seq > 20", tenant.tenant_id)
    sql(
        service.database_url,
        "UPDATE chain_heads SET seq = 20, hash = $2 WHERE tenant_id = $1",
        tenant.tenant_id,
        at_20[0]["hash"],
    )
    first_seq = first_stream_seq(service, tenant)
    out = run_cli(service.env, "replay", "--from-seq", str(first_seq))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["stored"] == 30 and report["duplicates"] >= 20
    after = sql(
        service.database_url, "SELECT seq, event_id FROM audit_logs WHERE tenant_id = $1", tenant.tenant_id
    )
    assert sorted(r["seq"] for r in after) == list(range(1, 51))
    assert {r["event_id"] for r in after} == {r["event_id"] for r in rows}
    assert tenant.verify() == {"valid": True, "checked": 50, "first_invalid": None, "reason": None}
    # A second replay changes nothing.
    again = json.loads(run_cli(service.env, "replay", "--from-seq", str(first_seq)).stdout)
    assert again["stored"] == 0
    bad = run_cli(service.env, "replay", "--from-seq", "0")
    assert bad.returncode == 1 and "--from-seq" in bad.stderr


def test_replay_reads_every_message_of_a_stream_of_large_messages(service, tenant):
    """Batches of 1,000 events with 600 bytes of metadata each: about 0.75 MB a message, so 500 of
    them (WORKER_BATCH_SIZE) would pass the NATS client's pending limit (256 MB) in one fetch. The
    replay reads every message from the first of them to the stream's end, none skipped."""
    pad = "x" * 600
    batches = 360
    for b in range(batches):
        r = tenant.batch([ev(i, metadata={"pad": pad, "b": b}) for i in range(1000)], timeout=60)
        assert r.status_code == 202, r.text
    wait_stored(service, tenant.tenant_id, batches * 1000, timeout=600)
    start = first_stream_seq(service, tenant)
    out = run_cli(service.env, "replay", "--from-seq", str(start))
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    read = report["messages"] + report.get("dead_letters", 0) + report.get("undecodable", 0)
    assert read == report["to_seq"] - start + 1, report
    assert report["stored"] == 0 and report["duplicates"] >= batches * 1000, report


def test_the_service_credentials_cannot_change_or_remove_an_event(service, tenant):
    """The API's and worker's login appends and reads; UPDATE, DELETE and TRUNCATE of events are
    refused, and so is dropping a partition. Retention's login may delete, not update."""
    assert tenant.post(ev(1)).status_code == 202
    wait_stored(service, tenant.tenant_id, 1)
    runtime = service.env["DATABASE_URL"]
    for statement in (
        "UPDATE audit_logs SET actor = 'mallory'",
        "DELETE FROM audit_logs",
        "TRUNCATE audit_logs",
        "SELECT audit_drop_partition('audit_logs_p2026_12')",
        "DROP TABLE audit_logs",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            sql(runtime, statement)
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        sql(service.retention_env["DATABASE_URL"], "UPDATE audit_logs SET actor = 'mallory'")
    assert stored_count(service.database_url, tenant.tenant_id) == 1
    assert tenant.verify()["valid"]
