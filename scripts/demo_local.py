"""`make demo` (local mode): the service on real PostgreSQL, Redis and NATS JetStream on this
machine's loopback, a few hundred sample events, then a health summary.

With --serve it keeps everything running until Ctrl-C so that the API can be tried by hand.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from stack import Service, Stack  # noqa: E402

ACTIONS = ["user.login", "user.logout", "document.read", "document.update", "role.grant", "key.rotate"]


def sample_events(n: int, rng: random.Random) -> list[dict]:
    return [
        {
            "actor": f"user-{rng.randint(1, 25)}",
            "action": rng.choice(ACTIONS),
            "target": f"doc-{rng.randint(1, 200)}",
            "outcome": rng.choice(["success"] * 8 + ["failure"]),
            "source_ip": f"192.0.2.{rng.randint(1, 254)}",  # documentation range: only a field value
            "user_agent": "demo/1.0",
            "metadata": {"request": rng.randint(1, 10**6)},
        }
        for _ in range(n)
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=300)
    parser.add_argument("--serve", action="store_true", help="keep running until Ctrl-C")
    args = parser.parse_args()
    started = time.monotonic()
    print("demo: starting PostgreSQL, Redis and NATS JetStream on loopback ...", flush=True)
    stack = Stack(fsync=True).start()
    try:
        svc = Service(
            stack, "audit_logs", STREAM_NAME="audit-logs", STREAM_SUBJECT_PREFIX="audit.logs"
        ).start()
        rng = random.Random(7)
        tenants = {name: svc.tenant(name) for name in ("acme", "globex")}
        for name, (_, key) in tenants.items():
            events = sample_events(args.events // len(tenants), rng)
            for i in range(0, len(events), 100):
                r = httpx.post(
                    f"{svc.url}/api/v1/audit/logs/batch",
                    json={"events": events[i : i + 100]},
                    headers={"X-API-Key": key, "X-Correlation-ID": f"demo-{name}-{i}"},
                )
                r.raise_for_status()
        total = args.events // len(tenants) * len(tenants)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            stats = httpx.get(f"{svc.url}/api/v1/metrics/stats").json()
            if (
                stats["queue"].get("consumer_pending") == 0
                and stats["queue"].get("consumer_ack_pending") == 0
            ):
                break
            time.sleep(0.2)
        health = httpx.get(f"{svc.url}/api/v1/metrics/health").json()
        print(f"\nAudit Log service (local demo) - {health['status'].upper()}")
        for name, comp in health["components"].items():
            print(f"  {name:<9} {comp['status']:<10} {comp['latency_ms']:>7.2f} ms  {comp.get('error', '')}")
        print(
            f"  queue     {stats['queue']['messages']} messages in stream {stats['queue']['stream']}, "
            f"{stats['queue']['consumer_pending']} pending"
        )
        stored = 0
        for name, (_, key) in tenants.items():
            h = {"X-API-Key": key}
            verify = httpx.get(f"{svc.url}/api/v1/audit/verify", headers=h).json()
            newest = httpx.get(f"{svc.url}/api/v1/audit/logs", params={"limit": 1}, headers=h).json()["items"]
            stored += verify["checked"]
            chain = "valid" if verify["valid"] else "BROKEN"
            print(
                f"  tenant {name:<8} {verify['checked']} events, chain {chain}, "
                f"newest: {newest[0]['action'] if newest else '-'}"
            )
        print(f"  events    {stored} of {total} sent are stored")
        print(f"  API       {svc.url}  (try: curl {svc.url}/api/v1/metrics/health)")
        print(f"  took      {time.monotonic() - started:.1f} s")
        if args.serve:
            print("\nserving; keys: " + ", ".join(f"{n}={k}" for n, (_, k) in tenants.items()))
            print("Ctrl-C stops everything")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        svc.stop()
        return 0 if health["status"] == "healthy" and stored == total else 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
