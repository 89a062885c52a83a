# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
"""Action plugin of auditlog.ops.masked_template: ansible.builtin.template, with the values of
the variables named in `mask` replaced by ******** in the diff it returns.

A config file that holds a password would otherwise need no_log, which hides its whole diff: an
operator running --check --diff could not see what would change. Here the diff stays, the
secrets do not. Everything else (src lookup in the role, validate, backup, modes) is the template
action's own.
"""

from __future__ import annotations

from ansible.plugins.action.template import ActionModule as TemplateAction
from ansible_collections.auditlog.ops.plugins.plugin_utils.masking import mask_diff, mask_messages, secrets_of


class ActionModule(TemplateAction):
    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        secrets = secrets_of(self._task.args.pop("mask", None) or [], task_vars, self._templar)
        result = super().run(tmp, task_vars)
        if "diff" in result:
            result["diff"] = mask_diff(result["diff"], secrets)
        return mask_messages(result, secrets)
