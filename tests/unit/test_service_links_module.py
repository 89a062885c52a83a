"""auditlog.ops.service_links' pure logic: SCRAM-SHA-256 (RFC 7677's example), the PostgreSQL
messages, a whole login against a scripted fake server, RESP AUTH/PING, NATS server strings,
certificate summaries and the findings of a link's facts. No server."""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import socket
import struct
import threading

import pytest
from ansible_collections.auditlog.ops.plugins.module_utils import links, pg_wire

# RFC 7677 section 3: user "user", password "pencil".
RFC_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_scram_client_matches_rfc7677():
    client = pg_wire.ScramClient("pencil", user="user", nonce=RFC_NONCE)
    assert client.client_first() == "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    assert client.client_final(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    assert client.verify_server_final(RFC_SERVER_FINAL)


def test_scram_rejects_a_forged_server_signature_and_a_foreign_nonce():
    client = pg_wire.ScramClient("pencil", user="user", nonce=RFC_NONCE)
    client.client_final(RFC_SERVER_FIRST)
    with pytest.raises(pg_wire.PgProtocolError, match="signature"):
        client.verify_server_final("v=" + base64.b64encode(b"x" * 32).decode())
    other = pg_wire.ScramClient("pencil", user="user", nonce="another-nonce")
    with pytest.raises(pg_wire.PgProtocolError, match="server-first"):
        other.client_final(RFC_SERVER_FIRST)
    with pytest.raises(pg_wire.PgProtocolError, match="invalid-proof"):
        client.verify_server_final("e=invalid-proof")


def test_md5_password_is_libpqs():
    inner = hashlib.md5(b"secretaudit_user").hexdigest()  # noqa: S324
    expected = "md5" + hashlib.md5(inner.encode() + b"abcd").hexdigest()  # noqa: S324
    assert pg_wire.md5_password("audit_user", "secret", b"abcd") == expected


def test_startup_and_ssl_request_bytes():
    assert pg_wire.ssl_request() == struct.pack("!ii", 8, 80877103)
    msg = pg_wire.startup_message("audit_user", "audit_logs")
    (length,) = struct.unpack("!i", msg[:4])
    assert length == len(msg)
    assert msg[4:8] == struct.pack("!i", 196608)
    assert b"user\0audit_user\0database\0audit_logs\0" in msg and msg.endswith(b"\0\0")


def test_error_response_fields():
    payload = b'SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user "audit_user"\0Fauth.c\0\0'
    fields = pg_wire.parse_error_fields(payload)
    assert fields["severity"] == "FATAL" and fields["code"] == "28P01"
    assert fields["message"] == 'password authentication failed for user "audit_user"'


# -- a whole login against a scripted server -----------------------------------------------------------


def _backend(kind, payload):
    return kind + struct.pack("!i", len(payload) + 4) + payload


def _read_frontend(sock, typed=True):
    head = sock.recv(5 if typed else 4, socket.MSG_WAITALL)
    length = struct.unpack("!i", head[1:5] if typed else head)[0]
    body = sock.recv(length - 4, socket.MSG_WAITALL) if length > 4 else b""
    return head[:1], body


def _scram_server(sock, password, fail=False):
    """A server that asks for SCRAM-SHA-256 and checks the proof with the RFC's formulas."""
    _read_frontend(sock, typed=False)  # StartupMessage
    sock.sendall(_backend(b"R", struct.pack("!i", 10) + b"SCRAM-SHA-256\0\0"))
    _kind, body = _read_frontend(sock)
    mech, rest = body.split(b"\0", 1)
    assert mech == b"SCRAM-SHA-256"
    client_first = rest[4:].decode()
    client_nonce = client_first.split("r=", 1)[1]
    salt, iterations = b"saltsalt", 4096
    server_first = f"r={client_nonce}SERVER,s={base64.b64encode(salt).decode()},i={iterations}"
    sock.sendall(_backend(b"R", struct.pack("!i", 11) + server_first.encode()))
    _kind, final = _read_frontend(sock)
    final = final.decode()
    without_proof, proof = final.rsplit(",p=", 1)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    auth = f"{client_first[3:]},{server_first},{without_proof}"
    signature = hmac.new(stored, auth.encode(), "sha256").digest()
    recovered = bytes(a ^ b for a, b in zip(base64.b64decode(proof), signature, strict=True))
    if fail or hashlib.sha256(recovered).digest() != stored:
        err = b'SFATAL\0VFATAL\0C28P01\0Mpassword authentication failed for user "audit_user"\0\0'
        sock.sendall(_backend(b"E", err))
        return
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    verifier = base64.b64encode(hmac.new(server_key, auth.encode(), "sha256").digest())
    sock.sendall(_backend(b"R", struct.pack("!i", 12) + b"v=" + verifier))
    sock.sendall(_backend(b"R", struct.pack("!i", 0)))
    sock.sendall(_backend(b"S", b"server_version\x0016.4\0"))
    sock.sendall(_backend(b"K", struct.pack("!ii", 1, 2)))
    sock.sendall(_backend(b"Z", b"I"))
    _read_frontend(sock)  # SELECT 1
    sock.sendall(_backend(b"T", b"\0\1?column?\0" + b"\0" * 18))
    sock.sendall(_backend(b"D", struct.pack("!hi", 1, 1) + b"1"))
    sock.sendall(_backend(b"C", b"SELECT 1\0"))
    sock.sendall(_backend(b"Z", b"I"))


def _login(password, server_password, fail=False):
    client_sock, server_sock = socket.socketpair()
    thread = threading.Thread(target=_scram_server, args=(server_sock, server_password, fail), daemon=True)
    thread.start()
    try:
        conn = pg_wire.PgConnection(client_sock.sendall, client_sock.recv)
        conn.login("audit_user", "audit_logs", password)
        return conn, conn.select_one()
    finally:
        thread.join(5)
        client_sock.close()
        server_sock.close()


def test_scram_login_and_select_one():
    conn, value = _login("s3cret", "s3cret")
    assert value == "1" and conn.auth_method == "scram-sha-256"
    assert conn.parameters["server_version"] == "16.4"


def test_a_wrong_password_raises_the_servers_error():
    with pytest.raises(pg_wire.PgServerError) as info:
        _login("wrong", "s3cret")
    assert info.value.code == "28P01"
    assert info.value.message == 'password authentication failed for user "audit_user"'


# -- Redis and NATS ----------------------------------------------------------------------------------


def test_resp_error():
    assert links.resp_error("WRONGPASS invalid username-password pair or user is disabled.") == {
        "code": "WRONGPASS",
        "message": "invalid username-password pair or user is disabled.",
    }
    assert links.resp_error("something odd")["code"] is None


def _redis_replies(replies):
    client, server = socket.socketpair()

    def serve():
        for reply in replies:
            server.recv(4096)
            server.sendall(reply)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return client, server, thread


def test_redis_auth_ping():
    client, server, thread = _redis_replies([b"+OK\r\n", b"+PONG\r\n"])
    assert links.redis_auth_ping(client, "audit-service", "pw") == "PONG"
    thread.join(5)
    client, server, thread = _redis_replies([b"-WRONGPASS invalid username-password pair\r\n"])
    with pytest.raises(links.StageError) as info:
        links.redis_auth_ping(client, "audit-service", "bad")
    assert info.value.stage == "auth" and info.value.server_error["code"] == "WRONGPASS"
    client, server, thread = _redis_replies([b"-NOAUTH Authentication required.\r\n"])
    with pytest.raises(links.StageError) as info:
        links.redis_auth_ping(client, None, None)
    assert info.value.server_error == {"code": "NOAUTH", "message": "Authentication required."}
    # A full server says so on accept: the connection is refused, not the login.
    client, server, thread = _redis_replies([b"-ERR max number of clients reached\r\n"])
    with pytest.raises(links.StageError) as info:
        links.redis_auth_ping(client, "audit-service", "pw")
    assert info.value.stage == "connect"
    # Not a Redis server at all.
    client, server, thread = _redis_replies([b"HTTP/1.1 400 Bad Request\r\n"])
    with pytest.raises(links.StageError, match="not a Redis reply"):
        links.redis_auth_ping(client, "audit-service", "pw")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mq1:4222", ("mq1", 4222)),
        ("nats://mq1:4333", ("mq1", 4333)),
        ("tls://user:pw@mq1:4222", ("mq1", 4222)),
        ("mq1", ("mq1", 4222)),
        ("[::1]:4223", ("::1", 4223)),
    ],
)
def test_parse_server(text, expected):
    assert links.parse_server(text) == expected


def test_parse_server_rejects_a_bad_port():
    with pytest.raises(ValueError, match="bad port"):
        links.parse_server("mq1:port")


def test_nats_auth_violation_is_the_server_error():
    client, server = socket.socketpair()

    def serve():
        server.sendall(b'INFO {"server_name":"mq1","version":"2.9.10","headers":true}\r\n')
        server.recv(4096)
        server.sendall(b"-ERR 'Authorization Violation'\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    nats = links.StagedNatsClient("mq1", 4222, "audit", "bad", 5, sock=client)
    facts = links.new_facts("nats", "mq1", 4222)
    with pytest.raises(links.StageError) as info:
        nats.handshake(False, None, facts)
    assert info.value.stage == "auth"
    assert info.value.server_error == {"code": None, "message": "Authorization Violation"}
    assert facts["server"]["server_name"] == "mq1"
    thread.join(5)


# -- certificates and findings ----------------------------------------------------------------------------


def test_cert_summary():
    cert = {
        "subject": ((("commonName", "db1"),),),
        "issuer": ((("commonName", "lab CA"),),),
        "subjectAltName": (("DNS", "db1"), ("IP Address", "10.0.0.5")),
        "notAfter": "Dec 11 12:00:00 2026 GMT",
    }
    now = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
    info = links.cert_summary(cert, True, "TLSv1.3", "TLS_AES_256_GCM_SHA384", now)
    assert info["subject"] == "commonName=db1" and info["issuer"] == "commonName=lab CA"
    assert info["names"] == ["db1", "10.0.0.5"]
    assert info["not_after"] == "2026-12-11T12:00:00Z" and info["days_left"] == 10.0


def _facts(link="postgres", **kw):
    facts = links.new_facts(link, "db1", 5432)
    facts.update(
        available=True, stage_failed="none", connect_ms=1.0, user="audit_user", database="audit_logs"
    )
    facts.update(kw)
    return facts


def test_a_healthy_link_has_no_findings():
    assert links.link_findings("postgres", _facts(), 200, 14) == []


def test_a_failing_link_is_critical_naming_host_stage_and_server_error():
    facts = _facts(
        available=False,
        stage_failed="auth",
        error="...",
        server_error={"code": "28P01", "message": 'password authentication failed for user "audit_user"'},
    )
    (found,) = links.link_findings("postgres", facts, 200, 14)
    assert found["severity"] == "critical" and found["component"] == "postgresql"
    assert found["check"] == "link_auth"
    assert "db1:5432" in found["summary"] and "fails at auth" in found["summary"]
    assert '28P01 password authentication failed for user "audit_user"' in found["summary"]
    assert found["evidence"]["server_error"]["code"] == "28P01"


def test_slow_connect_and_expiring_certificate_are_warnings():
    facts = _facts(connect_ms=350.0, tls={"days_left": 3.5, "subject": "commonName=db1", "not_after": "x"})
    checks = {f["check"]: f["severity"] for f in links.link_findings("postgres", facts, 200, 14)}
    assert checks == {"link_latency": "warning", "tls_expiry": "warning"}
    facts["tls"]["days_left"] = -1
    checks = {f["check"]: f["severity"] for f in links.link_findings("postgres", facts, 1000, 14)}
    assert checks == {"tls_expiry": "critical"}


def test_each_failing_nats_server_is_critical_with_how_many_answer():
    up = _facts("nats", host="mq1", port=4222)
    down = _facts("nats", host="mq2", port=4222, available=False, stage_failed="connect", error="refused")
    link = dict(up, servers=[up, down])
    (found,) = links.link_findings("nats", link, 200, 14)
    assert found["severity"] == "critical" and found["check"] == "link_connect"
    assert "mq2:4222" in found["summary"] and found["summary"].endswith("(1 of 2 servers answer)")
    refused = _facts(
        "nats",
        host="mq2",
        available=False,
        stage_failed="auth",
        server_error={"code": None, "message": "Authorization Violation"},
    )
    (found,) = links.link_findings("nats", dict(up, servers=[up, refused]), 200, 14)
    assert found["severity"] == "critical" and "Authorization Violation" in found["summary"]
    alone = dict(down, servers=[down], available=False)
    (found,) = links.link_findings("nats", alone, 200, 14)
    assert found["severity"] == "critical" and "servers answer" not in found["summary"]


def test_an_unresolvable_host_stops_at_resolve():
    facts = links.probe_redis(
        {"host": "no-such-host.invalid", "port": 6379, "user": None, "password": None}, 2
    )
    assert facts["available"] is False and facts["stage_failed"] == "resolve"
    assert "no-such-host.invalid" in facts["error"]


def test_a_closed_port_stops_at_connect():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    facts = links.probe_postgres(
        {
            "host": "127.0.0.1",
            "port": port,
            "user": "u",
            "password": "p",
            "database": "d",
            "ssl_mode": "disable",
        },
        2,
    )
    assert facts["stage_failed"] == "connect" and "refused" in facts["error"].lower()
