# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
"""The controller side of every probe module: one action plugin shape for all of them.

An action plugin of the collection that is ``from ...findings_action import ActionModule`` runs
the module of its own name (the task's args, check mode and async passed through as
ansible.builtin's normal action does), then

- adds ``host`` (the task's inventory_hostname) to each finding of the result's ``findings`` that
  has none, and
- returns ``ansible_facts.runbook_findings``: the host's findings of this run so far plus the new
  ones, so that a later task (auditlog.ops.verdict, a ``when:``) sees all of them.

The facts are run-scoped. Ansible stores the facts of any action but set_fact in the fact cache,
whatever ``_ansible_facts_cacheable`` says, so with a persistent cache (jsonfile, redis...) the
findings of an earlier run would come back. Hence ``runbook_findings_run``: the id of the run that
wrote them (see run_id()); findings of another run are dropped, never added to.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash

FACT = "runbook_findings"
RUN_FACT = "runbook_findings_run"


def run_id():
    """The ansible-playbook run this process works for: its parent (the worker processes that run
    action plugins are forked from the main process), with that process's start time where /proc
    tells it, since a pid alone may be reused by a later run."""
    pid = os.getppid()
    try:
        with open(f"/proc/{pid}/stat") as stat:
            # Field 22 (starttime); the command (field 2) may hold spaces, so count from its ')'.
            started = stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        started = ""
    return f"{pid}-{started}"


def findings_so_far(task_vars, run=None):
    """The host's findings of this run recorded by earlier tasks (task_vars.runbook_findings),
    or [] when there are none or they belong to another run."""
    task_vars = task_vars or {}
    if task_vars.get(RUN_FACT) != (run or run_id()):
        return []
    known = task_vars.get(FACT) or []
    return [dict(f) for f in known if isinstance(f, Mapping)] if isinstance(known, list) else []


def with_host(findings, host):
    """The findings (dicts; anything else is dropped), each with `host` set where it has none."""
    out = []
    for item in findings or []:
        if isinstance(item, Mapping):
            item = dict(item)
            if not item.get("host"):
                item["host"] = host
            out.append(item)
    return out


HIDDEN = "(hidden: the task is no_log)"


def hidden(item):
    """A finding of a no_log task as the run's facts keep it: what it is about, not what it says."""
    keep = ("severity", "component", "check", "host")
    return {k: item.get(k) for k in keep} | {"summary": HIDDEN, "evidence": None, "no_log": True}


def record(result, task_vars, new_findings, run=None, no_log=False):
    """Put the new findings (host added) into result['findings'] and the accumulated ones into
    result['ansible_facts'] (not cacheable, as set_fact has it). Returns the result.

    With no_log (the task's), the accumulated facts keep only each finding's severity, component,
    check and host, so that auditlog.ops.verdict counts it without printing its evidence."""
    host = (task_vars or {}).get("inventory_hostname")
    new = with_host(new_findings, host)
    result["findings"] = new
    facts = dict(result.get("ansible_facts") or {})
    facts[FACT] = findings_so_far(task_vars, run) + ([hidden(f) for f in new] if no_log else new)
    facts[RUN_FACT] = run or run_id()
    result["ansible_facts"] = facts
    result["_ansible_facts_cacheable"] = False
    return result


class ActionModule(ActionBase):
    """Runs the module named as the task's action; records its findings (see the module doc)."""

    _supports_check_mode = True
    _supports_async = True

    def run(self, tmp=None, task_vars=None):
        task_vars = task_vars or {}
        result = super().run(tmp, task_vars)
        del tmp
        wrap_async = self._task.async_val and not self._connection.has_native_async
        result = merge_hash(result, self._execute_module(task_vars=task_vars, wrap_async=wrap_async))
        if not wrap_async:
            self._remove_tmp_path(self._connection._shell.tmpdir)
        # An async job's first result holds no findings yet, a skipped one (check mode unsupported)
        # neither: leave those alone.
        if "findings" in result:
            record(result, task_vars, result.get("findings"), no_log=bool(self._task.no_log))
        return result
