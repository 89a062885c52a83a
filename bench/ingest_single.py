"""Single-event ingest (POST /api/v1/audit/logs) at 32 concurrent clients: requests/s, p50, p99.

Each 202 means the event is in JetStream (file storage), so this is the latency a caller waits
for a durable accept. Measured twice when wrk is installed: with wrk (C, little CPU) and with
32 Python threads on http.client. The machine has 2 cores shared by client, API, worker, NATS,
PostgreSQL and Redis, so the client's own CPU use inflates the figures; wrk's much less so.
Target: p99 < 25 ms.
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
from benchlib import Figure, Http, event, header, percentile, running

TARGET_P99_MS = 25.0
PATH = "/api/v1/audit/logs"

# Unique bodies (thread id and counter in the fields); the API key comes from the environment.
# `tid` is a global set per thread by setup().
WRK_SCRIPT = r"""
local counter = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-API-Key"] = os.getenv("AUDIT_BENCH_KEY")
end
function request()
  counter = counter + 1
  local body = string.format(
    '{"actor":"user-%d@example.com","action":"document.read","target":"document/%d",' ..
    '"outcome":"success","source_ip":"10.1.%d.%d","user_agent":"wrk-bench/1.0",' ..
    '"metadata":{"request_id":"req-%d-%d","mfa":true,"bytes":%d}}',
    counter % 5000, counter, tid % 256, counter % 250 + 1, tid, counter, counter * 7 % 100000)
  return wrk.format(nil, nil, nil, body)
end
function done(summary, latency, requests)
  io.write(string.format("WRK_RESULT %d %d %d %d %.3f %.3f %.3f\n",
    summary.requests, summary.duration,
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
"""


def python_load(url: str, key: str, bodies: list[bytes], concurrency: int, seconds: float) -> list[float]:
    """Closed loop: each of `concurrency` threads posts, waits for the answer, posts again."""
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    todo = iter(bodies)  # next() on a list iterator is atomic under the GIL
    headers = {"X-API-Key": key, "Content-Type": "application/json"}

    def client() -> None:
        http = Http(url, headers, timeout=30)
        try:
            for body in todo:
                t0 = time.perf_counter()
                if t0 > stop_at:
                    return
                status, answer, _ = http.request("POST", PATH, body)
                latencies.append(time.perf_counter() - t0)
                if status != 202:
                    raise RuntimeError(f"single ingest answered {status}: {answer[:300]!r}")
        finally:
            http.close()

    with ThreadPoolExecutor(concurrency) as pool:
        for f in [pool.submit(client) for _ in range(concurrency)]:
            f.result()
    return latencies


def run_python(url: str, key: str, concurrency: int, seconds: float, max_requests: int) -> tuple[float, ...]:
    rng = random.Random(3)
    bodies = [orjson.dumps(event(rng, i)) for i in range(max_requests + 1000)]
    python_load(url, key, bodies[:1000], concurrency, 2.0)  # warm-up: connections, caches
    start = time.perf_counter()
    lat = python_load(url, key, bodies[1000:], concurrency, seconds)
    elapsed = time.perf_counter() - start
    lat.sort()
    return len(lat) / elapsed, percentile(lat, 50) * 1000, percentile(lat, 99) * 1000


def run_wrk(url: str, key: str, concurrency: int, seconds: float) -> tuple[float, ...] | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        print("  wrk not installed (apt-get install wrk): only the Python client is measured")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "post.lua"
        script.write_text(WRK_SCRIPT)
        env = {"AUDIT_BENCH_KEY": key, "PATH": "/usr/bin:/bin"}

        def wrk_run(duration: float) -> str:
            out = subprocess.run(
                [
                    wrk,
                    "-t2",
                    f"-c{concurrency}",
                    f"-d{duration:.0f}s",
                    "--timeout",
                    "10s",
                    "-s",
                    str(script),
                    url + PATH,
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=duration + 60,
                check=True,
            )
            return out.stdout

        wrk_run(2)  # warm-up
        m = re.search(r"WRK_RESULT (\d+) (\d+) (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+)", wrk_run(seconds))
    if not m:
        raise RuntimeError("wrk printed no result line")
    requests, duration_us, bad_status, socket_errors = (int(m.group(i)) for i in range(1, 5))
    if bad_status or socket_errors:
        raise RuntimeError(f"wrk: {bad_status} non-2xx answers, {socket_errors} socket errors")
    return requests / (duration_us / 1e6), float(m.group(5)), float(m.group(6))


def run(
    concurrency: int = 32,
    seconds: float = 20.0,
    max_requests: int = 20_000,
    api_workers: tuple[int, ...] = (1, 2),
) -> list[Figure]:
    header(f"ingest_single: POST {PATH} at {concurrency} concurrent clients, {seconds:.0f}s, fsync on")
    figures: list[Figure] = []
    for n in api_workers:
        with running(f"bench_single_a{n}", workers=1, API_WORKERS=str(n)) as (_, service):
            _, key = service.tenant(f"bench-single-{n}")
            results = {
                "wrk": run_wrk(service.url, key, concurrency, seconds),
                "python": run_python(service.url, key, concurrency, seconds, max_requests),
            }
        for client, res in results.items():
            if res is None:
                continue
            rps, p50, p99 = res
            met = p99 < TARGET_P99_MS
            label = f"single ingest, {client} client, API_WORKERS={n}"
            print(
                f"  {label}: {rps:,.0f} req/s, p50 {p50:.1f} ms, p99 {p99:.1f} ms "
                f"({'target met' if met else 'TARGET MISSED'}: p99 < {TARGET_P99_MS:.0f} ms)",
                flush=True,
            )
            figures += [
                Figure(f"{label}: rate", rps, "req/s"),
                Figure(f"{label}: p50", p50, "ms"),
                Figure(f"{label}: p99", p99, "ms", f"< {TARGET_P99_MS:.0f} ms", met),
            ]
    return figures


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--max-requests", type=int, default=20_000, help="Python client only; wrk runs --seconds")
    p.add_argument("--api-workers", default="1,2", help="API_WORKERS values to try, comma-separated")
    a = p.parse_args()
    figures = run(a.concurrency, a.seconds, a.max_requests, tuple(int(w) for w in a.api_workers.split(",")))
    print("\n".join(f.line() for f in figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
