"""The HTTP contract on real servers: ingest, query, tenants, cache, rate limit, health, metrics,
logs."""

from __future__ import annotations

import hashlib
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from audit_devtools.stack import Service, run_cli
from conftest import Client, consumer_drained, sql, wait_for, wait_stored


def ev(i: int = 0, **over):
    return {
        "actor": f"user-{i}",
        "action": "document.read",
        "target": f"doc-{i}",
        "outcome": "success",
        **over,
    }


def test_single_event_is_stored_with_its_correlation_id(service, tenant):
    r = tenant.post(
        ev(1, source_ip="2001:db8::1", user_agent="curl/8", metadata={"k": [1, 2.5, {"n": None}]}),
        headers={"X-Correlation-ID": "req-abc.1"},
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["status"] == "accepted" and uuid.UUID(body["id"])
    assert r.headers["x-correlation-id"] == "req-abc.1"
    wait_stored(service, tenant.tenant_id, 1)
    got = tenant.get(body["id"])
    assert got.status_code == 200
    e = got.json()
    assert e["correlation_id"] == "req-abc.1"
    assert e["source_ip"] == "2001:db8::1" and e["metadata"] == {"k": [1, 2.5, {"n": None}]}
    assert e["seq"] == 1 and len(e["hash"]) == 64 and e["tenant_id"] == tenant.tenant_id


def test_correlation_id_is_generated_when_absent(tenant):
    r = tenant.post(ev())
    assert uuid.UUID(r.headers["x-correlation-id"])


def test_batch_is_accepted_and_stored(service, tenant):
    r = tenant.batch([ev(i) for i in range(250)])
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 250 and len(set(r.json()["ids"])) == 250
    wait_stored(service, tenant.tenant_id, 250)
    assert tenant.verify() == {"valid": True, "checked": 250, "first_invalid": None, "reason": None}


def test_resent_event_is_stored_once(service, tenant):
    event_id = str(uuid.uuid4())
    first = tenant.post(ev(1, event_id=event_id))
    again = tenant.post(ev(1, event_id=event_id))  # JetStream drops it (same Nats-Msg-Id)
    other = str(uuid.uuid4())
    # A batch carrying it again has another message id: the worker must drop it.
    batch = tenant.batch([ev(1, event_id=event_id), ev(2, event_id=other)])
    assert {first.status_code, again.status_code, batch.status_code} == {202}
    assert first.json()["id"] == again.json()["id"] == event_id
    wait_stored(service, tenant.tenant_id, 2)
    # Nothing left to deliver or ack: a wrongly stored duplicate would be in by now.
    wait_for(lambda: consumer_drained(service), 30, what="the consumer's pending and ack-pending at 0")
    rows = sql(service.database_url, "SELECT event_id FROM audit_logs WHERE tenant_id = $1", tenant.tenant_id)
    assert sorted(str(r["event_id"]) for r in rows) == sorted([event_id, other])


def test_a_request_retried_by_nginx_is_stored_once(service, make_tenant):
    """nginx passes a request that one API host dropped to the next with the same X-Request-ID:
    the same body under the same id makes the same events, stored once."""
    tenant = make_tenant()
    rid = uuid.uuid4().hex
    body = {"events": [ev(1), ev(2)]}
    first = tenant.batch(body["events"], headers={"X-Request-ID": rid})
    retry = tenant.batch(body["events"], headers={"X-Request-ID": rid})
    other_body = tenant.batch([ev(3), ev(4)], headers={"X-Request-ID": rid})
    no_header = [tenant.batch(body["events"]) for _ in range(2)]
    assert {r.status_code for r in [first, retry, other_body, *no_header]} == {202}
    assert first.json()["ids"] == retry.json()["ids"]
    assert not set(other_body.json()["ids"]) & set(first.json()["ids"])
    assert not set(no_header[0].json()["ids"]) & set(no_header[1].json()["ids"])
    wait_stored(service, tenant.tenant_id, 8)
    wait_for(lambda: consumer_drained(service), 30, what="the consumer's pending and ack-pending at 0")
    rows = sql(service.database_url, "SELECT event_id FROM audit_logs WHERE tenant_id = $1", tenant.tenant_id)
    stored = [str(r["event_id"]) for r in rows]
    assert len(stored) == len(set(stored)) == 8
    assert set(first.json()["ids"]) <= set(stored)


def test_tenants_are_isolated(service, make_tenant):
    a, b = make_tenant(), make_tenant()
    eid = a.post(ev(1, actor="a-secret")).json()["id"]
    b.post(ev(2))
    wait_stored(service, a.tenant_id, 1)
    wait_stored(service, b.tenant_id, 1)
    assert b.get(eid).status_code == 404
    assert all(i["actor"] != "a-secret" for i in b.list().json()["items"])
    assert b.verify()["checked"] == 1
    # Naming another tenant with a tenant key is refused, for reads and writes.
    assert b.list(tenant_id=a.tenant_id).status_code == 403
    assert b.http.get("/api/v1/audit/verify", params={"tenant_id": a.tenant_id}).status_code == 403
    assert b.http.post("/api/v1/audit/logs", params={"tenant_id": a.tenant_id}, json=ev()).status_code == 403
    # No key or a wrong key.
    anon = httpx.Client(base_url=service.url)
    assert anon.get(f"/api/v1/audit/logs/{eid}").status_code == 401
    assert anon.get("/api/v1/audit/logs", headers={"X-API-Key": "alk_nope"}).status_code == 401
    assert anon.post("/api/v1/audit/logs", json=ev()).status_code == 401


def test_admin_key_names_a_tenant(service, tenant):
    eid = tenant.post(ev(1)).json()["id"]
    wait_stored(service, tenant.tenant_id, 1)
    admin = Client(service.url, service.admin_key)
    assert admin.list().status_code == 422  # must say which tenant
    r = admin.http.get(f"/api/v1/audit/logs/{eid}", params={"tenant_id": tenant.tenant_id})
    assert r.status_code == 200 and r.json()["event_id"] == eid
    assert admin.list(tenant_id=str(uuid.uuid4())).status_code == 404
    # The admin may write on a tenant's behalf.
    r = admin.http.post("/api/v1/audit/logs", params={"tenant_id": tenant.tenant_id}, json=ev(2))
    assert r.status_code == 202
    wait_stored(service, tenant.tenant_id, 2)


def key_id(service: Service, client: Client) -> str:
    digest = hashlib.sha256(client.http.headers["X-API-Key"].encode()).hexdigest()
    return str(sql(service.database_url, "SELECT id FROM api_keys WHERE key_hash = $1", digest)[0]["id"])


def test_each_event_reads_back_with_its_principal(service, tenant):
    """Who submitted it: the id of the tenant key used, or "admin" for the admin key."""
    made = json.loads(run_cli(service.env, "create-api-key", tenant.tenant_id).stdout)
    second = Client(service.url, made["api_key"], tenant.tenant_id)
    assert made["key_id"] == key_id(service, second)  # create-api-key names it
    admin = Client(service.url, service.admin_key)
    as_admin = admin.http.post("/api/v1/audit/logs", params={"tenant_id": tenant.tenant_id}, json=ev(3))
    sent = {
        tenant.post(ev(1)).json()["id"]: key_id(service, tenant),
        second.post(ev(2)).json()["id"]: made["key_id"],
        as_admin.json()["id"]: "admin",
    }
    wait_stored(service, tenant.tenant_id, 3)
    assert {e: tenant.get(e).json()["principal"] for e in sent} == sent
    assert {i["event_id"]: i["principal"] for i in tenant.list().json()["items"]} == sent


def test_filters_and_time_window(service, tenant):
    tenant.batch(
        [ev(i, outcome="failure" if i % 3 == 0 else "success", action=f"act-{i % 2}") for i in range(30)]
    )
    wait_stored(service, tenant.tenant_id, 30)
    items = tenant.list(outcome="failure", limit=1000).json()["items"]
    assert len(items) == 10 and all(i["outcome"] == "failure" for i in items)
    assert len(tenant.list(action="act-1", limit=1000).json()["items"]) == 15
    assert [i["actor"] for i in tenant.list(actor="user-7").json()["items"]] == ["user-7"]
    now = datetime.now(UTC)
    assert len(tenant.list(since=(now - timedelta(minutes=5)).isoformat(), limit=1000).json()["items"]) == 30
    assert tenant.list(until=(now - timedelta(minutes=5)).isoformat()).json()["items"] == []


def test_keyset_pagination_neither_skips_nor_repeats_while_events_arrive(service, tenant):
    tenant.batch([ev(i) for i in range(250)])
    wait_stored(service, tenant.tenant_id, 250)
    seen: list[str] = []
    page = tenant.list(limit=100).json()
    pages = 0
    while True:
        seen += [i["event_id"] for i in page["items"]]
        seqs = [i["seq"] for i in page["items"]]
        assert seqs == sorted(seqs, reverse=True)  # newest first
        # New events arrive between page reads.
        tenant.batch([ev(1000 + pages * 10 + j) for j in range(10)])
        wait_stored(service, tenant.tenant_id, 250 + (pages + 1) * 10)
        pages += 1
        if not page["next_cursor"]:
            break
        page = tenant.list(limit=100, cursor=page["next_cursor"]).json()
    assert pages == 3
    assert len(seen) == len(set(seen)) == 250
    first_250 = sql(
        service.database_url,
        "SELECT event_id FROM audit_logs WHERE tenant_id = $1 AND seq <= 250",
        tenant.tenant_id,
    )
    assert set(seen) == {str(r["event_id"]) for r in first_250}


def test_query_cache_serves_repeats_and_never_stale_pages(service, tenant):
    tenant.post(ev(1))
    wait_stored(service, tenant.tenant_id, 1)
    first = tenant.list(limit=10)
    second = tenant.list(limit=10)
    assert first.headers["x-cache"] == "miss" and second.headers["x-cache"] == "hit"
    assert first.json() == second.json()
    tenant.post(ev(2))
    wait_stored(service, tenant.tenant_id, 2)
    # The worker bumps the tenant's cache generation after commit.
    third = wait_for(
        lambda: (r := tenant.list(limit=10)).json()["items"].__len__() == 2 and r, 5, what="fresh page"
    )
    assert third.headers["x-cache"] == "miss"


def test_the_key_mirror_keeps_the_shape_older_releases_read(stack):
    """The key snapshot's Redis mirror has "keys" (digest: tenant), as API processes of an older
    release read it, and "key_ids"; a mirror such a process wrote (no key ids) is not used."""
    import asyncio
    from types import SimpleNamespace

    import orjson
    from audit_service.cache import Cache
    from audit_service.store import LiveKey

    name = "audit:keys:mirror_test"  # the namespace of the database named below: no service's
    key = LiveKey(uuid.uuid4(), uuid.uuid4())

    async def go():
        cache = Cache(SimpleNamespace(redis_url=stack.redis.url, database_url="postgresql://h/mirror_test"))
        try:
            await cache.mirror_keys({"d1": key}, {key.tenant_id})
            mirrored, doc = await cache.mirrored_keys(), orjson.loads(await cache.client.get(name))
            await cache.client.set(name, orjson.dumps({k: doc[k] for k in ("keys", "tenants")}))
            return mirrored, doc, await cache.mirrored_keys()
        finally:
            await cache.close()

    mirrored, doc, from_older = asyncio.run(go())
    assert mirrored == ({"d1": key}, {key.tenant_id})
    assert doc["keys"] == {"d1": str(key.tenant_id)} and doc["tenants"] == [str(key.tenant_id)]
    assert from_older is None


@pytest.fixture(scope="module")
def limited(stack):
    svc = Service(stack, "audit_limited", RATE_LIMIT_PER_MINUTE="20").start()
    yield svc
    svc.stop()


def test_rate_limit_per_tenant_answers_429_with_retry_after(limited):
    tenant_id, key = limited.tenant("rate-a")
    other_id, other_key = limited.tenant("rate-b")
    a, b = Client(limited.url, key, tenant_id), Client(limited.url, other_key, other_id)
    assert a.batch([ev(i) for i in range(15)]).status_code == 202
    over = a.batch([ev(i) for i in range(10)])
    assert over.status_code == 429
    assert 1 <= int(over.headers["retry-after"]) <= 60
    assert a.post(ev()).status_code == 202  # the refused batch took no tokens: 16 of 20
    # Another tenant has its own budget.
    assert b.batch([ev(i) for i in range(20)]).status_code == 202
    assert b.post(ev()).status_code == 429


def test_redis_down_keeps_reads_and_writes_working_and_health_degraded(stack, limited):
    tenant_id, key = limited.tenant("redis-down")
    c = Client(limited.url, key, tenant_id)
    stack.redis.stop()
    try:
        health = wait_for(
            lambda: (
                (r := httpx.get(f"{limited.url}/api/v1/metrics/health")).json()["status"] == "degraded" and r
            ),
            10,
            what="degraded health",
        )
        assert health.status_code == 200
        assert health.json()["components"]["redis"]["status"] == "unhealthy"
        # The error text is for the operator (admin key), not for anonymous callers.
        assert "error" not in health.json()["components"]["redis"]
        detailed = httpx.get(f"{limited.url}/api/v1/metrics/health", headers={"X-API-Key": limited.admin_key})
        assert "error" in detailed.json()["components"]["redis"]
        assert c.post(ev(1)).status_code == 202
        wait_stored(limited, tenant_id, 1)
        assert c.list().status_code == 200 and len(c.list().json()["items"]) == 1
    finally:
        stack.redis.start()
    limited.wait_healthy()


def test_liveness_and_health_contract(service):
    assert httpx.get(f"{service.url}/health").json() == {"status": "ok"}
    h = httpx.get(f"{service.url}/api/v1/metrics/health").json()
    assert h["status"] == "healthy"
    assert set(h["components"]) == {"database", "redis", "nats", "worker"}
    for comp in h["components"].values():
        assert comp["status"] == "healthy" and comp["latency_ms"] >= 0


def test_stats_contract(service, tenant):
    tenant.post(ev())
    s = httpx.get(f"{service.url}/api/v1/metrics/stats").json()
    assert {"pool_size", "checked_out", "overflow"} <= set(s["database"])
    assert s["database"]["pool_size"] == 10
    assert {"enabled", "hits", "misses"} <= set(s["cache"])
    assert s["queue"]["stream"] == service.env["STREAM_NAME"]
    assert s["queue"]["messages"] >= 1 and s["queue"]["consumer_pending"] is not None


def test_prometheus_metrics(service, tenant):
    tenant.batch([ev(i) for i in range(3)])
    wait_stored(service, tenant.tenant_id, 3)
    text = httpx.get(f"{service.url}/api/v1/metrics").text
    for name in (
        "audit_http_requests_total",
        "audit_http_request_duration_seconds_bucket",
        "audit_events_accepted_total",
        "audit_queue_consumer_pending",
        "audit_queue_consumer_ack_pending",
        "audit_db_pool_connections",
    ):
        assert f"\n{name}" in text, name
    # Tenants by id only: their names are customer data, not metric labels.
    assert 'audit_chain_head_seq{tenant_id="' in text and "tenant=" not in text
    line = next(x for x in text.splitlines() if f'tenant_id="{tenant.tenant_id}"' in x)
    assert line.endswith(" 3.0")
    assert 'route="/api/v1/audit/logs/batch"' in text  # route templates, not raw paths


def test_worker_exports_its_own_metrics(stack):
    from audit_devtools.stack import free_port

    port = free_port()
    svc = Service(stack, "audit_workermetrics", WORKER_METRICS_PORT=str(port)).start()
    try:
        tenant_id, key = svc.tenant("wm")
        Client(svc.url, key, tenant_id).batch([ev(i) for i in range(5)])
        wait_stored(svc, tenant_id, 5)
        text = wait_for(
            lambda: (
                "audit_worker_events_stored_total 5.0" in (t := httpx.get(f"http://127.0.0.1:{port}/").text)
                and t
            ),
            10,
            what="worker metrics",
        )
        assert "audit_worker_lag_seconds" in text and "audit_worker_batch_duration_seconds_bucket" in text
    finally:
        svc.stop()


def test_json_log_lines_carry_correlation_duration_and_tenant_and_the_worker_names_the_request(
    service, tenant
):
    cid = f"log-test-{uuid.uuid4()}"
    tenant.post(ev(), headers={"X-Correlation-ID": cid})
    lines = wait_for(
        lambda: [json.loads(x) for x in service.api.log().splitlines() if cid in x] or None,
        5,
        what="log lines",
    )
    incoming = [x for x in lines if x["message"] == "Incoming request"]
    done = [x for x in lines if x["message"] == "Request completed"]
    assert incoming and incoming[0]["method"] == "POST" and incoming[0]["path"] == "/api/v1/audit/logs"
    assert done and done[0]["status"] == 202 and done[0]["duration_ms"] >= 0
    assert done[0]["tenant_id"] == tenant.tenant_id
    assert all(x["correlation_id"] == cid for x in lines)
    # The worker's line of the batch that stored the event names the request (log analysis follows it).
    stored = wait_for(
        lambda: (
            [
                doc
                for w in service.workers
                for x in w.log().splitlines()
                if cid in x and (doc := json.loads(x))["message"] == "batch stored"
            ]
            or None
        ),
        10,
        what="the worker's batch line",
    )
    assert cid in stored[0]["correlation_ids"] and stored[0]["stored"] >= 1
    # A header that could forge log fields is replaced by a fresh id.
    r = tenant.post(ev(), headers={"X-Correlation-ID": 'x" injected'})
    assert uuid.UUID(r.headers["x-correlation-id"])


def test_concurrent_clients_get_distinct_consecutive_seqs(service, tenant):
    errors: list[str] = []

    def send(k: int) -> None:
        for j in range(5):
            r = tenant.batch([ev(k * 100 + j * 10 + i) for i in range(10)])
            if r.status_code != 202:
                errors.append(r.text)

    threads = [threading.Thread(target=send, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    wait_stored(service, tenant.tenant_id, 200)
    seqs = [
        r["seq"]
        for r in sql(service.database_url, "SELECT seq FROM audit_logs WHERE tenant_id=$1", tenant.tenant_id)
    ]
    assert sorted(seqs) == list(range(1, 201))
    assert tenant.verify()["valid"]


def test_stream_keeps_acked_messages_for_the_configured_window(service, tenant):
    import asyncio

    import nats

    tenant.batch([ev(i) for i in range(3)])
    wait_stored(service, tenant.tenant_id, 3)

    async def stream_info():
        nc = await nats.connect(service.env["NATS_URL"])
        try:
            return await nc.jetstream().stream_info(service.env["STREAM_NAME"])
        finally:
            await nc.close()

    info = asyncio.run(stream_info())
    assert info.config.storage == "file" and info.config.retention == "limits"
    assert info.config.max_age == 7 * 86400
    assert info.config.duplicate_window == 120
    assert info.state.messages >= 1  # acked and stored, still kept for replay
    seqs = sql(
        service.database_url,
        "SELECT DISTINCT stream_seq FROM audit_logs WHERE tenant_id = $1",
        tenant.tenant_id,
    )
    assert len(seqs) == 1 and 1 <= seqs[0]["stream_seq"] <= info.state.last_seq


def test_several_api_processes_share_one_metrics_view(stack):
    svc = Service(stack, "audit_multiproc", API_WORKERS="2").start()
    try:
        tenant_id, key = svc.tenant("mp")
        c = Client(svc.url, key, tenant_id)
        for i in range(20):  # new connections: spread over both processes
            assert (
                httpx.post(f"{svc.url}/api/v1/audit/logs", json=ev(i), headers={"X-API-Key": key}).status_code
                == 202
            )
        wait_stored(svc, tenant_id, 20)
        text = httpx.get(f"{svc.url}/api/v1/metrics").text
        accepted = next(x for x in text.splitlines() if x.startswith("audit_events_accepted_total"))
        assert accepted.endswith(" 20.0"), accepted
        assert c.list().status_code == 200
        pids = {json.loads(x).get("process") for x in svc.api.log().splitlines() if '"api started"' in x}
        assert len(pids) == 2
    finally:
        svc.stop()


def test_two_tenants_may_use_the_same_event_id(service, make_tenant):
    a, b = make_tenant(), make_tenant()
    event_id = str(uuid.uuid4())
    assert a.post(ev(1, event_id=event_id)).status_code == 202
    assert b.post(ev(2, event_id=event_id)).status_code == 202  # inside JetStream's duplicate window
    wait_stored(service, a.tenant_id, 1)
    wait_stored(service, b.tenant_id, 1)
    assert a.get(event_id).json()["actor"] == "user-1"
    assert b.get(event_id).json()["actor"] == "user-2"


def test_failed_authentications_from_one_address_are_limited(stack):
    # nginx at another address than this test's client (198.51.100.1 is a documentation address:
    # no traffic goes there, it only names who is trusted).
    svc = Service(
        stack, "audit_authfail", AUTH_FAILURE_LIMIT_PER_MINUTE="5", FORWARDED_ALLOW_IPS="198.51.100.1"
    ).start()
    try:
        tenant_id, key = svc.tenant("af")
        if time.time() % 60 > 50:  # the count is per minute: do not straddle two
            time.sleep(61 - time.time() % 60)
        url = f"{svc.url}/api/v1/audit/logs"
        codes = [
            httpx.post(url, json=ev(i), headers={"X-API-Key": f"alk_bad{i}"}).status_code for i in range(8)
        ]
        assert codes == [401] * 5 + [429] * 3
        # The address's good key keeps working.
        assert httpx.post(url, json=ev(), headers={"X-API-Key": key}).status_code == 202
        # X-Forwarded-For is believed from nginx's address only (FORWARDED_ALLOW_IPS): a client
        # cannot make itself a new address with it.
        forged = httpx.post(url, json=ev(), headers={"X-API-Key": "alk_bad", "X-Forwarded-For": "192.0.2.7"})
        assert forged.status_code == 429
        assert "audit_auth_failures_limited_total 4.0" in httpx.get(f"{svc.url}/api/v1/metrics").text
    finally:
        svc.stop()
