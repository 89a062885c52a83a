"""auditlog.ops.chain_verify without a host: the report `audit-service verify` prints (made here by
the service's own cli.verify_view and dumps, so that the module reads exactly what the CLI
writes) turned into findings, and module_utils/service_cli.py's run of the CLI (exit codes, the
report on the last line) with a stand-in for AnsibleModule."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest
from ansible_collections.auditlog.ops.plugins.module_utils import service_cli
from ansible_collections.auditlog.ops.plugins.modules import chain_verify
from audit_service import chain, cli
from audit_service.models import dumps

ACME = {"id": uuid.UUID("8c0e7a52-51b8-4a4f-9d0c-2f6f1f1b6c11"), "name": "acme"}
GLOBEX = {"id": uuid.UUID("0b1d2c3e-0000-4000-8000-000000000002"), "name": "globex"}
EVENT = "0196b3a1-7f1e-7c3a-9d51-44e2b1f0a9c2"
RECEIVED = datetime(2026, 5, 1, 10, 0, 0, 123456, tzinfo=UTC)


def cli_report(*results, since=None, until=None) -> dict:
    """What `audit-service verify` prints, as the module reads it (JSON on one line)."""
    tenants = [cli.verify_view(t, r) for t, r in results]
    report = {
        "valid": all(t["valid"] for t in tenants),
        "since": since,
        "until": until,
        "tenants": tenants,
        "summary": cli.verify_summary(tenants),
    }
    line = dumps(report).decode()
    assert "\n" not in line
    return service_cli.last_json("audit-service: warning: something\n" + line + "\n")


VALID = chain.VerifyResult(True, 12, None, None, 12, "ab" * 32)
CHANGED = chain.VerifyResult(
    False,
    8,
    EVENT,
    "stored hash does not match the event's content",
    invalid_seq=8,
    invalid_created_at=RECEIVED,
    problem="hash_mismatch",
)
CUT = chain.VerifyResult(
    False,
    20,
    None,
    "chain head is at seq 25 but stored events end at seq 20: newest events are missing or were altered",
    problem="head_mismatch",
)


def test_the_clis_report_names_the_first_invalid_event_by_id_seq_and_receipt_time():
    report = cli_report((ACME, CHANGED), (GLOBEX, VALID))
    broken, fine = report["tenants"]
    assert broken == {
        "tenant_id": str(ACME["id"]),
        "name": "acme",
        "valid": False,
        "checked": 8,
        "first_invalid": {"event_id": EVENT, "seq": 8, "created_at": "2026-05-01T10:00:00.123456Z"},
        "problem": "hash_mismatch",
        "reason": "stored hash does not match the event's content",
    }
    assert fine["first_invalid"] is None and fine["problem"] is None
    assert report["summary"] == {
        "tenants": 2,
        "valid": 1,
        "broken": 1,
        "events_checked": 20,
        "broken_tenants": [str(ACME["id"])],
    }


def test_a_broken_tenant_is_critical_naming_its_event_and_recovery_and_the_others_say_nothing():
    findings = chain_verify.verify_findings(cli_report((ACME, CHANGED), (GLOBEX, VALID)))
    (broken,) = findings
    assert (broken["severity"], broken["component"], broken["check"]) == (
        "critical",
        "postgresql",
        "chain_verify",
    )
    summary = broken["summary"]
    assert summary.startswith(f"tenant acme ({ACME['id']}): hash chain broken at event {EVENT} (seq 8,")
    assert "received 2026-05-01T10:00:00.123456Z" in summary and "hash mismatch" in summary
    assert "the 7 event(s) before it verify" in summary
    assert "point-in-time recovery" in summary and "(the recovery runbooks)" in summary
    assert broken["evidence"]["first_invalid"]["event_id"] == EVENT and broken["remediation"] is None


def test_rows_cut_off_at_the_end_name_no_event_but_the_head_and_a_window_is_said():
    report = cli_report((ACME, CUT), since="2026-05-01T00:00:00.000000Z")
    (cut,) = chain_verify.verify_findings(report)
    assert "received since 2026-05-01T00:00:00.000000Z" in cut["summary"]
    assert "the newest events are missing" in cut["summary"] and "seq 25" in cut["summary"]
    assert "at event" not in cut["summary"]


def test_every_chain_valid_is_one_info_finding_with_the_counts():
    (ok,) = chain_verify.verify_findings(cli_report((ACME, VALID), (GLOBEX, VALID)))
    assert ok["severity"] == "info" and "2 tenant(s), 24 event(s) checked" in ok["summary"]
    assert ok["evidence"]["broken"] == 0
    (none,) = chain_verify.verify_findings(cli_report())
    assert none["severity"] == "info" and "0 tenant(s)" in none["summary"]


def test_past_the_limit_the_other_broken_tenants_share_one_finding():
    many = [({"id": uuid.uuid4(), "name": f"t{i}"}, CHANGED) for i in range(5)]
    findings = chain_verify.verify_findings(cli_report(*many), limit=2)
    assert [f["severity"] for f in findings] == ["critical"] * 3
    assert findings[2]["summary"].startswith("3 more tenant(s)") and len(findings[2]["evidence"]) == 3


def test_the_cli_arguments():
    assert chain_verify.cli_args() == ["verify"]
    assert chain_verify.cli_args("acme", "2026-05-01T00:00:00Z", None) == [
        "verify",
        "--tenant",
        "acme",
        "--since",
        "2026-05-01T00:00:00Z",
    ]


class Failed(Exception):
    pass


class FakeModule:
    """What service_cli.run uses of AnsibleModule."""

    def __init__(self, rc, out, err=""):
        self.answer = (rc, out, err)
        self.calls = []

    def run_command(self, argv, environ_update=None):
        self.calls.append((argv, environ_update))
        return self.answer

    def fail_json(self, msg, **kw):
        raise Failed(msg)


@pytest.fixture
def script(tmp_path):
    command = tmp_path / "audit-service"
    command.write_text("#!/bin/sh\n")
    command.chmod(0o755)
    env = tmp_path / "a.env"
    env.write_text("DATABASE_URL=postgresql://u:secret@db1/audit_logs\nLOG_LEVEL='INFO'\n")
    return str(command), [str(env)]


def test_run_passes_the_environment_not_the_command_line_and_takes_a_broken_chains_exit_code(script):
    command, env_files = script
    line = orjson.dumps(cli_report((ACME, CHANGED))).decode()
    module = FakeModule(1, line + "\n")
    rc, report = service_cli.run(module, command, env_files, "audit-service", ["verify"], ok_rcs=(0, 1))
    assert rc == 1 and report["tenants"][0]["problem"] == "hash_mismatch"
    ((argv, environ),) = module.calls
    assert argv == ["runuser", "-u", "audit-service", "--", command, "verify"]
    assert environ["DATABASE_URL"].endswith("@db1/audit_logs") and environ["LOG_LEVEL"] == "INFO"
    assert "secret" not in " ".join(argv)


def test_run_fails_on_an_error_exit_without_report_on_another_code_and_on_no_report(script):
    command, env_files = script
    error = FakeModule(1, "", "audit-service: no tenant named or numbered 'x'")
    with pytest.raises(Failed, match="audit-service verify exited 1: audit-service: no tenant named"):
        service_cli.run(error, command, env_files, "audit-service", ["verify"], ok_rcs=(0, 1))
    with pytest.raises(Failed, match="exited 2"):
        service_cli.run(FakeModule(2, "", "configuration error"), command, env_files, "u", ["verify"], (0, 1))
    with pytest.raises(Failed, match="printed no report"):
        service_cli.run(FakeModule(0, "not json\n"), command, env_files, "u", ["verify"])
    with pytest.raises(Failed, match="cannot read the environment file"):
        service_cli.run(FakeModule(0, "{}"), command, [env_files[0] + ".missing"], "u", ["verify"])
    with pytest.raises(Failed, match="is not there or not executable"):
        service_cli.run(FakeModule(0, "{}"), command + ".missing", env_files, "u", ["verify"])
