"""testinfra fixtures for the lab: hosts by inventory name, and the controller's view of it.

molecule runs these tests once per lab host (the `host` fixture); tests that look at the stack
as a whole use `lab_host(name)` and the lab's loopback-published ports (audit_devtools.lab).
"""

import json
import os

import pytest
import testinfra


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
