"""The roles common and postgresql, on private hosts: one Debian 12 and one Debian 13 db host.

The hosts are this module's own (containers audit-t-pg-*, network audit-t-pg-net, inventory and
secrets file in a temporary directory), so the test runs beside the shared lab and other tests.
They are converged three times (first run, second run, --check), then looked at from inside.
"""

from __future__ import annotations

import stat

import pytest
import yaml
from audit_devtools import lab as lablib

pytestmark = pytest.mark.lab

PLAYBOOK = "playbooks/roles_test/postgresql.yml"

INVENTORY = """\
all:
  children:
    audit_db:
      hosts:
        tpg12:
          ansible_host: audit-t-pg-db12
          lab_image: local/debian-systemd:bookworm
        tpg13:
          ansible_host: audit-t-pg-db13
          lab_image: local/debian-systemd:trixie
"""

NETWORK = "audit-t-pg-net"

# Runs the same roles after making the facts say Ubuntu 24.04: preflight must stop it.
UNSUPPORTED_OS_PLAYBOOK = """\
- name: PostgreSQL on a host whose facts say Ubuntu
  hosts: tpg12
  become: true
  pre_tasks:
    - name: Pretend to be Ubuntu 24.04
      ansible.builtin.set_fact:
        distribution: Ubuntu
        distribution_major_version: "24"
        distribution_version: "24.04"
        cacheable: true
  roles:
    - common
    - postgresql
"""


@pytest.fixture(scope="module")
def pg_lab(tmp_path_factory):
    """Private db hosts, created for this module and destroyed after it (LAB_KEEP=1 keeps them)."""
    with lablib.private_lab(
        tmp_path_factory.mktemp("pg-lab"), INVENTORY, NETWORK, "the private db hosts"
    ) as instance:
        yield instance


@pytest.fixture(scope="module")
def converged(pg_lab):
    """First converge, second converge and a --check run, in that order."""
    runs = {"first": pg_lab.playbook(PLAYBOOK)}
    assert runs["first"].ok, runs["first"].describe()
    runs["second"] = pg_lab.playbook(PLAYBOOK)
    runs["check"] = pg_lab.playbook(PLAYBOOK, check=True)
    for name, run in runs.items():
        print(f"{name} run: {run.seconds:.1f} s, changed={run.changed}")
    return runs


@pytest.fixture(scope="module")
def secrets(pg_lab, converged):
    return yaml.safe_load(lablib.secrets_path(pg_lab.workdir).read_text())


def psql_as_postgres(pg_lab, host: str, sql: str, database: str = "postgres") -> str:
    proc = pg_lab.exec(host, ["runuser", "-u", "postgres", "--", "psql", "-XAtq", "-d", database, "-c", sql])
    return proc.stdout.strip()


def test_first_converge_changes_things(converged):
    assert converged["first"].changed > 0, converged["first"].describe()


def test_second_converge_changes_nothing(converged):
    run = converged["second"]
    assert run.ok, run.describe()
    assert run.changed == 0, run.describe()


def test_check_run_after_converge_changes_nothing(converged):
    run = converged["check"]
    assert run.ok, run.describe()
    assert run.changed == 0, run.describe()


def test_postgresql_active_enabled_and_listening(pg_lab, converged):
    for host in pg_lab.hosts:
        assert pg_lab.exec(host, ["systemctl", "is-enabled", "postgresql"]).stdout.strip() == "enabled", host
        version = psql_as_postgres(pg_lab, host, "SHOW server_version_num")[:2]
        unit = f"postgresql@{version}-main"
        assert pg_lab.exec(host, ["systemctl", "is-active", unit]).stdout.strip() == "active", (host, unit)
        listening = pg_lab.exec(host, ["ss", "-Hltn", "sport = :5432"]).stdout
        assert "5432" in listening, (host, listening)


def test_debian_version_of_postgresql(pg_lab, converged):
    expected = {"bookworm": "15", "trixie": "17"}
    for host in pg_lab.hosts:
        suite = pg_lab.hostvars[host]["lab_image"].split(":")[-1]
        assert psql_as_postgres(pg_lab, host, "SHOW server_version_num")[:2] == expected[suite], host


def test_server_settings(pg_lab, converged):
    for host in pg_lab.hosts:
        assert psql_as_postgres(pg_lab, host, "SHOW data_checksums") == "on", host
        assert "pg_stat_statements" in psql_as_postgres(pg_lab, host, "SHOW shared_preload_libraries"), host
        assert psql_as_postgres(pg_lab, host, "SHOW password_encryption") == "scram-sha-256", host
        assert psql_as_postgres(pg_lab, host, "SHOW wal_level") == "replica", host
        assert psql_as_postgres(pg_lab, host, "SHOW archive_mode") == "on", host
        # WAL goes into pgBackRest's repository (the stanza exists, so no segment piles up).
        archive = psql_as_postgres(pg_lab, host, "SHOW archive_command")
        assert archive == "pgbackrest --stanza=audit archive-push %p", host
        assert psql_as_postgres(pg_lab, host, "SHOW shared_buffers") == "256MB", host
        assert psql_as_postgres(pg_lab, host, "SHOW random_page_cost") == "1.1", host
        assert psql_as_postgres(pg_lab, host, "SHOW log_min_duration_statement") == "1s", host
        pending = psql_as_postgres(pg_lab, host, "SELECT count(*) FROM pg_settings WHERE pending_restart")
        assert pending == "0", host
        sql = "SELECT extname FROM pg_extension WHERE extname = 'pg_stat_statements'"
        ext = psql_as_postgres(pg_lab, host, sql, database="audit_logs")
        assert ext == "pg_stat_statements", host


def test_pgbackrest_check_archives_a_wal_segment_into_the_stanzas_repository(pg_lab, converged):
    for host in pg_lab.hosts:
        # check: a WAL switch, archived through archive_command, found in the repository.
        checked = pg_lab.exec(
            host, ["runuser", "-u", "postgres", "--", "pgbackrest", "--stanza=audit", "check"], check=False
        )
        assert checked.returncode == 0, (host, checked.stderr)
        archived = pg_lab.exec(host, "ls /var/lib/pgbackrest/archive/audit/*/ | wc -l").stdout.strip()
        assert int(archived) > 0, host


def login(pg_lab, host: str, password: str, database: str = "audit_logs", user: str = "audit_user"):
    cmd = ["env", f"PGPASSWORD={password}", "psql", "-XAtq", "-h", "127.0.0.1", "-U", user, "-d", database]
    return pg_lab.exec(host, [*cmd, "-c", "SELECT current_user"], check=False)


def test_audit_user_logs_in_over_tcp_with_the_secret_password(pg_lab, secrets):
    for host in pg_lab.hosts:
        good = login(pg_lab, host, secrets["audit_db_password"])
        assert good.returncode == 0 and good.stdout.strip() == "audit_user", (host, good.stderr)
        bad = login(pg_lab, host, "not-the-password")
        assert bad.returncode != 0 and "password authentication failed" in bad.stderr, (host, bad.stderr)


def test_other_logins_are_rejected(pg_lab, secrets):
    host = pg_lab.hosts[0]
    # audit_user to another database, and postgres over TCP, match no allowing line of pg_hba.conf.
    other_db = login(pg_lab, host, secrets["audit_db_password"], database="postgres")
    assert other_db.returncode != 0 and "pg_hba.conf rejects" in other_db.stderr, other_db.stderr
    superuser = login(pg_lab, host, "anything", user="postgres", database="audit_logs")
    assert superuser.returncode != 0 and "pg_hba.conf rejects" in superuser.stderr, superuser.stderr


def test_secrets_file_is_private_complete_and_never_printed(pg_lab, converged, secrets):
    path = lablib.secrets_path(pg_lab.workdir)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(secrets) == sorted(lablib.SECRET_NAMES)
    for name, value in secrets.items():
        assert isinstance(value, str) and len(value) >= 32, name
        assert value.isalnum(), name
        for run_name, run in converged.items():
            assert value not in run.output, f"{name} appears in the output of the {run_name} run ({run.log})"
    assert len(set(secrets.values())) == len(secrets), "secrets repeat"


def test_existing_secrets_file_is_kept(pg_lab, converged, secrets):
    # The second and --check runs found the file: it is the one the first run wrote.
    text = lablib.secrets_path(pg_lab.workdir).read_text()
    assert "ansible-vault" in text
    assert yaml.safe_load(text) == secrets


def test_preflight_refuses_an_unsupported_os(pg_lab, converged):
    playbook = pg_lab.workdir / "unsupported_os.yml"
    playbook.write_text(UNSUPPORTED_OS_PLAYBOOK)
    run = pg_lab.playbook(playbook)
    assert not run.ok, run.describe()
    assert "tpg12 runs Ubuntu 24.04, which is not supported" in run.output, run.describe()
    assert run.changed == 0, run.describe()


def test_malformed_secrets_file_is_refused_naming_it(pg_lab, converged):
    bad = pg_lab.workdir / "bad-secrets.yml"
    bad.write_text("audit_db_password: [unclosed\n")
    run = pg_lab.playbook(PLAYBOOK, extra_vars={"audit_secrets_file": str(bad)})
    assert not run.ok, run.describe()
    assert f"the secrets file {bad} could not be read" in run.output, run.describe()
    assert run.changed == 0, run.describe()


def test_secrets_file_missing_a_secret_is_refused_naming_it(pg_lab, converged, secrets):
    partial = pg_lab.workdir / "partial-secrets.yml"
    partial.write_text(
        yaml.safe_dump({k: v for k, v in secrets.items() if k != "audit_nats_consumer_password"})
    )
    run = pg_lab.playbook(PLAYBOOK, extra_vars={"audit_secrets_file": str(partial)})
    assert not run.ok, run.describe()
    assert f"the secrets file {partial} lacks audit_nats_consumer_password" in run.output, run.describe()
    assert run.changed == 0, run.describe()


def test_a_bad_variable_is_named(pg_lab, converged):
    run = pg_lab.playbook(PLAYBOOK, extra_vars={"postgresql_shared_buffers": "lots"})
    assert not run.ok, run.describe()
    assert "postgresql_shared_buffers must be a size" in run.output, run.describe()
    assert run.changed == 0, run.describe()


def postmaster_start(pg_lab, host: str) -> str:
    return psql_as_postgres(pg_lab, host, "SELECT pg_postmaster_start_time()")


def test_reload_for_a_reloadable_setting_restart_only_when_needed(pg_lab, converged):
    host = "tpg13"
    started = postmaster_start(pg_lab, host)
    reloaded = pg_lab.playbook(PLAYBOOK, limit=host, extra_vars={"postgresql_random_page_cost": 1.5})
    assert reloaded.ok and reloaded.changed > 0, reloaded.describe()
    assert "RUNNING HANDLER [postgresql : Restart postgresql]" not in reloaded.output, reloaded.describe()
    assert psql_as_postgres(pg_lab, host, "SHOW random_page_cost") == "1.5"
    assert postmaster_start(pg_lab, host) == started, "a reloadable setting restarted the server"

    restarted = pg_lab.playbook(PLAYBOOK, limit=host, extra_vars={"postgresql_shared_buffers": "128MB"})
    assert restarted.ok, restarted.describe()
    assert "RUNNING HANDLER [postgresql : Restart postgresql]" in restarted.output, restarted.describe()
    assert psql_as_postgres(pg_lab, host, "SHOW shared_buffers") == "128MB"
    assert psql_as_postgres(pg_lab, host, "SHOW random_page_cost") == "1.1"
    assert postmaster_start(pg_lab, host) != started, "shared_buffers changed without a restart"

    back = pg_lab.playbook(PLAYBOOK, limit=host)
    assert back.ok, back.describe()
    assert psql_as_postgres(pg_lab, host, "SHOW shared_buffers") == "256MB"
    assert psql_as_postgres(pg_lab, host, "SELECT count(*) FROM pg_settings WHERE pending_restart") == "0"
