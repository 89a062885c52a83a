#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only. psycopg2 (Debian's python3-psycopg2, on the database hosts) for the manifest.

DOCUMENTATION = r"""
---
module: pg_backup
short_description: Named pgBackRest backups with manifests - take, list, verify and restore them
version_added: 0.4.0
description:
  - Takes, lists, verifies and restores the database's physical backups with pgBackRest, under
    the troubleshooting guide's names, C(backup_YYYYMMDD_HHMMSS) (pgBackRest's annotation
    C(audit-name)).
  - O(mode=backup) takes a full, differential or incremental backup and writes its manifest,
    C(<manifest_dir>/<name>.json) - the sha256 of every file of the backup set, the events per
    tenant, each tenant's chain head and newest event, and the highest stream sequence stored.
    pgBackRest expires the backups older than its retention afterwards; the manifests of expired
    backups are removed with them.
  - O(mode=list) lists the backups (named or not) and whether each has a manifest.
  - O(mode=verify) recomputes the sha256 of every file of each named backup (or of O(name)) against
    its manifest and runs C(pgbackrest verify) on its set; a file changed, missing or added, or a
    set pgBackRest finds invalid, is a critical finding.
  - O(mode=restore) restores over the stopped cluster's data directory (C(pgbackrest restore
    --delta)) - to the end of backup O(name) (its consistent state, nothing after), to
    O(target_time) (point-in-time, from the newest backup before it), or, with neither, to the end
    of the archived WAL (the latest state the archive has). The server, once started, replays the
    WAL and promotes itself. Stopping and starting the server are the caller's business.
author: audit-log project (!UNKNOWN)
options:
  mode:
    description: What to do.
    type: str
    choices: [list, backup, verify, restore]
    default: list
  name:
    description:
      - O(mode=backup) - the new backup's name; by default C(backup_YYYYMMDD_HHMMSS) of now (UTC).
        A name already taken fails.
      - O(mode=verify) - verify only this backup (its name or pgBackRest label); all named backups
        when not given.
      - O(mode=restore) - restore this backup (its name or label) to its end.
    type: str
  type:
    description: O(mode=backup) - the kind of backup; pgBackRest takes a full one when none exists yet.
    type: str
    choices: [full, diff, incr]
    default: full
  target_time:
    description:
      - O(mode=restore) - restore to this time (C(2026-05-01 12:00:00+00), what PostgreSQL's
        C(recovery_target_time) takes), from the newest backup that ended before it. Not with O(name).
    type: str
  pg_path:
    description:
      - O(mode=restore) - restore into this directory instead of the cluster's data directory (a
        scratch copy for recovery/tenant.yml, started apart on a port of its own). It must be
        empty or absent.
    type: path
  stanza:
    description: The pgBackRest stanza.
    type: str
    default: audit
  repo_path:
    description: pgBackRest's repository (its C(repo1-path)), where the backup sets' files are read.
    type: path
    default: /var/lib/pgbackrest
  manifest_dir:
    description: Where the manifests are; C(<repo_path>/manifests) when not given.
    type: path
  pgbackrest:
    description: The pgBackRest command.
    type: path
    default: /usr/bin/pgbackrest
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - auditlog.ops.postgres
attributes:
  check_mode:
    support: full
    details:
      - O(mode=list) and O(mode=verify) only read and run as usual.
      - O(mode=backup) and O(mode=restore) say what they would do and do nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Run it on the database host as the repository's owner, C(postgres) (C(become_user=postgres)),
    who also logs in to count the events by peer authentication (O(db) is the service's database).
  - O(mode=restore) needs the cluster stopped; pgBackRest refuses otherwise.
seealso:
  - module: auditlog.ops.stream_replay
  - module: auditlog.ops.chain_verify
"""

EXAMPLES = r"""
- name: Take a full backup named backup_YYYYMMDD_HHMMSS, with its manifest
  auditlog.ops.pg_backup:
    mode: backup
    type: full
    db: audit_logs
  become: true
  become_user: postgres

- name: Verify every named backup against its manifest
  auditlog.ops.pg_backup:
    mode: verify
  become: true
  become_user: postgres

- name: Restore backup_20260501_120000 over the stopped cluster
  auditlog.ops.pg_backup:
    mode: restore
    name: backup_20260501_120000
  become: true
  become_user: postgres
"""

RETURN = r"""
backups:
  description: The backup sets in the repository, oldest first (after the run).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The backup's name (null for a backup taken without one).
      type: str
    label:
      description: pgBackRest's label, like C(20260501-120000F).
      type: str
    type:
      description: full, diff or incr.
      type: str
    started:
      description: When it started (UTC).
      type: str
    stopped:
      description: When it ended (UTC); a restore of it ends at this point.
      type: str
    size:
      description: The database's size in the backup, in bytes.
      type: int
    repo_size:
      description: What this backup added to the repository, in bytes (compressed, incremental).
      type: int
    manifest:
      description: Whether a manifest was written for it.
      type: bool
  sample: [{"name": "backup_20260501_120000", "label": "20260501-120000F", "type": "full",
            "started": "2026-05-01T12:00:00Z", "stopped": "2026-05-01T12:00:09Z", "size": 31189933,
            "repo_size": 6028918, "manifest": true}]
backup:
  description: The backup taken (O(mode=backup)) or restored (O(mode=restore) by name), as in RV(backups).
  returned: when mode is backup or restore
  type: dict
manifest:
  description: The manifest written (O(mode=backup)) or of the backup restored, without its file sums.
  returned: when mode is backup, or restore by name
  type: dict
  sample: {"name": "backup_20260501_120000", "events": 1200, "stream_seq_max": 1203,
           "tenants": [{"tenant_id": "8c0e7a52-51b8-4a4f-9d0c-2f6f1f1b6c11", "name": "acme",
                        "events": 1200, "head_seq": 1200, "head_hash": "4f1c...",
                        "newest": "2026-05-01T11:59:58Z"}]}
verified:
  description:
    - O(mode=verify) - per backup, whether it verifies, with the files that changed, are missing
      or were added.
  returned: when mode is verify
  type: list
  elements: dict
  sample: [{"name": "backup_20260501_120000", "label": "20260501-120000F", "valid": false,
            "files": 1263, "changed": ["pg_data/base/5/16384.lz4"], "missing": [], "added": [],
            "pgbackrest": "invalid"}]
summary:
  description: O(mode=restore) - what was restored (in check mode, would be), in one line.
  returned: when mode is restore
  type: str
  sample: restored backup backup_20260501_120000 (20260501-120000F) to its end, 2026-05-01T12:00:09Z
command:
  description: The pgBackRest command run (or, in check mode, that would run).
  returned: when mode is backup or restore
  type: list
  elements: str
findings:
  description:
    - Checks C(backup), C(backup_verify) and, in check mode, C(restore) (component C(postgresql)).
      A restore done returns none - the caller reports it with what the started server holds.
  returned: always
  type: list
  elements: dict
"""

import datetime  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402

from ansible.module_utils.basic import AnsibleModule, missing_required_lib  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import backups, postgres  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding  # noqa: E402

COMPONENT = "postgresql"

# Each tenant's events, newest event and chain head: what a restore of the backup must give back.
TENANTS_SQL = """
SELECT t.id::text AS tenant_id, t.name, coalesce(e.events, 0) AS events, e.newest,
       h.seq AS head_seq, h.hash AS head_hash
FROM tenants t
LEFT JOIN (SELECT tenant_id, count(*) AS events, max(created_at) AS newest
           FROM audit_logs GROUP BY tenant_id) e ON e.tenant_id = t.id
LEFT JOIN chain_heads h ON h.tenant_id = t.id
ORDER BY t.name
"""
STREAM_SQL = "SELECT max(stream_seq) AS stream_seq_max FROM audit_logs"

# `pgbackrest verify --output=text`: "backup: <label>, status: valid|invalid, ..."
VERIFY_SET_RE = re.compile(r"backup:\s*(\S+?),\s*status:\s*(\w+)")


def argument_spec():
    spec = postgres.postgres_common_argument_spec()
    spec.update(
        mode=dict(type="str", default="list", choices=["list", "backup", "verify", "restore"]),
        name=dict(type="str"),
        type=dict(type="str", default="full", choices=["full", "diff", "incr"]),
        target_time=dict(type="str"),
        pg_path=dict(type="path"),
        stanza=dict(type="str", default="audit"),
        repo_path=dict(type="path", default="/var/lib/pgbackrest"),
        manifest_dir=dict(type="path"),
        pgbackrest=dict(type="path", default="/usr/bin/pgbackrest"),
    )
    return spec


class Repo:
    """The stanza's repository: pgBackRest's commands and the manifests beside them."""

    def __init__(self, module, p):
        self.module = module
        self.p = p
        self.stanza = p["stanza"]
        self.manifest_dir = p["manifest_dir"] or os.path.join(p["repo_path"], "manifests")

    def run(self, *args, check_rc=True):
        argv = [self.p["pgbackrest"], f"--stanza={self.stanza}", *args]
        rc, out, err = self.module.run_command(argv)
        if check_rc and rc != 0:
            self.module.fail_json(msg=f"{' '.join(argv)} exited {rc}: {(err or out).strip()[:2000]}", rc=rc)
        return rc, out, err

    def sets(self):
        _rc, out, _err = self.run("--output=json", "info")
        try:
            info = json.loads(out)
        except ValueError:
            self.module.fail_json(msg=f"pgbackrest info printed no JSON: {out.strip()[:500]}")
        code, message = backups.stanza_status(info, self.stanza)
        # 2: no backup yet - a stanza without backups is fine.
        if code not in (0, 2):
            self.module.fail_json(msg=f"pgBackRest stanza {self.stanza}: {message} (status {code})")
        return backups.backup_sets(info, self.stanza)

    def set_dir(self, label):
        return os.path.join(self.p["repo_path"], "backup", self.stanza, label)

    def manifest_path(self, name):
        return os.path.join(self.manifest_dir, f"{name}.json")

    def read_manifest(self, name):
        try:
            with open(self.manifest_path(name)) as fh:
                return json.load(fh)
        except (OSError, ValueError):
            return None

    def write_manifest(self, data):
        os.makedirs(self.manifest_dir, mode=0o750, exist_ok=True)
        path = self.manifest_path(data["name"])
        tmp = path + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)

    def prune_manifests(self, sets):
        """Remove the manifests of backups pgBackRest has expired; returns their names."""
        named = {b["name"] for b in sets if b["name"]}
        removed = []
        if os.path.isdir(self.manifest_dir):
            for entry in sorted(os.listdir(self.manifest_dir)):
                if entry.endswith(".json") and entry[: -len(".json")] not in named:
                    os.remove(os.path.join(self.manifest_dir, entry))
                    removed.append(entry[: -len(".json")])
        return removed

    def listing(self, sets):
        return [
            dict(b, manifest=bool(b["name"]) and os.path.exists(self.manifest_path(b["name"]))) for b in sets
        ]


def database_state(p):
    """The events per tenant and the highest stream sequence, from the service's database."""
    conn = postgres.connect(p)
    try:
        with postgres.dict_cursor(conn) as cur:
            cur.execute(TENANTS_SQL)
            tenants = [
                {
                    "tenant_id": r["tenant_id"],
                    "name": r["name"],
                    "events": int(r["events"]),
                    "newest": r["newest"].isoformat() if r["newest"] else None,
                    "head_seq": r["head_seq"],
                    "head_hash": r["head_hash"],
                }
                for r in cur.fetchall()
            ]
            cur.execute(STREAM_SQL)
            row = cur.fetchone()
    finally:
        conn.close()
    return tenants, row["stream_seq_max"]


def without_files(manifest):
    return {k: v for k, v in (manifest or {}).items() if k != "files"} or None


def take_backup(module, repo, p):
    name = p["name"] or backups.new_name()
    problem = backups.check_name(name)
    if problem:
        module.fail_json(msg=f"name: {problem}")
    sets = repo.sets()
    if backups.find(sets, name):
        module.fail_json(msg=f"a backup named {name} exists already: give another name")
    argv = [f"--type={p['type']}", f"--annotation={backups.ANNOTATION}={name}", "backup"]
    command = [p["pgbackrest"], f"--stanza={repo.stanza}", *argv]
    if module.check_mode:
        return dict(
            changed=True,
            command=command,
            backups=repo.listing(sets),
            findings=[finding("info", COMPONENT, "backup", f"would take a {p['type']} backup named {name}")],
        )
    repo.run(*argv)
    sets = repo.sets()
    taken = backups.find(sets, name)
    if taken is None:
        module.fail_json(msg=f"pgbackrest backup ended but no backup set is annotated {name}")
    tenants, stream_seq_max = database_state(p)
    data = backups.manifest(
        taken,
        repo.stanza,
        p["db"],
        tenants,
        stream_seq_max,
        backups.file_sums(repo.set_dir(taken["label"])),
        datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z"),
    )
    repo.write_manifest(data)
    expired = repo.prune_manifests(sets)
    summary = (
        f"{taken['type']} backup {name} ({taken['label']}): {data['events']} event(s)"
        f" of {len(tenants)} tenant(s), stream sequence up to {stream_seq_max},"
        f" {len(data['files'])} file(s) in the manifest"
    )
    if expired:
        summary += f"; expired by retention: {', '.join(expired)}"
    return dict(
        changed=True,
        command=command,
        backup=taken,
        manifest=without_files(data),
        expired=expired,
        backups=repo.listing(sets),
        findings=[finding("info", COMPONENT, "backup", summary, evidence=without_files(data))],
    )


def pgbackrest_verdicts(text):
    """{label: 'valid'|'invalid'|...} from `pgbackrest verify --output=text`."""
    return {label: status for label, status in VERIFY_SET_RE.findall(text or "")}


def verify(module, repo, p):
    sets = repo.sets()
    if p["name"]:
        chosen = backups.find(sets, p["name"])
        if chosen is None:
            module.fail_json(msg=f"no backup named {p['name']}: {names_text(sets)}")
        targets = [chosen]
    else:
        targets = [b for b in sets if b["name"]]
    results, findings = [], []
    for b in targets:
        recorded = repo.read_manifest(b["name"]) if b["name"] else None
        _rc, out, err = repo.run(
            f"--set={b['label']}", "--output=text", "--verbose", "verify", check_rc=False
        )
        status = pgbackrest_verdicts(out).get(b["label"], "unknown")
        who = f"backup {b['name'] or b['label']} ({b['label']})"
        if recorded is None:
            result = dict(name=b["name"], label=b["label"], files=0, changed=[], missing=[], added=[])
            problem = "has no manifest"
        else:
            diff = backups.compare_sums(recorded.get("files"), backups.file_sums(repo.set_dir(b["label"])))
            result = dict(name=b["name"], label=b["label"], files=len(recorded.get("files") or {}), **diff)
            parts = [f"{len(diff[k])} file(s) {k}" for k in ("changed", "missing", "added") if diff[k]]
            problem = ", ".join(parts) + (" since its manifest was written" if parts else "")
        result["pgbackrest"] = status
        if status != "valid":
            problem = (problem + "; " if problem else "") + f"pgbackrest verify says {status}"
        result["valid"] = not problem
        results.append(result)
        if problem:
            findings.append(
                finding(
                    "critical",
                    COMPONENT,
                    "backup_verify",
                    f"{who} does not verify: {problem}: do not restore it; take a new backup",
                    evidence=dict(result, pgbackrest_output=(out or err).strip()[-2000:]),
                )
            )
    if not findings:
        findings.append(
            finding(
                "info" if targets else "warning",
                COMPONENT,
                "backup_verify",
                f"{len(targets)} backup(s) verify against their manifests and pgBackRest's checksums"
                if targets
                else "no named backup to verify: take one (playbooks/runbooks/backup/backup.yml)",
            )
        )
    return dict(changed=False, verified=results, backups=repo.listing(sets), findings=findings)


def names_text(sets):
    named = [b["name"] for b in sets if b["name"]]
    return "the backups are " + ", ".join(named) if named else "there is no named backup"


def restore(module, repo, p):
    if p["name"] and p["target_time"]:
        module.fail_json(msg="name and target_time are exclusive: restore a backup to its end, or to a time")
    sets = repo.sets()
    chosen, data = None, None
    # Promote at a target; without one (the latest state) recovery promotes at the archive's end.
    # --delta: only the files that differ are written over the cluster's data (a scratch copy is new).
    argv = [] if p["pg_path"] else ["--delta"]
    if p["name"] or p["target_time"]:
        argv.append("--target-action=promote")
    if p["name"]:
        chosen = backups.find(sets, p["name"])
        if chosen is None:
            module.fail_json(msg=f"no backup named {p['name']}: {names_text(sets)}")
        argv += [f"--set={chosen['label']}", "--type=immediate"]
        what = f"backup {p['name']} ({chosen['label']}) to its end, {chosen['stopped']}"
        data = without_files(repo.read_manifest(chosen["name"])) if chosen["name"] else None
    elif p["target_time"]:
        before = [
            b for b in sets if b["stopped"] and b["stopped"] <= normalise_time(module, p["target_time"])
        ]
        if not before:
            module.fail_json(msg=f"no backup ended before {p['target_time']}: {names_text(sets)}")
        argv += ["--type=time", f"--target={p['target_time']}"]
        chosen = before[-1]
        what = (
            f"the database as it was at {p['target_time']} (from backup {chosen['name'] or chosen['label']})"
        )
    else:
        if not sets:
            module.fail_json(msg="there is no backup to restore: take one first")
        what = "the latest state in the archive (newest backup and every archived WAL segment after it)"
        chosen = sets[-1]
    if p["pg_path"]:
        if os.path.isdir(p["pg_path"]) and os.listdir(p["pg_path"]):
            module.fail_json(
                msg=f"pg_path {p['pg_path']} is not empty: a scratch copy goes into an empty directory"
            )
        argv.append(f"--pg1-path={p['pg_path']}")
        what += f" into {p['pg_path']}"
    argv.append("restore")
    command = [p["pgbackrest"], f"--stanza={repo.stanza}", *argv]
    if module.check_mode:
        # The plan: what a run would restore (the runbooks check it before they stop anything).
        findings = [finding("info", COMPONENT, "restore", f"to restore: {what}")]
    else:
        repo.run(*argv)
        findings = []  # the caller reports the restore, with what the started server holds
    return dict(
        changed=True,
        summary=f"restored {what}",
        command=command,
        backup=chosen,
        manifest=data,
        backups=repo.listing(sets),
        findings=findings,
    )


def normalise_time(module, text):
    """target_time as the UTC ISO text the backups' times are in, to pick the backup before it."""
    try:
        value = datetime.datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError:
        module.fail_json(msg=f"target_time {text!r} is not a time like 2026-05-01 12:00:00+00")
    if value.tzinfo is None:
        module.fail_json(msg=f"target_time {text!r} has no offset: add one, like +00")
    return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    if p["mode"] == "backup" and not postgres.HAS_PSYCOPG2:
        module.fail_json(
            msg=missing_required_lib("psycopg2 (Debian: python3-psycopg2)"),
            exception=str(postgres.PSYCOPG2_IMPORT_ERROR),
        )
    if not os.access(p["pgbackrest"], os.X_OK):
        module.fail_json(msg=f"{p['pgbackrest']} is not there: is pgBackRest installed (role postgresql)?")
    repo = Repo(module, p)
    if p["mode"] == "backup":
        result = take_backup(module, repo, p)
    elif p["mode"] == "verify":
        result = verify(module, repo, p)
    elif p["mode"] == "restore":
        result = restore(module, repo, p)
    else:
        sets = repo.sets()
        result = dict(
            changed=False,
            backups=repo.listing(sets),
            findings=[finding("info", COMPONENT, "backup", f"{len(sets)} backup(s): {names_text(sets)}")],
        )
    module.exit_json(**result)


if __name__ == "__main__":
    main()
