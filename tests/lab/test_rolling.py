"""Releases of the service on the converged lab: a release installs beside the running one and is
switched to only once it installed, so a broken one leaves the running version.

The rolling restart of a changed service (one app host at a time, no request through nginx
failing, every acknowledged event stored once) is proven by the high-memory runbook's test
(tests/lab/test_runbooks_common.py), whose repair is such a converge.
"""

import json
import shutil

import pytest
from audit_devtools import lab as lablib
from support import APP_HOSTS
from support.ingest import invocation

pytestmark = pytest.mark.lab

WHEELHOUSE = lablib.ROOT / ".cache" / "wheelhouse"


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
