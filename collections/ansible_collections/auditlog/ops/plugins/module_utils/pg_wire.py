# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""The PostgreSQL frontend/backend protocol (version 3), as much as a login test needs.

App hosts have no psycopg2, so auditlog.ops.service_links logs in the way libpq does: SSLRequest,
StartupMessage, then the authentication the server asks for (SCRAM-SHA-256, md5 or cleartext),
then one ``SELECT 1``. The server's ErrorResponse is kept field by field (severity, SQLSTATE code,
message), which is what an operator needs: ``28P01 password authentication failed for user ...``.
See https://www.postgresql.org/docs/current/protocol-flow.html and RFC 5802 / RFC 7677 (SCRAM).

The message building and parsing and the SCRAM client are pure functions (unit-tested against
RFC 7677's example); PgConnection drives them over a socket.
"""

import base64
import contextlib
import hashlib
import hmac
import os
import struct

PROTOCOL_3_0 = 196608
SSL_REQUEST_CODE = 80877103
APPLICATION_NAME = "ansible-auditlog-ops"

# ErrorResponse / NoticeResponse field types -> names.
ERROR_FIELDS = {
    "S": "severity_local",
    "V": "severity",
    "C": "code",
    "M": "message",
    "D": "detail",
    "H": "hint",
    "P": "position",
    "W": "where",
    "F": "file",
    "L": "line",
    "R": "routine",
}

AUTH_OK, AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL, AUTH_SASL_CONTINUE, AUTH_SASL_FINAL = 0, 3, 5, 10, 11, 12
AUTH_NAMES = {2: "Kerberos V5", 6: "SCM credentials", 7: "GSSAPI", 8: "GSSAPI", 9: "SSPI"}


class PgProtocolError(Exception):
    """Something the server sent that this client cannot follow."""


class PgServerError(Exception):
    """The server's ErrorResponse: .fields holds severity, code, message (and detail, hint...)."""

    def __init__(self, fields):
        self.fields = fields
        self.code = fields.get("code")
        self.message = fields.get("message", "")
        super().__init__(
            f"{fields.get('severity') or fields.get('severity_local') or 'ERROR'}: {self.message}"
        )


# -- messages ------------------------------------------------------------------------------------


def ssl_request():
    return struct.pack("!ii", 8, SSL_REQUEST_CODE)


def startup_message(user, database, application_name=APPLICATION_NAME):
    params = b""
    for key, value in (("user", user), ("database", database), ("application_name", application_name)):
        params += key.encode() + b"\0" + str(value).encode("utf-8") + b"\0"
    body = struct.pack("!i", PROTOCOL_3_0) + params + b"\0"
    return struct.pack("!i", len(body) + 4) + body


def message(kind, payload):
    """A typed frontend message: its byte, int32 length (itself included), payload."""
    return kind + struct.pack("!i", len(payload) + 4) + payload


def password_message(text):
    return message(b"p", text.encode("utf-8") + b"\0")


def sasl_initial_response(mechanism, data):
    return message(b"p", mechanism.encode() + b"\0" + struct.pack("!i", len(data)) + data)


def sasl_response(data):
    return message(b"p", data)


def query_message(sql):
    return message(b"Q", sql.encode("utf-8") + b"\0")


def terminate_message():
    return message(b"X", b"")


def parse_error_fields(payload):
    """An ErrorResponse's (or NoticeResponse's) payload -> {severity, code, message, ...}."""
    fields = {}
    for part in payload.split(b"\0"):
        if not part:
            continue
        key = chr(part[0])
        fields[ERROR_FIELDS.get(key, key)] = part[1:].decode("utf-8", "replace")
    return fields


def parse_auth(payload):
    """An Authentication message's payload -> (code, data): data is the md5 salt, the SASL
    mechanisms (a list) or the SASL data, as the code says."""
    (code,) = struct.unpack("!i", payload[:4])
    rest = payload[4:]
    if code == AUTH_SASL:
        return code, [m.decode() for m in rest.split(b"\0") if m]
    return code, rest


def md5_password(user, password, salt):
    """md5 authentication's answer: 'md5' + md5(md5(password + user) + salt)."""
    inner = hashlib.md5((password + user).encode("utf-8")).hexdigest()  # noqa: S324 - the protocol's
    return "md5" + hashlib.md5(inner.encode("ascii") + salt).hexdigest()  # noqa: S324


# -- SCRAM-SHA-256 (RFC 5802, RFC 7677) -------------------------------------------------------------


class ScramClient:
    """The client side of one SCRAM-SHA-256 exchange without channel binding (gs2 header 'n,,').

    PostgreSQL ignores the SCRAM user name (it has the StartupMessage's), so it is sent empty, as
    libpq does. The password is used as given (no SASLprep: the deployment's passwords are ASCII).
    """

    GS2_HEADER = "n,,"

    def __init__(self, password, user="", nonce=None):
        self.password = password
        self.user = user
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode("ascii")
        self.client_first_bare = f"n={user},r={self.nonce}"
        self.salted_password = None
        self.auth_message = None

    def client_first(self):
        return self.GS2_HEADER + self.client_first_bare

    def client_final(self, server_first):
        """The client-final-message for the server-first-message (both str)."""
        attrs = _scram_attrs(server_first)
        if "e" in attrs:
            raise PgProtocolError(f"SCRAM error from the server: {attrs['e']}")
        nonce, salt, iterations = attrs.get("r", ""), attrs.get("s"), attrs.get("i")
        if not nonce.startswith(self.nonce) or salt is None or iterations is None:
            raise PgProtocolError(f"unexpected SCRAM server-first-message {server_first!r}")
        self.salted_password = hashlib.pbkdf2_hmac(
            "sha256", self.password.encode("utf-8"), base64.b64decode(salt), int(iterations)
        )
        client_key = _hmac(self.salted_password, b"Client Key")
        stored_key = hashlib.sha256(client_key).digest()
        channel = base64.b64encode(self.GS2_HEADER.encode()).decode("ascii")
        without_proof = f"c={channel},r={nonce}"
        self.auth_message = f"{self.client_first_bare},{server_first},{without_proof}"
        signature = _hmac(stored_key, self.auth_message.encode("utf-8"))
        proof = bytes(a ^ b for a, b in zip(client_key, signature, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}"

    def verify_server_final(self, server_final):
        """Raises PgProtocolError unless the server-final-message proves the server knows the
        password's verifier."""
        attrs = _scram_attrs(server_final)
        if "e" in attrs:
            raise PgProtocolError(f"SCRAM error from the server: {attrs['e']}")
        server_key = _hmac(self.salted_password, b"Server Key")
        expected = base64.b64encode(_hmac(server_key, self.auth_message.encode("utf-8"))).decode("ascii")
        if not hmac.compare_digest(attrs.get("v", ""), expected):
            raise PgProtocolError("the server's SCRAM signature does not match: not the server it claims")
        return True


def _hmac(key, data):
    return hmac.new(key, data, hashlib.sha256).digest()


def _scram_attrs(text):
    out = {}
    for part in text.split(","):
        if len(part) >= 2 and part[1] == "=":
            out[part[0]] = part[2:]
    return out


# -- the connection ------------------------------------------------------------------------------


class PgConnection:
    """A login over an open socket. recv_exact(n) and send(data) come from the caller, so that
    the socket (plain or TLS) and its timings stay the caller's."""

    def __init__(self, send, recv):
        self._send = send
        self._recv = recv
        self._buf = b""
        self.parameters = {}
        self.auth_method = None
        self.notices = []

    def _exact(self, n):
        while len(self._buf) < n:
            chunk = self._recv(65536)
            if not chunk:
                raise PgProtocolError("the server closed the connection")
            self._buf += chunk
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read_message(self):
        kind = self._exact(1)
        (length,) = struct.unpack("!i", self._exact(4))
        if length < 4 or length > 1 << 24:
            raise PgProtocolError(f"not a PostgreSQL message (type {kind!r}, length {length})")
        return kind, self._exact(length - 4)

    def _expect(self):
        """The next message, an ErrorResponse raised as PgServerError, notices kept aside."""
        while True:
            kind, payload = self.read_message()
            if kind == b"E":
                raise PgServerError(parse_error_fields(payload))
            if kind == b"N":
                self.notices.append(parse_error_fields(payload))
                continue
            return kind, payload

    def login(self, user, database, password):
        """StartupMessage, then the authentication asked for, until ReadyForQuery."""
        self._send(startup_message(user, database))
        scram = None
        while True:
            kind, payload = self._expect()
            if kind == b"R":
                code, data = parse_auth(payload)
                if code == AUTH_OK:
                    continue
                if code in (AUTH_CLEARTEXT, AUTH_MD5, AUTH_SASL) and password is None:
                    raise PgProtocolError("the server asks for a password and none was given")
                if code == AUTH_CLEARTEXT:
                    self.auth_method = "password"
                    self._send(password_message(password))
                elif code == AUTH_MD5:
                    self.auth_method = "md5"
                    self._send(password_message(md5_password(user, password, data)))
                elif code == AUTH_SASL:
                    if "SCRAM-SHA-256" not in data:
                        raise PgProtocolError(f"no SASL mechanism this client knows: {', '.join(data)}")
                    self.auth_method = "scram-sha-256"
                    scram = ScramClient(password)
                    self._send(sasl_initial_response("SCRAM-SHA-256", scram.client_first().encode()))
                elif code == AUTH_SASL_CONTINUE and scram is not None:
                    self._send(sasl_response(scram.client_final(data.decode("utf-8")).encode()))
                elif code == AUTH_SASL_FINAL and scram is not None:
                    scram.verify_server_final(data.decode("utf-8"))
                else:
                    name = AUTH_NAMES.get(code, f"code {code}")
                    raise PgProtocolError(
                        f"the server asks for {name} authentication, which this client lacks"
                    )
            elif kind == b"S":
                key, _, value = payload.partition(b"\0")
                self.parameters[key.decode()] = value.rstrip(b"\0").decode("utf-8", "replace")
            elif kind == b"K":
                continue
            elif kind == b"Z":
                return self
            else:
                raise PgProtocolError(f"unexpected message {kind!r} during login")

    def select_one(self):
        """SELECT 1, as the guide's psql does; returns the value read back ('1')."""
        self._send(query_message("SELECT 1"))
        value = None
        while True:
            kind, payload = self._expect()
            if kind == b"D":
                (count,) = struct.unpack("!h", payload[:2])
                if count:
                    (size,) = struct.unpack("!i", payload[2:6])
                    value = payload[6 : 6 + size].decode() if size >= 0 else None
            elif kind == b"Z":
                return value

    def terminate(self):
        with contextlib.suppress(OSError):
            self._send(terminate_message())
