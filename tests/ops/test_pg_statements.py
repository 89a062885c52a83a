"""auditlog.ops.pg_statements against a real PostgreSQL on loopback (tests/support/pgcluster.py,
pg_stat_statements preloaded as the postgresql role has it): a slow pattern made for real (a
filter on an unindexed column of 200,000 rows, run 20 times), found with its calls, mean and total
time and its plan; the index suggested, listed only in check mode, made with create_indexes (valid,
and a second run suggests nothing and changes nothing); the statistics reset only with reset; the
same for a table partitioned by month, and an INVALID index. No lab, no containers.

The tests run in order and share the module's cluster (each step leaves what the next one reads).
"""

from __future__ import annotations

import socket

import pytest
from support.modules import run_module
from support.pgcluster import DB, needs_psycopg2

pytestmark = needs_psycopg2

ROWS = 200_000
CALLS = 20
SLOW_QUERY = "SELECT count(*) FROM slow_demo WHERE code = $1"
PART_QUERY = "SELECT count(*) FROM events WHERE actor = $1"
# The seq scan of 200,000 rows takes a few milliseconds here: a threshold under it.
THRESHOLD = {"min_mean_ms": 1}


def statements(pg, *flags: str, **args) -> tuple[int, dict, str]:
    params = (
        {
            "login_host": "127.0.0.1",
            "port": pg.port,
            "login_user": "postgres",
            "login_password": pg.password,
            "db": DB,
            "connect_timeout": 5,
        }
        | THRESHOLD
        | args
    )
    return run_module("pg_statements", params, *flags)


def sql(pg, query: str) -> str:
    return pg.psql(query, db=DB)


def run_slow(pg, table: str, column: str, values) -> None:
    """The filter on an unindexed column, once per value: one psql, many statements, one entry of
    pg_stat_statements (the constants are its $1)."""
    sql(pg, " ".join(f"SELECT count(*) FROM {table} WHERE {column} = {v};" for v in values))


def entry(result: dict, query: str) -> dict:
    found = [s for s in result["statements"] if s["query"] == query]
    assert found, [s["query"] for s in result["statements"]]
    return found[0]


def index_valid(pg, name: str) -> str:
    return sql(pg, f"SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass('public.{name}')")


@pytest.fixture(scope="module", autouse=True)
def slow_pattern(pg):
    sql(pg, "CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    sql(
        pg,
        "CREATE TABLE slow_demo (id int PRIMARY KEY, code int NOT NULL, note text NOT NULL);"
        f" INSERT INTO slow_demo SELECT g, g % 50000, md5(g::text) FROM generate_series(1, {ROWS}) g;"
        " ANALYZE slow_demo",
    )
    sql(pg, "SELECT pg_stat_statements_reset()")
    run_slow(pg, "slow_demo", "code", range(1, CALLS + 1))


def test_the_slow_statement_with_calls_mean_total_its_plan_and_the_index_it_misses(pg):
    rc, result, out = statements(pg)
    assert rc == 0, out
    assert result["available"] and result["changed"] is False and result["created"] == [], result
    assert result["pg_stat_statements"]["available"] and result["pg_stat_statements"]["preloaded"]
    st = entry(result, SLOW_QUERY)
    assert st["calls"] == CALLS and st["mean_ms"] >= 1 and st["database"] == DB and st["user"] == "postgres"
    assert st["total_ms"] == pytest.approx(st["mean_ms"] * CALLS, rel=0.01) and st["rows"] == CALLS
    # A statement with parameters: its generic plan (PREPARE on 12 to 15, GENERIC_PLAN on 16+).
    method = "generic_plan" if result["server_version"] >= 160000 else "prepared_generic_plan"
    assert st["plan_method"] == method and st["plan_error"] is None, st
    assert st["plan"]["seq_scans"] == 1 and "Seq Scan on public.slow_demo" in st["plan"]["text"], st["plan"]
    assert st["suggestions"] == ["slow_demo_code_idx"]
    (s,) = result["suggestions"]
    assert (s["table"], s["columns"], s["partitioned"], s["created"]) == ("slow_demo", ["code"], False, None)
    assert s["sql"] == "CREATE INDEX CONCURRENTLY IF NOT EXISTS slow_demo_code_idx ON public.slow_demo (code)"
    assert s["rows"] == ROWS and s["statements"] == [st["queryid"]]
    told = next(
        f for f in result["findings"] if f["check"] == "slow_statement" and SLOW_QUERY in f["summary"]
    )
    assert told["severity"] == "warning" and told["remediation"] is None and told["host"] == "localhost"
    assert told["evidence"]["calls"] == CALLS and told["evidence"]["suggested_indexes"] == [s["sql"]]
    assert "Seq Scan" in told["evidence"]["plan"]
    (missing,) = [f for f in result["findings"] if f["check"] == "missing_index"]
    assert "public.slow_demo (code)" in missing["summary"] and missing["remediation"] is None
    # Its own EXPLAINs are not statements of the database.
    assert not [x for x in result["statements"] if "auditlog.ops.pg_statements" in x["query"]]
    assert pg.password not in out


def test_check_mode_lists_the_index_and_makes_nothing(pg):
    rc, result, out = statements(pg, "--check", create_indexes=True, reset=True)
    assert rc == 0, out
    assert result["changed"] is True and result["created"] == ["public.slow_demo_code_idx"], result
    assert result["reset"] is True
    (missing,) = [f for f in result["findings"] if f["check"] == "missing_index"]
    assert missing["remediation"].startswith("would run: CREATE INDEX CONCURRENTLY"), missing
    assert sql(pg, "SELECT count(*) FROM pg_indexes WHERE tablename = 'slow_demo'") == "1"  # the primary key
    # Nor were the statistics reset.
    again = entry(statements(pg)[1], SLOW_QUERY)
    assert again["calls"] == CALLS


def test_create_indexes_makes_a_valid_index_and_a_second_run_changes_nothing(pg):
    rc, result, out = statements(pg, create_indexes=True)
    assert rc == 0, out
    assert result["changed"] is True and result["created"] == ["public.slow_demo_code_idx"], result
    (s,) = result["suggestions"]
    assert s["created"] is True and s["error"] is None
    assert "slow_demo_code_idx" in sql(pg, "SELECT indexname FROM pg_indexes WHERE tablename = 'slow_demo'")
    assert index_valid(pg, "slow_demo_code_idx") == "t"
    st = entry(result, SLOW_QUERY)
    assert "slow_demo_code_idx" in st["plan_after"]["text"] and st["plan_after"]["seq_scans"] == 0
    (made,) = [f for f in result["findings"] if f["check"] == "missing_index"]
    assert made["remediation"].startswith("created slow_demo_code_idx"), made

    rc, again, out = statements(pg, create_indexes=True)
    assert rc == 0, out
    assert again["changed"] is False and again["suggestions"] == [] and again["created"] == [], again
    # Still slow on average (the statistics are not reset), but planned on the index now.
    st = entry(again, SLOW_QUERY)
    assert st["suggestions"] == [] and "Index Only Scan using slow_demo_code_idx" in st["plan"]["text"]
    assert not [f for f in again["findings"] if f["check"] == "missing_index"]


def test_the_statistics_are_reset_only_with_reset(pg):
    rc, result, out = statements(pg)
    assert rc == 0 and result["reset"] is False, out
    assert entry(result, SLOW_QUERY)["calls"] == CALLS

    rc, result, out = statements(pg, reset=True)
    assert rc == 0, out
    assert result["changed"] is True and result["reset"] is True, result
    (told,) = [f for f in result["findings"] if f["check"] == "statistics_reset"]
    assert told["severity"] == "info" and told["remediation"].startswith("pg_stat_statements_reset"), told
    left = sql(pg, "SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%slow_demo%'")
    assert left == "0", left
    # Nothing slow since: a second run has nothing to reset.
    rc, again, out = statements(pg, reset=True, min_mean_ms=50)
    assert rc == 0, out
    assert again["changed"] is False and again["reset"] is False and again["statements"] == [], again


def test_a_partitioned_table_gets_its_index_on_the_parent_and_on_every_partition(pg):
    sql(
        pg,
        "CREATE TABLE events (id bigint NOT NULL, created_at timestamptz NOT NULL, actor text NOT NULL)"
        " PARTITION BY RANGE (created_at);"
        " CREATE TABLE events_p2026_01 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2026-02-01');"
        " CREATE TABLE events_p2026_02 PARTITION OF events FOR VALUES FROM ('2026-02-01') TO ('2026-03-01');"
        " CREATE INDEX events_created_at_idx ON events (created_at);"
        " INSERT INTO events SELECT g, '2026-01-01'::timestamptz + (g % 2) * interval '31 days'"
        f" + g * interval '1 second', 'actor-' || (g % 40000) FROM generate_series(1, {ROWS}) g;"
        " ANALYZE events;"
        " SELECT pg_stat_statements_reset()",
    )
    run_slow(pg, "events", "actor", [f"'actor-{i}'" for i in range(CALLS)])

    rc, result, out = statements(pg, "--check", create_indexes=True)
    assert rc == 0, out
    st = entry(result, PART_QUERY)
    assert "Append" in st["plan"]["nodes"] and st["plan"]["seq_scans"] == 2, st["plan"]
    (s,) = result["suggestions"]
    assert (s["table"], s["columns"], s["partitioned"], s["name"]) == (
        "events",
        ["actor"],
        True,
        "events_actor_idx",
    )
    assert sorted(s["scans"]) == ["public.events_p2026_01", "public.events_p2026_02"]
    assert s["steps"][0] == "CREATE INDEX IF NOT EXISTS events_actor_idx ON ONLY public.events (actor)"
    assert (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS events_p2026_01_actor_idx ON public.events_p2026_01 (actor)"
        in s["steps"]
    )
    assert (
        "ALTER INDEX public.events_actor_idx ATTACH PARTITION public.events_p2026_02_actor_idx" in s["steps"]
    )
    assert (
        result["changed"] is True
        and sql(pg, "SELECT count(*) FROM pg_indexes WHERE indexname LIKE '%actor%'") == "0"
    )

    rc, result, out = statements(pg, create_indexes=True)
    assert rc == 0, out
    assert result["changed"] is True and result["created"] == ["public.events_actor_idx"], result
    assert index_valid(pg, "events_actor_idx") == "t"  # valid once every partition's index is attached
    attached = sql(
        pg,
        "SELECT string_agg(c.relname, ',' ORDER BY c.relname) FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'events_actor_idx'::regclass",
    )
    assert attached == "events_p2026_01_actor_idx,events_p2026_02_actor_idx", attached
    assert "Seq Scan" not in entry(result, PART_QUERY)["plan_after"]["text"]
    # A month made later gets the index by itself.
    sql(
        pg,
        "CREATE TABLE events_p2026_03 PARTITION OF events FOR VALUES FROM ('2026-03-01') TO ('2026-04-01')",
    )
    assert "events_p2026_03_actor_idx" in sql(
        pg, "SELECT indexname FROM pg_indexes WHERE tablename = 'events_p2026_03'"
    )

    rc, again, out = statements(pg, create_indexes=True)
    assert rc == 0 and again["changed"] is False and again["suggestions"] == [], again


def test_an_invalid_index_is_reported_and_built_again_with_create_indexes(pg):
    # What a failed CREATE INDEX CONCURRENTLY leaves: the index in the catalog, INVALID.
    sql(
        pg,
        "DROP INDEX slow_demo_code_idx; CREATE INDEX slow_demo_code_idx ON slow_demo (code);"
        " UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'slow_demo_code_idx'::regclass;"
        " SELECT pg_stat_statements_reset()",
    )
    run_slow(pg, "slow_demo", "code", range(1, CALLS + 1))
    rc, result, out = statements(pg)
    assert rc == 0, out
    (invalid,) = [f for f in result["findings"] if f["check"] == "invalid_index"]
    assert "public.slow_demo_code_idx" in invalid["summary"] and "INVALID" in invalid["summary"], invalid
    assert invalid["remediation"] is None
    # The INVALID index serves nothing: the statement scans, and the same index is suggested.
    (s,) = result["suggestions"]
    assert s["name"] == "slow_demo_code_idx" and s["steps"][0].startswith("DROP INDEX CONCURRENTLY")

    rc, result, out = statements(pg, create_indexes=True)
    assert rc == 0 and result["changed"] is True, out
    (invalid,) = [f for f in result["findings"] if f["check"] == "invalid_index"]
    assert invalid["remediation"] == "dropped and built again", invalid
    assert index_valid(pg, "slow_demo_code_idx") == "t"
    rc, again, out = statements(pg, create_indexes=True)
    assert rc == 0 and again["changed"] is False and again["invalid_indexes"] == [], again


def test_without_the_extension_a_warning_names_the_fix(pg):
    rc, result, out = statements(pg, db="postgres", create_indexes=True, reset=True)
    assert rc == 0, out
    assert result["available"] is True and result["changed"] is False, result
    assert result["pg_stat_statements"]["installed"] is False and result["pg_stat_statements"]["preloaded"]
    (told,) = [f for f in result["findings"] if f["check"] == "pg_stat_statements"]
    assert told["severity"] == "warning"
    assert "CREATE EXTENSION pg_stat_statements in database postgres" in told["summary"], told


def test_a_server_that_is_not_there_is_a_finding_not_a_crash(pg):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, result, out = statements(pg, port=port, connect_timeout=3)
    assert rc == 0 and "Traceback" not in out, out
    assert result["available"] is False and result["changed"] is False, result
    (only,) = result["findings"]
    assert only["severity"] == "critical" and only["check"] == "readiness"
