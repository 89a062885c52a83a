# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
"""Action plugin of auditlog.ops.config_files: the files' contents made on the controller
(templates rendered as ansible.builtin.template renders them, files read), then one call of the
module on the host for every directory, file and link; the diff it returns is built here, with
the secrets named in `mask` masked.

The module may not echo a file's new content (its `content` option is no_log, so that a key or a
password never reaches a log or the host's journal): it returns the old content of what changed,
and the new one is added here, where it is known.
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleActionFail
from ansible.module_utils.common.text.converters import to_text
from ansible.plugins.action import ActionBase
from ansible.plugins.loader import lookup_loader
from ansible_collections.auditlog.ops.plugins.plugin_utils.masking import mask_diff, mask_messages, secrets_of

SOURCES = ("template", "src", "content")


def attributes_text(attributes):
    return "".join(f"{key}: {value}\n" for key, value in sorted(attributes.items()) if key != "path")


def diff_entries(item_diffs, shown):
    """The module's per-item diffs as the callbacks print them (before/after texts and headers);
    `shown` maps each file whose content may be shown to its new content."""
    entries = []
    for diff in item_diffs:
        path = diff["path"]
        if diff.get("created"):
            entries.append(
                dict(
                    before_header=path,
                    after_header=path,
                    before="state: absent\n",
                    after="state: directory\n",
                )
            )
        if "attributes" in diff:
            header = f"{path} (owner, group, mode)"
            before, after = (attributes_text(diff["attributes"][k]) for k in ("before", "after"))
            entries.append(dict(before_header=header, after_header=header, before=before, after=after))
        if diff.get("content_changed"):
            if path in shown and "before" in diff:
                entries.append(
                    dict(before_header=path, after_header=path, before=diff["before"], after=shown[path])
                )
            else:
                entries.append(dict(prepared=f"{path}: content changed (not shown)\n"))
        if diff["kind"] == "link":
            before, after = diff["before"] + "\n", diff["after"] + "\n"
            entries.append(dict(before_header=path, after_header=path, before=before, after=after))
    return entries


class ActionModule(ActionBase):
    TRANSFERS_FILES = False  # the contents travel in the module's arguments
    _VALID_ARGS = frozenset(("directories", "files", "links", "mask"))

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        args = dict(self._task.args)
        secrets = secrets_of(args.pop("mask", None) or [], task_vars, self._templar)
        files = [self._with_content(i, item, task_vars) for i, item in enumerate(args.get("files") or [])]
        args["files"] = files
        result.update(
            self._execute_module(
                module_name="auditlog.ops.config_files", module_args=args, task_vars=task_vars
            )
        )
        item_diffs = result.pop("item_diffs", [])
        if self._task.diff and item_diffs:
            shown = {f["dest"]: f["content"] for f in files if f.get("diff", True)}
            result["diff"] = mask_diff(diff_entries(item_diffs, shown), secrets)
        result.pop("invocation", None)  # it would list every file's arguments, content masked: noise
        return mask_messages(result, secrets)

    def _with_content(self, index, item, task_vars):
        """files[index] with `content` in place of its template or src."""
        if not isinstance(item, Mapping):
            raise AnsibleActionFail(
                f"files[{index}] must be a mapping (dest, template|src|content), not {item!r}"
            )
        given = [key for key in SOURCES if item.get(key) is not None]
        if len(given) != 1:
            raise AnsibleActionFail(
                f"files[{index}] ({item.get('dest', 'no dest')}) needs exactly one of template, src and "
                "content, "
                f"not {', '.join(given) or 'none'}"
            )
        item = dict(item)
        source, template_vars = item.pop(given[0]), item.pop("vars", None)
        if template_vars is not None and (given[0] != "template" or not isinstance(template_vars, Mapping)):
            raise AnsibleActionFail(
                f"files[{index}] ({item.get('dest')}): vars is a mapping, for templates only"
            )
        if given[0] == "template":
            lookup = lookup_loader.get("ansible.builtin.template", loader=self._loader, templar=self._templar)
            rendered = lookup.run([source], variables=task_vars, template_vars=dict(template_vars or {}))
            item["content"] = to_text(rendered[0])
        elif given[0] == "src":
            path = self._find_needle("files", source)
            with open(self._loader.get_real_file(path, decrypt=True), "rb") as handle:
                item["content"] = to_text(handle.read(), errors="surrogate_or_strict")
        else:
            item["content"] = to_text(source)
        return item
