# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
"""The run report of a runbook (docs/reports.md): pure functions the callback plugin
auditlog.ops.runbook_report is built on, and the unit tests call.

The callback hands over plain data: the task results it saw (as `Collector` gathers them), the
recap per host and the run's times; these functions make the report dict (JSON schema version 1),
its Markdown, the one-screen summary and the files' names. No Ansible imports here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime

SCHEMA_VERSION = 1
SEVERITIES = ("critical", "warning", "info")
_RANK = {"critical": 3, "warning": 2, "info": 1}
FINDING_KEYS = ("severity", "host", "component", "check", "summary", "evidence", "remediation", "variable")
STAT_KEYS = ("ok", "changed", "failed", "unreachable", "skipped", "rescued", "ignored")
# The actions whose failure is a decision on the findings, not a problem of its own.
VERDICT_ACTIONS = ("auditlog.ops.verdict",)


def rank(severity):
    return _RANK.get(severity, 0)


def plain(value):
    """`value` as JSON data (dict, list, str, int, float, bool, None): Ansible's tagged and unsafe
    strings become str, anything else its str()."""
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return int(value) if isinstance(value, int) else float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(v) for v in value]
    return str(value)


# ---------------------------------------------------------------------------------------------
# Gathering, one task result at a time


def result_findings(result, host):
    """The findings of one task result (a loop's per-item results included), each with `host`
    (the result's own host where the finding names none). Only the key `findings` is read, never
    `ansible_facts.runbook_findings` (the accumulated copy) nor a verdict's `failing`; a censored
    (no_log) result or item has none."""
    if not isinstance(result, Mapping) or result.get("_ansible_no_log"):
        return []
    out = []
    for item in result.get("findings") or []:
        if isinstance(item, Mapping):
            entry = {k: plain(item.get(k)) for k in FINDING_KEYS}
            entry["host"] = entry["host"] or host
            if entry["severity"] not in SEVERITIES:
                entry["severity"] = "info" if entry["severity"] is None else str(entry["severity"])
            out.append(entry)
    for item in result.get("results") or []:
        out.extend(result_findings(item, host))
    return out


def result_message(result):
    """A failed or unreachable result's message (a loop's failed items' ones joined)."""
    if not isinstance(result, Mapping):
        return ""
    msg = result.get("msg") or result.get("reason") or result.get("stderr") or ""
    if not msg and result.get("results"):
        msg = "; ".join(
            result_message(r) for r in result["results"] if isinstance(r, Mapping) and r.get("failed")
        )
    return str(plain(msg))


class Collector:
    """What a run's report is made of, gathered from the callback's events."""

    def __init__(self):
        self.findings = []
        self.remediations = []
        self.failures = []

    def task_result(self, host, task, play, action, result, status, ignored=False, rescued=False):
        """One task result: status ok, failed or unreachable. `result` is the result dict (never the
        task's args: they are not looked at, so no secret in them reaches the report)."""
        self.findings.extend(result_findings(result, host))
        if status == "ok" and isinstance(result, Mapping) and result.get("changed"):
            self.remediations.append({"host": host, "play": play, "task": task, "action": action})
        if status in ("failed", "unreachable"):
            self.failures.append(
                {
                    "host": host,
                    "play": play,
                    "task": task,
                    "action": action,
                    "unreachable": status == "unreachable",
                    "ignored": bool(ignored),
                    "rescued": bool(rescued),
                    "verdict": action in VERDICT_ACTIONS,
                    "msg": result_message(result),
                }
            )


# ---------------------------------------------------------------------------------------------
# The report


def counts(findings):
    return {s: sum(1 for f in findings if f.get("severity") == s) for s in SEVERITIES}


def counted_failures(failures):
    """Failures that make the run critical: not ignored, not rescued, not the verdict's own."""
    return [f for f in failures if not (f.get("ignored") or f.get("rescued") or f.get("verdict"))]


def status(findings, failures):
    """critical when a critical finding or a (counted) failure, warning when a warning, else ok."""
    worst = max((rank(f.get("severity")) for f in findings), default=0)
    if worst >= rank("critical") or counted_failures(failures):
        return "critical"
    if worst >= rank("warning"):
        return "warning"
    return "ok"


def sort_findings(findings):
    """Worst first; the order the run found them in within a severity."""
    return sorted(findings, key=lambda f: -rank(f.get("severity")))


def iso(moment):
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def build_report(
    *, runbook, playbook, started, finished, check_mode, diff_mode, hosts, findings, remediations, failures
):
    """The report dict (schema version 1, docs/reports.md). started/finished: aware datetimes."""
    findings = sort_findings([plain(f) for f in findings])
    return {
        "schema_version": SCHEMA_VERSION,
        "runbook": runbook,
        "playbook": playbook,
        "started": iso(started),
        "finished": iso(finished),
        "duration_seconds": round((finished - started).total_seconds(), 3),
        "check_mode": bool(check_mode),
        "diff_mode": bool(diff_mode),
        "status": status(findings, failures),
        "summary": counts(findings),
        "hosts": {h: {k: int((hosts[h] or {}).get(k, 0)) for k in STAT_KEYS} for h in sorted(hosts)},
        "findings": findings,
        "remediations": [plain(r) for r in remediations],
        "failures": [plain(f) for f in failures],
    }


# ---------------------------------------------------------------------------------------------
# Names and files


def runbook_name(playbook_path):
    """The runbook's name: its path under the last runbooks/ directory, / as '-', no .yml
    (playbooks/runbooks/diagnostics/health_check.yml -> diagnostics-health_check); a playbook
    outside runbooks/ is named after its file."""
    path = str(playbook_path).replace(os.sep, "/")
    head, sep, tail = path.rpartition("/runbooks/")
    name = tail if sep else path.rsplit("/", 1)[-1]
    name = re.sub(r"\.ya?ml$", "", name)
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name.replace("/", "-")).strip("-") or "playbook"


def is_runbook(playbook_path):
    return "/runbooks/" in str(playbook_path).replace(os.sep, "/")


def stamp(moment):
    """UTC, as in the file names: 20261201T150033Z."""
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def report_base(report_dir, runbook, started, exists=os.path.exists):
    """The path, without extension, of a run's report files: <dir>/<runbook>-<stamp>, with -2, -3...
    when a report of the same second is there already."""
    base = os.path.join(report_dir, f"{runbook}-{stamp(started)}")
    candidate, n = base, 1
    while exists(candidate + ".json") or exists(candidate + ".md"):
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def latest_base(report_dir, runbook):
    return os.path.join(report_dir, f"{runbook}-latest")


def to_json(report):
    return json.dumps(report, indent=2, sort_keys=False, default=str) + "\n"


# ---------------------------------------------------------------------------------------------
# Markdown and the summary


def _cell(value):
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip() or " "


def _block(value):
    """A value as a fenced block: text as it is, data as JSON."""
    text = value if isinstance(value, str) else json.dumps(value, indent=2, default=str)
    fence = "```"
    while fence in text:
        fence += "`"
    return f"{fence}\n{text}\n{fence}"


def _yes(flag):
    return "yes" if flag else "no"


def render_markdown(report):
    """The report as Markdown (layout: docs/reports.md)."""
    s = report["summary"]
    lines = [
        f"# Runbook report: {report['runbook']}",
        "",
        f"**Status: {report['status']}** "
        f"({s['critical']} critical, {s['warning']} warning, {s['info']} info)",
        "",
        f"- Playbook: `{report['playbook']}`",
        f"- Started: {report['started']}, finished: {report['finished']} ({report['duration_seconds']} s)",
        f"- Check mode: {_yes(report['check_mode'])}, diff mode: {_yes(report['diff_mode'])}",
        "",
        "## Hosts",
        "",
        "| host | " + " | ".join(STAT_KEYS) + " |",
        "|---|" + "---:|" * len(STAT_KEYS),
    ]
    for host, st in report["hosts"].items():
        lines.append(f"| {_cell(host)} | " + " | ".join(str(st[k]) for k in STAT_KEYS) + " |")
    lines += ["", "## Findings", ""]
    if not report["findings"]:
        lines.append("None.")
    for n, f in enumerate(report["findings"], start=1):
        lines += [
            f"### {n}. {f['severity']}: {f.get('host')} / {f.get('component')}: {_cell(f.get('summary'))}",
            "",
            f"- Severity: {f['severity']}",
            f"- Host: {f.get('host')}",
            f"- Component: {f.get('component')}",
            f"- Check: `{f.get('check')}`",
            f"- Remediation: {_cell(f.get('remediation')) if f.get('remediation') else 'none'}",
        ]
        if f.get("variable"):
            lines.append(f"- Variable: `{f['variable']}`")
        if f.get("evidence") not in (None, "", [], {}):
            lines += ["", "Evidence:", "", _block(f["evidence"])]
        lines.append("")
    lines += ["## Remediations (changed tasks)", ""]
    if report["remediations"]:
        lines += ["| host | play | task | action |", "|---|---|---|---|"]
        lines += [
            f"| {_cell(r['host'])} | {_cell(r['play'])} | {_cell(r['task'])} | {_cell(r.get('action'))} |"
            for r in report["remediations"]
        ]
    else:
        lines.append("None.")
    lines += ["", "## Failures", ""]
    if report["failures"]:
        lines += ["| host | task | message | note |", "|---|---|---|---|"]
        for f in report["failures"]:
            note = ", ".join(k for k in ("unreachable", "ignored", "rescued", "verdict") if f.get(k))
            lines.append(f"| {_cell(f['host'])} | {_cell(f['task'])} | {_cell(f['msg'])} | {_cell(note)} |")
    else:
        lines.append("None.")
    return "\n".join(lines).rstrip() + "\n"


def render_summary(report, paths=(), top=10, width=110):
    """The one-screen summary printed at the end of the run: lines of text."""
    s = report["summary"]
    mode = " (check mode)" if report["check_mode"] else ""
    out = [
        f"RUNBOOK REPORT {report['runbook']}: {report['status'].upper()}{mode}",
        f"  findings: {s['critical']} critical, {s['warning']} warning, {s['info']} info;"
        f" hosts: {len(report['hosts'])}; {report['duration_seconds']} s",
    ]

    def cut(text):
        return text if len(text) <= width else text[: width - 3] + "..."

    for f in report["findings"][:top]:
        out.append(cut(f"  {f['severity']:<8} {f.get('host')} {f.get('component')}: {f.get('summary')}"))
    if len(report["findings"]) > top:
        out.append(f"  ... and {len(report['findings']) - top} more in the report")
    if report["remediations"]:
        out.append(f"  remediations ({len(report['remediations'])}):")
        for r in report["remediations"][:top]:
            out.append(cut(f"    {r['host']}: {r['task']}"))
        if len(report["remediations"]) > top:
            out.append(f"    ... and {len(report['remediations']) - top} more")
    if report["failures"]:
        out.append(f"  failures ({len(report['failures'])}):")
        for f in report["failures"][:top]:
            out.append(cut(f"    {f['host']}: {f['task']}: {f['msg']}"))
    for path in paths:
        out.append(f"  report: {path}")
    return out


def now():
    return datetime.now(UTC)
