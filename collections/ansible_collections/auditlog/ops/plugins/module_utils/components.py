# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""The stack's components and how to act on them, whatever the deploy mode.

COMPONENTS maps each component of the stack to its systemd unit (as the roles install them); the
ports are the roles' own (each role's endpoint, roles/*/tasks/client.yml), not repeated here. A
backend class per deploy mode (SystemdBackend; ComposeBackend is the place for compose mode) gives
the modules one interface: status, start, stop, restart and logs. Everything that parses a
command's output is a plain function, for the unit tests.
"""

import fnmatch
import glob
import json
import os
import re
import time
from datetime import UTC, datetime

# component -> unit (a glob for PostgreSQL's Debian cluster unit, resolved on the host), the other
# units that belong to it, and the log files it writes besides the journal (globs; `{instance}` is
# the unit's instance, 17-main of postgresql@17-main):
# - postgresql: Debian's pg_ctlcluster sends the server's log to
#   /var/log/postgresql/postgresql-<ver>-<cluster>.log (logging_collector off, roles/postgresql
#   changes neither), in Debian's log_line_prefix '%m [%p] %q%u@%d '.
# - redis: roles/redis/templates/redis.conf.j2 `logfile /var/log/redis/redis-server.log`.
# - nginx: roles/nginx/templates/audit.conf.j2 writes /var/log/nginx/access.log in its JSON format
#   audit_json (nginx_access_log; logfiles reads the combined format too) and sets no error_log,
#   so Debian's /var/log/nginx/error.log applies.
# - nats (roles/nats: no log_file, stderr of a Type=simple unit), prometheus and the exporters
#   (Debian's units, stderr), api, worker, grafana: the journal only.
COMPONENTS = {
    "postgresql": {
        "unit": "postgresql@*-main.service",
        "log_files": ["/var/log/postgresql/postgresql-{instance}.log"],
    },
    "redis": {
        "unit": "redis-server.service",
        "log_files": ["/var/log/redis/redis-server.log"],
    },
    "nats": {"unit": "nats-server.service"},
    "api": {"unit": "audit-api.service"},
    "worker": {"unit": "audit-worker.service", "also": ["audit-retention.service"]},
    "nginx": {
        "unit": "nginx.service",
        "log_files": ["/var/log/nginx/access.log", "/var/log/nginx/error.log"],
    },
    "prometheus": {"unit": "prometheus.service"},
    "alertmanager": {"unit": "prometheus-alertmanager.service"},
    "node_exporter": {"unit": "prometheus-node-exporter.service"},
    "postgres_exporter": {"unit": "prometheus-postgres-exporter.service"},
    "redis_exporter": {"unit": "prometheus-redis-exporter.service"},
    "grafana": {"unit": "grafana-server.service"},
}
COMPONENT_NAMES = sorted(COMPONENTS)

# Units of the stack that run only now and then (timers' services): not "inactive" when stopped.
ONESHOT_UNITS = ("audit-retention.service",)

SHOW_PROPERTIES = (
    "Id",
    "LoadState",
    "ActiveState",
    "SubState",
    "UnitFileState",
    "MainPID",
    "MemoryCurrent",
    "NRestarts",
    "ExecMainStatus",
    "ExecMainCode",
    "Result",
    "ActiveEnterTimestamp",
)

# systemd's "no value" for a 64-bit counter
_UINT64_MAX = 2**64 - 1


class ComponentError(Exception):
    """A component cannot be acted on (unknown name, no unit, mode not implemented)."""


def unit_name(unit):
    """A unit name with its type suffix (audit-api -> audit-api.service)."""
    unit = unit.strip()
    if not re.search(r"\.(service|socket|timer|target|scope|slice|mount|path)$", unit):
        unit += ".service"
    return unit


def stack_unit_patterns():
    """Every unit (or unit glob) that belongs to the stack."""
    patterns = []
    for spec in COMPONENTS.values():
        patterns.append(spec["unit"])
        patterns.extend(spec.get("also", []))
    return patterns


def component_of_unit(unit):
    """The stack component a unit belongs to, or None for a unit that is not the stack's."""
    if not unit:
        return None
    unit = unit_name(unit)
    for name, spec in COMPONENTS.items():
        for pattern in [spec["unit"], *spec.get("also", [])]:
            if fnmatch.fnmatchcase(unit, pattern):
                return name
    return None


def is_stack_unit(unit):
    return component_of_unit(unit) is not None


def unit_matches(unit, wanted):
    """Does `unit` (a process's unit) satisfy `wanted`: a component name, a unit name, or a glob?"""
    if not unit or not wanted:
        return False
    unit = unit_name(unit)
    if wanted in COMPONENTS:
        return component_of_unit(unit) == wanted
    return fnmatch.fnmatchcase(unit, unit_name(wanted))


def log_file_globs(component, unit=None, override=None):
    """The log files (globs) of a component: `override` when given (a list, [] for none), else
    the COMPONENTS table's, `{instance}` replaced by the unit's instance (`*` without one)."""
    patterns = override if override is not None else COMPONENTS.get(component, {}).get("log_files", [])
    instance = "*"
    if unit and "@" in unit:
        instance = unit_name(unit).split("@", 1)[1].rsplit(".", 1)[0] or "*"
    return [p.replace("{instance}", instance) for p in patterns]


def postgresql_units_from_dirs(etc_dir="/etc/postgresql"):
    """Debian's cluster units that exist on this host (postgresql@<ver>-<cluster>), newest first,
    from the clusters' configuration directories (/etc/postgresql/<ver>/<cluster>)."""
    found = []
    for path in glob.glob(os.path.join(etc_dir, "*", "*", "postgresql.conf")):
        parts = path.split(os.sep)
        version, cluster = parts[-3], parts[-2]
        found.append((version, cluster))

    def key(vc):
        v = vc[0]
        return (int(v) if v.isdigit() else 0, v, vc[1] == "main")

    return ["postgresql@{}-{}.service".format(*vc) for vc in sorted(found, key=key, reverse=True)]


def resolve_unit(component, units_on_host=None, etc_dir="/etc/postgresql"):
    """The concrete unit of a component: PostgreSQL's glob resolved against the units the host
    knows (`units_on_host`) or its clusters' directories; other units as they are."""
    spec = COMPONENTS.get(component)
    if spec is None:
        raise ComponentError(
            "unknown component {!r}: one of {}".format(component, ", ".join(COMPONENT_NAMES))
        )
    pattern = spec["unit"]
    if "*" not in pattern:
        return pattern
    candidates = [u for u in (units_on_host or []) if fnmatch.fnmatchcase(u, pattern)]
    from_dirs = [u for u in postgresql_units_from_dirs(etc_dir) if fnmatch.fnmatchcase(u, pattern)]
    for unit in from_dirs + sorted(candidates, reverse=True):
        return unit
    raise ComponentError(
        f"no {component} unit on this host (no cluster in {etc_dir}, no unit matching {pattern})"
    )


# -- systemctl show ------------------------------------------------------------------------------


def _int_or_none(value):
    if value is None:
        return None
    value = value.strip()
    if not value or value.startswith("["):  # [not set]
        return None
    try:
        number = int(value)
    except ValueError:
        return None
    return None if number == _UINT64_MAX else number


def parse_show(text):
    """`systemctl show -p ... unit...` output -> a list of property dicts, one per unit (systemd
    separates units by a blank line), with the numbers as ints (None when not set)."""
    units = []
    current = {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                units.append(current)
                current = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            current[key] = value
    if current:
        units.append(current)
    return [unit_state(props) for props in units]


def unit_state(props):
    """One unit's properties, as the modules return them."""
    state = {
        "unit": props.get("Id"),
        "load_state": props.get("LoadState"),
        "active_state": props.get("ActiveState"),
        "sub_state": props.get("SubState"),
        "unit_file_state": props.get("UnitFileState") or None,
        "main_pid": _int_or_none(props.get("MainPID")),
        "memory_current": _int_or_none(props.get("MemoryCurrent")),
        "n_restarts": _int_or_none(props.get("NRestarts")),
        "exec_main_status": _int_or_none(props.get("ExecMainStatus")),
        "exec_main_code": props.get("ExecMainCode") or None,
        "result": props.get("Result") or None,
        "active_since": props.get("ActiveEnterTimestamp") or None,
    }
    if state["main_pid"] == 0:
        state["main_pid"] = None
    state["exists"] = state["load_state"] not in (None, "not-found")
    state["active"] = state["active_state"] == "active"
    return state


def is_crash_looping(state, restarts_threshold=3, previous=None):
    """A unit that systemd keeps restarting: waiting to be restarted (activating/auto-restart),
    failed after restarts, or whose NRestarts climbed since `previous` (an earlier state) or
    reached `restarts_threshold`."""
    if state.get("sub_state") == "auto-restart":
        return True
    restarts = state.get("n_restarts") or 0
    if previous is not None and restarts > (previous.get("n_restarts") or 0):
        return True
    if not restarts_threshold or restarts < restarts_threshold:
        return False
    return not state.get("active") or state.get("result") not in (None, "success")


def describe_state(state):
    """`active (running)`, `failed (failed) status=1 restarts=4` ..."""
    text = "{} ({})".format(state.get("active_state"), state.get("sub_state"))
    if state.get("exec_main_status"):
        text += " status={}".format(state["exec_main_status"])
    if state.get("n_restarts"):
        text += " restarts={}".format(state["n_restarts"])
    return text


# -- journal -----------------------------------------------------------------------------------

PRIORITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")


def _message_text(value):
    # journald gives a message that is not valid UTF-8 as a list of byte values
    if isinstance(value, list):
        try:
            return bytes(value).decode("utf-8", "replace")
        except (TypeError, ValueError):
            return str(value)
    return "" if value is None else str(value)


def parse_journal_json(text, default_unit=None):
    """`journalctl -o json` output (one JSON object a line) -> entries {time, unit, host, priority,
    message, source: journal}; time in ISO 8601 UTC, priority as its name. Lines that are no JSON
    are skipped."""
    entries = (journal_entry(line, default_unit) for line in text.splitlines())
    return [e for e in entries if e is not None]


def journal_entry(line, default_unit=None, origin=False):
    """One line of `journalctl -o json` as an entry (see parse_journal_json), or None. With
    origin, the entry also has `pid` (_PID), `identifier` (SYSLOG_IDENTIFIER) and `about_unit`
    (UNIT, which systemd's own lines about a unit carry)."""
    line = line.strip()
    if not line:
        return None
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    usec = raw.get("__REALTIME_TIMESTAMP")
    when = None
    if usec is not None:
        try:
            when = (
                datetime.fromtimestamp(int(usec) / 1e6, tz=UTC)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z")
            )
        except (TypeError, ValueError, OverflowError):
            when = None
    try:
        prio = PRIORITIES[int(raw.get("PRIORITY"))]
    except (TypeError, ValueError, IndexError):
        prio = None
    entry = {
        "time": when,
        "unit": raw.get("_SYSTEMD_UNIT") or raw.get("UNIT") or default_unit,
        "host": raw.get("_HOSTNAME"),
        "priority": prio,
        "message": _message_text(raw.get("MESSAGE")),
        "source": "journal",
    }
    if origin:
        entry.update(pid=raw.get("_PID"), identifier=raw.get("SYSLOG_IDENTIFIER"), about_unit=raw.get("UNIT"))
    return entry


def journal_command(unit, since=None, lines=None, grep=None, priority=None):
    """The journalctl command line for a unit's entries (its own and systemd's about it)."""
    cmd = ["journalctl", "--no-pager", "-o", "json", "-u", unit]
    if since:
        cmd += ["--since", str(since)]
    if lines:
        cmd += ["--lines", str(int(lines))]
    if grep:
        cmd += ["--grep", grep]
    if priority:
        cmd += ["--priority", str(priority)]
    return cmd


def journal_lines(entries):
    """Entries as log lines for a finding's evidence."""
    return ["{} {}: {}".format(e.get("time") or "-", e.get("unit") or "-", e.get("message")) for e in entries]


# -- backends ---------------------------------------------------------------------------------


class Backend:
    """What the modules do with a component, whatever the deploy mode. `run(argv)` runs a command
    and returns (rc, stdout, stderr), as AnsibleModule.run_command does."""

    mode = None

    def __init__(self, run, sleep=time.sleep, clock=time.monotonic):
        self.run = run
        self.sleep = sleep
        self.clock = clock

    def target(self, component, unit=None):
        """The name the backend acts on for a component (a unit, a compose service)."""
        raise NotImplementedError

    def status(self, target):
        raise NotImplementedError

    def start(self, target):
        raise NotImplementedError

    def stop(self, target):
        raise NotImplementedError

    def restart(self, target):
        raise NotImplementedError

    def logs(self, target, since=None, lines=None, grep=None):
        raise NotImplementedError

    def wait_active(self, target, seconds, settle=2.0, interval=0.5):
        """Poll until the component is active and stays so for `settle` seconds with the same
        main process (a unit that crashes right after starting is not up). Returns (ok, state)."""
        deadline = self.clock() + seconds
        stable_since = None
        seen = None
        state = self.status(target)
        while True:
            key = (state.get("main_pid"), state.get("n_restarts"))
            if state.get("active"):
                if stable_since is None or key != seen:
                    stable_since, seen = self.clock(), key
                elif self.clock() - stable_since >= settle:
                    return True, state
            else:
                stable_since = None
            if self.clock() >= deadline:
                return False, state
            self.sleep(interval)
            state = self.status(target)


class SystemdBackend(Backend):
    """Components as systemd units (`audit_deploy_mode: systemd`)."""

    mode = "systemd"

    def list_units(self, pattern):
        rc, out, _err = self.run(
            ["systemctl", "list-units", "--all", "--plain", "--no-legend", "--full", pattern]
        )
        units = []
        if rc == 0:
            for line in out.splitlines():
                fields = line.split()
                if fields:
                    units.append(fields[0].lstrip("●*"))
        return units

    def target(self, component, unit=None):
        if unit:
            return unit_name(unit)
        pattern = COMPONENTS.get(component, {}).get("unit", "")
        on_host = self.list_units(pattern) if "*" in pattern else None
        return resolve_unit(component, on_host)

    def show(self, units):
        """The state of several units in one systemctl call, in the order given."""
        if not units:
            return []
        rc, out, err = self.run(["systemctl", "show", "-p", ",".join(SHOW_PROPERTIES), "--", *units])
        if rc != 0 and not out:
            raise ComponentError("systemctl show failed: %s" % (err.strip() or f"exit {rc}"))
        states = parse_show(out)
        by_id = {s["unit"]: s for s in states}
        result = []
        for i, unit in enumerate(units):
            state = by_id.get(unit) or (states[i] if i < len(states) else None)
            if state is None:
                state = unit_state({"Id": unit, "LoadState": "not-found"})
            result.append(state)
        return result

    def status(self, target):
        return self.show([target])[0]

    def _systemctl(self, verb, target):
        rc, _out, err = self.run(["systemctl", verb, "--", target])
        if rc != 0:
            raise ComponentError(
                "systemctl {} {} failed: {}".format(verb, target, err.strip() or f"exit {rc}")
            )

    def _clear_start_limit(self, target):
        # A unit that crash-looped past its StartLimitBurst refuses every start ("start request
        # repeated too quickly") until its failed state is reset: an operator's start means to
        # try again. Nothing else changes (reset-failed on a healthy unit is a no-op).
        self.run(["systemctl", "reset-failed", "--", target])

    def start(self, target):
        self._clear_start_limit(target)
        self._systemctl("start", target)

    def stop(self, target):
        self._systemctl("stop", target)

    def restart(self, target):
        self._clear_start_limit(target)
        self._systemctl("restart", target)

    def logs(self, target, since=None, lines=None, grep=None):
        rc, out, err = self.run(journal_command(target, since, lines, grep))
        # journalctl --grep exits 1 when nothing matches
        if rc != 0 and not out and err.strip() and "No entries" not in err:
            raise ComponentError(f"journalctl -u {target} failed: {err.strip()}")
        return parse_journal_json(out, default_unit=target)


class ComposeBackend(Backend):
    """Components as services of a Docker Compose project (`audit_deploy_mode: compose`): the
    place where compose mode goes, so that playbooks need no change when it comes."""

    mode = "compose"

    def _not_yet(self, *_args, **_kwargs):
        raise ComponentError(
            "mode compose is not implemented yet: the stack deploys as systemd units (mode: systemd)"
        )

    target = status = start = stop = restart = logs = _not_yet


BACKENDS = {"systemd": SystemdBackend, "compose": ComposeBackend}


def backend(mode, run, **kwargs):
    try:
        cls = BACKENDS[mode]
    except KeyError:
        raise ComponentError(
            "unknown mode {!r}: one of {}".format(mode, ", ".join(sorted(BACKENDS)))
        ) from None
    return cls(run, **kwargs)
