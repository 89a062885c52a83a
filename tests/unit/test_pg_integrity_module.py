"""auditlog.ops.pg_integrity without a server: pg_amcheck's output, recorded from PostgreSQL 15's
pg_amcheck on pages corrupted for real (tests/ops/test_pg_integrity.py does it live), parsed into
per-relation problems, and the findings of the facts."""

from __future__ import annotations

from ansible_collections.auditlog.ops.plugins.module_utils import postgres
from ansible_collections.auditlog.ops.plugins.modules import pg_integrity as pgi

# A heap page whose checksum fails (data checksums on): the read itself fails.
CHECKSUM_STDOUT = """\
heap table "audit_logs.public.corrupt_demo":
    ERROR:  invalid page in block 0 of relation base/16384/16397
"""
CHECKSUM_STDERR = """\
  0/276 relations (0%),   0/805 pages (0%)
WARNING:  page verification failed, calculated checksum 17485 but expected 31547
276/276 relations (100%), 805/805 pages (100%)
"""

# Line pointers overwritten, read past the checksum (ignore_checksum_failure), --heapallindexed
# --parent-check: amcheck's own structural checks. (The third problem, with an attribute, is in the
# format pg_amcheck.c prints such a one: it did not occur in the recorded run.)
STRUCTURE_STDOUT = """\
btree index "svc.public.corrupt_demo_pkey":
    ERROR:  line pointer points past end of tuple space in index "corrupt_demo_pkey"
    DETAIL:  Index tid=(1,1) lp_off=32767, lp_len=32767 lp_flags=3.
heap table "svc.public.corrupt_demo", block 0, offset 34:
    xmin 4278255360 precedes oldest valid transaction ID 0:717
heap table "svc.public.corrupt_demo", block 0, offset 35, attribute 2:
    toast value 16400 not found in toast table
"""

# The same with --verbose: the failing query is printed after the messages, not indented.
VERBOSE_STDOUT = """\
btree index "svc.public.corrupt_demo_pkey":
    ERROR:  XX002: line pointer points past end of tuple space in index "corrupt_demo_pkey"
    DETAIL:  Index tid=(1,1) lp_off=32767, lp_len=32767 lp_flags=3.
    LOCATION:  PageGetItemIdCareful, verify_nbtree.c:3284
query was: SELECT "pg_catalog".bt_index_check(index := c.oid, heapallindexed := true)
FROM pg_catalog.pg_class c, pg_catalog.pg_index i WHERE c.oid = 16402 AND c.oid = i.indexrelid
heap table "svc.public.corrupt_demo", block 0, offset 34:
    xmin 4278255360 precedes oldest valid transaction ID 0:717
"""

NOT_INSTALLED_STDERR = """\
pg_amcheck: warning: skipping database "svc": amcheck is not installed
pg_amcheck: error: no relations to check
"""

SERVER_DOWN_STDERR = (
    'pg_amcheck: error: connection to server on socket "/run/postgresql/.s.PGSQL.5432" failed: '
    "No such file or directory\n"
    "\tIs the server running locally and accepting connections on that socket?\n"
)

# A relation locked by a DDL past lock_timeout: the check's query is cancelled (same shape as any
# failing check query), which says nothing about corruption.
LOCKED_STDOUT = """\
heap table "audit_logs.public.audit_logs_p2026_05":
    ERROR:  canceling statement due to lock timeout
"""

PARAMS = {
    "db": "audit_logs",
    "login_host": "/run/postgresql",
    "port": 5432,
    "login_user": "postgres",
    "login_password": None,
    "ssl_mode": "prefer",
    "ca_cert": None,
    "connect_timeout": 10,
    "lock_timeout_ms": 30000,
    "heapallindexed": False,
    "parent_check": False,
    "amcheck": True,
}


def test_a_page_whose_checksum_fails_is_one_problem_of_its_relation_with_the_servers_warning():
    am = pgi.amcheck_result(2, CHECKSUM_STDOUT, CHECKSUM_STDERR)
    assert am["ran"] and am["rc"] == 2 and am["clean"] is False and am["error"] is None
    assert am["problems"] == [
        {
            "kind": "heap table",
            "database": "audit_logs",
            "relation": "public.corrupt_demo",
            "block": 0,  # from the message: the header names no block
            "offset": None,
            "attribute": None,
            "messages": ["ERROR:  invalid page in block 0 of relation base/16384/16397"],
        }
    ]
    assert am["relations"] == [
        {
            "kind": "heap table",
            "database": "audit_logs",
            "relation": "public.corrupt_demo",
            "problems": 1,
            "blocks": [0],
            "messages": ["ERROR:  invalid page in block 0 of relation base/16384/16397"],
        }
    ]
    assert (am["relations_checked"], am["pages_checked"]) == (276, 805)
    assert am["server_warnings"] == [
        "WARNING:  page verification failed, calculated checksum 17485 but expected 31547"
    ]
    assert am["errors"] == []


def test_structural_problems_keep_their_block_offset_attribute_and_detail_per_relation():
    am = pgi.amcheck_result(2, STRUCTURE_STDOUT, "")
    assert [(p["kind"], p["relation"], p["block"], p["offset"], p["attribute"]) for p in am["problems"]] == [
        ("btree index", "public.corrupt_demo_pkey", None, None, None),
        ("heap table", "public.corrupt_demo", 0, 34, None),
        ("heap table", "public.corrupt_demo", 0, 35, 2),
    ]
    assert am["problems"][0]["messages"][1].startswith("DETAIL:  Index tid=(1,1)")
    index, heap = am["relations"]
    assert index["kind"] == "btree index" and index["problems"] == 1 and index["blocks"] == []
    assert heap["problems"] == 2 and heap["blocks"] == [0] and len(heap["messages"]) == 2
    assert am["relations_checked"] is None  # no --progress report given


def test_the_query_lines_of_verbose_output_are_no_problem_nor_message():
    am = pgi.amcheck_result(2, VERBOSE_STDOUT, "")
    assert [p["relation"] for p in am["problems"]] == ["public.corrupt_demo_pkey", "public.corrupt_demo"]
    assert len(am["problems"][0]["messages"]) == 3 and am["errors"] == []


def test_a_database_name_with_dots_stays_whole():
    (p,) = pgi.parse_amcheck('heap table "audit.logs.public.t", block 7:\n    bad\n')["problems"]
    assert (p["database"], p["relation"], p["block"]) == ("audit.logs", "public.t", 7)


def test_errors_without_problems_are_errors_and_a_lock_timeout_is_not_corruption():
    missing = pgi.amcheck_result(1, "", NOT_INSTALLED_STDERR)
    assert missing["problems"] == [] and missing["clean"] is False
    assert missing["error"].endswith("pg_amcheck: error: no relations to check")
    down = pgi.amcheck_result(1, "", SERVER_DOWN_STDERR)
    assert "Is the server running locally" in down["error"] and len(down["errors"]) == 1
    locked = pgi.amcheck_result(2, LOCKED_STDOUT, "")
    assert locked["problems"] == [] and locked["relations"] == [] and locked["error"] is None
    assert [p["relation"] for p in locked["not_checked"]] == ["public.audit_logs_p2026_05"]
    assert locked["clean"] is False


def test_problems_are_all_counted_but_only_some_returned():
    stdout = "".join(f'heap table "db.public.t", block {b}, offset 1:\n    bad\n' for b in range(7))
    am = pgi.amcheck_result(2, stdout, "", problems_limit=3)
    assert am["problem_count"] == 7 and len(am["problems"]) == 3
    assert am["relations"][0]["problems"] == 7 and am["relations"][0]["blocks"] == list(range(7))


def test_the_command_line_names_the_database_as_such_and_the_password_stays_in_the_environment():
    argv = pgi.amcheck_argv("/usr/lib/postgresql/17/bin/pg_amcheck", PARAMS)
    assert argv[0].endswith("pg_amcheck") and argv[-1] == "audit_logs"
    assert "--database" not in argv and "-d" not in argv  # a pattern there; the positional is a name
    assert "--no-password" in argv and "--progress" in argv
    assert "--heapallindexed" not in argv and "--parent-check" not in argv and "--install-missing" not in argv
    more = pgi.amcheck_argv("pg_amcheck", dict(PARAMS, heapallindexed=True, parent_check=True), True)
    assert {"--heapallindexed", "--parent-check", "--install-missing"} <= set(more)
    env = pgi.amcheck_environ(PARAMS)
    assert env["PGOPTIONS"] == "-c lock_timeout=30000" and "PGPASSWORD" not in env and "PGSSLMODE" not in env
    tcp = pgi.amcheck_environ(
        dict(PARAMS, login_host="db1", login_password="s3cret", ssl_mode="verify-full", ca_cert="/ca.crt")
    )
    assert (
        tcp["PGPASSWORD"] == "s3cret"
        and tcp["PGSSLMODE"] == "verify-full"
        and tcp["PGSSLROOTCERT"] == "/ca.crt"
    )
    assert "s3cret" not in " ".join(pgi.amcheck_argv("pg_amcheck", dict(PARAMS, login_password="s3cret")))


def facts(am=None, enabled=True, rows=()):
    out = {"available": True, "server": "/run/postgresql/.s.PGSQL.5432"}
    if am is not None:
        out["amcheck"] = am
    out["checksums"] = postgres.checksums_summary("on" if enabled else "off", list(rows))
    return out


def severities(findings):
    return [(f["check"], f["severity"]) for f in findings]


FAILED = {
    "database": "audit_logs",
    "checksum_failures": 3,
    "checksum_last_failure": "2026-05-01T10:00:00+00:00",
}


def test_a_corrupt_relation_and_checksum_failures_are_critical_and_point_to_recovery():
    am = pgi.amcheck_result(2, CHECKSUM_STDOUT, CHECKSUM_STDERR)
    found = pgi.integrity_findings(facts(am, rows=[FAILED]), PARAMS)
    assert severities(found) == [("amcheck", "critical"), ("checksum_failures", "critical")]
    corrupt, failures = found
    assert corrupt["summary"].startswith(
        "pg_amcheck: heap table public.corrupt_demo of audit_logs is corrupt"
    )
    assert (
        "block(s) 0" in corrupt["summary"]
        and "point-in-time recovery (the recovery runbooks)" in corrupt["summary"]
    )
    assert corrupt["evidence"]["relation"] == "public.corrupt_demo" and corrupt["remediation"] is None
    assert "3 data checksum failure(s) in audit_logs" in failures["summary"]
    index = pgi.amcheck_result(2, STRUCTURE_STDOUT, "")
    (idx, heap) = pgi.integrity_findings(facts(index), PARAMS)
    assert "REINDEX INDEX CONCURRENTLY" in idx["summary"] and "REINDEX" not in heap["summary"]


def test_failures_counted_where_pg_amcheck_now_reads_clean_are_pages_gone_a_warning():
    clean = pgi.amcheck_result(0, "", CHECKSUM_STDERR.replace("WARNING:  page verification failed", ""))
    assert clean["clean"]
    shared = {"database": None, "checksum_failures": 1, "checksum_last_failure": None}
    other = dict(FAILED, database="postgres")
    found = pgi.integrity_findings(facts(clean, rows=[FAILED, shared, other]), PARAMS)
    assert severities(found) == [
        ("amcheck", "info"),
        ("checksum_failures", "warning"),
        ("checksum_failures", "warning"),  # the shared catalogs, which pg_amcheck reads too
        ("checksum_failures", "critical"),  # another database: not read here
    ]
    assert "SELECT pg_stat_reset() in audit_logs" in found[1]["summary"]
    assert "276 relations, 805 pages checked" in found[0]["summary"]
    # Without a clean run of pg_amcheck (it did not run) they stay critical.
    not_run = {"ran": False, "error": "the amcheck extension is not created in audit_logs"}
    assert severities(pgi.integrity_findings(facts(not_run, rows=[FAILED]), PARAMS)) == [
        ("amcheck", "warning"),
        ("checksum_failures", "critical"),
    ]


def test_checksums_off_is_a_warning_and_an_unreachable_server_is_critical():
    found = pgi.integrity_findings(facts(None, enabled=False), dict(PARAMS, amcheck=False))
    assert severities(found) == [("data_checksums", "warning")]
    assert "pg_checksums --enable" in found[0]["summary"]
    (down,) = pgi.integrity_findings(
        {"available": False, "server": "db1:5432", "error": "connection refused"}, PARAMS
    )
    assert (down["check"], down["severity"]) == ("integrity", "critical") and "connection refused" in down[
        "summary"
    ]
    stopped = pgi.amcheck_result(1, "", SERVER_DOWN_STDERR)
    assert severities(pgi.integrity_findings(facts(stopped), PARAMS)) == [("amcheck", "warning")]
    locked = pgi.amcheck_result(2, LOCKED_STDOUT, "")
    (skipped,) = pgi.integrity_findings(facts(locked), PARAMS)
    assert skipped["severity"] == "warning" and "public.audit_logs_p2026_05" in skipped["summary"]
