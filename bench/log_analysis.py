"""auditlog.ops.log_analysis over a generated 1 GB log of the service's JSON lines on a lab host.

Needs the lab up (`ansible-playbook playbooks/lab.yml`; the stack need not be converged: the
module reads a file). Writes a log of realistic lines on the host (per request the API's
"Incoming request" and "Request completed", one worker "batch stored" line in ten requests, some
warnings, some 4xx and 5xx and slow requests), each line in time order over one day, then runs
the module through Ansible twice:

- the whole day: every line read, the figure is lines/s and MB/s as the module reports them
  (its own `lines` and `seconds`, so Ansible's start-up is not counted);
- the last 15 minutes: the module enters the file by bisection, so this takes a small part of the
  whole read; the figure is its time.

Target: >= 200,000 lines/s over the whole file (a 1 GB log in about 20 s). The file is removed at
the end unless --keep.

  .venv/bin/python bench/log_analysis.py [--host app1] [--size-mb 1024] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchlib import Figure, header

ROOT = Path(__file__).resolve().parents[1]
TARGET_LINES_PER_S = 200_000
PATH = "/var/tmp/bench-log-analysis.log"

# Runs on the lab host: writes --size-mb of lines, time-ordered over 2026-12-01, and prints the count.
GENERATOR = r"""
import json, random, sys
size = int(sys.argv[1]) * 2**20
rng = random.Random(1)
paths = ["/api/v1/audit/logs", "/api/v1/audit/logs/batch", "/api/v1/audit/logs/{}", "/api/v1/metrics/health"]
tenants = ["7d1f0e36-2f0a-4c8e-9c59-3b8f1b1f2a%02d" % i for i in range(20)]
dumps = json.JSONEncoder(separators=(",", ":")).encode
written = lines = 0
i = 0
per_request_ms = 86400000 / (size / 560)  # two lines of about 280 bytes a request, over one day
with open(sys.argv[2], "w") as out:
    buf = []
    while written < size:
        ms = int(i * per_request_ms)
        hms = (ms // 3600000, ms // 60000 % 60, ms // 1000 % 60, ms % 1000)
        ts = "2026-12-01T%02d:%02d:%02d.%03d+00:00" % hms
        cid = "%032x" % rng.getrandbits(128)
        path = rng.choice(paths).format(cid)
        method = "POST" if "logs" in path and "{" not in path else "GET"
        r = rng.random()
        status = 500 if r < 0.002 else 422 if r < 0.02 else 202 if method == "POST" else 200
        duration = round(rng.lognormvariate(1.5, 0.8) * (200 if r > 0.999 else 1), 2)
        # The fields in the order the service writes them (service/audit_service/jsonlog.py).
        base = {"timestamp": ts, "level": "INFO", "service": "api", "host": "app1", "process": 812,
                "logger": "audit_service.api"}
        buf.append(dumps({**base, "message": "Incoming request", "correlation_id": cid, "method": method,
                          "path": path}))
        buf.append(dumps({**base, "message": "Request completed", "correlation_id": cid, "method": method,
                          "path": path, "status": status, "duration_ms": duration,
                          "tenant_id": rng.choice(tenants)}))
        if i % 10 == 0:
            buf.append(dumps({"timestamp": ts, "level": "INFO", "service": "worker", "host": "app1",
                              "process": 813, "logger": "audit_service.worker", "message": "batch stored",
                              "stored": 10, "duplicates": 0, "messages": 10, "duration_ms": 3.1,
                              "correlation_ids": ["%032x" % rng.getrandbits(128) for _ in range(10)]}))
        if r < 0.001:
            buf.append(dumps({"timestamp": ts, "level": "WARNING", "service": "worker", "host": "app1",
                              "message": "store failed; messages will be redelivered",
                              "error": "connection refused (%d)" % rng.randrange(100)}))
        i += 1
        if len(buf) > 5000:
            text = "\n".join(buf) + "\n"
            out.write(text)
            written += len(text)
            lines += len(buf)
            buf = []
    if buf:
        text = "\n".join(buf) + "\n"
        out.write(text)
        lines += len(buf)
print(lines)
"""


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=True, **kwargs)


def analyse(host: str, since: str, until: str) -> dict:
    """The module's result on the host, through Ansible (its JSON callback)."""
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="json",
               ANSIBLE_LOAD_CALLBACK_PLUGINS="1", ANSIBLE_NOCOLOR="1")  # fmt: skip
    ansible = shutil.which("ansible", path=str(Path(sys.executable).parent)) or "ansible"
    args = json.dumps({"files": [PATH], "components": [], "system": False, "since": since, "until": until})
    done = run(
        [ansible, "-i", "inventories/lab", host, "-m", "auditlog.ops.log_analysis", "-a", args],
        cwd=ROOT,
        env=env,
    )
    result = json.loads(done.stdout)["plays"][0]["tasks"][0]["hosts"][host]
    if result.get("failed"):
        raise RuntimeError(result.get("msg"))
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="app1", help="the lab host (default app1)")
    parser.add_argument("--size-mb", type=int, default=1024, help="the log's size (default 1024)")
    parser.add_argument("--keep", action="store_true", help="leave the log on the host")
    args = parser.parse_args()
    lab_id = os.environ.get("AUDIT_LAB", "lab")
    container = f"audit-{lab_id}-{args.host}"
    header(f"log_analysis over a {args.size_mb} MB log on {container}")
    started = time.monotonic()
    lines = int(
        run(
            ["docker", "exec", "-i", container, "python3", "-", str(args.size_mb), PATH], input=GENERATOR
        ).stdout
    )
    size = int(run(["docker", "exec", container, "stat", "-c", "%s", PATH]).stdout)
    print(f"generated {lines:,} lines, {size / 2**20:,.0f} MB in {time.monotonic() - started:.0f} s")
    try:
        run(
            ["docker", "exec", container, "sh", "-c", f"cat {PATH} > /dev/null"]
        )  # in the page cache, as a live log is
        whole = analyse(args.host, "2026-11-30 23:00:00", "2026-12-02 01:00:00")
        rate = whole["lines"] / whole["seconds"]
        figure = Figure(
            "whole day: lines/s", rate, "lines/s", f">= {TARGET_LINES_PER_S:,}", rate >= TARGET_LINES_PER_S
        )
        print(figure.line())
        mb_s = size / 2**20 / whole["seconds"]
        print(f"  {whole['lines']:,} lines in {whole['seconds']:.1f} s = {mb_s:.0f} MB/s")
        print(
            f"  {whole['slow_count']} slow, {len(whole['requests'])} request patterns, "
            f"{len(whole['errors'])} error patterns, {len(whole['responses'])} error answers"
        )
        if whole["lines"] != lines:
            print(f"  MISMATCH: the module read {whole['lines']} lines of {lines}")
        tail = analyse(args.host, "2026-12-01 23:45:00", "2026-12-02 00:00:00")
        print(f"last 15 min: {tail['lines']:,} lines in {tail['seconds']:.2f} s (bisection into the file)")
    finally:
        if not args.keep:
            run(["docker", "exec", container, "rm", "-f", PATH])
    return 0


if __name__ == "__main__":
    sys.exit(main())
