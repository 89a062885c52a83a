#!/usr/bin/python3
"""Restart one unit of the audit service and wait until it answers healthy again.

Run by Ansible's script module, one host at a time (throttle: 1), so that the hosts behind nginx
restart in turn and each is serving again before the next one stops. Standard library only.

    restart_when_healthy.py <unit> <health URL> <timeout seconds> [<settle seconds>]

The URL must answer 200 with, for JSON bodies, a "status" of healthy or degraded. Once it does,
waits <settle seconds> more (nginx shuns a host that refused it for a while: the next host must
not stop before nginx sends requests here again) and exits 0; exits 1 (with the last answer) when
the timeout passes.
"""

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request


def healthy(url: str) -> tuple[bool, str]:
    if not url.startswith(("http://", "https://")):
        raise SystemExit(f"not an http(s) URL: {url}")
    try:
        with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (http(s) only, checked above)
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
    settle = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    subprocess.run(["systemctl", "restart", unit], check=True)
    started = time.monotonic()
    last = ""
    while time.monotonic() - started < timeout:
        ok, last = healthy(url)
        if ok:
            print(
                f"{unit} healthy {time.monotonic() - started:.1f} s after its restart, settles {settle:.0f} s"
            )
            time.sleep(settle)
            return 0
        time.sleep(0.5)
    print(f"{unit} not healthy {timeout:.0f} s after its restart: {last}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
