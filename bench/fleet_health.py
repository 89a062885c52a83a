"""Fleet health on 20 hosts against `ansible all -m ping` on the same hosts, as a ratio in one run.

Creates a lab of its own (AUDIT_LAB=fleet, ports moved by 300, AUDIT_LAB_HOSTS=20: the lab
inventory grown with bare "spare" hosts, inventories/lab/fleet.py) with playbooks/lab.yml, runs
each command once untimed (warm-up, and a count of the `docker exec` calls each makes: one per host
for both), then times them alternately, `--rounds` times each, and prints each time and the ratio
of the medians. Destroys the lab at the end unless --keep.
Target: fleet_health / ping <= 2.0.

Not part of `make bench` (a 20-container lab, about 4 minutes): `make bench-fleet`, or
`bench/run_all.py --fleet`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import Figure, header

ROOT = Path(__file__).resolve().parents[1]
RUNBOOK = "playbooks/runbooks/fleet_health.yml"
TARGET_RATIO = 2.0
# Each systemd container holds about 6 inotify instances of root (systemd itself 5, logind...);
# fs.inotify.max_user_instances is per user over the whole machine (128 on Debian), so a
# 20-host lab beside another lab runs out and some containers exit at boot (status 255).
INOTIFY_PER_HOST = 6
INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_instances")


def tool(name: str) -> str:
    """An Ansible command of the running interpreter's environment (the project's venv)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: run with the project's venv (.venv/bin/python)")
    return found


def lab_env(lab: str, hosts: int, port_offset: int, report_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AUDIT_LAB=lab,
        AUDIT_LAB_HOSTS=str(hosts),
        AUDIT_LAB_PORT_OFFSET=str(port_offset),
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        # The runbook's reports go to a directory of this run, not to the repository's reports/.
        AUDITLOG_REPORT_DIR=report_dir,
    )
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def inotify_in_use(uid: int = 0) -> int | None:
    """inotify instances held by processes of `uid` (None when /proc cannot tell)."""
    count = 0
    try:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                if os.stat(f"/proc/{pid}").st_uid != uid:
                    continue
                fds = os.listdir(f"/proc/{pid}/fd")
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:inotify":
                        count += 1
                except OSError:
                    continue
    except OSError:
        return None
    return count


def preflight(hosts: int) -> None:
    """Stop early, and say what to do, when the machine cannot boot that many systemd hosts."""
    try:
        limit = int(INOTIFY_LIMIT.read_text())
    except (OSError, ValueError):
        return
    used = inotify_in_use()
    if used is None:
        return
    needed = hosts * INOTIFY_PER_HOST
    print(f"  inotify instances of root: {used} in use, limit {limit}, the lab needs about {needed}")
    if used + needed > limit:
        raise RuntimeError(
            f"fs.inotify.max_user_instances ({limit}) is too low for {hosts} more systemd hosts "
            f"({used} in use): raise it, e.g. `sysctl -w fs.inotify.max_user_instances=512`"
        )


def timed(args: list[str], env: dict[str, str], check: bool = True) -> tuple[float, str]:
    """Runs a command from the repository root; returns (wall seconds, output)."""
    t0 = time.perf_counter()
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if check and proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
        raise RuntimeError(f"{shlex.join(args)} -> rc={proc.returncode}\n{tail}")
    return seconds, proc.stdout


def count_execs(args: list[str], env: dict[str, str], shim_dir: Path) -> int:
    """Runs the command once with a `docker` wrapper first in PATH; returns its `docker exec` calls
    (one is one round trip to a lab host)."""
    log = shim_dir / "calls.log"
    log.write_text("")
    real = shutil.which("docker")
    if real is None:
        raise RuntimeError("docker not found")
    shim = shim_dir / "docker"
    shim.write_text(f'#!/bin/sh\necho "$1" >> {shlex.quote(str(log))}\nexec {shlex.quote(real)} "$@"\n')
    shim.chmod(0o755)
    shim_env = dict(env, PATH=f"{shim_dir}{os.pathsep}{env['PATH']}")
    timed(args, shim_env)
    return sum(1 for line in log.read_text().splitlines() if line == "exec")


def loadavg() -> str:
    return "/".join(f"{v:.2f}" for v in os.getloadavg())


def run(
    lab: str = "fleet", hosts: int = 20, port_offset: int = 300, rounds: int = 3, keep: bool = False
) -> list[Figure]:
    header(f"fleet health: {hosts} hosts, fleet_health.yml against ping")
    preflight(hosts)
    report_dir = tempfile.mkdtemp(prefix="bench-fleet-")
    env = lab_env(lab, hosts, port_offset, report_dir)
    playbook = tool("ansible-playbook")
    ping = [tool("ansible"), "all", "-m", "ping"]
    fleet = [playbook, RUNBOOK]
    lab_cmd = [playbook, "playbooks/lab.yml"]
    print(f"  lab: AUDIT_LAB={lab} AUDIT_LAB_HOSTS={hosts} AUDIT_LAB_PORT_OFFSET={port_offset}", flush=True)
    figures: list[Figure] = []
    try:
        seconds, _ = timed(lab_cmd, env)
        print(f"  lab up: {seconds:.1f} s ({shlex.join(lab_cmd[1:])})", flush=True)
        with tempfile.TemporaryDirectory(prefix="bench-fleet-shim-") as shim:
            execs_ping = count_execs(ping, env, Path(shim))
            execs_fleet = count_execs(fleet, env, Path(shim))
        print(f"  docker exec calls (warm-up run): ping {execs_ping}, fleet_health {execs_fleet}", flush=True)
        times: dict[str, list[float]] = {"ping": [], "fleet_health": []}
        for n in range(1, rounds + 1):
            for name, cmd in (("ping", ping), ("fleet_health", fleet)):
                before = loadavg()
                seconds, _ = timed(cmd, env)
                times[name].append(seconds)
                print(f"  round {n} {name:<13} {seconds:6.2f} s   (load before {before})", flush=True)
        ping_median = statistics.median(times["ping"])
        fleet_median = statistics.median(times["fleet_health"])
        ratio = fleet_median / ping_median
        print(f"  load average after: {loadavg()}")
        print(f"  commands: {shlex.join(ping[1:])}  |  ansible-playbook {RUNBOOK}")
        figures = [
            Figure(f"ansible all -m ping, {hosts} hosts, median of {rounds}", ping_median, "s"),
            Figure(f"fleet_health.yml, {hosts} hosts, median of {rounds}", fleet_median, "s"),
            Figure("fleet_health / ping (medians)", ratio, "x", f"<= {TARGET_RATIO}", ratio <= TARGET_RATIO),
            Figure(
                "docker exec per host, fleet_health", execs_fleet / hosts, "calls", "1", execs_fleet == hosts
            ),
        ]
        for f in figures:
            print(f.line())
    finally:
        if keep:
            print(
                f"  lab kept (--keep): AUDIT_LAB={lab} AUDIT_LAB_HOSTS={hosts} {shlex.join(lab_cmd[1:])} "
                "-e lab_state=absent removes it"
            )
        else:
            seconds, _ = timed([*lab_cmd, "-e", "lab_state=absent"], env, check=False)
            print(f"  lab destroyed: {seconds:.1f} s", flush=True)
        shutil.rmtree(report_dir, ignore_errors=True)
    return figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, default=20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--lab", default="fleet", help="the lab's name (containers audit-<lab>-<host>)")
    p.add_argument("--port-offset", type=int, default=300)
    p.add_argument("--keep", action="store_true", help="leave the lab running at the end")
    a = p.parse_args()
    try:
        run(a.lab, a.hosts, a.port_offset, a.rounds, a.keep)
    except RuntimeError as exc:
        print(f"fleet_health: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
