"""Ingest through the lab's nginx while something else happens (a rolling restart, a runbook's
repair): every acknowledged id and every failure kept, for the test to check afterwards."""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
from audit_devtools import lab as lablib

CLI = "set -a; . /etc/audit-service/audit-service.env; set +a; /opt/audit-service/bin/audit-service"


class Sender(threading.Thread):
    """Sends events through nginx until stopped; keeps every id acknowledged and every failure."""

    def __init__(self, key: str):
        super().__init__(daemon=True)
        self.key = key
        self.acked: list[str] = []
        self.failures: list[str] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        with lablib.lb(headers={"X-API-Key": self.key}) as client:
            n = 0
            while not self.stopped.is_set():
                n += 1
                try:
                    if n % 2:
                        r = client.post("/api/v1/audit/logs", json={"actor": f"u{n}", "action": "roll"})
                        ids = [r.json()["id"]] if r.status_code == 202 else []
                    else:
                        events = [{"actor": f"u{n}-{i}", "action": "roll"} for i in range(5)]
                        r = client.post("/api/v1/audit/logs/batch", json={"events": events})
                        ids = r.json()["ids"] if r.status_code == 202 else []
                except httpx.HTTPError as exc:
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                if r.status_code == 202:
                    self.acked.extend(ids)
                else:
                    self.failures.append(f"{r.status_code} {r.text[:200]}")
                time.sleep(0.02)


def tenant_key(lab) -> tuple[str, str]:
    tenant = json.loads(lab.exec("app1", f"{CLI} create-tenant roll-{uuid.uuid4().hex[:8]}").stdout)
    key = json.loads(lab.exec("app1", f"{CLI} create-api-key {tenant['tenant_id']}").stdout)["api_key"]
    return tenant["tenant_id"], key
