"""What the API and the worker both do while a dependency is away: which database errors mean
"try again later", and the loop that waits for NATS."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import asyncpg

T = TypeVar("T")

# PostgreSQL is away (down, restarting, out of connections): the API answers 503 (the client may
# retry), never 500; the worker naks and the message comes again.
DB_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
    asyncpg.exceptions.TooManyConnectionsError,
)

# A write transaction may also just lose a race: running it again is the cure.
DB_RETRYABLE = (
    *DB_UNAVAILABLE,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.LockNotAvailableError,
)

FIRST_DELAY = 0.5
MAX_DELAY = 5.0


def describe(exc: BaseException) -> str:
    """An exception as a log field: its message, or its type when it has none."""
    return str(exc) or type(exc).__name__


async def until_nats_ready(
    attempt: Callable[[], Awaitable[T]], log: logging.Logger, stopping: asyncio.Event | None = None
) -> T | None:
    """`attempt()`'s result, tried again (0.5 s, 1 s, 2 s... at most 5 s apart) until it works;
    None if `stopping` is set first. For NATS: a broker that is away comes back."""
    delay = FIRST_DELAY
    while stopping is None or not stopping.is_set():
        try:
            return await attempt()
        except Exception as exc:  # noqa: BLE001 - any failure is retried
            log.warning("nats not ready", extra={"error": describe(exc)})
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_DELAY)
    return None
