# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
"""Action plugin of auditlog.ops.finding: a finding the playbook states itself, recorded as the
probe modules' are (plugins/plugin_utils/findings_action.py). Controller only."""

from __future__ import annotations

from ansible.plugins.action import ActionBase
from ansible_collections.auditlog.ops.plugins.module_utils.findings import SEVERITIES, finding
from ansible_collections.auditlog.ops.plugins.plugin_utils.findings_action import record

ARGUMENT_SPEC = {
    "severity": {"type": "str", "required": True, "choices": list(SEVERITIES)},
    "component": {"type": "str", "required": True},
    "check": {"type": "str", "required": True},
    "summary": {"type": "str", "required": True},
    "evidence": {"type": "raw"},
    "remediation": {"type": "str"},
    "variable": {"type": "str"},
}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        item = finding(**args)
        result["changed"] = False
        return record(result, task_vars, [item], no_log=bool(self._task.no_log))
