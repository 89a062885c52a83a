"""Rolling changes of the service on the converged lab.

A converge that changes the service restarts the API and worker hosts one at a time, each
healthy again before the next (audit_service tasks_from restart), while nginx passes requests on
to the host that answers: ingest through nginx never fails. A release installs beside the
running one and is switched to only once it installed: a broken one leaves the running version.
"""

import json
import shutil
import time

import pytest
from audit_devtools import lab as lablib
from support.ingest import Sender, tenant_key

pytestmark = pytest.mark.lab

APP_HOSTS = ["app1", "app2"]
WHEELHOUSE = lablib.ROOT / ".cache" / "wheelhouse"


def invocation(lab, host: str, unit: str) -> str:
    """systemd's id of the unit's current run: a restart gives a new one."""
    return lab.exec(host, ["systemctl", "show", "-p", "InvocationID", "--value", unit]).stdout.strip()


def unit_times(lab, host: str, unit: str) -> dict[str, int]:
    """When the unit last stopped and last became active (microseconds, monotonic)."""
    names = ["InactiveEnterTimestampMonotonic", "ActiveEnterTimestampMonotonic"]
    out = lab.exec(host, ["systemctl", "show", "-p", ",".join(names), unit]).stdout
    return {k: int(v) for k, v in (line.split("=", 1) for line in out.split())}


def stored(lab, tenant_id: str) -> list[str]:
    sql = f"SELECT event_id FROM audit_logs WHERE tenant_id = '{tenant_id}'"  # noqa: S608 (our UUID)
    return lab.exec("db1", f'runuser -u postgres -- psql -qAt -d audit_logs -c "{sql}"').stdout.split()


def test_a_service_change_restarts_the_app_hosts_in_turn_and_no_request_fails(stack):
    lab = lablib.Lab()
    tenant_id, key = tenant_key(lab)
    before = {(h, u): invocation(lab, h, u) for h in APP_HOSTS for u in ("audit-api", "audit-worker")}
    sender = Sender(key)
    sender.start()
    try:
        deadline = time.monotonic() + 30
        while len(sender.acked) < 20 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert sender.acked, f"ingest did not start: {sender.failures[:5]}"
        # A changed setting of the service (CACHE_TTL in its environment): every unit restarts.
        run = lab.playbook(
            "playbooks/site.yml", limit=",".join(APP_HOSTS), extra_vars={"audit_cache_ttl": 31}
        )
        assert run.ok, run.describe()
        acked_during = len(sender.acked)
    finally:
        sender.stopped.set()
        sender.join(60)
    try:
        after = {(h, u): invocation(lab, h, u) for h in APP_HOSTS for u in ("audit-api", "audit-worker")}
        assert all(after[k] != before[k] for k in before), "a unit was not restarted"
        # One host at a time: the second API went down only after the first was up again (the
        # containers share the kernel's monotonic clock).
        stamps = {h: unit_times(lab, h, "audit-api") for h in APP_HOSTS}
        first, second = sorted(APP_HOSTS, key=lambda h: stamps[h]["InactiveEnterTimestampMonotonic"])
        assert (
            stamps[second]["InactiveEnterTimestampMonotonic"] > stamps[first]["ActiveEnterTimestampMonotonic"]
        ), stamps
        assert sender.failures == [], sender.failures[:10]
        assert acked_during > 100, "too little ingest during the converge to show anything"
        # Every acknowledged event is stored, once.
        deadline = time.monotonic() + 180
        while not set(sender.acked) <= set(ids := stored(lab, tenant_id)) and time.monotonic() < deadline:
            time.sleep(1)
        assert set(sender.acked) <= set(ids), (
            f"{len(set(sender.acked) - set(ids))} acknowledged events not stored"
        )
        assert len(ids) == len(set(ids)), "an event was stored twice"
    finally:
        healed = lab.playbook("playbooks/site.yml", limit=",".join(APP_HOSTS))
        assert healed.ok, healed.describe()


def test_a_release_that_does_not_install_leaves_the_running_one(stack, tmp_path):
    lab = lablib.Lab()
    current = {h: lab.exec(h, "readlink /opt/audit-service/current").stdout.strip() for h in APP_HOSTS}
    running = {h: invocation(lab, h, "audit-api") for h in APP_HOSTS}
    broken = tmp_path / "wheelhouse"
    shutil.copytree(WHEELHOUSE, broken)
    for pydir in broken.glob("py3*"):  # a newer "release" that is no wheel at all
        (pydir / "audit_service-99.0.0-py3-none-any.whl").write_bytes(b"not a zip file")
    run = lab.playbook(
        "playbooks/site.yml", limit=",".join(APP_HOSTS), extra_vars={"audit_service_wheelhouse": str(broken)}
    )
    assert not run.ok
    assert "did not install" in run.output and "the running version is unchanged" in run.output, (
        run.describe()
    )
    for host in APP_HOSTS:
        assert lab.exec(host, "readlink /opt/audit-service/current").stdout.strip() == current[host]
        assert invocation(lab, host, "audit-api") == running[host], f"{host}: audit-api was restarted"
        releases = lab.exec(host, "ls /opt/audit-service/releases").stdout.split()
        assert current[host].removeprefix("releases/") in releases and len(releases) <= 3, releases
        health = lab.exec(host, "curl -fsS http://$(hostname -i):8000/api/v1/metrics/health").stdout
        assert json.loads(health)["status"] == "healthy", health
    # With the good wheelhouse again, nothing is left to change.
    again = lab.playbook("playbooks/site.yml", limit=",".join(APP_HOSTS))
    assert again.ok and again.changed == 0, again.describe()
