# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""Named backups on top of pgBackRest, for auditlog.ops.pg_backup: the names, what `pgbackrest
info --output=json` says about each backup set, the manifests and their verification.

A named backup is a pgBackRest backup set whose annotation ``audit-name`` holds the guide's name,
``backup_YYYYMMDD_HHMMSS``. Its manifest (``<repo>/manifests/<name>.json``) records the sha256 of
every file of the set, and the database it holds: the events per tenant, each tenant's chain head
and the highest stream sequence stored.
"""

import datetime
import hashlib
import os
import re

ANNOTATION = "audit-name"
NAME_FORMAT = "backup_%Y%m%d_%H%M%S"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
MANIFEST_VERSION = 1


def new_name(now=None):
    """The guide's name for a backup taken now (UTC): backup_YYYYMMDD_HHMMSS."""
    now = now or datetime.datetime.now(datetime.UTC)
    return now.strftime(NAME_FORMAT)


def check_name(name):
    """None when `name` may name a backup (it becomes a file name), else why not."""
    if not NAME_RE.match(name or ""):
        return (
            f"{name!r} is not a backup name: letters, digits, '_', '.' and '-', at most 100,"
            " like backup_20260501_120000"
        )
    return None


def _iso(epoch):
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC).isoformat().replace("+00:00", "Z")


def backup_sets(info, stanza):
    """The backup sets of `stanza` in `pgbackrest info --output=json`, oldest first, each as
    {label, name, type, started, stopped, prior, size, repo_size, lsn_start, lsn_stop, wal_start,
    wal_stop, error}. name: the annotation's, None for a backup taken without one."""
    for entry in info or []:
        if entry.get("name") != stanza:
            continue
        out = []
        for b in entry.get("backup") or []:
            ts = b.get("timestamp") or {}
            archive = b.get("archive") or {}
            lsn = b.get("lsn") or {}
            sizes = b.get("info") or {}
            repo = sizes.get("repository") or {}
            out.append(
                {
                    "label": b.get("label"),
                    "name": (b.get("annotation") or {}).get(ANNOTATION),
                    "type": b.get("type"),
                    "prior": b.get("prior"),
                    "started": _iso(ts.get("start")),
                    "stopped": _iso(ts.get("stop")),
                    "size": sizes.get("size"),
                    "repo_size": repo.get("delta", repo.get("size")),
                    "lsn_start": lsn.get("start"),
                    "lsn_stop": lsn.get("stop"),
                    "wal_start": archive.get("start"),
                    "wal_stop": archive.get("stop"),
                    "error": bool(b.get("error")),
                }
            )
        return out
    return []


def stanza_status(info, stanza):
    """pgBackRest's status of the stanza: (code, message); code 0 is ok, None when not there."""
    for entry in info or []:
        if entry.get("name") == stanza:
            status = entry.get("status") or {}
            return status.get("code"), status.get("message")
    return None, f"stanza {stanza} not found"


def find(sets, name):
    """The backup set named `name` (its annotation), else the one labelled `name`, else None."""
    for b in sets:
        if b["name"] == name:
            return b
    for b in sets:
        if b["label"] == name:
            return b
    return None


def file_sums(root):
    """{path relative to root: sha256 hex} of every file under root."""
    sums = {}
    for base, dirs, files in os.walk(root):
        dirs.sort()
        for f in sorted(files):
            path = os.path.join(base, f)
            sums[os.path.relpath(path, root)] = sha256_file(path)
    return sums


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def compare_sums(recorded, actual):
    """What changed between the manifest's sums and the files now: {changed, missing, added}."""
    recorded, actual = recorded or {}, actual or {}
    return {
        "changed": sorted(p for p in recorded if p in actual and actual[p] != recorded[p]),
        "missing": sorted(p for p in recorded if p not in actual),
        "added": sorted(p for p in actual if p not in recorded),
    }


def manifest(backup, stanza, database, tenants, stream_seq_max, files, counted_at):
    """The manifest of a named backup (see the module docstring)."""
    return {
        "version": MANIFEST_VERSION,
        "name": backup["name"],
        "label": backup["label"],
        "type": backup["type"],
        "stanza": stanza,
        "started": backup["started"],
        "stopped": backup["stopped"],
        "wal_start": backup["wal_start"],
        "wal_stop": backup["wal_stop"],
        "database": database,
        # The counts are read when the backup has ended: events stored while it ran may be in the
        # counts and not in the backup (restore with catch-up brings them back from the stream).
        "counted_at": counted_at,
        "events": sum(int(t["events"]) for t in tenants),
        "tenants": tenants,
        "stream_seq_max": stream_seq_max,
        "files": files,
    }
