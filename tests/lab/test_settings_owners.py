"""One owner per setting, on the converged lab: the data stores' ports moved in an inventory move
the whole stack with them, a retention set for the stream stays set, and --check --diff shows
the config files that would change with the secrets masked.

The moved-ports inventory is the lab's own (same hosts and containers) with a few settings more.
Its test runs after every other lab test (leaves_lab_changed): the lab is not converged back.
"""

from __future__ import annotations

import json
import shutil
import time
import uuid

import pytest
import yaml
from audit_devtools import lab as lablib

pytestmark = pytest.mark.lab

CLI = "set -a; . /etc/audit-service/audit-service.env; set +a; /opt/audit-service/bin/audit-service"
MOVED = {"postgresql_port": 5433, "redis_port": 6380, "nats_port": 4223, "nats_stream_max_age": 86400}
# Every host that serves or uses those ports: the data stores, their exporters (on the same hosts)
# and the app hosts. The load balancer's nginx talks to the API and its Prometheus to the exporters,
# whose ports do not move, so its converges would only repeat the molecule ones.
PORT_USERS = "audit_db:audit_cache:audit_broker:audit_api:audit_worker:localhost"
SECRETS = lablib.LAB_SECRETS


def secret_values() -> list[str]:
    return [str(v) for v in yaml.safe_load(SECRETS.read_text()).values()]


def listening_ports(lab, host: str) -> set[int]:
    out = lab.exec(host, "ss -ltnH").stdout
    return {int(line.split()[3].rsplit(":", 1)[1]) for line in out.splitlines() if line.strip()}


def stream_config(lab, port: int) -> dict:
    jsz = lab.exec("mq1", "curl -fsS 'http://127.0.0.1:8222/jsz?streams=true&config=true'").stdout
    streams = [s for a in json.loads(jsz)["account_details"] for s in a.get("stream_detail", [])]
    return next(s["config"] for s in streams if s["name"] == "audit-logs")


def ingest_and_read_back(lab) -> None:
    tenant = json.loads(lab.exec("app1", f"{CLI} create-tenant own-{uuid.uuid4().hex[:8]}").stdout)
    key = json.loads(lab.exec("app2", f"{CLI} create-api-key {tenant['tenant_id']}").stdout)["api_key"]
    r = lablib.lb_request(
        "POST", "/api/v1/audit/logs", json={"actor": "a", "action": "moved"}, headers={"X-API-Key": key}
    )
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        got = lablib.lb_request(
            "GET", f"/api/v1/audit/logs/{r.json()['id']}", headers={"X-API-Key": key}, timeout=10
        )
        if got.status_code == 200:
            return
        time.sleep(0.5)
    raise AssertionError(f"event not readable through nginx: {got.status_code} {got.text}")


@pytest.fixture(scope="module")
def moved_inventory(tmp_path_factory):
    """inventories/lab with the data stores on other ports and a one-day stream window."""
    target = tmp_path_factory.mktemp("moved") / "lab-moved"
    shutil.copytree(lablib.LAB_INVENTORY, target)
    group_vars = target / "group_vars" / "all.yml"
    group_vars.write_text(group_vars.read_text() + "".join(f"{k}: {v}\n" for k, v in MOVED.items()))
    return target


def test_check_diff_shows_changed_config_files_with_secrets_masked(lab, stack):
    env_file = "/etc/audit-service/audit-service.env"
    api_env_file = "/etc/audit-service/audit-api.env"
    edited = {"mq1": ["/etc/redis/redis.conf"], "app1": [env_file, api_env_file]}
    # The converged files, put back at the end: no unit reads them before then.
    for host, paths in edited.items():
        lab.exec(host, " && ".join(f"cp -p {path} {path}.converged" for path in paths))
    try:
        # Hand edits, two of them on the very lines that hold a secret.
        lab.exec("mq1", "sed -i 's/^maxmemory .*/maxmemory 100mb/' /etc/redis/redis.conf")
        hand_edit = "s/^user audit-service on >[^ ]*/user audit-service on >not-the-secret/"
        lab.exec("mq1", f"sed -i '{hand_edit}' /etc/redis/redis.conf")
        lab.exec("app1", f"sed -i 's/^CACHE_TTL=.*/CACHE_TTL=7/' {env_file}")
        lab.exec(
            "app1", f"sed -i 's#^NATS_URL=.*#NATS_URL=nats://audit-api:hand-set@mq1:4222#' {api_env_file}"
        )
        run = lab.playbook("playbooks/site.yml", limit="mq1,app1", check=True, diff=True)
        assert run.ok, run.describe()
        assert "-maxmemory 100mb" in run.output and "+maxmemory 256mb" in run.output, run.describe()
        assert "-user audit-service on >not-the-secret" in run.output, run.describe()
        assert "+user audit-service on >******** " in run.output, run.describe()
        assert "-CACHE_TTL=7" in run.output and "+CACHE_TTL=30" in run.output, run.describe()
        assert "-NATS_URL=nats://audit-api:hand-set@mq1:4222" in run.output, run.describe()
        every_broker = ",".join(f"tls://audit-api:********@mq{i}:4222" for i in (1, 2, 3))
        assert f"+NATS_URL={every_broker}" in run.output, run.describe()
        leaked = [v for v in secret_values() if v in run.output]
        assert leaked == [], "a secret value is in the --diff output"
        # --check changed nothing: the hand edits are still there.
        assert "maxmemory 100mb" in lab.exec("mq1", "cat /etc/redis/redis.conf").stdout
        assert "hand-set" in lab.exec("app1", f"cat {api_env_file}").stdout
    finally:
        # That a converge rewrites a changed file is config_files' (tests/ops/test_config_files.py)
        # and molecule's; here the converged files come back as they were, without one.
        for host, paths in edited.items():
            lab.exec(host, " && ".join(f"mv {path}.converged {path}" for path in paths), check=False)
    assert "maxmemory 256mb" in lab.exec("mq1", "cat /etc/redis/redis.conf").stdout
    assert "hand-set" not in lab.exec("app1", f"cat {api_env_file}").stdout


@pytest.mark.leaves_lab_changed
def test_moved_ports_move_the_whole_stack(lab, stack, moved_inventory):
    # The moved inventory is a copy: it keeps the lab's secrets and certificates.
    extra = {"audit_secrets_file": str(SECRETS), "audit_tls_dir": str(lablib.LAB_PKI)}
    run = lab.playbook("playbooks/site.yml", inventory=moved_inventory, extra_vars=extra, limit=PORT_USERS)
    assert run.ok, run.describe()
    assert {5433} <= listening_ports(lab, "db1") and 5432 not in listening_ports(lab, "db1")
    assert {6380, 4223} <= listening_ports(lab, "mq1")
    assert not {6379, 4222} & listening_ports(lab, "mq1")
    health = lablib.lb_request("GET", "/api/v1/metrics/health", timeout=30).json()
    assert health["status"] == "healthy", health
    ingest_and_read_back(lab)

    # The stream keeps the window the deployment set, across restarts of the service.
    assert stream_config(lab, 4223)["max_age"] == 86400 * 10**9
    for host in ("app1", "app2"):
        lab.exec(host, "systemctl restart audit-worker audit-api")
    for host in ("app1", "app2"):  # the API listens on the host's own address
        lab.exec(
            host,
            "for i in $(seq 60); do curl -fsS $(hostname -i):8000/health && exit 0; sleep 1; done; exit 1",
        )
    assert stream_config(lab, 4223)["max_age"] == 86400 * 10**9
    # No second converge of the moved inventory: idempotence is molecule's to prove (the same
    # templates, other values), and a converge costs CI three minutes.
