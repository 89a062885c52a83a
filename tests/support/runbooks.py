"""What the runbook tests share: waiting for the stack to be healthy again, and the proof that a
runbook, once the fault is gone, changes nothing (a second run, and a --check run)."""

from __future__ import annotations

import time

from audit_devtools import lab as lablib


def wait_healthy(timeout: float = 120) -> dict:
    """Wait until the API, through nginx, reports every component healthy; return its answer."""
    deadline = time.monotonic() + timeout
    last: dict | str = "no answer"
    while time.monotonic() < deadline:
        try:
            r = lablib.lb_request("GET", "/api/v1/metrics/health", timeout=10)
            last = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
            if r.status_code == 200 and isinstance(last, dict) and last.get("status") == "healthy":
                return last
        except Exception as exc:  # noqa: BLE001 - anything short of healthy is "not yet"
            last = repr(exc)
        time.sleep(1)
    raise AssertionError(f"the stack is not healthy after {timeout:.0f} s: {last}")


def assert_changes_nothing(lab: lablib.Lab, runbook: str, **kwargs) -> lablib.RunbookResult:
    """Run the runbook again, then with --check: neither changes anything; return the second run."""
    again = lab.runbook(runbook, **kwargs)
    assert again.ok and again.changed == 0, again.describe()
    checked = lab.runbook(runbook, check=True, **kwargs)
    assert checked.ok and checked.changed == 0, checked.describe()
    assert checked.report and checked.report["check_mode"] is True, checked.describe()
    return again


def critical(run: lablib.RunbookResult, **match) -> list[dict]:
    return run.findings(severity="critical", **match)


def api_processes(lab: lablib.Lab, host: str) -> int:
    """uvicorn's worker processes on the host (multiprocessing's spawn), one per API_WORKERS."""
    return int(lab.exec(host, "pgrep -fc '[m]ultiprocessing.spawn'", check=False).stdout.strip() or 0)


def wait_active(lab: lablib.Lab, host: str, unit: str, timeout: float = 60) -> None:
    """Wait until systemd says the unit is active (a restart may pass through activating)."""
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = lab.exec(host, f"systemctl is-active {unit}", check=False).stdout.strip()
        if state == "active":
            return
        time.sleep(1)
    raise AssertionError(f"{unit} on {host} is {state or 'unknown'} after {timeout:.0f} s, not active")


def wait_for(predicate, timeout: float, what: str):
    """Poll predicate until it returns something true, and return that; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def redis_cli(lab) -> str:
    """redis-cli on mq1 as the admin user, over TLS (the password from the lab's secrets file)."""
    import yaml

    password = yaml.safe_load(lablib.LAB_SECRETS.read_text())["audit_redis_admin_password"]
    return (
        f"REDISCLI_AUTH={password} redis-cli --no-auth-warning --user audit-admin -h 127.0.0.1"
        " --tls --cacert /etc/redis/tls/ca.crt"
    )
