"""The disaster-recovery drill's RTO and RPO at a given number of stored events, and the product's
backups and restores against a plain pg_basebackup of the same cluster, in one run on one lab.

For each size, smallest first, on the lab's converged stack:
1. The database is filled up to the size: events of one tenant of the bench's own, sent through
   nginx in batches of 1,000 (the batch endpoint's most), then waited for until the workers have
   stored them all.
2. Backups, each timed: the product's named backup (playbooks/runbooks/backup/backup.yml: a full
   pgBackRest backup, then its manifest with a sha256 of every file), a bare `pgbackrest backup
   --type=full`, and `pg_basebackup` (plain format, WAL streamed); then restores: pgBackRest's
   restore of that set into a scratch directory, against a copy (`cp -a`) of pg_basebackup's
   directory, which is all a restore of a plain base backup is. Throughput is the data directory's
   size over the time.
3. The drill itself (playbooks/runbooks/drills/disaster_recovery.yml, drill_destroy=true), with
   its own load of --drill-events at --drill-rate a second: its report's RTO and RPO.

Prints each figure. Targets: RTO under 300 s at 1,000,000 events; RPO 0 at every size.

  AUDIT_LAB=dr AUDIT_LAB_PORT_OFFSET=400 .venv/bin/python bench/dr_drill.py --events 100000 1000000

The lab (AUDIT_LAB, default `dr`, ports moved by AUDIT_LAB_PORT_OFFSET, default 400) is created
and converged when needed, and removed at the end unless --keep. Not part of `make bench`: filling
a lab to 1,000,000 events and a drill at that size take about half an hour here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

# Before the lab module reads them: a lab of the bench's own unless the caller names one.
os.environ.setdefault("AUDIT_LAB", "dr")
os.environ.setdefault("AUDIT_LAB_PORT_OFFSET", "400")

import random  # noqa: E402
import shlex  # noqa: E402

from audit_devtools import lab as lablib  # noqa: E402
from benchlib import Figure, event, header  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DRILL = "playbooks/runbooks/drills/disaster_recovery.yml"
BACKUP = "playbooks/runbooks/backup/backup.yml"
CLI = "set -a; . /etc/audit-service/audit-service.env; set +a; /opt/audit-service/bin/audit-service"
PSQL = "runuser -u postgres -- psql -d audit_logs -tAc"
RTO_TARGET_S = 300.0
BATCH = 1000
SENDERS = 4
FILL_TENANTS = 10
SCRATCH = "/var/tmp/bench-dr-scratch"
BASEBACKUP = "/var/tmp/bench-dr-basebackup"


def sql(lab: lablib.Lab, query: str) -> str:
    return lab.exec("db1", f'{PSQL} "{query}"', timeout=600).stdout.strip()


def stored_events(lab: lablib.Lab) -> int:
    return int(sql(lab, "SELECT count(*) FROM audit_logs"))


def fill(lab: lablib.Lab, target: int) -> tuple[int, float]:
    """Sends events through nginx until the database holds `target`; (events sent, seconds)."""
    missing = target - stored_events(lab)
    if missing <= 0:
        return 0, 0.0
    # Spread over tenants: the API limits each tenant's rate (audit_rate_limit_per_minute).
    keys = []
    for _ in range(FILL_TENANTS):
        tenant = json.loads(lab.exec("app1", f"{CLI} create-tenant bench-dr-{uuid.uuid4().hex[:8]}").stdout)
        keys.append(
            json.loads(lab.exec("app1", f"{CLI} create-api-key {tenant['tenant_id']}").stdout)["api_key"]
        )
    batches = [min(BATCH, missing - start) for start in range(0, missing, BATCH)]
    lock = threading.Lock()
    errors: list[str] = []

    def sender(index: int) -> None:
        rng = random.Random(index)
        with lablib.lb() as client:
            while True:
                with lock:
                    if not batches or errors:
                        return
                    size = batches.pop()
                    key = keys[len(batches) % len(keys)]
                body = {"events": [event(rng, i) for i in range(size)]}
                while True:
                    r = client.post(
                        "/api/v1/audit/logs/batch", json=body, headers={"X-API-Key": key}, timeout=60
                    )
                    if r.status_code != 429:  # over the tenant's rate: not acknowledged, sent again
                        break
                    time.sleep(float(r.headers.get("retry-after", "1")))
                if r.status_code != 202:
                    with lock:
                        errors.append(f"{r.status_code} {r.text[:200]}")

    start = time.monotonic()
    threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(f"the fill was refused: {errors[0]}")
    deadline = time.monotonic() + 3600
    while (count := stored_events(lab)) < target:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the workers stored {count} of {target} events within an hour")
        time.sleep(5)
    return missing, time.monotonic() - start


def timed(lab: lablib.Lab, command: str) -> float:
    """Seconds a command takes on db1 (as postgres), measured there."""
    out = lab.exec(
        "db1",
        f"s=$(date +%s.%N); runuser -u postgres -- sh -c {shlex.quote(command)} >/dev/null"
        " && echo $(date +%s.%N) $s",
        timeout=3600,
    ).stdout.split()
    return float(out[0]) - float(out[1])


def backup_sets(lab: lablib.Lab) -> list[dict]:
    """pgBackRest's stanzas on db1, each with its backup sets (oldest first)."""
    return json.loads(lab.exec("db1", "runuser -u postgres -- pgbackrest --output=json info").stdout)


def backups_and_restores(lab: lablib.Lab, size: int) -> list[Figure]:
    stanza = backup_sets(lab)[0]["name"]
    start = time.monotonic()
    run = lab.runbook(BACKUP)
    if not run.ok:
        raise RuntimeError(run.describe())
    product_s = time.monotonic() - start
    bare_s = timed(lab, f"pgbackrest --stanza={stanza} --type=full backup")
    bare_set = backup_sets(lab)[0]["backup"][-1]
    label = bare_set["label"]
    # What each one copies: the database's files (pgBackRest's figure, pg_wal not included), and
    # pg_basebackup's whole output (with the WAL streamed during it).
    data_mb = bare_set["info"]["size"] / 1e6
    repo_mb = bare_set["info"]["repository"]["size"] / 1e6
    lab.exec("db1", f"rm -rf {BASEBACKUP} {SCRATCH} {BASEBACKUP}-restored")
    basebackup_s = timed(lab, f"pg_basebackup -D {BASEBACKUP} -Fp -X stream -c fast")
    lab.exec("db1", f"install -d -o postgres -g postgres -m 0700 {SCRATCH}")
    restore_s = timed(lab, f"pgbackrest --stanza={stanza} --set={label} --pg1-path={SCRATCH} restore")
    base_mb = int(lab.exec("db1", f"du -sb {BASEBACKUP}").stdout.split()[0]) / 1e6
    copy_s = timed(lab, f"cp -a {BASEBACKUP} {BASEBACKUP}-restored")
    lab.exec("db1", f"rm -rf {BASEBACKUP} {SCRATCH} {BASEBACKUP}-restored")
    n = f"{size:,} events"
    return [
        Figure(f"[{n}] database files (pgBackRest's size of the set)", data_mb, "MB"),
        Figure(f"[{n}] the set in the repository (lz4)", repo_mb, "MB"),
        Figure(f"[{n}] pg_basebackup's output", base_mb, "MB"),
        Figure(f"[{n}] named backup (backup.yml end to end, with manifest)", product_s, "s"),
        Figure(f"[{n}] pgbackrest full backup", bare_s, "s"),
        Figure(f"[{n}] pg_basebackup (plain, WAL streamed)", basebackup_s, "s"),
        Figure(f"[{n}] pgbackrest backup throughput", data_mb / bare_s, "MB/s"),
        Figure(f"[{n}] pg_basebackup throughput", base_mb / basebackup_s, "MB/s"),
        Figure(f"[{n}] pgbackrest restore (scratch directory)", restore_s, "s"),
        Figure(f"[{n}] copy of pg_basebackup's directory", copy_s, "s"),
        Figure(f"[{n}] pgbackrest restore throughput", data_mb / restore_s, "MB/s"),
        Figure(f"[{n}] copy of pg_basebackup's directory throughput", base_mb / copy_s, "MB/s"),
        Figure(f"[{n}] pgbackrest / pg_basebackup backup time", bare_s / basebackup_s, "ratio"),
        Figure(f"[{n}] pgbackrest restore / copy time", restore_s / copy_s, "ratio"),
    ]


def drill(lab: lablib.Lab, size: int, events: int, rate: int, last: bool) -> list[Figure]:
    run = lab.runbook(
        DRILL,
        extra_vars={
            "drill_destroy": True,
            "drill_events": events,
            "drill_rate": rate,
            "drill_loss_after": 10,
        },
    )
    if not run.ok:
        raise RuntimeError(run.describe())
    (rto,) = run.findings(check="drill_rto")
    (rpo,) = run.findings(check="drill_rpo")
    seconds = float(rto["evidence"]["healthy_at"]) - float(rto["evidence"]["lost_at"])
    missing = sum(int(t["missing"]) for t in rpo["evidence"])
    twice = sum(int(t["duplicates"]) for t in rpo["evidence"])
    print(f"  {rpo['summary']}\n  {rto['summary']}")
    n = f"{size:,} events"
    figures = [
        Figure(f"[{n}] drill: RTO (loss to healthy)", seconds, "s"),
        Figure(f"[{n}] drill: RPO (acknowledged events missing)", missing, "events", "0", missing == 0),
        Figure(f"[{n}] drill: events stored twice", twice, "events", "0", twice == 0),
        Figure(f"[{n}] drill: whole run", run.report["duration_seconds"], "s"),
    ]
    if last:
        figures[0] = Figure(figures[0].name, seconds, "s", f"< {RTO_TARGET_S:.0f} s", seconds < RTO_TARGET_S)
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, nargs="+", default=[100_000, 1_000_000], help="stored events")
    parser.add_argument("--drill-events", type=int, default=3000, help="the drill's own load")
    parser.add_argument("--drill-rate", type=int, default=100, help="its events a second")
    parser.add_argument("--keep", action="store_true", help="leave the lab up at the end")
    args = parser.parse_args()
    header(f"disaster-recovery drill and backups on lab {lablib.LAB_ID}")
    created = lablib.create()
    if not created.ok:
        print(created.describe(), file=sys.stderr)
        return 1
    converged = lablib.molecule("converge")
    if not converged.ok:
        print(converged.describe(), file=sys.stderr)
        return 1
    lab = lablib.Lab()
    figures: list[Figure] = []
    try:
        for size in sorted(args.events):
            first = len(figures)
            sent, seconds = fill(lab, size)
            if sent:
                figures.append(
                    Figure(f"[{size:,} events] fill: {sent:,} sent and stored", sent / seconds, "ev/s")
                )
            figures += backups_and_restores(lab, stored_events(lab))
            figures += drill(lab, size, args.drill_events, args.drill_rate, size == max(args.events))
            for figure in figures[first:]:
                print(figure.line(), flush=True)
    finally:
        print()
        for figure in figures:
            print(figure.line())
        if not args.keep:
            lablib.destroy()
    return 0 if all(f.met is not False for f in figures) else 1


if __name__ == "__main__":
    sys.exit(main())
