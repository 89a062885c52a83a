"""Tenant-scoped query latency: GET /api/v1/audit/logs?limit=100 over 1,000,000 stored events.

The rows are loaded with COPY straight into audit_logs (20 tenants, created_at spread over the
previous and the current month, consistent seq and prev_hash per tenant, chain heads set), then
ANALYZE. Measured with the Redis query cache off (so PostgreSQL answers every request), then on,
and the same SQL straight through asyncpg to tell database time from API time.
Target: p99 < 20 ms with the cache off.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import asyncpg
import httpx
import orjson
from audit_devtools.stack import ServiceProcess, free_port
from audit_service import db
from audit_service.store import SELECT_EVENT
from benchlib import COPY_COLUMNS, Figure, Http, copy_row, header, now, percentile, running

TARGET_P99_MS = 20.0
PATH = "/api/v1/audit/logs?limit=100"
QUERY_SQL = f"{SELECT_EVENT} WHERE tenant_id = $1 ORDER BY seq DESC LIMIT $2"  # what the API runs


async def load_rows(dsn: str, tenant_ids: list[uuid.UUID], rows: int, seed: int = 4) -> float:
    """COPY `rows` events spread evenly over the tenants; returns the seconds it took."""
    rng = random.Random(seed)
    end = now()
    start = db.month_start(db.month_start(end) - timedelta(days=1))  # first day of last month
    span = (end - start).total_seconds()
    conn = await asyncpg.connect(dsn)
    t0 = time.perf_counter()
    try:
        await db.ensure_partitions(conn, start, 2)
        per_tenant = rows // len(tenant_ids)
        for i, tenant_id in enumerate(tenant_ids):
            n = per_tenant + (rows % len(tenant_ids) if i == 0 else 0)
            times = sorted(start + timedelta(seconds=rng.random() * span) for _ in range(n))
            records, prev = [], "0" * 64
            for seq, created in enumerate(times, 1):
                records.append(copy_row(rng, tenant_id, seq, created, prev))
                prev = records[-1][-1]
            async with conn.transaction():
                await conn.copy_records_to_table("audit_logs", records=records, columns=COPY_COLUMNS)
                await conn.execute(
                    "INSERT INTO tenants (id, name) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
                    tenant_id,
                    f"bench-query-{i}",
                )
                await conn.execute(
                    "INSERT INTO chain_heads (tenant_id, seq, hash) VALUES ($1, $2, $3) "
                    "ON CONFLICT (tenant_id) DO UPDATE SET seq = EXCLUDED.seq, hash = EXCLUDED.hash",
                    tenant_id,
                    n,
                    prev,
                )
        await conn.execute("ANALYZE audit_logs")
        return time.perf_counter() - t0
    finally:
        await conn.close()


def measure(url: str, key: str, requests: int, concurrency: int) -> tuple[float, float, float, float]:
    """Returns (req/s, p50 ms, p99 ms, fraction answered from the cache)."""
    latencies: list[float] = []
    hits = 0
    todo = iter(range(requests))

    def client() -> None:
        nonlocal hits
        http = Http(url, {"X-API-Key": key})
        try:
            for _ in todo:
                t0 = time.perf_counter()
                status, body, cache = http.request("GET", PATH)
                latencies.append(time.perf_counter() - t0)
                if status != 200:
                    raise RuntimeError(f"query answered {status}: {body[:300]!r}")
                hits += cache == "hit"
        finally:
            http.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(client) for _ in range(concurrency)]:
            f.result()
    elapsed = time.perf_counter() - start
    latencies.sort()
    return (
        requests / elapsed,
        percentile(latencies, 50) * 1000,
        percentile(latencies, 99) * 1000,
        hits / requests,
    )


async def measure_sql(dsn: str, tenant_id: uuid.UUID, requests: int) -> tuple[float, float]:
    """The API's query straight through asyncpg: (p50 ms, p99 ms), for the database's share."""
    conn = await asyncpg.connect(dsn)
    try:
        latencies = []
        for _ in range(requests):
            t0 = time.perf_counter()
            await conn.fetch(QUERY_SQL, tenant_id, 101)
            latencies.append(time.perf_counter() - t0)
        plan = await conn.fetch("EXPLAIN (ANALYZE, BUFFERS) " + QUERY_SQL, tenant_id, 101)
        print("  plan:\n" + "\n".join("    " + r[0] for r in plan[:12]))
    finally:
        await conn.close()
    latencies.sort()
    return percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000


def start_api(service, **env: str) -> tuple[ServiceProcess, str]:
    """A second API process on the same database, with different settings."""
    port = free_port()
    proc = ServiceProcess(
        ["api"], {**service.env, "API_PORT": str(port), **env}, service.logdir / f"api-{port}.log"
    ).start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/api/v1/metrics/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.stop()
    raise RuntimeError(f"second API not healthy: {proc.log()[-2000:]}")


def run(rows: int = 1_000_000, tenants: int = 20, requests: int = 2000, concurrency: int = 4) -> list[Figure]:
    header(f"query: GET {PATH} over {rows:,} rows in {tenants} tenants, {requests} requests, fsync on")
    figures: list[Figure] = []
    with running("bench_query", workers=0, CACHE_ENABLED="false") as (_, service):
        tenant, key = service.tenant("bench-query-main")
        ids = [uuid.UUID(tenant)] + [uuid.uuid4() for _ in range(tenants - 1)]
        took = asyncio.run(load_rows(service.database_url, ids, rows))
        print(
            f"  loaded {rows:,} rows with COPY + ANALYZE in {took:.1f}s ({rows / took:,.0f} rows/s)",
            flush=True,
        )
        first = orjson.loads(Http(service.url, {"X-API-Key": key}).request("GET", PATH)[1])
        if len(first["items"]) != 100 or first["items"][0]["seq"] != rows // tenants + rows % tenants:
            raise RuntimeError("the API did not return the tenant's newest 100 events")

        sql_p50, sql_p99 = asyncio.run(measure_sql(service.database_url, ids[0], 500))
        print(f"  SQL alone (asyncpg, sequential): p50 {sql_p50:.2f} ms, p99 {sql_p99:.2f} ms", flush=True)
        figures += [
            Figure("query SQL alone: p50", sql_p50, "ms"),
            Figure("query SQL alone: p99", sql_p99, "ms"),
        ]

        cached_api, cached_url = start_api(service, CACHE_ENABLED="true")
        try:
            for cache, url in (("off", service.url), ("on", cached_url)):
                measure(url, key, 100, 1)  # warm-up: connections, plan cache, buffers
                for conc in (1, concurrency):
                    rps, p50, p99, hits = measure(url, key, requests, conc)
                    label = f"query limit=100, cache {cache}, {conc} client{'s' if conc > 1 else ''}"
                    met = p99 < TARGET_P99_MS
                    print(
                        f"  {label}: {rps:,.0f} req/s, p50 {p50:.2f} ms, p99 {p99:.2f} ms, "
                        f"cache hits {hits:.0%} ({'target met' if met else 'TARGET MISSED'}: "
                        f"p99 < {TARGET_P99_MS:.0f} ms)",
                        flush=True,
                    )
                    figures += [
                        Figure(f"{label}: rate", rps, "req/s"),
                        Figure(f"{label}: p50", p50, "ms"),
                        Figure(f"{label}: p99", p99, "ms", f"< {TARGET_P99_MS:.0f} ms", met),
                    ]
        finally:
            cached_api.stop()
    return figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--tenants", type=int, default=20)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=4)
    a = p.parse_args()
    figures = run(a.rows, a.tenants, a.requests, a.concurrency)
    print("\n".join(f.line() for f in figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
