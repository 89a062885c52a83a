"""auditlog.ops.latency_suspects: the host a fleet's slow links have in common (pure logic)."""

from __future__ import annotations

import pytest
from ansible.errors import AnsibleFilterError
from ansible_collections.auditlog.ops.plugins.filter.latency_suspects import latency_suspects


def target(name, host, median, received=5):
    return {"name": name, "host": host, "port": 1, "median_ms": median, "received": received}


def app(pg, redis, nats):
    return [target("postgresql", "db1", pg), target("redis", "mq1", redis), target("nats mq1", "mq1", nats)]


def test_every_link_from_one_host_slow_names_that_host_with_the_links_into_it():
    measured = {
        "app1": app(150.0, 160.0, 170.0),
        "app2": app(0.3, 0.4, 0.5),
        "lb1": [target("api app1", "app1", 140.0), target("api app2", "app2", 0.4)],
    }
    (found,) = latency_suspects(measured, warning_ms=20, critical_ms=200)
    assert found["severity"] == "warning" and found["check"] == "latency_suspect"
    assert found["evidence"]["host"] == "app1"
    assert found["summary"].startswith("every link from app1 is slow (3 of 3: app1 -> postgresql 150.0 ms")
    assert "; and into it: lb1 -> api app1 140.0 ms" in found["summary"]
    targets = [lk["target"] for lk in found["evidence"]["links"]]
    assert targets == ["postgresql", "redis", "nats mq1", "api app1"]


def test_one_target_slow_from_every_host_names_the_target_critical_when_every_link_is_over_critical():
    measured = {"app1": app(250.0, 0.4, 0.5), "app2": app(300.0, 0.4, 0.5)}
    (found,) = latency_suspects(measured, warning_ms=20, critical_ms=200)
    assert found["severity"] == "critical" and found["evidence"]["host"] == "db1"
    assert found["summary"].startswith("every link to db1 is slow (2 of 2: app1 -> postgresql 250.0 ms")
    assert "db1's link or its server's load" in found["summary"]


def test_an_unanswered_link_counts_as_slow_and_is_shown_as_no_answer():
    measured = {"app1": app(0.3, 0.4, None), "app2": app(0.3, 0.4, 0.5)}
    measured["app1"][2]["received"] = 0
    (found,) = latency_suspects(measured)
    assert found["severity"] == "warning" and found["evidence"]["host"] is None
    assert found["summary"] == "slow links with no host in common: app1 -> nats mq1 no answer"


def test_no_slow_link_gives_one_info_naming_the_slowest():
    (found,) = latency_suspects({"app1": app(0.3, 1.5, 0.5), "app2": app(0.3, 0.4, 0.5)}, warning_ms=20)
    assert found["severity"] == "info"
    assert found["summary"] == "every one of 6 links under 20 ms, the slowest app1 -> redis 1.5 ms"


def test_a_single_link_is_no_suspect_host_of_its_own():
    (found,) = latency_suspects({"lb1": [target("api app1", "app1", 90.0), target("api app2", "app2", 0.5)]})
    assert found["evidence"]["host"] is None and "lb1 -> api app1 90.0 ms" in found["summary"]


@pytest.mark.parametrize("bad", [[], "app1", {"app1": "db1"}])
def test_bad_input_is_refused_naming_it(bad):
    with pytest.raises(AnsibleFilterError, match="latency_suspects"):
        latency_suspects(bad)
