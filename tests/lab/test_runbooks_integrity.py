"""The guide's Data Corruption as a runbook (playbooks/runbooks/database/data_corruption.yml),
against its two faults injected for real on the converged lab: an event changed with SQL behind
the service's back, and a page of a scratch table overwritten on disk while PostgreSQL is stopped
(the lab's cluster has data checksums); both healed before the end."""

from __future__ import annotations

import pytest
from audit_devtools import lab as lablib
from support.ingest import tenant_key
from support.runbooks import assert_changes_nothing, critical, wait_for, wait_healthy

pytestmark = pytest.mark.lab

PSQL = "runuser -u postgres -- psql -d audit_logs -tAc"
PG_UNIT = "postgresql@$(ls /etc/postgresql)-main"
RUNBOOK = "playbooks/runbooks/database/data_corruption.yml"
# pg_amcheck needs the amcheck extension, which the lab's database does not have until asked.
EXTRA = {"corruption_install_amcheck": True}


def sql(lab, query: str) -> str:
    return lab.exec("db1", f'{PSQL} "{query}"').stdout.strip()


def test_data_corruption_names_the_changed_event_and_the_corrupt_page_and_points_to_recovery(lab, stack):
    tenant_id, key = tenant_key(lab)
    for i in range(5):
        r = lablib.lb_request(
            "POST",
            "/api/v1/audit/logs",
            json={"actor": f"a{i}", "action": "record.update"},
            headers={"X-API-Key": key},
        )
        assert r.status_code == 202, r.text
    stored = f"SELECT count(*) FROM audit_logs WHERE tenant_id = '{tenant_id}'"
    wait_for(lambda: sql(lab, stored) == "5", 60, "the tenant's 5 events stored")
    victim = f"SELECT event_id, action FROM audit_logs WHERE tenant_id = '{tenant_id}' AND seq = 3"
    event_id, action = sql(lab, victim).split("|")
    # A scratch table of one page in the service's database, on disk before the server stops.
    sql(
        lab,
        "CREATE TABLE corrupt_demo (id int NOT NULL, note text NOT NULL);"
        " INSERT INTO corrupt_demo SELECT g, md5(g::text) FROM generate_series(1, 100) AS g; CHECKPOINT",
    )
    relfile = sql(
        lab, "SELECT current_setting('data_directory') || '/' || pg_relation_filepath('corrupt_demo')"
    )
    try:
        # The row changed as an operator with the database's superuser would: its hash is left as it was.
        sql(lab, f"UPDATE audit_logs SET action = 'record.delete' WHERE event_id = '{event_id}'")
        # PostgreSQL stopped once (its buffers written), 64 bytes in the middle of the page
        # overwritten (tuple data: the page header stays plausible), PostgreSQL started again.
        lab.exec("db1", f"systemctl stop {PG_UNIT}")
        try:
            overwrite = f"dd of={relfile} bs=1 seek=4096 conv=notrunc status=none"
            lab.exec("db1", f"printf '\\336\\255\\276\\357%.0s' $(seq 16) | {overwrite}")
        finally:
            lab.exec("db1", f"systemctl start {PG_UNIT}")
        wait_healthy()

        run = lab.runbook(RUNBOOK, extra_vars=EXTRA)
        assert run.ok, run.describe()
        # The tenant's chain breaks at the changed event; every other tenant's verifies.
        broken = critical(run, check="chain_verify")
        assert [f["evidence"]["tenant_id"] for f in broken] == [tenant_id], run.describe()
        (chain,) = broken
        assert chain["host"] in ("app1", "app2") and chain["remediation"] is None, chain
        first = chain["evidence"]["first_invalid"]
        assert (first["event_id"], first["seq"]) == (event_id, 3) and first["created_at"], chain
        assert chain["evidence"]["problem"] == "hash_mismatch" and chain["evidence"]["checked"] == 3, chain
        assert f"at event {event_id} (seq 3," in chain["summary"], chain
        assert "point-in-time recovery" in chain["summary"] and "recovery runbooks" in chain["summary"], chain
        # pg_amcheck names the table and the block; the page's checksum failed when it read it.
        pages = [f for f in critical(run, host="db1", check="amcheck") if "corrupt_demo" in f["summary"]]
        assert pages, run.describe()
        (page,) = pages
        assert page["evidence"]["relation"] == "public.corrupt_demo" and page["evidence"]["blocks"] == [0], (
            page
        )
        assert "invalid page in block 0" in page["evidence"]["messages"][0], page
        assert "point-in-time recovery" in page["summary"], page
        (failures,) = critical(run, host="db1", check="checksum_failures")
        assert failures["evidence"]["database"] == "audit_logs" and failures["evidence"]["failures"] >= 1, (
            failures
        )
        assert run.findings(check="data_checksums") == [], run.describe()  # the lab's cluster has them
        # Nothing repaired: the row is still changed, the table still there.
        assert sql(lab, f"SELECT action FROM audit_logs WHERE event_id = '{event_id}'") == "record.delete"
    finally:
        # Healed: the row's own value back (its hash matches again), the scratch table dropped.
        sql(lab, f"UPDATE audit_logs SET action = '{action}' WHERE event_id = '{event_id}'")
        sql(lab, "DROP TABLE IF EXISTS corrupt_demo")
    try:
        again = assert_changes_nothing(lab, RUNBOOK, extra_vars=EXTRA)
        assert critical(again) == [], again.describe()
        (verified,) = again.findings(check="chain_verify")
        assert verified["severity"] == "info", verified
        assert [f["severity"] for f in again.findings(host="db1", check="amcheck")] == ["info"], (
            again.describe()
        )
        # The failures pg_stat_database still counts are of the page dropped since: a warning.
        (gone,) = again.findings(host="db1", check="checksum_failures")
        assert gone["severity"] == "warning" and "pg_stat_reset()" in gone["summary"], gone
    finally:
        # The counter reset, so that no other runbook (health_check's pg_diagnostics) sees them.
        sql(lab, "SELECT pg_stat_reset()")
