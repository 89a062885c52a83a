"""auditlog.ops.pg_terminate against a real PostgreSQL on loopback (tests/support/pgcluster.py):
sessions held idle in a transaction, blocking each other or idle, chosen, listed in check mode and
without `terminate`, ended only with it, and nobody else ended. No lab, no containers."""

from __future__ import annotations

import time

import pytest
from support.modules import run_module
from support.pgcluster import DB, Session, needs_psycopg2, wait_for

pytestmark = needs_psycopg2


def terminate(pg, *flags: str, **args) -> tuple[int, dict, str]:
    params = {
        "login_host": "127.0.0.1",
        "port": pg.port,
        "login_user": "postgres",
        "login_password": pg.password,
        "db": DB,
        "connect_timeout": 5,
    } | args
    return run_module("pg_terminate", params, *flags)


def alive(pg, name: str) -> bool:
    return pg.psql(f"SELECT count(*) FROM pg_stat_activity WHERE application_name = '{name}'") != "0"


@pytest.fixture
def blocker_and_waiter(pg):
    """`holder` idle in a transaction holding a row lock, `waiter` waiting for it, `bystander` idle."""
    holder, waiter, bystander = Session(pg, "holder"), Session(pg, "waiter"), Session(pg, "bystander")
    holder.send("BEGIN; UPDATE accounts SET balance = balance - 1 WHERE id = 1;")
    wait_for(
        pg,
        "SELECT 1 FROM pg_stat_activity WHERE application_name = 'holder' AND state = 'idle in transaction'",
    )
    waiter.send("UPDATE accounts SET balance = balance + 1 WHERE id = 1;")
    wait_for(
        pg, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'waiter' AND wait_event_type = 'Lock'"
    )
    bystander.send("SELECT 1;")
    wait_for(pg, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'bystander' AND state = 'idle'")
    time.sleep(1.2)  # ages over the 1-second thresholds below
    yield holder, waiter, bystander
    for s in (holder, waiter, bystander):
        s.close()


def test_the_blocker_is_chosen_and_listed_but_not_ended_without_terminate(pg, blocker_and_waiter):
    rc, result, out = terminate(pg, blocking_seconds=1, idle_in_transaction_seconds=1)
    assert rc == 0, out
    assert result["changed"] is False and result["terminated"] == [], result
    (chosen,) = result["sessions"]
    assert chosen["application_name"] == "holder", result["sessions"]
    assert set(chosen["reasons"]) == {"idle_in_transaction", "blocking"}
    waiter_pid = int(pg.psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'waiter'"))
    assert chosen["blocks"] == [waiter_pid] and chosen["state"] == "idle in transaction"
    (told,) = result["findings"]
    assert told["severity"] == "critical" and told["remediation"] is None, told
    assert f"blocks pid {waiter_pid}" in told["summary"] and "holder" in told["summary"], told
    assert alive(pg, "holder")


def test_check_mode_says_whom_it_would_end_and_ends_nobody(pg, blocker_and_waiter):
    rc, result, out = terminate(pg, "--check", blocking_seconds=1, terminate=True)
    assert rc == 0, out
    assert result["changed"] is True and len(result["terminated"]) == 1, result
    assert result["findings"][0]["remediation"].startswith("would end pid"), result["findings"]
    assert alive(pg, "holder") and alive(pg, "waiter")


def test_terminate_ends_the_blocker_only_and_the_waiter_goes_on(pg, blocker_and_waiter):
    rc, result, out = terminate(pg, blocking_seconds=1, terminate=True)
    assert rc == 0, out
    assert result["changed"] is True and result["counts"]["ended"] == 1, result
    assert result["sessions"][0]["ended"] is True
    assert result["findings"][0]["remediation"].startswith("ended pid"), result["findings"]
    assert not alive(pg, "holder")
    # The waiter got its lock and finished; the bystander was never in scope.
    wait_for(pg, "SELECT 1 FROM pg_stat_activity WHERE application_name = 'waiter' AND state = 'idle'")
    assert alive(pg, "bystander")
    rc, again, out = terminate(pg, blocking_seconds=1, terminate=True)
    assert rc == 0 and again["changed"] is False and again["sessions"] == [], again


def test_idle_sessions_by_age_within_the_application_filter(pg, blocker_and_waiter):
    rc, result, out = terminate(pg, idle_seconds=1, application_names=["bystander"], terminate=True)
    assert rc == 0, out
    assert [s["application_name"] for s in result["sessions"]] == ["bystander"], result
    assert result["findings"][0]["check"] == "idle"
    assert not alive(pg, "bystander") and alive(pg, "holder")


def test_no_criterion_is_a_clear_error(pg):
    rc, result, out = terminate(pg, terminate=True)
    assert rc != 0 and "give at least one of idle_in_transaction_seconds" in result["msg"], out


def test_a_server_that_is_not_there_is_a_finding_not_a_crash(pg):
    rc, result, out = terminate(pg, port=1, idle_seconds=1)
    assert rc == 0, out
    assert result["available"] is False and result["changed"] is False, result
    assert result["findings"][0]["severity"] == "critical", result
