"""auditlog.ops.api_health against the real service: an API and a worker on PostgreSQL, Redis and
NATS JetStream started by audit_devtools.stack on loopback (a stack of this module's own, since
one test stops its Redis). The module runs through `ansible localhost`, as a runbook runs it.
"""

from __future__ import annotations

import pytest
from audit_devtools.stack import Service, Stack, free_port
from support import modules

pytestmark = pytest.mark.service

PATHS = ["/health", "/api/v1/metrics/health", "/api/v1/metrics/stats"]


def run_module(**args) -> tuple[int, dict, str]:
    return modules.run_module("api_health", args)


@pytest.fixture(scope="module")
def svc():
    stack = Stack().start()
    service = Service(stack, "audit_api_health").start()
    yield service
    service.stop()
    stack.stop()


def test_a_healthy_service(svc):
    rc, r, out = run_module(
        endpoints=[{"name": "direct", "url": svc.url}], api_key=svc.admin_key, slow_ms=5000
    )
    assert rc == 0, out
    assert r["changed"] is False and r["status"] == "healthy" and r["findings"] == []
    entry = r["endpoints"]["direct"]
    assert entry["available"] and entry["component"] == "api"
    assert set(entry["checks"]) == set(PATHS)
    assert entry["checks"]["/health"]["body"] == {"status": "ok"}
    stats = entry["checks"]["/api/v1/metrics/stats"]
    assert stats["status_code"] == 200 and set(stats["body"]) >= {"database", "cache", "queue"}
    for check in entry["checks"].values():
        t = check["timing"]
        assert t["tls_ms"] is None
        assert 0 <= t["connect_ms"] <= t["ttfb_ms"] <= t["total_ms"], t
    # the key is never in the result
    assert svc.admin_key not in out


def test_slow_over_the_threshold_is_a_warning(svc):
    rc, r, out = run_module(
        endpoints=[{"name": "direct", "url": svc.url, "paths": ["/health"]}], slow_ms=0.001
    )
    assert rc == 0, out
    (f,) = r["findings"]
    assert (f["severity"], f["check"], f["component"]) == ("warning", "latency", "api")
    assert f["host"] == "localhost"


def test_an_unreachable_endpoint_is_data(svc):
    url = f"http://127.0.0.1:{free_port()}"
    rc, r, out = run_module(endpoints=[{"name": "direct", "url": svc.url}, {"name": "gone", "url": url}])
    assert rc == 0, out
    assert r["endpoints"]["direct"]["available"] and not r["endpoints"]["gone"]["available"]
    assert "Connection refused" in r["endpoints"]["gone"]["error"]
    (f,) = r["findings"]
    assert (f["severity"], f["check"], f["component"]) == ("critical", "reachable", "api")
    assert url in f["summary"] and "Connection refused" in f["summary"]


def test_redis_stopped_makes_the_api_degraded_and_names_redis(svc):
    svc.stack.redis.stop()
    rc, r, out = run_module(
        endpoints=[{"name": "direct", "url": svc.url}], api_key=svc.admin_key, slow_ms=5000
    )
    assert rc == 0, out
    assert r["status"] == "degraded"
    (f,) = r["findings"]
    assert (f["severity"], f["component"], f["check"]) == ("critical", "redis", "api_health")
    assert "the API is degraded: redis unhealthy (" in f["summary"], f["summary"]
    health = r["endpoints"]["direct"]["checks"]["/api/v1/metrics/health"]
    assert health["status_code"] == 200 and health["body"]["components"]["redis"]["error"]

    # without the admin key, the state but not the reason
    rc, r, out = run_module(endpoints=[{"name": "direct", "url": svc.url}], slow_ms=5000)
    (f,) = r["findings"]
    assert f["component"] == "redis" and f["summary"].endswith("redis unhealthy")
