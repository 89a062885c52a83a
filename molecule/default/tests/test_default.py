"""The converged lab, host by host: units, listening ports, file modes (test_stack.py: end to end)."""

# What each inventory group runs: its systemd units and the TCP ports it listens on.
GROUP_UNITS = {
    "audit_db": ["postgresql", "prometheus-postgres-exporter"],
    "audit_cache": ["redis-server", "prometheus-redis-exporter"],
    "audit_broker": ["nats-server"],
    "audit_api": ["audit-api"],
    "audit_worker": ["audit-worker", "audit-retention.timer"],
    "audit_lb": ["nginx"],
    "audit_monitoring": ["prometheus", "prometheus-alertmanager"],
}
# The TCP ports each group's hosts listen on, and where: "host" is the host's own address (where
# its clients on other hosts connect), "loopback" 127.0.0.1 only, "any" every address (nginx, the
# public entry). Redis and PostgreSQL listen on both the host's address and loopback.
GROUP_PORTS = {
    "audit_db": {5432: {"host", "loopback"}, 9187: {"host"}},
    "audit_cache": {6379: {"host", "loopback"}, 9121: {"host"}},
    "audit_broker": {4222: {"host"}, 8222: {"loopback"}, 6222: {"host"}},  # 6222: the cluster's routes
    "audit_api": {8000: {"host"}},
    "audit_worker": {9101: {"host"}},
    "audit_lb": {80: {"any"}, 443: {"any"}},  # 80 only redirects to HTTPS
    "audit_monitoring": {9090: {"host"}, 9093: {"host"}},
}
EVERY_HOST_UNITS = ["prometheus-node-exporter"]
EVERY_HOST_PORTS = {9100: {"host"}}
# The project's own units: systemd-analyze security rates each at most this ("OK").
OWN_UNITS = {"audit_api": "audit-api", "audit_worker": "audit-worker", "audit_broker": "nats-server"}
MAX_EXPOSURE = 3.0


def groups_of(host):
    return set(host.ansible.get_variables()["group_names"])


def test_units_are_active_and_enabled(host):
    units = list(EVERY_HOST_UNITS)
    for group in sorted(groups_of(host)):
        units += GROUP_UNITS.get(group, [])
    for unit in units:
        service = host.service(unit)
        assert service.is_running, unit
        assert service.is_enabled, unit


def test_every_listening_socket_is_bound_where_its_clients_are(host):
    expected = {port: set(where) for port, where in EVERY_HOST_PORTS.items()}
    for group in groups_of(host):
        for port, where in GROUP_PORTS.get(group, {}).items():
            expected.setdefault(port, set()).update(where)
    own = host.ansible.get_variables().get("ansible_host")
    address = host.check_output("hostname -i").split()[0]
    kinds = {address: "host", "127.0.0.1": "loopback", "0.0.0.0": "any", "*": "any"}
    found: dict[int, set[str]] = {}
    for line in host.check_output("ss -ltnH").splitlines():
        if not line.strip():
            continue
        bind, port = line.split()[3].rsplit(":", 1)
        if bind.startswith("[") or bind == "127.0.0.11":  # IPv6, and Docker's own resolver
            continue
        found.setdefault(int(port), set()).add(kinds.get(bind, bind))
    assert found == expected, own


def test_own_units_are_sandboxed(host):
    """systemd-analyze security rates each of the project's units on this host at most 3.0, and
    journald does not rate-limit the service's request logs (printed: pytest -s shows them)."""
    for group, unit in sorted(OWN_UNITS.items()):
        if group not in groups_of(host):
            continue
        report = host.check_output(f"systemd-analyze security {unit}.service --no-pager")
        level = float(report.rsplit("Overall exposure level for", 1)[1].split(":")[1].split()[0])
        print(f"{host.backend.get_hostname()} {unit}: systemd-analyze security exposure {level}")
        assert level <= MAX_EXPOSURE, report[-2000:]
        limit = host.check_output(f"systemctl show -p LogRateLimitIntervalUSec --value {unit}")
        if unit != "nats-server":
            assert limit == "0", "request logs must not be rate-limited by journald"


def test_redis_listens_only_on_the_addresses_that_need_it(host):
    binds = host.check_output("ss -ltnH 'sport = :6379'")
    if "audit_cache" not in groups_of(host):
        assert binds == ""
    else:
        assert binds and "0.0.0.0:6379" not in binds and "*:6379" not in binds


# Files with secrets or configuration, per group: (path, mode, owner, group).
GROUP_FILES = {
    "audit_api": [
        ("/etc/audit-service/audit-service.env", 0o600, "root", "root"),
        ("/etc/audit-service/audit-api.env", 0o600, "root", "root"),
        # The host's TLS key: readable by the service's group, nobody else.
        ("/etc/audit-service/tls/server.key", 0o640, "root", "audit-service"),
    ],
    "audit_worker": [
        ("/etc/audit-service/audit-worker.env", 0o600, "root", "root"),
        ("/etc/audit-service/audit-retention.env", 0o600, "root", "root"),
    ],
    "audit_cache": [
        ("/etc/redis/redis.conf", 0o640, "redis", "redis"),
        ("/etc/redis/tls/server.key", 0o600, "redis", "redis"),
    ],
    "audit_broker": [
        ("/etc/nats/nats-server.conf", 0o640, "root", "nats"),
        ("/etc/nats/tls/server.key", 0o600, "nats", "nats"),
    ],
    "audit_lb": [
        ("/etc/nginx/sites-available/audit.conf", 0o644, "root", "root"),
        ("/etc/nginx/tls/server.key", 0o600, "root", "root"),
    ],
    "audit_monitoring": [("/etc/prometheus/prometheus.yml", 0o644, "root", "root")],
}


def test_config_and_secret_files_have_their_modes(host):
    groups = groups_of(host)
    expected = [entry for group in sorted(groups) for entry in GROUP_FILES.get(group, [])]
    if "audit_db" in groups:
        pg_hba = host.check_output("ls /etc/postgresql/*/main/pg_hba.conf")
        expected.append((pg_hba, 0o640, "postgres", "postgres"))
        content = host.file(pg_hba).content_string
        assert "scram-sha-256" in content and " trust" not in content
    found = []
    for path, *_ in expected:
        f = host.file(path)
        found.append((path, f.mode, f.user, f.group))
    assert found == expected
    # Hosts not running the service hold none of its secrets.
    assert host.file("/etc/audit-service/audit-service.env").exists == (
        "audit_api" in groups or "audit_worker" in groups
    )
    # The admin key is in the API's own file only; each unit's file names its own NATS user.
    for name, has_admin_key, nats_user in (
        ("audit-service", False, None),
        ("audit-worker", False, "audit-worker"),
        ("audit-retention", False, None),
        ("audit-api", True, "audit-api"),
    ):
        f = host.file(f"/etc/audit-service/{name}.env")
        if f.exists:
            text = f.content_string
            assert ("ADMIN_API_KEY=" in text) == has_admin_key, name
            assert ("NATS_URL=" in text) == bool(nats_user), name
            if nats_user:
                assert f"NATS_URL=tls://{nats_user}:" in text, name  # TLS to NATS, with its own user


def test_retention_runs_from_its_unit(host):
    """The timer's service runs to success on every worker host (one run at a time: the advisory
    lock makes a concurrent one report `skipped`)."""
    if "audit_worker" not in groups_of(host):
        assert not host.file("/etc/systemd/system/audit-retention.timer").exists
        return
    assert host.run("systemctl start audit-retention.service").rc == 0
    assert host.check_output("systemctl show -p Result --value audit-retention.service") == "success"
    report = host.check_output(
        "journalctl -u audit-retention.service -o cat --no-pager -n 20 | grep retention_days | tail -1"
    )
    assert '"retention_days":90' in report


# Run with the service's own environment (its DATABASE_URL: the API's and worker's login).
TRY_SQL = """
import asyncio, os, sys, asyncpg
async def main():
    conn = await asyncpg.connect(os.environ["DATABASE_URL"])
    try:
        await conn.execute(sys.argv[1])
        print("allowed")
    except asyncpg.InsufficientPrivilegeError:
        print("refused")
    finally:
        await conn.close()
asyncio.run(main())
"""


def test_the_service_login_cannot_change_or_remove_events(host):
    if "audit_api" not in groups_of(host):
        return
    env = "set -a; . /etc/audit-service/audit-service.env; set +a"
    for statement in ("UPDATE audit_logs SET actor = 'x'", "DELETE FROM audit_logs", "TRUNCATE audit_logs"):
        out = host.check_output(f"{env}; /opt/audit-service/bin/python -c '{TRY_SQL}' \"{statement}\"")
        assert out == "refused", statement


def test_kernel_settings_are_saved_in_the_stacks_sysctl_file(host):
    # Written on every host; live only where /proc/sys is writable, which a container's is not.
    lines = host.file("/etc/sysctl.d/60-audit-log.conf").content_string.splitlines()
    assert sorted(lines) == ["net.core.rmem_max=16777216", "net.core.wmem_max=16777216"]
