# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
"""Action plugin of auditlog.ops.verdict: fails the host when its findings of the run reach
`fail_on`. Controller only; it returns no `findings` (so no report counts them twice)."""

from __future__ import annotations

from ansible.plugins.action import ActionBase
from ansible_collections.auditlog.ops.plugins.module_utils.findings import SEVERITIES, at_least, rank
from ansible_collections.auditlog.ops.plugins.plugin_utils.findings_action import findings_so_far

ARGUMENT_SPEC = {"fail_on": {"type": "str", "default": "never", "choices": [*SEVERITIES, "never"]}}


def judge(findings, host, fail_on):
    """The verdict on a host's findings: (failed, msg, counts, worst, failing)."""
    mine = [f for f in findings if f.get("host") in (None, host)]
    counts = {s: sum(1 for f in mine if f.get("severity") == s) for s in SEVERITIES}
    worst = max((f.get("severity") for f in mine), key=rank, default=None)
    worst = worst if rank(worst) > rank("info") else "ok"
    failing = [] if fail_on == "never" else at_least(mine, fail_on)
    failing.sort(key=lambda f: -rank(f.get("severity")))
    figures = ", ".join(f"{counts[s]} {s}" for s in SEVERITIES)
    if failing:
        lines = [
            f"{f.get('severity')}: {f.get('component')} {f.get('check')}: {f.get('summary')}" for f in failing
        ]
        msg = f"{len(failing)} finding(s) at or above {fail_on} ({figures}): " + "; ".join(lines)
        return True, msg, counts, worst, failing
    return False, f"{figures}; fail_on {fail_on}", counts, worst, failing


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True
    _supports_async = False

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        host = task_vars.get("inventory_hostname")
        failed, msg, counts, worst, failing = judge(findings_so_far(task_vars), host, args["fail_on"])
        result.update(changed=False, failed=failed, msg=msg, counts=counts, worst=worst, failing=failing)
        return result
