# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# The work is done by the action plugin of the same name (plugins/action/verdict.py), on the
# controller; this file carries its documentation.

DOCUMENTATION = r"""
---
module: verdict
short_description: Fail a host when its runbook findings reach a chosen severity
description:
  - Reads the host's findings of this run (the fact C(runbook_findings) that the collection's
    probe modules and M(auditlog.ops.finding) add to) and fails the host, naming each finding at
    or above O(fail_on), or returns ok with the count per severity.
  - Every runbook ends with it, so that a variable decides whether an unhealthy finding fails the
    run (a non-zero exit code of C(ansible-playbook), for CI and monitoring use).
  - The convention (see EXAMPLES) sets O(fail_on) from the variable C(runbook_fail_on), V(never)
    when it is not set, so that the inventory or C(-e runbook_fail_on=critical) decides.
  - Findings of an earlier run (from a persistent fact cache) are not counted.
  - Runs on the controller only; never changed.
version_added: "0.3.0"
author: audit-log project (!UNKNOWN)
options:
  fail_on:
    description:
      - The least severity that fails the host; V(never) never fails it.
    type: str
    choices: [critical, warning, info, never]
    default: never
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Decides in check mode as well, on the findings the probes returned in check mode.
  diff_mode:
    support: none
  platform:
    platforms: all
seealso:
  - module: auditlog.ops.finding
"""

EXAMPLES = r"""
- name: Verdict
  auditlog.ops.verdict:
    fail_on: "{{ runbook_fail_on | default('never') }}"
"""

RETURN = r"""
counts:
  description: The host's findings of the run per severity.
  returned: always
  type: dict
  sample: {"critical": 1, "warning": 0, "info": 2}
worst:
  description: The worst severity among the host's findings, or V(ok) when it has none above info.
  returned: always
  type: str
  sample: critical
failing:
  description: The findings at or above O(fail_on) (empty with V(never)), worst first.
  returned: always
  type: list
  elements: dict
"""
