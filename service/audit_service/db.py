"""PostgreSQL: the connection pool, versioned migrations, partitions and retention."""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import asyncpg

log = logging.getLogger(__name__)

# Arbitrary constants naming the advisory locks that serialise migrations and partition DDL
# across every host that runs them.
MIGRATION_LOCK = 0x4155_4449_5401
PARTITION_LOCK = 0x4155_4449_5402

PARTITION_RE = re.compile(r"^audit_logs_p(\d{4})_(\d{2})$")
BOUND_RE = re.compile(r"FROM \('([^']+)'\) TO \('([^']+)'\)")


async def create_pool(settings: Any, application_name: str, *, min_size: int = 1) -> asyncpg.Pool:
    """A pool holding up to DATABASE_POOL_SIZE + DATABASE_MAX_OVERFLOW connections."""
    return await asyncpg.create_pool(
        settings.database_url,
        min_size=min(min_size, settings.database_pool_size),
        max_size=settings.database_pool_size + settings.database_max_overflow,
        command_timeout=settings.api_timeout,
        max_inactive_connection_lifetime=60,
        server_settings={"application_name": application_name, "TimeZone": "UTC"},
        reset=_keep_session,
    )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No RESET ALL round trip when a connection goes back to the pool: the service sets no
    session state (advisory locks are taken on connections of their own, outside pools)."""


def pool_stats(pool: asyncpg.Pool, pool_size: int) -> dict[str, int]:
    open_ = pool.get_size()
    idle = pool.get_idle_size()
    checked_out = open_ - idle
    return {
        "pool_size": pool_size,
        "max_size": pool.get_max_size(),
        "open": open_,
        "idle": idle,
        "checked_out": checked_out,
        "overflow": max(0, checked_out - pool_size),
    }


# --- migrations -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    out = []
    for entry in resources.files("audit_service").joinpath("migrations").iterdir():
        m = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if m:
            out.append(Migration(int(m.group(1)), m.group(2), entry.read_text()))
    out.sort(key=lambda m: m.version)
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return out


async def migrate(conn: asyncpg.Connection, months_ahead: int = 2) -> list[str]:
    """Apply pending migrations; safe to run twice and from several hosts at once."""
    applied_now: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {
            r["version"]: r for r in await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
        }
        for mig in load_migrations():
            if mig.version in done:
                if done[mig.version]["checksum"] != mig.checksum:
                    raise RuntimeError(
                        f"migration {mig.version:04d}_{mig.name} was changed after it was applied "
                        "(checksum differs); add a new migration instead"
                    )
                continue
            async with conn.transaction():
                await conn.execute(mig.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    mig.version,
                    mig.name,
                    mig.checksum,
                )
            applied_now.append(f"{mig.version:04d}_{mig.name}")
            log.info("migration applied", extra={"migration": applied_now[-1]})
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK)
    await ensure_partitions(conn, datetime.now(UTC), months_ahead)
    return applied_now


# --- partitions -------------------------------------------------------------------------------


def month_start(t: datetime) -> datetime:
    return datetime(t.year, t.month, 1, tzinfo=UTC)


def next_month(t: datetime) -> datetime:
    return datetime(t.year + (t.month == 12), t.month % 12 + 1, 1, tzinfo=UTC)


def partition_name(start: datetime) -> str:
    return f"audit_logs_p{start.year:04d}_{start.month:02d}"


async def ensure_partitions(
    conn: asyncpg.Connection, first: datetime, months_ahead: int, *, last: datetime | None = None
) -> list[str]:
    """Create the monthly partitions from `first`'s month to `months_ahead` past now (or `last`)."""
    start = month_start(first.astimezone(UTC))
    end = month_start(datetime.now(UTC))
    for _ in range(months_ahead):
        end = next_month(end)
    if last is not None:
        end = max(end, month_start(last.astimezone(UTC)))
    wanted = []
    cursor = start
    while cursor <= end:
        wanted.append(cursor)
        cursor = next_month(cursor)
    existing = {r["relname"] for r in await partitions(conn)}
    missing = [m for m in wanted if partition_name(m) not in existing]
    created = []
    if not missing:
        return created
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
        for m in missing:
            # As audit_logs' owner (a SECURITY DEFINER function): the service's login may not.
            created.append(await conn.fetchval("SELECT audit_create_partition($1)", m))
    if created:
        log.info("partitions created", extra={"partitions": created})
    return created


async def partitions(conn: asyncpg.Connection) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        """SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
             FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent
            WHERE p.relname = 'audit_logs'
            ORDER BY c.relname"""
    )
    out = []
    for r in rows:
        m = BOUND_RE.search(r["bound"] or "")
        lower = upper = None
        if m:
            lower, upper = (_parse_bound(x) for x in m.groups())
        out.append({"relname": r["relname"], "lower": lower, "upper": upper})
    return out


def _parse_bound(text: str) -> datetime:
    # PostgreSQL prints e.g. '2026-11-01 00:00:00+00'
    text = re.sub(r"([+-]\d{2})$", r"\1:00", text.strip())
    value = datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=UTC)


# --- retention --------------------------------------------------------------------------------


# Rows deleted per transaction: each holds its row locks a moment, never the chain heads.
RETENTION_BATCH = 5000
RETENTION_LOCK = 0x617564_7265  # pg advisory lock: one retention run at a time, on any host


async def retention(
    conn: asyncpg.Connection, retention_days: int, *, dry_run: bool = False, now: datetime | None = None
) -> dict[str, Any]:
    """Remove events older than the retention window, in small transactions.

    What goes of each tenant's chain is its longest prefix older than the cut-off (a row newer
    than the cut-off is never deleted, nor any row after it), and that prefix's last link is
    kept in chain_anchors first, so that verification tells removal by retention from tampering
    at every moment. Then the rows go in batches of RETENTION_BATCH, each its own transaction,
    and partitions wholly older than the cut-off whose every row is in the removed prefixes are
    dropped (waiting at most 2 s for their lock, else left for the next run). No chain head is
    locked: workers appending meanwhile are never blocked for long, and cannot deadlock with it.
    One run at a time (an advisory lock): a second one reports `skipped`.
    """
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=retention_days)
    report: dict[str, Any] = {
        "cutoff": cutoff.isoformat(),
        "retention_days": retention_days,
        "dry_run": dry_run,
        "dropped_partitions": [],
        "deleted_rows": 0,
        "removed_rows": 0,
    }
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", RETENTION_LOCK):
        return {**report, "skipped": "another retention run holds the lock"}
    try:
        return await _retention(conn, cutoff, report, dry_run)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", RETENTION_LOCK)


async def _retention(
    conn: asyncpg.Connection, cutoff: datetime, report: dict[str, Any], dry_run: bool
) -> dict[str, Any]:
    # Per tenant: the end of its prefix older than the cut-off = one before its first newer row.
    prefixes = await conn.fetch(
        """SELECT t.tenant_id,
                  coalesce((SELECT min(seq) - 1 FROM audit_logs n
                             WHERE n.tenant_id = t.tenant_id AND n.created_at >= $1),
                           (SELECT max(seq) FROM audit_logs m WHERE m.tenant_id = t.tenant_id)) AS upto,
                  coalesce(a.seq, 0) AS anchored
             FROM (SELECT DISTINCT tenant_id FROM audit_logs WHERE created_at < $1) t
             LEFT JOIN chain_anchors a ON a.tenant_id = t.tenant_id""",
        cutoff,
    )
    prefixes = [p for p in prefixes if p["upto"] is not None and p["upto"] > p["anchored"]]
    report["tenants"] = len(prefixes)
    if dry_run:
        for p in prefixes:
            report["removed_rows"] += await conn.fetchval(
                "SELECT count(*) FROM audit_logs WHERE tenant_id = $1 AND seq <= $2",
                p["tenant_id"],
                p["upto"],
            )
        return report
    # 1. The anchors, in one short transaction: from now on verify starts after them.
    async with conn.transaction():
        for p in prefixes:
            link = await conn.fetchrow(
                "SELECT seq, hash FROM audit_logs WHERE tenant_id = $1 AND seq = $2",
                p["tenant_id"],
                p["upto"],
            )
            await conn.execute(
                """INSERT INTO chain_anchors (tenant_id, seq, hash) VALUES ($1, $2, $3)
                   ON CONFLICT (tenant_id) DO UPDATE
                      SET seq = EXCLUDED.seq, hash = EXCLUDED.hash, updated_at = now()
                    WHERE chain_anchors.seq < EXCLUDED.seq""",
                p["tenant_id"],
                link["seq"],
                link["hash"],
            )
    # 2. Whole partitions older than the cut-off, when nothing in them lies after an anchor.
    for part in await partitions(conn):
        if part["upper"] is None or part["upper"] > cutoff:
            continue
        name = part["relname"]
        # Through audit_logs (retention may read it, not its partitions directly).
        rows = await conn.fetchval("SELECT count(*) FROM audit_logs WHERE tableoid = $1::regclass", name)
        beyond = await conn.fetchval(
            """SELECT count(*) FROM audit_logs p LEFT JOIN chain_anchors a ON a.tenant_id = p.tenant_id
                WHERE p.tableoid = $1::regclass AND p.seq > coalesce(a.seq, 0)""",
            name,
        )
        if beyond:
            continue  # its rows go one batch at a time below
        try:
            async with conn.transaction():
                await conn.execute("SET LOCAL lock_timeout = '2s'")
                await conn.execute("SELECT audit_drop_partition($1)", name)
        except asyncpg.exceptions.LockNotAvailableError:
            continue  # busy: the rows are deleted below, the empty partition goes next time
        report["dropped_partitions"].append({"name": name, "rows": rows})
    dropped_rows = sum(p["rows"] for p in report["dropped_partitions"])
    # 3. The rest of each prefix, a batch per transaction.
    for p in prefixes:
        while True:
            status = await conn.execute(
                """DELETE FROM audit_logs WHERE tenant_id = $1 AND seq IN (
                       SELECT seq FROM audit_logs WHERE tenant_id = $1 AND seq <= $2 LIMIT $3)""",
                p["tenant_id"],
                p["upto"],
                RETENTION_BATCH,
            )
            deleted = int(status.split()[-1])
            report["deleted_rows"] += deleted
            if deleted < RETENTION_BATCH:
                break
    report["removed_rows"] = dropped_rows + report["deleted_rows"]
    await conn.execute(
        "INSERT INTO retention_runs (cutoff, dropped_partitions, deleted_rows) VALUES ($1, $2, $3)",
        cutoff,
        [p["name"] for p in report["dropped_partitions"]],
        report["removed_rows"],
    )
    return report
