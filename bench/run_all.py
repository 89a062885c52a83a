"""Runs the three benchmarks in sequence (`make bench`) and prints a summary table.

With --fleet, also the fleet health benchmark (bench/fleet_health.py: a 20-host lab of its own,
about 4 minutes more; `make bench-fleet` runs it alone). Exits non-zero only when a benchmark
fails to run; a missed target is a finding, printed as such.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback

import fleet_health
import ingest_batch
import ingest_single
import query
from benchlib import Figure, machine, now


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fleet", action="store_true", help="also bench/fleet_health.py (a 20-host lab)")
    args = p.parse_args()
    benches = [("ingest_batch", ingest_batch), ("ingest_single", ingest_single), ("query", query)]
    if args.fleet:
        benches.append(("fleet_health", fleet_health))
    started = time.perf_counter()
    results: dict[str, list[Figure]] = {}
    failed = []
    for name, bench in benches:
        try:
            results[name] = bench.run()
        except Exception:  # noqa: BLE001 - report it and go on with the others
            traceback.print_exc()
            failed.append(name)

    print(
        f"\n=== summary ({now():%Y-%m-%d %H:%M} UTC; {machine()}; {time.perf_counter() - started:.0f}s) ==="
    )
    print(f"  {'figure':<58} {'value':>12} {'unit':<7} {'target':<10} verdict")
    for name, figures in results.items():
        print(f"  [{name}]")
        for f in figures:
            verdict = "" if f.met is None else ("met" if f.met else "MISSED")
            print(f"  {f.name:<58} {f.value:>12,.2f} {f.unit:<7} {f.target:<10} {verdict}")
    for name in failed:
        print(f"  [{name}] FAILED to run (see the traceback above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
