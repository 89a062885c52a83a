#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only: the targets are Debian 12 and 13 (Python 3.11+). psycopg2 (python3-psycopg2) is
# needed on the database host, where this module runs; nothing else beyond the standard library.

DOCUMENTATION = r"""
---
module: pg_statements
short_description: Slow statements of pg_stat_statements, their plans, and the indexes they miss
version_added: 0.4.0
description:
  - The troubleshooting guide's Slow Queries procedure. Reads the slowest statements of
    C(pg_stat_statements) in O(db) (by mean or total execution time, over O(min_mean_ms) and
    O(min_calls)), with calls, mean and total time, rows, role and database.
  - Plans each with C(EXPLAIN), verbose and in JSON, never with C(ANALYZE), so the statement is
    never run. A statement with parameters (pg_stat_statements shows its constants as C($1)...)
    is planned with C(GENERIC_PLAN) on PostgreSQL 16 and later, and on 12 to 15 as a prepared
    statement under C(plan_cache_mode=force_generic_plan) (C(PREPARE), then C(EXPLAIN EXECUTE)
    with nulls, which the generic plan does not look at). The statement's text is planned only
    when it is one read (C(SELECT), C(WITH ... SELECT)), never a statement that writes (C(INSERT),
    C(UPDATE), C(DELETE), C(MERGE), a data-modifying C(WITH), C(SELECT INTO)) nor a utility
    statement, although EXPLAIN without ANALYZE would run neither; each in a read-only
    transaction under O(explain_timeout_ms). A statement that cannot be planned says why.
  - From each plan, the missing index (module_utils/pg_plans.py) is a Seq Scan on a table of at
    least O(min_table_rows) rows whose Filter compares plain columns with a parameter or a
    constant (C(col = $1), C(col > $1), C(col = ANY $1) of an array, C(col IS NULL)...), keeps at most
    O(max_selectivity) of the rows by the planner's estimate, and whose columns no valid index of
    the table leads with. The index has the columns compared for equality, then one compared by
    range, and PostgreSQL's own name (C(<table>_<columns>_idx)).
  - A Seq Scan on a partition (under an Append) is a scan of its partitioned table, and the index
    is suggested on the partitioned table, for all its partitions. CREATE INDEX CONCURRENTLY is
    not possible on a partitioned table, and a plain CREATE INDEX there would hold a SHARE lock on
    every partition, blocking every insert, until all are built. So the index is made with
    C(CREATE INDEX ... ON ONLY) on the partitioned table (in the catalog only, invalid), C(CREATE
    INDEX CONCURRENTLY) on each partition, and C(ALTER INDEX ... ATTACH PARTITION) of each, after
    which PostgreSQL marks the partitioned index valid; partitions made later get it by
    themselves. Each step is idempotent, so a run that stopped half way is finished by the next.
  - With O(create_indexes=true) the suggested indexes are made with C(CREATE INDEX CONCURRENTLY IF
    NOT EXISTS), so that the table's reads and writes go on, and each statement is planned
    again. An index left INVALID by a failed concurrent build is reported; the module drops it
    (C(DROP INDEX CONCURRENTLY)) and builds it again when it is the one it suggests, and never
    touches another's.
  - With O(reset=true), and when a slow statement was found, the statistics of O(db) are reset
    (C(pg_stat_statements_reset) for that database), so that the next run measures anew; a second
    run then finds nothing slow and resets nothing.
  - Check mode, and the runs without O(create_indexes) and O(reset), change nothing; they list the
    indexes and the steps that would make them. C(changed) is true only when an index was made or
    the statistics reset (in check mode, when one would be).
author: audit-log project (!UNKNOWN)
options:
  order_by:
    description: Rank the statements by mean or by total execution time.
    type: str
    choices: [mean_time, total_time]
    default: mean_time
  min_mean_ms:
    description: Only statements whose mean execution time is at least this many milliseconds.
    type: float
    default: 100
  min_calls:
    description: Only statements called at least this many times.
    type: int
    default: 1
  top:
    description: At most this many statements.
    type: int
    default: 10
  query_max_length:
    description: Query texts are cut to this many characters in the results (the whole text is planned).
    type: int
    default: 500
  explain:
    description: Plan each statement (and suggest its indexes). V(false) lists the statements only.
    type: bool
    default: true
  explain_timeout_ms:
    description: The statement_timeout of each EXPLAIN.
    type: int
    default: 5000
  min_table_rows:
    description: No index is suggested on a table of fewer rows (pg_class.reltuples, or the live rows).
    type: int
    default: 10000
  max_selectivity:
    description:
      - No index is suggested for a filter the planner expects to keep more than this share of the
        table's rows (an index would not be used).
    type: float
    default: 0.1
  create_indexes:
    description:
      - Make the suggested indexes (see the description for how, on a partitioned table). Each
        build reads the whole table and takes disk space, so off unless asked for.
    type: bool
    default: false
  index_timeout_seconds:
    description: The statement_timeout of each index build.
    type: int
    default: 1800
  lock_timeout_seconds:
    description:
      - The lock_timeout of each step that makes an index. A concurrent build waits for the
        transactions that could see the table; rather than queue behind a long one, the step
        fails (the build's INVALID index is dropped again) and a later run tries anew.
    type: int
    default: 10
  reset:
    description:
      - Reset the statistics of O(db) in C(pg_stat_statements) when a slow statement was found
        (after any index was made), so that the next run measures anew. The history is lost,
        so off unless asked for.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - auditlog.ops.postgres
attributes:
  check_mode:
    support: full
    details: Lists the statements, plans and indexes it would make; makes and resets nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Needs C(pg_stat_statements) in C(shared_preload_libraries) and created in O(db) (the
    postgresql role does both); without it a warning names the fix. Reading every role's
    statements and resetting them needs a superuser (the default login, C(postgres) over the local
    socket), or C(pg_read_all_stats) and the grant of C(pg_stat_statements_reset).
  - Only the statements of O(db) are read and planned (a plan, an index and the reset are of one
    database). Statements are planned with the login's C(search_path), not their role's.
  - The planner may evaluate immutable functions of a statement while it plans it; in a read-only
    transaction, under a timeout.
  - PostgreSQL 12 and later (C(pg_partition_root), C(plan_cache_mode)).
seealso:
  - module: auditlog.ops.pg_diagnostics
  - name: pg_stat_statements
    description: The statistics of the statements (shared_preload_libraries).
    link: https://www.postgresql.org/docs/current/pgstatstatements.html
  - name: Building indexes concurrently
    description: CREATE INDEX CONCURRENTLY, and its INVALID index after a failure.
    link: https://www.postgresql.org/docs/current/sql-createindex.html#SQL-CREATEINDEX-CONCURRENTLY
  - name: Partition maintenance
    description: CREATE INDEX ON ONLY and ALTER INDEX ATTACH PARTITION.
    link: https://www.postgresql.org/docs/current/ddl-partitioning.html#DDL-PARTITIONING-DECLARATIVE-MAINTENANCE
"""

EXAMPLES = r"""
- name: The slowest statements of audit_logs, their plans and the indexes they miss
  auditlog.ops.pg_statements:
    db: audit_logs
  become: true
  become_user: postgres
  register: slow

- name: Make the missing indexes, then measure anew (only with the operator's consent)
  auditlog.ops.pg_statements:
    db: audit_logs
    create_indexes: "{{ slow_queries_create_indexes | default(false) | bool }}"
    reset: "{{ slow_queries_reset_statistics | default(false) | bool }}"
  become: true
  become_user: postgres

- name: The ten statements with the most time in all, called at least 100 times
  auditlog.ops.pg_statements:
    db: audit_logs
    order_by: total_time
    min_mean_ms: 0
    min_calls: 100
  become: true
  become_user: postgres
"""

RETURN = r"""
changed:
  description: Whether an index was made or the statistics reset (in check mode, would be).
  returned: always
  type: bool
available:
  description: Whether the server could be reached and logged in to.
  returned: always
  type: bool
error:
  description: Why it could not.
  returned: when RV(available) is false
  type: str
server:
  description: Where the module connected to.
  returned: always
  type: str
server_version:
  description: The server's version number (C(server_version_num)).
  returned: when available
  type: int
  sample: 170002
pg_stat_statements:
  description:
    - Whether the extension is C(preloaded) (C(shared_preload_libraries)), C(installed) in O(db)
      (with its C(version) and C(schema)), and C(available) (its view could be read), with the
      C(error) when not.
  returned: always
  type: dict
  sample: {"available": true, "installed": true, "preloaded": true, "version": "1.11",
           "schema": "public", "error": null}
statements:
  description:
    - The slow statements, slowest first, each with its figures (times in milliseconds), its
      C(plan) (the plan's top node, cost, rows, its scans and C(text), one line), the
      C(plan_method) (V(explain), V(generic_plan), V(prepared_generic_plan)) or the
      C(plan_error) that says why there is none, the C(suggestions) (index names), C(notes) on
      the scans that got none, and C(plan_after) when an index was made for it.
  returned: always
  type: list
  elements: dict
  sample: [{"queryid": "-4211", "user": "audit_user", "database": "audit_logs", "calls": 20,
            "mean_ms": 152.4, "total_ms": 3048.0, "rows": 20,
            "query": "SELECT count(*) FROM slow_demo WHERE code = $1",
            "plan": {"node": "Aggregate", "total_cost": 4370.01, "rows": 1, "seq_scans": 1,
                     "index_scans": 0, "text": "Aggregate (cost 4370.01, rows 1): Seq Scan on
                     public.slow_demo (filter (slow_demo.code = $1))"},
            "plan_method": "generic_plan", "plan_error": null,
            "suggestions": ["slow_demo_code_idx"], "notes": [], "plan_after": null}]
suggestions:
  description:
    - The missing indexes, each with the table, its C(columns), C(partitioned), the C(sql) that
      shows it and the C(steps) that build it, the C(statements) (queryids) it serves, the table's
      C(rows), and C(created) (true, false when the build failed with C(error), and C(cleanup) what
      became of its INVALID index; null when it was not to be built). C(fixes) names the INVALID
      indexes of an earlier failed build that the steps drop and build again (V(drop)) or finish
      (V(finish), a partitioned index).
  returned: always
  type: list
  elements: dict
  sample: [{"schema": "public", "table": "slow_demo", "columns": ["code"], "partitioned": false,
            "name": "slow_demo_code_idx",
            "sql": "CREATE INDEX CONCURRENTLY IF NOT EXISTS slow_demo_code_idx ON public.slow_demo (code)",
            "steps": ["CREATE INDEX CONCURRENTLY IF NOT EXISTS slow_demo_code_idx
                      ON public.slow_demo (code)"],
            "statements": ["-4211"], "rows": 200000, "estimated_rows": 4, "created": null,
            "error": null, "cleanup": null, "fixes": {}}]
invalid_indexes:
  description: The indexes of O(db) that are INVALID (a failed concurrent build), as found before any build.
  returned: when available
  type: list
  elements: dict
  sample: [{"schema": "public", "name": "slow_demo_code_idx", "table": "public.slow_demo",
            "definition": "CREATE INDEX slow_demo_code_idx ON public.slow_demo USING btree (code)"}]
created:
  description: The indexes made (in check mode, that would be), schema-qualified.
  returned: always
  type: list
  elements: str
reset:
  description: Whether the statistics of O(db) were reset (in check mode, would be).
  returned: always
  type: bool
findings:
  description:
    - One per slow statement (check C(slow_statement), warning, with its figures, plan and
      suggested index in the evidence), one per missing index (C(missing_index), with the
      remediation when it was made), C(index_build) (critical) for a build that failed,
      C(invalid_index) for an INVALID index, C(statistics_reset) (info), and C(pg_stat_statements)
      (warning) when the extension is missing, naming the fix.
  returned: always
  type: list
  elements: dict
"""

# Imports after the documentation, as in every Ansible module.
import re  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import pg_plans, postgres  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding  # noqa: E402

COMPONENT = "postgresql"
# Every statement of the module's own carries this comment, and the statements that carry it are
# never listed: its EXPLAINs and index builds are not the slow statements of the database.
MARK = "/* auditlog.ops.pg_statements */"
PREPARED = "auditlog_ops_pg_statements"
EVIDENCE_QUERY = 200


def argument_spec():
    spec = postgres.postgres_common_argument_spec()
    spec.update(
        order_by=dict(type="str", default="mean_time", choices=["mean_time", "total_time"]),
        min_mean_ms=dict(type="float", default=100),
        min_calls=dict(type="int", default=1),
        top=dict(type="int", default=10),
        query_max_length=dict(type="int", default=500),
        explain=dict(type="bool", default=True),
        explain_timeout_ms=dict(type="int", default=5000),
        min_table_rows=dict(type="int", default=10000),
        max_selectivity=dict(type="float", default=0.1),
        create_indexes=dict(type="bool", default=False),
        index_timeout_seconds=dict(type="int", default=1800),
        lock_timeout_seconds=dict(type="int", default=10),
        reset=dict(type="bool", default=False),
    )
    return spec


# -- pure logic: statements, plans and suggestions in, findings out (tests/unit/test_pg_statements_module.py)


def merge_suggestions(per_statement):
    """[(queryid, [suggestion])] -> one suggestion per (table, columns), with the statements it serves."""
    merged = {}
    for queryid, suggestions in per_statement:
        for s in suggestions:
            key = (s["schema"], s["table"], tuple(s["columns"]))
            m = merged.setdefault(key, {**s, "scans": [], "statements": [], "estimated_rows": 0})
            m["scans"] += [x for x in s["scans"] if x not in m["scans"]]
            m["estimated_rows"] = max(m["estimated_rows"], s.get("estimated_rows") or 0)
            if queryid not in m["statements"]:
                m["statements"].append(queryid)
    return list(merged.values())


def target_of(s):
    return "{} ({})".format(pg_plans.qualified(s["schema"], s["table"]), ", ".join(s["columns"]))


def statement_summary(st):
    text = "mean {:.1f} ms over {} call{} (total {:.1f} ms), {}: {}".format(
        st["mean_ms"] or 0,
        st["calls"],
        "" if st["calls"] == 1 else "s",
        st["total_ms"] or 0,
        st.get("user") or "?",
        pg_plans.cut(st["query"], 120),
    )
    if st.get("plan"):
        text += "; plan " + pg_plans.cut(st["plan"]["text"], 200)
    elif st.get("plan_error"):
        text += f"; no plan: {st['plan_error']}"
    if st.get("suggestions"):
        text += "; missing index " + ", ".join(st["suggestions"])
    return text


def statement_findings(statements, suggestions, create, check_mode):
    by_name = {s["name"]: s for s in suggestions}
    out = []
    for st in statements:
        made = [by_name[n] for n in st.get("suggestions") or [] if n in by_name]
        remediation = None
        if create and made:
            verb = "would create" if check_mode else "created"
            done = [s["name"] for s in made if check_mode or s.get("created")]
            remediation = f"{verb} index {', '.join(done)}" if done else None
        evidence = {
            k: st.get(k)
            for k in ("queryid", "user", "database", "calls", "mean_ms", "total_ms", "rows", "plan_method")
        }
        evidence["query"] = pg_plans.cut(st["query"], EVIDENCE_QUERY * 2)
        evidence["plan"] = (st.get("plan") or {}).get("text")
        evidence["plan_error"] = st.get("plan_error")
        evidence["seq_scans"] = (st.get("plan") or {}).get("seq_scans")
        evidence["suggested_indexes"] = [s["sql"] for s in made]
        evidence["notes"] = st.get("notes") or []
        if st.get("plan_after"):
            evidence["plan_after"] = st["plan_after"]["text"]
        out.append(
            finding(
                "warning",
                COMPONENT,
                "slow_statement",
                statement_summary(st),
                evidence,
                remediation=remediation,
            )
        )
    return out


def suggestion_findings(suggestions, create, check_mode):
    out = []
    for s in suggestions:
        summary = "no index on {} for {} slow statement{} scanning {} rows{}".format(
            target_of(s),
            len(s["statements"]),
            "" if len(s["statements"]) == 1 else "s",
            s.get("rows"),
            " (partitioned: its partitions too)" if s["partitioned"] else "",
        )
        evidence = {k: s.get(k) for k in ("name", "sql", "steps", "statements", "scans", "estimated_rows")}
        remediation, severity, check = None, "warning", "missing_index"
        if create and check_mode:
            remediation = "would run: " + "; ".join(s["steps"])
        elif create and s.get("created"):
            remediation = "created {} ({})".format(s["name"], "; ".join(s["steps"]))
        elif create and s.get("created") is False:
            severity, check = "critical", "index_build"
            summary = f"building index {s['name']} on {target_of(s)} failed: {s.get('error')}"
            remediation = s.get("cleanup")
        out.append(finding(severity, COMPONENT, check, summary, evidence, remediation=remediation))
    return out


def invalid_findings(invalid, suggestions, create, check_mode):
    """One per INVALID index; the remediation says when the module builds it again."""
    ours = {}
    for s in suggestions:
        for name, fix in (s.get("fixes") or {}).items():
            ours[name] = (s, fix)
    words = {
        "drop": ("drop it (DROP INDEX CONCURRENTLY) and build it again", "dropped and built again"),
        "finish": (
            "build and attach its partitions' missing indexes",
            "its partitions' indexes built and attached",
        ),
    }
    out = []
    for ix in invalid:
        qualified = f"{ix['schema']}.{ix['name']}"
        remediation = None
        s, fix = ours.get(qualified, (None, None))
        if create and s is not None:
            if check_mode:
                remediation = "would " + words[fix][0]
            elif s.get("created"):
                remediation = words[fix][1]
        if ix.get("kind") == "I":
            summary = (
                f"partitioned index {qualified} on {ix['table']} is INVALID: not every partition has a"
                " valid index attached to it"
            )
            if remediation is None:
                summary += (
                    "; build the missing ones (CREATE INDEX CONCURRENTLY) and ALTER INDEX ... ATTACH"
                    " PARTITION them"
                )
        else:
            summary = (
                f"index {qualified} on {ix['table']} is INVALID (a concurrent build failed): never used, yet"
                " kept up to date by every write"
            )
            if remediation is None:
                summary += "; DROP INDEX CONCURRENTLY it, or build it again"
        out.append(
            finding(
                "warning",
                COMPONENT,
                "invalid_index",
                summary,
                {"definition": ix.get("definition")},
                remediation,
            )
        )
    return out


def extension_finding(state, db):
    if state["available"]:
        return None
    if not state["preloaded"]:
        fix = (
            "add pg_stat_statements to shared_preload_libraries and restart PostgreSQL (the postgresql"
            f" role does), then CREATE EXTENSION pg_stat_statements in {db}"
        )
    elif not state["installed"]:
        fix = f"CREATE EXTENSION pg_stat_statements in database {db} (the postgresql role does)"
    else:
        fix = "grant pg_read_all_stats to the login, or log in as a superuser"
    return finding(
        "warning",
        COMPONENT,
        "pg_stat_statements",
        f"no statement statistics in {db}: {state['error']}; {fix}",
        evidence={k: state[k] for k in ("preloaded", "installed", "version", "error")},
    )


def reset_finding(db, count, check_mode):
    would = "would be " if check_mode else ""
    return finding(
        "info",
        COMPONENT,
        "statistics_reset",
        f"the statement statistics of {db} {would}reset: the next run measures anew",
        evidence={"slow_statements": count},
        remediation="{}pg_stat_statements_reset for database {}".format(
            "would run " if check_mode else "", db
        ),
    )


# -- the server ------------------------------------------------------------------------------------------

Q_EXTENSION = f"""{MARK}
SELECT current_setting('shared_preload_libraries') AS preload,
       (SELECT e.extversion FROM pg_extension AS e WHERE e.extname = 'pg_stat_statements') AS version,
       (SELECT n.nspname FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace
         WHERE e.extname = 'pg_stat_statements') AS schema,
       (SELECT oid FROM pg_database WHERE datname = current_database())::bigint AS dbid
"""  # noqa: S608 - the module's own text (MARK), no input of the user's


def statements_sql(version_num, schema, order_by):
    """The slow statements of the current database, from the extension in `schema` (quoted)."""
    if version_num >= 130000:
        total, mean = "total_exec_time", "mean_exec_time"
    else:
        total, mean = "total_time", "mean_time"
    order = {"mean_time": "mean_ms", "total_time": "total_ms"}[order_by]
    # The names are the module's own and the extension's schema, quoted: no input of the user's
    # is put into the text.
    return f"""{MARK}
SELECT s.queryid::text AS queryid, r.rolname AS "user", d.datname AS database, s.calls,
       round(s.{mean}::numeric, 3)::float8 AS mean_ms, round(s.{total}::numeric, 3)::float8 AS total_ms,
       s.rows, s.query
FROM {schema}.pg_stat_statements AS s
LEFT JOIN pg_roles AS r ON r.oid = s.userid
LEFT JOIN pg_database AS d ON d.oid = s.dbid
WHERE s.dbid = %(dbid)s AND s.calls >= %(min_calls)s AND s.{mean} >= %(min_mean_ms)s
  AND s.query NOT LIKE %(mark)s AND s.query ~* %(queries)s
ORDER BY {order} DESC NULLS LAST
LIMIT %(top)s
"""  # noqa: S608


Q_RELATIONS = f"""{MARK}
SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind,
       greatest(c.reltuples, coalesce(s.n_live_tup, 0), 0)::bigint AS rows,
       rn.nspname AS root_schema, r.relname AS root_name
FROM unnest(%s::text[], %s::text[]) AS w(schema, name)
JOIN pg_namespace AS n ON n.nspname = w.schema
JOIN pg_class AS c ON c.relnamespace = n.oid AND c.relname = w.name
LEFT JOIN pg_stat_all_tables AS s ON s.relid = c.oid
LEFT JOIN pg_class AS r ON c.relispartition AND r.oid = pg_partition_root(c.oid)
LEFT JOIN pg_namespace AS rn ON rn.oid = r.relnamespace
"""  # noqa: S608 - the module's own text (MARK), no input of the user's

Q_TREE = f"""{MARK}
SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind, t.isleaf AS leaf, t.level,
       pn.nspname AS parent_schema, p.relname AS parent_name,
       greatest(c.reltuples, coalesce(s.n_live_tup, 0), 0)::bigint AS rows
FROM pg_partition_tree(%s::regclass) AS t
JOIN pg_class AS c ON c.oid = t.relid
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_class AS p ON p.oid = t.parentrelid
LEFT JOIN pg_namespace AS pn ON pn.oid = p.relnamespace
LEFT JOIN pg_stat_all_tables AS s ON s.relid = c.oid
ORDER BY t.level, n.nspname, c.relname
"""  # noqa: S608 - the module's own text (MARK), no input of the user's

_INDEX_COLUMNS = """ARRAY(SELECT a.attname::text
             FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
             LEFT JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             WHERE k.ord <= i.indnkeyatts ORDER BY k.ord)"""

Q_INDEXES = f"""{MARK}
SELECT n.nspname AS schema, t.relname AS "table", ic.relname AS name, i.indisvalid AS valid,
       i.indpred IS NOT NULL AS partial, i.indisunique AS "unique", am.amname AS method,
       {_INDEX_COLUMNS} AS columns
FROM unnest(%s::text[], %s::text[]) AS w(schema, name)
JOIN pg_namespace AS n ON n.nspname = w.schema
JOIN pg_class AS t ON t.relnamespace = n.oid AND t.relname = w.name
JOIN pg_index AS i ON i.indrelid = t.oid
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_am AS am ON am.oid = ic.relam
"""  # noqa: S608 - the module's own text (MARK), no input of the user's

Q_INVALID = f"""{MARK}
SELECT n.nspname AS schema, ic.relname AS name, ic.relkind::text AS kind,
       tn.nspname || '.' || t.relname AS "table", pg_get_indexdef(i.indexrelid) AS definition
FROM pg_index AS i
JOIN pg_class AS ic ON ic.oid = i.indexrelid
JOIN pg_namespace AS n ON n.oid = ic.relnamespace
JOIN pg_class AS t ON t.oid = i.indrelid
JOIN pg_namespace AS tn ON tn.oid = t.relnamespace
WHERE NOT i.indisvalid
ORDER BY 1, 2
"""  # noqa: S608 - the module's own text (MARK), no input of the user's

Q_PARAMETERS = f"""{MARK}
SELECT cardinality(parameter_types) AS n FROM pg_prepared_statements WHERE name = %s
"""  # noqa: S608 - the module's own text (MARK), no input of the user's

Q_INVALID_NOW = f"""{MARK}
SELECT NOT indisvalid AS invalid FROM pg_index WHERE indexrelid = to_regclass(%s)
"""  # noqa: S608 - the module's own text (MARK), no input of the user's

# An index by its name, and whether it is on the table with the columns given.
Q_INDEX_STATE = f"""{MARK}
SELECT i.indisvalid AS valid, i.indrelid = to_regclass(%(table)s) AS same_table,
       i.indpred IS NULL AND NOT i.indisunique AND am.amname = 'btree'
         AND {_INDEX_COLUMNS} = %(columns)s::text[] AS same_definition
FROM pg_class AS ic
LEFT JOIN pg_index AS i ON i.indexrelid = ic.oid
LEFT JOIN pg_am AS am ON am.oid = ic.relam
WHERE ic.oid = to_regclass(%(index)s)
"""  # noqa: S608 - the module's own text (MARK), no input of the user's


def _message(exc):
    """The server's (or libpq's) first line, without its ERROR: prefix."""
    text = (getattr(exc, "pgerror", None) or str(exc) or type(exc).__name__).strip()
    for line in text.splitlines():
        if line.strip():
            return re.sub(r"^(ERROR|FATAL):\s+", "", line.strip())
    return type(exc).__name__


def _rows(cur, sql, args=None):
    cur.execute(sql, args)
    return [dict(r) for r in cur.fetchall()]


def extension_state(cur, params):
    row = _rows(cur, Q_EXTENSION)[0]
    preloaded = "pg_stat_statements" in [p.strip() for p in (row["preload"] or "").split(",")]
    state = {
        "available": False,
        "installed": row["version"] is not None,
        "preloaded": preloaded,
        "version": row["version"],
        "schema": row["schema"],
        "error": None,
        "dbid": row["dbid"],
    }
    if not state["installed"]:
        state["error"] = "the extension pg_stat_statements is not created in database {}{}".format(
            params["db"], "" if preloaded else " (nor named in shared_preload_libraries)"
        )
    elif not preloaded:
        state["error"] = (
            "pg_stat_statements is created but not in shared_preload_libraries: it records nothing"
        )
    return state


def explain(cur, query, version_num, timeout_ms):
    """(plan, method, error): the statement's plan, never run, in a read-only transaction."""
    why = pg_plans.plannable(query)
    if why:
        return None, None, why
    body = query.strip().rstrip(";").rstrip()
    count = pg_plans.parameters(body)
    if count == 0:
        method, sql = "explain", f"{MARK} EXPLAIN (VERBOSE, FORMAT JSON) {body}"
    elif version_num >= 160000:
        method, sql = "generic_plan", f"{MARK} EXPLAIN (GENERIC_PLAN, VERBOSE, FORMAT JSON) {body}"
    elif version_num >= 120000:
        method, sql = "prepared_generic_plan", None
    else:
        return None, None, "a statement with parameters is planned on PostgreSQL 12 and later only"
    prepared = False
    try:
        cur.execute(f"{MARK} BEGIN READ ONLY")
        cur.execute(f"{MARK} SET LOCAL statement_timeout = %s", (int(timeout_ms),))
        cur.execute(f"{MARK} SET LOCAL lock_timeout = %s", (min(int(timeout_ms), 1000),))
        if sql is None:
            # PostgreSQL 12 to 15: the generic plan of the statement prepared, its parameters
            # null (a generic plan does not look at them).
            cur.execute(f"{MARK} SET LOCAL plan_cache_mode = force_generic_plan")
            prepared = True
            cur.execute(f"{MARK} PREPARE {PREPARED} AS {body}")
            cur.execute(Q_PARAMETERS, (PREPARED,))
            n = cur.fetchone()["n"] or 0
            args = ", ".join(["NULL"] * n)
            sql = f"{MARK} EXPLAIN (VERBOSE, FORMAT JSON) EXECUTE {PREPARED}" + (f"({args})" if n else "")
        cur.execute(sql)
        row = cur.fetchone()
        return pg_plans.load(next(iter(row.values()))), method, None
    except postgres.psycopg2.Error as exc:
        return None, method, _message(exc)
    finally:
        cur.execute(f"{MARK} ROLLBACK")
        if prepared:
            cur.execute(f"{MARK} DEALLOCATE ALL")


def load_catalog(cur, plans):
    """The catalog suggest() needs for the relations the plans scan: kind, rows, partition root,
    indexes; and each partitioned root's tree (under the key "tree")."""
    wanted = set()
    for plan in plans:
        for scan in pg_plans.scans(plan):
            if scan.get("schema"):
                wanted.add((scan["schema"], scan["relation"]))
    catalog, trees = {}, {}
    if not wanted:
        return catalog, trees
    schemas, names = [list(x) for x in zip(*sorted(wanted), strict=True)]
    for r in _rows(cur, Q_RELATIONS, (schemas, names)):
        root = (r["root_schema"], r["root_name"]) if r["root_name"] else None
        catalog[(r["schema"], r["name"])] = {
            "kind": r["kind"],
            "rows": r["rows"],
            "root": root,
            "indexes": [],
        }
    for root in {info["root"] for info in catalog.values() if info["root"]}:
        tree = _rows(cur, Q_TREE, (pg_plans.qualified(*root),))
        members = [t for t in tree if (t["schema"], t["name"]) != root]
        trees[root] = [
            {
                "schema": t["schema"],
                "name": t["name"],
                "kind": t["kind"],
                "leaf": t["leaf"],
                "level": t["level"],
                "parent": (t["parent_schema"], t["parent_name"]),
                "rows": t["rows"],
            }
            for t in members
        ]
        top = next((t for t in tree if (t["schema"], t["name"]) == root), None)
        catalog[root] = {
            "kind": top["kind"] if top else "p",
            "rows": sum(t["rows"] or 0 for t in members if t["leaf"]),
            "root": None,
            "indexes": [],
        }
    everything = set(catalog) | {(t["schema"], t["name"]) for tree in trees.values() for t in tree}
    schemas, names = [list(x) for x in zip(*sorted(everything), strict=True)]
    indexes = {}
    for ix in _rows(cur, Q_INDEXES, (schemas, names)):
        indexes.setdefault((ix["schema"], ix["table"]), []).append(ix)
    for key, info in catalog.items():
        info["indexes"] = indexes.get(key, [])
    for tree in trees.values():
        for t in tree:
            t["indexes"] = indexes.get((t["schema"], t["name"]), [])
    return catalog, trees


def index_state(cur, schema, name, table, columns):
    """None (no relation of that name), or {valid, ours}: ours when it is an index on `table`
    with exactly these columns (a plain btree), the one the module would make."""
    rows = _rows(
        cur,
        Q_INDEX_STATE,
        {
            "index": pg_plans.qualified(schema, name),
            "table": pg_plans.qualified(*table),
            "columns": list(columns),
        },
    )
    if not rows:
        return None
    r = rows[0]
    return {"valid": bool(r["valid"]), "ours": bool(r["same_table"] and r["same_definition"])}


def choose_name(cur, table, columns):
    """PostgreSQL's name for the index (<table>_<cols>_idx, then idx1, idx2...), skipping the
    names that another relation holds; with its state when it is already ours."""
    for n in range(10):
        name = pg_plans.index_name(table[1], columns, str(n) if n else "")
        state = index_state(cur, table[0], name, table, columns)
        if state is None or state["ours"]:
            return name, state
    return pg_plans.index_name(table[1], columns, "x"), None


def plan_builds(cur, suggestion, trees):
    """The name and the steps of a suggestion, and what they do to the INVALID indexes of ours
    that an earlier run left: {"schema.name": "drop" (dropped and built anew) | "finish" (a
    partitioned index, whose partitions' indexes are built and attached)}."""
    target = (suggestion["schema"], suggestion["table"])
    name, state = choose_name(cur, target, suggestion["columns"])
    invalid, fixes = [], {}
    child_names = {}
    if state and not state["valid"]:
        fixes[f"{target[0]}.{name}"] = "finish" if suggestion["partitioned"] else "drop"
        if not suggestion["partitioned"]:
            invalid.append((target[0], name))
    tree = trees.get(target, []) if suggestion["partitioned"] else []
    for node in tree:
        rel = (node["schema"], node["name"])
        same = [
            ix["name"]
            for ix in node.get("indexes") or []
            if ix["valid"]
            and list(ix["columns"] or []) == list(suggestion["columns"])
            and not ix["partial"]
            and not ix["unique"]
            and ix["method"] == "btree"
        ]
        if same and node["leaf"]:
            child_names[rel] = same[0]  # attached as it is
            continue
        child, child_state = choose_name(cur, rel, suggestion["columns"])
        child_names[rel] = child
        if child_state and not child_state["valid"]:
            fixes[f"{rel[0]}.{child}"] = "drop" if node["leaf"] else "finish"
            if node["leaf"]:
                invalid.append((rel[0], child))
    steps = pg_plans.create_steps(suggestion, name, tree, child_names, drop_first=invalid)
    return name, steps, fixes


def guards(cur, statement_timeout_ms=30000, lock_timeout_ms=1000):
    """postgres.set_guards, marked as the module's own."""
    cur.execute(f"{MARK} SET statement_timeout = %s", (int(statement_timeout_ms),))
    cur.execute(f"{MARK} SET lock_timeout = %s", (int(lock_timeout_ms),))


def build(cur, suggestion, params):
    """Run the steps: (created, error, cleanup). An index that a failed concurrent step of this
    run leaves INVALID is dropped again, or reported."""
    guards(cur, params["index_timeout_seconds"] * 1000, params["lock_timeout_seconds"] * 1000)
    try:
        for step in suggestion["step_plan"]:
            existed = (
                step["concurrently"]
                and _rows(
                    cur,
                    f"{MARK} SELECT to_regclass(%s) IS NOT NULL AS e",
                    (pg_plans.qualified(*step["index"]),),
                )[0]["e"]
            )
            try:
                cur.execute(f"{MARK} {step['sql']}")
            except postgres.psycopg2.Error as exc:
                return False, f"{step['sql']}: {_message(exc)}", _cleanup(cur, step, existed)
        state = index_state(
            cur,
            suggestion["schema"],
            suggestion["name"],
            (suggestion["schema"], suggestion["table"]),
            suggestion["columns"],
        )
        if not (state and state["valid"]):
            return False, "the index is not valid after its steps", None
        return True, None, None
    finally:
        guards(cur)


def _cleanup(cur, step, existed):
    """After a failed step: drop the INVALID index a concurrent build of this run left."""
    if not step["concurrently"] or existed:
        return None
    index = pg_plans.qualified(*step["index"])
    still = _rows(cur, Q_INVALID_NOW, (index,))
    if not still or not still[0]["invalid"]:
        return None
    try:
        cur.execute(f"{MARK} DROP INDEX CONCURRENTLY IF EXISTS {index}")
        return f"the INVALID index {index} that the build left was dropped again"
    except postgres.psycopg2.Error as exc:
        return (
            f"the build left {index} INVALID and it could not be dropped ({_message(exc)}):"
            " DROP INDEX CONCURRENTLY it"
        )


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    if not postgres.HAS_PSYCOPG2:
        module.fail_json(
            msg=missing_required_lib("psycopg2 (Debian: python3-psycopg2)"),
            exception=str(postgres.PSYCOPG2_IMPORT_ERROR),
        )
    for option in ("min_mean_ms", "min_calls", "min_table_rows"):
        if p[option] < 0:
            module.fail_json(msg=f"{option} must be 0 or more, not {p[option]}")
    for option in (
        "top",
        "query_max_length",
        "explain_timeout_ms",
        "index_timeout_seconds",
        "lock_timeout_seconds",
    ):
        if p[option] < 1:
            module.fail_json(msg=f"{option} must be 1 or more, not {p[option]}")
    if not 0 < p["max_selectivity"] <= 1:
        module.fail_json(msg=f"max_selectivity must be over 0 and at most 1, not {p['max_selectivity']}")
    result = {
        "changed": False,
        "server": postgres.server_address(p),
        "pg_stat_statements": {"available": False, "installed": None, "preloaded": None, "error": None},
        "statements": [],
        "suggestions": [],
        "created": [],
        "reset": False,
    }
    try:
        conn = postgres.connect(p, guard=False)
    except postgres.psycopg2.Error as exc:
        error = _message(exc)
        module.exit_json(
            available=False,
            error=error,
            findings=[
                finding("critical", COMPONENT, "readiness", f"PostgreSQL at {result['server']}: {error}")
            ],
            **result,
        )
    told, invalid, statements, suggestions = [], [], [], []
    try:
        with postgres.dict_cursor(conn) as cur:
            guards(cur)
            version_num = conn.server_version
            result["server_version"] = version_num
            state = extension_state(cur, p)
            rows = []
            if state["installed"] and state["preloaded"]:
                schema = pg_plans.quote_ident(state["schema"])
                try:
                    rows = _rows(
                        cur,
                        statements_sql(version_num, schema, p["order_by"]),
                        {
                            "dbid": state["dbid"],
                            "min_calls": p["min_calls"],
                            "min_mean_ms": p["min_mean_ms"],
                            "mark": f"%{MARK}%",
                            "queries": pg_plans.QUERY_PATTERN,
                            "top": p["top"],
                        },
                    )
                    state["available"] = True
                except postgres.psycopg2.Error as exc:
                    state["error"] = _message(exc)
            result["pg_stat_statements"] = {k: v for k, v in state.items() if k != "dbid"}
            if not state["available"]:
                told.append(extension_finding(state, p["db"]))

            # One plan per queryid (the same statement of two roles is one text, one plan).
            plans, tried = {}, {}
            for row in rows:
                st = dict(row)
                full = st["query"]
                st["query"] = pg_plans.cut(full, p["query_max_length"])
                st.update(
                    plan=None, plan_method=None, plan_error=None, suggestions=[], notes=[], plan_after=None
                )
                if p["explain"]:
                    if st["queryid"] not in tried:
                        tried[st["queryid"]] = explain(cur, full, version_num, p["explain_timeout_ms"])
                    plan, st["plan_method"], st["plan_error"] = tried[st["queryid"]]
                    if plan:
                        plans[st["queryid"]] = (plan, full)
                        st["plan"] = pg_plans.summary(plan)
                statements.append(st)

            catalog, trees = load_catalog(cur, [plan for plan, _ in plans.values()])
            per_statement, notes_of = [], {}
            for queryid, (plan, _) in plans.items():
                found, notes_of[queryid] = pg_plans.suggest(
                    plan, catalog, p["min_table_rows"], p["max_selectivity"]
                )
                per_statement.append((queryid, found))
            for st in statements:
                st["notes"] = notes_of.get(st["queryid"], [])
            suggestions = merge_suggestions(per_statement)

            invalid = _rows(cur, Q_INVALID)
            result["invalid_indexes"] = invalid
            for s in suggestions:
                s["name"], s["step_plan"], s["fixes"] = plan_builds(cur, s, trees)
                s["sql"] = pg_plans.suggestion_sql(s, s["name"], s["step_plan"])
                s["steps"] = [step["sql"] for step in s["step_plan"]]
                s.update(created=None, error=None, cleanup=None)
                for st in statements:
                    if st["queryid"] in s["statements"]:
                        st["suggestions"].append(s["name"])

            if p["create_indexes"] and suggestions:
                if module.check_mode:
                    result["created"] = [f"{s['schema']}.{s['name']}" for s in suggestions]
                    result["changed"] = True
                else:
                    for s in suggestions:
                        s["created"], s["error"], s["cleanup"] = build(cur, s, p)
                        if s["created"]:
                            result["created"].append(f"{s['schema']}.{s['name']}")
                            result["changed"] = True
                    # The statements planned again, now that their indexes are there.
                    made = {s["name"] for s in suggestions if s["created"]}
                    after = {}
                    for st in statements:
                        if made & set(st["suggestions"]) and st["queryid"] in plans:
                            if st["queryid"] not in after:
                                plan, _, _ = explain(
                                    cur, plans[st["queryid"]][1], version_num, p["explain_timeout_ms"]
                                )
                                after[st["queryid"]] = pg_plans.summary(plan) if plan else None
                            st["plan_after"] = after[st["queryid"]]

            if p["reset"] and statements:
                result["reset"] = True
                result["changed"] = True
                if not module.check_mode:
                    # The statistics of this database only: the others' are not this run's.
                    schema = pg_plans.quote_ident(state["schema"])
                    cur.execute(
                        f"{MARK} SELECT {schema}.pg_stat_statements_reset(0::oid, %s::oid, 0::bigint)",
                        (state["dbid"],),
                    )
    except postgres.psycopg2.Error as exc:
        module.fail_json(msg=f"PostgreSQL at {result['server']}: {_message(exc)}", **result)
    finally:
        conn.close()

    for s in suggestions:
        s.pop("step_plan", None)
    result["statements"] = statements
    result["suggestions"] = suggestions
    findings = [
        *told,
        *statement_findings(statements, suggestions, p["create_indexes"], module.check_mode),
        *suggestion_findings(suggestions, p["create_indexes"], module.check_mode),
        *invalid_findings(invalid, suggestions, p["create_indexes"], module.check_mode),
    ]
    if result["reset"]:
        findings.append(reset_finding(p["db"], len(statements), module.check_mode))
    module.exit_json(available=True, findings=findings, **result)


if __name__ == "__main__":
    main()
