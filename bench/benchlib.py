"""Shared pieces of the benchmarks: the real stack, realistic events, rows for COPY, figures."""

from __future__ import annotations

import contextlib
import http.client
import os
import platform
import random
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from audit_devtools.stack import Service, Stack
from audit_service.store import EVENT_COLUMNS

# The columns of audit_logs in the worker's order, so COPY rows have the worker's shape.
COPY_COLUMNS = [c.strip() for c in EVENT_COLUMNS.split(",")]

ACTIONS = [
    "user.login",
    "user.logout",
    "document.read",
    "document.update",
    "document.delete",
    "role.grant",
    "role.revoke",
    "settings.change",
    "api_key.create",
    "export.run",
]
OUTCOMES = ["success", "success", "success", "failure", "unknown"]
AGENTS = [
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_4) AppleWebKit/605.1.15 Version/17.4 Safari/605.1.15",
    "audit-sdk-python/1.4.2 httpx/0.27",
    "curl/8.5.0",
]


@dataclass
class Figure:
    """One measured figure, with its target when it has one."""

    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None

    def line(self) -> str:
        verdict = "" if self.met is None else ("  target met" if self.met else "  TARGET MISSED")
        target = f"  (target {self.target})" if self.target else ""
        return f"  {self.name:<58} {self.value:>12,.2f} {self.unit:<8}{target}{verdict}"


def event(rng: random.Random, i: int) -> dict[str, Any]:
    """A plausible audit event: who did what to which object, from where, with a little context."""
    user = rng.randrange(5000)
    return {
        "actor": f"user-{user}@example.com",
        "action": rng.choice(ACTIONS),
        "target": f"document/{rng.randrange(100_000)}",
        "outcome": rng.choice(OUTCOMES),
        "source_ip": f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}",
        "user_agent": rng.choice(AGENTS),
        "metadata": {
            "request_id": f"req-{i:09d}",
            "session": f"s-{user:05d}",
            "mfa": rng.random() < 0.7,
            "bytes": rng.randrange(100_000),
        },
    }


def copy_row(
    rng: random.Random, tenant_id: uuid.UUID, seq: int, created_at: datetime, prev_hash: str
) -> tuple:
    """A row in COPY_COLUMNS order, shaped like the worker's; the hash is random 64-hex.

    Ids come from `rng`, not uuid4(): each uuid4() is a getrandom() call, slow on this VM.
    """
    e = event(rng, seq)
    return (
        tenant_id,
        seq,
        uuid.UUID(int=rng.getrandbits(128), version=4),
        created_at,
        created_at - timedelta(milliseconds=rng.randrange(5000)),
        e["actor"],
        e["action"],
        e["target"],
        e["outcome"],
        e["source_ip"],
        e["user_agent"],
        orjson.dumps(e["metadata"]).decode(),
        str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        str(uuid.UUID(int=rng.getrandbits(128), version=4)),  # principal: an API key's id
        seq,
        prev_hash,
        f"{rng.getrandbits(256):064x}",
        2,  # chain_version
    )


class Http:
    """One keep-alive HTTP/1.1 connection (stdlib).

    Used instead of httpx as the load generator: on this 2-core VM httpx spent ~3 ms of client
    CPU per request (a sequential GET /health took 3.2 ms with httpx, 0.9 ms with http.client),
    which would be counted as server latency and steal CPU from the server.
    """

    def __init__(self, url: str, headers: dict[str, str], timeout: float = 60.0):
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
        self.headers = headers

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes, str | None]:
        """Returns (status, body, X-Cache header)."""
        self.conn.request(method, path, body=body, headers=self.headers)
        r = self.conn.getresponse()
        return r.status, r.read(), r.getheader("x-cache")

    def close(self) -> None:
        self.conn.close()


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return float("nan")
    k = max(0, min(len(sorted_values) - 1, round(p / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


@contextlib.contextmanager
def running(database: str, workers: int = 1, **env: str) -> Iterator[tuple[Stack, Service]]:
    """A fresh fsync=on stack with one service on it, stopped whatever happens.

    A stack per service: the NATS stream's subjects are fixed, so two services cannot share one.
    """
    stack = Stack(fsync=True)
    service = None
    try:
        stack.start()
        service = Service(stack, database, workers=workers, **env)
        service.start()
        yield stack, service
    finally:
        if service is not None:
            service.stop()
        stack.stop()


def machine() -> str:
    py = platform.python_version()
    return f"{platform.node()}, {os.cpu_count()} CPUs, {platform.machine()}, Python {py}"


def now() -> datetime:
    return datetime.now(UTC)


def header(title: str) -> None:
    print(f"\n=== {title} ===  ({now():%Y-%m-%d %H:%M} UTC; {machine()})", flush=True)
    load()


def load() -> None:
    # Measured before our own servers start: anything else using the CPU skews the figures.
    busy = cpu_busy()
    note = "" if busy < 0.15 else "  WARNING: other processes are using the CPU, figures will be low"
    print(f"  CPU busy before start: {busy:.0%}{note}", flush=True)


def cpu_busy(seconds: float = 1.0) -> float:
    """Fraction of all CPUs' time spent not idle over `seconds` (from /proc/stat)."""

    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        idle = values[3] + values[4]  # idle + iowait
        return sum(values) - idle, sum(values)

    busy0, total0 = sample()
    time.sleep(seconds)
    busy1, total1 = sample()
    return (busy1 - busy0) / max(1, total1 - total0)
