#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# The controller side (templates rendered, files read, secrets masked in the diff) is the action
# plugin of the same name (plugins/action/config_files.py); this module is what runs on the host.

from __future__ import annotations

DOCUMENTATION = r"""
---
module: config_files
short_description: A component's directories, files and links, checked and written in one call
description:
  - Makes directories, writes files and points symbolic links, each with its owner, group and
    mode, in one call on the host instead of one or two per item (M(ansible.builtin.file),
    M(ansible.builtin.copy), M(ansible.builtin.template)). On a host reached over SSH or
    C(docker exec), each call costs a connection and a Python start; a role's configuration in
    one call makes a converge that changes nothing several times faster.
  - Directories come first, then files, then links, each in the order given.
  - The files' contents come from the controller. The action plugin renders O(files[].template)
    from the role's C(templates) (as M(ansible.builtin.template) does), reads O(files[].src) from
    the role's C(files) or an absolute path on the controller, or takes O(files[].content).
  - A file is written (atomically, through a temporary file beside it) only when its content
    differs; owner, group and mode are set only when they differ. C(changed) is true when any item
    changed, and RV(changed_paths) says which.
  - With C(--diff), a changed file shows its old and new content, with the values of the variables
    named in O(mask) replaced by C(********); a file with O(files[].diff=false) (a private key)
    shows only that it changed. The contents never appear in logs (they are C(no_log) options).
version_added: "0.3.0"
author: audit-log project (!UNKNOWN)
options:
  directories:
    description: Directories to make (with their parents), or whose owner, group and mode to set.
    type: list
    elements: dict
    default: []
    suboptions:
      path:
        description: The directory.
        type: path
        required: true
      owner:
        description: Its owner (unchanged when omitted).
        type: str
      group:
        description: Its group (unchanged when omitted).
        type: str
      mode:
        description: Its mode, as M(ansible.builtin.file) takes it (C("0755"), C(u=rwx,go=rx)).
        type: raw
  files:
    description:
      - Files to write. Each has exactly one of O(files[].template), O(files[].src) and
        O(files[].content).
    type: list
    elements: dict
    default: []
    suboptions:
      dest:
        description: The file on the host.
        type: path
        required: true
      template:
        description: A Jinja2 template, looked up in the role's C(templates) (handled by the action plugin).
        type: str
      vars:
        description: Variables for O(files[].template) alone, beside the task's (action plugin).
        type: dict
      src:
        description: A file on the controller, in the role's C(files) unless absolute (action plugin).
        type: str
      content:
        description: The file's content.
        type: str
      owner:
        description: Its owner (unchanged, or root's for a new file, when omitted).
        type: str
      group:
        description: Its group.
        type: str
      mode:
        description: Its mode. A new file without one gets C(0600).
        type: raw
      diff:
        description: Whether C(--diff) shows the file's content. Turn it off for keys.
        type: bool
        default: true
  links:
    description: Symbolic links to point (a link, file or empty directory at O(links[].dest) is replaced).
    type: list
    elements: dict
    default: []
    suboptions:
      dest:
        description: The link.
        type: path
        required: true
      src:
        description: What it points to, relative or absolute, kept as given.
        type: str
        required: true
  mask:
    description:
      - Names of variables whose values (as they are and URL-encoded) are replaced by C(********)
        in the diff and in messages (handled by the action plugin). Each must be defined and at
        least 4 characters long.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
seealso:
  - module: ansible.builtin.template
  - module: ansible.builtin.copy
  - module: ansible.builtin.file
  - module: auditlog.ops.masked_template
"""

EXAMPLES = r"""
- name: Install Redis' TLS files
  auditlog.ops.config_files:
    directories:
      - {path: /etc/redis/tls, owner: redis, group: redis, mode: "0755"}
    files:
      - {dest: /etc/redis/tls/ca.crt, src: /srv/pki/ca.crt, owner: redis, group: redis, mode: "0644"}
      - {dest: /etc/redis/tls/server.key, src: /srv/pki/hosts/db1.key, owner: redis, group: redis,
         mode: "0600", diff: false}
  notify: Restart redis

- name: Write the service's environment files (passwords masked in --diff)
  auditlog.ops.config_files:
    files:
      - {dest: /etc/audit-service/audit-service.env, template: audit-service.env.j2, mode: "0600"}
    mask: [audit_db_password]
"""

RETURN = r"""
changed_paths:
  description: The directories, files and links changed (in check mode, that would be), in order.
  returned: always
  type: list
  elements: str
  sample: [/etc/redis/tls/ca.crt]
"""

import os  # noqa: E402
import tempfile  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible.module_utils.common.text.converters import to_bytes, to_text  # noqa: E402

ATTRIBUTES = dict(owner=dict(type="str"), group=dict(type="str"), mode=dict(type="raw"))


def argument_spec():
    return dict(
        directories=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(path=dict(type="path", required=True), **ATTRIBUTES),
        ),
        files=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(
                dest=dict(type="path", required=True),
                # The action plugin turns template and src into content; kept out of every log.
                content=dict(type="str", no_log=True),
                template=dict(type="str"),
                src=dict(type="str"),
                vars=dict(type="dict"),
                diff=dict(type="bool", default=True),
                **ATTRIBUTES,
            ),
        ),
        links=dict(
            type="list",
            elements="dict",
            default=[],
            options=dict(dest=dict(type="path", required=True), src=dict(type="str", required=True)),
        ),
        mask=dict(type="list", elements="str", default=[], no_log=False),  # used by the action plugin
    )


def set_attributes(module, path, item, diff):
    """Owner, group and mode of `path` as `item` asks; True when any differed."""
    changed = module.set_owner_if_different(path, item.get("owner"), False, diff, expand=False)
    changed = module.set_group_if_different(path, item.get("group"), changed, diff, expand=False)
    return module.set_mode_if_different(path, item.get("mode"), changed, diff, expand=False)


def directory(module, item):
    path = item["path"]
    diff = {"path": path, "kind": "directory"}
    if os.path.isdir(path) and not os.path.islink(path):
        attribute_diff = {"before": {}, "after": {}}
        changed = set_attributes(module, path, item, attribute_diff)
        if changed:
            diff["attributes"] = attribute_diff
    elif os.path.lexists(path):
        module.fail_json(msg=f"{path} exists and is not a directory")
    else:
        diff["created"] = changed = True
        if not module.check_mode:
            os.makedirs(path)
            set_attributes(module, path, item, None)
    return changed, diff


def regular_file(module, item):
    """The file's attributes, then its content when it differs: the new content goes to a
    temporary file beside it that already has the final owner, group and mode (a password is never
    readable by others, not even for a moment), renamed over the old one. The diff holds the old
    content only (the action plugin adds the new one, which this module may not echo: it is a
    no_log value)."""
    if item["content"] is None:
        module.fail_json(msg=f"{item['dest']}: no content (run through the action plugin, which renders it)")
    dest, content = item["dest"], to_bytes(item["content"], errors="surrogate_or_strict")
    if os.path.isdir(dest):
        module.fail_json(msg=f"{dest} is a directory, not a file")
    exists = os.path.lexists(dest)
    diff = {"path": dest, "kind": "file"}
    changed = False
    if exists:
        attribute_diff = {"before": {}, "after": {}}
        if set_attributes(module, dest, item, attribute_diff):
            diff["attributes"], changed = attribute_diff, True
        with open(dest, "rb") as handle:
            before = handle.read()
    if not exists or before != content:
        changed = diff["content_changed"] = True
        if item["diff"] and module._diff:
            diff["before"] = to_text(before, errors="surrogate_or_replace") if exists else ""
        if not module.check_mode:
            handle, tmp = tempfile.mkstemp(
                dir=os.path.dirname(dest) or ".", prefix=f".{os.path.basename(dest)}."
            )
            try:
                with os.fdopen(handle, "wb") as out:
                    out.write(content)
                if exists:
                    current = os.stat(dest)
                    os.chown(tmp, current.st_uid, current.st_gid)
                    os.chmod(tmp, current.st_mode & 0o7777)
                set_attributes(module, tmp, item, None)
                os.replace(tmp, dest)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
    return changed, diff


def link(module, item):
    dest, src = item["dest"], item["src"]
    current = os.readlink(dest) if os.path.islink(dest) else None
    if current == src:
        return False, {}
    if os.path.isdir(dest) and not os.path.islink(dest) and os.listdir(dest):
        module.fail_json(msg=f"{dest} is a directory that is not empty: not replaced by a link to {src}")
    before = current or ("(not a link)" if os.path.lexists(dest) else "(absent)")
    diff = {"path": dest, "kind": "link", "before": before, "after": src}
    if not module.check_mode:
        if os.path.isdir(dest) and not os.path.islink(dest):
            os.rmdir(dest)
        tmp = os.path.join(os.path.dirname(dest) or ".", f".{os.path.basename(dest)}.link-{os.getpid()}")
        os.symlink(src, tmp)
        os.replace(tmp, dest)
    return True, diff


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    changed_paths, diffs = [], []
    steps = (
        [(directory, item, item["path"]) for item in module.params["directories"]]
        + [(regular_file, item, item["dest"]) for item in module.params["files"]]
        + [(link, item, item["dest"]) for item in module.params["links"]]
    )
    for step, item, path in steps:
        try:
            changed, diff = step(module, item)
        except OSError as err:
            module.fail_json(msg=f"{path}: {err}", changed_paths=changed_paths)
        if changed:
            changed_paths.append(path)
            diffs.append(diff)
    module.exit_json(changed=bool(changed_paths), changed_paths=changed_paths, item_diffs=diffs)


if __name__ == "__main__":
    main()
