"""auditlog.ops.pg_diagnostics against a real PostgreSQL on loopback, with real faults injected.

The cluster is audit_devtools.stack's `Postgres` (Debian's server, a temporary directory, a free
port) with pg_stat_statements preloaded as the postgresql role has it; the module runs through
`ansible localhost -m auditlog.ops.pg_diagnostics` under /usr/bin/python3 with Debian's
python3-psycopg2, as on a database host. No lab, no containers.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time

from audit_devtools.stack import Postgres
from support.modules import run_module
from support.pgcluster import DB, Session, needs_psycopg2, start_cluster, stop_cluster, wait_for

pytestmark = needs_psycopg2


def diagnose(pg: Postgres, *flags: str, **args) -> tuple[int, dict, str]:
    params = {
        "login_host": "127.0.0.1",
        "port": pg.port,
        "login_user": "postgres",
        "login_password": pg.password,
        "db": DB,
        "connect_timeout": 5,
    } | args
    return run_module("pg_diagnostics", params, *flags)


def checks(result: dict) -> dict[str, str]:
    return {f["check"]: f["severity"] for f in result["findings"]}


def test_healthy_server_facts_and_check_mode(pg):
    rc, result, out = diagnose(pg, "--check")
    assert rc == 0, out
    assert result["changed"] is False and result["available"] is True
    ready = result["readiness"]
    assert ready["ready"] and ready["state"] == "accepting" and ready["in_recovery"] is False
    assert result["ready"] is True  # at the top level too, for until: loops
    assert ready["server_version"].split()[0] == pg.psql("SHOW server_version").split()[0]
    conns = result["connections"]
    assert conns["max_connections"] == 200 and conns["total"] >= 0
    assert result["settings"]["max_connections"] == "200" and result["settings"]["shared_buffers"] == "256MB"
    # The server's own timeouts, not the module session's guards.
    assert result["settings"]["statement_timeout"] == "0" and result["settings"]["lock_timeout"] == "0"
    assert result["checksums"] == {"enabled": True, "failures": 0, "by_database": [], "last_failure": None}
    assert {d["name"] for d in result["databases"]} >= {"postgres", DB}
    assert result["tables"][0]["name"] == "accounts" and result["tables"][0]["total_bytes"] > 0
    assert 0 < result["cache"]["hit_ratio"] <= 1
    # The guide's pg_statio_user_tables: the table the fixture filled and read, with its block figures.
    io = {t["name"]: t for t in result["table_io"]}
    assert io["accounts"]["heap_blks_read"] + io["accounts"]["heap_blks_hit"] > 0, result["table_io"]
    assert 0 <= io["accounts"]["hit_ratio"] <= 1 and result["settings"]["random_page_cost"]
    assert result["long_queries"] == [] and result["blocking"] == []
    assert not [f for f in result["findings"] if f["severity"] != "info"], result["findings"]
    assert pg.password not in out


def test_statements_absent_then_present(pg):
    # Preloaded, but the extension not created in the database: its absence is data.
    rc, result, out = diagnose(pg)
    assert rc == 0, out
    statements = result["statements"]
    assert statements["available"] is False and statements["installed"] is False
    assert statements["preloaded"] is True and "not created in database svc" in statements["error"]

    pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", db=DB)
    for _ in range(3):
        pg.psql("SELECT pg_sleep(0.25)", db=DB)
    rc, result, out = diagnose(pg, slow_statement_ms=200, statements_limit=5)
    assert rc == 0, out
    statements = result["statements"]
    assert statements["available"] and statements["installed"] and statements["version"]
    # The slowest by mean: pg_sleep, unless the cluster's own CREATE DATABASE was slower still.
    top = next(t for t in statements["top"] if "pg_sleep" in t["query"])
    assert statements["top"].index(top) <= 1
    assert "pg_sleep" in top["query"] and top["calls"] >= 3 and top["mean_ms"] >= 250
    assert top["database"] == DB and top["user"] == "postgres"
    slow = [f for f in result["findings"] if f["check"] == "slow_statement"]
    assert slow and slow[0]["severity"] == "warning" and "pg_sleep" in slow[0]["evidence"]


def test_idle_in_transaction_and_a_blocked_pair(pg):
    holder, waiter = Session(pg, "holder"), Session(pg, "waiter")
    try:
        holder.send("BEGIN; UPDATE accounts SET balance = balance - 1 WHERE id = 1;")
        holder_pid = int(
            wait_for(
                pg,
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'holder'"
                " AND state = 'idle in transaction'",
            )
        )
        waiter.send("UPDATE accounts SET balance = balance + 1 WHERE id = 1;")
        waiter_pid = int(
            wait_for(
                pg,
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'waiter'"
                " AND wait_event_type = 'Lock'",
            )
        )
        time.sleep(1.5)
        rc, result, out = diagnose(pg, idle_in_transaction_seconds=1, long_query_seconds=1)
    finally:
        holder.close()
        waiter.close()
    assert rc == 0, out
    conns = result["connections"]
    assert conns["idle_in_transaction"] >= 1 and conns["active"] >= 1
    assert conns["idle_in_transaction_oldest_seconds"] >= 1
    assert holder_pid in [s["pid"] for s in conns["idle_in_transaction_sessions"]]
    assert conns["by_database"][DB] >= 2 and conns["by_user"]["postgres"] >= 2
    pairs = {(b["blocked_pid"], b["blocking_pid"]) for b in result["blocking"]}
    assert (waiter_pid, holder_pid) in pairs
    pair = next(b for b in result["blocking"] if b["blocked_pid"] == waiter_pid)
    assert pair["blocking_state"] == "idle in transaction" and "UPDATE accounts" in pair["blocked_query"]
    assert waiter_pid in [q["pid"] for q in result["long_queries"]]
    found = checks(result)
    assert found["idle_in_transaction"] == "warning"
    assert found["blocking"] == "warning"
    assert found["long_query"] == "warning"
    blocking = next(f for f in result["findings"] if f["check"] == "blocking")
    assert f"pid {waiter_pid}" in blocking["evidence"] and f"pid {holder_pid}" in blocking["evidence"]


def test_connections_over_the_ratio(pg):
    sessions = [Session(pg, f"idle{i}") for i in range(4)]
    try:
        wait_for(pg, "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE 'idle%' HAVING count(*) = 4")
        rc, result, out = diagnose(pg, connections_warn_ratio=0.01, connections_critical_ratio=0.5)
        assert rc == 0, out
        assert result["connections"]["total"] >= 4 and checks(result)["connections"] == "warning"
        rc, result, out = diagnose(pg, connections_warn_ratio=0.01, connections_critical_ratio=0.02)
        assert checks(result)["connections"] == "critical"
    finally:
        for s in sessions:
            s.close()


def test_over_the_socket_as_postgres(pg):
    rc, result, out = run_module("pg_diagnostics", {"login_host": str(pg.dir), "port": pg.port, "db": DB})
    assert rc == 0, out
    assert result["available"] and result["server"] == f"{pg.dir}/.s.PGSQL.{pg.port}"


def test_over_tls_verify_full(pg):
    tls = {"login_host": "localhost", "ssl_mode": "verify-full", "ca_cert": str(pg.pki["ca"])}
    rc, result, out = diagnose(pg, **tls)
    assert rc == 0, out
    assert result["available"] and result["settings"]["ssl"] == "on"
    # A CA that did not sign the server's certificate: the channel fails, not the login.
    rc, result, out = diagnose(pg, **(tls | {"ca_cert": str(pg.pki["other-ca"])}))
    assert rc == 0 and "Traceback" not in out, out
    assert result["available"] is False and "certificate verify failed" in result["error"]
    assert result["readiness"]["state"] == "tls_failed" and result["readiness"]["server_answered"]
    assert checks(result) == {"tls": "critical"}


def test_wrong_password_is_a_refused_login_not_a_crash(pg):
    rc, result, out = diagnose(pg, login_password="not-the-password")
    assert rc == 0 and "Traceback" not in out, out
    assert result["available"] is False and "password authentication failed" in result["error"]
    assert result["readiness"]["state"] == "login_failed" and result["readiness"]["server_answered"]
    assert checks(result) == {"auth": "critical"}


def test_server_not_running_is_available_false():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, result, out = run_module(
        "pg_diagnostics",
        {"login_host": "127.0.0.1", "port": port, "login_password": "x", "connect_timeout": 3},
    )
    assert rc == 0 and "Traceback" not in out, out
    assert result["available"] is False and "Connection refused" in result["error"]
    assert result["ready"] is False
    assert result["readiness"] == {
        "ready": False,
        "state": "no_response",
        "server_answered": False,
        "in_recovery": None,
        "error": result["error"],
    }
    (only,) = result["findings"]
    assert (
        only["severity"] == "critical" and only["check"] == "readiness" and only["component"] == "postgresql"
    )
    assert f"127.0.0.1:{port}" in only["summary"]
    # The collection's action plugin (plugin_utils/findings_action.py) names the host.
    assert only["host"] == "localhost"


def test_a_corrupt_page_is_a_critical_checksum_failure():
    pg = start_cluster()
    try:
        path = pg.psql("SELECT pg_relation_filepath('accounts')", db=DB)
        pg.psql("CHECKPOINT")
        pg.stop()
        datafile = pg.dir / "data" / path
        with open(datafile, "r+b") as f:  # the middle of the first page: tuples, not the header
            f.seek(4000)
            f.write(b"\xde\xad\xbe\xef" * 16)
        pg.start()
        failed = subprocess.run(
            [
                str(pg.bindir / "psql"),
                "-h",
                str(pg.dir),
                "-p",
                str(pg.port),
                "-U",
                "postgres",
                "-d",
                DB,
                "-c",
                "SELECT count(*) FROM accounts",
            ],
            capture_output=True,
            text=True,
            user="postgres" if os.geteuid() == 0 else None,
        )
        assert "checksum" in failed.stderr, failed.stderr
        rc, result, out = diagnose(pg)
    finally:
        stop_cluster(pg)
    assert rc == 0, out
    assert result["checksums"]["failures"] >= 1
    assert result["checksums"]["by_database"][0]["database"] == DB
    assert checks(result)["checksums"] == "critical"
