"""auditlog.ops.link_latency run as a playbook runs it (`ansible localhost -m auditlog.ops.link_latency`
under /usr/bin/python3, support.modules), against a TCP listener the test opens on 127.0.0.1 and a
port of 127.0.0.1 that nothing listens on (bound, its number taken, closed): the samples of the
reachable one, the critical `unreachable` finding of the closed one (connection refused), a latency
warning from a threshold below any connect time, and a bad count refused. Loopback only."""

from __future__ import annotations

import socket
import threading

import pytest
from support.modules import run_module

LOOPBACK = "127.0.0.1"


@pytest.fixture(scope="module")
def listener():
    """A TCP server on 127.0.0.1 that accepts each connection and closes it; yields its port."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((LOOPBACK, 0))
    server.listen(64)
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                return
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    server.close()
    thread.join(5)


@pytest.fixture
def closed_port():
    """A port of 127.0.0.1 that nothing listens on: bound by the test, then closed."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind((LOOPBACK, 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_reachable_and_closed_ports_in_check_mode_too(listener, closed_port):
    args = {
        "targets": [
            {"name": "api app1", "host": LOOPBACK, "port": listener},
            {"name": "redis", "host": LOOPBACK, "port": closed_port},
        ],
        "count": 4,
        "interval_ms": 20,
        "timeout": 2,
    }
    for flags in ((), ("--check",)):
        rc, result, out = run_module("link_latency", args, *flags)
        assert rc == 0 and "Traceback" not in out, out
        assert result["changed"] is False
        up, down = result["targets"]
        assert (up["name"], down["name"]) == ("api app1", "redis")

        assert up["address"] == LOOPBACK and up["addresses"] == [LOOPBACK] and up["error"] is None
        assert (up["sent"], up["received"], up["lost"]) == (4, 4, 0)
        assert len(up["samples"]) == 4 and all(s > 0 for s in up["samples"])
        assert up["min_ms"] <= up["median_ms"] <= up["max_ms"]
        assert up["min_ms"] == min(up["samples"]) and up["max_ms"] == max(up["samples"])
        assert up["jitter_ms"] >= 0 and up["resolve_ms"] is not None

        assert (down["sent"], down["received"], down["lost"]) == (4, 0, 4)
        assert down["samples"] == [] and down["median_ms"] is None and down["address"] is None
        assert "connection refused" in down["error"].lower()

        (found,) = result["findings"]
        assert (found["severity"], found["component"], found["check"]) == (
            "critical",
            "network",
            "unreachable",
        )
        assert f"redis ({LOOPBACK}:{closed_port})" in found["summary"]
        assert "connection refused" in found["summary"].lower()
        assert found["host"] == "localhost"
        assert result["summary"] == {
            "slowest": "api app1",
            "slowest_median_ms": up["median_ms"],
            "reachable": 1,
            "unreachable": 1,
        }
        # The action plugin gathered the finding.
        assert result["ansible_facts"]["runbook_findings"] == [found]


def test_a_threshold_below_any_connect_time_warns_of_the_reachable_target(listener):
    args = {
        "targets": [{"name": "postgres", "host": LOOPBACK, "port": listener}],
        "count": 3,
        "interval_ms": 10,
        "warning_ms": 0.000001,
    }
    rc, result, out = run_module("link_latency", args)
    assert rc == 0, out
    (up,) = result["targets"]
    assert up["received"] == 3
    (found,) = result["findings"]
    assert (found["severity"], found["component"], found["check"]) == ("warning", "network", "latency")
    assert found["summary"].startswith(f"postgres ({LOOPBACK}:{listener}): median TCP connect ")
    assert "over 3 (min " in found["summary"] and found["summary"].endswith("latency from 1e-06 ms")
    assert found["evidence"]["median_ms"] == up["median_ms"]


def test_a_bad_count_is_refused_with_its_value(listener):
    args = {"targets": [{"name": "postgres", "host": LOOPBACK, "port": listener}], "count": 0}
    rc, result, out = run_module("link_latency", args)
    assert rc != 0 and result["failed"] is True, out
    assert result["msg"] == "count must be from 1 to 100, not 0"
