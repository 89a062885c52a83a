"""The roles redis and nats (with the audit-logs stream), on private hosts.

One Debian 12 and one Debian 13 host, each in audit_cache and audit_broker (containers
audit-t-mq-*, network audit-t-mq-net, inventory and secrets file in a temporary directory), so the
test runs beside the shared lab and other tests. They are converged three times (first run,
second run with --diff, --check), then looked at from inside.
"""

from __future__ import annotations

import json
import secrets
import textwrap

import pytest
from audit_devtools import lab as lablib

pytestmark = pytest.mark.lab

PLAYBOOK = "playbooks/roles_test/broker.yml"

INVENTORY = """\
all:
  children:
    audit_cache:
      hosts:
        mq12:
          ansible_host: audit-t-mq-mq12
          lab_image: local/debian-systemd:bookworm
          nats_cluster_hosts: [mq12]  # two single brokers, not a cluster of two
        mq13:
          ansible_host: audit-t-mq-mq13
          lab_image: local/debian-systemd:trixie
          nats_cluster_hosts: [mq13]
    audit_broker:
      hosts:
        mq12:
        mq13:
"""

NETWORK = "audit-t-mq-net"

HOSTS = ["mq12", "mq13"]

# A client without credentials, then one with them: the server's first reply to CONNECT + PING.
RAW_CONNECT = """\
import json, socket, sys
s = socket.create_connection((socket.gethostbyname(socket.gethostname()), 4222), 5)  # its own address
s.recv(65536)  # INFO
opts = {"verbose": False, "pedantic": False}
if len(sys.argv) > 1:
    opts.update(user=sys.argv[1], **{"pass": sys.argv[2]})
s.sendall(b"CONNECT " + json.dumps(opts).encode() + b"\\r\\nPING\\r\\n")
print(s.recv(65536).decode().strip())
"""


@pytest.fixture(scope="module")
def mq_lab(tmp_path_factory):
    """Private cache/broker hosts, created for this module and destroyed after it."""
    workdir = tmp_path_factory.mktemp("mq-lab")
    secrets_file = workdir / "secrets.yml"
    passwords = {
        "audit_redis_password": secrets.token_urlsafe(24),
        "audit_redis_exporter_password": secrets.token_urlsafe(24),
        "audit_redis_admin_password": secrets.token_urlsafe(24),
        "audit_nats_publisher_password": secrets.token_urlsafe(24),
        "audit_nats_consumer_password": secrets.token_urlsafe(24),
        "audit_nats_admin_password": secrets.token_urlsafe(24),
    }
    secrets_file.write_text("".join(f"{k}: {v}\n" for k, v in passwords.items()))
    secrets_file.chmod(0o600)
    with lablib.private_lab(workdir, INVENTORY, NETWORK, "the private broker hosts") as instance:
        instance.secrets_file = secrets_file
        instance.passwords = passwords
        instance.runs = {}
        yield instance


@pytest.fixture(scope="module")
def converged(mq_lab):
    """First converge, second (with --diff), then --check: kept for the assertions."""
    extra = f"@{mq_lab.secrets_file}"
    first = mq_lab.playbook(PLAYBOOK, "-e", extra)
    assert first.ok, first.describe()
    second = mq_lab.playbook(PLAYBOOK, "-e", extra, diff=True)
    assert second.ok, second.describe()
    check = mq_lab.playbook(PLAYBOOK, "-e", extra, check=True, diff=True)
    assert check.ok, check.describe()
    mq_lab.runs = {"first": first, "second": second, "check": check}
    print(
        f"\nbroker roles: first {first.seconds:.0f}s changed={first.changed},"
        f" second {second.seconds:.0f}s changed={second.changed},"
        f" check {check.seconds:.0f}s changed={check.changed}"
    )
    return mq_lab


def test_a_single_broker_syncs_every_message_where_nats_can(converged):
    # Debian 13's NATS 2.10 writes each message to disk before its ack; Debian 12's 2.9 cannot,
    # and the run says what that risks.
    assert "sync_interval: always" in converged.exec("mq13", ["cat", "/etc/nats/nats-server.conf"]).stdout
    assert "sync_interval" not in converged.exec("mq12", ["cat", "/etc/nats/nats-server.conf"]).stdout
    first = " ".join(converged.runs["first"].output.split())
    assert "WARNING: mq12 runs NATS" in first and "WARNING: mq13 runs NATS" not in first


def test_first_run_changes(converged):
    assert converged.runs["first"].changed > 0


def test_second_run_changes_nothing(converged):
    run = converged.runs["second"]
    assert run.changed == 0, run.describe()


def test_check_run_changes_nothing(converged):
    run = converged.runs["check"]
    assert run.changed == 0, run.describe()


def test_secrets_never_printed(converged):
    for name, run in converged.runs.items():
        for var, value in converged.passwords.items():
            assert value not in run.output, f"{var} appears in the {name} run's output ({run.log})"


@pytest.mark.parametrize("host", HOSTS)
def test_services_active_and_enabled(converged, host):
    for unit in ("redis-server", "nats-server"):
        assert converged.exec(host, ["systemctl", "is-active", unit]).stdout.strip() == "active"
        assert converged.exec(host, ["systemctl", "is-enabled", unit]).stdout.strip() == "enabled"


@pytest.mark.parametrize("host", HOSTS)
def test_redis_users_may_run_only_their_commands(converged, host):
    def cli(user: str | None, password_name: str | None, *args: str) -> str:
        auth = ["--user", user, "--pass", converged.passwords[password_name]] if user else []
        out = converged.exec(host, ["redis-cli", "--no-auth-warning", *auth, *args], check=False)
        return (out.stdout + out.stderr).strip()

    assert "NOAUTH" in cli(None, None, "ping")  # the default user is off
    service = ("audit-service", "audit_redis_password")
    assert cli(*service, "set", "audit:t", "1") == "OK"
    assert "NOPERM" in cli(*service, "set", "other:t", "1")  # only its own keys
    assert "NOPERM" in cli(*service, "flushall")
    assert "NOPERM" in cli(*service, "config", "set", "maxmemory", "1")
    exporter = ("audit-exporter", "audit_redis_exporter_password")
    assert "used_memory" in cli(*exporter, "info", "memory")
    assert "NOPERM" in cli(*exporter, "get", "audit:t")
    admin = ("audit-admin", "audit_redis_admin_password")
    assert cli(*admin, "config", "get", "maxmemory-policy").split() == ["maxmemory-policy", "allkeys-lru"]


@pytest.mark.parametrize("host", HOSTS)
def test_redis_listens_on_lab_address_and_loopback(converged, host):
    listening = converged.exec(host, "ss -Hltn 'sport = :6379'").stdout
    addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines() if line.strip()}
    assert "127.0.0.1" in addresses
    assert "0.0.0.0" not in addresses and "*" not in addresses
    assert len(addresses) == 2, addresses  # loopback and the host's lab address
    mode = converged.exec(host, ["stat", "-c", "%a %U %G", "/etc/redis/redis.conf"]).stdout.split()
    assert mode == ["640", "redis", "redis"]


@pytest.mark.parametrize("host", HOSTS)
def test_nats_health_and_stream(converged, host):
    get = "import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())"
    health = converged.exec(host, ["python3", "-c", get, "http://127.0.0.1:8222/healthz"]).stdout
    assert json.loads(health)["status"] == "ok"
    varz = json.loads(converged.exec(host, ["python3", "-c", get, "http://127.0.0.1:8222/varz"]).stdout)
    assert varz["max_payload"] == 8 * 1024 * 1024
    assert varz["server_name"] == host
    jsz = json.loads(
        converged.exec(
            host, ["python3", "-c", get, "http://127.0.0.1:8222/jsz?streams=true&config=true"]
        ).stdout
    )
    assert jsz["config"]["store_dir"] == "/var/lib/nats/jetstream"
    streams = {s["name"]: s for account in jsz["account_details"] for s in account.get("stream_detail", [])}
    assert "audit-logs" in streams, jsz
    config = streams["audit-logs"]["config"]
    assert config["storage"] == "file" and config["retention"] == "limits"
    assert config["subjects"] == ["audit.logs.>"]
    assert config["max_age"] == 7 * 86400 * 10**9 and config["duplicate_window"] == 120 * 10**9
    assert config["num_replicas"] == 1
    # Full means refuse new events, never drop old ones (which may not be stored yet).
    assert config["discard"] == "new" and config["max_bytes"] == 8 * 1024**3


@pytest.mark.parametrize("host", HOSTS)
def test_nats_refuses_a_client_without_the_password(converged, host):
    refused = converged.exec(host, ["python3", "-c", RAW_CONNECT]).stdout
    assert "Authorization Violation" in refused
    accepted = converged.exec(
        host,
        ["python3", "-c", RAW_CONNECT, "audit-api", converged.passwords["audit_nats_publisher_password"]],
    )
    assert accepted.stdout.strip() == "PONG"


@pytest.mark.parametrize("host", HOSTS)
def test_nats_runs_as_nats_with_its_config(converged, host):
    user = converged.exec(host, ["systemctl", "show", "-p", "User", "--value", "nats-server"]).stdout.strip()
    assert user == "nats"
    cmd = converged.exec(host, ["systemctl", "show", "-p", "ExecStart", "--value", "nats-server"]).stdout
    assert "/etc/nats/nats-server.conf" in cmd
    mode = converged.exec(host, ["stat", "-c", "%a %U %G", "/etc/nats/nats-server.conf"]).stdout.split()
    assert mode == ["640", "root", "nats"]


def test_stream_drift_is_repaired_with_a_diff(converged):
    """Someone shortens max_age by hand: the next converge puts it back and says so."""
    host = "mq12"
    pw = converged.passwords["audit_nats_admin_password"]
    shrink = textwrap.dedent(
        """\
        import json, socket, sys
        s = socket.create_connection((socket.gethostbyname(socket.gethostname()), 4222), 5)
        s.recv(65536)
        login = {"verbose": False, "user": "audit-admin", "pass": sys.argv[1]}
        s.sendall(b'CONNECT ' + json.dumps(login).encode() + b'\\r\\nPING\\r\\n')
        assert s.recv(65536).startswith(b"PONG")
        cfg = {"name": "audit-logs", "subjects": ["audit.logs.>"], "storage": "file", "retention": "limits",
               "max_age": 3600 * 10**9, "duplicate_window": 120 * 10**9, "num_replicas": 1, "discard": "new",
               "max_bytes": 8 * 1024**3}
        body = json.dumps(cfg).encode()
        s.sendall(b"SUB _INBOX.t 1\\r\\nPUB $JS.API.STREAM.UPDATE.audit-logs _INBOX.t %d\\r\\n%s\\r\\n"
                  % (len(body), body))
        buf = b""
        while b"stream_update_response" not in buf:
            buf += s.recv(65536)
        print("updated" if b'"error"' not in buf else buf.decode())
        """
    )
    assert converged.exec(host, ["python3", "-c", shrink, pw]).stdout.strip() == "updated"
    run = converged.playbook(PLAYBOOK, "-e", f"@{converged.secrets_file}", limit=host, diff=True)
    assert run.ok, run.describe()
    assert run.changed == 1, run.describe()
    flat = " ".join(run.output.split())  # the callback may fold long lines
    assert 'update {"before": {"max_age": 3600}, "after": {"max_age": 604800}}' in flat, run.describe()
    assert not [pw for pw in converged.passwords.values() if pw in run.output]


def test_preflight_names_a_missing_secret(converged):
    run = converged.playbook(PLAYBOOK, limit="mq12")
    assert not run.ok
    assert "audit_redis_password must be defined" in run.output, run.describe()
    assert run.changed == 0


def test_preflight_refuses_a_port_clash(converged):
    run = converged.playbook(
        PLAYBOOK,
        "-e",
        f"@{converged.secrets_file}",
        "-e",
        "nats_monitor_port=4222",
        limit="mq12",
    )
    assert not run.ok
    assert "nats_port (4222) and nats_monitor_port (4222) must be two" in run.output, run.describe()
    assert run.changed == 0


# Connect as a user, then try one command; prints the server's answer (an -ERR on a violation).
TRY_AS = """\
import json, socket, sys
s = socket.create_connection((socket.gethostbyname(socket.gethostname()), 4222), 5)
s.recv(65536)
user, password, command = sys.argv[1], sys.argv[2], sys.argv[3].encode().decode("unicode_escape")
s.sendall(b"CONNECT " + json.dumps({"verbose": False, "user": user, "pass": password}).encode() + b"\\r\\n")
s.sendall(command.encode() + b"\\r\\nPING\\r\\n")
print(s.recv(65536).decode().strip())
"""


def test_each_nats_user_may_do_only_its_part(converged):
    host = "mq13"
    pw = converged.passwords

    def attempt(user: str, password: str, command: str) -> str:
        return converged.exec(host, ["python3", "-c", TRY_AS, user, password, command]).stdout

    publisher, consumer = (
        ("audit-api", pw["audit_nats_publisher_password"]),
        ("audit-worker", pw["audit_nats_consumer_password"]),
    )
    # The API publishes events; it may not read them, nor pull from the worker's consumer.
    assert "Permissions Violation" not in attempt(*publisher, "PUB audit.logs.t 2\\r\\nhi")
    assert "Permissions Violation for Subscription" in attempt(*publisher, "SUB audit.logs.> 1")
    assert "Permissions Violation for Publish" in attempt(
        *publisher, "PUB $JS.API.CONSUMER.MSG.NEXT.audit-logs.audit-worker _INBOX.x 1\\r\\n1"
    )
    # The worker consumes; it may not publish events nor change the stream.
    assert "Permissions Violation for Publish" in attempt(*consumer, "PUB audit.logs.t 2\\r\\nhi")
    assert "Permissions Violation for Publish" in attempt(
        *consumer, "PUB $JS.API.STREAM.DELETE.audit-logs 0\\r\\n"
    )
    assert "Permissions Violation" not in attempt(
        *consumer, "PUB $JS.API.STREAM.INFO.audit-logs _INBOX.x 0\\r\\n"
    )
    # The server's configuration holds bcrypt hashes, never a password.
    conf = converged.exec(host, ["cat", "/etc/nats/nats-server.conf"]).stdout
    assert conf.count('password: "$2a$11$') == 3
    assert not [p for p in pw.values() if p in conf]
