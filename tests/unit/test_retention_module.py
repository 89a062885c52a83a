"""auditlog.ops.retention without a host: environment files read as systemd reads them, and the
service's retention report turned into findings."""

from __future__ import annotations

from ansible_collections.auditlog.ops.plugins.modules import retention


def test_environment_files_are_read_as_systemd_reads_them():
    text = (
        "# comment\n; also\n\nDATABASE_URL=postgresql://u:p@db1/x?sslmode=verify-full\n"
        "RETENTION_DAYS='90'\nA=\"b c\"\nnoise\n"
    )
    assert retention.read_env_file(text) == {
        "DATABASE_URL": "postgresql://u:p@db1/x?sslmode=verify-full",
        "RETENTION_DAYS": "90",
        "A": "b c",
    }


REPORT = {
    "cutoff": "2026-09-02T10:00:00+00:00",
    "retention_days": 90,
    "dry_run": False,
    "tenants": 1,
    "removed_rows": 30,
    "dropped_partitions": [{"name": "audit_logs_p2026_08", "rows": 30}],
    "deleted_rows": 0,
}


def test_a_run_that_removed_rows_is_one_finding_with_its_remediation():
    (done,) = retention.report_findings(REPORT, check_mode=False)
    assert done["check"] == "retention" and done["remediation"].startswith("audit-service retention")
    assert (
        "removed 30 event(s) older than 90 days" in done["summary"]
        and "audit_logs_p2026_08" in done["summary"]
    )
    (would,) = retention.report_findings(dict(REPORT, dry_run=True), check_mode=True)
    assert "would remove 30" in would["summary"] and would["remediation"] is None


def test_nothing_to_remove_is_no_finding_and_a_skipped_run_is_a_warning():
    assert retention.report_findings(dict(REPORT, removed_rows=0, dropped_partitions=[]), False) == []
    (skipped,) = retention.report_findings({"skipped": "another retention run holds the lock"}, False)
    assert skipped["severity"] == "warning" and "another retention run" in skipped["summary"]
