# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# The work is done by the action plugin of the same name (plugins/action/masked_template.py);
# this file carries its documentation, as ansible.builtin.template's does.

DOCUMENTATION = r"""
---
module: masked_template
short_description: Template a file whose content holds secrets, with the secrets masked in the diff
description:
  - Renders a Jinja2 template to a file on the target, exactly as M(ansible.builtin.template) does
    (it is that action, and takes all of its options).
  - The values of the variables named in O(mask), as they are and URL-encoded, are replaced by
    C(********) in the diff it returns, so C(--check --diff) shows what would change in a
    configuration file that holds a password without printing the password, and the task needs no
    C(no_log) (which would hide the whole diff).
version_added: "0.2.0"
author: audit-log project (!UNKNOWN)
options:
  mask:
    description:
      - Names of the variables whose values must not appear in the diff or in messages.
      - Each must be defined and at least 4 characters long.
    type: list
    elements: str
    required: true
  src:
    description: The template, looked up in the role's C(templates) as M(ansible.builtin.template) does.
    type: path
    required: true
  dest:
    description: Where to write the file on the target.
    type: path
    required: true
  owner:
    description: Owner of the file.
    type: str
  group:
    description: Group of the file.
    type: str
  mode:
    description: Mode of the file.
    type: raw
  validate:
    description: A command that checks the rendered file (C(%s) is its path) before it is installed.
    type: str
  backup:
    description: Keep a copy of the file it replaces.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
notes:
  - Other options of M(ansible.builtin.template) are passed to it unchanged.
seealso:
  - module: ansible.builtin.template
"""

EXAMPLES = r"""
- name: Write redis.conf (requirepass masked in --diff)
  auditlog.ops.masked_template:
    src: redis.conf.j2
    dest: /etc/redis/redis.conf
    owner: redis
    group: redis
    mode: "0640"
    mask: [audit_redis_password]
"""

RETURN = r"""
dest:
  description: The file written.
  returned: success
  type: str
  sample: /etc/redis/redis.conf
checksum:
  description: SHA1 of the rendered file.
  returned: success
  type: str
  sample: 2a4c5d0f3f1c9b1e0f0e1d8e5f8c1a2b3c4d5e6f
"""
