#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only: the targets are Debian 12 and 13 (Python 3.11+). psycopg2 (python3-psycopg2) is
# needed on the database host, where this module runs; nothing else beyond the standard library.

DOCUMENTATION = r"""
---
module: pg_integrity
short_description: Check a PostgreSQL database for corruption (pg_amcheck, data checksums, checksum failures)
version_added: 0.4.0
description:
  - Runs C(pg_amcheck) on one database (O(db)) - every table's heap pages and every btree index
    checked by the C(amcheck) extension - and parses what it prints into the problems of each
    relation (the relation, its kind, the block, offset and attribute, the messages).
  - Reads whether the cluster has data checksums (C(data_checksums)) and the checksum failures
    C(pg_stat_database) counts per database (C(checksum_failures), C(checksum_last_failure)),
    after C(pg_amcheck) read every page, so that a page whose checksum fails is counted there too.
  - Findings - critical for each corrupt relation and for checksum failures, a warning when data
    checksums are off. Checksum failures counted in O(db) (or on the shared catalogs) while
    C(pg_amcheck) has just read all of it clean are from pages that are gone (dropped, rewritten,
    restored) - a warning until the counter is reset (C(SELECT pg_stat_reset()) in that database).
  - C(pg_amcheck) needs the C(amcheck) extension in O(db); it is created (C(pg_amcheck
    --install-missing), C(changed)) only with O(install_missing=true), else the module says it is
    missing and checks the rest. Otherwise the module only reads.
  - The checks take an C(AccessShareLock) on each relation, which blocks no reader or writer
    (O(parent_check) takes more, see there), and read each relation once (twice per index with
    O(heapallindexed)).
author:
  - audit-log project (!UNKNOWN)
options:
  amcheck:
    description: Run C(pg_amcheck); V(false) reads only the checksums' state.
    type: bool
    default: true
  bin_dir:
    description:
      - The directory of C(pg_amcheck). By default the server's own version's,
        C(/usr/lib/postgresql/<major>/bin) (Debian's layout), else the C(PATH).
    type: path
  heapallindexed:
    description:
      - Also check that every row of each table is found in each of its btree indexes
        (C(pg_amcheck --heapallindexed)), reading each table again per index.
    type: bool
    default: false
  parent_check:
    description:
      - Check the btree indexes' parent/child relationships too (C(pg_amcheck --parent-check)).
        It takes a C(ShareLock) on each index's table while it runs, which blocks writes (the
        worker's inserts), hence off by default.
    type: bool
    default: false
  install_missing:
    description:
      - Create the C(amcheck) extension in O(db) when it is missing (C(pg_amcheck
        --install-missing)); C(changed) then. Not in check mode (the module then says it would).
    type: bool
    default: false
  lock_timeout_ms:
    description:
      - C(lock_timeout) of C(pg_amcheck)'s sessions (C(PGOPTIONS)), so that it never queues behind
        a DDL's lock; a relation it could not lock in time is reported as not checked, not as
        corrupt.
    type: int
    default: 30000
  problems_limit:
    description: At most this many problems are returned in RV(amcheck.problems) (all are counted).
    type: int
    default: 100
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - auditlog.ops.postgres
attributes:
  check_mode:
    support: full
    details: Checks and reads as it does otherwise; never creates the amcheck extension.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Run it on the database host as the C(postgres) OS user (C(become_user=postgres)) - C(pg_amcheck)
    runs as the module does, and logs in over the local socket by peer authentication.
seealso:
  - module: auditlog.ops.pg_diagnostics
  - module: auditlog.ops.chain_verify
  - name: pg_amcheck
    description: The checks, their options and their locks.
    link: https://www.postgresql.org/docs/current/app-pgamcheck.html
  - name: Data checksums
    description: What they catch, and pg_checksums to enable them offline.
    link: https://www.postgresql.org/docs/current/checksums.html
"""

EXAMPLES = r"""
- name: Check the service's database for corruption
  auditlog.ops.pg_integrity:
    db: audit_logs
    heapallindexed: true
  become: true
  become_user: postgres
  register: integrity

- name: The same, creating the amcheck extension when it is missing
  auditlog.ops.pg_integrity:
    db: audit_logs
    bin_dir: /usr/lib/postgresql/17/bin
    install_missing: true
  become: true
  become_user: postgres
"""

RETURN = r"""
changed:
  description: Whether the amcheck extension was created (O(install_missing)).
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
server:
  description: Where the module connected to (host:port, or the socket file).
  returned: always
  type: str
  sample: /run/postgresql/.s.PGSQL.5432
server_version:
  description: The server's version.
  returned: when available
  type: str
  sample: "17.2"
amcheck:
  description: What C(pg_amcheck) found in O(db).
  returned: when available
  type: dict
  contains:
    ran:
      description: Whether it ran.
      type: bool
    installed:
      description: Whether the amcheck extension is in O(db) (after the run).
      type: bool
    created:
      description: Whether this run created it.
      type: bool
    version:
      description: The extension's version.
      type: str
    error:
      description: Why it did not run, or the error it stopped on.
      type: str
    rc:
      description: Its exit code (0 nothing found, 2 corruption found, 1 an error).
      type: int
    clean:
      description: Whether it ran to the end and found nothing.
      type: bool
    options:
      description: The check options used (C(heapallindexed), C(parent_check)).
      type: dict
    relations_checked:
      description: The relations it checked (from its progress report).
      type: int
    pages_checked:
      description: The pages it checked.
      type: int
    problem_count:
      description: The problems found (RV(amcheck.problems) holds up to O(problems_limit) of them).
      type: int
    problems:
      description:
        - Each problem, C(kind) (V(heap table) or V(btree index)), C(database), C(relation)
          (schema.name), C(block), C(offset), C(attribute) (null when not said) and C(messages).
      type: list
      elements: dict
    relations:
      description:
        - Each corrupt relation, with its C(kind), C(problems) (their count), C(blocks) and the first
          C(messages).
      type: list
      elements: dict
    not_checked:
      description: Relations it could not check for a reason that is no corruption (a lock timeout).
      type: list
      elements: dict
    server_warnings:
      description: The server's warnings (C(page verification failed, calculated checksum ...)).
      type: list
      elements: str
    errors:
      description: Its own warnings and errors (C(pg_amcheck - error ...)).
      type: list
      elements: str
  sample: {"ran": true, "installed": true, "created": false, "version": "1.4", "error": null,
           "rc": 2, "clean": false, "options": {"heapallindexed": false, "parent_check": false},
           "relations_checked": 276, "pages_checked": 805, "problem_count": 1,
           "problems": [{"kind": "heap table", "database": "audit_logs",
           "relation": "public.corrupt_demo", "block": 0, "offset": null, "attribute": null,
           "messages": ["ERROR:  invalid page in block 0 of relation base/16384/16397"]}],
           "relations": [{"kind": "heap table", "database": "audit_logs",
           "relation": "public.corrupt_demo", "problems": 1, "blocks": [0],
           "messages": ["ERROR:  invalid page in block 0 of relation base/16384/16397"]}],
           "not_checked": [],
           "server_warnings": ["WARNING:  page verification failed, calculated checksum 17485 but
           expected 31547"],
           "errors": []}
checksums:
  description:
    - Whether data checksums are on (C(enabled)), and the checksum failures C(pg_stat_database)
      counts (C(failures), C(by_database) with each database's C(failures) and C(last_failure),
      C(last_failure)).
  returned: when available
  type: dict
  sample: {"enabled": true, "failures": 1, "by_database": [{"database": "audit_logs", "failures": 1,
           "last_failure": "2026-05-01T10:00:00+00:00"}], "last_failure": "2026-05-01T10:00:00+00:00"}
findings:
  description:
    - Checks C(amcheck) (critical per corrupt relation, a warning when it could not run or check
      everything, info when it found nothing), C(checksum_failures) (critical per database with
      failures, or a warning, see above), C(data_checksums) (a warning when off), C(integrity)
      (critical, the server could not be reached). Component C(postgresql).
  returned: always
  type: list
  elements: dict
"""

# Imports after the documentation, as in every Ansible module.
import os  # noqa: E402
import re  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import postgres  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding, unavailable  # noqa: E402

COMPONENT = "postgresql"
RECOVERY = "restore with point-in-time recovery (the recovery runbooks)"


def argument_spec():
    spec = postgres.postgres_common_argument_spec()
    spec.update(
        amcheck=dict(type="bool", default=True),
        bin_dir=dict(type="path"),
        heapallindexed=dict(type="bool", default=False),
        parent_check=dict(type="bool", default=False),
        install_missing=dict(type="bool", default=False),
        lock_timeout_ms=dict(type="int", default=30000),
        problems_limit=dict(type="int", default=100),
    )
    return spec


# -- pure logic: pg_amcheck's output in, problems and findings out (tests/unit/test_pg_integrity_module.py)

# What pg_amcheck prints on stdout for each problem: a line naming the relation (and where in it),
# then the messages, indented.
#   heap table "audit_logs.public.corrupt_demo", block 0, offset 34:
#       xmin 4278255360 precedes oldest valid transaction ID 0:717
#   btree index "audit_logs.public.corrupt_demo_pkey":
#       ERROR:  line pointer points past end of tuple space in index "corrupt_demo_pkey"
HEADER = re.compile(
    r'^(?P<kind>heap table|btree index) "(?P<name>.+)"'
    r"(?:, block (?P<block>\d+))?(?:, offset (?P<offset>\d+))?(?:, attribute (?P<attribute>\d+))?:$"
)
# Its progress report on stderr (--progress): the last one has the totals.
PROGRESS = re.compile(
    r"(?P<rels>\d+)/(?P<rels_total>\d+) relations \(\d+%\),\s*(?P<pages>\d+)/(?P<pages_total>\d+) pages"
)
INVALID_PAGE = re.compile(r"invalid page in block (?P<block>\d+) of relation (?P<path>\S+)")
# Messages that say a relation was not checked, not that it is corrupt.
NOT_CORRUPTION = (
    "canceling statement due to lock timeout",
    "canceling statement due to statement timeout",
    "canceling statement due to user request",
    "could not obtain lock",
)


def amcheck_argv(pg_amcheck, params, install_missing=False):
    """pg_amcheck's command line: the database as its positional argument (a name, not a pattern)."""
    argv = [
        pg_amcheck,
        "--host",
        str(params["login_host"]),
        "--port",
        str(params["port"]),
        "--username",
        params["login_user"],
        "--no-password",
        "--progress",
    ]
    if params.get("heapallindexed"):
        argv.append("--heapallindexed")
    if params.get("parent_check"):
        argv.append("--parent-check")
    if install_missing:
        argv.append("--install-missing")
    return argv + [params["db"]]


def amcheck_environ(params):
    """libpq's environment for pg_amcheck: the password, TLS (over TCP) and the session's timeouts."""
    env = {
        "PGAPPNAME": postgres.APPLICATION_NAME + "-amcheck",
        "PGCONNECT_TIMEOUT": str(params["connect_timeout"]),
        "PGOPTIONS": "-c lock_timeout={}".format(int(params["lock_timeout_ms"])),
    }
    if params.get("login_password") is not None:
        env["PGPASSWORD"] = params["login_password"]
    if not str(params["login_host"]).startswith("/"):
        env["PGSSLMODE"] = params["ssl_mode"]
        if params.get("ca_cert"):
            env["PGSSLROOTCERT"] = params["ca_cert"]
    return env


def _split_name(name):
    """ "db.schema.relation" -> (db, "schema.relation"); a database name may hold dots."""
    parts = name.rsplit(".", 2)
    if len(parts) == 3:
        return parts[0], parts[1] + "." + parts[2]
    return None, name


def parse_amcheck(stdout, stderr=""):
    """pg_amcheck's stdout and stderr -> problems, relations not checked, progress totals and messages."""
    problems, skipped, current, in_query = [], [], None, False
    other = []
    for raw in (stdout or "").splitlines():
        if not raw.strip():
            continue
        match = HEADER.match(raw)
        if match:
            database, relation = _split_name(match["name"])
            current = {
                "kind": match["kind"],
                "database": database,
                "relation": relation,
                "block": int(match["block"]) if match["block"] else None,
                "offset": int(match["offset"]) if match["offset"] else None,
                "attribute": int(match["attribute"]) if match["attribute"] else None,
                "messages": [],
            }
            problems.append(current)
            in_query = False
            continue
        if raw.startswith("query was:"):  # --verbose, or an error: the query and its lines
            in_query = True
            continue
        if current is not None and raw[:1].isspace() and not in_query:
            current["messages"].append(raw.strip())
            if current["block"] is None:
                page = INVALID_PAGE.search(raw)
                if page:
                    current["block"] = int(page["block"])
            continue
        if not in_query:
            other.append(raw.strip())
    for problem in list(problems):
        text = " ".join(problem["messages"]).lower()
        if problem["messages"] and any(marker in text for marker in NOT_CORRUPTION):
            problems.remove(problem)
            skipped.append(problem)
    progress = None
    server_warnings, errors = [], []
    for raw in (stderr or "").splitlines():
        line = raw.strip()
        if not line:
            continue
        match = PROGRESS.search(line)
        if match:
            progress = match
        elif line.startswith(("WARNING:", "ERROR:", "DETAIL:", "HINT:")):
            server_warnings.append(line)
        elif line.startswith("pg_amcheck:"):
            errors.append(line)
        elif errors and raw[:1].isspace():  # a libpq message's second line
            errors[-1] += " " + line
        else:
            errors.append(line)
    return {
        "problems": problems,
        "not_checked": skipped,
        "relations_checked": int(progress["rels"]) if progress else None,
        "relations_total": int(progress["rels_total"]) if progress else None,
        "pages_checked": int(progress["pages"]) if progress else None,
        "pages_total": int(progress["pages_total"]) if progress else None,
        "server_warnings": server_warnings,
        "errors": errors + other,
    }


def relations_summary(problems, messages_limit=3):
    """The problems grouped per relation, in the order pg_amcheck named them."""
    out, index = [], {}
    for p in problems:
        key = (p["kind"], p["database"], p["relation"])
        if key not in index:
            index[key] = {
                "kind": p["kind"],
                "database": p["database"],
                "relation": p["relation"],
                "problems": 0,
                "blocks": [],
                "messages": [],
            }
            out.append(index[key])
        rel = index[key]
        rel["problems"] += 1
        if p["block"] is not None and p["block"] not in rel["blocks"]:
            rel["blocks"].append(p["block"])
        for m in p["messages"]:
            if m not in rel["messages"] and len(rel["messages"]) < messages_limit:
                rel["messages"].append(m)
    for rel in out:
        rel["blocks"].sort()
    return out


def amcheck_result(rc, stdout, stderr, problems_limit=100):
    """The amcheck facts of one pg_amcheck run (exit code 0 nothing found, 2 corruption, 1 an error)."""
    parsed = parse_amcheck(stdout, stderr)
    problems = parsed.pop("problems")
    error = None
    if rc not in (0, 2) or (rc == 2 and not problems and not parsed["not_checked"]):
        error = "; ".join(parsed["errors"][-3:]) or f"pg_amcheck exited {rc}"
    return dict(
        parsed,
        ran=True,
        rc=rc,
        error=error,
        clean=rc == 0 and not problems and not parsed["not_checked"],
        problem_count=len(problems),
        problems=problems[:problems_limit],
        relations=relations_summary(problems),
    )


def _blocks_text(blocks, limit=10):
    if not blocks:
        return ""
    shown = ", ".join(str(b) for b in blocks[:limit])
    more = f" and {len(blocks) - limit} more" if len(blocks) > limit else ""
    return f" in block(s) {shown}{more}"


def relation_finding(rel):
    if rel["kind"] == "btree index":
        fix = (
            "an index whose table checks clean can be built again (REINDEX INDEX CONCURRENTLY); otherwise "
            + RECOVERY
        )
    else:
        fix = "the rows on those pages cannot be trusted; " + RECOVERY
    summary = "pg_amcheck: {} {} of {} is corrupt ({} problem(s){}): {}; {}".format(
        rel["kind"],
        rel["relation"],
        rel["database"],
        rel["problems"],
        _blocks_text(rel["blocks"]),
        "; ".join(rel["messages"][:1]) or "no message",
        fix,
    )
    return finding("critical", COMPONENT, "amcheck", summary, evidence=rel)


def integrity_findings(facts, params):
    """The findings of the facts gathered (see RETURN)."""
    db = params["db"]
    if not facts.get("available"):
        return [
            finding(
                "critical",
                COMPONENT,
                "integrity",
                "cannot check the integrity of {} on {}: {}".format(
                    db, facts.get("server"), facts.get("error")
                ),
                evidence=facts.get("readiness"),
            )
        ]
    out = []
    am = facts.get("amcheck") or {}
    if params.get("amcheck", True):
        if not am.get("ran"):
            out.append(
                finding("warning", COMPONENT, "amcheck", f"pg_amcheck did not check {db}: {am.get('error')}")
            )
        else:
            out.extend(relation_finding(rel) for rel in am.get("relations") or [])
            skipped = am.get("not_checked") or []
            if skipped:
                out.append(
                    finding(
                        "warning",
                        COMPONENT,
                        "amcheck",
                        "pg_amcheck could not check {} relation(s) of {} ({}): run it again when they are"
                        " free".format(len(skipped), db, ", ".join(sorted({s["relation"] for s in skipped}))),
                        evidence=skipped,
                    )
                )
            if am.get("error"):
                out.append(
                    finding(
                        "warning",
                        COMPONENT,
                        "amcheck",
                        f"pg_amcheck did not finish checking {db}: {am['error']}",
                        evidence=am.get("errors"),
                    )
                )
            elif am.get("clean"):
                out.append(
                    finding(
                        "info",
                        COMPONENT,
                        "amcheck",
                        "pg_amcheck found no corruption in {} ({} relations, {} pages checked{})".format(
                            db,
                            am.get("relations_checked"),
                            am.get("pages_checked"),
                            ", heapallindexed" if (am.get("options") or {}).get("heapallindexed") else "",
                        ),
                        evidence={
                            k: am.get(k) for k in ("relations_checked", "pages_checked", "options", "version")
                        },
                    )
                )
    sums = facts.get("checksums") or {}
    if sums.get("enabled") is False:
        out.append(
            finding(
                "warning",
                COMPONENT,
                "data_checksums",
                "data checksums are off: a corrupt page goes unnoticed until it breaks a query or a check;"
                " they can be enabled offline (pg_checksums --enable, PostgreSQL stopped)",
                evidence="data_checksums = off",
            )
        )
    # Every page of db (and of the shared catalogs) read clean just now: the failures counted there
    # were on pages that are gone since.
    read_clean = bool(am.get("clean"))
    for failing in sums.get("by_database") or []:
        gone = read_clean and failing["database"] in (db, postgres.SHARED_OBJECTS)
        where = failing["database"]
        if gone:
            out.append(
                finding(
                    "warning",
                    COMPONENT,
                    "checksum_failures",
                    "{} data checksum failure(s) counted in {} (last {}), but pg_amcheck read all of it clean"
                    " just now: the failing pages are gone (dropped, rewritten or restored); once accounted"
                    " for, reset the counter with SELECT pg_stat_reset() in {}".format(
                        failing["failures"], where, failing["last_failure"], where
                    ),
                    evidence=failing,
                )
            )
        else:
            out.append(
                finding(
                    "critical",
                    COMPONENT,
                    "checksum_failures",
                    "{} data checksum failure(s) in {} (last {}): pages on disk are corrupt; {}".format(
                        failing["failures"], where, failing["last_failure"], RECOVERY
                    ),
                    evidence=failing,
                )
            )
    return out


# -- the host side

Q_STATE = """
SELECT current_setting('server_version_num')::int AS version_num,
       current_setting('server_version') AS version,
       current_setting('data_checksums') AS data_checksums,
       (SELECT extversion FROM pg_extension WHERE extname = 'amcheck') AS amcheck_version,
       (SELECT default_version FROM pg_available_extensions WHERE name = 'amcheck') AS amcheck_available
"""

Q_CHECKSUMS = """
SELECT datname AS database, checksum_failures, checksum_last_failure FROM pg_stat_database
"""

Q_CHECKSUMS_OLD = """
SELECT datname AS database, NULL::bigint AS checksum_failures,
       NULL::timestamptz AS checksum_last_failure
FROM pg_stat_database
"""


def _fetch(conn, sql):
    with postgres.dict_cursor(conn) as cur:
        cur.execute(sql)
        return [dict(r) for r in cur.fetchall()]


def pg_amcheck_path(module, bin_dir, version_num):
    if bin_dir:
        return os.path.join(bin_dir, "pg_amcheck")
    debian = f"/usr/lib/postgresql/{version_num // 10000}/bin/pg_amcheck"
    if os.access(debian, os.X_OK):
        return debian
    return module.get_bin_path("pg_amcheck")


def run_amcheck(module, params, state):
    """pg_amcheck over db, or why it did not run; (the amcheck facts, changed)."""
    installed = state["amcheck_version"] is not None
    facts = {
        "ran": False,
        "installed": installed,
        "created": False,
        "version": state["amcheck_version"],
        "error": None,
        "rc": None,
        "clean": None,
        "options": {"heapallindexed": params["heapallindexed"], "parent_check": params["parent_check"]},
    }
    if not installed:
        if state["amcheck_available"] is None:
            facts["error"] = (
                "the amcheck extension is not available on this server (Debian's postgresql package has it)"
            )
            return facts
        missing = f"the amcheck extension is not created in {params['db']}"
        if not params["install_missing"]:
            facts["error"] = missing + " (install_missing creates it)"
            return facts
        if module.check_mode:
            facts["error"] = missing + "; it would be (install_missing), not in check mode"
            return facts
    pg_amcheck = pg_amcheck_path(module, params["bin_dir"], state["version_num"])
    if not pg_amcheck or not os.access(pg_amcheck, os.X_OK):
        facts["error"] = "pg_amcheck not found ({}): set bin_dir".format(pg_amcheck or "not on the PATH")
        return facts
    rc, out, err = module.run_command(
        amcheck_argv(pg_amcheck, params, install_missing=not installed),
        environ_update=amcheck_environ(params),
    )
    facts.update(amcheck_result(rc, out, err, params["problems_limit"]))
    return facts


def gather(module, params):
    """Connect, run pg_amcheck, then read the checksums (after its reads); the facts and changed."""
    facts = {"available": False, "server": postgres.server_address(params)}
    try:
        conn = postgres.connect(params)
    except postgres.psycopg2.Error as exc:
        readiness = postgres.readiness_from_error(str(exc))
        facts.update(unavailable(readiness["error"]))
        facts["readiness"] = readiness
        return facts, False
    changed = False
    try:
        state = _fetch(conn, Q_STATE)[0]
        facts.update(available=True, server_version=state["version"])
        if params["amcheck"]:
            facts["amcheck"] = run_amcheck(module, params, state)
            if facts["amcheck"]["ran"] and not facts["amcheck"]["installed"]:
                version = _fetch(conn, "SELECT extversion FROM pg_extension WHERE extname = 'amcheck'")
                if version:
                    facts["amcheck"].update(installed=True, created=True, version=version[0]["extversion"])
                    changed = True
        # Fresh statistics: the failures pg_amcheck's reads just counted.
        _fetch(conn, "SELECT pg_stat_clear_snapshot()")
        rows = _fetch(conn, Q_CHECKSUMS if state["version_num"] >= 120000 else Q_CHECKSUMS_OLD)
        facts["checksums"] = postgres.checksums_summary(state["data_checksums"], rows)
    finally:
        conn.close()
    return facts, changed


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    if not postgres.HAS_PSYCOPG2:
        module.fail_json(
            msg=missing_required_lib("psycopg2 (Debian: python3-psycopg2)"),
            exception=str(postgres.PSYCOPG2_IMPORT_ERROR),
        )
    for option in ("lock_timeout_ms", "problems_limit"):
        if p[option] < 0:
            module.fail_json(msg=f"{option} must not be negative, not {p[option]}")
    facts, changed = gather(module, p)
    facts["findings"] = integrity_findings(facts, p)
    module.exit_json(changed=changed, **facts)


if __name__ == "__main__":
    main()
