"""auditlog.ops.nats_stream: the NATS protocol client and the stream logic, without a server.

The client is driven over a socketpair by a scripted fake server (a thread), so the framing of
INFO / CONNECT / PING, SUB / PUB and MSG / HMSG replies is checked byte for byte. The module's
decision (`ensure`) runs against an in-memory fake client.
"""

from __future__ import annotations

import json
import socket
import threading

import pytest
from ansible_collections.auditlog.ops.plugins.module_utils import nats_api
from ansible_collections.auditlog.ops.plugins.modules import nats_stream

NS = 1_000_000_000

SERVICE_STREAM = {
    "name": "audit-logs",
    "subjects": ["audit.logs.>"],
    "storage": "file",
    "retention": "limits",
    "discard": "old",
    "max_age": 7 * 86400,
    "duplicate_window": 120,
    "max_bytes": None,
    "max_msgs": None,
    "max_msg_size": None,
    "replicas": 1,
    "state": "present",
}

SERVER_CONFIG = {
    "name": "audit-logs",
    "subjects": ["audit.logs.>"],
    "retention": "limits",
    "storage": "file",
    "discard": "old",
    "max_age": 7 * 86400 * NS,
    "duplicate_window": 120 * NS,
    "max_bytes": -1,
    "max_msgs": -1,
    "max_msg_size": -1,
    "max_consumers": -1,
    "num_replicas": 1,
    "sealed": False,
}


# -- pure configuration logic ----------------------------------------------------------------------


def test_wanted_config_converts_seconds_to_nanoseconds_and_skips_unset():
    cfg = nats_api.wanted_config(SERVICE_STREAM)
    assert cfg == {
        "name": "audit-logs",
        "subjects": ["audit.logs.>"],
        "storage": "file",
        "retention": "limits",
        "discard": "old",
        "max_age": 604800 * NS,
        "duplicate_window": 120 * NS,
        "num_replicas": 1,
    }
    assert "max_bytes" not in cfg


def test_fractional_seconds_survive_the_round_trip():
    cfg = nats_api.wanted_config({"name": "s", "duplicate_window": 0.5})
    assert cfg["duplicate_window"] == 500_000_000
    assert nats_api.config_for_module(cfg) == {"duplicate_window": 0.5}


def test_no_diff_when_server_matches():
    wanted = nats_api.wanted_config(SERVICE_STREAM)
    assert nats_api.config_diff(SERVER_CONFIG, wanted) == {"before": {}, "after": {}}


def test_subject_order_is_not_a_difference():
    wanted = nats_api.wanted_config(dict(SERVICE_STREAM, subjects=["b.>", "a.>"]))
    current = dict(SERVER_CONFIG, subjects=["a.>", "b.>"])
    assert nats_api.config_diff(current, wanted)["after"] == {}


def test_diff_lists_only_differing_fields_in_module_units():
    wanted = nats_api.wanted_config(SERVICE_STREAM)
    current = dict(SERVER_CONFIG, max_age=86400 * NS, num_replicas=3)
    assert nats_api.config_diff(current, wanted) == {
        "before": {"max_age": 86400, "replicas": 3},
        "after": {"max_age": 604800, "replicas": 1},
    }


def test_merged_config_keeps_unmanaged_fields():
    wanted = nats_api.wanted_config(dict(SERVICE_STREAM, max_age=3600))
    merged = nats_api.merged_config(SERVER_CONFIG, wanted)
    assert merged["max_age"] == 3600 * NS
    assert merged["max_consumers"] == -1 and merged["sealed"] is False


def test_connect_line_carries_credentials_and_headers():
    line = nats_api.encode_connect("audit", "s3cret", headers=True)
    assert line.startswith(b"CONNECT ") and line.endswith(b"\r\n")
    options = json.loads(line[len(b"CONNECT ") :])
    assert options["user"] == "audit" and options["pass"] == "s3cret"
    assert options["verbose"] is False and options["headers"] is True and options["no_responders"] is True


def test_parse_status():
    assert nats_api.parse_status(b"NATS/1.0 503\r\n\r\n") == 503
    assert nats_api.parse_status(b"NATS/1.0\r\nNats-Msg-Id: x\r\n\r\n") is None


def test_argument_spec_marks_password_no_log():
    spec = nats_stream.argument_spec()
    assert spec["password"]["no_log"] is True
    assert spec["server_host"]["default"] == "127.0.0.1" and spec["server_port"]["default"] == 4222
    assert set(spec["retention"]["choices"]) == {"limits", "interest", "workqueue"}


# -- the module's decision, against a fake client ---------------------------------------------------


class FakeClient:
    def __init__(self, config=None):
        self.config = dict(config) if config else None
        self.calls = []

    def stream_info(self, name):
        self.calls.append(("info", name))
        return None if self.config is None else {"type": "x", "config": dict(self.config), "state": {}}

    def stream_create(self, config):
        self.calls.append(("create", config))
        self.config = dict(config)
        return {"config": dict(config), "state": {}}

    def stream_update(self, config):
        self.calls.append(("update", config))
        self.config = dict(config)
        return {"config": dict(config), "state": {}}

    def stream_delete(self, name):
        self.calls.append(("delete", name))
        self.config = None
        return {"success": True}


def _writes(client):
    return [c for c in client.calls if c[0] != "info"]


def test_ensure_creates_a_missing_stream():
    client = FakeClient()
    result = nats_stream.ensure(client, SERVICE_STREAM, check_mode=False)
    assert result["changed"] and result["operation"] == "create"
    assert result["diff"]["before"] == {} and result["diff"]["after"]["max_age"] == 604800
    assert _writes(client)[0][0] == "create"
    assert result["stream"]["config"]["name"] == "audit-logs"


def test_ensure_is_idempotent():
    client = FakeClient(SERVER_CONFIG)
    result = nats_stream.ensure(client, SERVICE_STREAM, check_mode=False)
    assert not result["changed"] and result["operation"] == "none"
    assert _writes(client) == []
    assert "type" not in result["stream"]


def test_ensure_updates_with_diff():
    client = FakeClient(dict(SERVER_CONFIG, duplicate_window=60 * NS))
    result = nats_stream.ensure(client, SERVICE_STREAM, check_mode=False)
    assert result["changed"] and result["operation"] == "update"
    assert result["diff"] == {"before": {"duplicate_window": 60}, "after": {"duplicate_window": 120}}
    sent = _writes(client)[0][1]
    assert sent["duplicate_window"] == 120 * NS and sent["max_consumers"] == -1


@pytest.mark.parametrize("config", [None, dict(SERVER_CONFIG, max_age=1)])
def test_check_mode_changes_nothing(config):
    client = FakeClient(config)
    result = nats_stream.ensure(client, SERVICE_STREAM, check_mode=True)
    assert result["changed"]
    assert _writes(client) == []


def test_absent_deletes_and_check_mode_does_not():
    params = dict(SERVICE_STREAM, state="absent")
    client = FakeClient(SERVER_CONFIG)
    assert nats_stream.ensure(client, params, check_mode=True)["operation"] == "delete"
    assert _writes(client) == []
    result = nats_stream.ensure(client, params, check_mode=False)
    assert result["changed"] and result["diff"]["after"] == {} and result["stream"] == {}
    assert _writes(client) == [("delete", "audit-logs")]
    assert not nats_stream.ensure(client, params, check_mode=False)["changed"]


# -- the protocol, against a scripted fake server ----------------------------------------------------


class FakeServer(threading.Thread):
    """Speaks the server side over a socketpair; `script(rfile, sock)` does the talking."""

    def __init__(self, script):
        super().__init__(daemon=True)
        self.server_sock, self.client_sock = socket.socketpair()
        self.script = script
        self.received = []
        self.error = None

    def run(self):
        rfile = self.server_sock.makefile("rb")
        try:
            self.script(self, rfile, self.server_sock)
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            rfile.close()
            self.server_sock.close()

    def readline(self, rfile):
        line = rfile.readline().decode()
        self.received.append(line)
        return line


INFO = b'INFO {"server_id":"X","version":"2.9.10","headers":true,"jetstream":true,"auth_required":true}\r\n'


def _handshake(server, rfile, sock, answer=b"PONG\r\n"):
    sock.sendall(INFO)
    connect = server.readline(rfile)
    assert connect.startswith("CONNECT ")
    assert server.readline(rfile) == "PING\r\n"
    sock.sendall(answer)
    return json.loads(connect[len("CONNECT ") :])


def _read_request(server, rfile):
    sub = server.readline(rfile).split()
    unsub = server.readline(rfile).split()
    pub = server.readline(rfile).split()
    payload = rfile.read(int(pub[3]) + 2)[:-2]
    assert sub[0] == "SUB" and unsub == ["UNSUB", sub[2], "1"] and pub[0] == "PUB" and pub[2] == sub[1]
    return sub[1], sub[2], pub[1], payload


def _client(server):
    return nats_api.NatsClient(
        host="fake", port=4222, user="audit", password="pw", timeout=2, sock=server.client_sock
    )


def test_request_reply_with_msg_and_interleaved_ping():
    def script(server, rfile, sock):
        options = _handshake(server, rfile, sock)
        assert options["user"] == "audit" and options["pass"] == "pw"
        inbox, sid, subject, payload = _read_request(server, rfile)
        assert subject == "$JS.API.STREAM.CREATE.audit-logs"
        assert json.loads(payload)["name"] == "audit-logs"
        body = json.dumps({"config": {"name": "audit-logs"}, "did_create": True}).encode()
        # A server PING first (the client must answer PONG), then a message for another sid.
        sock.sendall(b"PING\r\n")
        assert server.readline(rfile) == "PONG\r\n"
        sock.sendall(b"MSG other 99 2\r\nno\r\n")
        sock.sendall(b"MSG %s %s %d\r\n%s\r\n" % (inbox.encode(), sid.encode(), len(body), body))

    server = FakeServer(script)
    server.start()
    with _client(server) as client:
        assert client.server_info["version"] == "2.9.10"
        reply = client.stream_create({"name": "audit-logs", "subjects": ["audit.logs.>"]})
    server.join(5)
    assert server.error is None, server.error
    assert reply["did_create"] is True


def test_stream_info_not_found_is_none_via_hmsg():
    def script(server, rfile, sock):
        _handshake(server, rfile, sock)
        inbox, sid, subject, _ = _read_request(server, rfile)
        assert subject == "$JS.API.STREAM.INFO.audit-logs"
        body = json.dumps(
            {"error": {"code": 404, "err_code": 10059, "description": "stream not found"}}
        ).encode()
        headers = b"NATS/1.0\r\n\r\n"
        sock.sendall(
            b"HMSG %s %s %d %d\r\n%s%s\r\n"
            % (inbox.encode(), sid.encode(), len(headers), len(headers) + len(body), headers, body)
        )

    server = FakeServer(script)
    server.start()
    with _client(server) as client:
        assert client.stream_info("audit-logs") is None
    server.join(5)
    assert server.error is None, server.error


def test_other_api_errors_raise_with_description():
    def script(server, rfile, sock):
        _handshake(server, rfile, sock)
        inbox, sid, _, _ = _read_request(server, rfile)
        body = json.dumps(
            {
                "error": {
                    "code": 500,
                    "err_code": 10052,
                    "description": "stream configuration update can not change storage type",
                }
            }
        ).encode()
        sock.sendall(b"MSG %s %s %d\r\n%s\r\n" % (inbox.encode(), sid.encode(), len(body), body))

    server = FakeServer(script)
    server.start()
    with _client(server) as client, pytest.raises(nats_api.JetStreamApiError, match="storage type"):
        client.stream_update({"name": "audit-logs", "storage": "memory"})
    server.join(5)


def test_no_responders_says_jetstream_is_missing():
    def script(server, rfile, sock):
        _handshake(server, rfile, sock)
        inbox, sid, _, _ = _read_request(server, rfile)
        headers = b"NATS/1.0 503\r\n\r\n"
        sock.sendall(
            b"HMSG %s %s %d %d\r\n%s\r\n"
            % (inbox.encode(), sid.encode(), len(headers), len(headers), headers)
        )

    server = FakeServer(script)
    server.start()
    with _client(server) as client, pytest.raises(nats_api.NatsError, match="no responders.*JetStream"):
        client.stream_info("audit-logs")
    server.join(5)


def test_authorization_violation_is_a_connection_error_naming_the_user():
    def script(server, rfile, sock):
        _handshake(server, rfile, sock, answer=b"-ERR 'Authorization Violation'\r\n")

    server = FakeServer(script)
    server.start()
    with pytest.raises(
        nats_api.NatsConnectionError, match=r"fake:4222 refused .*'audit'.*Authorization Violation"
    ):
        _client(server).connect()
    server.join(5)


def test_unreachable_server_names_host_and_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = nats_api.NatsClient(host="127.0.0.1", port=port, timeout=2)
    with pytest.raises(nats_api.NatsConnectionError, match=f"cannot connect to NATS at 127.0.0.1:{port}"):
        client.connect()
