"""auditlog.ops.nats_jetstream without a server: the monitoring endpoints' summaries and the
thresholds -> findings."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from ansible_collections.auditlog.ops.plugins.module_utils import nats_monitor as nm
from ansible_collections.auditlog.ops.plugins.modules import nats_jetstream as nj

PARAMS = {
    "server_host": "127.0.0.1",
    "server_port": 4222,
    "expected_routes": 0,
    "pending_warn": 1000,
    "ack_pending_warn": 1000,
    "redelivered_warn": 100,
    "storage_warn_ratio": 0.8,
}

CONNZ = {
    "num_connections": 2,
    "total": 2,
    "connections": [
        {
            "cid": 3,
            "ip": "10.0.0.5",
            "port": 5000,
            "name": "audit-api",
            "authorized_user": "audit-api",
            "subscriptions": 1,
            "pending_bytes": 0,
            "last_activity": "2026-12-01T10:00:00Z",
            "idle": "1s",
        },
        {
            "cid": 4,
            "ip": "10.0.0.6",
            "port": 5001,
            "name": "audit-worker",
            "authorized_user": "audit-worker",
            "subscriptions": 3,
            "pending_bytes": 2048,
            "last_activity": "2026-12-01T10:00:01Z",
            "idle": "0s",
        },
    ],
}
CLOSED = {
    "total": 3,
    "connections": [
        {"cid": 1, "ip": "10.0.0.9", "reason": "Client Closed", "stop": "2026-12-01T09:00:00Z"},
        {"cid": 2, "ip": "10.0.0.9", "reason": "Authentication Failure", "stop": "2026-12-01T09:01:00Z"},
        {"cid": 5, "ip": "10.0.0.8", "reason": "Authentication Timeout", "stop": "2026-12-01T09:02:00Z"},
    ],
}
JSZ_CLUSTER = {
    "config": {"max_memory": 1000, "max_storage": 1000, "store_dir": "/var/lib/nats"},
    "memory": 10,
    "storage": 900,
    "streams": 1,
    "consumers": 2,
    "messages": 50,
    "bytes": 900,
    "api": {"total": 10, "errors": 1},
    "meta_cluster": {
        "name": "audit",
        "leader": "mq1",
        "cluster_size": 3,
        "replicas": [
            {"name": "mq2", "current": True, "active": 200000000, "lag": 0},
            {"name": "mq3", "current": False, "offline": True, "active": 30000000000, "lag": 12},
        ],
    },
}
STREAM_INFO = {
    "config": {"name": "audit-logs", "subjects": ["audit.logs.>"], "storage": "file", "num_replicas": 1},
    "state": {"messages": 5000, "bytes": 900, "first_seq": 1, "last_seq": 5000, "consumer_count": 1},
}
CONSUMER_INFO = {
    "name": "audit-worker",
    "config": {"durable_name": "audit-worker", "ack_policy": "explicit", "max_ack_pending": 1000},
    "delivered": {"stream_seq": 4000, "last_active": "2026-12-01T10:00:00Z"},
    "ack_floor": {"stream_seq": 2000},
    "num_pending": 1000,
    "num_ack_pending": 2000,
    "num_redelivered": 101,
    "num_waiting": 1,
}


def checks(findings):
    return {f["check"]: f["severity"] for f in findings}


def test_connz_summary_with_auth_failures():
    c = nm.summarise_connz(CONNZ, CLOSED)
    assert c["count"] == 2 and c["pending_bytes"] == 2048
    assert [x["name"] for x in c["list"]] == ["audit-worker", "audit-api"]  # most pending first
    assert c["list"][0]["user"] == "audit-worker" and c["list"][0]["subscriptions"] == 3
    assert c["auth_failures"]["count"] == 2 and c["auth_failures"]["closed_seen"] == 3
    assert [f["stop"] for f in c["auth_failures"]["recent"]] == [
        "2026-12-01T09:02:00Z",
        "2026-12-01T09:01:00Z",
    ]
    assert nm.summarise_connz(CONNZ)["auth_failures"] is None


def test_jsz_summary_standalone_cluster_and_disabled():
    js = nm.summarise_jsz(JSZ_CLUSTER)
    assert (
        js["enabled"] and js["storage_bytes"] == 900 and js["max_storage"] == 1000 and js["api_errors"] == 1
    )
    assert js["meta_cluster"]["leader"] == "mq1" and js["meta_cluster"]["cluster_size"] == 3
    assert js["meta_cluster"]["peers"][1] == {
        "name": "mq3",
        "current": False,
        "offline": True,
        "active_seconds": 30.0,
        "lag": 12,
    }
    standalone = dict(JSZ_CLUSTER)
    del standalone["meta_cluster"]
    assert nm.summarise_jsz(standalone)["meta_cluster"] is None
    assert nm.summarise_jsz({"disabled": True}) == {"enabled": False}


def test_stream_and_consumer_summary():
    s = nm.summarise_stream(STREAM_INFO, [CONSUMER_INFO])
    assert (s["name"], s["messages"], s["first_seq"], s["last_seq"]) == ("audit-logs", 5000, 1, 5000)
    (c,) = s["consumers"]
    assert c["durable"] and c["num_pending"] == 1000 and c["num_ack_pending"] == 2000
    assert c["delivered_stream_seq"] == 4000 and c["last_delivered"] == "2026-12-01T10:00:00Z"
    assert c["last_ack"] is None


def test_routez_summary():
    r = nm.summarise_routez(
        {"num_routes": 1, "routes": [{"remote_name": "mq2", "ip": "10.0.0.12", "pending_size": 7}]}, 2
    )
    assert r["count"] == 1 and r["expected"] == 2 and r["list"][0]["pending_bytes"] == 7


def healthy_facts(**over):
    facts = {
        "available": True,
        "monitor_url": "http://127.0.0.1:8222",
        "server": {"slow_consumers": 0},
        "connections": nm.summarise_connz(CONNZ, {"total": 0, "connections": []}),
        "routes": {"count": 0, "expected": 0, "list": []},
        "jetstream": {"enabled": True, "storage_bytes": 1, "max_storage": 1000, "meta_cluster": None},
        "streams": [nm.summarise_stream(STREAM_INFO, [])],
    }
    facts.update(over)
    return facts


def test_healthy_has_no_findings():
    assert nj.diagnose(healthy_facts(), PARAMS) == []


def test_consumer_thresholds():
    facts = healthy_facts(streams=[nm.summarise_stream(STREAM_INFO, [CONSUMER_INFO])])
    findings = nj.diagnose(facts, PARAMS)
    # num_pending 1000 is not over pending_warn 1000; ack pending and redelivered are.
    assert checks(findings) == {"consumer_ack_pending": "warning", "consumer_redelivered": "warning"}
    assert "num_ack_pending 2000" in findings[0]["evidence"]
    assert checks(nj.diagnose(facts, dict(PARAMS, pending_warn=999)))["consumer_pending"] == "warning"


def test_cluster_findings():
    js = nm.summarise_jsz(JSZ_CLUSTER)
    found = checks(nj.diagnose(healthy_facts(jetstream=js), PARAMS))
    assert found == {"meta_peers": "warning", "storage": "warning"}
    leaderless = json.loads(json.dumps(JSZ_CLUSTER))
    leaderless["meta_cluster"]["leader"] = ""
    found = checks(nj.diagnose(healthy_facts(jetstream=nm.summarise_jsz(leaderless)), PARAMS))
    assert found["meta_leader"] == "critical" and "meta_peers" not in found
    routes = {"count": 1, "expected": 2, "list": [{"remote_name": "mq2", "ip": "10.0.0.12", "port": 6222}]}
    findings = nj.diagnose(healthy_facts(routes=routes), dict(PARAMS, expected_routes=2))
    assert checks(findings) == {"routes": "warning"} and "mq2 10.0.0.12:6222" in findings[0]["evidence"]
    # A pool of routes to one peer is still one peer: four routes to mq2 do not make two servers.
    pooled = nm.summarise_routez(
        {"num_routes": 4, "routes": [{"remote_id": "N2", "remote_name": "mq2", "ip": "10.0.0.12"}] * 4}, 2
    )
    assert pooled["count"] == 4 and pooled["peers"] == ["mq2"]
    assert checks(nj.diagnose(healthy_facts(routes=pooled), dict(PARAMS, expected_routes=2))) == {
        "routes": "warning"
    }


def test_other_findings():
    conns = nm.summarise_connz(CONNZ, CLOSED)
    assert checks(nj.diagnose(healthy_facts(connections=conns), PARAMS)) == {"auth_failures": "warning"}
    assert checks(nj.diagnose(healthy_facts(server={"slow_consumers": 2}), PARAMS)) == {
        "slow_consumers": "info"
    }
    assert checks(nj.diagnose(healthy_facts(jetstream={"enabled": False}), PARAMS)) == {
        "jetstream": "critical"
    }
    missing = [{"name": "audit-logs", "missing": True, "consumers": []}]
    assert checks(nj.diagnose(healthy_facts(streams=missing), PARAMS)) == {"stream_missing": "critical"}


def test_unreachable_ports():
    down = {"available": False, "error": "monitor refused"}
    client_down = {"available": False, "error": "client refused"}
    (only,) = nj.diagnose({"monitor_url": "u", **down, "streams": client_down}, PARAMS)
    assert only["check"] == "reachable" and only["severity"] == "critical"
    assert only["evidence"] == "monitor refused; client refused"
    assert checks(nj.diagnose({"monitor_url": "u", **down, "streams": []}, PARAMS)) == {
        "monitoring": "critical"
    }
    assert checks(nj.diagnose(healthy_facts(streams=client_down), PARAMS)) == {"jetstream_api": "critical"}


@pytest.mark.parametrize(
    ("params", "url"),
    [
        ({"monitor_url": "http://mq1:8222/"}, "http://mq1:8222"),
        ({"server_host": "mq1", "monitor_port": 8222}, "http://mq1:8222"),
        ({"server_host": "mq1", "monitor_host": "192.0.2.1", "monitor_port": 9000}, "http://192.0.2.1:9000"),
        ({"server_host": "::1", "monitor_port": 8222, "monitor_ca_file": "/ca"}, "https://[::1]:8222"),
    ],
)
def test_monitor_base_url(params, url):
    assert nm.monitor_base_url(params) == url


def test_monitor_get_errors_are_operator_messages():
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b'{"ok": 1}' if self.path.startswith("/varz?x=1") else b"<html>nope</html>"
            self.send_response(200 if self.path != "/missing" else 404)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        monitor = nm.Monitor(f"http://127.0.0.1:{server.server_port}", timeout=5)
        assert monitor.get("varz", x=1) == {"ok": 1}
        with pytest.raises(nm.MonitorError, match="not JSON"):
            monitor.get("jsz")
        with pytest.raises(nm.MonitorError, match="HTTP 404"):
            monitor.get("missing")
    finally:
        server.shutdown()
        server.server_close()


def stream_state(first=1, last=10, floors=(6,), policy="explicit"):
    consumers = [
        {"name": f"c{i}", "ack_policy": policy, "ack_floor_stream_seq": f} for i, f in enumerate(floors)
    ]
    return {
        "name": "s",
        "first_seq": first,
        "last_seq": last,
        "messages": last - first + 1,
        "consumers": consumers,
    }


def test_purge_plan_refuses_what_the_slowest_consumer_has_not_acknowledged():
    plan = nj.purge_plan(stream_state(floors=(8, 6)))
    assert plan["refused"] and plan["ack_floor"] == 6 and plan["up_to_seq"] == 11
    assert "4 message(s)" in plan["reason"] and "purge_up_to_seq=7" in plan["reason"]
    assert not nj.purge_plan(stream_state(floors=(8, 6)), up_to_seq=7)["refused"]
    assert nj.purge_plan(stream_state(floors=(8, 6)), up_to_seq=7)["messages"] == 6
    assert not nj.purge_plan(stream_state(floors=(8, 6)), allow_unacknowledged=True)["refused"]


def test_purge_plan_without_consumers_or_acks_and_of_an_empty_stream():
    assert not nj.purge_plan(stream_state(floors=()))["refused"]
    assert not nj.purge_plan(stream_state(floors=(0,), policy="none"))["refused"]
    empty = nj.purge_plan({"name": "s", "first_seq": 11, "last_seq": 10, "messages": 0, "consumers": []})
    assert empty["messages"] == 0 and nj.purge_findings(empty, False) == []
    # A sequence beyond the last is the whole stream, not more.
    assert nj.purge_plan(stream_state(floors=(10,)), up_to_seq=500)["up_to_seq"] == 11
