"""auditlog.ops.nats_jetstream against real nats-servers on loopback, with real conditions.

A single server is audit_devtools.stack's `Nats` (Debian's nats-server, JetStream, the
deployment's users); the cluster is three of them with routes and a JetStream meta group,
configured here. The module runs through `ansible localhost -m auditlog.ops.nats_jetstream`
under /usr/bin/python3. No lab, no containers.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from audit_devtools.stack import Nats, _need, free_port, wait_port
from support.modules import run_module

pytestmark = pytest.mark.skipif(
    not (shutil.which("nats-server") or Path("/usr/sbin/nats-server").exists()),
    reason="needs Debian's nats-server binary",
)

STREAM = "audit-logs-probe"
NS = 1_000_000_000


@pytest.fixture(scope="module")
def nats():
    root = Path(tempfile.mkdtemp(prefix="nats-diag-"))
    server = Nats(root)
    server.start()
    server.ensure_stream(STREAM, ["probe.>"])
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


def client(nats: Nats, password: str | None = None):
    from ansible_collections.auditlog.ops.plugins.module_utils.nats_api import NatsClient

    return NatsClient(port=nats.port, user="audit", password=password or nats.password, timeout=5).connect()


def diagnose(nats: Nats, *flags: str, **args) -> tuple[int, dict, str]:
    params = {
        "server_port": nats.port,
        "monitor_port": nats.monitor_port,
        "user": "audit",
        "password": nats.password,
        "timeout": 5,
    } | args
    return run_module("nats_jetstream", params, *flags)


def checks(result: dict) -> dict[str, str]:
    return {f["check"]: f["severity"] for f in result["findings"]}


def consumer(result: dict, stream: str, name: str) -> dict:
    (s,) = [s for s in result["streams"] if s["name"] == stream]
    (c,) = [c for c in s["consumers"] if c["name"] == name]
    return c


def test_a_consumer_with_pending_messages(nats):
    c = client(nats)
    for i in range(20):
        c.request(f"probe.tenant{i % 3}", b'{"event": %d}' % i)
    c.js_request(
        f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.backlog",
        {"stream_name": STREAM, "config": {"durable_name": "backlog", "ack_policy": "explicit"}},
    )
    # An open connection of the tests' own, for connz.
    try:
        rc, result, out = diagnose(nats, "--check", pending_warn=10)
    finally:
        c.close()
    assert rc == 0, out
    assert result["changed"] is False and result["available"] is True
    server = result["server"]
    assert server["version"] and server["jetstream"] is True and server["connections"] >= 1
    assert server["slow_consumers"] == 0 and server["mem_bytes"] > 0
    assert any(
        x["user"] == "audit" and x["name"] == "ansible-auditlog-ops" for x in result["connections"]["list"]
    )
    js = result["jetstream"]
    assert js["enabled"] and js["streams"] >= 1 and js["consumers"] >= 1 and js["messages"] >= 20
    assert js["meta_cluster"] is None
    assert result["routes"] == {"count": 0, "peers": [], "expected": 0, "list": []}
    (stream,) = [s for s in result["streams"] if s["name"] == STREAM]
    assert stream["messages"] == 20 and stream["first_seq"] == 1 and stream["last_seq"] == 20
    assert stream["subjects"] == ["probe.>"] and stream["consumer_count"] == 1
    backlog = consumer(result, STREAM, "backlog")
    assert backlog["num_pending"] == 20 and backlog["num_ack_pending"] == 0 and backlog["durable"]
    found = [f for f in result["findings"] if f["check"] == "consumer_pending"]
    assert len(found) == 1 and found[0]["severity"] == "warning"
    assert "backlog" in found[0]["summary"] and "num_pending 20" in found[0]["evidence"]
    assert nats.password not in out

    # Under the threshold: no finding at all on a healthy single server.
    rc, result, out = diagnose(nats, streams=[STREAM])
    assert rc == 0 and result["findings"] == [], result["findings"]


def test_ack_pending_and_redelivered(nats):
    c = client(nats)
    c.js_request(
        f"$JS.API.CONSUMER.DURABLE.CREATE.{STREAM}.slow",
        {
            "stream_name": STREAM,
            "config": {"durable_name": "slow", "ack_policy": "explicit", "ack_wait": 1 * NS},
        },
    )
    # Fetch without acking, wait out ack_wait, fetch again: the same messages come back.
    for _ in range(5):
        c.request(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.slow", b'{"batch": 1}')
    time.sleep(1.5)
    for _ in range(5):
        c.request(f"$JS.API.CONSUMER.MSG.NEXT.{STREAM}.slow", b'{"batch": 1}')
    c.close()
    rc, result, out = diagnose(nats, streams=[STREAM], ack_pending_warn=2, redelivered_warn=2)
    assert rc == 0, out
    slow = consumer(result, STREAM, "slow")
    assert slow["num_ack_pending"] >= 5 and slow["num_redelivered"] >= 3
    assert slow["last_delivered"]
    found = {(f["check"], f["severity"]) for f in result["findings"] if "slow" in f["summary"]}
    assert ("consumer_ack_pending", "warning") in found and ("consumer_redelivered", "warning") in found


def test_auth_failures_routes_and_a_missing_stream(nats):
    from ansible_collections.auditlog.ops.plugins.module_utils.nats_api import NatsConnectionError

    with pytest.raises(NatsConnectionError):
        client(nats, password="not-the-password")
    rc, result, out = diagnose(nats, expected_routes=2, streams=[STREAM, "no-such-stream"])
    assert rc == 0, out
    auth = result["connections"]["auth_failures"]
    assert auth["count"] >= 1 and auth["recent"][0]["reason"] == "Authentication Failure"
    found = checks(result)
    assert found["auth_failures"] == "warning"
    assert found["routes"] == "warning"
    assert found["stream_missing"] == "critical"


def test_wrong_password_leaves_the_monitoring_facts(nats):
    rc, result, out = diagnose(nats, password="not-the-password")
    assert rc == 0 and "Traceback" not in out, out
    assert result["available"] is True and result["server"]["version"]
    assert result["streams"]["available"] is False and "Authorization Violation" in result["streams"]["error"]
    assert checks(result)["jetstream_api"] == "critical"


def test_a_server_that_is_not_running_is_available_false():
    port, monitor = free_port(), free_port()
    rc, result, out = run_module(
        "nats_jetstream", {"server_port": port, "monitor_port": monitor, "password": "x", "timeout": 3}
    )
    assert rc == 0 and "Traceback" not in out, out
    assert result["available"] is False and f"127.0.0.1:{monitor}" in result["error"]
    assert result["streams"]["available"] is False and f"127.0.0.1:{port}" in result["streams"]["error"]
    (only,) = result["findings"]
    assert only["severity"] == "critical" and only["component"] == "nats" and only["check"] == "reachable"
    # The collection's action plugin (plugin_utils/findings_action.py) names the host.
    assert only["host"] == "localhost"


# -- a cluster of three: routes and the JetStream meta leader ----------------------------------------


class ClusterNode:
    def __init__(self, root: Path, name: str):
        self.name = name
        self.dir = root / name
        self.port, self.monitor_port, self.cluster_port = free_port(), free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    def start(self, peers: list[ClusterNode]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        routes = ", ".join(f'"nats-route://127.0.0.1:{p.cluster_port}"' for p in peers if p is not self)
        conf = self.dir / "nats.conf"
        conf.write_text(
            f'server_name: "{self.name}"\n'
            f'listen: "127.0.0.1:{self.port}"\n'
            f'http: "127.0.0.1:{self.monitor_port}"\n'
            f'jetstream {{ store_dir: "{self.dir / "store"}", max_file_store: 1G, max_memory_store: 64M }}\n'
            f'cluster {{ name: "probe", listen: "127.0.0.1:{self.cluster_port}", routes: [{routes}] }}\n'
        )
        self.proc = subprocess.Popen(
            [_need("nats-server", "nats-server"), "-c", str(conf)],
            stdout=open(self.dir / "log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)

    def jsz(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.monitor_port}/jsz", timeout=2) as r:
            return json.load(r)


def wait_until(predicate, timeout: float = 45) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise TimeoutError("condition not met")


@pytest.fixture
def cluster():
    root = Path(tempfile.mkdtemp(prefix="nats-cluster-"))
    nodes = [ClusterNode(root, f"n{i}") for i in range(1, 4)]
    for node in nodes:
        node.start(nodes)
    yield nodes
    for node in nodes:
        node.stop()
    shutil.rmtree(root, ignore_errors=True)


def test_cluster_routes_and_meta_leader_lost(cluster):
    first = cluster[0]
    wait_until(lambda: (first.jsz().get("meta_cluster") or {}).get("leader"))
    args = {"server_port": first.port, "monitor_port": first.monitor_port, "expected_routes": 2, "timeout": 5}
    wait_until(lambda: run_module("nats_jetstream", args)[1]["routes"]["count"] == 2)
    rc, result, out = run_module("nats_jetstream", args)
    assert rc == 0, out
    assert result["server"]["cluster_name"] == "probe"
    assert {r["remote_name"] for r in result["routes"]["list"]} <= {"n2", "n3", None}
    meta = result["jetstream"]["meta_cluster"]
    assert meta["leader"] in {"n1", "n2", "n3"} and meta["cluster_size"] == 3
    assert not [f for f in result["findings"] if f["severity"] != "info"], result["findings"]

    # Two of three gone: routes below the expected count, and no quorum, so no meta leader.
    cluster[1].stop()
    cluster[2].stop()
    wait_until(lambda: not (first.jsz().get("meta_cluster") or {}).get("leader"), timeout=60)
    rc, result, out = run_module("nats_jetstream", args)
    assert rc == 0, out
    assert result["routes"]["count"] == 0 and result["jetstream"]["meta_cluster"]["leader"] is None
    found = checks(result)
    assert found["routes"] == "warning" and found["meta_leader"] == "critical"


async def fetch_and_ack(nats: Nats, stream: str, durable: str, count: int) -> None:
    import nats as nats_py

    nc = await nats_py.connect(f"nats://127.0.0.1:{nats.port}", user="audit", password=nats.password)
    try:
        sub = await nc.jetstream().pull_subscribe("purge.>", durable=durable, stream=stream)
        for msg in await sub.fetch(count, timeout=5):
            await msg.ack_sync()
    finally:
        await nc.close()


def test_purge_refuses_unacknowledged_messages_and_purges_only_when_asked(nats):
    c = client(nats)
    try:
        c.js_request(
            "$JS.API.STREAM.CREATE.purge-probe",
            {"name": "purge-probe", "subjects": ["purge.>"], "storage": "memory", "num_replicas": 1},
        )
        for i in range(10):
            c.request("purge.t", b'{"event": %d}' % i)
    finally:
        c.close()
    # A worker that stored and acknowledged the first 6: messages 7-10 are not acknowledged yet.
    asyncio.run(fetch_and_ack(nats, "purge-probe", "w", 6))

    def messages() -> tuple[int, int]:
        rc, result, out = diagnose(nats, streams=["purge-probe"])
        assert rc == 0, out
        return result["streams"][0]["messages"], result["streams"][0]["first_seq"]

    rc, refused, out = diagnose(nats, streams=["purge-probe"], purge=True)
    assert rc == 0 and refused["changed"] is False, out
    assert refused["purged"]["refused"] is True and refused["purged"]["ack_floor"] == 6, refused["purged"]
    (told,) = [f for f in refused["findings"] if f["check"] == "purge_refused"]
    assert told["severity"] == "critical" and "purge_up_to_seq=7" in told["summary"], told
    assert messages() == (10, 1)

    rc, checked, out = diagnose(nats, "--check", streams=["purge-probe"], purge=True, purge_up_to_seq=7)
    assert rc == 0 and checked["changed"] is True and checked["purged"]["messages"] == 6, out
    assert messages() == (10, 1)

    rc, purged, out = diagnose(nats, streams=["purge-probe"], purge=True, purge_up_to_seq=7)
    assert rc == 0 and purged["changed"] is True and purged["purged"]["messages"] == 6, out
    assert [f["remediation"] for f in purged["findings"] if f["check"] == "purged"], purged["findings"]
    assert messages() == (4, 7)
    rc, again, out = diagnose(nats, streams=["purge-probe"], purge=True, purge_up_to_seq=7)
    assert rc == 0 and again["changed"] is False and again["purged"]["messages"] == 0, out

    rc, everything, out = diagnose(nats, streams=["purge-probe"], purge=True, purge_unacknowledged=True)
    assert rc == 0 and everything["changed"] is True and everything["purged"]["messages"] == 4, out
    assert messages()[0] == 0


def test_purge_needs_exactly_one_stream(nats):
    rc, result, out = diagnose(nats, purge=True)
    assert rc != 0 and "purge needs exactly one stream" in result["msg"], out
