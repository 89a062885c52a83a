#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: component
short_description: Status, start, stop, restart and logs of a component of the audit-log stack
version_added: 0.3.0
description:
  - Acts on one component of the stack (C(postgresql), C(redis), C(nats), C(api), C(worker),
    C(nginx), C(prometheus), C(alertmanager), the exporters, C(grafana)) by its name, whatever
    the deploy mode. The module maps the component to what runs it (with O(mode=systemd), its
    systemd unit, PostgreSQL's Debian cluster unit C(postgresql@<ver>-main) resolved on the host).
  - O(state=status) is a probe. It reports the component's state and, with O(logs), its logs (its
    journal and its log files), and changes nothing. V(started), V(stopped) and V(restarted) act,
    and after a start or restart wait up to O(wait_seconds) for the component to be up (active,
    and staying so), else fail with the last lines of its logs.
  - "Findings: a component that is not active is critical, with the last lines of its logs
    (journal and log files) as evidence; one that systemd keeps restarting (crash loop) is
    critical, with the lines that name the failure."
  - "Logs: the journal's entries of the unit, and the lines of the log files the component writes
    besides it (O(log_files)): PostgreSQL's C(/var/log/postgresql/postgresql-<ver>-<cluster>.log),
    Redis' C(/var/log/redis/redis-server.log), nginx's C(/var/log/nginx/access.log) and
    C(/var/log/nginx/error.log). NATS, Prometheus, the exporters, the API, the worker and Grafana
    log to the journal only. File lines have the journal entries' shape, in one list merged in
    time order, selected by the same O(since), O(grep) and O(tail)."
  - "Log files are read from their end backwards, block by block, and only as far as O(since),
    O(tail) and O(log_files_max_bytes) need: never a whole large file. Rotated files
    (C(access.log.1), C(error.log.2.gz)) are not read, only the current file: lines older than
    the last rotation are not in RV(logs). A file that is missing or cannot be read is reported
    in RV(log_sources) (C(available=false), the error), as a journal that cannot be read is."
  - In check mode the module says what it would do (RV(operation)) and changes nothing.
author: audit-log project (!UNKNOWN)
options:
  name:
    description:
      - The component.
    type: str
    required: true
    choices: [alertmanager, api, grafana, nats, nginx, node_exporter, postgres_exporter, postgresql,
              prometheus, redis, redis_exporter, worker]
  state:
    description:
      - V(status) reports; V(started), V(stopped), V(restarted) act (V(restarted) always restarts).
    type: str
    choices: [status, started, stopped, restarted]
    default: status
  mode:
    description:
      - How the stack is deployed (C(audit_deploy_mode)). V(compose) is not implemented yet and
        fails with a message saying so.
    type: str
    choices: [systemd, compose]
    default: systemd
  unit:
    description:
      - The unit to act on instead of the component's own (e.g. another PostgreSQL cluster,
        C(postgresql@17-reports)).
    type: str
  logs:
    description:
      - Return the component's journal entries and the lines of its log files in RV(logs), as
        O(since), O(tail) and O(grep) select them, and where they came from in RV(log_sources).
    type: bool
    default: false
  since:
    description:
      - Entries from this time on (C(journalctl --since)). The journal takes whatever journalctl
        takes; the log files take relative times (V(-15min), V(-1h), V(-2d), V(-1h 30min),
        V(15min ago)), absolute ones in the host's local time (V(2026-01-31 12:00:00),
        V(2026-01-31 12:00), V(2026-01-31)), V(now), V(today) and V(yesterday). Any other value
        fails the module when there are log files to read.
      - Each file format's time is read as UTC (PostgreSQL's names its zone, nginx's access log
        its offset; Redis and nginx's error log write the host's local time). A line without a
        time of its own (the rest of a multi-line entry) takes the time and priority of the line
        before it.
    type: str
  tail:
    description:
      - At most this many entries, the newest over the journal and the files together
        (C(journalctl --lines)). V(0) is no limit.
    type: int
    default: 50
  grep:
    description:
      - Only the entries whose message (for a file, the whole line) matches this regular
        expression (C(journalctl --grep); for the files, Python's C(re)). As journalctl does, a
        pattern without an upper-case letter matches regardless of case.
    type: str
  log_files:
    description:
      - The component's log files (paths or globs) to read with O(logs), instead of those it
        writes by default (see the description). V([]) reads the journal only. C({instance}) is
        the unit's instance (V(17-main) of C(postgresql@17-main)). A glob skips rotated files.
      - The formats read are PostgreSQL's (Debian's C(log_line_prefix)), Redis', nginx's access
        log (combined) and error log; a line of another format takes the time of the line before
        it.
    type: list
    elements: str
  log_files_max_bytes:
    description:
      - At most this many bytes read from the end of each log file (a bound for a large file
        and a O(grep) that matches little). RV(log_sources) says when it cut a file.
    type: int
    default: 67108864
  evidence_lines:
    description:
      - How many of the last journal lines a finding carries as evidence.
    type: int
    default: 15
  restarts_critical:
    description:
      - The number of automatic restarts (C(NRestarts)) from which a unit that is not running
        cleanly counts as crash-looping.
    type: int
    default: 3
  wait_seconds:
    description:
      - After a start or restart, how long to wait for the component to be active and to stay so.
        V(0) does not wait.
    type: float
    default: 30
  crash_sample_seconds:
    description:
      - When the unit was restarted by systemd before, how long to watch whether C(NRestarts)
        still climbs (a crash loop) before reporting. V(0) does not watch.
    type: float
    default: 2
attributes:
  check_mode:
    description: >-
      Can run in check mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: >-
      Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
notes:
  - Runs C(systemctl) and C(journalctl); acting on units needs root (C(become)), and so does
    reading most log files (C(/var/log/postgresql) and C(/var/log/redis) are not world-readable).
seealso:
  - module: auditlog.ops.host_facts
"""

EXAMPLES = r"""
- name: Is Redis up?
  auditlog.ops.component:
    name: redis
  register: redis

- name: Start PostgreSQL and wait for it
  auditlog.ops.component:
    name: postgresql
    state: started
    wait_seconds: 60
  become: true

- name: nginx's 5xx answers and errors of the last hour, from its access and error logs
  auditlog.ops.component:
    name: nginx
    logs: true
    since: -1h
    grep: '" 5[0-9][0-9] |\[(error|crit|alert|emerg)\]'
  become: true

- name: PostgreSQL's log of another cluster (the unit's instance names its file)
  auditlog.ops.component:
    name: postgresql
    unit: postgresql@17-reports
    logs: true
  become: true

- name: The API's errors of the last 15 minutes
  auditlog.ops.component:
    name: api
    logs: true
    since: -15min
    grep: "ERROR|Traceback"
    tail: 200
"""

RETURN = r"""
component:
  description: The component's name.
  returned: always
  type: str
  sample: api
mode:
  description: The deploy mode.
  returned: always
  type: str
  sample: systemd
unit:
  description: What runs the component (its systemd unit).
  returned: always
  type: str
  sample: postgresql@17-main.service
status:
  description:
    - The component's state after the action (in check mode, as it is). C(active), C(load_state),
      C(active_state), C(sub_state), C(unit_file_state), C(main_pid), C(memory_current) (bytes),
      C(n_restarts), C(exec_main_status), C(result), C(crash_loop).
  returned: always
  type: dict
before:
  description: The state before the action (the same keys as RV(status)).
  returned: always
  type: dict
operation:
  description: What was done, or in check mode would be done, V(start), V(stop), V(restart) or V(none).
  returned: always
  type: str
logs:
  description:
    - The journal entries and the log files' lines, merged in time order (oldest first), each
      C(time) (ISO 8601 UTC, C(Z); null for a file's first lines when nothing before them has a
      time), C(unit), C(host), C(priority) (the syslog level's name, C(err), C(warning), C(info)
      ...), C(message) (a file's whole line) and C(source) (C(journal) or the file's path).
    - "File lines' priority: nginx's error levels as syslog's; PostgreSQL's C(PANIC) emerg,
      C(FATAL) crit, C(ERROR) err, C(WARNING) warning, C(NOTICE) notice, C(DEBUG*) debug (its
      C(DETAIL), C(HINT), C(STATEMENT) lines that of the message before them); Redis' C(#)
      warning, C(*) notice, C(-) info, C(.) debug (as Redis maps them to syslog); an nginx
      access line err for a status from 500, warning from 400; anything else info."
  returned: when O(logs=true)
  type: list
  elements: dict
  sample:
    - time: "2026-12-01T15:29:00.000Z"
      unit: nginx.service
      host: web1
      priority: err
      message: '10.0.0.1 - - [01/Dec/2026:15:29:00 +0000] "GET /api/v1/logs HTTP/1.1" 502 157 "-" "curl/8"'
      source: /var/log/nginx/access.log
log_sources:
  description:
    - Where RV(logs) came from, each C(source) (C(journal), a file's path, or a glob that named no
      file), C(available) (false when it could not be read), C(error) (why, or null) and
      C(truncated) (true when O(log_files_max_bytes) cut the file).
  returned: when O(logs=true)
  type: list
  elements: dict
  sample:
    - {source: journal, available: true, error: null, truncated: false}
    - {source: /var/log/nginx/error.log, available: false, error: Permission denied, truncated: false}
findings:
  description: What is wrong (module_utils/findings.py), e.g. the unit inactive, or crash-looping.
  returned: always
  type: list
  elements: dict
"""

import socket  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import components as comp  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import logfiles as lf  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding, unavailable  # noqa: E402

DONE = {"start": "started", "stop": "stopped", "restart": "restarted"}


def plan(state, status):
    """The operation a wanted state needs from the current status: start, stop, restart or none."""
    if state == "restarted":
        return "restart"
    if state == "started":
        return "none" if status.get("active") else "start"
    if state == "stopped":
        stopped = status.get("active_state") in ("inactive", "failed")
        return "none" if stopped else "stop"
    return "none"


def failure_lines(entries, n):
    """The journal lines that name a failure: errors and systemd's own lines about the exit,
    else the last ones."""
    keywords = ("error", "fail", "invalid", "denied", "refused", "exited", "fatal", "traceback", "cannot")
    picked = [
        e
        for e in entries
        if e.get("priority") in ("emerg", "alert", "crit", "err", "warning")
        or any(k in (e.get("message") or "").lower() for k in keywords)
    ]
    return comp.journal_lines((picked or entries)[-n:])


def component_findings(
    component, unit, status, journal, evidence_lines=15, previous=None, restarts_critical=3
):
    """Findings about a component's state: crash loop or not active (critical)."""
    out = []
    if not status.get("exists"):
        out.append(
            finding(
                "critical",
                component,
                "unit_state",
                f"{component}: unit {unit} does not exist on this host",
                evidence={"status": status},
            )
        )
        return out
    crash = comp.is_crash_looping(status, restarts_critical, previous)
    if crash:
        out.append(
            finding(
                "critical",
                component,
                "crash_loop",
                f"{component} ({unit}) keeps crashing: {comp.describe_state(status)}",
                evidence={"status": status, "journal": failure_lines(journal, evidence_lines)},
            )
        )
    elif not status.get("active"):
        out.append(
            finding(
                "critical",
                component,
                "unit_state",
                f"{component} ({unit}) is not running: {comp.describe_state(status)}",
                evidence={"status": status, "journal": comp.journal_lines(journal[-evidence_lines:])},
            )
        )
    return out


def argument_spec():
    return {
        "name": {"type": "str", "required": True, "choices": comp.COMPONENT_NAMES},
        "state": {
            "type": "str",
            "default": "status",
            "choices": ["status", "started", "stopped", "restarted"],
        },
        "mode": {"type": "str", "default": "systemd", "choices": ["systemd", "compose"]},
        "unit": {"type": "str"},
        "logs": {"type": "bool", "default": False},
        "since": {"type": "str"},
        "tail": {"type": "int", "default": 50},
        "grep": {"type": "str"},
        "log_files": {"type": "list", "elements": "str"},
        "log_files_max_bytes": {"type": "int", "default": lf.MAX_BYTES},
        "evidence_lines": {"type": "int", "default": 15},
        "restarts_critical": {"type": "int", "default": 3},
        "wait_seconds": {"type": "float", "default": 30},
        "crash_sample_seconds": {"type": "float", "default": 2},
    }


def log_files_option(value):
    """O(log_files) as given: a list; or, from a k=v argument (C(log_files=[/a.log,/b.log]),
    which Ansible splits at the commas), the list it spells. A log file's path is absolute, so a
    leading C([) is a list's, not a glob's."""
    if value is None:
        return None
    items = [str(v).strip() for v in value]
    if items and items[0].startswith("[") and items[-1].endswith("]"):
        items = [i.strip().strip("'\"") for i in ",".join(items)[1:-1].split(",")]
    return [i for i in items if i]


def _source(name, error=None):
    return {"source": name, "available": error is None, "error": error, "truncated": False}


def collect_logs(backend, component, target, log_files=None, since=None, lines=None, grep=None, **kw):
    """The journal's entries of `target` and the lines of the component's log files, merged in
    time order, the newest `lines`; and where they came from. A source that cannot be read is a
    source record with its error, not an exception. LogFileError for a bad `since` or `grep`
    when there are files to read. `kw`: host, max_bytes, now (for the tests)."""
    patterns = comp.log_file_globs(component, target, log_files_option(log_files))
    since_at = grep_re = None
    if patterns:
        since_at = lf.parse_since(since, now=kw.get("now"))
        grep_re = lf.compile_grep(grep)
    lists, sources = [], []
    try:
        if target is None:
            raise comp.ComponentError(f"no {component} unit found to read the journal of")
        lists.append(backend.logs(target, since=since, lines=lines, grep=grep))
        sources.append(_source("journal"))
    except comp.ComponentError as exc:
        sources.append(_source("journal", str(exc)))
    files, missing = lf.expand_globs(patterns)
    for path in files:
        entries, source = lf.read_log_file(
            path,
            since=since_at,
            grep=grep_re,
            lines=lines,
            unit=target,
            host=kw.get("host"),
            max_bytes=kw.get("max_bytes", lf.MAX_BYTES),
        )
        lists.append(entries)
        sources.append(source)
    sources.extend(missing)
    return lf.merge(lists, lines), sources


def run_component(module, backend):
    p = module.params
    name = p["name"]
    result = {"changed": False, "component": name, "mode": backend.mode, "operation": "none", "findings": []}
    target = backend.target(name, p["unit"])
    result["unit"] = target
    before = backend.status(target)
    before["crash_loop"] = comp.is_crash_looping(before, p["restarts_critical"])
    result["before"] = before
    operation = plan(p["state"], before)
    result["operation"] = operation
    status = before
    waited = None
    if operation != "none":
        result["changed"] = True
        if not module.check_mode:
            getattr(backend, operation)(target)
            if operation in ("start", "restart") and p["wait_seconds"] > 0:
                ok, status = backend.wait_active(
                    target, p["wait_seconds"], settle=min(2.0, p["wait_seconds"] / 2)
                )
                waited = ok
            else:
                status = backend.status(target)
    previous = before
    if operation == "none" and status.get("n_restarts") and p["crash_sample_seconds"] > 0:
        # Restarted before: is systemd restarting it still (NRestarts climbing)?
        backend.sleep(p["crash_sample_seconds"])
        previous, status = status, backend.status(target)
    status = dict(status, crash_loop=comp.is_crash_looping(status, p["restarts_critical"], previous))
    result["status"] = status

    needs_journal = not status.get("active") or status["crash_loop"] or waited is False
    evidence = []
    host = getattr(backend, "hostname", None)
    if needs_journal and status.get("exists"):
        evidence, sources = collect_logs(
            backend,
            name,
            target,
            p["log_files"],
            lines=max(p["evidence_lines"] * 4, 50),
            host=host,
            max_bytes=p["log_files_max_bytes"],
        )
        for source in sources:
            if not source["available"] and source["source"] == "journal":
                evidence.insert(
                    0,
                    {
                        "time": None,
                        "unit": target,
                        "host": None,
                        "priority": None,
                        "message": source["error"],
                    },
                )
    if p["logs"]:
        try:
            result["logs"], result["log_sources"] = collect_logs(
                backend,
                name,
                target,
                p["log_files"],
                since=p["since"],
                lines=p["tail"],
                grep=p["grep"],
                host=host,
                max_bytes=p["log_files_max_bytes"],
            )
        except lf.LogFileError as exc:
            result["msg"] = str(exc)
            module.fail_json(**result)

    findings = component_findings(
        name,
        target,
        status,
        evidence,
        p["evidence_lines"],
        previous if operation == "none" else None,
        p["restarts_critical"],
    )
    if p["state"] == "stopped":
        # Stopped on purpose: only a unit that does not exist is worth a finding.
        findings = [f for f in findings if f["check"] != "unit_state" or not status.get("exists")]
    if operation != "none":
        did = (f"would {operation}") if module.check_mode else DONE[operation]
        for f in findings:
            f["remediation"] = f"{did} {target}"
    result["findings"] = findings

    if waited is False:
        lines = failure_lines(evidence, p["evidence_lines"]) if evidence else []
        result["msg"] = "{} ({}) is not up {}s after {}: {}{}".format(
            name,
            target,
            p["wait_seconds"],
            operation,
            comp.describe_state(status),
            "\n" + "\n".join(lines) if lines else "",
        )
        result["journal"] = lines
        module.fail_json(**result)
    module.exit_json(**result)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)

    def run(argv):
        if not module.get_bin_path(argv[0]):
            raise comp.ComponentError(f"{argv[0]} not found: is this host run by systemd?")
        return module.run_command(argv, environ_update={"LC_ALL": "C", "SYSTEMD_COLORS": "0"})

    p = module.params
    backend = None
    try:
        backend = comp.backend(p["mode"], run)
        backend.hostname = socket.gethostname()
        run_component(module, backend)
    except comp.ComponentError as exc:
        name, mode = p["name"], p["mode"]
        if p["state"] == "status" and mode != "compose":
            # A probe reports what it cannot reach as data, and the log files it can still read.
            result = {
                "changed": False,
                "component": name,
                "mode": mode,
                "operation": "none",
                "status": unavailable(exc),
                "findings": [finding("critical", name, "unit_state", f"{name}: state unknown: {exc}")],
            }
            if p["logs"] and backend is not None:
                unit = comp.unit_name(p["unit"]) if p["unit"] else comp.COMPONENTS[name]["unit"]
                try:
                    result["logs"], result["log_sources"] = collect_logs(
                        backend,
                        name,
                        None if "*" in unit else unit,
                        p["log_files"],
                        since=p["since"],
                        lines=p["tail"],
                        grep=p["grep"],
                        host=backend.hostname,
                        max_bytes=p["log_files_max_bytes"],
                    )
                except lf.LogFileError as bad:
                    module.fail_json(msg=str(bad), **result)
            module.exit_json(**result)
        module.fail_json(msg=str(exc), component=name, mode=mode, findings=[])


if __name__ == "__main__":
    main()
