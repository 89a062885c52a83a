# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""Service links for auditlog.ops.service_links: one link (PostgreSQL, Redis, NATS) tested stage
by stage from the host the module runs on, each stage timed and its failure named.

Stages: resolve (getaddrinfo), connect (TCP), tls (the handshake, the peer's certificate), auth
(the server's own login: PostgreSQL's wire protocol in pg_wire, Redis' RESP AUTH + PING, NATS'
CONNECT + PING). The first stage that fails is the link's `stage_failed`; the server's own error
(PostgreSQL's SQLSTATE and message, Redis' error reply, NATS' -ERR) is `server_error`.

RESP comes from module_utils/redis_api.py (encode_command, RespReader); its RedisClient connects
in one step, so the stages here drive its reader over a socket of their own.
"""

import datetime
import json
import os
import socket
import ssl
import tempfile
import time

from ansible_collections.auditlog.ops.plugins.module_utils import pg_wire
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding
from ansible_collections.auditlog.ops.plugins.module_utils.nats_api import (
    NatsClient,
    NatsConnectionError,
    encode_connect,
)
from ansible_collections.auditlog.ops.plugins.module_utils.redis_api import (
    ProtocolError,
    RedisConnectionError,
    RedisReplyError,
    RespReader,
    encode_command,
)
from ansible_collections.auditlog.ops.plugins.module_utils.tls import TLSError, client_context

STAGES = ("resolve", "connect", "tls", "auth")
COMPONENTS = {"postgres": "postgresql", "redis": "redis", "nats": "nats"}
LABELS = {"postgres": "PostgreSQL", "redis": "Redis", "nats": "NATS"}


class StageError(Exception):
    """A stage failed: .stage, the message, and the server's error {code, message} when it sent one."""

    def __init__(self, stage, msg, server_error=None):
        self.stage = stage
        self.server_error = server_error
        super().__init__(msg)


def _ms(started):
    return round((time.monotonic() - started) * 1000, 2)


def new_facts(link, host, port):
    return {
        "link": link,
        "host": host,
        "port": port,
        "available": False,
        "stage_failed": None,
        "addresses": [],
        "address": None,
        "resolve_ms": None,
        "connect_ms": None,
        "tls_ms": None,
        "auth_ms": None,
        "tls": None,
        "error": None,
        "server_error": None,
    }


# -- resolve, connect, TLS ---------------------------------------------------------------------------


def resolve(host, port, facts):
    started = time.monotonic()
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        facts["resolve_ms"] = _ms(started)
        raise StageError("resolve", f"cannot resolve {host}: {exc}") from None
    facts["resolve_ms"] = _ms(started)
    for info in infos:
        if info[4][0] not in facts["addresses"]:
            facts["addresses"].append(info[4][0])
    return infos


def connect(infos, host, port, timeout, facts):
    """The first address that accepts, as socket.create_connection tries them."""
    errors = []
    for family, kind, proto, _name, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        started = time.monotonic()
        try:
            sock.connect(sockaddr)
        except (TimeoutError, OSError) as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                exc = f"timed out after {timeout}s"
            errors.append(f"{sockaddr[0]}: {exc}")
            continue
        facts["connect_ms"] = _ms(started)
        facts["address"] = sockaddr[0]
        return sock
    raise StageError("connect", f"cannot connect to {host}:{port} ({'; '.join(errors)})")


def tls_context(verify, ca_file=None, client_cert=None, client_key=None):
    """tls.client_context, its error a failed 'tls' stage."""
    try:
        return client_context(ca_file, client_cert, client_key, verify)
    except TLSError as exc:
        raise StageError("tls", str(exc)) from None


def start_tls(sock, context, host, address, facts):
    started = time.monotonic()
    try:
        tls = context.wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        facts["tls_ms"] = _ms(started)
        facts["tls"] = {"verified": False, "verify_error": exc.verify_message}
        sock.close()
        raise StageError(
            "tls", f"TLS handshake with {address}: the certificate does not verify: {exc.verify_message}"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        facts["tls_ms"] = _ms(started)
        sock.close()
        raise StageError("tls", f"TLS handshake with {address} failed: {exc}") from None
    facts["tls_ms"] = _ms(started)
    facts["tls"] = cert_info(tls, context.verify_mode != ssl.CERT_NONE)
    return tls


def tls_refused(address, exc):
    """An SSL error after the handshake: with TLS 1.3 the server checks the client's certificate
    after the client thinks the handshake is done, so its refusal comes with the first read."""
    reason = getattr(exc, "reason", None) or str(exc)
    return StageError(
        "tls",
        f"{address} ended the TLS session: {reason} (does it want a client certificate it was not given?)",
    )


def _name(rdns):
    return ", ".join(f"{k}={v}" for rdn in rdns or () for k, v in rdn)


def _decode_der(der):
    """A certificate the handshake did not verify (getpeercert() is empty then), decoded by the ssl
    module's own decoder; {} when it is not available."""
    decoder = getattr(getattr(ssl, "_ssl", None), "_test_decode_cert", None)
    if not der or decoder is None:
        return {}
    fd, path = tempfile.mkstemp(suffix=".pem")
    try:
        with os.fdopen(fd, "w") as out:
            out.write(ssl.DER_cert_to_PEM_cert(der))
        return decoder(path)
    except (OSError, ValueError, ssl.SSLError):
        return {}
    finally:
        os.unlink(path)


def cert_info(tls, verified, now=None):
    """The peer certificate's subject, issuer, names, expiry, and the session's version and cipher."""
    cert = tls.getpeercert() or _decode_der(tls.getpeercert(binary_form=True))
    return cert_summary(cert, verified, tls.version(), (tls.cipher() or (None,))[0], now)


def cert_summary(cert, verified, version=None, cipher=None, now=None):
    info = {
        "verified": verified,
        "verify_error": None,
        "version": version,
        "cipher": cipher,
        "subject": _name(cert.get("subject")) or None,
        "issuer": _name(cert.get("issuer")) or None,
        "names": [v for k, v in cert.get("subjectAltName", ()) if k in ("DNS", "IP Address")],
        "not_after": None,
        "days_left": None,
    }
    if cert.get("notAfter"):
        expires = datetime.datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), datetime.UTC)
        now = now or datetime.datetime.now(datetime.UTC)
        info["not_after"] = expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        info["days_left"] = round((expires - now).total_seconds() / 86400, 1)
    return info


def _open(host, port, timeout, facts):
    infos = resolve(host, port, facts)
    return connect(infos, host, port, timeout, facts)


def _run(facts, probe):
    """Run probe(facts); record the failing stage, never raise."""
    try:
        probe(facts)
        facts["available"] = True
        facts["stage_failed"] = "none"
    except StageError as exc:
        facts["stage_failed"] = exc.stage
        facts["error"] = str(exc)
        facts["server_error"] = exc.server_error
    except Exception as exc:  # noqa: BLE001 - a probe reports, it never crashes
        facts["stage_failed"] = facts.get("_stage") or "connect"
        facts["error"] = f"{type(exc).__name__}: {exc}"
    facts.pop("_stage", None)
    return facts


# -- PostgreSQL ------------------------------------------------------------------------------------


def probe_postgres(params, timeout):
    host, port = params["host"], params["port"]
    facts = new_facts("postgres", host, port)
    facts.update(user=params["user"], database=params["database"], ssl_mode=params["ssl_mode"])
    address = f"{host}:{port}"

    def probe(facts):
        sock = _open(host, port, timeout, facts)
        try:
            mode = params["ssl_mode"]
            facts["_stage"] = "tls"
            if mode != "disable":
                sock.sendall(pg_wire.ssl_request())
                answer = sock.recv(1)
                if answer == b"S":
                    if mode == "verify-full":
                        verify = "full"
                    elif params.get("ca_file"):
                        verify = "ca"  # libpq: require with a root certificate checks the chain
                    else:
                        verify = "none"
                    context = tls_context(verify, params.get("ca_file"))
                    sock = start_tls(sock, context, host, address, facts)
                elif answer == b"N":
                    if mode in ("require", "verify-full"):
                        raise StageError(
                            "tls", f"PostgreSQL at {address} does not accept SSL (ssl_mode {mode})"
                        )
                elif answer == b"E":
                    raise StageError("tls", f"PostgreSQL at {address} refused the SSLRequest")
                else:
                    raise StageError("tls", f"{address} is not a PostgreSQL server (answer {answer!r})")
            facts["_stage"] = "auth"
            started = time.monotonic()
            conn = pg_wire.PgConnection(sock.sendall, sock.recv)
            try:
                conn.login(params["user"], params["database"], params.get("password"))
                conn.select_one()
            except pg_wire.PgServerError as exc:
                facts["auth_ms"] = _ms(started)
                server_error = {
                    "code": exc.code,
                    "message": exc.message,
                    "severity": exc.fields.get("severity") or exc.fields.get("severity_local"),
                }
                if exc.fields.get("detail"):
                    server_error["detail"] = exc.fields["detail"]
                raise StageError(
                    "auth",
                    f"PostgreSQL at {address} refused user {params['user']} on database"
                    f" {params['database']}: {exc.code} {exc.message}",
                    server_error,
                ) from None
            except pg_wire.PgProtocolError as exc:
                facts["auth_ms"] = _ms(started)
                raise StageError("auth", f"PostgreSQL at {address}: {exc}") from None
            except ssl.SSLError as exc:
                raise tls_refused(address, exc) from None
            except (TimeoutError, OSError) as exc:
                facts["auth_ms"] = _ms(started)
                raise StageError(
                    "auth", f"PostgreSQL at {address}: no login answer: {exc or 'timed out'}"
                ) from None
            facts["auth_ms"] = _ms(started)
            facts["auth_method"] = conn.auth_method
            facts["server_version"] = conn.parameters.get("server_version")
            conn.terminate()
        finally:
            sock.close()

    return _run(facts, probe)


# -- Redis -----------------------------------------------------------------------------------------


def resp_error(line):
    """An error reply's text ('WRONGPASS invalid username-password pair ...') -> {code, message}."""
    code, _, rest = line.partition(" ")
    if code.isupper():
        return {"code": code, "message": rest or code}
    return {"code": None, "message": line}


def _reply(reader, command):
    try:
        return reader.read()
    except ProtocolError as exc:
        raise StageError("auth", f"{command}: not a Redis reply ({exc}): is it a Redis server?") from None
    except RedisConnectionError as exc:
        raise StageError("auth", f"{command}: {exc}") from None


def _refused(command, user, error):
    if "max number of clients" in error.message:
        # Sent on accept, before any command is read: the server is full, the login is not wrong.
        return StageError(
            "connect", f"the server rejected the connection: {error.message}", resp_error(error.message)
        )
    who = f" as {user}" if user and command == "AUTH" else ""
    return StageError("auth", f"{command}{who}: {error.message}", resp_error(error.message))


def redis_auth_ping(sock, user, password):
    """AUTH (when a password is given) then PING, with redis_api's RESP; returns the PING reply
    ('PONG'), raises StageError('auth') with the server's error reply."""
    reader = RespReader(lambda: sock.recv(65536))
    if password is not None:
        sock.sendall(encode_command("AUTH", user, password) if user else encode_command("AUTH", password))
        reply = _reply(reader, "AUTH")
        if isinstance(reply, RedisReplyError):
            raise _refused("AUTH", user or "default", reply)
        if reply != "OK":
            raise StageError("auth", f"unexpected reply to AUTH: {reply!r:.80} (is it a Redis server?)")
    sock.sendall(encode_command("PING"))
    reply = _reply(reader, "PING")
    if isinstance(reply, RedisReplyError):
        raise _refused("PING", user, reply)
    if reply != "PONG":
        raise StageError("auth", f"unexpected reply to PING: {reply!r:.80} (is it a Redis server?)")
    return reply


def probe_redis(params, timeout):
    host, port = params["host"], params["port"]
    facts = new_facts("redis", host, port)
    facts.update(user=params.get("user"), tls_enabled=_redis_tls(params))
    address = f"{host}:{port}"

    def probe(facts):
        sock = _open(host, port, timeout, facts)
        try:
            if _redis_tls(params):
                facts["_stage"] = "tls"
                context = tls_context(
                    "full", params.get("ca_file"), params.get("client_cert"), params.get("client_key")
                )
                sock = start_tls(sock, context, host, address, facts)
            facts["_stage"] = "auth"
            started = time.monotonic()
            try:
                redis_auth_ping(sock, params.get("user"), params.get("password"))
            except StageError as exc:
                facts["auth_ms"] = _ms(started)
                raise StageError(exc.stage, f"Redis at {address}: {exc}", exc.server_error) from None
            except ssl.SSLError as exc:
                raise tls_refused(address, exc) from None
            except (TimeoutError, OSError) as exc:
                facts["auth_ms"] = _ms(started)
                raise StageError("auth", f"Redis at {address}: no answer: {exc or 'timed out'}") from None
            facts["auth_ms"] = _ms(started)
        finally:
            sock.close()

    return _run(facts, probe)


def _redis_tls(params):
    return bool(params.get("tls") or params.get("ca_file") or params.get("client_cert"))


# -- NATS ------------------------------------------------------------------------------------------


def parse_server(text, default_port=4222):
    """'host:port', 'nats://host:port', '[::1]:4222' or 'host' -> (host, port)."""
    text = text.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.rsplit("@", 1)[-1].rstrip("/")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, ""
    if not host:
        raise ValueError(f"no host in NATS server {text!r}")
    try:
        return host, int(port) if port else default_port
    except ValueError:
        raise ValueError(f"bad port in NATS server {text!r}") from None


class StagedNatsClient(NatsClient):
    """nats_api's client over a socket connected (and timed) by the caller: INFO, the TLS upgrade
    (timed, its certificate kept), then CONNECT + PING with the -ERR the server answers kept."""

    def _fill(self):
        try:
            return super()._fill()
        except NatsConnectionError as exc:
            # nats_api wraps the socket's error; an SSL error under it is the server's TLS refusal.
            if isinstance(exc.__context__, ssl.SSLError):
                raise tls_refused(self.address, exc.__context__) from None
            raise

    def handshake(self, want_tls, context, facts):
        self.sock.settimeout(self.timeout)
        try:
            line = self._readline()
        except TimeoutError:
            raise StageError("auth", f"NATS at {self.address} sent no INFO within {self.timeout}s") from None
        except NatsConnectionError as exc:
            raise StageError("auth", str(exc)) from None
        if not line.startswith("INFO "):
            raise StageError("auth", f"{self.address} is not a NATS client port (first line {line[:60]!r})")
        try:
            self.server_info = json.loads(line[5:])
        except ValueError:
            raise StageError("auth", f"NATS at {self.address} sent an unreadable INFO line") from None
        facts["server"] = {k: self.server_info.get(k) for k in ("server_name", "version", "tls_required")}
        tls = bool(self.server_info.get("tls_required")) or want_tls
        if tls:
            self.sock = start_tls(self.sock, context(), self.host, self.address, facts)
            self._buf = b""
        started = time.monotonic()
        headers = bool(self.server_info.get("headers"))
        try:
            self._send(encode_connect(self.user, self.password, headers=headers, tls=tls) + b"PING\r\n")
            while True:
                line = self._readline()
                if line == "PONG":
                    facts["auth_ms"] = _ms(started)
                    return self
                if line == "PING":
                    self._send(b"PONG\r\n")
                elif line.startswith("-ERR"):
                    facts["auth_ms"] = _ms(started)
                    reason = line[4:].strip().strip("'")
                    raise StageError(
                        "auth",
                        f"NATS at {self.address} refused user {self.user or '(none)'}: {reason}",
                        {"code": None, "message": reason},
                    )
        except TimeoutError:
            facts["auth_ms"] = _ms(started)
            raise StageError("auth", f"NATS at {self.address}: no PONG within {self.timeout}s") from None
        except NatsConnectionError as exc:
            facts["auth_ms"] = _ms(started)
            raise StageError("auth", str(exc)) from None


def probe_nats_server(server, params, timeout):
    try:
        host, port = parse_server(server)
    except ValueError as exc:
        facts = new_facts("nats", server, None)
        facts.update(stage_failed="resolve", error=str(exc))
        return facts
    facts = new_facts("nats", host, port)
    facts["user"] = params.get("user")
    want_tls = bool(params.get("tls") or params.get("ca_file") or params.get("client_cert"))

    def context():
        return tls_context("full", params.get("ca_file"), params.get("client_cert"), params.get("client_key"))

    def probe(facts):
        sock = _open(host, port, timeout, facts)
        client = StagedNatsClient(host, port, params.get("user"), params.get("password"), timeout, sock=sock)
        try:
            facts["_stage"] = "auth"
            client.handshake(want_tls, context, facts)
        finally:
            client.close()

    return _run(facts, probe)


def probe_nats(params, timeout):
    """Every server of the link; the link's own facts are its first healthy server's (else its first)."""
    servers = [probe_nats_server(s, params, timeout) for s in params["servers"]]
    healthy = [s for s in servers if s["available"]]
    head = dict(healthy[0] if healthy else servers[0])
    head.update(servers=servers, available=bool(healthy))
    if healthy:
        head.update(stage_failed="none", error=None, server_error=None)
    return head


# -- findings ----------------------------------------------------------------------------------------


def _describe(link, facts):
    label = LABELS[link]
    where = f"{facts['host']}:{facts['port']}"
    if link == "postgres":
        return f"{label} at {where} (user {facts.get('user')}, database {facts.get('database')})"
    if facts.get("user"):
        return f"{label} at {where} (user {facts['user']})"
    return f"{label} at {where}"


def _evidence(facts):
    keep = (
        "host",
        "port",
        "addresses",
        "address",
        "stage_failed",
        "connect_ms",
        "tls_ms",
        "auth_ms",
        "error",
        "server_error",
        "tls",
    )
    return {k: facts.get(k) for k in keep}


def _failure(link, facts, severity, members=()):
    stage = facts["stage_failed"]
    error = facts["server_error"]
    reason = facts["error"]
    if error and error.get("message"):
        reason = f"{error['code']} {error['message']}" if error.get("code") else error["message"]
    return finding(
        severity,
        COMPONENTS[link],
        f"link_{stage}",
        f"{LABELS[link]} link: {_describe(link, facts)} fails at {stage}: {reason}{_others(members)}",
        evidence=_evidence(facts),
    )


def _others(members):
    """For a link of several servers: how many of them answer."""
    if len(members) < 2:
        return ""
    up = sum(1 for m in members if m["available"])
    return f" ({up} of {len(members)} servers answer)"


def link_findings(link, facts, connect_warning_ms, cert_warning_days):
    """The findings of one link's facts (nats: with its servers)."""
    out = []
    members = facts.get("servers") or [facts]
    for member in members:
        if not member["available"]:
            # Every server the service is configured with counts: one NATS broker of several down
            # is a failing link of each client (it fails over, but the cluster has lost a member).
            out.append(_failure(link, member, "critical", members))
            continue
        connect_ms = member.get("connect_ms")
        if connect_ms is not None and connect_ms > connect_warning_ms:
            out.append(
                finding(
                    "warning",
                    COMPONENTS[link],
                    "link_latency",
                    f"{LABELS[link]} link: TCP connect to {member['host']}:{member['port']} took"
                    f" {connect_ms} ms (over {connect_warning_ms} ms)",
                    evidence=_evidence(member),
                )
            )
        tls = member.get("tls") or {}
        days = tls.get("days_left")
        if days is not None and days < cert_warning_days:
            severity = "critical" if days < 0 else "warning"
            state = "expired" if days < 0 else "expires"
            out.append(
                finding(
                    severity,
                    COMPONENTS[link],
                    "tls_expiry",
                    f"{LABELS[link]} link: the certificate of {member['host']}:{member['port']}"
                    f" ({tls.get('subject')}) {state} {tls.get('not_after')} ({days} days)",
                    evidence=_evidence(member),
                )
            )
    return out
