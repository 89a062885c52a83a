"""The guide's Common Issues as runbooks (playbooks/runbooks/common), each against the fault it is
for, injected for real on the converged lab and healed before the next test."""

from __future__ import annotations

import pytest
from support.runbooks import assert_changes_nothing, critical, wait_healthy

pytestmark = pytest.mark.lab


def test_services_wont_start_ends_a_foreign_process_on_the_api_port_only_when_asked(lab, stack):
    lab.exec("app1", "systemctl stop audit-api")
    lab.exec("app1", "setsid python3 -m http.server 8000 >/dev/null 2>&1 < /dev/null &")
    try:
        run = lab.runbook("common/services_wont_start", limit="app1")
        taken = critical(run, host="app1", component="api", check="port_owner")
        assert taken and "http.server" in taken[0]["summary"] and "pid" in taken[0]["summary"], run.describe()
        assert critical(run, host="app1", check="port_taken"), run.describe()
        # Without its variable the process lives on, and the API stays down.
        assert lab.exec("app1", "pgrep -f 'http.server 8000'", check=False).returncode == 0

        fixed = lab.runbook(
            "common/services_wont_start", limit="app1", extra_vars={"services_kill_foreign": True}
        )
        assert fixed.ok and fixed.changed > 0, fixed.describe()
        ended = [f for f in critical(fixed, host="app1", check="port_owner") if f["remediation"]]
        assert ended, fixed.describe()
        assert lab.exec("app1", "pgrep -f 'http.server 8000'", check=False).returncode != 0
        assert lab.exec("app1", "systemctl is-active audit-api").stdout.strip() == "active"
    finally:
        lab.exec("app1", "pkill -f 'http.server 8000'; systemctl start audit-api", check=False)
    wait_healthy()
    again = assert_changes_nothing(lab, "common/services_wont_start", limit="app1")
    assert critical(again) == [], again.describe()


def test_services_wont_start_gives_postgresqls_data_directory_back_and_starts_it(lab, stack):
    data_dir = lab.exec("db1", "ls -d /var/lib/postgresql/*/main").stdout.strip()
    lab.exec(
        "db1", f"systemctl stop 'postgresql@*-main'; chown -R root:root {data_dir}; chmod 0755 {data_dir}"
    )
    try:
        run = lab.runbook("common/services_wont_start", limit="db1")
        assert run.ok and run.changed > 0, run.describe()
        wrong = critical(run, host="db1", component="postgresql", check="data_dir_permissions")
        assert wrong and "root:root" in wrong[0]["summary"] and wrong[0]["remediation"], run.describe()
        owner = lab.exec("db1", f"stat -c '%U:%G %a' {data_dir}").stdout.split()
        assert owner == ["postgres:postgres", "700"], owner
        assert lab.exec("db1", f"find {data_dir} ! -user postgres | head -1").stdout.strip() == ""
        assert lab.exec("db1", "systemctl is-active 'postgresql@*-main'").stdout.strip() == "active"
    finally:
        lab.exec("db1", f"chown -R postgres:postgres {data_dir}; chmod 0700 {data_dir}", check=False)
        lab.exec("db1", "systemctl start 'postgresql@*-main'", check=False)
    wait_healthy()
    again = assert_changes_nothing(lab, "common/services_wont_start", limit="db1")
    assert critical(again) == [], again.describe()


def test_services_wont_start_names_the_bad_setting_of_a_crash_looping_unit(lab, stack):
    env_file = "/etc/audit-service/audit-worker.env"
    lab.exec("app2", f"cp {env_file} /root/worker.env.good && echo DATABASE_POOL_SIZE=lots >> {env_file}")
    lab.exec("app2", "systemctl restart audit-worker", check=False)
    try:
        run = lab.runbook("common/services_wont_start", limit="app2")
        looping = critical(run, host="app2", component="worker")
        assert looping, run.describe()
        evidence = " ".join(str(f["evidence"]) for f in looping)
        assert "DATABASE_POOL_SIZE" in evidence, run.describe()
    finally:
        lab.exec("app2", f"cp /root/worker.env.good {env_file} && systemctl restart audit-worker")
    assert lab.exec("app2", "systemctl is-active audit-worker").stdout.strip() == "active"
    again = assert_changes_nothing(lab, "common/services_wont_start", limit="app2")
    assert critical(again) == [], again.describe()


def test_database_connection_starts_postgresql_and_resets_a_changed_password_only_when_asked(lab, stack):
    lab.exec("db1", "systemctl stop 'postgresql@*-main'")
    started = lab.runbook("common/database_connection", extra_vars={"database_amcheck": False})
    assert started.ok and started.changed > 0, started.describe()
    assert critical(started, host="db1", component="postgresql"), started.describe()
    assert lab.exec("db1", "systemctl is-active 'postgresql@*-main'").stdout.strip() == "active"
    wait_healthy()

    lab.exec("db1", "runuser -u postgres -- psql -qc \"ALTER ROLE audit_service PASSWORD 'not-the-secret'\"")
    try:
        refused = lab.runbook("common/database_connection", extra_vars={"database_amcheck": False})
        assert refused.ok and refused.changed == 0, refused.describe()
        told = critical(refused, host="db1", check="service_password")
        assert told and told[0]["variable"] == "database_reset_password", refused.describe()
        links = critical(refused, host="app1", component="postgresql")
        assert any("28P01" in str(f) for f in links), refused.describe()
    finally:
        reset = lab.runbook("common/database_connection", extra_vars={"database_reset_password": True})
    assert reset.ok and reset.changed > 0, reset.describe()
    assert [f for f in critical(reset, host="db1", check="service_password") if f["remediation"]], (
        reset.describe()
    )
    amcheck = reset.findings(host="db1", check="amcheck")
    assert amcheck and amcheck[0]["severity"] == "info", reset.describe()
    wait_healthy()
    again = assert_changes_nothing(lab, "common/database_connection", extra_vars={"database_amcheck": False})
    assert critical(again) == [], again.describe()
