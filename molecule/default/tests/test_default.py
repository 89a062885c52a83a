"""The converged lab, host by host: units, listening ports, file modes (test_stack.py: end to end)."""

# What each inventory group runs: its systemd units and the TCP ports it listens on.
GROUP_UNITS = {
    "audit_db": ["postgresql", "prometheus-postgres-exporter"],
    "audit_cache": ["redis-server", "prometheus-redis-exporter"],
    "audit_broker": ["nats-server"],
    "audit_api": ["audit-api"],
    "audit_worker": ["audit-worker"],
    "audit_lb": ["nginx"],
    "audit_monitoring": ["prometheus"],
}
GROUP_PORTS = {
    "audit_db": {5432, 9187},
    "audit_cache": {6379, 9121},
    "audit_broker": {4222, 8222},
    "audit_api": {8000},
    "audit_worker": {9101},
    "audit_lb": {80},
    "audit_monitoring": {9090},
}
EVERY_HOST_UNITS = ["prometheus-node-exporter"]
EVERY_HOST_PORTS = {9100}


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


def test_ports_listen_only_where_they_should(host):
    expected = set(EVERY_HOST_PORTS)
    for group in groups_of(host):
        expected |= GROUP_PORTS.get(group, set())
    listening = {
        int(line.split()[3].rsplit(":", 1)[1])
        for line in host.check_output("ss -ltnH").splitlines()
        if line.strip() and not line.split()[3].startswith(("127.", "[::1]"))
    }
    assert listening == expected


def test_redis_listens_only_on_the_addresses_that_need_it(host):
    binds = host.check_output("ss -ltnH 'sport = :6379'")
    if "audit_cache" not in groups_of(host):
        assert binds == ""
    else:
        assert binds and "0.0.0.0:6379" not in binds and "*:6379" not in binds


# Files with secrets or configuration, per group: (path, mode, owner, group).
GROUP_FILES = {
    "audit_api": [("/etc/audit-service/audit-service.env", 0o600, "root", "root")],
    "audit_cache": [("/etc/redis/redis.conf", 0o640, "redis", "redis")],
    "audit_broker": [("/etc/nats/nats-server.conf", 0o640, "root", "nats")],
    "audit_lb": [("/etc/nginx/sites-available/audit.conf", 0o644, "root", "root")],
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
