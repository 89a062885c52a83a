#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: chain_verify
short_description: Verify every tenant's hash chain with the audit service's own C(audit-service verify)
version_added: 0.4.0
description:
  - Runs the service's own verification, C(audit-service verify), as the service's units run its
    commands (the same environment files, as the service's user through C(runuser)), and returns
    its report - what C(GET /api/v1/audit/verify) says, for every tenant in turn (or one), without
    an API key per tenant.
  - Per tenant, whether its chain verifies, how many events were checked, and the first event that
    breaks it - its id, seq and receipt time, and the problem (V(hash_mismatch) a row changed,
    V(prev_hash_mismatch) a row linked to another, V(seq_gap) rows deleted, V(head_mismatch) the
    newest rows cut off, V(missing_at_end) a window's last rows gone).
  - One critical finding per broken tenant naming that event; one info finding when every chain
    verifies. Recovery (point-in-time recovery of the database, then the stream replayed) is the
    recovery runbooks' business; this module only reads.
  - Only reads, so it runs in check mode as well; C(changed) is always false.
author: audit-log project (!UNKNOWN)
options:
  env_files:
    description:
      - The environment files of the unit whose login runs the verification (C(KEY=VALUE) lines,
        as systemd's C(EnvironmentFile)), in order, later ones winning - the API's,
        C(audit-service.env) and C(audit-api.env), whose login reads every event and may change
        none.
    type: list
    elements: path
    required: true
  tenant:
    description: Verify this tenant only (its id or name); every tenant when not given.
    type: str
  since:
    description:
      - Only the events received from this time on (RFC 3339 with an offset, like
        C(2026-05-01T00:00:00Z)). The stretch of each chain received in the window is checked
        from the link before it.
    type: str
  until:
    description: Only the events received before this time (RFC 3339 with an offset).
    type: str
  findings_limit:
    description:
      - At most this many broken tenants get a finding of their own; the others are named in one
        more critical finding. RV(tenants) holds them all.
    type: int
    default: 50
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - auditlog.ops.service_cli
attributes:
  check_mode:
    support: full
    details: The verification only reads; it runs in check mode as it does otherwise.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Run it as root (C(become)) on a host where the service is deployed (an API host).
  - The environment files hold secrets; they are read, passed to the command and never returned.
  - It takes as long as reading every event once (each tenant's chain streamed in batches).
seealso:
  - module: auditlog.ops.retention
  - module: auditlog.ops.pg_integrity
"""

EXAMPLES = r"""
- name: Verify every tenant's chain
  auditlog.ops.chain_verify:
    env_files:
      - /etc/audit-service/audit-service.env
      - /etc/audit-service/audit-api.env
  become: true
  register: chains

- name: One tenant, the events received since May
  auditlog.ops.chain_verify:
    env_files:
      - /etc/audit-service/audit-service.env
      - /etc/audit-service/audit-api.env
    tenant: 8c0e7a52-51b8-4a4f-9d0c-2f6f1f1b6c11
    since: "2026-05-01T00:00:00Z"
  become: true
"""

RETURN = r"""
changed:
  description: Always false; the verification only reads.
  returned: always
  type: bool
valid:
  description: Whether every chain verified.
  returned: always
  type: bool
window:
  description: The window verified (C(since), C(until); null when not given), as the service read it.
  returned: always
  type: dict
  sample: {"since": "2026-05-01T00:00:00.000000Z", "until": null}
summary:
  description: The counts of the run.
  returned: always
  type: dict
  contains:
    tenants:
      description: The tenants verified.
      type: int
    valid:
      description: Those whose chains verify.
      type: int
    broken:
      description: Those whose chains do not.
      type: int
    events_checked:
      description: The events whose hashes were recomputed.
      type: int
    broken_tenants:
      description: The ids of the tenants whose chains do not verify.
      type: list
      elements: str
  sample: {"tenants": 3, "valid": 2, "broken": 1, "events_checked": 1204,
           "broken_tenants": ["8c0e7a52-51b8-4a4f-9d0c-2f6f1f1b6c11"]}
tenants:
  description: Each tenant's result, by name.
  returned: always
  type: list
  elements: dict
  contains:
    tenant_id:
      description: The tenant's id.
      type: str
    name:
      description: The tenant's name.
      type: str
    valid:
      description: Whether its chain verifies.
      type: bool
    checked:
      description: The events checked (up to and with the first invalid one).
      type: int
    first_invalid:
      description:
        - The first event that breaks the chain, C(event_id), C(seq) and C(created_at) (when the
          service received it); null when the chain verifies or no one row is at fault (rows cut
          off at the end).
      type: dict
    problem:
      description:
        - What breaks it - V(hash_mismatch), V(prev_hash_mismatch), V(seq_gap),
          V(unknown_chain_version), V(missing_at_end) or V(head_mismatch); null when valid.
      type: str
    reason:
      description: The service's own words for it.
      type: str
  sample: [{"tenant_id": "8c0e7a52-51b8-4a4f-9d0c-2f6f1f1b6c11", "name": "acme", "valid": false,
            "checked": 8, "first_invalid": {"event_id": "0196b3a1-7f1e-7c3a-9d51-44e2b1f0a9c2",
            "seq": 8, "created_at": "2026-05-01T10:00:00.123456Z"}, "problem": "hash_mismatch",
            "reason": "stored hash does not match the event's content"}]
findings:
  description:
    - Check C(chain_verify) (component C(postgresql)). One critical finding per broken tenant
      (up to O(findings_limit)) naming the first invalid event and the way to recovery; one info
      finding when every chain verifies.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import service_cli  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding  # noqa: E402

COMPONENT = "postgresql"
CHECK = "chain_verify"
# What to do about a broken chain: the database brought back to before the damage, the events
# received since stored again from the stream, then verified again.
RECOVERY = (
    "restore the database with point-in-time recovery to before the damage and replay the stream"
    " (the recovery runbooks), then verify again"
)
PROBLEM_WORDS = {
    "hash_mismatch": "hash mismatch, the row was changed",
    "prev_hash_mismatch": "prev_hash mismatch, the row links to another",
    "seq_gap": "seq gap, rows before it were deleted",
    "unknown_chain_version": "unknown chain version",
    "missing_at_end": "the window's last events are missing",
    "head_mismatch": "the newest events are missing or altered",
}


def cli_args(tenant=None, since=None, until=None):
    args = ["verify"]
    for option, value in (("--tenant", tenant), ("--since", since), ("--until", until)):
        if value:
            args += [option, value]
    return args


def _window_text(window):
    since, until = (window or {}).get("since"), (window or {}).get("until")
    if since and until:
        return f" received from {since} to {until}"
    if since:
        return f" received since {since}"
    if until:
        return f" received before {until}"
    return ""


def tenant_summary(result, window=None):
    """One line naming the broken tenant, its first invalid event and what to do."""
    who = "tenant {} ({})".format(result.get("name"), result.get("tenant_id"))
    problem = PROBLEM_WORDS.get(result.get("problem"), result.get("problem") or "broken")
    first = result.get("first_invalid")
    if first:
        before = max(int(result.get("checked") or 0) - 1, 0)
        where = "at event {} (seq {}, received {}): {} ({}); the {} event(s) before it verify".format(
            first.get("event_id"),
            first.get("seq"),
            first.get("created_at"),
            problem,
            result.get("reason"),
            before,
        )
    else:
        where = "{} ({})".format(problem, result.get("reason"))
    return f"{who}: hash chain{_window_text(window)} broken {where}: {RECOVERY}"


def verify_findings(report, limit=50):
    """The findings of an `audit-service verify` report."""
    tenants = report.get("tenants") or []
    window = {"since": report.get("since"), "until": report.get("until")}
    summary = report.get("summary") or {}
    broken = [t for t in tenants if not t.get("valid")]
    if not broken:
        return [
            finding(
                "info",
                COMPONENT,
                CHECK,
                "every tenant's hash chain{} verifies: {} tenant(s), {} event(s) checked".format(
                    _window_text(window), len(tenants), summary.get("events_checked", 0)
                ),
                evidence=summary,
            )
        ]
    out = [
        finding("critical", COMPONENT, CHECK, tenant_summary(t, window), evidence=t) for t in broken[:limit]
    ]
    rest = broken[limit:]
    if rest:
        out.append(
            finding(
                "critical",
                COMPONENT,
                CHECK,
                f"{len(rest)} more tenant(s) with a broken hash chain (in the tenants returned): {RECOVERY}",
                evidence=[t.get("tenant_id") for t in rest],
            )
        )
    return out


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **service_cli.argument_spec(),
            tenant=dict(type="str"),
            since=dict(type="str"),
            until=dict(type="str"),
            findings_limit=dict(type="int", default=50),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["findings_limit"] < 1:
        module.fail_json(msg=f"findings_limit must be at least 1, not {p['findings_limit']}")
    # Exit code 1 with a report is a broken chain; without one, an error (stderr says which).
    _rc, report = service_cli.run(
        module,
        p["command"],
        p["env_files"],
        p["run_as"],
        cli_args(p["tenant"], p["since"], p["until"]),
        ok_rcs=(0, 1),
    )
    if "tenants" not in report or "summary" not in report:
        module.fail_json(msg="audit-service verify printed no verification report: is the service too old?")
    module.exit_json(
        changed=False,
        valid=bool(report.get("valid")),
        window={"since": report.get("since"), "until": report.get("until")},
        summary=report["summary"],
        tenants=report["tenants"],
        findings=verify_findings(report, p["findings_limit"]),
    )


if __name__ == "__main__":
    main()
