# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
"""Secrets masked in what an action returns: the diff of a configuration file that holds a
password stays readable, the password does not (auditlog.ops.masked_template and
auditlog.ops.config_files).

A task names the variables to mask (`mask: [audit_db_password]`); secrets_of() turns them into
the texts to replace, mask_text() and mask_diff() replace them with MASK.
"""

from __future__ import annotations

from urllib.parse import quote

from ansible.errors import AnsibleActionFail

MASK = "********"


def secret_forms(value):
    """The forms a secret takes in a rendered file: as it is, and URL-encoded (in URLs)."""
    text = str(value)
    return {text, quote(text, safe=""), quote(text, safe="-._~")}


def secrets_of(names, task_vars, templar):
    """The texts to mask for the variables `names` (the task's `mask` option)."""
    if isinstance(names, str) or not isinstance(names, list):
        raise AnsibleActionFail(f"mask must be a list of variable names, not {names!r}")
    secrets = set()
    for name in names:
        if name not in task_vars:
            raise AnsibleActionFail(f"mask names {name}, which is not defined")
        value = templar.template(task_vars[name])
        if len(str(value)) < 4:
            # Masking a very short value would mask unrelated text and tell what it is.
            raise AnsibleActionFail(f"mask names {name}, whose value is too short to mask")
        secrets |= secret_forms(value)
    return secrets


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


def mask_messages(result, secrets):
    """The result's messages and outputs, masked in place."""
    for key in ("msg", "exception", "stdout", "stderr"):
        if key in result:
            result[key] = mask_text(result[key], secrets)
    return result
