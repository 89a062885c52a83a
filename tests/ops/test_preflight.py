"""site.yml's preflight on bad inventories: each stops the run with a message that names the bad
input, before anything is changed.

The hosts are the controller itself (ansible_connection local, `--check`, only the tasks tagged
preflight), so no lab is needed: preflight looks at variables and facts only.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from audit_devtools import lab as lablib

EXAMPLE = lablib.ROOT / "inventories" / "production.example"


@pytest.fixture(scope="module", autouse=True)
def wheelhouse():
    """The wheelhouse built before the first run (site.yml builds it under --tags preflight too, a
    change on the controller): the checks below then run on a controller that has deployed before."""
    subprocess.run([str(lablib.ROOT / "scripts" / "build_wheelhouse.sh")], cwd=lablib.ROOT, check=True)


@pytest.fixture
def inventory(tmp_path):
    """A copy of inventories/production.example whose hosts are reached locally, with a secrets file."""
    target = tmp_path / "inventory"
    shutil.copytree(EXAMPLE, target)
    group_vars = target / "group_vars" / "all.yml"
    settings = yaml.safe_load(group_vars.read_text())
    settings.update(
        ansible_connection="local", ansible_become=False, ansible_python_interpreter=shutil.which("python3")
    )
    group_vars.write_text(yaml.safe_dump(settings))
    secrets = lablib.secrets_path(target)
    secrets.write_text("".join(f"{n}: {'x' * 24}{i}\n" for i, n in enumerate(lablib.SECRET_NAMES)))
    secrets.chmod(0o600)
    return target


def hosts_file(inventory):
    return inventory / "hosts.yml"


def add_settings(inventory, **settings):
    """Append settings to the inventory's group_vars/all.yml."""
    group_vars = inventory / "group_vars" / "all.yml"
    group_vars.write_text(group_vars.read_text() + "".join(f"{k}: {v}\n" for k, v in settings.items()))


def refusal(run) -> str:
    """A failed run's output on one line (the callback folds long messages)."""
    assert not run.ok, run.describe()
    assert run.changed == 0, run.describe()
    return " ".join(run.output.split())


def edit_hosts(inventory, change):
    data = yaml.safe_load(hosts_file(inventory).read_text())
    change(data["all"]["children"])
    hosts_file(inventory).write_text(yaml.safe_dump(data))


@pytest.fixture(scope="module")
def fact_cache(tmp_path_factory):
    """Facts of the (local) hosts, gathered by the first run and reused by the others."""
    return {
        "ANSIBLE_GATHERING": "smart",
        "ANSIBLE_CACHE_PLUGIN": "ansible.builtin.jsonfile",
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(tmp_path_factory.mktemp("facts")),
    }


@pytest.fixture
def preflight(inventory, fact_cache):
    """Runs site.yml's preflight on the inventory, in check mode: preflight("-e", ...)."""

    def run(*extra: str) -> lablib.PlaybookResult:
        return lablib.run_playbook(
            "playbooks/site.yml",
            "--tags",
            "preflight",
            *extra,
            inventory=inventory,
            check=True,
            timeout=300,
            env=fact_cache,
        )

    return run


def test_the_example_inventory_passes(inventory, preflight):
    run = preflight()
    assert run.ok, run.describe()
    assert run.changed == 0, run.describe()
    # The example's seven hosts (and the controller, which builds the wheelhouse).
    assert set(run.stats) - {"localhost"} == set(lablib.inventory_hosts(inventory)), run.describe()
    assert len(run.stats) == 8, run.describe()


def test_the_secrets_file_is_no_inventory_source(inventory, preflight):
    # It lies beside the inventory directory: Ansible does not try to parse it as hosts.
    run = preflight()
    assert run.ok, run.describe()
    assert "secrets" not in " ".join(line for line in run.output.splitlines() if "WARNING" in line)
    assert "not a valid group definition" not in run.output, run.describe()


def test_a_vaulted_secrets_file_is_read_with_its_vault_password(inventory, preflight, tmp_path):
    secrets = lablib.secrets_path(inventory)
    password = tmp_path / "vault-password"
    password.write_text("correct horse battery staple\n")
    subprocess.run(
        [lablib._tool("ansible-vault"), "encrypt", str(secrets), "--vault-password-file", str(password)],
        check=True,
        capture_output=True,
    )
    assert secrets.read_text().startswith("$ANSIBLE_VAULT;")
    run = preflight("--vault-password-file", str(password))
    assert run.ok, run.describe()
    assert run.changed == 0


def test_a_secrets_file_left_in_the_inventory_directory_is_named(inventory, preflight):
    lablib.secrets_path(inventory).rename(inventory / "secrets.yml")
    run = preflight()
    assert not run.ok
    message = " ".join(run.output.split())
    assert f"move it to {lablib.secrets_path(inventory)}" in message
    assert run.changed == 0


def test_a_missing_group_is_named(inventory, preflight):
    edit_hosts(inventory, lambda groups: groups.pop("audit_lb"))
    run = preflight()
    assert not run.ok
    assert "the inventory has no hosts in audit_lb" in run.output, run.describe()
    assert run.changed == 0


def test_an_empty_group_is_named(inventory, preflight):
    edit_hosts(inventory, lambda groups: groups["audit_broker"].update(hosts={}))
    run = preflight()
    assert not run.ok
    assert "the inventory has no hosts in audit_broker" in run.output, run.describe()


def test_a_host_in_no_group_is_named(inventory, preflight):
    edit_hosts(inventory, lambda groups: groups.update(spare={"hosts": {"spare1.example.net": None}}))
    run = preflight()
    assert not run.ok
    assert "spare1.example.net is in no group of the stack" in run.output, run.describe()
    assert run.changed == 0


def test_a_port_clash_between_roles_is_named(inventory, preflight):
    # One host as cache and broker: Redis moved onto NATS' monitoring port.
    def cache_on_broker(groups):
        groups["audit_cache"]["hosts"] = {"mq1.example.net": None}

    edit_hosts(inventory, cache_on_broker)
    (inventory / "host_vars").mkdir()
    (inventory / "host_vars" / "mq1.example.net.yml").write_text("redis_port: 8222\n")
    run = preflight()
    assert not run.ok
    assert "mq1.example.net: port 8222 is set for both redis_port and nats_monitor_port" in run.output, (
        run.describe()
    )
    assert run.changed == 0


def test_a_clash_on_a_moved_port_is_named(inventory, preflight):
    # postgresql_port moved, onto the postgres exporter's port of the same host.
    add_settings(inventory, postgresql_port=9187)
    message = refusal(preflight())
    assert "port 9187 is set for both postgresql_port and prometheus_postgres_exporter_port" in message


def test_a_clash_between_roles_used_alone_is_named(inventory, fact_cache):
    # Without site.yml's first play: each role's own preflight declares its ports, and the second
    # role on the host finds the first one's (roles_test/broker.yml runs redis, then nats).
    def cache_on_broker(groups):
        groups["audit_cache"]["hosts"] = {"mq1.example.net": None}

    edit_hosts(inventory, cache_on_broker)
    run = lablib.run_playbook(
        "playbooks/roles_test/broker.yml",
        "--tags",
        "preflight",
        "-e",
        f"@{lablib.secrets_path(inventory)}",
        "-e",
        "redis_port=8222",
        inventory=inventory,
        check=True,
        timeout=300,
        env=fact_cache,
    )
    message = refusal(run)
    assert "mq1.example.net: port 8222 is set for both redis_port and nats_monitor_port" in message


def test_pools_larger_than_postgresql_allows_are_refused(inventory, preflight):
    # (50 + 5) x (2 API hosts x 4 processes + 2 workers) = 550 > 200 - 10.
    add_settings(inventory, audit_database_pool_size=50)
    message = refusal(preflight())
    assert "the service's pools may open 550 connections" in message
    assert "more than PostgreSQL's 190" in message


def test_retention_shorter_than_the_replay_window_is_refused(inventory, preflight):
    add_settings(inventory, audit_retention_days=3)
    message = refusal(preflight())
    assert "audit_retention_days (3) is shorter than the stream's replay window" in message


def test_a_stream_too_small_for_an_hour_of_ingest_is_refused(inventory, preflight):
    add_settings(inventory, nats_stream_max_bytes=1048576)
    message = refusal(preflight())
    assert "hold at least an hour of the expected ingest" in message


def test_a_port_that_is_no_port_is_named(inventory, preflight):
    (inventory / "host_vars").mkdir()
    (inventory / "host_vars" / "lb1.example.net.yml").write_text("nginx_listen_port: http\n")
    run = preflight()
    assert not run.ok
    assert "nginx_listen_port must be a port number (1-65535), not 'http'" in run.output, run.describe()


def test_an_unreadable_secrets_file_is_named(inventory, preflight):
    secrets = lablib.secrets_path(inventory)
    subprocess.run(
        [lablib._tool("ansible-vault"), "encrypt", str(secrets), "--vault-password-file", "/dev/stdin"],
        input="vault-pw\n",
        text=True,
        check=True,
        capture_output=True,
    )
    run = preflight()
    assert not run.ok
    assert f"the secrets file {secrets} could not be read" in run.output, run.describe()
    assert run.changed == 0


def test_a_secrets_path_that_is_not_a_file_is_named(inventory, preflight):
    secrets = lablib.secrets_path(inventory)
    secrets.unlink()
    secrets.mkdir()
    run = preflight()
    assert not run.ok
    assert f"the secrets file {secrets} is not a readable regular file" in run.output, run.describe()


def test_a_secret_missing_from_the_file_is_named(inventory, preflight):
    secrets = lablib.secrets_path(inventory)
    secrets.write_text(
        "\n".join(line for line in secrets.read_text().splitlines() if "nats" not in line) + "\n"
    )
    run = preflight()
    assert not run.ok
    message = " ".join(run.output.split())
    assert (
        "lacks audit_nats_publisher_password, audit_nats_consumer_password, audit_nats_admin_password"
        in message
    ), run.describe()


def test_a_lost_secrets_file_on_a_deployed_stack_is_named(inventory, tmp_path, preflight):
    # The hosts already run the stack (the marker file exists on them), but the secrets file is
    # gone: generating a new one would change every password, so preflight stops instead.
    marker = tmp_path / "audit-service.env"
    marker.write_text("deployed\n")
    secrets = lablib.secrets_path(inventory)
    secrets.unlink()
    run = preflight("-e", f"common_deployed_marker={marker}")
    assert not run.ok
    assert f"the secrets file {secrets} is missing, but" in run.output, run.describe()
    assert "a new one would change every password" in run.output, run.describe()
    assert not secrets.exists()


def test_a_missing_secrets_file_on_a_first_deployment_would_be_generated(inventory, preflight):
    secrets = lablib.secrets_path(inventory)
    secrets.unlink()
    run = preflight()
    assert run.ok, run.describe()
    # --check reports the one change a real run would make, and writes nothing.
    assert run.changed == 1, run.describe()
    assert "TASK [common : Generate the secrets file]" in run.output
    assert not secrets.exists()


OTHER_OS_PLAYBOOK = """\
- name: A host whose facts say Ubuntu 24.04
  hosts: all
  tasks:
    - name: Pretend to be Ubuntu 24.04
      ansible.builtin.set_fact:
        distribution: Ubuntu
        distribution_major_version: "24"
        distribution_version: "24.04"
        cacheable: true
    - name: The role's preflight
      ansible.builtin.include_role:
        name: "{{ role_under_test }}"
        tasks_from: preflight
"""


# The host in every group, so that the roles' defaults (which look at the groups) resolve.
OTHER_OS_INVENTORY = {
    "all": {
        "children": {
            group: {"hosts": {"ubuntu1": None}}
            for group in (
                "audit_db",
                "audit_cache",
                "audit_broker",
                "audit_api",
                "audit_worker",
                "audit_lb",
                "audit_monitoring",
            )
        }
    }
}


@pytest.mark.parametrize(
    ("role", "refused_by"),
    [
        ("postgresql", "postgresql"),
        ("redis", "redis"),
        ("nats", "nats"),
        # audit_api and audit_worker depend on audit_service, which checks first.
        ("audit_api", "audit_service"),
        ("audit_worker", "audit_service"),
        ("nginx", "nginx"),
        ("prometheus", "prometheus"),
        ("grafana", "grafana"),
    ],
)
def test_every_role_refuses_another_os(role, refused_by, tmp_path):
    # Each role alone (not only after common) refuses an OS other than Debian 12 / 13.
    playbook = tmp_path / "other_os.yml"
    playbook.write_text(OTHER_OS_PLAYBOOK)
    hosts = tmp_path / "hosts.yml"
    hosts.write_text(yaml.safe_dump(OTHER_OS_INVENTORY))
    # Secrets too: the argument specs of the roles that need them are checked before any task.
    extra = {"role_under_test": role} | {name: "s" * 24 for name in lablib.SECRET_NAMES}
    run = lablib.run_playbook(playbook, "-c", "local", extra_vars=extra, inventory=hosts, timeout=120)
    assert not run.ok
    message = " ".join(run.output.split())  # the callback folds long messages
    expected = f"ubuntu1 runs Ubuntu 24.04, which is not supported: role {refused_by} supports Debian 12"
    assert expected in message
    assert run.changed == 0
