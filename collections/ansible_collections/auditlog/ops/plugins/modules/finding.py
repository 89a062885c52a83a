# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# The work is done by the action plugin of the same name (plugins/action/finding.py), on the
# controller; this file carries its documentation.

DOCUMENTATION = r"""
---
module: finding
short_description: Record a runbook finding from the playbook itself
description:
  - Adds one finding, in the shape the collection's probe modules return (see
    C(plugins/module_utils/findings.py)), to the host's findings of the run, for a check or a
    repair that is an ordinary Ansible task (a M(ansible.builtin.service) restart, an
    M(ansible.builtin.assert), a registered result).
  - The finding is returned as RV(findings) (with RV(findings[].host) set) and added to the fact
    C(runbook_findings), which M(auditlog.ops.verdict) reads; the report callback
    C(auditlog.ops.runbook_report) puts it in the run's report.
  - Runs on the controller only; never changed.
version_added: "0.3.0"
author: audit-log project (!UNKNOWN)
options:
  severity:
    description: How bad it is.
    type: str
    choices: [critical, warning, info]
    required: true
  component:
    description: The stack component it is about (postgresql, redis, nats, api, worker, nginx, host, dns...).
    type: str
    required: true
  check:
    description: A short stable key for what was checked (unit_state, auth, port_owner...).
    type: str
    required: true
  summary:
    description: One line for a person.
    type: str
    required: true
  evidence:
    description: What shows it (figures, lines, a registered result's fields). Any data.
    type: raw
  remediation:
    description: What the runbook did about it, if anything.
    type: str
  variable:
    description: The inventory variable that persists a change, or that allows a gated repair.
    type: str
extends_documentation_fragment:
  - action_common_attributes
attributes:
  check_mode:
    support: full
    details: Records the finding in check mode too.
  diff_mode:
    support: none
  platform:
    platforms: all
notes:
  - Do not put secrets in O(evidence); the report is written in clear to the controller's C(reports/).
seealso:
  - module: auditlog.ops.verdict
"""

EXAMPLES = r"""
- name: Restart Redis when it is down
  ansible.builtin.systemd_service:
    name: redis-server
    state: started
  register: redis_start

- name: Record the restart
  auditlog.ops.finding:
    severity: critical
    component: redis
    check: unit_state
    summary: redis-server was not running
    evidence: "{{ redis_probe.units['redis-server'] }}"
    remediation: started redis-server
  when: redis_start is changed
"""

RETURN = r"""
findings:
  description: The finding, as a list of one.
  returned: always
  type: list
  elements: dict
  contains:
    severity:
      description: critical, warning or info.
      type: str
    component:
      description: The component.
      type: str
    check:
      description: The check's key.
      type: str
    summary:
      description: One line.
      type: str
    evidence:
      description: What shows it.
      type: raw
    remediation:
      description: What was done, or null.
      type: str
    variable:
      description: The inventory variable, or null.
      type: str
    host:
      description: The host (inventory_hostname).
      type: str
"""
