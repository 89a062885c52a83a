"""`make demo`: the whole audit stack in the local lab, some sample events, a health summary.

Creates the lab (Docker Engine, base images and containers, when missing), converges site.yml on
it, creates a demo tenant (its key is kept in .cache/demo-tenant.json, mode 0600, for the next
run), sends a few hundred events through nginx on 127.0.0.1, waits until they are stored and
prints a summary: each component's health, event counts, the hash chain and Prometheus' targets.
Run again, site.yml changes nothing and the summary is printed again.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time

import httpx
from audit_devtools import ROOT
from audit_devtools import lab as lablib  # the lab runner the lab tests use too

API = lablib.LB_URL  # lb1's nginx (HTTPS, the lab's CA), published on loopback only
PROMETHEUS = lablib.PROMETHEUS_URL
TENANT_FILE = ROOT / ".cache" / "demo-tenant.json"
ACTIONS = ["user.login", "user.logout", "document.read", "document.update", "role.grant", "key.rotate"]
CLI = "set -a; . /etc/audit-service/audit-service.env; set +a; /opt/audit-service/bin/audit-service"


def step(message: str) -> None:
    print(f"\n=== demo: {message}", flush=True)


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


def demo_tenant(lab: lablib.Lab) -> dict:
    """The demo tenant from the last run when the lab still knows its key; else a new one."""
    if TENANT_FILE.exists():
        tenant = json.loads(TENANT_FILE.read_text())
        r = httpx.get(
            f"{API}/api/v1/audit/logs",
            params={"limit": 1},
            headers={"X-API-Key": tenant["api_key"]},
            verify=lablib.lab_tls(),
        )
        if r.status_code == 200:
            return tenant
    created = json.loads(lab.exec("app1", f"{CLI} create-tenant demo-{int(time.time())}").stdout)
    key = json.loads(lab.exec("app1", f"{CLI} create-api-key {created['tenant_id']}").stdout)["api_key"]
    tenant = {"tenant_id": created["tenant_id"], "api_key": key}
    TENANT_FILE.parent.mkdir(parents=True, exist_ok=True)
    TENANT_FILE.touch(mode=0o600)
    TENANT_FILE.write_text(json.dumps(tenant))
    return tenant


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=300, help="sample events to send (default 300)")
    args = parser.parse_args()
    started = time.monotonic()

    step("the lab: Docker Engine, base images and one systemd container per inventory host")
    created = lablib.create(stream=True)  # building the base images, the first time, takes minutes
    if not created.ok:
        print(f"playbooks/lab.yml failed; full log: {created.log}", file=sys.stderr)
        return 1
    step("deploying the stack with playbooks/site.yml (a first run takes a few minutes)")
    site = lablib.run_playbook("playbooks/site.yml", stream=True)
    if not site.ok:
        print(f"site.yml failed; full log: {site.log}", file=sys.stderr)
        return 1
    lab = lablib.Lab()

    step(f"sending {args.events} sample events through nginx")
    tenant = demo_tenant(lab)
    headers = {"X-API-Key": tenant["api_key"]}
    before = httpx.get(
        f"{API}/api/v1/audit/verify", headers=headers, timeout=60, verify=lablib.lab_tls()
    ).json()["checked"]
    events = sample_events(args.events, random.Random())
    for i in range(0, len(events), 100):
        batch = events[i : i + 100]
        r = httpx.post(
            f"{API}/api/v1/audit/logs/batch",
            json={"events": batch},
            headers=headers,
            timeout=60,
            verify=lablib.lab_tls(),
        )
        r.raise_for_status()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        verify = httpx.get(
            f"{API}/api/v1/audit/verify", headers=headers, timeout=60, verify=lablib.lab_tls()
        ).json()
        if verify["checked"] >= before + len(events):
            break
        time.sleep(0.5)

    health = httpx.get(f"{API}/api/v1/metrics/health", timeout=30, verify=lablib.lab_tls())
    # The stats are not served to the public through nginx: ask an API host directly.
    stats = json.loads(lab.exec("app1", "curl -fsS http://$(hostname -i):8000/api/v1/metrics/stats").stdout)
    # A Prometheus started by this converge has not scraped yet: its targets are "unknown" until
    # the first scrape (15 s interval).
    deadline = time.monotonic() + 60
    while True:
        targets = httpx.get(f"{PROMETHEUS}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        if all(t["health"] != "unknown" for t in targets) or time.monotonic() > deadline:
            break
        time.sleep(2)
    up = sum(t["health"] == "up" for t in targets)
    body = health.json()
    stored_now = verify["checked"] - before
    # The verdict is that of every check; a check that could not run (no targets at all, say) fails.
    failed = [
        what
        for what, ok in (
            (f"the API says {body['status']}", health.status_code == 200 and body["status"] == "healthy"),
            (f"{len(events) - stored_now} events not stored", stored_now == len(events)),
            ("the hash chain does not verify", verify["valid"]),
            ("Prometheus has no targets", len(targets) > 0),
            (f"{len(targets) - up} Prometheus targets down", up == len(targets)),
        )
        if not ok
    ]
    verdict = "HEALTHY" if not failed else "UNHEALTHY: " + "; ".join(failed)

    print(f"\nAudit Log service in the lab: {verdict}")
    for name, comp in body["components"].items():
        print(f"  {name:<10} {comp['status']:<10} {comp['latency_ms']:>7.2f} ms  {comp.get('error') or ''}")
    queue = stats["queue"]
    print(
        f"  queue      {queue.get('messages')} messages in stream {queue.get('stream')}, "
        f"{queue.get('consumer_pending')} waiting for a worker"
    )
    print(
        f"  events     {stored_now} of {len(events)} sent now are stored; "
        f"the demo tenant has {verify['checked']}"
    )
    print(f"  chain      {'valid' if verify['valid'] else 'BROKEN at ' + str(verify['first_invalid'])}")
    print(f"  targets    {up} of {len(targets)} Prometheus targets up ({PROMETHEUS}/targets)")
    print(f"  hosts      {', '.join(f'{h} ({lab.container(h)})' for h in lab.hosts)}")
    print(f"  converge   site.yml changed {site.changed} task(s) in {site.seconds:.0f} s; log {site.log}")
    print(f"  API        {API}   (key of the demo tenant: {TENANT_FILE})")
    ca = lablib.LAB_PKI / "ca.crt"
    print(f"  CA         {ca}   (nginx's certificate is signed by the lab's CA)")
    print(
        f'             curl --cacert {ca} -H "X-API-Key: $(jq -r .api_key {TENANT_FILE})"'
        f" {API}/api/v1/audit/logs?limit=5"
    )
    print(f"  took       {time.monotonic() - started:.0f} s")
    healthy = not failed
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
