"""The lab's per-task cost, before and after: `ansible all -m ping` and a no-change converge of
playbooks/site.yml, for this checkout and for an earlier revision, in one sitting on one lab.

Each round converges the lab with one revision (untimed: it may change things, e.g. the service's
wheel), then times `ansible all -m ping` and a second converge, which must change nothing (its
recap is checked). Rounds alternate between the revisions, so both see the same machine. The
earlier revision runs from a git worktree under .cache/bench/, with this checkout's venv and the
same lab secrets and CA (the lab's files are linked into it), on the user's lab (`lab`: the
container names of every revision). Prints each run and the ratio of the medians (before / after;
the issue's target is 2.0 or more for the no-change converge).

  .venv/bin/python bench/lab_speed.py --before a05b87c [--rounds 2] [--keep]

Not part of `make bench` (two converges per round and revision: about 20 minutes).
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchlib import Figure, header

ROOT = Path(__file__).resolve().parents[1]
LAB = "lab"  # the only container names an earlier revision knows
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def env_for(checkout: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        AUDIT_LAB=LAB,
        AUDIT_LAB_PORT_OFFSET="0",
        ANSIBLE_CONFIG=str(checkout / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        PATH=f"{ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    return env


def run(checkout: Path, argv: list[str], what: str) -> tuple[float, float, str]:
    """(wall seconds, controller CPU seconds of the run's process tree, output)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run(
        argv, cwd=checkout, env=env_for(checkout), capture_output=True, text=True, timeout=3600
    )
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(
            f"{what} failed in {checkout} (rc {proc.returncode}):\n{proc.stdout[-4000:]}{proc.stderr}"
        )
    return wall, cpu, proc.stdout


def worktree(rev: str) -> Path:
    """A checkout of rev beside this one, sharing its venv, wheel tools and lab secrets."""
    commit = subprocess.run(
        ["git", "rev-parse", "--short", rev], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout.strip()
    path = ROOT / ".cache" / "bench" / f"lab-speed-{commit}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), commit], cwd=ROOT, check=True)
    links = {".venv": ROOT / ".venv", ".cache/tools": ROOT / ".cache" / "tools"}
    for name, target in links.items():
        link = path / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists() and target.exists():
            link.symlink_to(target)
    # The lab's secrets and CA are copied, not linked: common refuses a secrets file that is not a
    # regular file.
    for kind in ("secrets.yml", "pki"):
        source, copy = ROOT / "inventories" / f"{LAB}.{kind}", path / "inventories" / f"{LAB}.{kind}"
        if source.is_dir() and not copy.exists():
            shutil.copytree(source, copy, symlinks=True)
        elif source.is_file() and not copy.exists():
            shutil.copy2(source, copy)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--before", required=True, help="the earlier revision (a commit or tag)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    args = parser.parse_args()

    header("Lab speed: ping and a no-change converge, before and after")
    checkouts = {"before": worktree(args.before), "after": ROOT}
    ansible = str(ROOT / ".venv" / "bin")
    run(ROOT, [f"{ansible}/ansible-playbook", "playbooks/lab.yml"], "creating the lab")
    times: dict[str, dict[str, list[float]]] = {k: {"ping": [], "converge": [], "cpu": []} for k in checkouts}
    try:
        for r in range(1, args.rounds + 1):
            for name, checkout in checkouts.items():
                site = [f"{ansible}/ansible-playbook", "playbooks/site.yml"]
                run(checkout, site, f"{name}: converge")
                ping, _, _ = run(checkout, [f"{ansible}/ansible", "all", "-m", "ping"], f"{name}: ping")
                wall, cpu, out = run(checkout, site, f"{name}: no-change converge")
                changed = sum(int(m[3]) for m in RECAP.finditer(out))
                host_tasks = sum(int(m[2]) for m in RECAP.finditer(out))
                if changed:
                    raise SystemExit(
                        f"{name}: the second converge changed {changed} thing(s): not a no-change run"
                    )
                times[name]["ping"].append(ping)
                times[name]["converge"].append(wall)
                times[name]["cpu"].append(cpu)
                print(
                    f"round {r} {name:6} ping {ping:6.1f} s   no-change converge {wall:6.1f} s,"
                    f" controller CPU {cpu:6.1f} s, {host_tasks} host-tasks ok"
                )
                sys.stdout.flush()
    finally:
        if not args.keep:
            run(
                ROOT,
                [f"{ansible}/ansible-playbook", "playbooks/lab.yml", "-e", "lab_state=absent"],
                "removing the lab",
            )

    labels = {"ping": "ansible all -m ping", "converge": "no-change converge", "cpu": "its controller CPU"}
    for what, label in labels.items():
        before, after = (statistics.median(times[k][what]) for k in ("before", "after"))
        print(
            Figure(f"{label}: median before {before:.1f} s, after {after:.1f} s", before / after, "x").line()
        )
    ratio = statistics.median(times["before"]["converge"]) / statistics.median(times["after"]["converge"])
    print(Figure("no-change converge, before / after", ratio, "x", ">= 2.0", ratio >= 2.0).line())


if __name__ == "__main__":
    main()
