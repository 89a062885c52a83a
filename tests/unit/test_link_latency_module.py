"""auditlog.ops.link_latency's pure logic: the statistics of the samples, a target measured with
the TCP connect itself replaced (its timing and its errors scripted), the findings' thresholds and
summaries, the run's summary, the parameters' validation, and that the targets are measured at the
same time. No socket is opened (tests/ops/test_link_latency.py connects for real)."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
from ansible_collections.auditlog.ops.plugins.module_utils import links
from ansible_collections.auditlog.ops.plugins.modules import link_latency as ll

REFUSED = ConnectionRefusedError(111, "Connection refused")


def scripted(*answers, calls=None):
    """A stand-in for link_latency.connect_ms: each call takes the next answer, a time in ms or
    an exception to raise; calls (a list) records each call's address."""
    answers = list(answers)

    def connect_ms(family, sockaddr, timeout):
        if calls is not None:
            calls.append(sockaddr[0])
        answer = answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer

    return connect_ms


def target(name="postgres", host="127.0.0.1", port=5432):
    return {"name": name, "host": host, "port": port}


def params(**override):
    base = {
        "targets": [target()],
        "count": 5,
        "interval_ms": 0.0,
        "timeout": 3.0,
        "warning_ms": 20.0,
        "critical_ms": 200.0,
        "resolve_warning_ms": 100.0,
    }
    return {**base, **override}


def facts(samples, sent=None, **override):
    """A target's facts as measure_target builds them, from its samples."""
    sent = len(samples) if sent is None else sent
    out = ll.new_facts(target("nats nats1", "nats1", 4222))
    out.update(addresses=["10.20.0.21"], address="10.20.0.21", resolve_ms=0.4, samples=list(samples))
    out.update(sent=sent, received=len(samples), lost=sent - len(samples), **ll.statistics_of(samples))
    out.update(override)
    return out


def findings_of(f, warning_ms=20.0, critical_ms=200.0, resolve_warning_ms=100.0):
    return ll.target_findings(f, warning_ms, critical_ms, resolve_warning_ms)


# -- statistics ---------------------------------------------------------------------------------------


def test_statistics_min_median_max_and_jitter_of_consecutive_samples():
    stats = ll.statistics_of([1.0, 2.0, 3.0, 10.0, 4.0])
    # Jitter: |2-1| + |3-2| + |10-3| + |4-10| = 15, over 4 steps.
    assert stats == {"min_ms": 1.0, "median_ms": 3.0, "max_ms": 10.0, "jitter_ms": 3.75}
    assert ll.statistics_of([0.1234, 0.2])["median_ms"] == 0.162  # an even count: the middle two's mean


def test_statistics_of_one_sample_and_of_none():
    assert ll.statistics_of([0.5]) == {"min_ms": 0.5, "median_ms": 0.5, "max_ms": 0.5, "jitter_ms": 0.0}
    assert ll.statistics_of([]) == {"min_ms": None, "median_ms": None, "max_ms": None, "jitter_ms": None}


# -- one target, the connect scripted --------------------------------------------------------------


def test_a_reachable_target_gets_count_samples(monkeypatch):
    monkeypatch.setattr(ll, "connect_ms", scripted(0.3, 0.25, 0.4, 0.31, 0.29))
    got = ll.measure_target(target(), 5, 0, 3.0)
    assert got["samples"] == [0.3, 0.25, 0.4, 0.31, 0.29]
    assert (got["sent"], got["received"], got["lost"]) == (5, 5, 0)
    assert (got["min_ms"], got["median_ms"], got["max_ms"]) == (0.25, 0.3, 0.4)
    assert got["address"] == "127.0.0.1" and got["addresses"] == ["127.0.0.1"]
    assert got["resolve_ms"] is not None and got["error"] is None
    assert findings_of(got) == []


def test_some_connects_lost_is_packet_loss_with_the_last_error(monkeypatch):
    timeout = TimeoutError("timed out")
    monkeypatch.setattr(ll, "connect_ms", scripted(0.3, REFUSED, 0.4, timeout, 0.5))
    got = ll.measure_target(target(), 5, 0, 3.0)
    assert got["samples"] == [0.3, 0.4, 0.5]
    assert (got["sent"], got["received"], got["lost"]) == (5, 3, 2)
    assert got["error"] == "127.0.0.1: timed out after 3s"
    (found,) = findings_of(got)
    assert (found["severity"], found["component"], found["check"]) == ("warning", "network", "packet_loss")
    assert found["summary"].startswith("postgres (127.0.0.1:5432): 2 of 5 TCP connects failed (40% loss)")
    assert found["evidence"]["lost"] == 2 and found["evidence"]["sent"] == 5


def test_a_target_that_never_accepts_is_critical_unreachable_with_the_error(monkeypatch):
    monkeypatch.setattr(ll, "connect_ms", scripted(*[REFUSED] * 3))
    got = ll.measure_target(target("redis", port=6379), 3, 0, 3.0)
    assert got["samples"] == [] and (got["sent"], got["received"], got["lost"]) == (3, 0, 3)
    assert got["address"] is None and got["median_ms"] is None and got["jitter_ms"] is None
    assert got["error"] == "127.0.0.1: [Errno 111] Connection refused"
    (found,) = findings_of(got)
    assert (found["severity"], found["component"], found["check"]) == ("critical", "network", "unreachable")
    assert "redis (127.0.0.1:6379)" in found["summary"] and "none of 3 TCP connects" in found["summary"]
    assert found["summary"].endswith("[Errno 111] Connection refused")


def test_the_first_address_that_accepts_is_kept(monkeypatch):
    # As for `localhost` on a host whose server listens on IPv4 only: ::1 refuses, 127.0.0.1 accepts.
    # (The resolution is scripted too, for the two addresses.)
    infos = [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 5432, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 5432)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 5432)),
    ]
    monkeypatch.setattr(links.socket, "getaddrinfo", lambda *a, **k: infos)
    calls = []
    monkeypatch.setattr(ll, "connect_ms", scripted(REFUSED, 0.2, 0.3, 0.4, calls=calls))
    got = ll.measure_target(target(host="localhost"), 3, 0, 3.0)
    assert calls == ["::1", "127.0.0.1", "127.0.0.1", "127.0.0.1"]
    assert got["addresses"] == ["::1", "127.0.0.1"] and got["address"] == "127.0.0.1"
    assert got["samples"] == [0.2, 0.3, 0.4] and got["lost"] == 0 and got["error"] is None


def test_a_name_that_does_not_resolve_is_unreachable_without_a_connect(monkeypatch):
    calls = []
    monkeypatch.setattr(ll, "connect_ms", scripted(calls=calls))
    # An empty label fails in the idna codec, before any resolver is asked.
    got = ll.measure_target(target(host="db1..internal"), 5, 0, 3.0)
    assert calls == [] and got["sent"] == 0 and got["addresses"] == []
    assert got["error"].startswith("cannot resolve db1..internal")
    (found,) = findings_of(got)
    assert found["check"] == "unreachable" and found["severity"] == "critical"
    assert found["summary"].startswith("postgres (db1..internal:5432): unreachable, cannot resolve")


def test_the_interval_separates_the_samples_of_a_target(monkeypatch):
    monkeypatch.setattr(ll, "connect_ms", scripted(0.1, 0.1, 0.1))
    started = time.monotonic()
    ll.measure_target(target(), 3, 50, 3.0)
    assert 0.1 <= time.monotonic() - started < 0.5  # two pauses of 50 ms, none after the last


# -- findings --------------------------------------------------------------------------------------------


def test_latency_summary_names_the_target_and_the_figures():
    (found,) = findings_of(facts([120.1, 140.0, 153.2, 190.0, 201.7]))
    assert (found["severity"], found["component"], found["check"]) == ("warning", "network", "latency")
    assert found["summary"] == (
        "nats nats1 (nats1:4222): median TCP connect 153.2 ms over 5 (min 120.1, max 201.7);"
        " latency from 20 ms"
    )
    evidence = found["evidence"]
    assert (
        evidence["median_ms"] == 153.2 and evidence["warning_ms"] == 20.0 and evidence["critical_ms"] == 200.0
    )
    assert evidence["target"] == "nats nats1" and evidence["address"] == "10.20.0.21"


@pytest.mark.parametrize(
    ("median", "severity"),
    [(19.999, None), (20.0, "warning"), (199.9, "warning"), (200.0, "critical"), (950.0, "critical")],
)
def test_latency_thresholds_on_the_median(median, severity):
    found = findings_of(facts([median]))
    assert [f["severity"] for f in found] == ([severity] if severity else [])
    if severity == "critical":
        assert found[0]["summary"].endswith("critical latency from 200 ms")


def test_the_median_counts_not_one_slow_sample():
    # One connect of 900 ms among fast ones (a retransmitted SYN, say): the median stays low.
    assert findings_of(facts([0.3, 0.4, 900.0, 0.35, 0.3])) == []


def test_loss_and_latency_both_found():
    f = facts([250.0, 260.0], sent=5, error="10.20.0.21: timed out after 3s")
    assert [(x["check"], x["severity"]) for x in findings_of(f)] == [
        ("packet_loss", "warning"),
        ("latency", "critical"),
    ]


def test_slow_resolution_is_a_dns_warning_that_suggests_pinning_the_name():
    (found,) = findings_of(facts([0.3], resolve_ms=153.0))
    assert (found["severity"], found["component"], found["check"]) == ("warning", "dns", "resolve_time")
    assert "resolving nats1 took 153.0 ms" in found["summary"] and "/etc/hosts" in found["summary"]
    assert "network/dns.yml" in found["summary"] and found["variable"] == "dns_fix_hosts_file"
    assert found["evidence"]["resolve_ms"] == 153.0 and found["evidence"]["resolve_warning_ms"] == 100.0
    assert findings_of(facts([0.3], resolve_ms=99.9)) == []
    # Slow to resolve and then unreachable: both.
    down = facts([], sent=5, resolve_ms=400.0, error="10.20.0.21: [Errno 113] No route to host")
    assert [x["check"] for x in findings_of(down)] == ["unreachable", "resolve_time"]


def test_an_ipv6_address_is_bracketed_in_the_summary():
    (found,) = findings_of(facts([], sent=1, host="fd00::5", error="fd00::5: timed out after 3s"))
    assert "nats nats1 ([fd00::5]:4222)" in found["summary"]


def test_the_runs_summary():
    targets = [
        facts([0.3], name="postgres"),
        facts([0.9, 1.1], name="redis"),
        facts([], sent=5, name="nats nats2", error="x"),
    ]
    assert ll.summarize(targets) == {
        "slowest": "redis",
        "slowest_median_ms": 1.0,
        "reachable": 2,
        "unreachable": 1,
    }
    none = ll.summarize([facts([], sent=5, error="x")])
    assert none == {"slowest": None, "slowest_median_ms": None, "reachable": 0, "unreachable": 1}


# -- parameters ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"count": 0}, "count must be from 1 to 100, not 0"),
        ({"count": 101}, "count must be from 1 to 100, not 101"),
        ({"targets": []}, "targets is empty: give at least one {name, host, port}"),
        ({"interval_ms": -1.0}, "interval_ms must be 0 or more, not -1.0"),
        ({"timeout": 0.0}, "timeout must be more than 0 seconds, not 0.0"),
        ({"warning_ms": 300.0}, "critical_ms (200.0) is below warning_ms (300.0)"),
        ({"targets": [target(port=70000)]}, "target postgres: port must be from 1 to 65535, not 70000"),
        ({"targets": [target(host=" ")]}, "target postgres: host is empty"),
    ],
)
def test_bad_parameters_are_named(override, message):
    assert ll.validate(params(**override)) == message


def test_good_parameters_pass():
    assert ll.validate(params()) is None
    assert ll.validate(params(count=1, warning_ms=0.000001)) is None
    assert ll.validate(params(count=100)) is None


def test_the_argument_spec_requires_each_targets_fields_and_converts_them():
    validator = ArgumentSpecValidator(ll.argument_spec())
    result = validator.validate({"targets": [{"name": "postgres", "host": "db1", "port": "5432"}]})
    assert result.error_messages == []
    p = result.validated_parameters
    assert p["targets"] == [{"name": "postgres", "host": "db1", "port": 5432}]
    assert (p["count"], p["interval_ms"], p["timeout"]) == (5, 100.0, 3.0)
    assert (p["warning_ms"], p["critical_ms"], p["resolve_warning_ms"]) == (20.0, 200.0, 100.0)
    missing = validator.validate({"targets": [{"name": "postgres", "host": "db1"}]})
    assert any("port" in m for m in missing.error_messages)
    assert validator.validate({}).error_messages


# -- the run ---------------------------------------------------------------------------------------------


def test_targets_are_measured_at_the_same_time_and_returned_in_order(monkeypatch):
    threads = set()

    def slow_connect(family, sockaddr, timeout):
        threads.add(threading.get_ident())
        time.sleep(0.01)
        return 10.0

    monkeypatch.setattr(ll, "connect_ms", slow_connect)
    targets = [target(f"api app{i}", port=8000 + i) for i in range(10)]
    started = time.monotonic()
    result = ll.run(params(targets=targets, interval_ms=100.0))
    elapsed = time.monotonic() - started
    # 10 targets x 5 samples 100 ms apart: 0.4 s of pauses per target, 4 s one after the other.
    assert 0.4 <= elapsed < 1.5, elapsed
    assert len(threads) == 10
    assert [t["name"] for t in result["targets"]] == [f"api app{i}" for i in range(10)]
    assert all(t["samples"] == [10.0] * 5 for t in result["targets"])
    assert result["changed"] is False and result["findings"] == []
    assert result["summary"]["reachable"] == 10 and result["summary"]["unreachable"] == 0
