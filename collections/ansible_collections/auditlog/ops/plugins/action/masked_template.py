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

from urllib.parse import quote

from ansible.errors import AnsibleActionFail
from ansible.plugins.action.template import ActionModule as TemplateAction

MASK = "********"


def secret_forms(value):
    """The forms a secret takes in a rendered file: as it is, and URL-encoded (in URLs)."""
    text = str(value)
    return {text, quote(text, safe=""), quote(text, safe="-._~")}


def mask_text(text, secrets):
    """`text` with every occurrence of each secret replaced, longest first (a secret may contain
    another)."""
    if not isinstance(text, str):
        return text
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, MASK)
    return text


def mask_diff(diff, secrets):
    """A diff (one dict, or a list of them) with the secrets masked in its before/after texts."""
    if isinstance(diff, list):
        return [mask_diff(d, secrets) for d in diff]
    if isinstance(diff, dict):
        return {k: mask_text(v, secrets) if k in ("before", "after") else v for k, v in diff.items()}
    return diff


class ActionModule(TemplateAction):
    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        names = self._task.args.pop("mask", None) or []
        if isinstance(names, str) or not isinstance(names, list):
            raise AnsibleActionFail(f"mask must be a list of variable names, not {names!r}")
        secrets = set()
        for name in names:
            if name not in task_vars:
                raise AnsibleActionFail(f"mask names {name}, which is not defined")
            value = self._templar.template(task_vars[name])
            if len(str(value)) < 4:
                # Masking a very short value would mask unrelated text and tell what it is.
                raise AnsibleActionFail(f"mask names {name}, whose value is too short to mask")
            secrets |= secret_forms(value)
        result = super().run(tmp, task_vars)
        if "diff" in result:
            result["diff"] = mask_diff(result["diff"], secrets)
        for key in ("msg", "exception", "stdout", "stderr"):
            if key in result:
                result[key] = mask_text(result[key], secrets)
        return result
