#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: log_analysis
short_description: Error patterns, a correlation id, slow and all requests, system lines of a window
version_added: 0.4.0
description:
  - The guide's Log Analysis on one host, over the window from O(since) to O(until). It reads the
    logs of the stack's components that run on the host, in one pass over each, and keeps only
    what the report needs, so memory stays small on large logs.
  - "Sources: the API's and the worker's JSON lines from the journal (their units'
    standard output, C(journalctl -o cat)), nginx's JSON access log (O(nginx_access_log), the
    format C(audit_json) the nginx role sets), and any JSON log files of the service's format in
    O(files). A component that does not run on the host is listed in RV(sources) as not
    available, not an error."
  - "RV(errors): lines at WARNING and above, by pattern (the message and its error with numbers,
    ids and quoted values blanked), counted, with their first and last time and some correlation
    ids. RV(responses): answers of status 400 and above by source, status, method, path and
    tenant. RV(requests): by source, method, path (ids blanked) and status, the count and the
    p50, p99 and max duration (within 1 % of the exact quantiles). RV(slow_requests): the
    slowest requests at or over O(slow_ms). RV(correlation): with O(correlation_id), every line
    that names it (nginx's access line, the API's lines, the worker's line of the batch that
    stored its events), in time order."
  - "With O(system), RV(system): the units that systemd saw killed by a signal, dump core, fail
    or be killed by the OOM killer in the window, the journal's lines at O(system_priority) and
    above, and the kernel's lines (C(journalctl -k)) where the host can read them; in a container
    without C(/dev/kmsg) RV(system.kernel) has C(available=false) and a finding says so."
  - "Speed: a line is decoded only when it can matter (found as text first), and a file is
    entered at the window's start by bisection on its times, not read from its beginning."
  - A probe; it changes nothing, in check mode or not.
author: audit-log project (!UNKNOWN)
options:
  since:
    description:
      - The window's start; relative (V(-15min), V(-1h), V(-2d)), absolute in the host's local
        time (V(2026-01-31 12:00:00)), V(today), V(yesterday).
    type: str
    default: -15min
  until:
    description:
      - The window's end, in the same forms as O(since); none is now.
    type: str
  components:
    description:
      - Which of the stack's logs to read, where they run on the host.
    type: list
    elements: str
    choices: [api, worker, nginx]
    default: [api, worker, nginx]
  files:
    description:
      - More log files of the service's JSON format (or of nginx's C(audit_json)), e.g. where an
        operator sends the service's output to a file. Each line is told apart by its fields.
    type: list
    elements: path
    default: []
  nginx_access_log:
    description:
      - nginx's access log in the C(audit_json) format.
    type: path
    default: /var/log/nginx/access.log
  correlation_id:
    description:
      - A correlation id (the C(X-Correlation-ID) of a request) whose lines to gather from every
        source.
    type: str
  slow_ms:
    description:
      - A request that took this long (milliseconds) or longer is slow.
    type: float
    default: 1000
  top:
    description:
      - How many of the slowest requests, system lines and units to return (patterns, five times
        as many).
    type: int
    default: 20
  auth_failures_warning:
    description:
      - From how many 401/403 answers to one client address a warning names it (RV(auth_failures)
        holds every address).
    type: int
    default: 20
  system:
    description:
      - Whether to report the units' failures, the journal's and the kernel's lines of the window.
    type: bool
    default: true
  system_priority:
    description:
      - The journal's lines at this priority or more urgent are returned in RV(system.journal).
    type: str
    choices: [emerg, alert, crit, err, warning, notice]
    default: warning
  mode:
    description:
      - How the stack is deployed (C(audit_deploy_mode)). V(compose) is not implemented yet and
        fails saying so.
    type: str
    choices: [systemd, compose]
    default: systemd
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: A probe; it runs as in a normal run.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Reading the journal of other units and nginx's log needs root (C(become)).
seealso:
  - module: auditlog.ops.component
"""

EXAMPLES = r"""
- name: The last hour's error patterns and slow requests
  auditlog.ops.log_analysis:
    since: -1h
    slow_ms: 500

- name: Follow one request through nginx, the API and the worker
  auditlog.ops.log_analysis:
    since: -30min
    correlation_id: 3f0c1c9e-6b7f-4a51-9d0e-0c5d0f7a2b11
    system: false
"""

RETURN = r"""
changed:
  description: Always false; a probe.
  returned: always
  type: bool
window:
  description: The window, as ISO 8601 UTC times.
  returned: always
  type: dict
  sample: {"since": "2026-12-01T15:00:00.000Z", "until": "2026-12-01T15:15:00.000Z"}
sources:
  description: Each log read, whether it could be, its lines and bytes read.
  returned: always
  type: list
  elements: dict
  sample: [{"name": "api", "kind": "journal", "available": true, "lines": 1200}]
errors:
  description: Lines at WARNING and above by source, level and pattern, most frequent first.
  returned: always
  type: list
  elements: dict
responses:
  description: Answers of status 400 and above by source, status, method, path and tenant.
  returned: always
  type: list
  elements: dict
auth_failures:
  description:
    - nginx's 401 and 403 answers by client C(address), API C(key_prefix) (the key's first 10
      characters, as the service stores them; null without a key) and C(status), with C(count),
      C(first), C(last) and the C(paths) asked for; most frequent first.
  returned: always
  type: list
  elements: dict
  sample: [{"address": "192.0.2.6", "key_prefix": "alk_Zx9Qe2", "status": 401, "count": 120,
            "first": "2026-05-01T10:00:00.120Z", "last": "2026-05-01T10:00:09.870Z",
            "paths": {"/api/v1/audit/logs": 120}}]
requests:
  description: Requests by source, method, path and status, with count, p50_ms, p99_ms and max_ms.
  returned: always
  type: list
  elements: dict
slow_requests:
  description: The slowest requests at or over O(slow_ms), slowest first (at most O(top)).
  returned: always
  type: list
  elements: dict
slow_count:
  description: All requests at or over O(slow_ms).
  returned: always
  type: int
correlation:
  description: The lines that name O(correlation_id), in time order.
  returned: when O(correlation_id) is given
  type: list
  elements: dict
system:
  description: What the journal and the kernel say of the window.
  returned: when O(system) is true
  type: dict
  contains:
    units:
      description: The units killed by a signal, dumped, OOM-killed or failed (unit, event, detail, time).
      type: list
      elements: dict
    journal:
      description: The journal's newest lines at O(system_priority) or above (time, unit, priority, message).
      type: list
      elements: dict
    journal_count:
      description: All the journal's lines at O(system_priority) or above.
      type: int
    kernel:
      description: The kernel's lines (C(journalctl -k)), whether they can be read, their count.
      type: dict
lines:
  description: All lines read.
  returned: always
  type: int
seconds:
  description: How long the analysis took.
  returned: always
  type: float
findings:
  description:
    - Warning, per source, for error patterns and for answers of status 500 and above; info for
      the 4xx answers; warning per client address refused 401/403 at least O(auth_failures_warning)
      times (naming its key prefixes); warning for slow requests; info with where a correlation id was seen (a
      warning when it was nowhere); critical for a unit killed by a signal or by the OOM killer,
      warning for a failed one; info when the kernel's lines cannot be read.
  returned: always
  type: list
  elements: dict
"""

import io  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime, timedelta  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import components as comp  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import loganalysis as la  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.logfiles import (  # noqa: E402
    PRIORITIES,
    LogFileError,
    parse_since,
)

# systemd's lines about a unit that ended badly (pid 1's, or the user manager's).
_UNIT_EVENTS = (
    ("oom", re.compile(r"killed by the OOM killer|Failed with result 'oom-kill'")),
    ("core_dump", re.compile(r"code=dumped")),
    ("killed", re.compile(r"code=killed, status=(\d+)/(\w+)")),
    ("failed", re.compile(r"Failed with result '([\w-]+)'")),
)


def argument_spec():
    return dict(
        since=dict(type="str", default="-15min"),
        until=dict(type="str"),
        components=dict(type="list", elements="str", choices=list(la.SOURCES), default=list(la.SOURCES)),
        files=dict(type="list", elements="path", default=[]),
        nginx_access_log=dict(type="path", default="/var/log/nginx/access.log"),
        correlation_id=dict(type="str"),
        slow_ms=dict(type="float", default=1000.0),
        top=dict(type="int", default=20),
        auth_failures_warning=dict(type="int", default=20),
        system=dict(type="bool", default=True),
        system_priority=dict(type="str", choices=list(PRIORITIES[:6]), default="warning"),
        mode=dict(type="str", choices=["systemd", "compose"], default="systemd"),
    )


def unit_event(entry):
    """(event, detail) when a journal entry is systemd saying a unit ended badly, else None."""
    if entry.get("pid") not in ("1", 1) and entry.get("identifier") != "systemd":
        return None
    message = entry.get("message") or ""
    for event, pattern in _UNIT_EVENTS:
        m = pattern.search(message)
        if m:
            return event, "/".join(m.groups()) if m.groups() else None
    return None


def system_report(journal_entries, kernel_entries, kernel_available, priority, top):
    """The system part of the result from the window's journal entries (-p notice, with origin)
    and the kernel's: units ended badly (one per unit and event, the last), and the lines at
    `priority` or above (the newest `top`)."""
    rank = PRIORITIES.index(priority)
    units = {}
    lines = []
    for e in journal_entries:
        hit = unit_event(e)
        if hit:
            unit = e.get("about_unit") or e.get("unit")
            event, detail = hit
            units[(unit, event)] = {
                "unit": unit,
                "event": event,
                "detail": detail,
                "time": e.get("time"),
                "message": e.get("message"),
            }
        if e.get("priority") in PRIORITIES and PRIORITIES.index(e["priority"]) <= rank:
            lines.append({k: e.get(k) for k in ("time", "unit", "priority", "message")})
    # "Failed with result 'signal'" follows the line that says which signal: one finding, not two.
    for unit, event in list(units):
        repeats = event == "failed" and units[(unit, event)]["detail"] in ("signal", "oom-kill", "core-dump")
        if repeats and any((unit, other) in units for other in ("killed", "oom", "core_dump")):
            del units[(unit, event)]
    kernel = [{k: e.get(k) for k in ("time", "priority", "message")} for e in kernel_entries]
    return {
        "units": sorted(units.values(), key=lambda u: u["time"] or "")[-top:],
        "journal": lines[-top:],
        "journal_count": len(lines),
        "kernel": {"available": kernel_available, "lines": kernel[-top:], "count": len(kernel)},
    }


def auth_failure_findings(auth_failures, threshold):
    """A warning per client address refused (401/403) at least `threshold` times: the guide's
    `grep -i "401\\|403\\|unauthorized"`, counted by who and with which key."""
    by_address = {}
    for row in auth_failures:
        by_address.setdefault(row["address"], []).append(row)
    out = []
    for address, rows in sorted(by_address.items(), key=lambda item: -sum(r["count"] for r in item[1])):
        total = sum(r["count"] for r in rows)
        if total < threshold:
            continue
        prefixes = sorted({r["key_prefix"] or "(no key)" for r in rows})
        out.append(
            finding(
                "warning",
                "nginx",
                "auth_failures",
                f"{address}: {total} answer(s) 401/403 from {min(r['first'] for r in rows)} to"
                f" {max(r['last'] for r in rows)}, key prefix(es) {', '.join(prefixes[:10])}",
                evidence=rows[:20],
            )
        )
    return out


def analysis_findings(result, correlation_id, slow_ms, host, auth_failures_warning=20):
    """The findings of one host's analysis (see RETURN)."""
    out = auth_failure_findings(result.get("auth_failures", []), auth_failures_warning)
    by_source = {}
    for e in result["errors"]:
        by_source.setdefault(e["source"], []).append(e)
    for source, patterns in sorted(by_source.items()):
        total = sum(p["count"] for p in patterns)
        top = patterns[0]
        out.append(
            finding(
                "warning",
                source,
                "error_patterns",
                f"{source}: {total} line(s) at WARNING or above in {len(patterns)} pattern(s), most "
                f"{top['count']}x {top['level']} {top['pattern'][:120]}",
                evidence=patterns[:10],
            )
        )
    for server in (True, False):
        hits = [r for r in result["responses"] if (r["status"] >= 500) == server]
        if not hits:
            continue
        total = sum(r["count"] for r in hits)
        top = hits[0]
        tenant = f" for tenant {top['tenant_id']}" if top.get("tenant_id") else ""
        out.append(
            finding(
                "warning" if server else "info",
                top["source"] if top["source"] != "nginx" else "nginx",
                "server_errors" if server else "client_errors",
                f"{total} answer(s) of status {'5xx' if server else '4xx'}, most {top['count']}x "
                f"{top['status']} {top['method']} {top['path']} ({top['source']}){tenant}",
                evidence=hits[:10],
            )
        )
    for source in sorted({r["source"] for r in result["requests"]}):
        patterns = [r for r in result["requests"] if r["source"] == source]
        busiest = patterns[0]
        out.append(
            finding(
                "info",
                source,
                "request_patterns",
                f"{source}: {sum(r['count'] for r in patterns)} request(s) in {len(patterns)} pattern(s), "
                "busiest "
                f"{busiest['count']}x {busiest['method']} {busiest['path']} {busiest['status']} "
                f"(p50 {busiest['p50_ms']} ms, p99 {busiest['p99_ms']} ms)",
                evidence=patterns[:20],
            )
        )
    if result["slow_count"]:
        slowest = result["slow_requests"][0]
        out.append(
            finding(
                "warning",
                slowest["source"],
                "slow_requests",
                f"{result['slow_count']} request(s) took {slow_ms:g} ms or more, the slowest "
                f"{slowest['duration_ms']:g} ms: {slowest['method']} {slowest['path']} ({slowest['source']})",
                evidence=result["slow_requests"],
            )
        )
    if correlation_id and result["correlation"]:
        lines = result["correlation"]
        seen = ", ".join(sorted({line["source"] for line in lines}))
        out.append(
            finding(
                "info",
                "logs",
                "correlation",
                f"correlation id {correlation_id}: {len(lines)} line(s) on {host}, in {seen}",
                evidence=lines,
            )
        )
    system = result.get("system")
    if system:
        for unit in system["units"]:
            severity = "critical" if unit["event"] in ("killed", "oom", "core_dump") else "warning"
            what = {
                "killed": f"was killed by signal {unit['detail']}",
                "oom": "was killed by the OOM killer",
                "core_dump": "dumped core",
                "failed": f"failed ({unit['detail']})",
            }[unit["event"]]
            out.append(
                finding(
                    severity,
                    comp.component_of_unit(unit["unit"] or "") or "host",
                    "unit_" + unit["event"],
                    f"{unit['unit']} {what} at {unit['time']}",
                    evidence=unit,
                )
            )
        if not system["kernel"]["available"]:
            out.append(
                finding(
                    "info",
                    "host",
                    "kernel_log",
                    f"the kernel's lines cannot be read on {host} (no /dev/kmsg: a container?); "
                    "only the journal's lines are reported",
                )
            )
    return out


class Reader:
    """Streams the lines of the logs of one host into an Analysis."""

    def __init__(self, analysis, host, stop_after=None):
        self.analysis = analysis
        self.host = host
        # A file's lines are in time order give or take what a process buffers: past the window's
        # end by more than a few seconds, the rest of the file is later still.
        self.stop_after = stop_after
        self.sources = []

    def journal(self, name, argv, feed, tmpdir):
        """journalctl's output goes to a file first and is read from there line by line: memory
        stays small however long the window (run_command would hold all of it)."""
        source = {"name": name, "kind": "journal", "available": True, "lines": 0}
        before = self.analysis.lines
        with tempfile.TemporaryFile(dir=tmpdir) as out:
            try:
                done = subprocess.run(
                    argv,
                    stdout=out,
                    stderr=subprocess.PIPE,
                    env={**os.environ, "LC_ALL": "C", "SYSTEMD_COLORS": "0"},
                    check=False,
                )
            except OSError as exc:
                source.update(available=False, error=str(exc))
                self.sources.append(source)
                return
            out.seek(0)
            for line in io.TextIOWrapper(out, encoding="utf-8", errors="replace", newline="\n"):
                feed(line.rstrip("\n"))
        if done.returncode != 0:
            err = done.stderr.decode("utf-8", "replace").strip()
            source.update(available=False, error=err[:500] or f"journalctl exited {done.returncode}")
        source["lines"] = self.analysis.lines - before
        self.sources.append(source)

    def file(self, name, path, feed):
        source = {"name": name, "kind": "file", "path": path, "available": True, "lines": 0, "bytes": 0}
        before = self.analysis.lines
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                start = la.seek_window(f, self.analysis.since, size)
                # Text from here on: a quarter faster than decoding each line of bytes.
                text = io.TextIOWrapper(f, encoding="utf-8", errors="replace", newline="\n")
                for line in text:
                    line = line.rstrip("\n")
                    if self.stop_after is not None and line.startswith("{"):
                        stamp = la.line_time(line)
                        if stamp is not None and stamp > self.stop_after:
                            break
                    feed(line)
                source["bytes"] = f.tell() - start
        except OSError as exc:
            source.update(available=False, error=str(exc))
        source["lines"] = self.analysis.lines - before
        self.sources.append(source)


def feed_auto(analysis, host):
    """A feed for a file of either format: nginx's lines have `msec`, the service's `timestamp`."""

    def feed(line):
        if '"msec":' in line and '"timestamp":' not in line:
            analysis.feed_nginx(line, host)
        else:
            analysis.feed_service(line, host)

    return feed


def journal_entries(argv):
    """The entries of a journalctl -o json command (with origin), or (None, error)."""
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            errors="replace",
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )
    except OSError as exc:
        return None, str(exc)
    if done.returncode != 0:
        return None, done.stderr.strip()[:500]
    entries = (comp.journal_entry(line, origin=True) for line in done.stdout.splitlines())
    return [e for e in entries if e is not None], None


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    if p["mode"] == "compose":
        module.fail_json(msg="log_analysis: mode compose is not implemented yet")
    if p["top"] < 1:
        module.fail_json(msg=f"top must be 1 or more, not {p['top']}")
    if p["auth_failures_warning"] < 1:
        module.fail_json(msg=f"auth_failures_warning must be 1 or more, not {p['auth_failures_warning']}")
    if p["slow_ms"] <= 0:
        module.fail_json(msg=f"slow_ms must be above 0, not {p['slow_ms']}")
    now = datetime.now(UTC)
    try:
        since = parse_since(p["since"], now) or now
        until = parse_since(p["until"], now) if p["until"] else now
    except LogFileError as exc:
        module.fail_json(msg=str(exc).replace("since:", "since/until:"))
    if until < since:
        module.fail_json(msg=f"until ({p['until']}) is before since ({p['since']})")
    started = time.monotonic()
    host = socket.gethostname()
    analysis = la.Analysis(
        since=la.iso_ms(since),
        until=la.iso_ms(until),
        correlation_id=p["correlation_id"],
        slow_ms=p["slow_ms"],
        top=p["top"],
    )
    reader = Reader(analysis, host, stop_after=la.iso_ms(until + timedelta(seconds=10)))
    window = ["--since", f"@{since.timestamp():.3f}", "--until", f"@{until.timestamp():.3f}"]
    journalctl = shutil.which("journalctl")
    for name in ("api", "worker"):
        if name not in p["components"]:
            continue
        unit = comp.COMPONENTS[name]["unit"]
        if not journalctl:
            reader.sources.append(
                {"name": name, "kind": "journal", "available": False, "error": "no journalctl"}
            )
            continue
        if not _unit_exists(unit):
            reader.sources.append(
                {"name": name, "kind": "journal", "available": False, "error": f"{unit} is not on this host"}
            )
            continue
        argv = [journalctl, "--no-pager", "-o", "cat", *window, f"_SYSTEMD_UNIT={unit}"]
        reader.journal(name, argv, lambda line, n=name: analysis.feed_service(line, host, n), module.tmpdir)
    if "nginx" in p["components"]:
        path = p["nginx_access_log"]
        if os.path.exists(path):
            reader.file("nginx", path, lambda line: analysis.feed_nginx(line, host))
        else:
            reader.sources.append(
                {"name": "nginx", "kind": "file", "path": path, "available": False, "error": "no such file"}
            )
    for path in p["files"]:
        reader.file("file", path, feed_auto(analysis, host))
    result = analysis.result()
    if p["system"]:
        kernel_available = os.access("/dev/kmsg", os.R_OK)
        entries, error = journal_entries(
            [journalctl or "journalctl", "--no-pager", "-o", "json", "-p", "notice", *window]
        )
        kernel, _ = (
            journal_entries([journalctl or "journalctl", "--no-pager", "-o", "json", "-k", *window])
            if kernel_available
            else ([], None)
        )
        result["system"] = system_report(
            entries or [], kernel or [], kernel_available, p["system_priority"], p["top"]
        )
        if error:
            result["system"]["error"] = error
    result["sources"] = reader.sources
    result["window"] = {"since": la.iso_ms(since) + "Z", "until": la.iso_ms(until) + "Z"}
    result["seconds"] = round(time.monotonic() - started, 3)
    result["findings"] = analysis_findings(
        result, p["correlation_id"], p["slow_ms"], host, p["auth_failures_warning"]
    )
    if not p["correlation_id"]:
        result.pop("correlation")
        result.pop("correlation_dropped")
    result.pop("decoded")
    module.exit_json(changed=False, **result)


def _unit_exists(unit):
    for base in (
        "/etc/systemd/system",
        "/lib/systemd/system",
        "/usr/lib/systemd/system",
        "/run/systemd/system",
    ):
        if os.path.exists(os.path.join(base, unit)):
            return True
    return False


if __name__ == "__main__":
    main()
