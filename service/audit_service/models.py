"""Request and response models: the HTTP contract's event shape and its limits.

Validation is strict so that nothing the worker later fails to store can be accepted: an event
that passes here always fits PostgreSQL (no NUL characters, valid UTF-8, 64-bit integers, finite
numbers), which is what lets the API answer 202 and mean it.
"""

from __future__ import annotations

import math
import re
import socket
from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

MAX_BATCH = 1000
MAX_METADATA_BYTES = 16 * 1024
MAX_METADATA_DEPTH = 32
INT64 = 2**63


# Checked in pydantic's Rust core: events are parsed with model_validate_json, where invalid
# UTF-8 and lone surrogates are already a JSON error, so only NUL is left to refuse.
Text = Annotated[str, StringConstraints(pattern=r"^[^\x00]*$")]

RFC3339_START = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _rfc3339(value: Any) -> Any:
    # Pydantic alone also takes a number, or a string of digits, as a Unix timestamp.
    if isinstance(value, datetime) or (isinstance(value, str) and RFC3339_START.match(value)):
        return value
    raise ValueError("must be an RFC 3339 date-time with an offset, like 2024-05-01T12:00:00Z")


def _year(value: datetime) -> datetime:
    # PostgreSQL and the canonical encoding both want four-digit UTC years (and converting
    # year 1 or 9999 to UTC can overflow).
    if not 1 < value.year < 9999:
        raise ValueError("year must be between 2 and 9998")
    return value


# occurred_at, and the since/until query parameters.
Timestamp = Annotated[AwareDatetime, BeforeValidator(_rfc3339), AfterValidator(_year)]


def _check_json(value: Any, depth: int = 0) -> None:
    """Refuse what PostgreSQL's jsonb or the worker cannot take: NUL characters, non-finite
    numbers, integers beyond 64 bits, deep nesting. (Invalid UTF-8 and unpaired surrogates
    never get here: the JSON parser refuses them.) Exact type checks: this runs per event."""
    if depth > MAX_METADATA_DEPTH:
        raise ValueError(f"is nested deeper than {MAX_METADATA_DEPTH} levels")
    kind = type(value)
    if kind is dict:
        items = value.items()
    elif kind is list:
        items = ((None, item) for item in value)
    else:
        items = ((None, value),)
        depth -= 1
    for key, item in items:
        if key is not None and "\x00" in key:
            raise ValueError("must not contain NUL characters")
        kind = type(item)
        if kind is str:
            if "\x00" in item:
                raise ValueError("must not contain NUL characters")
        elif kind is int:
            if not -INT64 <= item < INT64:
                raise ValueError("holds an integer outside the 64-bit range")
        elif kind is float:
            if not math.isfinite(item):
                raise ValueError("holds a non-finite number")
        elif kind is dict or kind is list:
            _check_json(item, depth + 1)
        elif kind is not bool and item is not None:
            raise ValueError(f"holds a value of unsupported type {kind.__name__}")


class EventIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_id: UUID | None = Field(default=None, description="Idempotency key; a new UUID when absent")
    actor: Text = Field(min_length=1, max_length=256)
    action: Text = Field(min_length=1, max_length=256)
    target: Text | None = Field(default=None, max_length=1024)
    outcome: Literal["success", "failure", "unknown"] = "unknown"
    occurred_at: Timestamp | None = Field(default=None, description="RFC 3339 with offset")
    source_ip: str | None = Field(default=None, max_length=64)
    user_agent: Text | None = Field(default=None, max_length=1024)
    metadata: dict[str, Any] | None = Field(default=None, description="JSON object, at most 16 KiB")

    @field_validator("source_ip")
    @classmethod
    def _ip(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # inet_pton/inet_ntop: strict parsing and one canonical text form, ten times cheaper
        # than the ipaddress module on the ingest path.
        family = socket.AF_INET6 if ":" in value else socket.AF_INET
        try:
            return socket.inet_ntop(family, socket.inet_pton(family, value))
        except (OSError, ValueError):
            raise ValueError("is not an IPv4 or IPv6 address") from None

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        _check_json(value)
        if len(orjson.dumps(value)) > MAX_METADATA_BYTES:
            raise ValueError(f"is larger than {MAX_METADATA_BYTES} bytes when encoded")
        return value


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class Accepted(BaseModel):
    id: UUID
    status: Literal["accepted"] = "accepted"


class BatchAccepted(BaseModel):
    accepted: int
    ids: list[UUID]


class EventOut(BaseModel):
    event_id: UUID
    tenant_id: UUID
    seq: int
    actor: str
    action: str
    target: str | None
    outcome: str
    occurred_at: datetime
    received_at: datetime
    source_ip: str | None
    user_agent: str | None
    metadata: dict[str, Any] | None
    correlation_id: str | None
    principal: str | None = Field(
        description='Who submitted it: the API key\'s id, or "admin" for the admin key; '
        "null for events stored before this was recorded"
    )
    hash: str


class EventPage(BaseModel):
    items: list[EventOut]
    next_cursor: str | None


class VerifyOut(BaseModel):
    valid: bool
    checked: int
    first_invalid: str | None
    reason: str | None = None


class ComponentHealth(BaseModel):
    status: Literal["healthy", "unhealthy"]
    latency_ms: float
    error: str | None = None


class HealthOut(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    components: dict[str, ComponentHealth]


def dumps(value: Any) -> bytes:
    """JSON for responses and CLI output; asyncpg's UUIDs and other odd types become strings."""
    return orjson.dumps(value, default=str)
