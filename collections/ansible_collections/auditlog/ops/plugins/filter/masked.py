# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
"""Filter auditlog.ops.masked: a text with the deployment's secrets masked, for what leaves a host
as evidence (the security-incident runbook's forensic bundle: configuration files, logs)."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError
from ansible_collections.auditlog.ops.plugins.plugin_utils.masking import mask_text, secret_forms

DOCUMENTATION = r"""
name: masked
short_description: Mask the given secret values in a text
version_added: 0.4.0
author: audit-log project (!UNKNOWN)
description:
  - Replaces every occurrence of each secret value in the text, as it is and URL-encoded (as it
    stands in a C(redis://) or C(postgresql://) URL), with C(********), longest first.
  - A value shorter than 4 characters is refused, since masking it would mask unrelated text and
    tell what it is.
options:
  _input:
    description: The text.
    type: str
    required: true
  secrets:
    description: The secret values (e.g. those of the deployment's secrets file).
    type: list
    elements: str
    required: true
"""

EXAMPLES = r"""
- name: A configuration file with the deployment's secrets masked
  ansible.builtin.copy:
    content: "{{ env_file.content | b64decode | auditlog.ops.masked(secret_values) }}"
    dest: /srv/forensics/audit-service.env
    mode: "0400"
  delegate_to: localhost
  vars:
    secret_values: "{{ query('ansible.builtin.vars', *common_secret_names) }}"
"""

RETURN = r"""
_value:
  description: The text, each secret replaced with C(********).
  type: str
"""


def masked(text, secrets):
    if not isinstance(secrets, (list, tuple)):
        raise AnsibleFilterError(f"masked takes a list of secret values, not {type(secrets).__name__}")
    forms = set()
    for value in secrets:
        if value is None or value == "":
            continue
        if len(str(value)) < 4:
            raise AnsibleFilterError(
                "masked: a secret value shorter than 4 characters cannot be masked safely"
            )
        forms |= secret_forms(value)
    return mask_text(str(text), forms)


class FilterModule:
    def filters(self):
        return {"masked": masked}
