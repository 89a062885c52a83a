"""auditlog.ops.pg_integrity against a real PostgreSQL on loopback, with a page corrupted for real.

The cluster is audit_devtools.stack's `Postgres` (Debian's server, a temporary directory, a free
port, data checksums on: initdb --data-checksums) of this test module alone (tests/ops/conftest.py's
`pg`), since a corrupt page is here on purpose; the module runs through
`ansible localhost -m auditlog.ops.pg_integrity` under /usr/bin/python3 with Debian's
python3-psycopg2, as on a database host, and runs the cluster's own pg_amcheck.
"""

from __future__ import annotations

from audit_devtools.stack import Postgres
from support.modules import run_module
from support.pgcluster import DB, needs_psycopg2

pytestmark = needs_psycopg2


def integrity(pg: Postgres, *flags: str, **args) -> tuple[int, dict, str]:
    params = {
        "login_host": "127.0.0.1",
        "port": pg.port,
        "login_user": "postgres",
        "login_password": pg.password,
        "db": DB,
        "bin_dir": str(pg.bindir),
        "connect_timeout": 5,
    } | args
    return run_module("pg_integrity", params, *flags)


def by_check(result: dict, check: str) -> list[dict]:
    return [f for f in result["findings"] if f["check"] == check]


def amcheck_installed(pg: Postgres) -> bool:
    return pg.psql("SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'", db=DB) == "1"


def test_a_healthy_database_reports_no_problem_and_amcheck_is_created_only_when_asked(pg):
    assert not amcheck_installed(pg)
    # Without install_missing, and in check mode with it: nothing created, pg_amcheck not run.
    for flags, args in (((), {}), (("--check",), {"install_missing": True})):
        rc, result, out = integrity(pg, *flags, **args)
        assert rc == 0, out
        assert result["changed"] is False and result["amcheck"]["ran"] is False, result
        (missing,) = by_check(result, "amcheck")
        assert missing["severity"] == "warning" and "not created in svc" in missing["summary"], missing
        assert not amcheck_installed(pg)

    rc, result, out = integrity(pg, install_missing=True, heapallindexed=True)
    assert rc == 0, out
    assert result["changed"] is True and amcheck_installed(pg)
    am = result["amcheck"]
    assert am["ran"] and am["created"] and am["installed"] and am["clean"] and am["rc"] == 0, am
    assert am["problem_count"] == 0 and am["problems"] == [] and am["relations"] == []
    assert am["relations_checked"] > 10 and am["pages_checked"] > 0, am
    assert result["checksums"] == {"enabled": True, "failures": 0, "by_database": [], "last_failure": None}
    (clean,) = by_check(result, "amcheck")
    assert clean["severity"] == "info" and "no corruption in svc" in clean["summary"], clean
    assert [f for f in result["findings"] if f["severity"] != "info"] == [], result["findings"]
    assert pg.password not in out

    # Once there, it is used as it is: nothing changes, in check mode too.
    for flags in ((), ("--check",)):
        rc, again, out = integrity(pg, *flags, install_missing=True)
        assert rc == 0 and again["changed"] is False and again["amcheck"]["clean"], out


def test_a_corrupt_page_is_reported_by_pg_amcheck_and_as_a_checksum_failure(pg):
    pg.psql(
        "CREATE TABLE corrupt_demo (id int NOT NULL, note text NOT NULL);"
        " INSERT INTO corrupt_demo SELECT g, md5(g::text) FROM generate_series(1, 100) AS g; CHECKPOINT",
        db=DB,
    )
    relfile = pg.dir / "data" / pg.psql("SELECT pg_relation_filepath('corrupt_demo')", db=DB)
    assert relfile.stat().st_size == 8192  # one page
    # The server stopped (its buffers written and dropped), bytes in the middle of the page
    # overwritten (tuple data: the page header stays plausible), the server started again.
    pg.stop()
    with open(relfile, "r+b") as page:
        page.seek(4096)
        page.write(b"\xde\xad\xbe\xef" * 16)
    pg.start()
    try:
        rc, result, out = integrity(pg, install_missing=True)
        assert rc == 0, out
        am = result["amcheck"]
        assert am["rc"] == 2 and am["clean"] is False and am["error"] is None, am
        (rel,) = am["relations"]
        assert (rel["kind"], rel["database"], rel["relation"], rel["blocks"]) == (
            "heap table",
            DB,
            "public.corrupt_demo",
            [0],
        ), rel
        assert "invalid page in block 0" in rel["messages"][0], rel
        assert any("page verification failed" in w for w in am["server_warnings"]), am
        (corrupt,) = by_check(result, "amcheck")
        assert (
            corrupt["severity"] == "critical"
            and "public.corrupt_demo of svc is corrupt" in corrupt["summary"]
        )
        assert "point-in-time recovery" in corrupt["summary"], corrupt
        # pg_amcheck's read of the page failed its checksum: pg_stat_database counts it.
        sums = result["checksums"]
        assert sums["enabled"] is True and sums["failures"] >= 1, sums
        assert [d["database"] for d in sums["by_database"]] == [DB] and sums["last_failure"], sums
        (failures,) = by_check(result, "checksum_failures")
        assert failures["severity"] == "critical" and "checksum failure(s) in svc" in failures["summary"]
        # Check mode sees the same (it only reads).
        rc, checked, out = integrity(pg, "--check", install_missing=True)
        assert rc == 0 and checked["changed"] is False and checked["amcheck"]["problem_count"] == 1, out
    finally:
        pg.psql("DROP TABLE IF EXISTS corrupt_demo", db=DB)

    # The corrupt page dropped: pg_amcheck reads everything clean, so the failures still counted
    # are of pages that are gone, a warning until the counter is reset.
    rc, healed, out = integrity(pg)
    assert rc == 0 and healed["amcheck"]["clean"], out
    (gone,) = by_check(healed, "checksum_failures")
    assert gone["severity"] == "warning" and "pg_stat_reset()" in gone["summary"], gone
    assert [f for f in healed["findings"] if f["severity"] == "critical"] == []
    pg.psql("SELECT pg_stat_reset()", db=DB)
    rc, reset, out = integrity(pg)
    assert rc == 0 and by_check(reset, "checksum_failures") == [] and reset["checksums"]["failures"] == 0, out


def test_checksums_alone_and_a_server_that_does_not_answer(pg):
    rc, result, out = integrity(pg, amcheck=False)
    assert rc == 0 and "amcheck" not in result and result["checksums"]["enabled"] is True, out
    assert result["findings"] == [], result["findings"]
    rc, down, out = integrity(pg, port=1)
    assert rc == 0 and down["available"] is False and down["changed"] is False, out
    (unreachable,) = down["findings"]
    assert unreachable["severity"] == "critical" and unreachable["check"] == "integrity", unreachable
