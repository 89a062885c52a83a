"""The broker's faults that must not cost an accepted event: a message the worker cannot store
(dead letters), a deleted consumer, a deleted or re-configured stream.

Absences are proven by waiting for the consumer's pending and ack-pending to reach 0.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import httpx
import pytest
from audit_devtools.stack import Service, Stack, run_cli
from conftest import Client, consumer_drained, js_call, sql, stored_count, wait_for
from nats.js.errors import NotFoundError


def health(svc: Service) -> dict:
    """Health as the operator sees it (with the admin key: error texts included)."""
    return httpx.get(
        f"{svc.url}/api/v1/metrics/health", headers={"X-API-Key": svc.admin_key}, timeout=5
    ).json()


@pytest.fixture
def svc(stack: Stack, request) -> Iterator[Service]:
    s = Service(
        stack, f"audit_bf_{request.node.name[5:30]}", RATE_LIMIT_PER_MINUTE="0", WORKER_MAX_DELIVERIES="3"
    ).start()
    yield s
    s.stop()


def test_a_poison_message_goes_to_the_dead_letters_and_can_be_redriven(svc):
    tenant_id, key = svc.tenant("dl")
    client = Client(svc.url, key, tenant_id)
    prefix = svc.env["STREAM_SUBJECT_PREFIX"]
    stranger = str(uuid.uuid4())  # a tenant the database does not know (yet): unstorable
    valid = json.dumps(
        {
            "v": 1,
            "tenant_id": stranger,
            "received_at": "2026-12-01T10:00:00+00:00",
            "events": [
                {
                    "event_id": str(uuid.uuid4()),
                    "occurred_at": "2026-12-01T10:00:00+00:00",
                    "actor": "a",
                    "action": "b",
                }
            ],
        }
    ).encode()

    async def inject(js):
        await js.publish(f"{prefix}.{tenant_id}", b"\xff not json", stream=svc.env["STREAM_NAME"])
        await js.publish(f"{prefix}.{stranger}", valid, stream=svc.env["STREAM_NAME"])

    js_call(svc, inject)
    assert client.post({"actor": "u", "action": "after.poison"}).status_code == 202

    def held():
        return sql(svc.database_url, "SELECT id, subject, error, deliveries FROM dead_letters ORDER BY id")

    rows = wait_for(lambda: len(held()) == 2 and held(), 60, what="two dead letters")
    wait_for(lambda: consumer_drained(svc), 30, what="pending and ack-pending 0")
    assert stored_count(svc.database_url, tenant_id) == 1  # the good event behind them got through
    assert [r["deliveries"] for r in rows] == [3, 3]
    assert "undecodable" in rows[0]["error"] and rows[0]["subject"] == f"{prefix}.{tenant_id}"
    assert "cannot be stored" in rows[1]["error"] and rows[1]["subject"] == f"{prefix}.{stranger}"
    gauge = [
        x
        for x in httpx.get(f"{svc.url}/api/v1/metrics").text.splitlines()
        if x.startswith("audit_dead_letters ")
    ]
    assert gauge == ["audit_dead_letters 2.0"]

    listed = run_cli(svc.env, "dead-letters")
    assert listed.returncode == 0, listed.stderr
    view = json.loads(listed.stdout)
    assert view["count"] == 2 and [d["id"] for d in view["dead_letters"]] == [r["id"] for r in rows]
    assert view["dead_letters"][1]["data"] == valid.decode()

    # The operator fixes the cause (the tenant exists now) and re-drives that message.
    sql(svc.database_url, "INSERT INTO tenants (id, name) VALUES ($1, 'stranger')", stranger)
    # Re-driving publishes: with the API's NATS user (the worker's may not publish events).
    redriven = run_cli(svc.api_env, "dead-letters", "--redrive", str(rows[1]["id"]))
    assert redriven.returncode == 0, redriven.stderr
    assert json.loads(redriven.stdout)["changed"] is True
    wait_for(lambda: stored_count(svc.database_url, stranger) == 1, 30, what="the re-driven event stored")
    wait_for(lambda: consumer_drained(svc), 30, what="pending and ack-pending 0")
    assert [r["id"] for r in held()] == [rows[0]["id"]]
    verify = httpx.get(
        f"{svc.url}/api/v1/audit/verify", params={"tenant_id": stranger}, headers={"X-API-Key": svc.admin_key}
    ).json()
    assert verify["valid"] and verify["checked"] == 1

    again = run_cli(svc.api_env, "dead-letters", "--redrive", str(rows[1]["id"]))
    assert again.returncode == 1 and f"no dead letter with id {rows[1]['id']}" in again.stderr


def test_the_worker_makes_its_deleted_consumer_again(svc):
    tenant_id, key = svc.tenant("c")
    client = Client(svc.url, key, tenant_id)
    assert client.post({"actor": "u", "action": "before"}).status_code == 202
    wait_for(lambda: stored_count(svc.database_url, tenant_id) == 1, 30, what="first event stored")

    js_call(svc, lambda js: js.delete_consumer(svc.env["STREAM_NAME"], "audit-worker"))
    for i in range(5):
        assert client.post({"actor": "u", "action": f"while.gone.{i}"}).status_code == 202
    wait_for(
        lambda: stored_count(svc.database_url, tenant_id) == 6, 60, what="events after the deletion stored"
    )
    wait_for(lambda: consumer_drained(svc), 30, what="pending and ack-pending 0")
    assert any("audit-worker is gone" in line for line in svc.workers[0].log().splitlines())
    assert client.verify()["valid"]


def test_health_says_when_no_worker_consumes(svc):
    tenant_id, key = svc.tenant("h")
    client = Client(svc.url, key, tenant_id)
    svc.workers[0].stop()
    js_call(svc, lambda js: js.delete_consumer(svc.env["STREAM_NAME"], "audit-worker"))
    h = wait_for(lambda: (h := health(svc))["status"] == "degraded" and h, 15, what="degraded health")
    assert h["components"]["worker"]["status"] == "unhealthy"
    assert "consumer audit-worker does not exist" in h["components"]["worker"]["error"]
    # Ingest still answers: the events wait in the stream for a worker.
    assert client.post({"actor": "u", "action": "waiting"}).status_code == 202
    svc.workers[0].start()
    wait_for(lambda: health(svc)["status"] == "healthy", 30, what="healthy again")
    wait_for(lambda: stored_count(svc.database_url, tenant_id) == 1, 30, what="the waiting event stored")


def test_the_service_leaves_the_stream_settings_to_the_deployment(svc):
    """A retention the deployment sets stays set across restarts of the API and the worker."""
    changed = svc.ensure_stream(max_age=3600)
    assert changed["operation"] == "update"
    svc.stop()
    svc.start_processes()
    info = js_call(svc, lambda js: js.stream_info(svc.env["STREAM_NAME"]))
    assert info.config.max_age == 3600
    assert svc.ensure_stream(max_age=3600)["changed"] is False


def test_a_deleted_stream_is_reported_and_not_made_again_by_the_service(svc):
    tenant_id, key = svc.tenant("s")
    client = Client(svc.url, key, tenant_id)
    js_call(svc, lambda js: js.delete_stream(svc.env["STREAM_NAME"]))
    h = wait_for(lambda: (h := health(svc))["status"] == "unhealthy" and h, 15, what="unhealthy health")
    assert "does not exist" in h["components"]["nats"]["error"]
    assert client.post({"actor": "u", "action": "no.stream"}).status_code == 503
    with pytest.raises(NotFoundError):
        js_call(svc, lambda js: js.stream_info(svc.env["STREAM_NAME"]))
    # The deployment makes it again: ingest and the worker come back by themselves.
    assert svc.ensure_stream()["operation"] == "create"
    assert wait_for(
        lambda: client.post({"actor": "u", "action": "back"}).status_code == 202, 30, what="ingest back"
    )
    wait_for(lambda: stored_count(svc.database_url, tenant_id) == 1, 60, what="the event stored")
    wait_for(lambda: consumer_drained(svc), 30, what="pending and ack-pending 0")
