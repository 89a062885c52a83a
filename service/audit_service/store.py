"""Reads and writes of the event store: tenants, keys, appending to chains, queries, verify."""

from __future__ import annotations

import base64
import hashlib
import secrets
import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg
import orjson

from . import chain

EVENT_COLUMNS = (
    "tenant_id, seq, event_id, created_at, occurred_at, actor, action, target, outcome, "
    "source_ip, user_agent, metadata, correlation_id, principal, stream_seq, prev_hash, hash, "
    "chain_version"
)

COPY_COLUMNS = [c.strip() for c in EVENT_COLUMNS.split(",")]


# --- tenants and keys -------------------------------------------------------------------------


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def create_tenant(conn: asyncpg.Connection, name: str) -> uuid.UUID:
    name = name.strip()
    if not 1 <= len(name) <= 128:
        raise ValueError("tenant name must be 1 to 128 characters")
    tenant_id = uuid.uuid4()
    async with conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING RETURNING id",
            tenant_id,
            name,
        )
        if row is None:
            raise ValueError(f"tenant {name!r} already exists")
        await conn.execute(
            "INSERT INTO chain_heads (tenant_id, seq, hash) VALUES ($1, 0, $2)", tenant_id, chain.GENESIS_HASH
        )
    return tenant_id


async def find_tenant(conn: asyncpg.Connection, name_or_id: str) -> asyncpg.Record | None:
    try:
        as_id = uuid.UUID(name_or_id)
    except ValueError:
        as_id = None
    if as_id is not None:
        row = await conn.fetchrow("SELECT id, name FROM tenants WHERE id = $1", as_id)
        if row:
            return row
    return await conn.fetchrow("SELECT id, name FROM tenants WHERE name = $1", name_or_id)


async def create_api_key(conn: asyncpg.Connection, tenant_id: uuid.UUID) -> tuple[uuid.UUID, str]:
    """A new key for the tenant: (its id, the key itself, which is not stored)."""
    key_id, key = uuid.uuid4(), "alk_" + secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO api_keys (id, tenant_id, key_hash, key_prefix) VALUES ($1, $2, $3, $4)",
        key_id,
        tenant_id,
        hash_key(key),
        key[:10],
    )
    return key_id, key


class LiveKey(NamedTuple):
    """A live (not revoked) API key: its tenant, and its id (the principal of what it submits)."""

    tenant_id: uuid.UUID
    key_id: uuid.UUID


async def live_key(pool: asyncpg.Pool, key_hash: str) -> LiveKey | None:
    """A live API key, by the key's hash_key digest."""
    row = await pool.fetchrow(
        "SELECT tenant_id, id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", key_hash
    )
    return LiveKey(row["tenant_id"], row["id"]) if row else None


async def live_keys(conn: asyncpg.Connection) -> tuple[dict[str, LiveKey], set[uuid.UUID]]:
    """Every live key by its hash, and every tenant."""
    keys = {
        r["key_hash"]: LiveKey(r["tenant_id"], r["id"])
        for r in await conn.fetch("SELECT key_hash, tenant_id, id FROM api_keys WHERE revoked_at IS NULL")
    }
    tenants = {r["id"] for r in await conn.fetch("SELECT id FROM tenants")}
    return keys, tenants


async def tenant_exists(pool: asyncpg.Pool, tenant_id: uuid.UUID) -> bool:
    return bool(await pool.fetchval("SELECT 1 FROM tenants WHERE id = $1", tenant_id))


# --- appending events -------------------------------------------------------------------------


@dataclass
class Pending:
    """One event taken from the stream, waiting to be stored."""

    tenant_id: uuid.UUID
    event: dict[str, Any]  # validated fields, occurred_at/created_at as datetimes
    stream_seq: int
    body: bytes = b""  # chain.canonical of the event (chain.CHAIN_VERSION), once prepared
    metadata_json: str | None = None

    def prepare(self) -> Pending:
        """Everything about the event that does not depend on its place in the chain: done
        before the chain is locked, so that the locked part stays short."""
        e = self.event
        e["tenant_id"] = str(self.tenant_id)
        e["event_id"] = str(e["event_id"])
        if e["metadata"] is not None:
            e["metadata"] = chain.normalize_json(e["metadata"])
            self.metadata_json = orjson.dumps(e["metadata"]).decode()
        self.body = chain.canonical(e)
        return self


@dataclass
class AppendResult:
    stored: int = 0
    duplicates: int = 0
    heads: dict[uuid.UUID, tuple[int, str]] | None = None


async def append(conn: asyncpg.Connection, pending: Iterable[Pending]) -> AppendResult:
    """Append events to their tenants' chains in the caller's transaction.

    Each tenant's chain head is locked (in tenant order, so two workers cannot deadlock), events
    already stored under the same event_id are skipped, and the rest get consecutive seq numbers
    and hashes. Safe to call again with the same events: they are all duplicates then.
    """
    by_tenant: dict[uuid.UUID, list[Pending]] = defaultdict(list)
    for p in pending:
        by_tenant[p.tenant_id].append(p if p.body else p.prepare())
    result = AppendResult(heads={})
    for tenant_id in sorted(by_tenant):
        items = by_tenant[tenant_id]
        head = await conn.fetchrow(
            "SELECT seq, hash FROM chain_heads WHERE tenant_id = $1 FOR UPDATE", tenant_id
        )
        if head is None:
            await conn.execute(
                "INSERT INTO chain_heads (tenant_id, seq, hash) VALUES ($1, 0, $2) ON CONFLICT DO NOTHING",
                tenant_id,
                chain.GENESIS_HASH,
            )
            head = await conn.fetchrow(
                "SELECT seq, hash FROM chain_heads WHERE tenant_id = $1 FOR UPDATE", tenant_id
            )
        ids = [p.event["event_id"] for p in items]
        existing = {
            str(r["event_id"])
            for r in await conn.fetch(
                "SELECT event_id FROM audit_logs WHERE tenant_id = $1 AND event_id = ANY($2::uuid[])",
                tenant_id,
                ids,
            )
        }
        seq, prev = head["seq"], head["hash"]
        records = []
        for p in items:
            e = p.event
            event_id = e["event_id"]
            if event_id in existing:
                result.duplicates += 1
                continue
            existing.add(event_id)
            seq += 1
            digest = chain.link_canonical(prev, seq, p.body)
            records.append(
                (
                    tenant_id,
                    seq,
                    event_id,
                    e["created_at"],
                    e["occurred_at"],
                    e["actor"],
                    e["action"],
                    e["target"],
                    e["outcome"],
                    e["source_ip"],
                    e["user_agent"],
                    p.metadata_json,
                    e["correlation_id"],
                    e["principal"],
                    p.stream_seq,
                    prev,
                    digest,
                    chain.CHAIN_VERSION,
                )
            )
            prev = digest
        if not records:
            continue
        # COPY, not INSERT ... ON CONFLICT: duplicates were removed above under the chain lock, so
        # a conflict here would be a bug, and the natural-key constraint turns it into a rollback
        # (the messages are then delivered again) rather than a hole in the chain.
        await conn.copy_records_to_table("audit_logs", records=records, columns=COPY_COLUMNS)
        await conn.execute(
            "UPDATE chain_heads SET seq = $2, hash = $3, updated_at = now() WHERE tenant_id = $1",
            tenant_id,
            seq,
            prev,
        )
        result.stored += len(records)
        result.heads[tenant_id] = (seq, prev)
    return result


# --- dead letters ----------------------------------------------------------------------------


async def add_dead_letter(
    conn: asyncpg.Connection,
    *,
    stream_seq: int,
    subject: str,
    msg_id: str | None,
    data: bytes,
    error: str,
    deliveries: int,
) -> None:
    """Keep a message the worker gave up on; a second call for the same stream message is a no-op."""
    await conn.execute(
        "INSERT INTO dead_letters (stream_seq, subject, msg_id, data, error, deliveries) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (stream_seq) DO NOTHING",
        stream_seq,
        subject,
        msg_id,
        data,
        error,
        deliveries,
    )


async def dead_letters(conn: asyncpg.Connection, ids: list[int] | None = None) -> list[asyncpg.Record]:
    """The dead letters (all, or those of `ids`), oldest first."""
    return await conn.fetch(
        "SELECT id, stream_seq, subject, msg_id, data, error, deliveries, created_at FROM dead_letters "
        "WHERE $1::bigint[] IS NULL OR id = ANY($1::bigint[]) ORDER BY id",
        ids,
    )


async def remove_dead_letter(conn: asyncpg.Connection, dead_letter_id: int) -> None:
    await conn.execute("DELETE FROM dead_letters WHERE id = $1", dead_letter_id)


async def count_dead_letters(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM dead_letters")


# --- queries ----------------------------------------------------------------------------------

SELECT_EVENT = (
    "SELECT event_id, tenant_id, seq, actor, action, target, outcome, occurred_at, "
    "created_at AS received_at, source_ip, user_agent, metadata, correlation_id, principal, hash "
    "FROM audit_logs"
)


def row_to_event(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    if out["metadata"] is not None:
        out["metadata"] = orjson.loads(out["metadata"])
    return out


def row_to_response(row: asyncpg.Record) -> dict[str, Any]:
    """For answers: jsonb text goes out as it is, not parsed and encoded again."""
    out = dict(row)
    if out["metadata"] is not None:
        out["metadata"] = orjson.Fragment(out["metadata"])
    return out


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        if not raw.startswith("s"):
            raise ValueError
        seq = int(raw[1:])
        if seq < 1:
            raise ValueError
        return seq
    except (ValueError, UnicodeDecodeError):
        raise ValueError("cursor is not one this API returned") from None


async def query_events(
    pool: asyncpg.Pool,
    tenant_id: uuid.UUID,
    *,
    actor: str | None = None,
    action: str | None = None,
    target: str | None = None,
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int = 100,
    before_seq: int | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """Newest first (by chain seq, i.e. storage order), keyset-paginated on seq.

    New events always get a higher seq than any stored one, so a client walking the pages
    never skips nor repeats a row while events keep arriving.
    """
    where = ["tenant_id = $1"]
    args: list[Any] = [tenant_id]
    for column, value in (("actor", actor), ("action", action), ("target", target), ("outcome", outcome)):
        if value is not None:
            args.append(value)
            where.append(f"{column} = ${len(args)}")
    if since is not None:
        args.append(since)
        where.append(f"created_at >= ${len(args)}")
    if until is not None:
        args.append(until)
        where.append(f"created_at < ${len(args)}")
    if before_seq is not None:
        args.append(before_seq)
        where.append(f"seq < ${len(args)}")
    args.append(limit + 1)
    sql = f"{SELECT_EVENT} WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ${len(args)}"  # noqa: S608
    rows = await pool.fetch(sql, *args)
    items = [row_to_response(r) for r in rows[:limit]]
    next_seq = items[-1]["seq"] if len(rows) > limit else None
    return items, next_seq


async def get_event(pool: asyncpg.Pool, tenant_id: uuid.UUID, event_id: uuid.UUID) -> dict[str, Any] | None:
    row = await pool.fetchrow(f"{SELECT_EVENT} WHERE tenant_id = $1 AND event_id = $2", tenant_id, event_id)
    return row_to_response(row) if row else None


VERIFY_COLUMNS = (
    "tenant_id, event_id, seq, created_at, occurred_at, actor, action, target, outcome, "
    "source_ip, user_agent, metadata, correlation_id, principal, prev_hash, hash, chain_version"
)


async def verify(
    pool: asyncpg.Pool,
    tenant_id: uuid.UUID,
    since: datetime | None = None,
    until: datetime | None = None,
    batch: int = 5000,
) -> chain.VerifyResult:
    """Recompute the tenant's chain (or the stretch of it received between since and until)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        head = await conn.fetchrow("SELECT seq, hash FROM chain_heads WHERE tenant_id = $1", tenant_id)
        anchor_row = await conn.fetchrow(
            "SELECT seq, hash FROM chain_anchors WHERE tenant_id = $1", tenant_id
        )
        anchor = (anchor_row["seq"], anchor_row["hash"]) if anchor_row else (0, chain.GENESIS_HASH)
        whole = since is None and until is None
        lo, hi = anchor[0] + 1, None
        if not whole:
            # The stretch is the seq range of the events received in the window; every row in
            # it is checked, so a row deleted from inside the window still shows as a gap.
            bounds = await conn.fetchrow(
                "SELECT min(seq) AS lo, max(seq) AS hi FROM audit_logs WHERE tenant_id = $1 "
                "AND created_at >= coalesce($2, '-infinity'::timestamptz) "
                "AND created_at < coalesce($3, 'infinity'::timestamptz) AND seq > $4",
                tenant_id,
                since,
                until,
                anchor[0],
            )
            if bounds["lo"] is None:
                return chain.VerifyResult(True, 0, None)
            lo, hi = bounds["lo"], bounds["hi"]
            if lo > anchor[0] + 1:
                prev = await conn.fetchrow(
                    "SELECT seq, hash FROM audit_logs WHERE tenant_id = $1 AND seq = $2", tenant_id, lo - 1
                )
                anchor = (prev["seq"], prev["hash"]) if prev else None
        verifier = chain.ChainVerifier(anchor)
        sql = (
            f"SELECT {VERIFY_COLUMNS} FROM audit_logs WHERE tenant_id = $1 AND seq >= $2 "  # noqa: S608
            "AND seq <= coalesce($3, 9223372036854775807) ORDER BY seq"
        )
        cur = await conn.cursor(sql, tenant_id, lo, hi)
        while True:
            rows = await cur.fetch(batch)
            if not rows:
                break
            decoded = [row_to_event(r) for r in rows]
            if not verifier.feed(decoded):
                break
        result = verifier.result()
        if result.valid and hi is not None and result.checked and result.last_seq != hi:
            return chain.VerifyResult(
                False,
                result.checked,
                None,
                "events missing at the end of the window",
                problem="missing_at_end",
            )
        if result.valid and whole and head is not None:
            last_seq = result.last_seq if result.checked else anchor[0]
            last_hash = result.last_hash if result.checked else anchor[1]
            if (last_seq, last_hash) != (head["seq"], head["hash"]):
                return chain.VerifyResult(
                    False,
                    result.checked,
                    None,
                    f"chain head is at seq {head['seq']} but stored events end at seq {last_seq}: "
                    "newest events are missing or were altered",
                    problem="head_mismatch",
                )
        return result


async def chain_heads(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT h.tenant_id, t.name, h.seq, h.updated_at "
        "FROM chain_heads h JOIN tenants t ON t.id = h.tenant_id"
    )
