#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: retention
short_description: Run the audit service's retention (old partitions dropped, old rows deleted) with counts
version_added: 0.4.0
description:
  - Runs the service's own retention operation, C(audit-service retention), as its systemd unit
    does (the same environment files), and returns its report - the guide's
    C(DELETE FROM audit_logs WHERE created_at < now() - interval '90 days'), done so that every
    chain still verifies. Of each tenant it removes the longest prefix of its chain older than the
    cut-off, keeping that prefix's last link as the chain's anchor first; partitions wholly older
    than the cut-off are dropped, the remaining old rows deleted in small transactions.
  - In check mode it runs C(audit-service retention --dry-run), which counts what would go and
    removes nothing. C(changed) is true only when rows were removed (in check mode, would be).
  - The module never removes anything itself, so what it does is exactly what the
    service's timer does.
author: audit-log project (!UNKNOWN)
options:
  env_files:
    description:
      - The environment files the retention unit reads (C(KEY=VALUE) lines, as systemd's
        C(EnvironmentFile)), in order, later ones winning. They hold the retention login's
        database URL and C(RETENTION_DAYS).
    type: list
    elements: path
    required: true
  days:
    description:
      - Remove events older than this many days instead of the service's C(RETENTION_DAYS). The
        service refuses a window shorter than the stream's replay window.
    type: int
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - auditlog.ops.service_cli
attributes:
  check_mode:
    support: full
    details: Counts what would be removed (C(--dry-run)) and removes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Run it as root (C(become)) on a host where the worker is deployed.
  - The environment files hold secrets; they are read, passed to the command and never returned.
seealso:
  - module: auditlog.ops.pg_diagnostics
"""

EXAMPLES = r"""
- name: What retention would remove
  auditlog.ops.retention:
    env_files:
      - /etc/audit-service/audit-service.env
      - /etc/audit-service/audit-worker.env
      - /etc/audit-service/audit-retention.env
  check_mode: true
  become: true
"""

RETURN = r"""
changed:
  description: Whether rows were removed (in check mode, would be).
  returned: always
  type: bool
report:
  description:
    - The service's retention report. C(cutoff) (events before it go), C(retention_days),
      C(dry_run), C(tenants) (whose chains lose a prefix), C(removed_rows),
      C(dropped_partitions) (each with its C(name) and C(rows)), C(deleted_rows); C(skipped)
      when another run held the lock.
  returned: always
  type: dict
  sample: {"cutoff": "2026-09-02T10:00:00+00:00", "retention_days": 90, "dry_run": false,
           "tenants": 2, "removed_rows": 1200, "dropped_partitions": [{"name": "audit_logs_p2026_08",
           "rows": 1000}], "deleted_rows": 200}
findings:
  description: One info finding with the counts when rows were (or would be) removed.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import service_cli  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding  # noqa: E402

# How the service's CLI is run as its unit runs it (runuser, the unit's environment files) is
# module_utils/service_cli.py's, shared with chain_verify.
read_env_file = service_cli.read_env_file


def report_findings(report, check_mode):
    if report.get("skipped"):
        return [
            finding(
                "warning",
                "postgresql",
                "retention",
                f"retention skipped: {report['skipped']}",
                evidence=report,
            )
        ]
    if not report.get("removed_rows"):
        return []
    dropped = report.get("dropped_partitions") or []
    did = "would remove" if check_mode else "removed"
    summary = "retention {} {} event(s) older than {} days (before {}) of {} tenant(s){}".format(
        did,
        report["removed_rows"],
        report.get("retention_days"),
        report.get("cutoff"),
        report.get("tenants"),
        "; partitions dropped: " + ", ".join(p["name"] for p in dropped) if dropped else "",
    )
    remediation = (
        None if check_mode else "audit-service retention (chains anchored first, so they still verify)"
    )
    return [finding("info", "postgresql", "retention", summary, evidence=report, remediation=remediation)]


def main():
    module = AnsibleModule(
        argument_spec=dict(
            **service_cli.argument_spec(),
            days=dict(type="int"),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if p["days"] is not None and p["days"] < 1:
        module.fail_json(msg=f"days must be at least 1, not {p['days']}")
    args = ["retention"]
    if p["days"] is not None:
        args += ["--days", str(p["days"])]
    if module.check_mode:
        args.append("--dry-run")
    _rc, report = service_cli.run(module, p["command"], p["env_files"], p["run_as"], args)
    module.exit_json(
        changed=bool(report.get("removed_rows")),
        report=report,
        findings=report_findings(report, module.check_mode),
    )


if __name__ == "__main__":
    main()
