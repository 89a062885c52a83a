"""`audit-service verify`: every tenant's chain recomputed from the command line (what the Data
Corruption runbook runs), on a database of its own so that no other test's damage shows."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from audit_devtools.stack import Service, run_cli
from audit_service import chain, store
from conftest import Client, sql, wait_stored


@pytest.fixture(scope="module")
def svc(stack) -> Iterator[Service]:
    s = Service(stack, "audit_verify_cli", RATE_LIMIT_PER_MINUTE="0").start()
    yield s
    s.stop()


_names = iter(range(10**6))


def tenant_with(svc: Service, n: int) -> tuple[Client, list]:
    """A new tenant with n stored events; returns it and its rows (seq, event_id, created_at)."""
    name = f"verify-{next(_names)}"
    tenant_id, key = svc.tenant(name)
    client = Client(svc.url, key, tenant_id)
    if n:
        events = [{"actor": f"user-{i}", "action": "record.update", "target": f"rec-{i}"} for i in range(n)]
        assert client.batch(events).status_code == 202
        wait_stored(svc, tenant_id, n)
    rows = sql(
        svc.database_url,
        "SELECT seq, event_id, created_at, action FROM audit_logs WHERE tenant_id = $1 ORDER BY seq",
        tenant_id,
    )
    return client, rows


def verify(svc: Service, *args: str) -> tuple[int, dict | None, subprocess.CompletedProcess]:
    """Run the CLI with the API's own login (what the runbook uses); (exit code, report, process)."""
    out = run_cli(svc.env, "verify", *args)
    return out.returncode, (json.loads(out.stdout) if out.stdout.strip() else None), out


def by_tenant(report: dict) -> dict[str, dict]:
    return {t["tenant_id"]: t for t in report["tenants"]}


def test_verify_names_the_row_changed_with_sql_and_the_other_tenants_verify(svc):
    victim, rows = tenant_with(svc, 10)
    other, other_rows = tenant_with(svc, 5)
    empty, _ = tenant_with(svc, 0)

    rc, report, out = verify(svc)
    assert rc == 0, out.stderr
    assert report["valid"] is True and report["since"] is None and report["until"] is None
    results = by_tenant(report)
    assert [results[t.tenant_id]["checked"] for t in (victim, other, empty)] == [10, 5, 0]
    summary = report["summary"]
    assert summary["broken"] == 0 and summary["broken_tenants"] == []
    assert summary["tenants"] == summary["valid"] == len(report["tenants"]) >= 3
    assert summary["events_checked"] == sum(t["checked"] for t in report["tenants"])

    changed = rows[3]
    sql(
        svc.database_url, "UPDATE audit_logs SET action = 'tampered' WHERE event_id = $1", changed["event_id"]
    )
    try:
        rc, report, out = verify(svc)
        assert rc == 1, out.stderr
        assert report["valid"] is False
        broken = by_tenant(report)[victim.tenant_id]
        assert broken["valid"] is False and broken["checked"] == 4
        assert broken["first_invalid"] == {
            "event_id": str(changed["event_id"]),
            "seq": 4,
            "created_at": chain.format_time(changed["created_at"]),
        }
        assert broken["problem"] == "hash_mismatch" and "content" in broken["reason"]
        assert by_tenant(report)[other.tenant_id]["valid"] is True
        assert by_tenant(report)[other.tenant_id]["checked"] == 5
        summary = report["summary"]
        assert summary["broken"] == 1 and summary["broken_tenants"] == [victim.tenant_id]
        assert summary["valid"] == summary["tenants"] - 1
        # What the API says of the same chain.
        assert victim.verify()["first_invalid"] == str(changed["event_id"])

        # One tenant alone, by id or by name; and a window that holds the changed row.
        rc, alone, _ = verify(svc, "--tenant", other.tenant_id)
        assert rc == 0 and [t["tenant_id"] for t in alone["tenants"]] == [other.tenant_id]
        name = broken["name"]
        since = (changed["created_at"] - timedelta(minutes=1)).isoformat()
        rc, window, _ = verify(svc, "--tenant", name, "--since", since)
        assert rc == 1 and window["tenants"][0]["first_invalid"]["seq"] == 4
        assert window["since"] == chain.format_time(datetime.fromisoformat(since))
        # A window before any event checks nothing, and so finds nothing broken.
        until = (rows[0]["created_at"] - timedelta(hours=1)).isoformat()
        rc, before, _ = verify(svc, "--tenant", victim.tenant_id, "--until", until)
        assert rc == 0 and before["tenants"][0]["checked"] == 0
    finally:
        sql(
            svc.database_url,
            "UPDATE audit_logs SET action = $2 WHERE event_id = $1",
            changed["event_id"],
            changed["action"],
        )
    rc, healed, _ = verify(svc)
    assert rc == 0 and healed["summary"]["broken"] == 0


def test_verify_tells_a_gap_a_row_linked_elsewhere_and_a_cut_off_head_apart(svc):
    gap, gap_rows = tenant_with(svc, 6)
    relinked, relinked_rows = tenant_with(svc, 6)
    cut, _ = tenant_with(svc, 6)
    sql(svc.database_url, "DELETE FROM audit_logs WHERE event_id = $1", gap_rows[2]["event_id"])
    # Seq 3 of the second tenant rehashed over another prev_hash: its own hash is right, its link not.
    row = store.row_to_event(
        sql(
            svc.database_url,
            f"SELECT {store.VERIFY_COLUMNS} FROM audit_logs WHERE event_id = $1",  # noqa: S608
            relinked_rows[2]["event_id"],
        )[0]
    )
    forged = {**row, "prev_hash": "f" * 64}
    sql(
        svc.database_url,
        "UPDATE audit_logs SET prev_hash = $2, hash = $3 WHERE event_id = $1",
        row["event_id"],
        forged["prev_hash"],
        chain.link(forged["prev_hash"], forged),
    )
    sql(svc.database_url, "DELETE FROM audit_logs WHERE tenant_id = $1 AND seq > 4", cut.tenant_id)

    rc, report, out = verify(svc)
    assert rc == 1, out.stderr
    results = by_tenant(report)
    assert results[gap.tenant_id]["problem"] == "seq_gap"
    assert results[gap.tenant_id]["first_invalid"]["event_id"] == str(gap_rows[3]["event_id"])
    assert results[gap.tenant_id]["first_invalid"]["seq"] == 4
    assert results[relinked.tenant_id]["problem"] == "prev_hash_mismatch"
    assert results[relinked.tenant_id]["first_invalid"]["seq"] == 3
    # Rows cut off at the end: no row is invalid, the chain head says what is missing.
    assert results[cut.tenant_id]["problem"] == "head_mismatch"
    assert results[cut.tenant_id]["first_invalid"] is None and "seq 6" in results[cut.tenant_id]["reason"]
    assert set(report["summary"]["broken_tenants"]) >= {gap.tenant_id, relinked.tenant_id, cut.tenant_id}


def test_verify_refuses_a_bad_time_or_an_unknown_tenant_with_nothing_on_stdout(svc):
    rc, report, out = verify(svc, "--since", "yesterday")
    assert rc == 1 and report is None and "--since must be an RFC 3339" in out.stderr
    rc, report, out = verify(svc, "--until", "2026-01-01T00:00:00")  # no offset
    assert rc == 1 and report is None and "--until" in out.stderr
    rc, report, out = verify(svc, "--tenant", "no-such-tenant")
    assert rc == 1 and report is None and "no tenant named or numbered" in out.stderr
