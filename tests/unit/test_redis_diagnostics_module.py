"""auditlog.ops.redis_diagnostics without a server: RESP, INFO parsing, thresholds -> findings.

The client is driven over a socketpair by a scripted fake server (a thread), so the bytes of
each command and the decoding of each reply type are checked exactly.
"""

from __future__ import annotations

import socket
import threading

import pytest
from ansible_collections.auditlog.ops.plugins.module_utils import redis_api
from ansible_collections.auditlog.ops.plugins.modules import redis_diagnostics as rd

INFO = b"""# Server\r
redis_version:7.0.15\r
redis_mode:standalone\r
uptime_in_seconds:3600\r
executable:/usr/bin/redis-server\r
\r
# Clients\r
connected_clients:8\r
blocked_clients:1\r
maxclients:10\r
\r
# Memory\r
used_memory:214748364\r
used_memory_human:204.80M\r
used_memory_rss:322122547\r
used_memory_peak:250000000\r
used_memory_peak_human:238.42M\r
maxmemory:268435456\r
maxmemory_human:256.00M\r
maxmemory_policy:allkeys-lru\r
mem_fragmentation_ratio:1.50\r
\r
# Stats\r
expired_keys:4\r
evicted_keys:12\r
rejected_connections:3\r
keyspace_hits:100\r
keyspace_misses:5\r
total_connections_received:40\r
\r
# Replication\r
role:master\r
\r
# Errorstats\r
errorstat_NOPERM:count=2\r
\r
# Keyspace\r
db0:keys=180,expires=100,avg_ttl=51234\r
db2:keys=1,expires=0,avg_ttl=0\r
"""

PARAMS = {
    "memory_warn_ratio": 0.8,
    "memory_critical_ratio": 0.95,
    "clients_warn_ratio": 0.8,
    "fragmentation_info_ratio": 1.5,
    "fragmentation_min_bytes": 64 * 1024 * 1024,
}


# -- RESP ------------------------------------------------------------------------------------------


def test_encode_command_is_an_array_of_bulk_strings():
    assert redis_api.encode_command("SET", "audit:k", 42, b"\x00\xff") == (
        b"*4\r\n$3\r\nSET\r\n$7\r\naudit:k\r\n$2\r\n42\r\n$2\r\n\x00\xff\r\n"
    )
    assert (
        redis_api.encode_command("AUTH", "u", "pässword")
        == b"*3\r\n$4\r\nAUTH\r\n$1\r\nu\r\n$9\r\np\xc3\xa4ssword\r\n"
    )


def reader(*chunks: bytes) -> redis_api.RespReader:
    pieces = list(chunks)
    return redis_api.RespReader(lambda: pieces.pop(0) if pieces else b"")


def test_decode_every_reply_type_even_split_across_reads():
    r = reader(
        b"+OK\r\n:12", b"\r\n$5\r\nhel", b"lo\r\n$-1\r\n*2\r\n$1\r\na\r\n*1\r\n:3\r\n", b"*-1\r\n$0\r\n\r\n"
    )
    assert r.read() == "OK"
    assert r.read() == 12
    assert r.read() == b"hello"
    assert r.read() is None
    assert r.read() == [b"a", [3]]
    assert r.read() is None
    assert r.read() == b""


def test_decode_errors_and_protocol_violations():
    r = reader(b"-WRONGPASS invalid username-password pair or user is disabled.\r\n")
    error = r.read()
    assert isinstance(error, redis_api.RedisReplyError) and error.kind == "WRONGPASS"
    with pytest.raises(redis_api.ProtocolError):
        reader(b"HTTP/1.1 400 Bad Request\r\n").read()
    with pytest.raises(redis_api.RedisConnectionError, match="closed the connection"):
        reader(b"$10\r\nshort").read()


def test_parse_info_sections_numbers_and_keyspace():
    info = redis_api.parse_info(INFO)
    assert info["server"]["redis_version"] == "7.0.15" and info["server"]["uptime_in_seconds"] == 3600
    assert info["server"]["executable"] == "/usr/bin/redis-server"
    assert info["memory"]["mem_fragmentation_ratio"] == 1.5
    assert info["keyspace"]["db0"] == {"keys": 180, "expires": 100, "avg_ttl": 51234}
    assert info["errorstats"]["errorstat_NOPERM"] == {"count": 2}


def test_parse_config_pairs():
    assert redis_api.parse_config([b"maxmemory", b"0", b"maxmemory-policy", b"noeviction"]) == {
        "maxmemory": "0",
        "maxmemory-policy": "noeviction",
    }


# -- the client against a scripted server ------------------------------------------------------------


def fake_server(script):
    """A socketpair whose far end answers each expected command with its scripted reply."""
    ours, theirs = socket.socketpair()
    seen = []

    def serve():
        buf = b""
        for expected, reply in script:
            while len(buf) < len(expected):
                chunk = theirs.recv(65536)
                if not chunk:
                    return
                buf += chunk
            seen.append(buf[: len(expected)])
            buf = buf[len(expected) :]
            theirs.sendall(reply)
        theirs.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return ours, seen, thread


def connected_client(sock, **kw):
    client = redis_api.RedisClient(**kw)
    client.sock = sock
    client.reader = redis_api.RespReader(client._recv)
    return client


def test_client_login_scan_and_config(monkeypatch):
    cmd = redis_api.encode_command
    script = [
        (cmd("AUTH", "audit-admin", "pw"), b"+OK\r\n"),
        (cmd("PING"), b"+PONG\r\n"),
        (cmd("SELECT", 0), b"+OK\r\n"),
        (
            cmd("SCAN", b"0", "MATCH", "audit:*", "COUNT", 1000),
            b"*2\r\n$2\r\n17\r\n*2\r\n$12\r\naudit:rate:1\r\n$9\r\naudit:q:x\r\n",
        ),
        (
            cmd("SCAN", b"17", "MATCH", "audit:*", "COUNT", 1000),
            b"*2\r\n$1\r\n0\r\n*1\r\n$12\r\naudit:rate:2\r\n",
        ),
        (cmd("CONFIG", "GET", "maxmemory"), b"*2\r\n$9\r\nmaxmemory\r\n$1\r\n0\r\n"),
    ]
    sock, seen, thread = fake_server(script)
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: sock)
    client = redis_api.RedisClient(user="audit-admin", password="pw").connect()
    assert client.scan_count("audit:*", db=0) == (3, {"audit:rate": 2, "audit:q": 1}, True)
    assert client.config_get("maxmemory") == {"maxmemory": "0"}
    client.close()
    thread.join(5)
    assert seen == [expected for expected, _ in script]


def test_client_wrong_password_and_full_server(monkeypatch):
    for reply, words in (
        (b"-WRONGPASS invalid username-password pair or user is disabled.\r\n", "refused the login of user"),
        (b"-ERR max number of clients reached\r\n", "rejected the connection"),
    ):
        sock, _seen, thread = fake_server([(redis_api.encode_command("AUTH", "u", "p"), reply)])
        monkeypatch.setattr(socket, "create_connection", lambda *a, s=sock, **k: s)
        with pytest.raises(redis_api.RedisConnectionError, match=words):
            redis_api.RedisClient(port=6390, user="u", password="p").connect()
        thread.join(5)


def test_client_unreachable_names_the_address():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(redis_api.RedisConnectionError, match=f"cannot connect to Redis at 127.0.0.1:{port}"):
        redis_api.RedisClient(port=port, timeout=2).connect()


def test_scan_stops_at_max_keys():
    cmd = redis_api.encode_command
    page = b"*2\r\n$1\r\n5\r\n*2\r\n$7\r\naudit:a\r\n$7\r\naudit:b\r\n"
    sock, _seen, thread = fake_server([(cmd("SCAN", b"0", "MATCH", "audit:*", "COUNT", 1000), page)])
    client = connected_client(sock)
    assert client.scan_count("audit:*", max_keys=2) == (2, {"audit:a": 1, "audit:b": 1}, False)
    thread.join(5)


# -- facts and findings ------------------------------------------------------------------------------


def facts_of(info=INFO):
    facts = rd.summarise_info(redis_api.parse_info(info), "127.0.0.1:6379")
    facts["available"] = True
    return facts


def test_summarise_info():
    facts = facts_of()
    assert facts["server"] == {
        "address": "127.0.0.1:6379",
        "version": "7.0.15",
        "mode": "standalone",
        "role": "master",
        "uptime_seconds": 3600,
    }
    memory = facts["memory"]
    assert memory["used_ratio"] == 0.8 and memory["maxmemory_policy"] == "allkeys-lru"
    assert memory["peak_bytes"] == 250000000 and memory["fragmentation_ratio"] == 1.5
    assert facts["clients"] == {"connected": 8, "blocked": 1, "maxclients": 10, "used_ratio": 0.8}
    assert facts["keyspace"]["db2"] == {"keys": 1, "expires": 0, "avg_ttl": 0}
    assert facts["stats"]["evicted_keys"] == 12 and facts["stats"]["rejected_connections"] == 3


def checks(findings):
    return {f["check"]: f["severity"] for f in findings}


def test_thresholds_to_findings():
    assert checks(rd.diagnose(facts_of(), PARAMS)) == {
        "memory": "warning",
        "evictions": "warning",
        "clients": "warning",
        "rejected_connections": "warning",
    }
    full = INFO.replace(b"used_memory:214748364", b"used_memory:260000000")
    assert checks(rd.diagnose(facts_of(full), PARAMS))["memory"] == "critical"
    fragmented = INFO.replace(b"mem_fragmentation_ratio:1.50", b"mem_fragmentation_ratio:2.10")
    assert checks(rd.diagnose(facts_of(fragmented), PARAMS))["fragmentation"] == "info"
    calm = (
        INFO.replace(b"used_memory:214748364", b"used_memory:1048576")
        .replace(b"evicted_keys:12", b"evicted_keys:0")
        .replace(b"rejected_connections:3", b"rejected_connections:0")
        .replace(b"maxclients:10", b"maxclients:10000")
        .replace(b"mem_fragmentation_ratio:1.50", b"mem_fragmentation_ratio:9.00")  # tiny: not judged
    )
    assert rd.diagnose(facts_of(calm), PARAMS) == []
    unlimited = calm.replace(b"maxmemory:268435456", b"maxmemory:0")
    assert checks(rd.diagnose(facts_of(unlimited), PARAMS)) == {"maxmemory": "info"}


@pytest.mark.parametrize(
    ("error", "check"),
    [
        ("cannot connect to Redis at 127.0.0.1:6379: [Errno 111] Connection refused", "reachable"),
        ("Redis at 127.0.0.1:6379 refused the login of user 'audit-admin': WRONGPASS invalid", "auth"),
        ("Redis at 127.0.0.1:6379 rejected the connection: ERR max number of clients reached", "clients"),
        (
            "Redis at 127.0.0.1:6379: TLS handshake failed: [SSL: UNEXPECTED_EOF_WHILE_READING] EOF occurred",
            "clients",
        ),
        ("Redis at 127.0.0.1:6379: TLS handshake failed: [Errno 104] Connection reset by peer", "clients"),
        ("Redis at 127.0.0.1:6379: TLS handshake failed: [Errno 32] Broken pipe", "clients"),
        ("Redis at 127.0.0.1:6379: TLS handshake failed: certificate verify failed", "reachable"),
    ],
)
def test_unavailable_is_one_critical_finding(error, check):
    (only,) = rd.diagnose(
        {"available": False, "error": error, "server": {"address": "127.0.0.1:6379"}}, PARAMS
    )
    assert only["severity"] == "critical" and only["check"] == check and only["evidence"] == error
    assert "127.0.0.1:6379" in only["summary"]


def test_password_option_is_no_log():
    assert rd.argument_spec()["password"]["no_log"] is True
