#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: port_owner
short_description: Which process holds a TCP port, and end a foreign one when allowed
version_added: 0.3.0
description:
  - Finds the listening TCP sockets of the host (C(/proc/net/tcp), C(/proc/net/tcp6)) and the
    processes that hold them (their open descriptors in C(/proc/<pid>/fd)), with each process's
    pid, command line, user and systemd unit (from C(/proc/<pid>/cgroup)), as C(ss -ltnp) would
    show them, without C(ss).
  - Compared with O(expected) (which component or unit should own which port), a port held by
    anything else is a critical finding naming the holder's pid and command, and an expected port
    nobody listens on is a warning.
  - With O(terminate=true), a holder of a port of O(ports) or O(expected) that is not one of the
    stack's own units and not the expected owner is sent C(SIGTERM), then C(SIGKILL) after
    O(grace_seconds); the finding's C(remediation) records it. A process of one of the stack's
    units is never ended. In check mode the module reports whom it would end and ends nobody.
author: audit-log project (!UNKNOWN)
options:
  ports:
    description:
      - The ports to report on. Unset, every listening port (and those of O(expected)).
    type: list
    elements: int
  expected:
    description:
      - Port -> the component (V(api), V(redis) ...) or unit (V(audit-api), V(redis-server.service),
        a glob) that should own it.
    type: dict
    default: {}
  terminate:
    description:
      - End the foreign holders of the ports of O(ports) and O(expected). Destructive, so off unless
        asked for.
    type: bool
    default: false
  grace_seconds:
    description:
      - How long a process has to exit after C(SIGTERM) before it is sent C(SIGKILL).
    type: float
    default: 5
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
  - Run as root (C(become)) to see the holders of every socket; a socket whose holder cannot be
    seen is reported with C(pid=null).
  - Sockets of this host's network namespace only (in a container, the container's).
seealso:
  - module: auditlog.ops.host_facts
  - module: auditlog.ops.component
"""

EXAMPLES = r"""
- name: Who holds the API's and Redis' ports?
  auditlog.ops.port_owner:
    ports: [8000, 6379]
    expected: {8000: api, 6379: redis}
  register: ports

- name: End a foreign process on the API's port (only with the operator's consent)
  auditlog.ops.port_owner:
    expected: {8000: api}
    terminate: "{{ runbook_kill_foreign | default(false) | bool }}"
  become: true
"""

RETURN = r"""
listeners:
  description:
    - Every listening socket reported (of O(ports), or all), each with C(port), C(address),
      C(family), C(pid), C(command), C(cmdline), C(user), C(unit), C(component) (the stack
      component of the unit, or null) and C(stack) (whether the unit is the stack's).
  returned: always
  type: list
  elements: dict
ports:
  description:
    - Per port asked for (O(ports) and O(expected)), C(listening), C(expected) (the wanted owner or
      null), C(owners) (the distinct holding processes, as in RV(listeners)) and C(ok).
  returned: always
  type: dict
  sample:
    "8000": {"listening": true, "expected": "api", "ok": false, "owners": [{"pid": 812, "command": "x"}]}
terminated:
  description: The processes ended (in check mode, that would be ended), with C(signal) used.
  returned: always
  type: list
  elements: dict
findings:
  description: What is wrong (module_utils/findings.py).
  returned: always
  type: list
  elements: dict
"""

import os  # noqa: E402
import signal  # noqa: E402
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import components as comp  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import procfs  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding, unavailable  # noqa: E402

OWNER_KEYS = ("pid", "command", "cmdline", "user", "unit", "component", "stack")


def owner_info(pid, proc_reader):
    """A holder's description; a pid that is gone or unknown keeps just the pid."""
    p = proc_reader(pid) if pid is not None else None
    if p is None:
        return {
            "pid": pid,
            "command": None,
            "cmdline": None,
            "user": None,
            "unit": None,
            "component": None,
            "stack": False,
        }
    component = comp.component_of_unit(p.get("unit"))
    return {
        "pid": pid,
        "command": p["comm"],
        "cmdline": p["cmdline"][:500],
        "user": p["user"],
        "unit": p.get("unit"),
        "component": component,
        "stack": component is not None,
    }


def describe_owner(o):
    if o.get("pid") is None:
        return "an unknown process"
    return "pid {} ({}, user {}, {})".format(
        o["pid"], o.get("cmdline") or o.get("command"), o.get("user"), o.get("unit") or "no unit"
    )


def listeners_with_owners(listeners, owners_by_inode, proc_reader):
    """Each listening socket with its holders (one row per socket and holding process)."""
    rows = []
    cache = {}
    for sock in listeners:
        pids = owners_by_inode.get(sock["inode"]) or [None]
        for pid in pids:
            if pid not in cache:
                cache[pid] = owner_info(pid, proc_reader)
            rows.append(
                dict(
                    {"port": sock["port"], "address": sock["address"], "family": sock["family"]}, **cache[pid]
                )
            )
    return rows


def normalise_expected(expected):
    """{port (int): wanted} from the option (YAML keys may arrive as strings)."""
    out = {}
    for port, wanted in (expected or {}).items():
        try:
            out[int(port)] = str(wanted)
        except (TypeError, ValueError):
            raise ValueError(f"expected: {port!r} is no port number") from None
    return out


def port_report(rows, ports, expected):
    """{port: {listening, expected, owners, ok}} for the ports asked for."""
    report = {}
    for port in sorted(set(ports) | set(expected)):
        owners = []
        seen = set()
        for r in rows:
            if r["port"] == port and r["pid"] not in seen:
                seen.add(r["pid"])
                owners.append({k: r[k] for k in OWNER_KEYS})
        wanted = expected.get(port)
        ok = True
        if wanted:
            ok = bool(owners) and all(comp.unit_matches(o.get("unit"), wanted) for o in owners)
        report[port] = {"listening": bool(owners), "expected": wanted, "owners": owners, "ok": ok}
    return report


def is_foreign(owner, wanted):
    """May this holder be ended? Not a stack unit's process, not the expected owner, a real pid."""
    if owner.get("pid") in (None, 0, 1) or owner.get("stack"):
        return False
    return not (wanted and comp.unit_matches(owner.get("unit"), wanted))


def port_findings(report):
    out = []
    for port, entry in sorted(report.items()):
        wanted = entry["expected"]
        if not wanted:
            continue
        component = wanted if wanted in comp.COMPONENTS else (comp.component_of_unit(wanted) or "host")
        if not entry["listening"]:
            out.append(
                finding(
                    "warning",
                    component,
                    "port_owner",
                    f"nothing listens on port {port} (expected: {wanted})",
                    evidence=entry,
                )
            )
            continue
        wrong = [o for o in entry["owners"] if not comp.unit_matches(o.get("unit"), wanted)]
        if wrong:
            out.append(
                finding(
                    "critical",
                    component,
                    "port_owner",
                    "port {} (expected: {}) is held by {}".format(
                        port, wanted, ", ".join(describe_owner(o) for o in wrong)
                    ),
                    evidence=entry,
                )
            )
    return out


def terminate(pids, grace, check_mode, kill=os.kill, alive=None, sleep=time.sleep, clock=time.monotonic):
    """SIGTERM, then SIGKILL after `grace` seconds to whoever is still there. Returns
    {pid: signal name used or 'gone'}; in check mode {pid: 'would SIGTERM'}."""
    if check_mode:
        return {pid: "would SIGTERM" for pid in pids}

    def _alive(pid):
        if alive is not None:
            return alive(pid)
        try:
            kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        # a zombie is gone for our purpose
        try:
            with open(f"/proc/{pid}/stat") as f:
                return procfs.parse_pid_stat(f.read())["state"] != "Z"
        except (OSError, ValueError):
            return False

    result = {}
    for pid in pids:
        try:
            kill(pid, signal.SIGTERM)
            result[pid] = "SIGTERM"
        except ProcessLookupError:
            result[pid] = "gone"
    deadline = clock() + grace
    waiting = [pid for pid in pids if result[pid] == "SIGTERM"]
    while waiting and clock() < deadline:
        sleep(0.1)
        waiting = [pid for pid in waiting if _alive(pid)]
    for pid in waiting:
        try:
            kill(pid, signal.SIGKILL)
            result[pid] = "SIGKILL"
        except ProcessLookupError:
            pass
    return result


def argument_spec():
    return {
        "ports": {"type": "list", "elements": "int"},
        "expected": {"type": "dict", "default": {}},
        "terminate": {"type": "bool", "default": False},
        "grace_seconds": {"type": "float", "default": 5},
    }


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    try:
        expected = normalise_expected(p["expected"])
    except ValueError as exc:
        module.fail_json(msg=str(exc))
    for port in list(expected) + list(p["ports"] or []):
        if not 1 <= port <= 65535:
            module.fail_json(msg=f"port {port} is no port number (1-65535)")
    if p["terminate"] and not (p["ports"] or expected):
        module.fail_json(msg="terminate needs the ports whose foreign holders to end: give ports or expected")

    try:
        listeners = procfs.read_listeners()
    except OSError as exc:
        module.exit_json(
            changed=False,
            listeners=unavailable(exc),
            ports={},
            terminated=[],
            findings=[
                finding("critical", "host", "port_owner", f"the listening sockets could not be read: {exc}")
            ],
        )
    wanted_ports = set(p["ports"] or []) | set(expected)
    if wanted_ports:
        listeners = [s for s in listeners if s["port"] in wanted_ports]
    owners = procfs.socket_owners([s["inode"] for s in listeners])
    rows = listeners_with_owners(listeners, owners, procfs.read_process)
    report = port_report(rows, wanted_ports, expected)
    findings = port_findings(report)

    terminated = []
    changed = False
    if p["terminate"]:
        victims = {}
        for port, entry in report.items():
            for o in entry["owners"]:
                if is_foreign(o, entry["expected"]) and o["pid"] != os.getpid():
                    victims.setdefault(o["pid"], (port, o))
        if victims:
            changed = True
            outcome = terminate(sorted(victims), p["grace_seconds"], module.check_mode)
            for pid, sig in outcome.items():
                port, o = victims[pid]
                terminated.append(dict(o, port=port, signal=sig))
                text = (
                    "would end {} with SIGTERM (SIGKILL after {}s)".format(
                        describe_owner(o), p["grace_seconds"]
                    )
                    if module.check_mode
                    else f"ended {describe_owner(o)} with {sig}"
                )
                for f in findings:
                    if (
                        f["evidence"]
                        and f["evidence"].get("owners")
                        and any(x["pid"] == pid for x in f["evidence"]["owners"])
                    ):
                        f["remediation"] = text if not f["remediation"] else f["remediation"] + "; " + text
                if not any(f["remediation"] and text in f["remediation"] for f in findings):
                    findings.append(
                        finding(
                            "warning",
                            "host",
                            "port_owner",
                            f"port {port} was held by {describe_owner(o)}",
                            evidence=report[port],
                            remediation=text,
                            variable=None,
                        )
                    )
    module.exit_json(
        changed=changed,
        listeners=rows,
        ports={str(k): v for k, v in report.items()},
        terminated=terminated,
        findings=findings,
    )


if __name__ == "__main__":
    main()
