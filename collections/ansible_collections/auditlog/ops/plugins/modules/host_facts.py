#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: host_facts
short_description: Load, CPU, memory, disks, I/O, top processes and the stack's units of a host
version_added: 0.3.0
description:
  - Reads the host from C(/proc) and C(os.statvfs), as C(uptime), C(free), C(df -h), C(df -i),
    C(iostat), C(iotop) and C(top) would show it, and the state of the stack's systemd units
    (C(systemctl show)), in one module call.
  - CPU busy time, disk I/O rates and the processes' CPU use are measured over one short sample
    (O(sample_seconds)).
  - Returns the figures as facts and, in RV(findings), what is wrong with them, against the
    thresholds given as options. A probe, it changes nothing (C(changed=false)).
  - Something that cannot be read (no systemd, a mount that does not answer) is returned as
    data (C(available=false) and the error), never as a failure.
author: audit-log project (!UNKNOWN)
options:
  units:
    description:
      - The systemd units to report on (C(audit-api) or C(audit-api.service)).
      - Unset, every unit of the stack that exists on the host (C(audit-api), C(audit-worker),
        C(postgresql@<ver>-main), C(redis-server), C(nats-server), C(nginx), C(prometheus),
        the exporters...). A unit named here that does not exist is a critical finding.
    type: list
    elements: str
  sample_seconds:
    description:
      - How long to sample CPU, disk I/O and the processes' CPU time.
    type: float
    default: 1.0
  top:
    description:
      - How many processes to list by CPU and by memory.
    type: int
    default: 5
  exclude_fs_types:
    description:
      - Filesystem types that are not disks (C(proc), C(tmpfs), C(cgroup2) ...). Unset, a built-in
        list of pseudo filesystems.
    type: list
    elements: str
  exclude_mounts:
    description:
      - Mount points (globs) not to report, e.g. the root filesystems of containers. Unset,
        C(/var/lib/docker/*), C(/var/lib/containers/*), C(/var/lib/kubelet/*), C(/run/*), C(/snap/*).
    type: list
    elements: str
  load_per_cpu_warning:
    description: The 1-minute load per CPU from which a warning is reported.
    type: float
    default: 1.5
  load_per_cpu_critical:
    description: The 1-minute load per CPU from which the finding is critical.
    type: float
    default: 3.0
  memory_available_warning:
    description: Available memory (% of total) below which a warning is reported.
    type: float
    default: 15
  memory_available_critical:
    description: Available memory (% of total) below which the finding is critical.
    type: float
    default: 5
  swap_used_warning:
    description: Swap used (% of swap) from which a warning is reported.
    type: float
    default: 50
  swap_used_critical:
    description: Swap used (% of swap) from which the finding is critical.
    type: float
    default: 80
  disk_used_warning:
    description: Disk space used (%, as C(df) counts it) from which a warning is reported.
    type: float
    default: 85
  disk_used_critical:
    description: Disk space used (%) from which the finding is critical.
    type: float
    default: 95
  inodes_used_warning:
    description: Inodes used (%) from which a warning is reported.
    type: float
    default: 85
  inodes_used_critical:
    description: Inodes used (%) from which the finding is critical.
    type: float
    default: 95
  process_cpu_warning:
    description:
      - CPU (% of one CPU over the sample) from which a process that is not one of the stack's
        own (in none of its units) is reported as a top consumer (warning).
    type: float
    default: 50
  process_memory_warning:
    description:
      - Memory (RSS, % of total) from which a process that is not one of the stack's own is
        reported as a top consumer (warning).
    type: float
    default: 20
  process_io_mib_warning:
    description:
      - Disk I/O (MiB/s read and written over the sample, from C(/proc/<pid>/io)) from which a
        process that is not one of the stack's own is reported as a top consumer (warning).
    type: float
    default: 20
  device_util_warning:
    description:
      - Utilisation of a block device (% of the sample it was busy, C(iostat -x)'s C(%util)) from
        which a warning is reported.
    type: float
    default: 90
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
  - Standard library only; reads C(/proc), so Linux only. Run as root to see every process's
    command line and unit.
  - A process is one of the stack's own when its cgroup (C(/proc/<pid>/cgroup)) is one of the
    stack's units.
seealso:
  - module: auditlog.ops.component
  - module: auditlog.ops.port_owner
"""

EXAMPLES = r"""
- name: Look at the host
  auditlog.ops.host_facts:
  register: host

- name: Only the API's units, with a tighter memory threshold
  auditlog.ops.host_facts:
    units: [audit-api, audit-worker]
    memory_available_warning: 25
    top: 10
"""

RETURN = r"""
load:
  description: The load averages, and each divided by the number of CPUs.
  returned: always
  type: dict
  sample: {"1": 0.42, "5": 0.3, "15": 0.25, "per_cpu": {"1": 0.1, "5": 0.08, "15": 0.06}}
cpu:
  description: CPU count, and busy and iowait % of all CPUs over the sample.
  returned: always
  type: dict
  sample: {"count": 4, "busy_percent": 12.5, "iowait_percent": 0.3, "sample_seconds": 1.0}
memory:
  description: Memory from C(/proc/meminfo), in bytes, and C(available_percent).
  returned: always
  type: dict
swap:
  description: Swap total, free and used in bytes, and C(used_percent).
  returned: always
  type: dict
disks:
  description:
    - One entry per real filesystem (C(device), C(mount), C(fstype)), with C(total_bytes),
      C(used_bytes), C(available_bytes), C(used_percent), C(inodes_total), C(inodes_used),
      C(inodes_free), C(inodes_used_percent); or C(available=false) and C(error).
  returned: always
  type: list
  elements: dict
io:
  description:
    - Per block device, the counters of C(/proc/diskstats) (reads, read_bytes, writes,
      write_bytes, io_ms ...) and the rates over the sample (C(reads_per_s), C(writes_per_s),
      C(read_bytes_per_s), C(write_bytes_per_s), C(util_percent)).
  returned: always
  type: dict
processes:
  description:
    - C(by_cpu) and C(by_memory), the top processes, each with C(pid), C(user), C(command),
      C(cmdline), C(unit), C(stack) (whether it is one of the stack's own), C(cpu_percent) (of one
      CPU) and C(rss_bytes) / C(memory_percent).
    - C(by_io), the top processes by disk I/O over the sample, as iotop shows them
      (C(read_bytes_per_s), C(write_bytes_per_s)).
  returned: always
  type: dict
units:
  description:
    - Per unit, its C(component), C(load_state), C(active_state), C(sub_state), C(main_pid),
      C(memory_current) (bytes), C(n_restarts), C(exec_main_status), C(result), and
      C(restarts_in_sample), how many times systemd restarted it during the sample.
    - C(available=false) and C(error) when systemd cannot be asked.
  returned: always
  type: dict
findings:
  description:
    - What is wrong, in the shape of module_utils/findings.py (severity, component, check, summary, evidence).
  returned: always
  type: list
  elements: dict
"""

import os  # noqa: E402
import time  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import components as comp  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import procfs  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding, level, unavailable  # noqa: E402

THRESHOLDS = (
    ("load_per_cpu_warning", 1.5),
    ("load_per_cpu_critical", 3.0),
    ("memory_available_warning", 15.0),
    ("memory_available_critical", 5.0),
    ("swap_used_warning", 50.0),
    ("swap_used_critical", 80.0),
    ("disk_used_warning", 85.0),
    ("disk_used_critical", 95.0),
    ("inodes_used_warning", 85.0),
    ("inodes_used_critical", 95.0),
    ("process_cpu_warning", 50.0),
    ("process_memory_warning", 20.0),
    ("process_io_mib_warning", 20.0),
    ("device_util_warning", 90.0),
)
DEFAULT_THRESHOLDS = dict(THRESHOLDS)


def _gib(n):
    return "%.1f GiB" % (n / 2**30) if n is not None else "?"


def host_findings(facts, thresholds=None):
    """The findings for a host's facts (the module's result keys) against the thresholds."""
    t = dict(DEFAULT_THRESHOLDS, **(thresholds or {}))
    out = []
    load = facts.get("load") or {}
    per_cpu = (load.get("per_cpu") or {}).get("1")
    sev = level(per_cpu, t["load_per_cpu_warning"], t["load_per_cpu_critical"])
    if sev:
        out.append(
            finding(
                sev,
                "host",
                "load",
                "load {:.2f} on {} CPUs ({:.2f} per CPU)".format(load["1"], facts["cpu"]["count"], per_cpu),
                evidence={"load": load, "cpu": facts.get("cpu")},
            )
        )
    mem = facts.get("memory") or {}
    sev = level(
        mem.get("available_percent"),
        t["memory_available_warning"],
        t["memory_available_critical"],
        above=False,
    )
    if sev:
        out.append(
            finding(
                sev,
                "host",
                "memory_available",
                "{}% of memory available ({} of {})".format(
                    mem["available_percent"], _gib(mem["available_bytes"]), _gib(mem["total_bytes"])
                ),
                evidence=mem,
            )
        )
    swap = facts.get("swap") or {}
    if swap.get("total_bytes"):
        sev = level(swap.get("used_percent"), t["swap_used_warning"], t["swap_used_critical"])
        if sev:
            out.append(
                finding(
                    sev,
                    "host",
                    "swap_used",
                    "{}% of swap used ({} of {})".format(
                        swap["used_percent"], _gib(swap["used_bytes"]), _gib(swap["total_bytes"])
                    ),
                    evidence=swap,
                )
            )
    for disk in facts.get("disks") or []:
        if not disk.get("available", True):
            out.append(
                finding(
                    "warning",
                    "host",
                    "disk",
                    "{} could not be read: {}".format(disk["mount"], disk.get("error")),
                    evidence=disk,
                )
            )
            continue
        sev = level(disk.get("used_percent"), t["disk_used_warning"], t["disk_used_critical"])
        if sev:
            out.append(
                finding(
                    sev,
                    "host",
                    "disk_used",
                    "{} is {}% full ({} free of {})".format(
                        disk["mount"],
                        disk["used_percent"],
                        _gib(disk["available_bytes"]),
                        _gib(disk["total_bytes"]),
                    ),
                    evidence=disk,
                )
            )
        sev = level(disk.get("inodes_used_percent"), t["inodes_used_warning"], t["inodes_used_critical"])
        if sev:
            out.append(
                finding(
                    sev,
                    "host",
                    "inodes_used",
                    "{} has {}% of its inodes used ({} free)".format(
                        disk["mount"], disk["inodes_used_percent"], disk["inodes_free"]
                    ),
                    evidence=disk,
                )
            )
    units = facts.get("units") or {}
    if units.get("available") is False:
        out.append(
            finding(
                "critical",
                "host",
                "unit_state",
                "the stack's units could not be read: {}".format(units.get("error")),
                evidence=units,
            )
        )
    else:
        for unit, state in sorted(units.items()):
            component = state.get("component") or "host"
            if not state.get("exists"):
                out.append(
                    finding(
                        "critical",
                        component,
                        "unit_state",
                        f"unit {unit} does not exist on this host",
                        evidence=state,
                    )
                )
            # A crash-looping unit may be caught in one of its short runs: active, its Result reset
            # to success by the start; only its restarts, climbing during the sample, tell.
            elif (
                not state.get("active") or state.get("restarts_in_sample") or comp.is_crash_looping(state)
            ) and unit not in comp.ONESHOT_UNITS:
                out.append(
                    finding(
                        "critical",
                        component,
                        "unit_state",
                        f"{unit} is {comp.describe_state(state)}",
                        evidence=state,
                    )
                )
    for name, dev in sorted((facts.get("io") or {}).items()):
        if dev.get("util_percent") is not None and dev["util_percent"] >= t["device_util_warning"]:
            out.append(
                finding(
                    "warning",
                    "host",
                    "disk_busy",
                    "{} busy {}% of the sample ({:.1f} MiB/s read, {:.1f} MiB/s written)".format(
                        name,
                        dev["util_percent"],
                        dev.get("read_bytes_per_s", 0) / 2**20,
                        dev.get("write_bytes_per_s", 0) / 2**20,
                    ),
                    evidence=dev,
                )
            )
    seen = set()
    procs = facts.get("processes") or {}
    io_by_pid = {row["pid"]: row for row in procs.get("by_io") or []}
    rows = (procs.get("by_cpu") or []) + (procs.get("by_memory") or []) + (procs.get("by_io") or [])
    for row in rows:
        if row.get("stack") or row["pid"] in seen:
            continue
        heavy = []
        if row.get("cpu_percent") is not None and row["cpu_percent"] >= t["process_cpu_warning"]:
            heavy.append("{}% CPU".format(row["cpu_percent"]))
        if row.get("memory_percent") is not None and row["memory_percent"] >= t["process_memory_warning"]:
            heavy.append("{}% of memory ({})".format(row["memory_percent"], _gib(row["rss_bytes"])))
        io = io_by_pid.get(row["pid"])
        if io and (io["read_bytes_per_s"] + io["write_bytes_per_s"]) / 2**20 >= t["process_io_mib_warning"]:
            heavy.append(
                "{:.1f} MiB/s of disk I/O ({:.1f} read, {:.1f} written)".format(
                    (io["read_bytes_per_s"] + io["write_bytes_per_s"]) / 2**20,
                    io["read_bytes_per_s"] / 2**20,
                    io["write_bytes_per_s"] / 2**20,
                )
            )
        if heavy:
            seen.add(row["pid"])
            out.append(
                finding(
                    "warning",
                    "host",
                    "top_consumer",
                    "pid {} ({}, user {}, {}) uses {} and is not one of the stack's processes".format(
                        row["pid"],
                        row["cmdline"][:200],
                        row["user"],
                        row.get("unit") or "no unit",
                        " and ".join(heavy),
                    ),
                    evidence=row,
                )
            )
    return out


def default_units(backend):
    """The stack's units that exist on this host (PostgreSQL's cluster unit resolved)."""
    names = []
    for component in comp.COMPONENT_NAMES:
        try:
            names.append(backend.target(component))
        except comp.ComponentError:
            continue
    states = backend.show(names)
    return [s["unit"] for s in states if s.get("exists")], states


def read_units(backend, wanted):
    """{unit: state} of the wanted units (or the stack's that exist); unavailable() if systemd
    cannot be asked."""
    try:
        if wanted:
            names = [comp.unit_name(u) for u in wanted]
            states = backend.show(names)
        else:
            names, states = default_units(backend)
            states = [s for s in states if s.get("exists")]
    except (comp.ComponentError, OSError) as exc:
        return unavailable(exc)
    out = {}
    for name, state in zip(names, states, strict=False):
        state = dict(state, component=comp.component_of_unit(name))
        out[name] = state
    return out


def own_ancestry(procs, pid=None):
    """This process and its ancestors up to PID 1 (the module and what runs it)."""
    pid = os.getpid() if pid is None else pid
    out = set()
    while pid and pid > 1 and pid not in out:
        out.add(pid)
        p = procs.get(pid)
        if p is None:
            break
        pid = p["ppid"]
    return out


def gather(module_params, run, sample_seconds, top_n, exclude_types, exclude_mounts=procfs.EXCLUDE_MOUNTS):
    """Read the host: everything host_findings needs."""
    facts = {}
    ncpu = os.cpu_count() or 1
    try:
        l1, l5, l15 = procfs.parse_loadavg(procfs._read("/proc/loadavg"))
        facts["load"] = {
            "1": l1,
            "5": l5,
            "15": l15,
            "per_cpu": {"1": round(l1 / ncpu, 2), "5": round(l5 / ncpu, 2), "15": round(l15 / ncpu, 2)},
        }
    except (OSError, ValueError) as exc:
        facts["load"] = unavailable(exc)

    def snapshot():
        try:
            cpu = procfs.parse_cpu_times(procfs._read("/proc/stat"))
        except (OSError, ValueError):
            cpu = None
        try:
            disks = procfs.parse_diskstats(procfs._read("/proc/diskstats"))
        except OSError:
            disks = {}
        return time.monotonic(), cpu, disks, procfs.processes()

    backend = comp.SystemdBackend(run)
    units_before = read_units(backend, module_params.get("units"))
    t0, cpu0, io0, procs0 = snapshot()
    time.sleep(max(sample_seconds, 0.05))
    t1, cpu1, io1, procs1 = snapshot()
    elapsed = t1 - t0
    busy, iowait = procfs.cpu_busy_percent(cpu0, cpu1) if cpu0 and cpu1 else (None, None)
    facts["cpu"] = {
        "count": ncpu,
        "busy_percent": busy,
        "iowait_percent": iowait,
        "sample_seconds": round(elapsed, 2),
    }
    try:
        facts.update(procfs.parse_meminfo(procfs._read("/proc/meminfo")))
    except OSError as exc:
        facts["memory"] = unavailable(exc)
        facts["swap"] = unavailable(exc)
    try:
        facts["disks"] = procfs.read_disks(exclude_types=exclude_types, exclude_mounts=exclude_mounts)
    except OSError as exc:
        facts["disks"] = [dict(unavailable(exc), mount="/")]
    rates = procfs.diskstats_rates(io0, io1, elapsed)
    facts["io"] = {name: dict(counters, **rates.get(name, {})) for name, counters in io1.items()}

    # Not the module itself, nor what runs it (the AnsiballZ wrapper, the connection's shell).
    own = own_ancestry(procs1)
    procs1 = {pid: p for pid, p in procs1.items() if pid not in own}
    mem_total = (facts.get("memory") or {}).get("total_bytes") or 0
    by_cpu, by_mem = procfs.top_processes(
        procs0,
        procs1,
        elapsed,
        os.sysconf("SC_CLK_TCK"),
        os.sysconf("SC_PAGE_SIZE"),
        mem_total,
        top_n,
    )
    by_io = procfs.top_io(procs0, procs1, elapsed, top_n)
    for row in by_cpu + by_mem + by_io:
        row["stack"] = comp.is_stack_unit(row.get("unit"))
    facts["processes"] = {"by_cpu": by_cpu, "by_memory": by_mem, "by_io": by_io}

    facts["units"] = read_units(backend, module_params.get("units"))
    for name, state in facts["units"].items():
        if isinstance(state, dict) and isinstance(units_before.get(name), dict):
            before = units_before[name].get("n_restarts") or 0
            state["restarts_in_sample"] = max((state.get("n_restarts") or 0) - before, 0)
    return facts


def argument_spec():
    spec = {
        "units": {"type": "list", "elements": "str"},
        "sample_seconds": {"type": "float", "default": 1.0},
        "top": {"type": "int", "default": 5},
        "exclude_fs_types": {"type": "list", "elements": "str"},
        "exclude_mounts": {"type": "list", "elements": "str"},
    }
    for name, default in THRESHOLDS:
        spec[name] = {"type": "float", "default": default}
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params

    def run(argv):
        if not module.get_bin_path(argv[0]):
            raise comp.ComponentError(f"{argv[0]} not found: is this host run by systemd?")
        return module.run_command(argv, environ_update={"LC_ALL": "C", "SYSTEMD_COLORS": "0"})

    exclude = frozenset(p["exclude_fs_types"]) if p["exclude_fs_types"] is not None else procfs.PSEUDO_FS
    exclude_mounts = p["exclude_mounts"] if p["exclude_mounts"] is not None else procfs.EXCLUDE_MOUNTS
    facts = gather(p, run, p["sample_seconds"], max(p["top"], 1), exclude, exclude_mounts)
    thresholds = {name: p[name] for name, _default in THRESHOLDS}
    findings = host_findings(facts, thresholds)
    module.exit_json(changed=False, findings=findings, **facts)


if __name__ == "__main__":
    main()
