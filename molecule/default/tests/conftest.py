"""testinfra fixtures for the lab: hosts by inventory name, and the controller's view of it.

molecule runs these tests once per lab host (the `host` fixture); tests that look at the stack
as a whole use `lab_host(name)` and the lab's loopback-published ports (audit_devtools.lab).
"""

import json
import os

import pytest
import testinfra
from audit_devtools import lab as lablib
from testinfra.utils import ansible_runner

# testinfra reaches each host by the ansible_host of `ansible-inventory --list`, untemplated:
# put the lab's id into the container names (hosts.yml: audit-{{ lab_id }}-<host>) before any
# host is made (testinfra makes them while collecting the tests, after this file is read).
_read_inventory = ansible_runner.get_ansible_inventory


def _inventory_with_lab_id(*args, **kwargs):
    inventory = _read_inventory(*args, **kwargs)
    for hostvars in inventory.get("_meta", {}).get("hostvars", {}).values():
        if isinstance(hostvars.get("ansible_host"), str):
            hostvars["ansible_host"] = lablib.with_lab_id(hostvars["ansible_host"])
    return inventory


ansible_runner.get_ansible_inventory = _inventory_with_lab_id


@pytest.fixture(scope="session")
def lab_host(request):
    inventory = request.config.option.ansible_inventory or os.environ.get("MOLECULE_INVENTORY_FILE")
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = testinfra.get_host(f"ansible://{name}", ansible_inventory=inventory)
        return cache[name]

    return get


@pytest.fixture(scope="session")
def audit_cli(lab_host):
    """Runs `audit-service ...` on an app host with the deployed environment; returns its JSON."""

    def run(host, *args):
        command = (
            "set -a; . /etc/audit-service/audit-service.env; set +a; "
            "/opt/audit-service/bin/audit-service " + " ".join(args)
        )
        return json.loads(lab_host(host).check_output(command))

    return run
