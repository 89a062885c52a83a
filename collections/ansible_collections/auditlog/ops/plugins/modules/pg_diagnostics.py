#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only: the targets are Debian 12 and 13 (Python 3.11+). psycopg2 (python3-psycopg2) is
# needed on the database host, where this module runs; nothing else beyond the standard library.

DOCUMENTATION = r"""
---
module: pg_diagnostics
short_description: Diagnose a PostgreSQL server (readiness, connections, locks, sizes, statements)
version_added: 0.3.0
description:
  - Reads what the troubleshooting guide's C(pg_isready), C(pg_stat_activity),
    C(pg_stat_statements), C(pg_database_size) and C(SHOW) commands show, in one round trip,
    and returns it as structured facts with a list of RV(findings).
  - Readiness (as C(pg_isready) would say it), connections by state, database and user against
    C(max_connections), long running queries, blocked and blocking sessions
    (C(pg_blocking_pids)), database sizes and the biggest tables of O(db), the top statements of
    C(pg_stat_statements) (its absence is reported as data), the buffer cache hit ratio, the data
    checksums state with C(checksum_failures), and chosen settings.
  - Only reads; never changes anything (C(changed) is always false).
  - A server that does not answer, or refuses the login, is returned as RV(available=false) with
    the error and a critical finding, not as a failed task.
author:
  - audit-log project (!UNKNOWN)
options:
  long_query_seconds:
    description:
      - A query active for longer than this is listed in RV(long_queries) and makes a warning.
    type: float
    default: 300
  idle_in_transaction_seconds:
    description:
      - A session idle in a transaction for longer than this makes a warning (it holds its locks
        and its snapshot, which keeps vacuum from cleaning up).
    type: float
    default: 60
  connections_warn_ratio:
    description:
      - Client connections over this share of C(max_connections) make a warning.
    type: float
    default: 0.8
  connections_critical_ratio:
    description:
      - Client connections over this share of C(max_connections) make a critical finding.
    type: float
    default: 0.95
  cache_hit_warn_ratio:
    description:
      - A buffer cache hit ratio (all databases) under this makes a warning.
    type: float
    default: 0.9
  cache_hit_info_ratio:
    description:
      - A buffer cache hit ratio under this (but not under O(cache_hit_warn_ratio)) makes an
        info finding.
    type: float
    default: 0.99
  cache_hit_min_blocks:
    description:
      - The ratio is judged only after this many block reads and hits, so that a server just
        started (its cache still cold) makes no finding.
    type: int
    default: 100000
  slow_statement_ms:
    description:
      - A statement of C(pg_stat_statements) whose mean execution time is over this many
        milliseconds makes a warning. V(0) turns that off.
    type: float
    default: 1000
  statements_limit:
    description:
      - How many statements of C(pg_stat_statements) to return.
    type: int
    default: 10
  statements_order_by:
    description:
      - How to rank the statements, by mean or total execution time or by calls.
    type: str
    choices: [mean_time, total_time, calls]
    default: mean_time
  tables_limit:
    description:
      - How many of the biggest tables of O(db) to return (RV(tables)), and of those reading the
        most blocks (RV(table_io)).
    type: int
    default: 10
  query_max_length:
    description:
      - Query texts are cut to this many characters.
    type: int
    default: 300
  settings:
    description:
      - More settings to return in RV(settings), besides the module's own list.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - auditlog.ops.postgres
  - auditlog.ops.probe
seealso:
  - name: The statistics views
    description: pg_stat_activity, pg_stat_database and friends.
    link: https://www.postgresql.org/docs/current/monitoring-stats.html
  - name: pg_stat_statements
    description: The extension the statements come from (shared_preload_libraries).
    link: https://www.postgresql.org/docs/current/pgstatstatements.html
"""

EXAMPLES = r"""
- name: Diagnose the local server over its socket, as postgres (peer authentication)
  auditlog.ops.pg_diagnostics:
    db: audit_logs
  become: true
  become_user: postgres
  register: pg

- name: The same over TCP with a password, queries over 30 s counted as long
  auditlog.ops.pg_diagnostics:
    login_host: db1.example.net
    login_user: postgres
    login_password: "{{ postgres_password }}"
    ssl_mode: verify-full
    ca_cert: /etc/audit/tls/ca.crt
    db: audit_logs
    long_query_seconds: 30

- name: Show what is wrong
  ansible.builtin.debug:
    var: pg.findings
"""

RETURN = r"""
changed:
  description: Always false; the module only reads.
  returned: always
  type: bool
available:
  description: Whether the server could be reached and logged in to.
  returned: always
  type: bool
error:
  description: Why it could not (the server's or libpq's message).
  returned: when RV(available) is false
  type: str
ready:
  description:
    - Whether the server accepts connections and this login (C(ready) of RV(readiness), at the top
      level for C(until:) loops that wait for the server).
  returned: always
  type: bool
server:
  description: Where the module connected to (host:port, or the socket file).
  returned: always
  type: str
  sample: /run/postgresql/.s.PGSQL.5432
readiness:
  description:
    - What C(pg_isready) would say. C(state) is V(accepting), V(rejecting) (up but not letting
      anyone in, when starting, stopping or out of connection slots), V(tls_failed) (up, but the
      TLS connection O(ssl_mode) asks for failed), V(login_failed) (up, but this login was refused)
      or V(no_response).
  returned: always
  type: dict
  sample: {"ready": true, "state": "accepting", "server_answered": true, "in_recovery": false,
           "server_version": "15.8", "started_at": "2026-12-01T10:00:00+00:00",
           "uptime_seconds": 3600.0, "error": null}
connections:
  description:
    - Client connections (C(backend_type) C(client backend)) by state, their total against
      C(max_connections), per database and user, and C(holders), the ten clients (role,
      C(application_name), address or V(local)) with the most connections, by state.
    - C(idle_in_transaction_oldest_seconds) is the longest time a session has been idle in a
      transaction; C(idle_in_transaction_sessions) lists those over
      O(idle_in_transaction_seconds).
  returned: when available
  type: dict
  sample: {"active": 3, "idle": 20, "idle_in_transaction": 1, "idle_in_transaction_aborted": 0,
           "other": 0, "total": 24, "max_connections": 200, "superuser_reserved_connections": 3,
           "used_ratio": 0.12, "idle_in_transaction_oldest_seconds": 75.2,
           "idle_in_transaction_sessions": [{"pid": 4242, "user": "audit_user",
           "database": "audit_logs", "seconds": 75.2, "query": "UPDATE ..."}],
           "by_database": {"audit_logs": 22}, "by_user": {"audit_user": 22},
           "by_database_user": [{"database": "audit_logs", "user": "audit_user", "active": 3,
           "idle": 19, "idle_in_transaction": 0, "total": 22}],
           "holders": [{"user": "audit_user", "application_name": "audit-api",
           "client_addr": "10.0.0.5", "total": 12, "by_state": {"idle": 11, "active": 1}}]}
long_queries:
  description: Queries active for longer than O(long_query_seconds), longest first.
  returned: when available
  type: list
  elements: dict
  sample: [{"pid": 4243, "user": "audit_user", "database": "audit_logs", "seconds": 412.5,
            "state": "active", "wait_event_type": "Lock", "wait_event": "relation",
            "query": "SELECT ..."}]
blocking:
  description:
    - Each session waiting for a lock with the session that holds it (C(pg_blocking_pids)), the
      lock awaited (C(lock_type), C(waiting_mode), C(relation) when it is a table's) and the modes
      the blocker holds on the same object (C(blocking_mode)).
  returned: when available
  type: list
  elements: dict
  sample: [{"blocked_pid": 4243, "blocked_user": "audit_user", "blocked_query": "UPDATE ...",
            "blocked_seconds": 12.0, "blocking_pid": 4242, "blocking_user": "audit_user",
            "blocking_state": "idle in transaction", "blocking_query": "UPDATE ...",
            "lock_type": "transactionid", "waiting_mode": "ShareLock", "relation": null,
            "blocking_mode": "ExclusiveLock",
            "database": "audit_logs"}]
databases:
  description: Every database one can connect to, with its size, biggest first.
  returned: when available
  type: list
  elements: dict
  sample: [{"name": "audit_logs", "size_bytes": 104857600, "size": "100 MB"}]
tables:
  description: The biggest tables of O(db) (with their indexes and TOAST), biggest first.
  returned: when available
  type: list
  elements: dict
  sample: [{"schema": "public", "name": "audit_logs", "total_bytes": 83886080, "total": "80 MB",
            "table_bytes": 62914560, "index_bytes": 20971520, "rows_estimate": 250000,
            "dead_rows": 120, "seq_scan": 4, "idx_scan": 1200, "last_autovacuum": null,
            "last_autoanalyze": "2026-12-01T10:05:00+00:00"}]
table_io:
  description:
    - The tables of O(db) that read the most blocks from outside PostgreSQL's buffers
      (C(pg_statio_user_tables), most first), with their buffer hit ratio.
  returned: when available
  type: list
  elements: dict
  sample: [{"schema": "public", "name": "audit_logs_2026_12", "heap_blks_read": 50120,
            "heap_blks_hit": 980000, "idx_blks_read": 1200, "idx_blks_hit": 450000, "hit_ratio": 0.95}]
statements:
  description:
    - The top statements of C(pg_stat_statements) in O(db), ranked by O(statements_order_by).
    - C(installed) false when the extension is not created in O(db), C(preloaded) whether
      C(shared_preload_libraries) names it; C(available) false (with C(error)) when the view
      cannot be read. Times are in milliseconds.
  returned: when available
  type: dict
  sample: {"available": true, "installed": true, "preloaded": true, "version": "1.10",
           "order_by": "mean_time", "top": [{"queryid": "-4211", "user": "audit_user",
           "database": "audit_logs", "calls": 120, "mean_ms": 1520.4, "total_ms": 182448.0,
           "max_ms": 2101.2, "rows": 12000, "cache_hit_ratio": 0.97, "query": "SELECT ..."}]}
cache:
  description: The buffer cache hit ratio, over all databases and per database (null before any read).
  returned: when available
  type: dict
  sample: {"hit_ratio": 0.998, "blocks_hit": 1203311, "blocks_read": 2110,
           "by_database": {"audit_logs": 0.998}}
checksums:
  description:
    - Whether data checksums are on (C(data_checksums)), and the checksum failures
      C(pg_stat_database) counts per database (PostgreSQL 12 and later).
  returned: when available
  type: dict
  sample: {"enabled": true, "failures": 0, "by_database": [], "last_failure": null}
settings:
  description: Chosen settings as C(SHOW) shows them (with their units).
  returned: when available
  type: dict
  sample: {"max_connections": "200", "shared_buffers": "256MB", "work_mem": "4MB",
           "statement_timeout": "0", "idle_in_transaction_session_timeout": "0"}
findings:
  description:
    - What is wrong, each a finding of module_utils/findings.py (severity, component
      C(postgresql), check, summary, evidence). Empty when all is well.
    - Checks are C(readiness), C(auth), C(tls), C(connections), C(idle_in_transaction), C(long_query),
      C(blocking), C(checksums), C(cache_hit_ratio), C(slow_statement).
  returned: always
  type: list
  elements: dict
"""

# Imports after the documentation, as in every Ansible module.
import datetime  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import postgres  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import (  # noqa: E402
    finding,
    level,
    unavailable,
)

COMPONENT = "postgresql"
HOLDERS_LIMIT = 10
SETTINGS = (
    "server_version",
    "max_connections",
    "superuser_reserved_connections",
    "shared_buffers",
    "effective_cache_size",
    "work_mem",
    "maintenance_work_mem",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "max_wal_size",
    "shared_preload_libraries",
    "data_checksums",
    "listen_addresses",
    "port",
    "ssl",
    "log_min_duration_statement",
    "random_page_cost",
)


def argument_spec():
    spec = postgres.postgres_common_argument_spec()
    spec.update(
        long_query_seconds=dict(type="float", default=300),
        idle_in_transaction_seconds=dict(type="float", default=60),
        connections_warn_ratio=dict(type="float", default=0.8),
        connections_critical_ratio=dict(type="float", default=0.95),
        cache_hit_warn_ratio=dict(type="float", default=0.9),
        cache_hit_info_ratio=dict(type="float", default=0.99),
        cache_hit_min_blocks=dict(type="int", default=100000),
        slow_statement_ms=dict(type="float", default=1000),
        statements_limit=dict(type="int", default=10),
        statements_order_by=dict(
            type="str", default="mean_time", choices=["mean_time", "total_time", "calls"]
        ),
        tables_limit=dict(type="int", default=10),
        query_max_length=dict(type="int", default=300),
        settings=dict(type="list", elements="str", default=[]),
    )
    return spec


# -- pure logic: rows in, facts and findings out (tests/unit/test_pg_diagnostics_module.py)


def _cut(text, length):
    if text is None:
        return None
    text = " ".join(str(text).split())
    return text if len(text) <= length else text[: max(length - 3, 0)] + "..."


def _num(value, digits=3):
    return None if value is None else round(float(value), digits)


def _iso(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value


def summarise_connections(rows, max_connections, reserved=0, idle_threshold=60.0, query_max_length=300):
    """Client sessions of pg_stat_activity -> the connections facts.

    rows: dicts with pid, database, user, state, state_seconds (time in that state), query.
    """
    states = {"active": 0, "idle": 0, "idle in transaction": 0, "idle in transaction (aborted)": 0}
    other = 0
    by_db, by_user, pairs, holders = {}, {}, {}, {}
    oldest_idle_tx = None
    idle_tx = []
    for row in rows:
        state = row.get("state")
        if state in states:
            states[state] += 1
        else:
            other += 1
        db, user = row.get("database"), row.get("user")
        by_db[db] = by_db.get(db, 0) + 1
        by_user[user] = by_user.get(user, 0) + 1
        pair = pairs.setdefault(
            (db or "", user or ""),
            {"database": db, "user": user, "active": 0, "idle": 0, "idle_in_transaction": 0, "total": 0},
        )
        pair["total"] += 1
        # Who holds the connections: a client (role, application, address) and its count by state.
        app, addr = row.get("application_name") or "", row.get("client_addr") or "local"
        holder = holders.setdefault(
            (user or "", app, addr),
            {"user": user, "application_name": app, "client_addr": addr, "total": 0, "by_state": {}},
        )
        holder["total"] += 1
        holder["by_state"][state or "unknown"] = holder["by_state"].get(state or "unknown", 0) + 1
        if state == "active":
            pair["active"] += 1
        elif state == "idle":
            pair["idle"] += 1
        elif state and state.startswith("idle in transaction"):
            pair["idle_in_transaction"] += 1
            seconds = float(row.get("state_seconds") or 0)
            oldest_idle_tx = seconds if oldest_idle_tx is None else max(oldest_idle_tx, seconds)
            if seconds > idle_threshold:
                idle_tx.append(
                    {
                        "pid": row.get("pid"),
                        "user": user,
                        "database": db,
                        "state": state,
                        "seconds": _num(seconds, 1),
                        "query": _cut(row.get("query"), query_max_length),
                    }
                )
    total = len(rows)
    max_connections = int(max_connections) if max_connections else None
    return {
        "active": states["active"],
        "idle": states["idle"],
        "idle_in_transaction": states["idle in transaction"],
        "idle_in_transaction_aborted": states["idle in transaction (aborted)"],
        "other": other,
        "total": total,
        "max_connections": max_connections,
        "superuser_reserved_connections": int(reserved or 0),
        "used_ratio": _num(float(total) / max_connections) if max_connections else None,
        "idle_in_transaction_oldest_seconds": _num(oldest_idle_tx, 1),
        "idle_in_transaction_sessions": sorted(idle_tx, key=lambda s: -s["seconds"]),
        "by_database": dict(sorted((k or "", v) for k, v in by_db.items())),
        "by_user": dict(sorted((k or "", v) for k, v in by_user.items())),
        "by_database_user": [pairs[k] for k in sorted(pairs)],
        "holders": sorted(
            holders.values(), key=lambda h: (-h["total"], h["user"] or "", h["application_name"])
        )[:HOLDERS_LIMIT],
    }


def cache_summary(rows):
    """pg_stat_database rows (database, blks_hit, blks_read) -> the cache facts."""
    hit = sum(int(r.get("blks_hit") or 0) for r in rows)
    read = sum(int(r.get("blks_read") or 0) for r in rows)
    by_db = {}
    for r in rows:
        h, rd = int(r.get("blks_hit") or 0), int(r.get("blks_read") or 0)
        if r.get("database") is not None:
            by_db[r["database"]] = _num(float(h) / (h + rd), 4) if h + rd else None
    return {
        "hit_ratio": _num(float(hit) / (hit + read), 4) if hit + read else None,
        "blocks_hit": hit,
        "blocks_read": read,
        "by_database": by_db,
    }


# SHOW data_checksums and pg_stat_database's checksum failures: shared with pg_integrity.
checksums_summary = postgres.checksums_summary


def _holder_text(h):
    return "{user}/{app} from {addr}: {total} ({states})".format(
        user=h["user"],
        app=h["application_name"] or "-",
        addr=h["client_addr"],
        total=h["total"],
        states=", ".join(f"{k} {v}" for k, v in sorted(h["by_state"].items())),
    )


def _holders_text(holders, limit=5):
    return "; ".join(_holder_text(h) for h in (holders or [])[:limit]) or "none"


def _top_holder(holders):
    return f", most by {_holder_text(holders[0])}" if holders else ""


def _evidence_sessions(sessions, limit=5):
    return "; ".join(
        "pid {} {}@{} {:.0f}s: {}".format(
            s.get("pid"), s.get("user"), s.get("database"), s.get("seconds") or 0, s.get("query")
        )
        for s in sessions[:limit]
    )


def diagnose(facts, params):
    """The findings for the facts of one run (the thresholds are module options)."""
    out = []
    readiness = facts.get("readiness") or {}
    if not facts.get("available", True) or not readiness.get("ready", True):
        state = readiness.get("state", "no_response")
        summary = {
            "rejecting": "PostgreSQL at {server} answers but rejects connections",
            "login_failed": "PostgreSQL at {server} refused the login of {user}",
            "tls_failed": "PostgreSQL at {server}: the TLS connection failed",
        }.get(state, "PostgreSQL at {server} does not answer")
        out.append(
            finding(
                "critical",
                COMPONENT,
                {"login_failed": "auth", "tls_failed": "tls"}.get(state, "readiness"),
                summary.format(server=facts.get("server"), user=params.get("login_user")),
                evidence=facts.get("error") or readiness.get("error"),
            )
        )
        return out

    conns = facts.get("connections") or {}
    ratio = conns.get("used_ratio")
    if ratio is not None:
        severity = level(ratio, params["connections_warn_ratio"], params["connections_critical_ratio"])
        if severity:
            out.append(
                finding(
                    severity,
                    COMPONENT,
                    "connections",
                    "{} of {} connections in use ({:.0%}){}".format(
                        conns["total"], conns["max_connections"], ratio, _top_holder(conns.get("holders"))
                    ),
                    evidence="active {active}, idle {idle}, idle in transaction {idle_in_transaction};"
                    " by database {by_database}; by user {by_user}; holders: {holders}".format(
                        **{**conns, "holders": _holders_text(conns.get("holders"))}
                    ),
                    variable="postgresql_max_connections",
                )
            )
    idle_tx = conns.get("idle_in_transaction_sessions") or []
    if idle_tx:
        out.append(
            finding(
                "warning",
                COMPONENT,
                "idle_in_transaction",
                "{} session(s) idle in a transaction for over {:g}s (oldest {:.0f}s)".format(
                    len(idle_tx), params["idle_in_transaction_seconds"], idle_tx[0]["seconds"]
                ),
                evidence=_evidence_sessions(idle_tx),
            )
        )
    long_queries = facts.get("long_queries") or []
    if long_queries:
        out.append(
            finding(
                "warning",
                COMPONENT,
                "long_query",
                "{} quer(y/ies) running for over {:g}s (longest {:.0f}s)".format(
                    len(long_queries), params["long_query_seconds"], long_queries[0]["seconds"]
                ),
                evidence=_evidence_sessions(long_queries),
            )
        )
    blocking = facts.get("blocking") or []
    if blocking:
        out.append(
            finding(
                "warning",
                COMPONENT,
                "blocking",
                "{} session(s) waiting for locks held by pid(s) {}".format(
                    len({b["blocked_pid"] for b in blocking}),
                    ", ".join(str(p) for p in sorted({b["blocking_pid"] for b in blocking})),
                ),
                evidence="; ".join(
                    "pid {blocked_pid} ({blocked_user}, {blocked_seconds}s: {blocked_query}) waits for"
                    " {waiting_mode} on {lock_type} {relation} held ({blocking_mode}) by"
                    " pid {blocking_pid} ({blocking_user}, {blocking_state}: {blocking_query})".format(
                        **{
                            "waiting_mode": None,
                            "lock_type": None,
                            "relation": None,
                            "blocking_mode": None,
                            **b,
                        }
                    )
                    for b in blocking[:5]
                ),
            )
        )
    checksums = facts.get("checksums") or {}
    if checksums.get("failures"):
        out.append(
            finding(
                "critical",
                COMPONENT,
                "checksums",
                "{} data checksum failure(s): pages are corrupt".format(checksums["failures"]),
                evidence="; ".join(
                    "{database}: {failures} (last {last_failure})".format(**f)
                    for f in checksums["by_database"]
                ),
            )
        )
    elif checksums.get("enabled") is False:
        out.append(
            finding(
                "info",
                COMPONENT,
                "checksums",
                "data checksums are off: corrupt pages would go unnoticed",
                evidence="data_checksums = off",
            )
        )
    cache = facts.get("cache") or {}
    hit_ratio = cache.get("hit_ratio")
    if (
        hit_ratio is not None
        and cache.get("blocks_hit", 0) + cache.get("blocks_read", 0) >= params["cache_hit_min_blocks"]
    ):
        severity = None
        if hit_ratio < params["cache_hit_warn_ratio"]:
            severity = "warning"
        elif hit_ratio < params["cache_hit_info_ratio"]:
            severity = "info"
        if severity:
            out.append(
                finding(
                    severity,
                    COMPONENT,
                    "cache_hit_ratio",
                    f"buffer cache hit ratio {hit_ratio:.1%}",
                    evidence="blocks hit {blocks_hit}, read {blocks_read}; by database {by_database};"
                    " shared_buffers {sb}".format(
                        sb=(facts.get("settings") or {}).get("shared_buffers"), **cache
                    ),
                    variable="postgresql_shared_buffers",
                )
            )
    statements = facts.get("statements") or {}
    slow_ms = params.get("slow_statement_ms") or 0
    if slow_ms and statements.get("available"):
        slow = [s for s in statements.get("top") or [] if (s.get("mean_ms") or 0) > slow_ms]
        if slow:
            out.append(
                finding(
                    "warning",
                    COMPONENT,
                    "slow_statement",
                    "{} statement(s) average over {:g} ms (slowest {:.0f} ms)".format(
                        len(slow), slow_ms, max(s["mean_ms"] for s in slow)
                    ),
                    evidence="; ".join(
                        "mean {mean_ms} ms, {calls} calls, total {total_ms} ms: {query}".format(**s)
                        for s in slow[:5]
                    ),
                )
            )
    return out


# -- the queries ---------------------------------------------------------------------------------------

Q_READY = """
SELECT pg_is_in_recovery() AS in_recovery,
       current_setting('server_version') AS server_version,
       current_setting('server_version_num')::int AS version_num,
       pg_postmaster_start_time() AS started_at,
       extract(epoch FROM now() - pg_postmaster_start_time())::float8 AS uptime_seconds
"""

Q_SESSIONS = """
SELECT pid, datname AS database, usename AS "user", state, application_name,
       host(client_addr) AS client_addr,
       extract(epoch FROM clock_timestamp() - state_change)::float8 AS state_seconds,
       query
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
"""

Q_LONG = """
SELECT pid, datname AS database, usename AS "user", state, wait_event_type, wait_event,
       extract(epoch FROM clock_timestamp() - query_start)::float8 AS seconds, query
FROM pg_stat_activity
WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND clock_timestamp() - query_start > make_interval(secs => %s)
ORDER BY query_start
"""

Q_BLOCKING = """
SELECT blocked.pid AS blocked_pid, blocked.usename AS blocked_user, blocked.datname AS database,
       blocked.query AS blocked_query,
       round(extract(epoch FROM clock_timestamp() - blocked.query_start)::numeric, 1)::float8
         AS blocked_seconds,
       blocked.wait_event_type, blocked.wait_event,
       blocking.pid AS blocking_pid, blocking.usename AS blocking_user,
       blocking.state AS blocking_state, blocking.query AS blocking_query,
       round(extract(epoch FROM clock_timestamp() - blocking.xact_start)::numeric, 1)::float8
         AS blocking_xact_seconds,
       w.locktype AS lock_type, w.mode AS waiting_mode, w.relation::regclass::text AS relation,
       (SELECT string_agg(DISTINCT h.mode, ',') FROM pg_locks AS h
         WHERE h.pid = blocking.pid AND h.granted AND h.locktype = w.locktype
           AND h.relation IS NOT DISTINCT FROM w.relation
           AND h.transactionid IS NOT DISTINCT FROM w.transactionid) AS blocking_mode
FROM pg_stat_activity AS blocked
CROSS JOIN LATERAL unnest(pg_blocking_pids(blocked.pid)) AS b(pid)
JOIN pg_stat_activity AS blocking ON blocking.pid = b.pid
LEFT JOIN LATERAL (SELECT l.locktype, l.mode, l.relation, l.transactionid FROM pg_locks AS l
                    WHERE l.pid = blocked.pid AND NOT l.granted LIMIT 1) AS w ON true
ORDER BY blocked.query_start, blocking.pid
"""

Q_DATABASES = """
SELECT datname AS name, pg_database_size(datname) AS size_bytes,
       pg_size_pretty(pg_database_size(datname)) AS size
FROM pg_database
WHERE datallowconn AND has_database_privilege(datname, 'CONNECT')
ORDER BY 2 DESC
"""

Q_TABLE_IO = """
SELECT schemaname AS schema, relname AS name, heap_blks_read, heap_blks_hit,
       coalesce(idx_blks_read, 0) AS idx_blks_read, coalesce(idx_blks_hit, 0) AS idx_blks_hit,
       CASE WHEN heap_blks_read + heap_blks_hit > 0
            THEN round(heap_blks_hit::numeric / (heap_blks_read + heap_blks_hit), 4)::float8 END AS hit_ratio
FROM pg_statio_user_tables
WHERE heap_blks_read + heap_blks_hit > 0
ORDER BY heap_blks_read DESC, heap_blks_hit DESC
LIMIT %s
"""

Q_TABLES = """
SELECT n.nspname AS schema, c.relname AS name,
       pg_total_relation_size(c.oid) AS total_bytes,
       pg_size_pretty(pg_total_relation_size(c.oid)) AS total,
       pg_relation_size(c.oid) AS table_bytes,
       pg_indexes_size(c.oid) AS index_bytes,
       greatest(c.reltuples, 0)::bigint AS rows_estimate,
       s.n_dead_tup AS dead_rows, s.seq_scan, s.idx_scan,
       s.last_autovacuum, s.last_autoanalyze
FROM pg_class AS c
JOIN pg_namespace AS n ON n.oid = c.relnamespace
LEFT JOIN pg_stat_user_tables AS s ON s.relid = c.oid
WHERE c.relkind IN ('r', 'p', 'm')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%%'
ORDER BY pg_total_relation_size(c.oid) DESC
LIMIT %s
"""

Q_STAT_DATABASE = """
SELECT datname AS database, blks_hit, blks_read, checksum_failures, checksum_last_failure
FROM pg_stat_database
"""

Q_STAT_DATABASE_OLD = """
SELECT datname AS database, blks_hit, blks_read, NULL::bigint AS checksum_failures,
       NULL::timestamptz AS checksum_last_failure
FROM pg_stat_database
"""

# PostgreSQL 13 renamed the timings (total_time -> total_exec_time, ...).
_ORDER = {"mean_time": "mean_ms", "total_time": "total_ms", "calls": "calls"}


def statements_query(version_num, schema, order_by):
    if version_num >= 130000:
        total, mean, maxt = "total_exec_time", "mean_exec_time", "max_exec_time"
    else:
        total, mean, maxt = "total_time", "mean_time", "max_time"
    # The names are the module's own (the version's columns, _ORDER) and the extension's schema
    # from pg_extension, quoted: no input of the user's is put into the text.
    return f"""
SELECT s.queryid::text AS queryid, r.rolname AS "user", d.datname AS database, s.calls,
       round(s.{mean}::numeric, 3)::float8 AS mean_ms,
       round(s.{total}::numeric, 3)::float8 AS total_ms,
       round(s.{maxt}::numeric, 3)::float8 AS max_ms,
       s.rows,
       CASE WHEN s.shared_blks_hit + s.shared_blks_read > 0
            THEN round(s.shared_blks_hit::numeric / (s.shared_blks_hit + s.shared_blks_read), 4)::float8
       END AS cache_hit_ratio,
       s.query
FROM {schema}.pg_stat_statements AS s
LEFT JOIN pg_roles AS r ON r.oid = s.userid
LEFT JOIN pg_database AS d ON d.oid = s.dbid
ORDER BY {_ORDER[order_by]} DESC NULLS LAST
LIMIT %s
"""  # noqa: S608


def _fetch(conn, sql, args=None):
    with postgres.dict_cursor(conn) as cur:
        cur.execute(sql, args)
        return [dict(r) for r in cur.fetchall()]


def _safe(conn, what, func):
    """One fact group; a failing query (permission, old server) becomes data, not a crash."""
    try:
        return func()
    except postgres.psycopg2.Error as exc:
        message = (getattr(exc, "pgerror", None) or str(exc)).strip().splitlines()[0]
        return unavailable(f"{what}: {message}")


def _statements(conn, params, version_num):
    preload = _fetch(conn, "SELECT current_setting('shared_preload_libraries') AS v")[0]["v"] or ""
    preloaded = "pg_stat_statements" in [p.strip() for p in preload.split(",")]
    ext = _fetch(
        conn,
        "SELECT e.extversion, n.nspname FROM pg_extension AS e JOIN pg_namespace AS n"
        " ON n.oid = e.extnamespace WHERE e.extname = 'pg_stat_statements'",
    )
    result = {
        "available": False,
        "installed": bool(ext),
        "preloaded": preloaded,
        "version": ext[0]["extversion"] if ext else None,
        "order_by": params["statements_order_by"],
        "top": [],
        "error": None,
    }
    if not ext:
        result["error"] = "the extension pg_stat_statements is not created in database {}{}".format(
            params["db"], "" if preloaded else " (nor named in shared_preload_libraries)"
        )
        return result
    try:
        rows = _fetch(
            conn,
            statements_query(
                version_num,
                '"{}"'.format(ext[0]["nspname"].replace('"', '""')),
                params["statements_order_by"],
            ),
            (params["statements_limit"],),
        )
    except postgres.psycopg2.Error as exc:
        result["error"] = (getattr(exc, "pgerror", None) or str(exc)).strip().splitlines()[0]
        return result
    for row in rows:
        row["query"] = _cut(row["query"], params["query_max_length"])
    result.update(available=True, top=rows)
    return result


def _settings(conn, names):
    rows = _fetch(
        conn,
        "SELECT name, current_setting(name) AS value FROM pg_settings WHERE name = ANY(%s)",
        (list(names),),
    )
    found = {r["name"]: r["value"] for r in rows}
    return dict((name, found.get(name)) for name in names)


def gather(params):
    """Connect and read every fact group: the facts dict (without findings)."""
    facts = {"available": False, "server": postgres.server_address(params)}
    try:
        conn = postgres.connect(params, guard=False)
    except postgres.psycopg2.Error as exc:
        readiness = postgres.readiness_from_error(str(exc))
        facts.update(unavailable(readiness["error"]))
        facts["readiness"] = readiness
        return facts
    try:
        ready = _fetch(conn, Q_READY)[0]
        version_num = ready.pop("version_num")
        ready.update(ready=True, state="accepting", server_answered=True, error=None)
        ready["started_at"] = _iso(ready["started_at"])
        ready["uptime_seconds"] = _num(ready["uptime_seconds"], 1)
        facts.update(available=True, readiness=ready)

        names = list(SETTINGS) + [n for n in params["settings"] if n not in SETTINGS]
        facts["settings"] = _safe(conn, "settings", lambda: _settings(conn, names))
        postgres.set_guards(conn)  # after reading the server's own timeouts
        settings = facts["settings"] if "available" not in facts["settings"] else {}

        def connections():
            rows = _fetch(conn, Q_SESSIONS)
            return summarise_connections(
                rows,
                settings.get("max_connections"),
                settings.get("superuser_reserved_connections"),
                params["idle_in_transaction_seconds"],
                params["query_max_length"],
            )

        facts["connections"] = _safe(conn, "connections", connections)

        def long_queries():
            rows = _fetch(conn, Q_LONG, (params["long_query_seconds"],))
            for row in rows:
                row["seconds"] = _num(row["seconds"], 1)
                row["query"] = _cut(row["query"], params["query_max_length"])
            return rows

        facts["long_queries"] = _safe(conn, "long queries", long_queries)

        def blocking():
            rows = _fetch(conn, Q_BLOCKING)
            for row in rows:
                row["blocked_query"] = _cut(row["blocked_query"], params["query_max_length"])
                row["blocking_query"] = _cut(row["blocking_query"], params["query_max_length"])
            return rows

        facts["blocking"] = _safe(conn, "blocking", blocking)
        facts["databases"] = _safe(conn, "database sizes", lambda: _fetch(conn, Q_DATABASES))

        def tables():
            rows = _fetch(conn, Q_TABLES, (params["tables_limit"],))
            for row in rows:
                row["last_autovacuum"] = _iso(row["last_autovacuum"])
                row["last_autoanalyze"] = _iso(row["last_autoanalyze"])
            return rows

        facts["tables"] = _safe(conn, "table sizes", tables)
        facts["table_io"] = _safe(
            conn, "pg_statio_user_tables", lambda: _fetch(conn, Q_TABLE_IO, (params["tables_limit"],))
        )
        stat_db = _safe(
            conn,
            "pg_stat_database",
            lambda: _fetch(conn, Q_STAT_DATABASE if version_num >= 120000 else Q_STAT_DATABASE_OLD),
        )
        if isinstance(stat_db, dict):  # unavailable
            facts["cache"] = facts["checksums"] = stat_db
        else:
            facts["cache"] = cache_summary(stat_db)
            facts["checksums"] = checksums_summary(settings.get("data_checksums"), stat_db)
        facts["statements"] = _safe(
            conn, "pg_stat_statements", lambda: _statements(conn, params, version_num)
        )
    finally:
        conn.close()
    # Lists that came back unavailable (a dict) are reported as such; diagnose() skips them.
    return facts


def _as_list(value):
    return value if isinstance(value, list) else []


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    if not postgres.HAS_PSYCOPG2:
        module.fail_json(
            msg=missing_required_lib("psycopg2 (Debian: python3-psycopg2)"),
            exception=str(postgres.PSYCOPG2_IMPORT_ERROR),
        )
    for option in ("connections_warn_ratio", "connections_critical_ratio", "cache_hit_warn_ratio"):
        if not 0 <= p[option] <= 1:
            module.fail_json(msg=f"{option} must be between 0 and 1, not {p[option]}")
    facts = gather(p)
    facts["ready"] = bool((facts.get("readiness") or {}).get("ready"))
    view = dict(facts)
    for key in ("long_queries", "blocking"):
        if key in view:
            view[key] = _as_list(view[key])
    facts["findings"] = diagnose(view, p)
    module.exit_json(changed=False, **facts)


if __name__ == "__main__":
    main()
