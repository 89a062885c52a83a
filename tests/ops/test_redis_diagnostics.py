"""auditlog.ops.redis_diagnostics against a real redis-server on loopback, with real faults.

The server is audit_devtools.stack's `Redis` (Debian's redis-server, the deployment's ACL users,
maxmemory 256mb allkeys-lru); the module runs through `ansible localhost -m
auditlog.ops.redis_diagnostics` under /usr/bin/python3. No lab, no containers.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from ansible_collections.auditlog.ops.plugins.module_utils.redis_api import RedisClient, RedisError
from audit_devtools.stack import Redis
from support.modules import run_module

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"), reason="needs Debian's redis-server")


def admin(redis: Redis) -> RedisClient:
    return RedisClient(port=redis.port, user="audit-admin", password=redis.password).connect()


def diagnose(redis: Redis, *flags: str, **args) -> tuple[int, dict, str]:
    params = {
        "server_port": redis.port,
        "user": "audit-admin",
        "password": redis.password,
        "timeout": 5,
    } | args
    return run_module("redis_diagnostics", params, *flags)


def checks(result: dict) -> dict[str, str]:
    return {f["check"]: f["severity"] for f in result["findings"]}


@contextlib.contextmanager
def config(redis: Redis, **values):
    """CONFIG SET for the block, then the old values back."""
    client = admin(redis)
    old = client.config_get(*(name.replace("_", "-") for name in values))
    try:
        for name, value in values.items():
            client.command("CONFIG", "SET", name.replace("_", "-"), value)
        yield
    finally:
        for name, value in old.items():
            client.command("CONFIG", "SET", name, value)
        client.close()


def test_keys_per_database_and_the_services_own(redis):
    client = admin(redis)
    client.command("FLUSHALL")
    for i in range(100):
        client.command("SET", f"audit:rate:tenant{i}:1", i, "EX", 600)
    for i in range(50):
        client.command("SET", f"audit:q:tenant{i}:0:digest", "x" * 100)
    for i in range(30):
        client.command("SET", f"other:{i}", i)
    client.command("SELECT", 2)
    client.command("SET", "audit:elsewhere", 1)
    client.close()

    rc, result, out = diagnose(redis, "--check")
    assert rc == 0, out
    assert result["changed"] is False and result["available"] is True
    assert result["server"]["version"] and result["server"]["role"] == "master"
    assert result["keyspace"]["db0"]["keys"] == 180 and result["keyspace"]["db0"]["expires"] == 100
    assert result["keyspace"]["db2"]["keys"] == 1
    keys = result["service_keys"]
    assert keys["available"] and keys["pattern"] == "audit:*" and keys["db"] == 0
    assert keys["count"] == 150 and keys["complete"] is True
    assert keys["by_prefix"] == {"audit:q": 50, "audit:rate": 100}
    memory = result["memory"]
    assert memory["maxmemory_bytes"] == 256 * 1024 * 1024 and memory["maxmemory_policy"] == "allkeys-lru"
    assert 0 < memory["used_ratio"] < 0.8 and memory["peak_bytes"] >= memory["used_bytes"] > 0
    values = result["config"]["values"]
    assert values["maxmemory"] == str(256 * 1024 * 1024) and values["maxmemory-policy"] == "allkeys-lru"
    assert int(values["maxclients"]) == result["clients"]["maxclients"] and values["timeout"] == "0"
    assert result["clients"]["connected"] >= 1
    assert result["findings"] == [], result["findings"]
    assert redis.password not in out


def test_the_services_own_user_may_not_scan_or_read_config(redis):
    rc, result, out = diagnose(redis, user="audit-service")
    assert rc == 0 and "Traceback" not in out, out
    assert result["available"] is True and result["keyspace"]["db0"]["keys"] >= 0
    assert result["service_keys"]["available"] is False and "NOPERM" in result["service_keys"]["error"]
    assert result["config"]["available"] is False and "NOPERM" in result["config"]["error"]


def test_memory_near_maxmemory_and_evictions(redis):
    client = admin(redis)
    client.command("FLUSHALL")
    used = client.info("memory")["memory"]["used_memory"]
    with config(redis, maxmemory=used + 2 * 1024 * 1024):
        for i in range(80):  # 8 MB into a 2 MB margin: allkeys-lru evicts
            with contextlib.suppress(RedisError):
                client.command("SET", f"audit:q:fill:{i}", "v" * 100_000)
        rc, result, out = diagnose(redis, memory_warn_ratio=0.5, memory_critical_ratio=0.999)
    client.close()
    assert rc == 0, out
    assert result["stats"]["evicted_keys"] > 0
    assert result["memory"]["used_ratio"] >= 0.5
    found = checks(result)
    assert found["evictions"] == "warning" and found["memory"] == "warning"
    evictions = next(f for f in result["findings"] if f["check"] == "evictions")
    assert "allkeys-lru" in evictions["evidence"] and evictions["variable"] == "redis_maxmemory"


def fill_clients(redis: Redis) -> list[RedisClient]:
    """Connections until the server rejects one (maxclients reached): the ones it took."""
    held = []
    with contextlib.suppress(RedisError):
        for _ in range(50):
            held.append(admin(redis))
    return held


def test_clients_near_maxclients_and_rejected(redis):
    probe = admin(redis)
    connected = probe.info("clients")["clients"]["connected_clients"]
    probe.close()
    with config(redis, maxclients=connected + 6):
        held = fill_clients(redis)
        try:
            # Every slot taken: the module's own connection is rejected, and says why.
            rc, result, out = diagnose(redis)
            assert rc == 0 and "Traceback" not in out, out
            assert result["available"] is False and "max number of clients" in result["error"]
            assert checks(result) == {"clients": "critical"}
            # One slot free: the module gets in and sees the server full and the rejections.
            held.pop().close()
            rc, result, out = diagnose(redis)
        finally:
            for client in held:
                client.close()
    assert rc == 0, out
    assert result["available"] is True
    assert result["clients"]["maxclients"] == connected + 6
    assert result["clients"]["used_ratio"] >= 0.8
    assert result["stats"]["rejected_connections"] >= 2
    found = checks(result)
    assert found["clients"] == "warning" and found["rejected_connections"] == "warning"


def test_wrong_password_is_a_refused_login(redis):
    rc, result, out = diagnose(redis, password="not-the-password")
    assert rc == 0 and "Traceback" not in out, out
    assert result["available"] is False and "WRONGPASS" in result["error"]
    assert checks(result) == {"auth": "critical"}
    assert "not-the-password" not in out


def test_a_stopped_redis_is_available_false():
    root = Path(tempfile.mkdtemp(prefix="redis-down-"))
    server = Redis(root)
    server.start()
    port = server.port
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
    with socket.socket() as s:  # nothing listens there any more
        assert s.connect_ex(("127.0.0.1", port)) != 0
    rc, result, out = run_module("redis_diagnostics", {"server_port": port, "password": "x", "timeout": 3})
    assert rc == 0 and "Traceback" not in out, out
    assert result["available"] is False and f"cannot connect to Redis at 127.0.0.1:{port}" in result["error"]
    (only,) = result["findings"]
    assert only["severity"] == "critical" and only["component"] == "redis" and only["check"] == "reachable"
    assert only["evidence"] == result["error"]
    # The collection's action plugin (plugin_utils/findings_action.py) names the host.
    assert only["host"] == "localhost"


# -- over TLS, with a client certificate -------------------------------------------------------------


@pytest.fixture(scope="module")
def redis_tls():
    """redis-server on a TLS port only, asking clients for a certificate (tls-auth-clients yes)."""
    from audit_devtools.stack import _terminate, free_port, wait_port
    from support.pki import make_pki

    root = Path(tempfile.mkdtemp(prefix="redis-tls-"))
    pki = make_pki(root)
    port, password = free_port(), "tls-test-password"
    proc = subprocess.Popen(
        [
            shutil.which("redis-server"),
            *("--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", ""),
            *("--dir", str(root)),
            *("--tls-cert-file", str(pki["server"]), "--tls-key-file", str(pki["server_key"])),
            *("--tls-ca-cert-file", str(pki["ca"]), "--tls-auth-clients", "yes"),
            *("--user", "default", "off", "--user", "audit-admin", "on", f">{password}", "~*", "&*", "+@all"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    yield port, password, pki
    _terminate(proc)
    shutil.rmtree(root, ignore_errors=True)


def test_over_tls_with_a_client_certificate(redis_tls):
    port, password, pki = redis_tls
    tls = {"ca_file": str(pki["ca"]), "client_cert": str(pki["client"]), "client_key": str(pki["client_key"])}
    args = {"server_host": "localhost", "server_port": port, "password": password, "timeout": 5}
    rc, result, out = run_module("redis_diagnostics", args | tls)
    assert rc == 0, out
    assert result["available"] is True and result["config"]["available"] is True, result

    # No client certificate: the server ends the handshake; a foreign CA: ours does not verify.
    rc, result, out = run_module("redis_diagnostics", args | {"ca_file": str(pki["ca"])})
    assert rc == 0 and result["available"] is False and "Traceback" not in out, out
    assert checks(result) == {"reachable": "critical"}
    rc, result, out = run_module("redis_diagnostics", args | tls | {"ca_file": str(pki["other-ca"])})
    assert rc == 0 and result["available"] is False, out
    assert "does not verify" in result["error"], result["error"]
