"""The pure logic of the named backups (module_utils/backups.py, auditlog.ops.pg_backup,
auditlog.ops.stream_replay): names, what `pgbackrest info --output=json` and `pgbackrest verify`
say, file sums against a manifest. The backups themselves are proven on the lab
(tests/lab/test_runbooks_backup.py)."""

from __future__ import annotations

from datetime import UTC, datetime

from ansible_collections.auditlog.ops.plugins.module_utils import backups
from ansible_collections.auditlog.ops.plugins.modules import pg_backup, stream_replay

# As pgBackRest 2.55 prints it (trimmed to one stanza with one full and one incremental backup).
INFO = [
    {
        "name": "audit",
        "status": {"code": 0, "message": "ok"},
        "backup": [
            {
                "annotation": {"audit-name": "backup_20261206_174532"},
                "archive": {"start": "000000010000000000000002", "stop": "000000010000000000000003"},
                "error": False,
                "info": {
                    "delta": 31189933,
                    "repository": {"delta": 6028918, "size": 6028918},
                    "size": 31189933,
                },
                "label": "20261206-174532F",
                "lsn": {"start": "0/2000028", "stop": "0/3000088"},
                "prior": None,
                "timestamp": {"start": 1796579132, "stop": 1796579134},
                "type": "full",
            },
            {
                "archive": {"start": "000000010000000000000005", "stop": "000000010000000000000005"},
                "error": False,
                "info": {"delta": 100, "repository": {"delta": 50, "size": 6028999}, "size": 31189999},
                "label": "20261206-174532F_20261206-180000I",
                "lsn": {"start": "0/5000028", "stop": "0/5000120"},
                "prior": "20261206-174532F",
                "timestamp": {"start": 1796580000, "stop": 1796580002},
                "type": "incr",
            },
        ],
    }
]


def test_a_new_name_is_the_guides_backup_yyyymmdd_hhmmss_in_utc():
    assert backups.new_name(datetime(2026, 5, 1, 12, 0, 9, tzinfo=UTC)) == "backup_20260501_120009"


def test_a_name_that_is_not_a_plain_file_name_is_refused_naming_it():
    assert backups.check_name("backup_20260501_120009") is None
    for bad in ("", "../etc/passwd", "a b", "x" * 101, ".hidden"):
        assert repr(bad) in backups.check_name(bad)


def test_backup_sets_read_names_labels_types_times_and_sizes_from_pgbackrest_info():
    full, incr = backups.backup_sets(INFO, "audit")
    assert full["name"] == "backup_20261206_174532" and full["label"] == "20261206-174532F"
    assert full["type"] == "full" and full["stopped"] == "2026-12-06T17:45:34Z"
    assert full["repo_size"] == 6028918 and full["wal_stop"] == "000000010000000000000003"
    assert incr["name"] is None and incr["prior"] == "20261206-174532F" and incr["repo_size"] == 50
    assert backups.backup_sets(INFO, "other") == []


def test_find_takes_a_name_or_a_label():
    sets = backups.backup_sets(INFO, "audit")
    assert backups.find(sets, "backup_20261206_174532")["label"] == "20261206-174532F"
    assert backups.find(sets, "20261206-174532F_20261206-180000I")["type"] == "incr"
    assert backups.find(sets, "backup_19990101_000000") is None


def test_a_stanza_without_backups_is_status_2_and_a_missing_one_is_named():
    assert (
        backups.stanza_status(
            [{"name": "audit", "status": {"code": 2, "message": "no valid backups"}}], "audit"
        )[0]
        == 2
    )
    assert backups.stanza_status(INFO, "nope") == (None, "stanza nope not found")


def test_file_sums_and_their_comparison_name_changed_missing_and_added_files(tmp_path):
    (tmp_path / "pg_data").mkdir()
    (tmp_path / "pg_data" / "a").write_bytes(b"one")
    (tmp_path / "backup.manifest").write_bytes(b"two")
    recorded = backups.file_sums(tmp_path)
    assert set(recorded) == {"pg_data/a", "backup.manifest"}
    assert recorded["pg_data/a"] == "7692c3ad3540bb803c020b3aee66cd8887123234ea0c6e7143c0add73ff431ed"
    (tmp_path / "pg_data" / "a").write_bytes(b"ONE")
    (tmp_path / "backup.manifest").unlink()
    (tmp_path / "pg_data" / "b").write_bytes(b"new")
    assert backups.compare_sums(recorded, backups.file_sums(tmp_path)) == {
        "changed": ["pg_data/a"],
        "missing": ["backup.manifest"],
        "added": ["pg_data/b"],
    }


def test_the_manifest_counts_every_tenants_events():
    full = backups.backup_sets(INFO, "audit")[0]
    tenants = [
        {"tenant_id": "t1", "name": "acme", "events": 3},
        {"tenant_id": "t2", "name": "globex", "events": 0},
    ]
    data = backups.manifest(full, "audit", "audit_logs", tenants, 7, {"f": "0" * 64}, "2026-12-06T17:45:40Z")
    assert data["events"] == 3 and data["stream_seq_max"] == 7 and data["name"] == "backup_20261206_174532"


def test_pgbackrest_verify_text_is_read_per_backup_set():
    text = """status: error
  archiveId: 17-1, total WAL checked: 2, total valid WAL: 2
  backup: 20261206-174532F, status: invalid, total files checked: 1261, total valid files: 1260
    missing: 0, checksum invalid: 1, size invalid: 0, other: 0
  backup: 20261206-180000F, status: valid, total files checked: 1261, total valid files: 1261"""
    assert pg_backup.pgbackrest_verdicts(text) == {"20261206-174532F": "invalid", "20261206-180000F": "valid"}
    assert pg_backup.pgbackrest_verdicts("") == {}


def test_stream_replay_passes_the_first_sequence_and_says_what_it_stored():
    assert stream_replay.cli_args() == ["replay"]
    assert stream_replay.cli_args(42) == ["replay", "--from-seq", "42"]
    summary = stream_replay.replay_summary(
        {"stream": "AUDIT", "from_seq": 1, "to_seq": 90, "messages": 90, "stored": 40, "duplicates": 50}
    )
    assert "from sequence 1 to 90" in summary and "40 event(s) the database lacked stored, 50" in summary
