"""Per-tenant hash chain over a canonical encoding of each stored event.

hash(n) = sha256(hash(n-1) + "\\n" + n + "\\n" + canonical_v(event n)), n being the event's seq
and v the row's chain format version (audit_logs.chain_version, see CHAINED_FIELDS):
- 1: canonical_1 is the JSON array of the version's chained fields but seq (12 values): rows
  stored before the principal was (the rows there at migration 0004, and any that a worker of
  an older release writes after it, get the column's default, 1);
- 2: canonical_2 is the same array with the principal appended (13 values): who submitted the
  event, an API key's id or "admin" (null when the message did not say). What the worker writes.
The two never give the same bytes (their arrays differ in length), so changing a row's version
breaks its hash as well.

The canonical encoding must give the same bytes for an event as written by the worker and as
read back from PostgreSQL, so:
- timestamps are UTC with microseconds and a "Z";
- JSON objects have sorted keys and no white space;
- a float with an integral value is encoded as an integer (jsonb keeps no int/float
  distinction: 1e2 comes back as 100).
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

GENESIS_HASH = "0" * 64
INT64 = 2**63

# The fields that the chain protects, per chain format version, in the order they are encoded
# (and listed in the docs).
_V1_FIELDS = (
    "tenant_id",
    "event_id",
    "seq",
    "created_at",
    "occurred_at",
    "actor",
    "action",
    "target",
    "outcome",
    "source_ip",
    "user_agent",
    "metadata",
    "correlation_id",
)
CHAINED_FIELDS = {1: _V1_FIELDS, 2: (*_V1_FIELDS, "principal")}
# The version the worker writes.
CHAIN_VERSION = 2


@functools.lru_cache(maxsize=4096)  # a batch's events share their receipt time
def format_time(value: datetime) -> str:
    """UTC, microseconds, "Z": e.g. 2026-11-27T12:00:00.000001Z (four-digit years, always)."""
    offset = value.utcoffset()
    if offset is None:
        raise ValueError("naive datetime in the hash chain")
    if offset:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def normalize_json(value: Any) -> Any:
    """Make a JSON value canonical, recursively, so that a jsonb round trip keeps it.

    jsonb stores numbers as decimals: an integral float comes back as an integer, and a huge
    one as a long integer. So integral numbers within 64 bits are ints, all others floats.
    """
    kind = type(value)  # exact types: this runs for every stored and every verified event
    if kind is str or kind is bool or value is None:
        return value
    if kind is dict:
        return {str(k): normalize_json(v) for k, v in value.items()}
    if kind is int:
        return value if -INT64 <= value < INT64 else float(value)
    if kind is float:
        if not math.isfinite(value):
            raise ValueError("non-finite number")
        if value.is_integer() and -INT64 <= value < INT64:
            return int(value)
        return value
    if kind is list:
        return [normalize_json(v) for v in value]
    return value


def canonical(event: Mapping[str, Any], version: int = CHAIN_VERSION) -> bytes:
    """The chained fields of `version` but seq, as a JSON array in CHAINED_FIELDS order (metadata
    already normalized). seq is hashed beside it (see link), so this part can be computed before
    the event's place in the chain is known, outside the chain lock."""
    values = [
        str(event["tenant_id"]),
        str(event["event_id"]),
        format_time(event["created_at"]),
        format_time(event["occurred_at"]),
        event["actor"],
        event["action"],
        event["target"],
        event["outcome"],
        event["source_ip"],
        event["user_agent"],
        event["metadata"],
        event["correlation_id"],
    ]
    if version == 2:
        values.append(event["principal"])
    elif version != 1:
        raise ValueError(f"unknown chain version {version!r}")
    return orjson.dumps(values, option=orjson.OPT_SORT_KEYS)


def link_canonical(prev_hash: str, seq: int, body: bytes) -> str:
    return hashlib.sha256(f"{prev_hash}\n{seq}\n".encode("ascii") + body).hexdigest()


def link(prev_hash: str, event: Mapping[str, Any]) -> str:
    """The hash of a stored row, in its own chain version."""
    return link_canonical(prev_hash, event["seq"], canonical(event, event["chain_version"]))


# What broke a chain (VerifyResult.problem), for tools: the reason is the sentence for people.
PROBLEMS = (
    "hash_mismatch",  # a row's content (or its chain version) changed: its hash is not its own
    "prev_hash_mismatch",  # a row does not link to the one before it (or to the genesis hash)
    "seq_gap",  # rows missing in the middle, or at the start of the chain
    "unknown_chain_version",
    "missing_at_end",  # a window's last rows are gone
    "head_mismatch",  # the stored events end before (or away from) chain_heads
)


@dataclass
class VerifyResult:
    valid: bool
    checked: int
    first_invalid: str | None
    reason: str | None = None
    last_seq: int = 0
    last_hash: str | None = None
    # The first invalid row's seq and receipt time, and which of PROBLEMS it is.
    invalid_seq: int | None = None
    invalid_created_at: datetime | None = None
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "checked": self.checked,
            "first_invalid": self.first_invalid,
            "reason": self.reason,
        }


class ChainVerifier:
    """Walks rows in seq order and reports the first one that breaks the chain.

    `anchor` is (seq, hash) of the row before the first one fed, when known; without one the
    first row is trusted as the start (its own hash is still recomputed).
    """

    def __init__(self, anchor: tuple[int, str] | None = None):
        self.prev_seq = anchor[0] if anchor else None
        self.prev_hash = anchor[1] if anchor else None
        self.checked = 0
        self.failure: tuple[str, str] | None = None
        self.failed_row: Mapping[str, Any] | None = None
        self.problem: str | None = None

    def _fail(self, row: Mapping[str, Any], problem: str, reason: str) -> bool:
        self.failure = (str(row["event_id"]), reason)
        self.failed_row, self.problem = row, problem
        return False

    def feed(self, rows: Iterable[Mapping[str, Any]]) -> bool:
        """Feed rows; returns False once a break is found (then stop feeding)."""
        for row in rows:
            if self.failure:
                return False
            self.checked += 1
            seq = row["seq"]
            if self.prev_seq is not None and seq != self.prev_seq + 1:
                return self._fail(row, "seq_gap", f"sequence gap: expected {self.prev_seq + 1}, found {seq}")
            if self.prev_hash is not None and row["prev_hash"] != self.prev_hash:
                return self._fail(
                    row, "prev_hash_mismatch", "prev_hash does not match the previous event's hash"
                )
            if self.prev_seq is None and seq == 1 and row["prev_hash"] != GENESIS_HASH:
                return self._fail(
                    row, "prev_hash_mismatch", "first event does not start from the genesis hash"
                )
            if row["metadata"] is not None:
                row = {**row, "metadata": normalize_json(row["metadata"])}
            if row["chain_version"] not in CHAINED_FIELDS:
                return self._fail(
                    row, "unknown_chain_version", f"unknown chain version {row['chain_version']}"
                )
            if link(row["prev_hash"], row) != row["hash"]:
                return self._fail(row, "hash_mismatch", "stored hash does not match the event's content")
            self.prev_seq, self.prev_hash = seq, row["hash"]
        return True

    def result(self) -> VerifyResult:
        if self.failure:
            row = self.failed_row or {}
            return VerifyResult(
                False,
                self.checked,
                self.failure[0],
                self.failure[1],
                invalid_seq=row.get("seq"),
                invalid_created_at=row.get("created_at"),
                problem=self.problem,
            )
        return VerifyResult(True, self.checked, None, None, self.prev_seq or 0, self.prev_hash)


def utcnow() -> datetime:
    return datetime.now(UTC)
