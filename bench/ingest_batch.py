"""Durable end-to-end ingest rate through the batch endpoint, against a raw COPY of the same rows.

Durable rate = events / (first request sent -> last row committed in PostgreSQL), i.e. through
the API, JetStream (file storage) and the worker's hash-chained insert. The COPY rate is the
ceiling the same PostgreSQL reaches for the same rows in the same table. Target: ratio >= 0.5.
"""

from __future__ import annotations

import argparse
import asyncio
import queue
import random
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import asyncpg
import orjson
from benchlib import COPY_COLUMNS, Figure, Http, copy_row, event, header, now, running

TARGET_RATIO = 0.5
COMMIT_TIMEOUT = 600.0  # seconds to wait for the worker before calling the run failed
POLL_SECONDS = 0.05


def build_bodies(events: int, batch: int, seed: int) -> list[bytes]:
    # Encoded up front so that the client's own JSON work is not inside the timed window.
    rng = random.Random(seed)
    bodies = []
    for start in range(0, events, batch):
        n = min(batch, events - start)
        bodies.append(orjson.dumps({"events": [event(rng, start + i) for i in range(n)]}))
    return bodies


def send_all(url: str, key: str, bodies: list[bytes], clients: int) -> float:
    """POST every body from `clients` threads, one connection each; returns when all got 202."""
    todo = queue.SimpleQueue()
    for b in bodies:
        todo.put(b)
    headers = {"X-API-Key": key, "Content-Type": "application/json"}

    def client() -> None:
        http = Http(url, headers)
        try:
            while True:
                try:
                    body = todo.get_nowait()
                except queue.Empty:
                    return
                status, answer, _ = http.request("POST", "/api/v1/audit/logs/batch", body)
                if status != 202:
                    raise RuntimeError(f"batch answered {status}: {answer[:300]!r}")
        finally:
            http.close()

    with ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    return time.perf_counter()


async def wait_stored(
    conn: asyncpg.Connection, tenant_id: uuid.UUID, expected: int, start: float, sender: asyncio.Task[float]
) -> float:
    deadline = start + COMMIT_TIMEOUT
    while time.perf_counter() < deadline:
        if sender.done() and sender.exception():
            raise sender.exception()
        count = await conn.fetchval("SELECT count(*) FROM audit_logs WHERE tenant_id = $1", tenant_id)
        if count >= expected:
            if count > expected:
                raise RuntimeError(f"{count} rows stored for {expected} events sent")
            return time.perf_counter()
        await asyncio.sleep(POLL_SECONDS)
    raise RuntimeError(f"the worker did not store {expected} events within {COMMIT_TIMEOUT}s")


async def durable_run(
    url: str, dsn: str, key: str, tenant: str, bodies: list[bytes], events: int, clients: int
) -> tuple[float, float]:
    """Returns (accept rate, durable rate) in events/s."""
    conn = await asyncpg.connect(dsn)
    try:
        tenant_id = uuid.UUID(tenant)
        start = time.perf_counter()
        sender = asyncio.create_task(asyncio.to_thread(send_all, url, key, bodies, clients))
        stored_at = await wait_stored(conn, tenant_id, events, start, sender)
        accepted_at = await sender
        return events / (accepted_at - start), events / (stored_at - start)
    finally:
        await conn.close()


async def copy_run(dsn: str, events: int, seed: int) -> float:
    """COPY the same number of rows for a fresh tenant, commit included; returns rows/s."""
    rng = random.Random(seed)
    tenant_id = uuid.uuid4()
    created = now()
    records, prev = [], "0" * 64
    for seq in range(1, events + 1):
        records.append(copy_row(rng, tenant_id, seq, created, prev))
        prev = records[-1][-1]
    conn = await asyncpg.connect(dsn)
    try:
        start = time.perf_counter()
        async with conn.transaction():
            await conn.copy_records_to_table("audit_logs", records=records, columns=COPY_COLUMNS)
        return events / (time.perf_counter() - start)
    finally:
        await conn.close()


def run(
    events: int = 100_000, batch: int = 1000, clients: int = 4, workers: tuple[int, ...] = (1, 2)
) -> list[Figure]:
    header(f"ingest_batch: {events:,} events in batches of {batch} from {clients} clients, fsync on")
    bodies = build_bodies(events, batch, seed=1)
    figures: list[Figure] = []
    for n in workers:
        with running(f"bench_batch_w{n}", workers=n, RATE_LIMIT_PER_MINUTE="0") as (_, service):
            tenant, key = service.tenant(f"bench-batch-{n}")
            accept, durable = asyncio.run(
                durable_run(service.url, service.database_url, key, tenant, bodies, events, clients)
            )
            copy = asyncio.run(copy_run(service.database_url, events, seed=2))
        ratio = durable / copy
        verdict = "target met" if ratio >= TARGET_RATIO else "TARGET MISSED"
        print(
            f"  workers={n}: API accepted {accept:,.0f} ev/s, durable {durable:,.0f} ev/s, "
            f"COPY {copy:,.0f} rows/s, durable/COPY {ratio:.2f} "
            f"({verdict}: >= {TARGET_RATIO})",
            flush=True,
        )
        figures += [
            Figure(f"batch ingest accepted by API (workers={n})", accept, "ev/s"),
            Figure(f"batch ingest durable (workers={n})", durable, "ev/s"),
            Figure(f"COPY same rows (workers={n} run)", copy, "rows/s"),
            Figure(f"durable / COPY (workers={n})", ratio, "", f">= {TARGET_RATIO}", ratio >= TARGET_RATIO),
        ]
    return figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--events", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=1000)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--workers", default="1,2", help="worker process counts to try, comma-separated")
    a = p.parse_args()
    figures = run(a.events, a.batch, a.clients, tuple(int(w) for w in a.workers.split(",")))
    print("\n".join(f.line() for f in figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
