# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""A minimal Redis client for modules: RESP2 over a socket (TCP or TLS), standard library only.

Target hosts have no redis-py, so the modules speak the protocol themselves: commands go out as
arrays of bulk strings, replies come back as simple strings, errors, integers, bulk strings and
arrays (https://redis.io/docs/latest/develop/reference/protocol-spec/). Also here: the parsers
of INFO and CONFIG GET replies, shared by the modules and their unit tests.
"""

import socket

from ansible_collections.auditlog.ops.plugins.module_utils import tls


def redis_common_argument_spec():
    """The connection options every Redis module takes (documented in doc_fragments/redis.py)."""
    return dict(
        server_host=dict(type="str", default="127.0.0.1", aliases=["host", "login_host"]),
        server_port=dict(type="int", default=6379, aliases=["port", "login_port"]),
        user=dict(type="str", default="audit-admin", aliases=["login_user"]),
        password=dict(type="str", no_log=True, aliases=["login_password"]),
        timeout=dict(type="float", default=5.0),
        tls=dict(type="bool", default=False),
        ca_file=dict(type="path"),
        client_cert=dict(type="path"),
        client_key=dict(type="path"),
    )


def client_from_params(params):
    return RedisClient(
        host=params["server_host"],
        port=params["server_port"],
        user=params["user"] or None,
        password=params["password"],
        timeout=params["timeout"],
        tls=params["tls"],
        ca_file=params["ca_file"],
        client_cert=params["client_cert"],
        client_key=params["client_key"],
    )


class RedisError(Exception):
    """Anything that went wrong talking to Redis, with a message fit for an operator."""


class RedisConnectionError(RedisError):
    """The server could not be reached, or refused the login."""


class RedisReplyError(RedisError):
    """The server answered a command with an error (-ERR, -NOPERM, -WRONGTYPE ...)."""

    def __init__(self, message):
        self.message = message
        self.kind = message.split(" ", 1)[0] if message else ""
        super().__init__(message)


class ProtocolError(RedisError):
    """A reply that is not RESP."""


# -- RESP ----------------------------------------------------------------------------------------


def _bytes(value):
    if isinstance(value, bytes):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value).encode("ascii")
    return str(value).encode("utf-8")


def encode_command(*args):
    """A command as RESP: *<n> then $<len> <bytes> per argument."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = _bytes(arg)
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class RespReader:
    """Decodes replies from a byte source: read(n) / readline() of a buffer over the socket."""

    def __init__(self, fill):
        self._fill = fill  # returns more bytes, b"" at end of stream
        self._buf = b""

    def feed(self, data):
        self._buf += data

    def _more(self):
        chunk = self._fill()
        if not chunk:
            raise RedisConnectionError("the server closed the connection")
        self._buf += chunk

    def _line(self):
        while b"\r\n" not in self._buf:
            self._more()
        line, self._buf = self._buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self._buf) < n + 2:
            self._more()
        data, self._buf = self._buf[:n], self._buf[n + 2 :]
        return data

    def read(self):
        """One reply: str for simple strings, int, bytes or None for bulk, list for arrays.

        An error reply is returned as a RedisReplyError instance (not raised), so that a reply
        nested in an array stays in place; RedisClient.command raises it.
        """
        line = self._line()
        if not line:
            raise ProtocolError("an empty line where a reply was expected")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode("utf-8", "replace")
        if kind == b"-":
            return RedisReplyError(rest.decode("utf-8", "replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            length = int(rest)
            return None if length < 0 else self._exact(length)
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.read() for _ in range(count)]
        raise ProtocolError(f"not a RESP2 reply: {line[:80]!r}")


def text(value):
    """A reply as text (bulk strings are bytes)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, list):
        return [text(v) for v in value]
    return value


def parse_info(raw):
    """INFO's text -> {section: {field: value}}; numbers become int or float, keyspace lines dicts.

    "db0:keys=12,expires=3,avg_ttl=500" -> {"db0": {"keys": 12, "expires": 3, "avg_ttl": 500}}.
    """
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    sections = {}
    current = sections.setdefault("default", {})
    for line in raw.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("#"):
            current = sections.setdefault(line.lstrip("# ").strip().lower(), {})
            continue
        if ":" not in line:
            continue
        key, value = line.split(":", 1)
        parts = value.split(",")
        if "=" in value and all("=" in part for part in parts):
            current[key] = dict((k, _number(v)) for k, v in (part.split("=", 1) for part in parts))
        else:
            current[key] = _number(value)
    if not sections["default"]:
        del sections["default"]
    return sections


def _number(value):
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def parse_config(reply):
    """CONFIG GET's flat [name, value, name, value ...] -> {name: value} (text)."""
    items = text(reply) or []
    return dict(zip(items[::2], items[1::2], strict=False))


# -- the client ------------------------------------------------------------------------------------


class RedisClient:
    """One connection to one server; use as a context manager."""

    def __init__(
        self,
        host="127.0.0.1",
        port=6379,
        user=None,
        password=None,
        timeout=5.0,
        tls=False,
        ca_file=None,
        client_cert=None,
        client_key=None,
    ):
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.timeout = timeout
        self.tls = bool(tls or ca_file or client_cert)
        self.ca_file = ca_file
        self.client_cert = client_cert
        self.client_key = client_key
        self.sock = None
        self.reader = None

    @property
    def address(self):
        return f"{self.host}:{self.port}"

    def connect(self):
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except (TimeoutError, OSError) as exc:
            raise RedisConnectionError(f"cannot connect to Redis at {self.address}: {exc}") from None
        sock.settimeout(self.timeout)
        if self.tls:
            sock = self._wrap(sock)
        self.sock = sock
        self.reader = RespReader(self._recv)
        try:
            self._login()
        except RedisReplyError as exc:
            self.close()
            if "max number of clients" in exc.message:
                # Sent on accept, before any command is read: the server is full, not the login wrong.
                raise RedisConnectionError(
                    f"Redis at {self.address} rejected the connection: {exc.message} (maxclients)"
                ) from None
            raise RedisConnectionError(f"Redis at {self.address}: {exc.message}") from None
        return self

    def _login(self):
        if self.password is not None:
            args = ("AUTH", self.user, self.password) if self.user else ("AUTH", self.password)
            try:
                self.command(*args)
            except RedisReplyError as exc:
                if "max number of clients" in exc.message:
                    raise
                self.close()
                raise RedisConnectionError(
                    "Redis at {} refused the login{}: {}".format(
                        self.address, f" of user {self.user!r}" if self.user else "", exc.message
                    )
                ) from None
        self.command("PING")

    def _wrap(self, sock):
        try:
            context = tls.client_context(self.ca_file, self.client_cert, self.client_key)
            return tls.wrap(sock, context, self.host, f"Redis at {self.address}")
        except tls.TLSError as exc:
            sock.close()
            raise RedisConnectionError(str(exc)) from None

    def _recv(self):
        try:
            return self.sock.recv(65536)
        except TimeoutError:
            raise RedisConnectionError(
                f"Redis at {self.address} sent no reply within {self.timeout}s"
            ) from None
        except OSError as exc:
            raise RedisConnectionError(f"Redis at {self.address}: receive failed: {exc}") from None

    def command(self, *args):
        """Send one command, return its reply; an error reply raises RedisReplyError."""
        try:
            self.sock.sendall(encode_command(*args))
        except OSError as exc:
            raise RedisConnectionError(f"Redis at {self.address}: send failed: {exc}") from None
        reply = self.reader.read()
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    def info(self, section=None):
        return parse_info(self.command("INFO", section) if section else self.command("INFO"))

    def config_get(self, *names):
        """CONFIG GET of each name (one call per name: Redis 6 takes only one pattern)."""
        out = {}
        for name in names:
            out.update(parse_config(self.command("CONFIG", "GET", name)))
        return out

    def scan(self, pattern, count=1000, db=None):
        """The keys matching pattern, one SCAN page at a time: (keys as str, whether it was the last
        page). Never KEYS, which blocks the server."""
        if db is not None:
            self.command("SELECT", db)
        cursor = b"0"
        while True:
            reply = self.command("SCAN", cursor, "MATCH", pattern, "COUNT", count)
            cursor, keys = reply[0], reply[1]
            last = cursor in (b"0", "0")
            yield [text(key) for key in keys], last
            if last:
                return

    def scan_count(self, pattern, count=1000, max_keys=None, db=None):
        """How many keys match pattern (SCAN MATCH), with the keys counted per prefix.

        Returns (matched, {prefix: n}, complete): prefix is the key's first two ':' fields;
        complete is false when max_keys matched keys were counted before the scan finished.
        """
        matched = 0
        prefixes = {}
        for keys, last in self.scan(pattern, count, db):
            for key in keys:
                matched += 1
                prefix = ":".join(key.split(":")[:2])
                prefixes[prefix] = prefixes.get(prefix, 0) + 1
            if not last and max_keys is not None and matched >= max_keys:
                return matched, prefixes, False
        return matched, prefixes, True

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
