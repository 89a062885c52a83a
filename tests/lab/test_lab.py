"""The lab itself: systemd hosts of Debian 12 and 13 that find each other, made idempotently."""

import pytest
import yaml
from audit_devtools import lab as lablib

pytestmark = pytest.mark.lab


def os_release(lab, host: str) -> dict[str, str]:
    text = lab.exec(host, ["cat", "/etc/os-release"]).stdout
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def test_every_host_runs_systemd(lab):
    for host in lab.hosts:
        assert lab.exec(host, ["ps", "-o", "comm=", "-p", "1"]).stdout.strip() == "systemd", host
        state = lab.exec(host, ["systemctl", "is-system-running"], check=False).stdout.strip()
        failed = lab.exec(host, ["systemctl", "--failed", "--no-legend", "--plain"], check=False).stdout
        assert state == "running", f"{host} is {state}; failed units:\n{failed}"


def test_a_unit_can_be_started(lab):
    host = lab.hosts[0]
    unit = "/run/systemd/system/lab-probe.service"
    lab.exec(
        host,
        f"printf '[Service]\\nExecStart=/bin/sleep infinity\\nDynamicUser=yes\\n' > {unit}"
        " && systemctl daemon-reload && systemctl start lab-probe",
    )
    try:
        assert lab.exec(host, ["systemctl", "is-active", "lab-probe"]).stdout.strip() == "active"
    finally:
        lab.exec(host, f"systemctl stop lab-probe; rm -f {unit}; systemctl daemon-reload", check=False)


def test_hosts_resolve_and_reach_each_other_by_name(lab):
    for host in lab.hosts:
        for other in lab.hosts:
            resolved = lab.exec(host, ["getent", "hosts", other], check=False)
            assert resolved.returncode == 0 and resolved.stdout.split(), f"{host} cannot resolve {other}"
        others = [o for o in lab.hosts if o != host]
        # One packet to each other lab container: traffic stays on the lab network.
        for other in others:
            lab.exec(host, ["ping", "-c", "1", "-W", "2", other])


def test_lab_has_debian_12_and_13_as_the_inventory_says(lab):
    codenames = {}
    for host in lab.hosts:
        release = os_release(lab, host)
        codenames[host] = release["VERSION_CODENAME"]
        assert lab.hostvars[host]["lab_image"].endswith(":" + codenames[host]), (host, release)
    assert "trixie" in codenames.values(), codenames
    assert "bookworm" in codenames.values(), codenames


def test_second_lab_run_changes_nothing(lab):
    again = lablib.create(lab.inventory)
    assert again.ok, again.describe()
    assert again.failed == 0, again.describe()
    assert again.changed == 0, f"changed={again.changed} {again.stats}\n{again.describe()}"
    assert set(lab.hosts) <= set(again.stats), again.stats


@pytest.mark.parametrize(
    "hostvars, extra, message",
    [
        ({"ansible_host": "audit-lab-x1"}, {}, "lab_image=(unset)"),
        (
            {"ansible_host": "audit-lab-x1", "lab_image": "local/debian-systemd:sid"},
            {},
            "lab_image=local/debian-systemd:sid",  # not a supported suite
        ),
        (
            {"ansible_host": "audit-lab-x1", "lab_image": "local/debian-systemd:trixie"},
            {"lab_state": "gone"},
            "lab_state must be 'present' or 'absent', not 'gone'",
        ),
    ],
)
def test_bad_lab_input_fails_naming_it(tmp_path, hostvars, extra, message):
    # Preflight only: fails before any engine, image or container is touched (no lab fixture).
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump({"all": {"hosts": {"x1": hostvars}}}))
    result = lablib.run_playbook("playbooks/lab.yml", inventory=tmp_path, extra_vars=extra, timeout=300)
    assert not result.ok, result.describe()
    output = " ".join(result.output.split())
    assert message in output, result.describe()
    if "lab_state" not in extra:
        assert "lab host 'x1' needs" in output, result.describe()
