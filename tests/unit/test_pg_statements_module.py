"""auditlog.ops.pg_statements without a server: plans recorded from PostgreSQL's
EXPLAIN (VERBOSE, FORMAT JSON) in, the plan told in one line and the missing index out
(module_utils/pg_plans.py), and the module's findings."""

from __future__ import annotations

import json

import pytest
from ansible_collections.auditlog.ops.plugins.module_utils import pg_plans
from ansible_collections.auditlog.ops.plugins.modules import pg_statements as pgs

# Recorded on PostgreSQL 15 (a prepared statement's generic plan; only the keys the module reads
# kept): SELECT count(*) FROM slow_demo WHERE code = $1, on 200,000 rows without an index on code.
PLAIN = [
    {
        "Plan": {
            "Node Type": "Aggregate",
            "Total Cost": 4370.02,
            "Plan Rows": 1,
            "Plans": [
                {
                    "Node Type": "Seq Scan",
                    "Relation Name": "slow_demo",
                    "Schema": "public",
                    "Alias": "slow_demo",
                    "Total Cost": 4370.0,
                    "Plan Rows": 4,
                    "Filter": "(slow_demo.code = $1)",
                }
            ],
        }
    }
]

# SELECT * FROM ev WHERE actor = $1 AND n > $2 ORDER BY created_at LIMIT 50, ev partitioned by
# month (ev_p1 holds the 200,000 rows, ev_p2 none): a parallel Append of a Seq Scan per partition.
PARTITIONED = [
    {
        "Plan": {
            "Node Type": "Limit",
            "Total Cost": 4235.05,
            "Plan Rows": 3,
            "Plans": [
                {
                    "Node Type": "Sort",
                    "Total Cost": 4235.05,
                    "Plan Rows": 3,
                    "Plans": [
                        {
                            "Node Type": "Gather",
                            "Total Cost": 4235.02,
                            "Plan Rows": 3,
                            "Workers Planned": 2,
                            "Plans": [
                                {
                                    "Node Type": "Append",
                                    "Parallel Aware": True,
                                    "Total Cost": 3234.72,
                                    "Plan Rows": 2,
                                    "Plans": [
                                        {
                                            "Node Type": "Seq Scan",
                                            "Parallel Aware": True,
                                            "Relation Name": "ev_p1",
                                            "Schema": "public",
                                            "Alias": "ev_1",
                                            "Total Cost": 3234.71,
                                            "Plan Rows": 1,
                                            "Filter": "((ev_1.n > $2) AND (ev_1.actor = $1))",
                                        },
                                        {
                                            "Node Type": "Seq Scan",
                                            "Parallel Aware": True,
                                            "Relation Name": "ev_p2",
                                            "Schema": "public",
                                            "Alias": "ev_2",
                                            "Total Cost": 0.0,
                                            "Plan Rows": 1,
                                            "Filter": "((ev_2.n > $2) AND (ev_2.actor = $1))",
                                        },
                                    ],
                                }
                            ],
                        }
                    ],
                }
            ],
        }
    }
]

# SELECT * FROM slow_demo WHERE id = $1: the primary key serves it.
INDEXED = [
    {
        "Plan": {
            "Node Type": "Index Scan",
            "Index Name": "slow_demo_pkey",
            "Relation Name": "slow_demo",
            "Schema": "public",
            "Alias": "slow_demo",
            "Total Cost": 8.44,
            "Plan Rows": 1,
            "Index Cond": "(slow_demo.id = $1)",
        }
    }
]

# SELECT s.note FROM slow_demo s JOIN ev e ON e.n = s.id WHERE s.flag AND lower(s.note) = 'x'
# AND e.tenant = 3: a Bitmap Heap Scan on the partition with rows, and a filter of slow_demo that
# compares no plain column.
JOIN = [
    {
        "Plan": {
            "Node Type": "Gather",
            "Total Cost": 6791.06,
            "Plan Rows": 50,
            "Workers Planned": 2,
            "Plans": [
                {
                    "Node Type": "Hash Join",
                    "Parallel Aware": True,
                    "Total Cost": 5786.06,
                    "Plan Rows": 21,
                    "Hash Cond": "(e.n = s.id)",
                    "Plans": [
                        {
                            "Node Type": "Append",
                            "Parallel Aware": True,
                            "Total Cost": 2125.81,
                            "Plan Rows": 8326,
                            "Plans": [
                                {
                                    "Node Type": "Bitmap Heap Scan",
                                    "Parallel Aware": True,
                                    "Relation Name": "ev_p1",
                                    "Schema": "public",
                                    "Alias": "e_1",
                                    "Total Cost": 2084.18,
                                    "Plan Rows": 11753,
                                    "Recheck Cond": "(e_1.tenant = 3)",
                                    "Plans": [
                                        {
                                            "Node Type": "Bitmap Index Scan",
                                            "Index Name": "ev_p1_tenant_created_at_idx",
                                            "Total Cost": 462.27,
                                            "Plan Rows": 19980,
                                            "Index Cond": "(e_1.tenant = 3)",
                                        }
                                    ],
                                },
                                {
                                    "Node Type": "Seq Scan",
                                    "Parallel Aware": True,
                                    "Relation Name": "ev_p2",
                                    "Schema": "public",
                                    "Alias": "e_2",
                                    "Total Cost": 0.0,
                                    "Plan Rows": 1,
                                    "Filter": "(e_2.tenant = 3)",
                                },
                            ],
                        },
                        {
                            "Node Type": "Hash",
                            "Parallel Aware": True,
                            "Total Cost": 3634.71,
                            "Plan Rows": 295,
                            "Plans": [
                                {
                                    "Node Type": "Seq Scan",
                                    "Parallel Aware": True,
                                    "Relation Name": "slow_demo",
                                    "Schema": "public",
                                    "Alias": "s",
                                    "Total Cost": 3634.71,
                                    "Plan Rows": 295,
                                    "Filter": "(s.flag AND (lower(s.note) = 'x'::text))",
                                }
                            ],
                        },
                    ],
                }
            ],
        }
    }
]


def index(name, *columns, valid=True, partial=False):
    return {"name": name, "columns": list(columns), "valid": valid, "partial": partial, "unique": False}


def catalog(slow_demo_indexes=(), ev_indexes=(), rows=200_000):
    return {
        ("public", "slow_demo"): {
            "kind": "r",
            "rows": rows,
            "root": None,
            "indexes": [index("slow_demo_pkey", "id"), *slow_demo_indexes],
        },
        ("public", "ev"): {
            "kind": "p",
            "rows": rows,
            "root": None,
            "indexes": [index("ev_tenant_created_at_idx", "tenant", "created_at"), *ev_indexes],
        },
        ("public", "ev_p1"): {
            "kind": "r",
            "rows": rows,
            "root": ("public", "ev"),
            "indexes": [index("ev_p1_tenant_created_at_idx", "tenant", "created_at")],
        },
        ("public", "ev_p2"): {"kind": "r", "rows": 0, "root": ("public", "ev"), "indexes": []},
    }


EV_TREE = [
    {"schema": "public", "name": "ev_p1", "leaf": True, "level": 1, "parent": ("public", "ev")},
    {"schema": "public", "name": "ev_p2", "leaf": True, "level": 1, "parent": ("public", "ev")},
]


# -- plans ---------------------------------------------------------------------------------------


def test_a_plan_is_read_from_its_text_or_its_parsed_json_and_told_in_one_line():
    plan = pg_plans.load(json.dumps(PLAIN))
    assert plan == pg_plans.load(PLAIN) and plan["Node Type"] == "Aggregate"
    told = pg_plans.summary(plan)
    assert told["seq_scans"] == 1 and told["index_scans"] == 0 and told["total_cost"] == 4370.02
    assert told["text"] == (
        "Aggregate (cost 4370.02, rows 1): Seq Scan on public.slow_demo (filter (slow_demo.code = $1))"
    )
    (scan,) = told["scans"]
    assert scan["relation"] == "slow_demo" and scan["alias"] == "slow_demo" and scan["rows"] == 4


def test_a_parallel_scan_counts_the_rows_of_every_process():
    p1, p2 = pg_plans.scans(pg_plans.load(PARTITIONED))
    assert (p1["relation"], p1["rows"]) == ("ev_p1", 3)  # 1 row per process, 2 workers and the leader
    assert p2["alias"] == "ev_2"


def test_an_index_scan_is_told_with_its_index_and_condition():
    told = pg_plans.summary(pg_plans.load(INDEXED))
    assert told["seq_scans"] == 0 and told["index_scans"] == 1
    assert "Index Scan using slow_demo_pkey on public.slow_demo (cond (slow_demo.id = $1))" in told["text"]


# -- filters --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("(t.code = $1)", {"eq": ["code"], "range": []}),
        ("((t.flag IS NULL) AND (t.code = $1))", {"eq": ["flag", "code"], "range": []}),
        ("((t.vc)::text = $1)", {"eq": ["vc"], "range": []}),
        ("((t.vc)::text = 'x'::text)", {"eq": ["vc"], "range": []}),
        ("(t.code = ANY ($1))", {"eq": ["code"], "range": []}),
        ("(t.code = ANY ('{1,2,3}'::integer[]))", {"eq": ["code"], "range": []}),
        ("(5 = t.code)", {"eq": ["code"], "range": []}),
        ("((t.code >= 1) AND (t.code <= 5) AND (t.note ~~ 'ab%'::text))", {"eq": [], "range": ["code"]}),
        ("(t.ts > (now() - '1 day'::interval))", {"eq": [], "range": ["ts"]}),
        ("($1 < t.n)", {"eq": [], "range": ["n"]}),
        ("((t.\"Odd Col\" = 3) AND (lower(t.note) = 'a'::text))", {"eq": ["Odd Col"], "range": []}),
        # Not plain: OR, a function of the column, another column of the table, IS NOT NULL, <>.
        ("((t.code = 1) OR t.flag)", {"eq": [], "range": []}),
        ("(lower(t.note) = $1)", {"eq": [], "range": []}),
        ("(t.a = t.b)", {"eq": [], "range": []}),
        ("(t.code IS NOT NULL)", {"eq": [], "range": []}),
        ("(t.code <> $1)", {"eq": [], "range": []}),
        ("(t.code = (hashed SubPlan 1))", {"eq": [], "range": []}),
        # A string that looks like a condition is a string.
        ("(t.note = 'x AND t.code = 1'::text)", {"eq": ["note"], "range": []}),
    ],
)
def test_filter_columns_keeps_the_plain_comparisons_only(expression, expected):
    assert pg_plans.filter_columns(expression, "t") == expected


def test_the_index_has_the_equality_columns_then_one_range_column():
    assert pg_plans.index_columns({"eq": ["actor"], "range": ["n", "m"]}) == ["actor", "n"]
    assert pg_plans.index_columns({"eq": ["a", "b", "c", "d"], "range": ["n"]}) == ["a", "b", "c"]
    assert pg_plans.index_columns({"eq": [], "range": ["ts"]}) == ["ts"]


# -- suggestions ----------------------------------------------------------------------------------


def test_a_seq_scan_with_a_filter_on_an_unindexed_column_of_a_large_table_gets_its_index():
    (s,), notes = pg_plans.suggest(pg_plans.load(PLAIN), catalog())
    assert notes == []
    assert (s["schema"], s["table"], s["columns"], s["partitioned"]) == (
        "public",
        "slow_demo",
        ["code"],
        False,
    )
    assert s["scans"] == ["public.slow_demo"] and s["rows"] == 200_000 and s["estimated_rows"] == 4
    name = pg_plans.index_name(s["table"], s["columns"])
    assert name == "slow_demo_code_idx"
    assert pg_plans.suggestion_sql(s, name) == (
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS slow_demo_code_idx ON public.slow_demo (code)"
    )
    (step,) = pg_plans.create_steps(s, name)
    assert step["concurrently"] and step["sql"] == pg_plans.suggestion_sql(s, name)


def test_a_plan_that_uses_an_index_gets_no_suggestion():
    assert pg_plans.suggest(pg_plans.load(INDEXED), catalog()) == ([], [])


def test_an_index_that_leads_with_the_column_is_not_suggested_again():
    found, (note,) = pg_plans.suggest(pg_plans.load(PLAIN), catalog([index("by_code", "code", "id")]))
    assert found == [] and "index by_code leads with code" in note
    # An INVALID index (a failed concurrent build) or a partial one does not count.
    for ix in (index("by_code", "code", valid=False), index("by_code", "code", partial=True)):
        found, _ = pg_plans.suggest(pg_plans.load(PLAIN), catalog([ix]))
        assert [s["columns"] for s in found] == [["code"]]


def test_no_index_on_a_small_table_nor_for_a_filter_that_keeps_most_rows():
    found, (note,) = pg_plans.suggest(pg_plans.load(PLAIN), catalog(rows=5000))
    assert found == [] and "5000 rows, under 10000" in note
    found, (note,) = pg_plans.suggest(pg_plans.load(PLAIN), catalog(rows=30), min_table_rows=10)
    assert found == [] and "keeps about 4 of 30 rows" in note


def test_a_partitioned_tables_append_plan_gets_one_index_on_the_partitioned_table():
    (s,), notes = pg_plans.suggest(pg_plans.load(PARTITIONED), catalog())
    assert notes == []  # the empty partition's scan is no finding
    assert (s["table"], s["columns"], s["partitioned"]) == ("ev", ["actor", "n"], True)
    assert s["scans"] == ["public.ev_p1"] and s["rows"] == 200_000
    steps = pg_plans.create_steps(s, "ev_actor_n_idx", EV_TREE)
    assert [st["sql"] for st in steps] == [
        "CREATE INDEX IF NOT EXISTS ev_actor_n_idx ON ONLY public.ev (actor, n)",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ev_p1_actor_n_idx ON public.ev_p1 (actor, n)",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS ev_p2_actor_n_idx ON public.ev_p2 (actor, n)",
        "ALTER INDEX public.ev_actor_n_idx ATTACH PARTITION public.ev_p1_actor_n_idx",
        "ALTER INDEX public.ev_actor_n_idx ATTACH PARTITION public.ev_p2_actor_n_idx",
    ]
    # Never CONCURRENTLY on the partitioned table, never a plain CREATE INDEX that locks every partition.
    assert not [st for st in steps if st["relation"] == ("public", "ev") and st["concurrently"]]
    assert all(" ON ONLY " in st["sql"] or st["relation"] != ("public", "ev") for st in steps)
    assert pg_plans.suggestion_sql(s, "ev_actor_n_idx", steps) == "; ".join(st["sql"] for st in steps)


def test_an_index_on_the_partitioned_table_serves_its_partitions_scans():
    found, (note,) = pg_plans.suggest(
        pg_plans.load(PARTITIONED), catalog(ev_indexes=[index("ev_a", "actor")])
    )
    assert found == [] and note.startswith("public.ev: index ev_a leads with actor")


def test_nested_partitions_are_built_top_down_and_attached_bottom_up():
    tree = [
        {"schema": "public", "name": "ev_2026", "leaf": False, "level": 1, "parent": ("public", "ev")},
        {"schema": "public", "name": "ev_2026_01", "leaf": True, "level": 2, "parent": ("public", "ev_2026")},
    ]
    s = {"schema": "public", "table": "ev", "columns": ["actor"], "partitioned": True}
    sql = [
        st["sql"] for st in pg_plans.create_steps(s, "ev_actor_idx", tree, {("public", "ev_2026_01"): "old"})
    ]
    assert sql == [
        "CREATE INDEX IF NOT EXISTS ev_actor_idx ON ONLY public.ev (actor)",
        "CREATE INDEX IF NOT EXISTS ev_2026_actor_idx ON ONLY public.ev_2026 (actor)",
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS old ON public.ev_2026_01 (actor)",
        "ALTER INDEX public.ev_2026_actor_idx ATTACH PARTITION public.old",
        "ALTER INDEX public.ev_actor_idx ATTACH PARTITION public.ev_2026_actor_idx",
    ]


def test_an_invalid_index_of_the_same_name_is_dropped_before_it_is_built_again():
    s = {"schema": "public", "table": "slow_demo", "columns": ["code"], "partitioned": False}
    drop, build = pg_plans.create_steps(
        s, "slow_demo_code_idx", drop_first=[("public", "slow_demo_code_idx")]
    )
    assert drop["sql"] == "DROP INDEX CONCURRENTLY IF EXISTS public.slow_demo_code_idx"
    assert build["sql"].startswith("CREATE INDEX CONCURRENTLY IF NOT EXISTS slow_demo_code_idx")


def test_a_filter_on_no_plain_column_and_an_empty_partition_get_no_index():
    found, notes = pg_plans.suggest(pg_plans.load(JOIN), catalog())
    assert found == []
    assert notes == [
        "public.slow_demo: the filter (s.flag AND (lower(s.note) = 'x'::text)) compares no plain column"
    ]


# -- names and statements -------------------------------------------------------------------------


def test_identifiers_are_quoted_when_sql_needs_it():
    assert pg_plans.quote_ident("slow_demo") == "slow_demo"
    assert pg_plans.quote_ident("user") == '"user"' and pg_plans.quote_ident("Odd Col") == '"Odd Col"'
    assert pg_plans.quote_ident('a"b') == '"a""b"'
    assert pg_plans.qualified("public", "order") == 'public."order"'


def test_index_names_are_postgresqls_own_and_fit_in_63_bytes():
    assert pg_plans.index_name("ev", ["actor", "n"]) == "ev_actor_n_idx"
    assert pg_plans.index_name("ev", ["actor"], "1") == "ev_actor_idx1"
    long_a = pg_plans.index_name("t" * 60, ["column_a"])
    long_b = pg_plans.index_name("t" * 60, ["column_b"])
    assert len(long_a.encode()) <= 63 and len(long_b.encode()) <= 63 and long_a != long_b
    assert long_a == pg_plans.index_name("t" * 60, ["column_a"])


@pytest.mark.parametrize(
    ("query", "why"),
    [
        ("SELECT count(*) FROM slow_demo WHERE code = $1", None),
        ("  /* app */ (SELECT 1) UNION (SELECT 2);", None),
        ("WITH a AS (SELECT 1) SELECT * FROM a", None),
        ("SELECT 'delete me' FROM t", None),
        ("UPDATE t SET a = $1 WHERE b = $2", "UPDATE is not a read"),
        ("INSERT INTO t VALUES ($1)", "INSERT is not a read"),
        ("ANALYZE t", "ANALYZE is not a read"),
        ("WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d", "it writes"),
        ("SELECT * INTO copy FROM t", "it writes"),
        ("SELECT 1; DROP TABLE t", "more than one statement"),
        ("SELECT 1 /* ; */", "more than one statement"),
        ("", "no query text"),
    ],
)
def test_only_one_read_is_planned(query, why):
    got = pg_plans.plannable(query)
    assert (got is None) if why is None else (got and why in got), got


def test_parameters_are_counted_outside_strings():
    assert pg_plans.parameters("SELECT * FROM t WHERE a = $1 AND b IN ($2, $10)") == 10
    assert pg_plans.parameters("SELECT '$5' FROM t WHERE a = $1") == 1
    assert pg_plans.parameters("SELECT 1") == 0


@pytest.mark.parametrize(
    ("text", "query"),
    [
        ("SELECT 1", True),
        ("  /* x */ select 1", True),
        ("-- c\nWITH a AS (SELECT 1) SELECT * FROM a", True),
        ("(SELECT 1) UNION (SELECT 2)", True),
        ("DELETE FROM t WHERE a = $1", True),
        ("ANALYZE t", False),
        ("COPY t FROM stdin", False),
        ("CREATE INDEX CONCURRENTLY i ON t (a)", False),
        ("selectx", False),
    ],
)
def test_utility_statements_are_not_the_slow_queries(text, query):
    assert pg_plans.is_query(text) is query


# -- the module's findings ------------------------------------------------------------------------


def statement(queryid="42", **extra):
    return {
        "queryid": queryid,
        "user": "audit_user",
        "database": "audit_logs",
        "calls": 20,
        "mean_ms": 152.44,
        "total_ms": 3048.8,
        "rows": 20,
        "query": "SELECT count(*) FROM slow_demo WHERE code = $1",
        "plan": pg_plans.summary(pg_plans.load(PLAIN)),
        "plan_method": "generic_plan",
        "plan_error": None,
        "suggestions": ["slow_demo_code_idx"],
        "notes": [],
        "plan_after": None,
    } | extra


def suggestion(**extra):
    s = {
        "schema": "public",
        "table": "slow_demo",
        "columns": ["code"],
        "partitioned": False,
        "scans": ["public.slow_demo"],
        "rows": 200_000,
        "estimated_rows": 4,
        "statements": ["42"],
        "name": "slow_demo_code_idx",
        "created": None,
        "error": None,
        "cleanup": None,
        "fixes": {},
    } | extra
    s["sql"] = pg_plans.suggestion_sql(s, s["name"])
    s["steps"] = [s["sql"]]
    return s


def test_one_finding_per_slow_statement_with_its_figures_plan_and_index():
    (f,) = pgs.statement_findings([statement()], [suggestion()], create=False, check_mode=False)
    assert f["severity"] == "warning" and f["check"] == "slow_statement" and f["remediation"] is None
    assert f["summary"].startswith(
        "mean 152.4 ms over 20 calls (total 3048.8 ms), audit_user: SELECT count(*)"
    )
    assert (
        "Seq Scan on public.slow_demo" in f["summary"] and "missing index slow_demo_code_idx" in f["summary"]
    )
    ev = f["evidence"]
    assert (ev["calls"], ev["mean_ms"], ev["total_ms"], ev["seq_scans"]) == (20, 152.44, 3048.8, 1)
    assert ev["suggested_indexes"] == [
        "CREATE INDEX CONCURRENTLY IF NOT EXISTS slow_demo_code_idx ON public.slow_demo (code)"
    ]


def test_a_statement_without_a_plan_says_why():
    st = statement(plan=None, plan_method=None, plan_error="UPDATE is not a read", suggestions=[])
    (f,) = pgs.statement_findings([st], [], create=True, check_mode=False)
    assert f["summary"].endswith("no plan: UPDATE is not a read") and f["remediation"] is None


def test_the_missing_index_is_listed_made_or_its_failure_told():
    (told,) = pgs.suggestion_findings([suggestion()], create=False, check_mode=False)
    assert told["check"] == "missing_index" and told["remediation"] is None
    assert told["summary"] == "no index on public.slow_demo (code) for 1 slow statement scanning 200000 rows"
    (would,) = pgs.suggestion_findings([suggestion()], create=True, check_mode=True)
    assert would["remediation"].startswith("would run: CREATE INDEX CONCURRENTLY")
    (made,) = pgs.suggestion_findings([suggestion(created=True)], create=True, check_mode=False)
    assert made["remediation"].startswith("created slow_demo_code_idx")
    failed = suggestion(
        created=False, error="canceling statement due to lock timeout", cleanup="dropped again"
    )
    (bad,) = pgs.suggestion_findings([failed], create=True, check_mode=False)
    assert bad["severity"] == "critical" and bad["check"] == "index_build"
    assert "lock timeout" in bad["summary"] and bad["remediation"] == "dropped again"


def test_merged_suggestions_serve_every_statement_that_needs_them():
    a, b = suggestion(statements=[]), suggestion(statements=[], scans=["public.other"])
    (m,) = pgs.merge_suggestions([("1", [a]), ("2", [b])])
    assert m["statements"] == ["1", "2"] and m["scans"] == ["public.slow_demo", "public.other"]


def test_an_invalid_index_is_reported_and_rebuilt_only_when_it_is_the_modules_own():
    invalid = [
        {"schema": "public", "name": "slow_demo_code_idx", "kind": "i", "table": "public.slow_demo"},
        {"schema": "public", "name": "someone_elses", "kind": "i", "table": "public.slow_demo"},
    ]
    ours = suggestion(fixes={"public.slow_demo_code_idx": "drop"})
    found = pgs.invalid_findings(invalid, [ours], create=False, check_mode=False)
    assert [f["check"] for f in found] == ["invalid_index", "invalid_index"]
    assert all("INVALID" in f["summary"] and f["remediation"] is None for f in found)
    would, other = pgs.invalid_findings(invalid, [ours], create=True, check_mode=True)
    assert would["remediation"].startswith("would drop it") and other["remediation"] is None
    done, other = pgs.invalid_findings(invalid, [ours | {"created": True}], create=True, check_mode=False)
    assert done["remediation"] == "dropped and built again" and "DROP INDEX CONCURRENTLY" in other["summary"]


def test_a_missing_extension_names_its_fix():
    state = {
        "available": False,
        "preloaded": False,
        "installed": False,
        "version": None,
        "error": "not created",
    }
    f = pgs.extension_finding(state, "audit_logs")
    assert f["severity"] == "warning" and f["check"] == "pg_stat_statements"
    assert (
        "shared_preload_libraries" in f["summary"] and "CREATE EXTENSION pg_stat_statements" in f["summary"]
    )
    f = pgs.extension_finding(state | {"preloaded": True}, "audit_logs")
    assert "CREATE EXTENSION pg_stat_statements in database audit_logs" in f["summary"]
    assert "restart" not in f["summary"]


def test_the_statements_query_is_of_the_database_and_leaves_out_the_modules_own():
    new = pgs.statements_sql(170000, '"public"', "total_time")
    assert "mean_exec_time >= %(min_mean_ms)s" in new and "ORDER BY total_ms DESC" in new
    assert "s.dbid = %(dbid)s" in new and "NOT LIKE %(mark)s" in new and "~* %(queries)s" in new
    assert "s.mean_time" in pgs.statements_sql(120000, '"public"', "mean_time")
    # Every statement of the module's own carries the mark that query leaves out.
    for sql in (
        pgs.Q_EXTENSION,
        pgs.Q_RELATIONS,
        pgs.Q_TREE,
        pgs.Q_INDEXES,
        pgs.Q_INVALID,
        pgs.Q_INDEX_STATE,
        new,
    ):
        assert sql.startswith(pgs.MARK)
