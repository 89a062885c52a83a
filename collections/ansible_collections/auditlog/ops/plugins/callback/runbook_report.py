# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
"""Callback plugin auditlog.ops.runbook_report: the JSON and Markdown report of a runbook run."""

from __future__ import annotations

DOCUMENTATION = r"""
---
name: runbook_report
type: aggregate
short_description: Writes every runbook run's report (JSON and Markdown) and prints its summary
description:
  - For a playbook whose path has a C(/runbooks/) directory (or any playbook with O(always)), gathers
    the C(findings) of every task result (ok, failed and unreachable; loops included), the changed
    tasks as remediations, the failed and unreachable tasks, and the recap per host.
  - At the end of the run writes C(<report_dir>/<runbook>-<UTC YYYYmmddTHHMMSSZ>.json) and C(.md),
    copies them to C(<runbook>-latest.json) and C(.md), and prints a one-screen summary. The
    runbook's name is its path under C(runbooks/) with C(/) as C(-) and no C(.yml)
    (C(diagnostics-health_check)).
  - The JSON schema (version 1) and the Markdown layout are documented in the repository's
    C(docs/reports.md).
  - Task arguments are never read, so no secret passed to a module reaches a report; a C(no_log)
    result is censored before it gets here and contributes no findings.
  - Writes nothing for other playbooks (C(site.yml)).
version_added: "0.3.0"
author: audit-log project (!UNKNOWN)
requirements:
  - enable in ansible.cfg (C(callbacks_enabled = auditlog.ops.runbook_report))
options:
  report_dir:
    description: Where the reports go; relative to the current directory.
    type: str
    default: reports
    env:
      - name: AUDITLOG_REPORT_DIR
    ini:
      - section: callback_runbook_report
        key: report_dir
  always:
    description: Report on every playbook, not only those under a C(runbooks/) directory.
    type: bool
    default: false
    env:
      - name: AUDITLOG_REPORT
    ini:
      - section: callback_runbook_report
        key: always
  top:
    description: How many findings, remediations and failures the summary shows at most.
    type: int
    default: 10
    env:
      - name: AUDITLOG_REPORT_TOP
    ini:
      - section: callback_runbook_report
        key: top
"""

import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

from ansible import context  # noqa: E402
from ansible.plugins.callback import CallbackBase  # noqa: E402
from ansible_collections.auditlog.ops.plugins.plugin_utils import report as rpt  # noqa: E402


def _write(path, text):
    """Write a file whole or not at all (a reader never sees half a report)."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".report-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _result_parts(result):
    """(host, task, result dict) of a callback task result, on ansible-core 2.17 to 2.19+."""
    host = getattr(result, "host", None) or result._host
    task = getattr(result, "task", None) or result._task
    data = result.result if hasattr(type(result), "result") else result._result
    return host.get_name(), task, data


def _in_rescued_block(task):
    """Whether a failure of `task` is caught by the rescue of a block around it."""
    parent = getattr(task, "_parent", None)
    while parent is not None:
        if getattr(parent, "rescue", None) and task not in (parent.rescue or []):
            return True
        parent = getattr(parent, "_parent", None)
    return False


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "auditlog.ops.runbook_report"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.active = False
        self.playbook = None
        self.play = None
        self.started = None
        self.collector = rpt.Collector()

    def v2_playbook_on_start(self, playbook):
        if self.playbook is not None:
            return  # several playbooks in one run: one report, named after the first
        path = os.path.abspath(getattr(playbook, "_file_name", "") or "")
        self.active = rpt.is_runbook(path) or bool(self.get_option("always"))
        if self.active:
            self.playbook = path
            self.started = rpt.now()

    def v2_playbook_on_play_start(self, play):
        self.play = play.get_name()

    def _task(self, result, status, ignored=False):
        if not self.active:
            return
        host, task, data = _result_parts(result)
        action = getattr(task, "resolved_action", None) or task.action
        rescued = status == "failed" and not ignored and _in_rescued_block(task)
        self.collector.task_result(
            host, task.get_name(), self.play, action, data, status, ignored=ignored, rescued=rescued
        )

    def v2_runner_on_ok(self, result):
        self._task(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._task(result, "failed", ignored=ignore_errors)

    def v2_runner_on_unreachable(self, result):
        self._task(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        if not self.active:
            return
        hosts = {}
        for host in sorted(stats.processed.keys()):
            s = stats.summarize(host)
            hosts[host] = {
                "ok": s["ok"],
                "changed": s["changed"],
                "failed": s["failures"],
                "unreachable": s["unreachable"],
                "skipped": s["skipped"],
                "rescued": s["rescued"],
                "ignored": s["ignored"],
            }
        args = context.CLIARGS
        report = rpt.build_report(
            runbook=rpt.runbook_name(self.playbook),
            playbook=os.path.relpath(self.playbook),
            started=self.started,
            finished=rpt.now(),
            check_mode=args.get("check", False),
            diff_mode=args.get("diff", False),
            hosts=hosts,
            findings=self.collector.findings,
            remediations=self.collector.remediations,
            failures=self.collector.failures,
        )
        directory = os.path.abspath(os.path.expanduser(self.get_option("report_dir")))
        try:
            os.makedirs(directory, exist_ok=True)
            base = rpt.report_base(directory, report["runbook"], self.started)
            latest = rpt.latest_base(directory, report["runbook"])
            paths = []
            for ext, text in ((".json", rpt.to_json(report)), (".md", rpt.render_markdown(report))):
                _write(base + ext, text)
                tmp = latest + ext + ".tmp"
                shutil.copyfile(base + ext, tmp)
                os.replace(tmp, latest + ext)
                rel = os.path.relpath(base + ext)
                paths.append(base + ext if rel.startswith("..") else rel)
        except OSError as exc:
            self._display.warning(f"auditlog.ops.runbook_report: no report written in {directory}: {exc}")
            paths = []
        self._display.banner("RUNBOOK REPORT")
        for line in rpt.render_summary(report, paths, top=self.get_option("top")):
            self._display.display(line)
