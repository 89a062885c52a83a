"""Runs the three benchmarks in sequence (`make bench`) and prints a summary table.

Exits non-zero only when a benchmark fails to run; a missed target is a finding, printed as such.
"""

from __future__ import annotations

import sys
import time
import traceback

import ingest_batch
import ingest_single
import query
from benchlib import Figure, machine, now


def main() -> int:
    started = time.perf_counter()
    results: dict[str, list[Figure]] = {}
    failed = []
    for name, bench in (("ingest_batch", ingest_batch), ("ingest_single", ingest_single), ("query", query)):
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
