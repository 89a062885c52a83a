#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only: the targets are Debian 12 and 13 (Python 3.11+). psycopg2 (python3-psycopg2) is
# needed on the database host, where this module runs; nothing else beyond the standard library.

DOCUMENTATION = r"""
---
module: pg_terminate
short_description: End PostgreSQL sessions by age, by state, or because they block others
version_added: 0.4.0
description:
  - Chooses the client sessions of C(pg_stat_activity) that match at least one of the criteria
    given (idle in a transaction for too long, a query active for too long, idle for too long, or
    holding a lock that others have waited for too long), within the filters given (databases,
    users, application names), and with O(terminate=true) ends them with C(pg_terminate_backend),
    as the troubleshooting guide's C(SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE ...)
    does.
  - Only the first in a chain of blocked sessions counts as blocking (a session that waits for a
    lock itself is not ended for blocking; ending the one it waits for frees both).
  - A session is ended only if it is still the one that was chosen (same pid, same start, same
    state since), so a pid that was reused, or a session that committed meanwhile, is left alone.
    Its own session, and every backend that is not a client's (autovacuum, replication, the
    background workers), are never ended.
  - Without O(terminate), or in check mode, lists who would be ended and ends nobody. C(changed)
    is true only when a session was ended (in check mode, when one would be).
author: audit-log project (!UNKNOWN)
options:
  idle_in_transaction_seconds:
    description:
      - Choose sessions idle in a transaction (C(idle in transaction), and C(aborted)) for longer
        than this. They hold their locks and their snapshot, and a connection of the pool.
    type: float
  active_seconds:
    description:
      - Choose sessions whose query has been active for longer than this (the guide's
        C(state = 'active' AND query_start < now() - interval '5 minutes') is V(300)).
    type: float
  idle_seconds:
    description:
      - Choose sessions idle (between transactions) for longer than this. A pool's spare
        connections are idle too; the service's pools open a new one when they need it.
    type: float
  blocking_seconds:
    description:
      - Choose the sessions that hold a lock for which another session has waited longer than this
        (C(pg_blocking_pids)); V(0) chooses every blocker.
    type: float
  databases:
    description: Only sessions connected to these databases. Empty, any database.
    type: list
    elements: str
    default: []
  users:
    description: Only sessions of these roles. Empty, any role.
    type: list
    elements: str
    default: []
  application_names:
    description: Only sessions with these C(application_name)s. Empty, any.
    type: list
    elements: str
    default: []
  exclude_application_names:
    description: Never sessions with these C(application_name)s (a backup, a migration).
    type: list
    elements: str
    default: []
  exclude_users:
    description: Never sessions of these roles (a monitoring login that reconnects by itself).
    type: list
    elements: str
    default: []
  terminate:
    description:
      - End the chosen sessions. Destructive (their transactions roll back), so off unless asked for.
    type: bool
    default: false
  wait_seconds:
    description:
      - How long to wait for each ended session to be gone (C(pg_terminate_backend)'s timeout,
        PostgreSQL 14 and later).
    type: float
    default: 5
  query_max_length:
    description: Query texts are cut to this many characters.
    type: int
    default: 300
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - auditlog.ops.postgres
attributes:
  check_mode:
    support: full
    details: Lists whom it would end and ends nobody.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Ending another role's session needs a superuser or a member of C(pg_signal_backend); the
    default login (C(postgres) over the local socket) is one, and gets a reserved connection slot
    when every other slot is taken.
  - At least one of O(idle_in_transaction_seconds), O(active_seconds), O(idle_seconds) and
    O(blocking_seconds) must be given.
seealso:
  - module: auditlog.ops.pg_diagnostics
  - name: Server signaling functions
    description: pg_terminate_backend and pg_blocking_pids.
    link: https://www.postgresql.org/docs/current/functions-admin.html
"""

EXAMPLES = r"""
- name: Who is idle in a transaction for over a minute, or blocks others for over 30 s?
  auditlog.ops.pg_terminate:
    db: audit_logs
    databases: [audit_logs]
    idle_in_transaction_seconds: 60
    blocking_seconds: 30
  become: true
  become_user: postgres
  register: stuck

- name: End them (only with the operator's consent)
  auditlog.ops.pg_terminate:
    db: audit_logs
    databases: [audit_logs]
    idle_in_transaction_seconds: 60
    blocking_seconds: 30
    terminate: "{{ pool_terminate | default(false) | bool }}"
  become: true
  become_user: postgres

- name: The guide's "kill long-running queries", five minutes, the service's own login only
  auditlog.ops.pg_terminate:
    users: [audit_user]
    active_seconds: 300
    terminate: true
  become: true
  become_user: postgres
"""

RETURN = r"""
changed:
  description: Whether a session was ended (in check mode, would be).
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
sessions:
  description:
    - The chosen sessions, longest-standing first, each with C(reasons) (V(idle_in_transaction),
      V(long_query), V(idle), V(blocking)), the C(seconds) of its oldest reason, the pids it
      C(blocks) and C(ended) (true, false when it was gone or had changed before it could be
      ended, null when it was not to be ended).
  returned: always
  type: list
  elements: dict
  sample: [{"pid": 4242, "user": "audit_user", "database": "audit_logs",
            "application_name": "psql", "client_addr": "10.0.0.5", "state": "idle in transaction",
            "reasons": ["idle_in_transaction", "blocking"], "seconds": 75.2, "blocks": [4250],
            "blocked_seconds": 40.1, "query": "LOCK TABLE ...", "ended": true}]
terminated:
  description: The pids ended (in check mode, that would be ended).
  returned: always
  type: list
  elements: int
counts:
  description: Client sessions in all, chosen, and ended.
  returned: always
  type: dict
  sample: {"client_sessions": 42, "chosen": 3, "ended": 3}
findings:
  description:
    - One per client (role, database, address, application) and first reason of its chosen
      sessions (component C(postgresql), check the reason), with the remediation when they were
      ended (or would be, in check mode), and up to 20 of the sessions as evidence.
  returned: always
  type: list
  elements: dict
"""

# Imports after the documentation, as in every Ansible module.
from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import postgres  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding  # noqa: E402

CRITERIA = ("idle_in_transaction_seconds", "active_seconds", "idle_seconds", "blocking_seconds")
IDLE_IN_TRANSACTION = ("idle in transaction", "idle in transaction (aborted)")


def argument_spec():
    spec = postgres.postgres_common_argument_spec()
    spec.update(
        idle_in_transaction_seconds=dict(type="float"),
        active_seconds=dict(type="float"),
        idle_seconds=dict(type="float"),
        blocking_seconds=dict(type="float"),
        databases=dict(type="list", elements="str", default=[]),
        users=dict(type="list", elements="str", default=[]),
        application_names=dict(type="list", elements="str", default=[]),
        exclude_application_names=dict(type="list", elements="str", default=[]),
        exclude_users=dict(type="list", elements="str", default=[]),
        terminate=dict(type="bool", default=False),
        wait_seconds=dict(type="float", default=5),
        query_max_length=dict(type="int", default=300),
    )
    return spec


# -- pure logic: rows in, chosen sessions and findings out (tests/unit/test_pg_terminate_module.py)


# option -> (the reason, the states it applies to, the age it is measured by)
AGE_CRITERIA = (
    ("idle_in_transaction_seconds", "idle_in_transaction", IDLE_IN_TRANSACTION, "state_seconds"),
    ("active_seconds", "long_query", ("active",), "query_seconds"),
    ("idle_seconds", "idle", ("idle",), "state_seconds"),
)


def reasons_of(row, p):
    """Why the session (a row of SESSIONS_SQL) is to be ended: [(reason, seconds)], oldest first."""
    out = [
        (reason, row[age])
        for option, reason, states, age in AGE_CRITERIA
        if p.get(option) is not None and row.get("state") in states and (row.get(age) or 0) > p[option]
    ]
    # Only the head of a chain of waiters blocks: a blocker that waits itself is freed with the rest.
    blocking = p.get("blocking_seconds")
    heads = row.get("blocks") and not row.get("waiting")
    if blocking is not None and heads and (row.get("blocked_seconds") or 0) >= blocking:
        out.append(("blocking", row["blocked_seconds"]))
    return sorted(out, key=lambda r: -(r[1] or 0))


def in_scope(row, p):
    for option, key in (
        ("databases", "database"),
        ("users", "user"),
        ("application_names", "application_name"),
    ):
        if p.get(option) and row.get(key) not in p[option]:
            return False
    return row.get("application_name") not in (p.get("exclude_application_names") or []) and row.get(
        "user"
    ) not in (p.get("exclude_users") or [])


def _cut(text, length):
    text = " ".join(str(text or "").split())
    return text if len(text) <= length else text[: max(length - 3, 0)] + "..."


def choose(rows, p):
    """The sessions to end, longest-standing first, each a plain dict with reasons and seconds."""
    chosen = []
    for row in rows:
        if not in_scope(row, p):
            continue
        reasons = reasons_of(row, p)
        if not reasons:
            continue
        chosen.append(
            {
                "pid": row["pid"],
                "user": row.get("user"),
                "database": row.get("database"),
                "application_name": row.get("application_name"),
                "client_addr": row.get("client_addr"),
                "state": row.get("state"),
                "reasons": [r for r, _ in reasons],
                "seconds": round(float(reasons[0][1] or 0), 1),
                "blocks": list(row.get("blocks") or []),
                "blocked_seconds": None
                if row.get("blocked_seconds") is None
                else round(float(row["blocked_seconds"]), 1),
                "query": _cut(row.get("query"), p.get("query_max_length", 300)),
                "ended": None,
            }
        )
    return sorted(chosen, key=lambda s: -s["seconds"])


REASON_WORDS = {
    "idle_in_transaction": "idle in a transaction",
    "long_query": "running one query",
    "idle": "idle",
    "blocking": "blocking others",
}
EVIDENCE_SESSIONS = 20


def client_of(session):
    """The client a session is of, as a person names it: role@database from address, application."""
    return "{}@{}{}{}".format(
        session["user"],
        session["database"],
        f" from {session['client_addr']}" if session.get("client_addr") else "",
        f", {session['application_name']}" if session.get("application_name") else "",
    )


def describe(group):
    """One line for the sessions of one client chosen for the same first reason."""
    first = group[0]
    reason = first["reasons"][0]
    pids = [s["pid"] for s in group]
    shown = ", ".join(map(str, pids[:10])) + (f" and {len(pids) - 10} more" if len(pids) > 10 else "")
    text = "{} session{} of {} {} for up to {:.0f} s (pid {})".format(
        len(group),
        "" if len(group) == 1 else "s",
        client_of(first),
        REASON_WORDS[reason],
        first["seconds"],
        shown,
    )
    others = sorted({r for s in group for r in s["reasons"][1:]})
    if others:
        text += ", also " + ", ".join(REASON_WORDS[r] for r in others)
    blocked = sorted({b for s in group for b in s["blocks"]})
    if blocked:
        text += "; blocks pid " + ", ".join(map(str, blocked))
    return text


def session_findings(sessions, terminate, check_mode):
    """One finding per client and first reason (a leak of 90 connections is one finding, not 90)."""
    groups = {}
    for s in sessions:
        key = (s["reasons"][0], s["user"], s["database"], s["client_addr"], s["application_name"])
        groups.setdefault(key, []).append(s)
    out = []
    for (reason, *_), group in groups.items():
        pids = [s["pid"] for s in group]
        if not terminate:
            remediation = None
        elif check_mode:
            remediation = f"would end pid {', '.join(map(str, pids))} (pg_terminate_backend)"
        else:
            ended = [s["pid"] for s in group if s["ended"]]
            missed = [s["pid"] for s in group if not s["ended"]]
            remediation = "; ".join(
                part
                for part in (
                    f"ended pid {', '.join(map(str, ended))} (pg_terminate_backend)" if ended else "",
                    f"pid {', '.join(map(str, missed))} gone or changed before it could be ended"
                    if missed
                    else "",
                )
                if part
            )
        severity = "critical" if any("blocking" in s["reasons"] for s in group) else "warning"
        evidence = [
            {k: s[k] for k in ("pid", "state", "seconds", "reasons", "blocks", "query")}
            for s in group[:EVIDENCE_SESSIONS]
        ]
        out.append(
            finding(
                severity, "postgresql", reason, describe(group), evidence=evidence, remediation=remediation
            )
        )
    return out


# -- the server

SESSIONS_SQL = """
WITH waiting AS (
    SELECT pid, pg_blocking_pids(pid) AS blockers,
           extract(epoch FROM now() - coalesce(state_change, query_start)) AS waited
      FROM pg_stat_activity
     WHERE wait_event_type = 'Lock'
)
SELECT a.pid, a.backend_start, a.state_change, a.datname AS database, a.usename AS "user",
       a.application_name, host(a.client_addr) AS client_addr, a.state,
       extract(epoch FROM now() - a.state_change) AS state_seconds,
       extract(epoch FROM now() - a.query_start) AS query_seconds,
       a.query,
       EXISTS (SELECT 1 FROM waiting w WHERE w.pid = a.pid AND cardinality(w.blockers) > 0) AS waiting,
       coalesce((SELECT array_agg(w.pid ORDER BY w.pid) FROM waiting w WHERE a.pid = ANY(w.blockers)),
                '{}') AS blocks,
       (SELECT max(w.waited) FROM waiting w WHERE a.pid = ANY(w.blockers)) AS blocked_seconds
  FROM pg_stat_activity a
 WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()
"""

# Ends the session only if it is still the chosen one: same pid and start, no state change since.
TERMINATE_SQL = """
SELECT pg_terminate_backend(pid{timeout}) AS ended
  FROM pg_stat_activity
 WHERE pid = %(pid)s AND backend_start = %(backend_start)s
   AND state_change IS NOT DISTINCT FROM %(state_change)s
"""


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    if not postgres.HAS_PSYCOPG2:
        module.fail_json(
            msg=missing_required_lib("psycopg2 (Debian: python3-psycopg2)"),
            exception=str(postgres.PSYCOPG2_IMPORT_ERROR),
        )
    if all(p[c] is None for c in CRITERIA):
        module.fail_json(
            msg="give at least one of " + ", ".join(CRITERIA) + ": whom to end is otherwise nobody"
        )
    for c in CRITERIA + ("wait_seconds",):
        if p[c] is not None and p[c] < 0:
            module.fail_json(msg=f"{c} must be 0 or more, not {p[c]}")
    result = {"changed": False, "server": postgres.server_address(p), "sessions": [], "terminated": []}
    try:
        conn = postgres.connect(p)
    except postgres.psycopg2.Error as exc:
        error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        module.exit_json(
            available=False,
            error=error,
            counts={"client_sessions": None, "chosen": 0, "ended": 0},
            findings=[
                finding("critical", "postgresql", "readiness", f"PostgreSQL at {result['server']}: {error}")
            ],
            **result,
        )
    try:
        with postgres.dict_cursor(conn) as cur:
            cur.execute(SESSIONS_SQL)
            rows = [dict(r) for r in cur.fetchall()]
            by_pid = {r["pid"]: r for r in rows}
            sessions = choose(rows, p)
            if p["terminate"] and sessions:
                result["changed"] = True
                if module.check_mode:
                    result["terminated"] = [s["pid"] for s in sessions]
                else:
                    timeout = ", %(timeout)s" if conn.server_version >= 140000 else ""
                    sql = TERMINATE_SQL.format(timeout=timeout)
                    for s in sessions:
                        row = by_pid[s["pid"]]
                        cur.execute(
                            sql,
                            dict(
                                pid=s["pid"],
                                backend_start=row["backend_start"],
                                state_change=row["state_change"],
                                timeout=int(p["wait_seconds"] * 1000),
                            ),
                        )
                        got = cur.fetchone()
                        s["ended"] = bool(got and got["ended"])
                    result["terminated"] = [s["pid"] for s in sessions if s["ended"]]
                    result["changed"] = bool(result["terminated"])
    except postgres.psycopg2.Error as exc:
        module.fail_json(msg=f"PostgreSQL at {result['server']}: {str(exc).strip()}", **result)
    finally:
        conn.close()
    result["sessions"] = sessions
    result["counts"] = {
        "client_sessions": len(rows),
        "chosen": len(sessions),
        "ended": len(result["terminated"]),
    }
    result["findings"] = session_findings(sessions, p["terminate"], module.check_mode)
    module.exit_json(available=True, **result)


if __name__ == "__main__":
    main()
