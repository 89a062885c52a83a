"""auditlog.ops.pg_diagnostics without a server: rows in, facts and findings out."""

from __future__ import annotations

import datetime

import pytest
from ansible_collections.auditlog.ops.plugins.module_utils import postgres
from ansible_collections.auditlog.ops.plugins.modules import pg_diagnostics as pgd

PARAMS = {
    "login_user": "postgres",
    "long_query_seconds": 300.0,
    "idle_in_transaction_seconds": 60.0,
    "connections_warn_ratio": 0.8,
    "connections_critical_ratio": 0.95,
    "cache_hit_warn_ratio": 0.9,
    "cache_hit_info_ratio": 0.99,
    "cache_hit_min_blocks": 100000,
    "slow_statement_ms": 1000.0,
}


def session(pid, state, seconds=1.0, db="audit_logs", user="audit_user", query="SELECT 1"):
    return {
        "pid": pid,
        "database": db,
        "user": user,
        "state": state,
        "state_seconds": seconds,
        "query": query,
    }


def healthy(**over):
    facts = {
        "available": True,
        "server": "127.0.0.1:5432",
        "readiness": {"ready": True, "state": "accepting"},
        "connections": pgd.summarise_connections([session(1, "active"), session(2, "idle")], 100),
        "long_queries": [],
        "blocking": [],
        "checksums": {"enabled": True, "failures": 0, "by_database": [], "last_failure": None},
        "cache": {"hit_ratio": 0.999, "blocks_hit": 10**6, "blocks_read": 100, "by_database": {}},
        "statements": {"available": False, "installed": False},
        "settings": {"shared_buffers": "256MB"},
    }
    facts.update(over)
    return facts


def checks(findings):
    return {f["check"]: f["severity"] for f in findings}


def test_connections_by_state_database_and_user():
    rows = [
        session(1, "active"),
        session(2, "idle"),
        session(3, "idle", user="audit_retention_user"),
        session(4, "idle in transaction", seconds=120, query="UPDATE   t\n SET x = 1"),
        session(5, "idle in transaction", seconds=10),
        session(6, "idle in transaction (aborted)", seconds=61, db="postgres", user="postgres"),
        session(7, None),
    ]
    c = pgd.summarise_connections(rows, "200", reserved="3", idle_threshold=60)
    assert (
        c["active"],
        c["idle"],
        c["idle_in_transaction"],
        c["idle_in_transaction_aborted"],
        c["other"],
    ) == (
        1,
        2,
        2,
        1,
        1,
    )
    assert c["total"] == 7 and c["max_connections"] == 200 and c["used_ratio"] == 0.035
    assert c["by_database"] == {"audit_logs": 6, "postgres": 1}
    assert c["by_user"] == {"audit_retention_user": 1, "audit_user": 5, "postgres": 1}
    assert c["idle_in_transaction_oldest_seconds"] == 120
    # Over the threshold only, oldest first, the query on one line.
    assert [s["pid"] for s in c["idle_in_transaction_sessions"]] == [4, 6]
    assert c["idle_in_transaction_sessions"][0]["query"] == "UPDATE t SET x = 1"
    pair = next(p for p in c["by_database_user"] if p["user"] == "audit_user")
    assert pair == {
        "database": "audit_logs",
        "user": "audit_user",
        "active": 1,
        "idle": 1,
        "idle_in_transaction": 2,
        "total": 5,
    }


def test_cache_and_checksums_summaries():
    rows = [
        {"database": None, "blks_hit": 10, "blks_read": 0, "checksum_failures": 0},
        {
            "database": "audit_logs",
            "blks_hit": 90,
            "blks_read": 10,
            "checksum_failures": 2,
            "checksum_last_failure": datetime.datetime(2026, 12, 1, 10, 0, tzinfo=datetime.UTC),
        },
        {"database": "template0", "blks_hit": 0, "blks_read": 0, "checksum_failures": None},
    ]
    cache = pgd.cache_summary(rows)
    assert cache == {
        "hit_ratio": round(100 / 110, 4),
        "blocks_hit": 100,
        "blocks_read": 10,
        "by_database": {"audit_logs": 0.9, "template0": None},
    }
    sums = pgd.checksums_summary("on", rows)
    assert sums["enabled"] is True and sums["failures"] == 2
    assert sums["by_database"] == [
        {"database": "audit_logs", "failures": 2, "last_failure": "2026-12-01T10:00:00+00:00"}
    ]
    assert pgd.checksums_summary("off", [])["enabled"] is False


def test_a_healthy_server_has_no_findings():
    assert pgd.diagnose(healthy(), PARAMS) == []


@pytest.mark.parametrize(
    ("state", "check", "words"),
    [
        ("no_response", "readiness", "does not answer"),
        ("rejecting", "readiness", "rejects connections"),
        ("login_failed", "auth", "refused the login of postgres"),
        ("tls_failed", "tls", "the TLS connection failed"),
    ],
)
def test_not_ready_is_critical(state, check, words):
    facts = {
        "available": False,
        "error": "boom",
        "server": "db1:5432",
        "readiness": {"ready": False, "state": state},
    }
    (only,) = pgd.diagnose(facts, PARAMS)
    assert only["severity"] == "critical" and only["check"] == check and only["component"] == "postgresql"
    assert words in only["summary"] and "db1:5432" in only["summary"] and only["evidence"] == "boom"


@pytest.mark.parametrize(
    ("message", "state"),
    [
        (
            'connection to server at "127.0.0.1", port 5 failed: Connection refused\n\tIs the server',
            "no_response",
        ),
        ("FATAL:  the database system is starting up", "rejecting"),
        ("FATAL:  sorry, too many clients already", "rejecting"),
        ('FATAL:  password authentication failed for user "audit_user"', "login_failed"),
        ('FATAL:  no pg_hba.conf entry for host "10.0.0.9"', "login_failed"),
        ("timeout expired", "no_response"),
        ("SSL error: certificate verify failed", "tls_failed"),
        ('server certificate for "db1" does not match host name "db2"', "tls_failed"),
    ],
)
def test_readiness_from_libpq_errors(message, state):
    r = postgres.readiness_from_error(message)
    assert r["state"] == state and r["ready"] is False
    assert r["server_answered"] is (state != "no_response") and "\n" not in r["error"]


def test_connections_thresholds():
    rows = [session(i, "idle") for i in range(85)]
    found = checks(pgd.diagnose(healthy(connections=pgd.summarise_connections(rows, 100)), PARAMS))
    assert found == {"connections": "warning"}
    rows = [session(i, "active") for i in range(96)]
    findings = pgd.diagnose(healthy(connections=pgd.summarise_connections(rows, 100)), PARAMS)
    assert checks(findings) == {"connections": "critical"}
    assert findings[0]["variable"] == "postgresql_max_connections" and "96 of 100" in findings[0]["summary"]


def test_idle_in_transaction_long_queries_and_blocking():
    conns = pgd.summarise_connections([session(10, "idle in transaction", seconds=90)], 100)
    blocking = [
        {
            "blocked_pid": 11,
            "blocked_user": "audit_user",
            "blocked_query": "UPDATE t",
            "blocked_seconds": 30.0,
            "blocking_pid": 10,
            "blocking_user": "audit_user",
            "blocking_state": "idle in transaction",
            "blocking_query": "UPDATE t",
            "database": "audit_logs",
        }
    ]
    long_queries = [
        {"pid": 11, "user": "audit_user", "database": "audit_logs", "seconds": 400.0, "query": "x"}
    ]
    findings = pgd.diagnose(healthy(connections=conns, blocking=blocking, long_queries=long_queries), PARAMS)
    assert checks(findings) == {
        "idle_in_transaction": "warning",
        "long_query": "warning",
        "blocking": "warning",
    }
    block = next(f for f in findings if f["check"] == "blocking")
    assert "pid(s) 10" in block["summary"] and "pid 11" in block["evidence"]


def test_checksums_cache_and_statements():
    failing = {
        "enabled": True,
        "failures": 3,
        "by_database": [{"database": "a", "failures": 3, "last_failure": "t"}],
    }
    assert checks(pgd.diagnose(healthy(checksums=failing), PARAMS)) == {"checksums": "critical"}
    off = {"enabled": False, "failures": 0, "by_database": [], "last_failure": None}
    assert checks(pgd.diagnose(healthy(checksums=off), PARAMS)) == {"checksums": "info"}
    # Unreadable pg_stat_database is no "checksums off".
    assert pgd.diagnose(healthy(checksums={"available": False, "error": "x"}), PARAMS) == []

    def cache(ratio, blocks=10**6):
        return {"hit_ratio": ratio, "blocks_hit": blocks, "blocks_read": 0, "by_database": {}}

    assert checks(pgd.diagnose(healthy(cache=cache(0.95)), PARAMS)) == {"cache_hit_ratio": "info"}
    assert checks(pgd.diagnose(healthy(cache=cache(0.5)), PARAMS)) == {"cache_hit_ratio": "warning"}
    assert pgd.diagnose(healthy(cache=cache(0.5, blocks=10)), PARAMS) == []  # still cold

    top = [{"mean_ms": 1500.0, "calls": 3, "total_ms": 4500.0, "query": "SELECT slow"}, {"mean_ms": 2.0}]
    findings = pgd.diagnose(healthy(statements={"available": True, "top": top}), PARAMS)
    assert checks(findings) == {"slow_statement": "warning"} and "SELECT slow" in findings[0]["evidence"]
    assert (
        pgd.diagnose(healthy(statements={"available": True, "top": top}), dict(PARAMS, slow_statement_ms=0))
        == []
    )


def test_statements_query_names_the_columns_of_the_server_version():
    new = pgd.statements_query(150000, '"public"', "mean_time")
    assert "mean_exec_time" in new and "ORDER BY mean_ms DESC" in new and '"public".pg_stat_statements' in new
    old = pgd.statements_query(120000, '"public"', "total_time")
    assert "s.mean_time" in old and "exec_time" not in old and "ORDER BY total_ms" in old


def test_connect_kwargs_socket_and_tcp():
    spec = postgres.postgres_common_argument_spec()
    params = {name: option.get("default") for name, option in spec.items()}
    assert spec["login_password"]["no_log"] is True
    kw = postgres.connect_kwargs(params)
    assert kw["host"] == "/run/postgresql" and "sslmode" not in kw and "password" not in kw
    assert postgres.server_address(params) == "/run/postgresql/.s.PGSQL.5432"
    params.update(login_host="db1", ssl_mode="verify-full", ca_cert="/etc/ca.crt", login_password="pw")
    kw = postgres.connect_kwargs(params)
    assert kw["sslmode"] == "verify-full" and kw["sslrootcert"] == "/etc/ca.crt" and kw["password"] == "pw"
    assert postgres.server_address(params) == "db1:5432"
