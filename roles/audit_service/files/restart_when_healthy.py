#!/usr/bin/python3
"""Restart one unit of the audit service and wait until it answers healthy again.

Run by Ansible's script module, one host at a time (throttle: 1), so that the hosts behind nginx
restart in turn and each is serving again before the next one stops. Standard library only.

    restart_when_healthy.py <unit> <health URL> <timeout seconds>

The URL must answer 200 with, for JSON bodies, a "status" of healthy or degraded. Exits 0 once it
does, 1 (with the last answer) when the timeout passes.
"""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request


def healthy(url: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = r.read().decode("utf-8", "replace")
    except (urllib.error.URLError, OSError) as exc:
        return False, str(exc)
    try:
        status = json.loads(body).get("status", "healthy")
    except (ValueError, AttributeError):
        status = "healthy"  # not JSON (a metrics page): answering 200 is the sign of life
    return status in ("healthy", "degraded"), body[:300]


def main() -> int:
    unit, url, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    subprocess.run(["systemctl", "restart", unit], check=True)
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout:
        ok, last = healthy(url)
        if ok:
            print(f"{unit} healthy {time.monotonic() - started:.1f} s after its restart")
            return 0
        time.sleep(0.5)
    print(f"{unit} not healthy {timeout:.0f} s after its restart: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
