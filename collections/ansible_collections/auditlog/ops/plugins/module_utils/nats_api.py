# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""A minimal NATS client for modules: the text protocol over a socket, standard library only.

Target hosts have no nats-py and no PyPI, so the modules speak the protocol themselves. Only what
the JetStream API needs is here: INFO / CONNECT (user and password) / PING-PONG, then
request-reply (SUB on a private inbox, PUB with that inbox as reply subject, wait for MSG or
HMSG). See https://docs.nats.io/reference/reference-protocols/nats-protocol.

The second half holds the stream logic shared by the module and its unit tests: the wanted
configuration from module parameters, the comparison with the server's configuration, and the
merge that an update sends.
"""

import binascii
import json
import os
import socket

from ansible_collections.auditlog.ops.plugins.module_utils import tls

CLIENT_NAME = "ansible-auditlog-ops"
CLIENT_VERSION = "0.1.0"
NANOSECONDS = 1000000000
# JetStream API error code for "stream not found".
JS_ERR_STREAM_NOT_FOUND = 10059


def nats_common_argument_spec():
    """The connection options every NATS module takes (documented in doc_fragments/nats.py)."""
    return dict(
        server_host=dict(type="str", default="127.0.0.1", aliases=["host"]),
        server_port=dict(type="int", default=4222, aliases=["port"]),
        user=dict(type="str", default="audit", aliases=["login_user"]),
        password=dict(type="str", no_log=True, aliases=["login_password"]),
        timeout=dict(type="float", default=10.0),
        ca_file=dict(type="path"),
        client_cert=dict(type="path"),
        client_key=dict(type="path"),
    )


def client_from_params(params):
    """A NatsClient for the connection options of nats_common_argument_spec."""
    return NatsClient(
        host=params["server_host"],
        port=params["server_port"],
        user=params["user"],
        password=params["password"],
        timeout=params["timeout"],
        ca_file=params["ca_file"],
        client_cert=params["client_cert"],
        client_key=params["client_key"],
    )


class NatsError(Exception):
    """Anything that went wrong talking to NATS, with a message fit for an operator."""


class NatsConnectionError(NatsError):
    """The server could not be reached or refused the client (the module reports is_available)."""


class JetStreamApiError(NatsError):
    """The JetStream API answered with an error object."""

    def __init__(self, subject, error):
        self.subject = subject
        self.code = error.get("code")
        self.err_code = error.get("err_code")
        self.description = error.get("description", "")
        super().__init__(f"{subject}: {self.description} (code {self.code}, err_code {self.err_code})")


def encode_connect(user, password, headers=True, tls=False):
    """The CONNECT line. verbose off (no +OK per command); headers on, for no-responders."""
    options = {
        "verbose": False,
        "pedantic": False,
        "tls_required": tls,
        "name": CLIENT_NAME,
        "lang": "python-stdlib",
        "version": CLIENT_VERSION,
        "protocol": 1,
        "headers": headers,
        "no_responders": headers,
    }
    if user is not None:
        options["user"] = user
    if password is not None:
        options["pass"] = password
    return ("CONNECT {}\r\n".format(json.dumps(options, separators=(",", ":")))).encode("utf-8")


def parse_status(header_block):
    """The status code of an HMSG header block ("NATS/1.0 503\\r\\n..."), or None."""
    first = header_block.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    parts = first.split()
    if len(parts) >= 2 and parts[0].startswith("NATS/") and parts[1].isdigit():
        return int(parts[1])
    return None


class NatsClient:
    """One connection to one server; use as a context manager."""

    def __init__(
        self,
        host="127.0.0.1",
        port=4222,
        user=None,
        password=None,
        timeout=10.0,
        sock=None,
        ca_file=None,
        client_cert=None,
        client_key=None,
    ):
        self.host = host
        self.ca_file = ca_file
        self.client_cert = client_cert
        self.client_key = client_key
        self.port = port
        self.user = user
        self.password = password
        self.timeout = timeout
        self.sock = sock
        self.server_info = None
        self._buf = b""
        self._sid = 0

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    # -- connection -------------------------------------------------------------------------

    def connect(self):
        if self.sock is None:
            try:
                self.sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
            except (TimeoutError, OSError) as exc:
                raise NatsConnectionError(f"cannot connect to NATS at {self.address}: {exc}") from None
        self.sock.settimeout(self.timeout)
        try:
            line = self._readline()
        except TimeoutError:
            raise NatsConnectionError(
                f"NATS at {self.address} sent no INFO within {self.timeout}s: is it a NATS client port?"
            ) from None
        if not line.startswith("INFO "):
            raise NatsConnectionError(f"NATS at {self.address}: expected INFO, got {line[:80]!r}")
        try:
            self.server_info = json.loads(line[5:])
        except ValueError:
            raise NatsConnectionError(f"NATS at {self.address} sent an unreadable INFO line") from None
        # The server says INFO in plain text, then expects the TLS handshake when it requires TLS.
        tls = bool(self.server_info.get("tls_required")) or self.ca_file is not None
        if tls:
            self._start_tls()
        headers = bool(self.server_info.get("headers"))
        self._send(encode_connect(self.user, self.password, headers=headers, tls=tls) + b"PING\r\n")
        while True:
            line = self._readline()
            if line == "PONG":
                return self
            if line == "PING":
                self._send(b"PONG\r\n")
            elif line.startswith("-ERR"):
                raise NatsConnectionError(
                    "NATS at {} refused the connection for user {!r}: {}".format(
                        self.address, self.user, line[4:].strip().strip("'")
                    )
                )
            elif line in ("+OK",) or line.startswith("INFO "):
                continue
            else:
                raise NatsConnectionError(f"NATS at {self.address}: unexpected reply {line[:80]!r}")

    def _start_tls(self):
        try:
            context = tls.client_context(self.ca_file, self.client_cert, self.client_key)
            self.sock = tls.wrap(self.sock, context, self.host, f"NATS at {self.address}")
        except tls.TLSError as exc:
            raise NatsConnectionError(str(exc)) from None
        self._buf = b""

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            finally:
                self.sock = None

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()
        return False

    # -- request / reply ------------------------------------------------------------------------

    def request(self, subject, payload=b""):
        """Publish payload to subject and wait for one reply: (status or None, reply bytes)."""
        if isinstance(payload, str):
            payload = payload.encode("utf-8")
        self._sid += 1
        sid = str(self._sid)
        inbox = "_INBOX." + binascii.hexlify(os.urandom(11)).decode("ascii")
        # Auto-unsubscribe after one message, then publish with the inbox as reply subject.
        head = f"SUB {inbox} {sid}\r\nUNSUB {sid} 1\r\nPUB {subject} {inbox} {len(payload)}\r\n"
        self._send(head.encode("utf-8") + payload + b"\r\n")
        while True:
            try:
                line = self._readline()
            except TimeoutError:
                raise NatsError(
                    f"no reply to {subject} from NATS at {self.address} within {self.timeout}s"
                    " (is JetStream enabled?)"
                ) from None
            if line == "PING":
                self._send(b"PONG\r\n")
                continue
            if line == "+OK" or line == "PONG" or line.startswith("INFO "):
                continue
            if line.startswith("-ERR"):
                reason = line[4:].strip().strip("'")
                raise NatsError(f"NATS at {self.address}: {reason}")
            if line.startswith("MSG ") or line.startswith("HMSG "):
                status, body, msg_sid = self._read_message(line)
                if msg_sid != sid:
                    continue
                if status == 503:
                    raise NatsError(
                        f"no responders for {subject} on NATS at {self.address}:"
                        " is JetStream enabled for this user's account?"
                    )
                return status, body
            raise NatsError(f"NATS at {self.address}: unexpected line {line[:80]!r}")

    def _read_message(self, line):
        # MSG <subject> <sid> [reply-to] <#bytes>
        # HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>
        parts = line.split()
        if parts[0] == "MSG":
            sid = parts[2]
            total = int(parts[-1])
            header_len = 0
        else:
            sid = parts[2]
            header_len = int(parts[-2])
            total = int(parts[-1])
        data = self._read_exact(total + 2)[:total]
        status = parse_status(data[:header_len]) if header_len else None
        return status, data[header_len:], sid

    def js_request(self, subject, body=None):
        """A JetStream API call: JSON in, JSON out; an error object raises JetStreamApiError."""
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode("utf-8")
        _status, reply = self.request(subject, payload)
        try:
            data = json.loads(reply.decode("utf-8")) if reply else {}
        except ValueError:
            raise NatsError(
                f"unreadable reply to {subject} from NATS at {self.address}: {reply[:200]!r}"
            ) from None
        if isinstance(data, dict) and data.get("error"):
            raise JetStreamApiError(subject, data["error"])
        return data

    # -- JetStream streams ----------------------------------------------------------------------

    def stream_info(self, name):
        """The stream's info (config + state), or None when there is no such stream."""
        try:
            return self.js_request(f"$JS.API.STREAM.INFO.{name}")
        except JetStreamApiError as exc:
            if exc.err_code == JS_ERR_STREAM_NOT_FOUND or exc.code == 404:
                return None
            raise

    def stream_create(self, config):
        return self.js_request(f"$JS.API.STREAM.CREATE.{config['name']}", config)

    def stream_update(self, config):
        return self.js_request(f"$JS.API.STREAM.UPDATE.{config['name']}", config)

    def stream_delete(self, name):
        return self.js_request(f"$JS.API.STREAM.DELETE.{name}")

    # -- low level ----------------------------------------------------------------------------------

    def _send(self, data):
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise NatsConnectionError(f"NATS at {self.address}: send failed: {exc}") from None

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise
        except OSError as exc:
            raise NatsConnectionError(f"NATS at {self.address}: receive failed: {exc}") from None
        if not chunk:
            raise NatsConnectionError(f"NATS at {self.address} closed the connection")
        self._buf += chunk

    def _readline(self):
        while b"\r\n" not in self._buf:
            self._fill()
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def _read_exact(self, n):
        while len(self._buf) < n:
            self._fill()
        data, self._buf = self._buf[:n], self._buf[n:]
        return data


# -- stream configuration: module parameters <-> JetStream API ---------------------------------


# module option -> (API field, to_api, from_api). Durations are seconds in the module and
# nanoseconds in the API.
def _seconds_to_ns(value):
    return int(round(float(value) * NANOSECONDS))


def _ns_to_seconds(value):
    seconds = float(value or 0) / NANOSECONDS
    return int(seconds) if seconds == int(seconds) else seconds


def _same(value):
    return value


STREAM_FIELDS = (
    ("subjects", "subjects", list, list),
    ("storage", "storage", _same, _same),
    ("retention", "retention", _same, _same),
    ("discard", "discard", _same, _same),
    ("max_age", "max_age", _seconds_to_ns, _ns_to_seconds),
    ("duplicate_window", "duplicate_window", _seconds_to_ns, _ns_to_seconds),
    ("max_bytes", "max_bytes", int, int),
    ("max_msgs", "max_msgs", int, int),
    ("max_msg_size", "max_msg_size", int, int),
    ("replicas", "num_replicas", int, int),
)


def wanted_config(params):
    """The API configuration for the options that were given (None means: not managed)."""
    config = {"name": params["name"]}
    for option, field, to_api, _from_api in STREAM_FIELDS:
        value = params.get(option)
        if value is not None:
            config[field] = to_api(value)
    return config


def _normalise(field, value):
    if field == "subjects":
        return sorted(value or [])
    return value


def config_diff(current, wanted):
    """The managed fields that differ, in module units: {'before': {...}, 'after': {...}}."""
    before, after = {}, {}
    for option, field, _to_api, from_api in STREAM_FIELDS:
        if field not in wanted:
            continue
        have = current.get(field)
        if _normalise(field, have) != _normalise(field, wanted[field]):
            before[option] = from_api(have) if have is not None else None
            after[option] = from_api(wanted[field])
    return {"before": before, "after": after}


def merged_config(current, wanted):
    """What an update sends: the server's whole configuration with the wanted fields over it.

    STREAM.UPDATE replaces the configuration, so fields this module does not manage (max
    consumers, placement, ...) are sent back as they are.
    """
    config = dict(current)
    config.update(wanted)
    return config


def config_for_module(config):
    """A server configuration in module units (for the diff of a create or delete)."""
    out = {}
    for option, field, _to_api, from_api in STREAM_FIELDS:
        if field in config and config[field] is not None:
            out[option] = from_api(config[field])
    return out
