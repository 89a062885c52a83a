"""auditlog.ops.pg_terminate without a server: sessions in, the chosen ones and findings out;
and pg_diagnostics' holders (who holds the connections)."""

from __future__ import annotations

from ansible_collections.auditlog.ops.plugins.modules import pg_diagnostics as pgd
from ansible_collections.auditlog.ops.plugins.modules import pg_terminate as pgt

NONE = dict.fromkeys(pgt.CRITERIA) | {
    "databases": [],
    "users": [],
    "application_names": [],
    "exclude_application_names": [],
}


def row(pid, state, state_seconds=0.0, query_seconds=0.0, app="psql", blocks=(), waiting=False, blocked=None):
    return {
        "pid": pid,
        "user": "audit_user",
        "database": "audit_logs",
        "application_name": app,
        "client_addr": "10.0.0.5",
        "state": state,
        "state_seconds": state_seconds,
        "query_seconds": query_seconds,
        "query": "SELECT  1\n",
        "blocks": list(blocks),
        "waiting": waiting,
        "blocked_seconds": blocked,
    }


def test_each_criterion_chooses_only_its_state_and_age():
    rows = [
        row(1, "idle in transaction", state_seconds=90),
        row(2, "idle in transaction (aborted)", state_seconds=61),
        row(3, "idle in transaction", state_seconds=30),
        row(4, "active", query_seconds=400),
        row(5, "idle", state_seconds=900),
    ]
    assert [s["pid"] for s in pgt.choose(rows, NONE | {"idle_in_transaction_seconds": 60})] == [1, 2]
    assert [s["pid"] for s in pgt.choose(rows, NONE | {"active_seconds": 300})] == [4]
    assert [s["pid"] for s in pgt.choose(rows, NONE | {"idle_seconds": 600})] == [5]
    assert pgt.choose(rows, NONE) == []


def test_only_the_head_of_a_chain_of_waiters_is_a_blocker():
    rows = [
        row(10, "idle in transaction", state_seconds=5, blocks=[11], blocked=40),
        row(11, "active", query_seconds=40, blocks=[12], waiting=True, blocked=20),
        row(12, "active", query_seconds=20, waiting=True),
    ]
    chosen = pgt.choose(rows, NONE | {"blocking_seconds": 30})
    assert [(s["pid"], s["reasons"], s["blocks"]) for s in chosen] == [(10, ["blocking"], [11])]
    # Under the threshold of the wait, nobody.
    assert pgt.choose(rows, NONE | {"blocking_seconds": 60}) == []


def test_the_filters_scope_the_choice_and_the_exclusions_win():
    rows = [
        row(1, "idle", 100, app="audit-api"),
        row(2, "idle", 100, app="leaky"),
        row(3, "idle", 100, app=""),
    ]
    params = NONE | {"idle_seconds": 10}
    assert [s["pid"] for s in pgt.choose(rows, params | {"application_names": ["leaky"]})] == [2]
    assert [s["pid"] for s in pgt.choose(rows, params | {"exclude_application_names": ["audit-api"]})] == [
        2,
        3,
    ]
    assert pgt.choose(rows, params | {"users": ["someone_else"]}) == []


def test_findings_say_what_was_done_and_in_check_mode_what_would_be():
    (s,) = pgt.choose(
        [row(7, "idle in transaction", 75, blocks=[8], blocked=12)],
        NONE | {"idle_in_transaction_seconds": 60, "blocking_seconds": 0},
    )
    assert (
        s["reasons"] == ["idle_in_transaction", "blocking"]
        and s["seconds"] == 75
        and s["query"] == "SELECT 1"
    )
    listed = pgt.session_findings([s], terminate=False, check_mode=False)[0]
    assert listed["remediation"] is None and listed["severity"] == "critical"
    assert listed["summary"] == (
        "1 session of audit_user@audit_logs from 10.0.0.5, psql idle in a transaction for up to 75 s (pid 7),"
        " also blocking others; blocks pid 8"
    )
    assert pgt.session_findings([s], True, True)[0]["remediation"] == "would end pid 7 (pg_terminate_backend)"
    ended = dict(s, ended=True)
    assert (
        pgt.session_findings([ended], True, False)[0]["remediation"] == "ended pid 7 (pg_terminate_backend)"
    )
    gone = dict(s, ended=False)
    assert "gone or changed" in pgt.session_findings([gone], True, False)[0]["remediation"]


def test_a_leak_of_many_sessions_is_one_finding_per_client():
    rows = [row(i, "idle", 100 + i, app="leaky") for i in range(30)] + [row(99, "idle", 500, app="other")]
    findings = pgt.session_findings(pgt.choose(rows, NONE | {"idle_seconds": 10}), False, False)
    assert [f["summary"].split(" session")[0] for f in findings] == ["1", "30"]
    leak = findings[1]
    assert "for up to 129 s" in leak["summary"] and "and 20 more" in leak["summary"], leak["summary"]
    assert len(leak["evidence"]) == pgt.EVIDENCE_SESSIONS and leak["severity"] == "warning"


def test_diagnostics_name_who_holds_the_connections():
    rows = [
        {
            "pid": i,
            "database": "audit_logs",
            "user": "audit_user",
            "state": "idle",
            "application_name": "leaky",
            "client_addr": "10.0.0.9",
            "state_seconds": 5,
            "query": "",
        }
        for i in range(8)
    ] + [
        {
            "pid": 99,
            "database": "audit_logs",
            "user": "audit_user",
            "state": "active",
            "application_name": "audit-api",
            "client_addr": "10.0.0.5",
            "state_seconds": 1,
            "query": "",
        }
    ]
    conns = pgd.summarise_connections(rows, 10)
    top = conns["holders"][0]
    assert (top["application_name"], top["client_addr"], top["total"], top["by_state"]) == (
        "leaky",
        "10.0.0.9",
        8,
        {"idle": 8},
    )
    found = [
        f
        for f in pgd.diagnose(
            {"available": True, "readiness": {"ready": True}, "connections": conns}, {**PARAMS}
        )
        if f["check"] == "connections"
    ]
    assert found and "most by audit_user/leaky from 10.0.0.9: 8 (idle 8)" in found[0]["summary"], found


# pg_diagnostics' thresholds as the module defaults them.
PARAMS = {name: spec["default"] for name, spec in pgd.argument_spec().items() if "default" in spec}
