#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only. psycopg2 (Debian's python3-psycopg2, on the database hosts).

DOCUMENTATION = r"""
---
module: pg_tenant_copy
short_description: Bring one tenant's events back from a restored copy of the database
version_added: 0.4.0
description:
  - The guide's Partial Data Recovery (C(INSERT INTO audit_logs SELECT * FROM audit_logs_backup
    WHERE tenant_id = ... AND created_at > ...)) done safely - one tenant's events received after
    O(since), read from a restored copy of the database (a scratch server on O(source_port), see
    recovery/tenant.yml), and inserted into the live database where it lacks them, each with its
    original chain link (seq, prev_hash, hash), so that the tenant's chain verifies again.
  - An event the live database has (the same event id) is left as it is; no other tenant is read
    or written. Inserted in one transaction - all of them or none.
  - C(changed) when an event was inserted (in check mode, would be).
author: audit-log project (!UNKNOWN)
options:
  tenant:
    description: The tenant, by name or id.
    type: str
    required: true
  since:
    description:
      - Only the events received after this time (C(created_at), RFC 3339 with an offset); all of
        the tenant's events in the copy when not given.
    type: str
  source_port:
    description: The port of the restored copy's server (on the local socket, O(login_host)).
    type: int
    required: true
  source_host:
    description: The restored copy's socket directory or host.
    type: str
    default: /run/postgresql
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - auditlog.ops.postgres
attributes:
  check_mode:
    support: full
    details: Counts what it would insert and inserts nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Run it on the database host as C(postgres) (C(become_user)) - the live database on O(port), the
    copy on O(source_port), both by peer authentication, O(db) in both.
seealso:
  - module: auditlog.ops.pg_backup
  - module: auditlog.ops.chain_verify
"""

EXAMPLES = r"""
- name: Bring back acme's events received since May from the copy on port 5499
  auditlog.ops.pg_tenant_copy:
    db: audit_logs
    tenant: acme
    since: "2026-05-01T00:00:00Z"
    source_port: 5499
  become: true
  become_user: postgres
"""

RETURN = r"""
tenant_id:
  description: The tenant's id.
  returned: always
  type: str
in_copy:
  description: The tenant's events in the copy (received after O(since)).
  returned: always
  type: int
missing:
  description: Those the live database lacked.
  returned: always
  type: int
inserted:
  description: Those inserted (0 in check mode).
  returned: always
  type: int
findings:
  description: Check C(tenant_recovery) (component C(postgresql)) - one info finding with the counts.
  returned: always
  type: list
  elements: dict
"""

import io  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import postgres  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding  # noqa: E402

FIND_TENANT = "SELECT id::text FROM tenants WHERE id::text = %(t)s OR name = %(t)s"
SELECT_ROWS = "SELECT * FROM audit_logs WHERE tenant_id = '{tenant}' AND created_at > '{since}'::timestamptz"
INSERT_MISSING = """
INSERT INTO audit_logs SELECT c.* FROM tenant_copy c
WHERE NOT EXISTS (SELECT 1 FROM audit_logs a WHERE a.tenant_id = c.tenant_id AND a.event_id = c.event_id)
"""
COUNT_MISSING = """
SELECT count(*) FROM tenant_copy c
WHERE NOT EXISTS (SELECT 1 FROM audit_logs a WHERE a.tenant_id = c.tenant_id AND a.event_id = c.event_id)
"""


def tenant_id(conn, tenant):
    with conn.cursor() as cur:
        cur.execute(FIND_TENANT, {"t": tenant})
        row = cur.fetchone()
    return row[0] if row else None


def main():
    spec = postgres.postgres_common_argument_spec()
    spec.update(
        tenant=dict(type="str", required=True),
        since=dict(type="str"),
        source_port=dict(type="int", required=True),
        source_host=dict(type="str", default="/run/postgresql"),
    )
    module = AnsibleModule(argument_spec=spec, supports_check_mode=True)
    p = module.params
    if not postgres.HAS_PSYCOPG2:
        module.fail_json(msg=missing_required_lib("psycopg2 (Debian: python3-psycopg2)"))
    source_params = dict(p, login_host=p["source_host"], port=p["source_port"])
    try:
        live = postgres.connect(p, guard=False)
        copy = postgres.connect(source_params, guard=False)
    except postgres.psycopg2.Error as exc:
        module.fail_json(msg=f"cannot connect: {str(exc).strip()}")
    try:
        tid = tenant_id(copy, p["tenant"])
        if tid is None:
            module.fail_json(msg=f"tenant {p['tenant']} is not in the restored copy")
        if tenant_id(live, tid) is None:
            module.fail_json(msg=f"tenant {p['tenant']} ({tid}) is not in the live database")
        # The time is checked by PostgreSQL (a bad one fails here, naming it).
        with copy.cursor() as cur:
            cur.execute("SELECT %s::timestamptz", (p["since"] or "-infinity",))
        since = p["since"] or "-infinity"
        rows = io.StringIO()
        with copy.cursor() as cur:
            query = SELECT_ROWS.format(tenant=tid, since=since.replace("'", "''"))
            cur.copy_expert(f"COPY ({query}) TO STDOUT", rows)
        rows.seek(0)
        in_copy = rows.getvalue().count("\n")
        live.autocommit = False
        with live.cursor() as cur:
            cur.execute("CREATE TEMP TABLE tenant_copy (LIKE audit_logs) ON COMMIT DROP")
            cur.copy_expert("COPY tenant_copy FROM STDIN", rows)
            cur.execute(COUNT_MISSING)
            missing = cur.fetchone()[0]
            inserted = 0
            if not module.check_mode and missing:
                cur.execute(INSERT_MISSING)
                inserted = cur.rowcount
        if module.check_mode:
            live.rollback()
        else:
            live.commit()
    except postgres.psycopg2.Error as exc:
        module.fail_json(msg=f"the copy of tenant {p['tenant']} failed, nothing inserted: {str(exc).strip()}")
    finally:
        live.close()
        copy.close()
    verb = "would insert" if module.check_mode else "inserted"
    window = f" received after {p['since']}" if p["since"] else ""
    summary = (
        f"tenant {p['tenant']} ({tid}): {in_copy} event(s){window} in the restored copy, {missing} missing"
        f" from the live database, {verb} {missing if module.check_mode else inserted}"
    )
    module.exit_json(
        changed=bool(missing),
        tenant_id=tid,
        in_copy=in_copy,
        missing=missing,
        inserted=inserted,
        findings=[finding("info", "postgresql", "tenant_recovery", summary)],
    )


if __name__ == "__main__":
    main()
