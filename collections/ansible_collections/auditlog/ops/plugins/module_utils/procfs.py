# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""Reading a Linux host from /proc: load, CPU, memory, mounts, disks, processes and sockets.

The parsers take the files' text and are pure (unit-tested with sample text); the readers
(`read_*`, `processes`, ...) open the files and tolerate a process that exits meanwhile.
"""

import fnmatch
import os
import pwd
import socket
import struct

PROC = "/proc"

# Filesystems that hold no disk space of their own (df -x would skip them).
PSEUDO_FS = frozenset(
    [
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fusectl",
        "fuse.gvfsd-fuse",
        "fuse.lxcfs",
        "fuse.portal",
        "hugetlbfs",
        "mqueue",
        "nsfs",
        "proc",
        "pstore",
        "ramfs",
        "rpc_pipefs",
        "securityfs",
        "selinuxfs",
        "squashfs",
        "sysfs",
        "tmpfs",
        "tracefs",
        "nfsd",
        "overlay.ro",
        "iso9660",
    ]
)


def _read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


# -- load, CPU, memory -------------------------------------------------------------------------


def parse_loadavg(text):
    """/proc/loadavg -> (load1, load5, load15)."""
    fields = text.split()
    return float(fields[0]), float(fields[1]), float(fields[2])


def parse_cpu_times(text):
    """/proc/stat -> the aggregate `cpu` line as (busy, total) jiffies (idle and iowait are idle;
    guest time is already counted in user)."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            values = [int(v) for v in line.split()[1:]]
            values += [0] * (8 - len(values))
            user, nice, system, idle, iowait, irq, softirq, steal = values[:8]
            total = user + nice + system + idle + iowait + irq + softirq + steal
            return total - idle - iowait, total, iowait
    raise ValueError("no cpu line in /proc/stat")


def cpu_busy_percent(before, after):
    """Busy and iowait % of all CPUs between two parse_cpu_times samples."""
    busy = after[0] - before[0]
    total = after[1] - before[1]
    iowait = after[2] - before[2]
    if total <= 0:
        return 0.0, 0.0
    return round(100.0 * busy / total, 1), round(100.0 * iowait / total, 1)


def parse_meminfo(text):
    """/proc/meminfo -> memory and swap in bytes, with the percentages the findings use."""
    kb = {}
    for line in text.splitlines():
        key, _sep, rest = line.partition(":")
        fields = rest.split()
        if fields:
            try:
                kb[key.strip()] = int(fields[0])
            except ValueError:
                continue
    total = kb.get("MemTotal", 0) * 1024
    free = kb.get("MemFree", 0) * 1024
    if "MemAvailable" in kb:
        available = kb["MemAvailable"] * 1024
    else:  # kernels before 3.14
        available = free + (kb.get("Buffers", 0) + kb.get("Cached", 0)) * 1024
    swap_total = kb.get("SwapTotal", 0) * 1024
    swap_free = kb.get("SwapFree", 0) * 1024
    swap_used = max(swap_total - swap_free, 0)
    return {
        "memory": {
            "total_bytes": total,
            "available_bytes": available,
            "free_bytes": free,
            "used_bytes": max(total - available, 0),
            "buffers_bytes": kb.get("Buffers", 0) * 1024,
            "cached_bytes": kb.get("Cached", 0) * 1024,
            "available_percent": round(100.0 * available / total, 1) if total else None,
        },
        "swap": {
            "total_bytes": swap_total,
            "free_bytes": swap_free,
            "used_bytes": swap_used,
            "used_percent": round(100.0 * swap_used / swap_total, 1) if swap_total else 0.0,
        },
    }


# -- mounts and disks ----------------------------------------------------------------------------


def _unescape_mount(field):
    # /proc/mounts escapes space, tab, newline and backslash as octal
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parse_mounts(text, exclude_types=PSEUDO_FS):
    """/proc/mounts -> [{device, mount, fstype}] of real filesystems, each mount point once
    (the last mount over a point hides the earlier ones)."""
    seen = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        device, mount, fstype = _unescape_mount(fields[0]), _unescape_mount(fields[1]), fields[2]
        if fstype in exclude_types:
            seen.pop(mount, None)
            continue
        seen[mount] = {"device": device, "mount": mount, "fstype": fstype}
    return list(seen.values())


def disk_usage(st):
    """An os.statvfs result -> bytes and inodes, used % as df counts it (of what non-root may use)."""
    total = st.f_blocks * st.f_frsize
    free = st.f_bfree * st.f_frsize
    avail = st.f_bavail * st.f_frsize
    used = total - free
    usable = used + avail
    inodes = st.f_files
    inodes_free = st.f_ffree
    inodes_used = inodes - inodes_free
    return {
        "total_bytes": total,
        "used_bytes": used,
        "available_bytes": avail,
        "used_percent": round(100.0 * used / usable, 1) if usable else None,
        "inodes_total": inodes,
        "inodes_used": inodes_used,
        "inodes_free": inodes_free,
        "inodes_used_percent": round(100.0 * inodes_used / inodes, 1) if inodes else None,
    }


# Mount points that belong to container engines (their containers' root filesystems).
EXCLUDE_MOUNTS = ("/var/lib/docker/*", "/var/lib/containers/*", "/var/lib/kubelet/*", "/run/*", "/snap/*")


def read_disks(
    mounts_path=PROC + "/mounts", exclude_types=PSEUDO_FS, exclude_mounts=EXCLUDE_MOUNTS, statvfs=os.statvfs
):
    """Every real filesystem's usage, once (a filesystem mounted at several points is listed at the
    first, the others in `also_mounted_at`); directories only: bind-mounted files such as
    /etc/hosts in a container are no filesystem to watch. One that cannot be read is returned
    with its error."""
    disks = []
    by_fs = {}
    for m in parse_mounts(_read(mounts_path), exclude_types):
        if any(fnmatch.fnmatchcase(m["mount"], pattern) for pattern in exclude_mounts):
            continue
        if not os.path.isdir(m["mount"]):
            continue
        try:
            st = statvfs(m["mount"])
        except OSError as exc:
            disks.append(dict(m, available=False, error=str(exc)))
            continue
        if st.f_blocks == 0:
            continue
        key = (m["device"], getattr(st, "f_fsid", None), st.f_blocks, st.f_files)
        if key in by_fs:
            by_fs[key].setdefault("also_mounted_at", []).append(m["mount"])
            continue
        by_fs[key] = dict(m, available=True, **disk_usage(st))
        disks.append(by_fs[key])
    return disks


def parse_diskstats(text):
    """/proc/diskstats -> {device: counters} of whole block devices (no loop, ram, zram, dm- kept)."""
    out = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) < 14:
            continue
        name = f[2]
        if name.startswith(("loop", "ram", "fd", "sr")):
            continue
        v = [int(x) for x in f[3:14]]
        out[name] = {
            "reads": v[0],
            "read_bytes": v[2] * 512,
            "read_ms": v[3],
            "writes": v[4],
            "write_bytes": v[6] * 512,
            "write_ms": v[7],
            "in_progress": v[8],
            "io_ms": v[9],
        }
    return out


def diskstats_rates(before, after, seconds):
    """Per-second rates and utilisation % between two parse_diskstats samples."""
    rates = {}
    if seconds <= 0:
        return rates
    for name, a in after.items():
        b = before.get(name)
        if b is None:
            continue
        rates[name] = {
            "reads_per_s": round((a["reads"] - b["reads"]) / seconds, 1),
            "writes_per_s": round((a["writes"] - b["writes"]) / seconds, 1),
            "read_bytes_per_s": round((a["read_bytes"] - b["read_bytes"]) / seconds),
            "write_bytes_per_s": round((a["write_bytes"] - b["write_bytes"]) / seconds),
            "util_percent": round(min(100.0, (a["io_ms"] - b["io_ms"]) / (seconds * 10.0)), 1),
        }
    return rates


# -- processes -----------------------------------------------------------------------------------


def parse_pid_stat(text):
    """/proc/<pid>/stat -> {comm, state, ppid, ticks (utime+stime), rss_pages, starttime}. The
    command name may hold spaces and parentheses: it ends at the last ')'."""
    start = text.index("(")
    end = text.rindex(")")
    comm = text[start + 1 : end]
    rest = text[end + 2 :].split()
    # rest[0] is field 3 (state); utime is field 14, stime 15, starttime 22, rss 24
    return {
        "comm": comm,
        "state": rest[0],
        "ppid": int(rest[1]),
        "ticks": int(rest[11]) + int(rest[12]),
        "starttime": int(rest[19]),
        "rss_pages": int(rest[21]),
    }


def parse_cgroup_unit(text):
    """/proc/<pid>/cgroup -> the systemd unit the process runs in (the innermost .service or
    .scope of its cgroup path, in systemd's v1 hierarchy where there is one, else the unified
    one), or None (a process in no unit, e.g. started by docker exec)."""
    unified = systemd = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            unified = parts[2]
        elif "name=systemd" in parts[1].split(","):
            systemd = parts[2]
    # cgroup v1 (hybrid): systemd's own hierarchy names the unit; v2: the unified one.
    path = systemd or unified
    if not path:
        return None
    unit = None
    for element in path.strip().split("/"):
        if element.endswith((".service", ".scope")):
            unit = element
    if unit and unit.startswith("docker-") and unit.endswith(".scope"):
        return None  # the container itself, seen from the host
    return unit


def _user(uid, cache={}):  # noqa: B006 - a deliberate per-process cache
    if uid not in cache:
        try:
            cache[uid] = pwd.getpwuid(uid).pw_name
        except KeyError:
            cache[uid] = str(uid)
    return cache[uid]


def read_process(pid, proc=PROC):
    """One process's stat, user, command line and unit; None when it is gone."""
    base = os.path.join(proc, str(pid))
    try:
        stat = parse_pid_stat(_read(base + "/stat"))
        uid = os.stat(base).st_uid
        with open(base + "/cmdline", "rb") as f:
            raw = f.read()
    except (OSError, ValueError, IndexError):
        return None
    args = [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]
    try:
        unit = parse_cgroup_unit(_read(base + "/cgroup"))
    except OSError:
        unit = None
    try:  # root only (another user's process): None, not a failure
        io = parse_pid_io(_read(base + "/io"))
    except (OSError, ValueError):
        io = None
    stat.update(
        io=io,
        pid=int(pid),
        uid=uid,
        user=_user(uid),
        cmdline=" ".join(args) if args else "[{}]".format(stat["comm"]),
        unit=unit,
    )
    return stat


def parse_pid_io(text):
    """/proc/<pid>/io -> {read_bytes, write_bytes}: what the process made the block layer read
    and write (iotop's figures), not what went through its page cache."""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {"read_bytes": int(fields["read_bytes"]), "write_bytes": int(fields["write_bytes"])}


def top_io(before, after, seconds, n):
    """The top `n` processes by disk I/O (read + write bytes per second over the sample between
    two `processes` snapshots), as iotop shows them; processes without an I/O figure are left out."""
    rows = []
    if seconds <= 0:
        return rows
    for pid, p in after.items():
        b = before.get(pid)
        if b is None or b["starttime"] != p["starttime"] or not p.get("io") or not b.get("io"):
            continue
        read = (p["io"]["read_bytes"] - b["io"]["read_bytes"]) / seconds
        write = (p["io"]["write_bytes"] - b["io"]["write_bytes"]) / seconds
        if read <= 0 and write <= 0:
            continue
        rows.append(
            {
                "pid": pid,
                "user": p["user"],
                "command": p["comm"],
                "cmdline": p["cmdline"][:500],
                "unit": p["unit"],
                "read_bytes_per_s": round(read),
                "write_bytes_per_s": round(write),
            }
        )
    rows.sort(key=lambda r: r["read_bytes_per_s"] + r["write_bytes_per_s"], reverse=True)
    return rows[:n]


def pids(proc=PROC):
    return [int(name) for name in os.listdir(proc) if name.isdigit()]


def processes(proc=PROC):
    """{pid: process} of every process that can be read now."""
    out = {}
    for pid in pids(proc):
        p = read_process(pid, proc)
        if p is not None:
            out[pid] = p
    return out


def top_processes(before, after, seconds, clock_ticks, page_size, mem_total, n):
    """The top `n` processes by CPU (over the sample between the two `processes` snapshots) and
    by memory (RSS). cpu_percent is of one CPU, as top shows it."""
    rows = []
    for pid, p in after.items():
        b = before.get(pid)
        cpu = None
        if b is not None and b["starttime"] == p["starttime"] and seconds > 0:
            cpu = round(100.0 * (p["ticks"] - b["ticks"]) / (clock_ticks * seconds), 1)
        rss = p["rss_pages"] * page_size
        rows.append(
            {
                "pid": pid,
                "user": p["user"],
                "command": p["comm"],
                "cmdline": p["cmdline"][:500],
                "unit": p["unit"],
                "cpu_percent": cpu if cpu is not None else 0.0,
                "rss_bytes": rss,
                "memory_percent": round(100.0 * rss / mem_total, 1) if mem_total else None,
            }
        )
    by_cpu = sorted(rows, key=lambda r: (r["cpu_percent"], r["rss_bytes"]), reverse=True)[:n]
    by_mem = sorted(rows, key=lambda r: r["rss_bytes"], reverse=True)[:n]
    return by_cpu, by_mem


# -- sockets -------------------------------------------------------------------------------------

TCP_LISTEN = "0A"


def _hex_address(text, family):
    addr_hex, port_hex = text.split(":")
    port = int(port_hex, 16)
    raw = bytes.fromhex(addr_hex)
    if family == "ipv4":
        address = socket.inet_ntop(socket.AF_INET, struct.pack("<I", struct.unpack(">I", raw)[0]))
    else:
        words = struct.unpack(">4I", raw)
        address = socket.inet_ntop(socket.AF_INET6, struct.pack("<4I", *words))
    return address, port


def parse_net_tcp(text, family="ipv4", states=(TCP_LISTEN,)):
    """/proc/net/tcp or tcp6 -> [{address, port, family, inode}] of the sockets in `states`
    (listening by default). The kernel writes each 32-bit word of the address in host order."""
    out = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 10 or f[3] not in states:
            continue
        try:
            address, port = _hex_address(f[1], family)
        except (ValueError, struct.error):
            continue
        out.append({"address": address, "port": port, "family": family, "inode": int(f[9])})
    return out


def read_listeners(proc=PROC):
    """Every listening TCP socket of this network namespace."""
    out = []
    for name, family in (("tcp", "ipv4"), ("tcp6", "ipv6")):
        try:
            out += parse_net_tcp(_read(os.path.join(proc, "net", name)), family)
        except OSError:
            continue
    return out


def socket_inode(link):
    """A /proc/<pid>/fd link target -> the socket's inode, or None (socket:[12345])."""
    if link.startswith("socket:[") and link.endswith("]"):
        try:
            return int(link[8:-1])
        except ValueError:
            return None
    return None


def socket_owners(inodes, proc=PROC):
    """{inode: [pid, ...]} for the given socket inodes, from every process's open descriptors."""
    wanted = set(inodes)
    owners = {}
    if not wanted:
        return owners
    for pid in pids(proc):
        fd_dir = os.path.join(proc, str(pid), "fd")
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                inode = socket_inode(os.readlink(os.path.join(fd_dir, fd)))
            except OSError:
                continue
            if inode in wanted:
                owners.setdefault(inode, [])
                if pid not in owners[inode]:
                    owners[inode].append(pid)
    return owners
