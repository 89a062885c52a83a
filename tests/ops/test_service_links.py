"""auditlog.ops.service_links against real PostgreSQL, Redis and NATS on loopback (audit_devtools.stack,
with passwords; PostgreSQL also serves TLS with a test CA), run as a playbook runs it:
`ansible localhost -m auditlog.ops.service_links` under /usr/bin/python3 (support.modules: the
targets' interpreter, standard library only). Faults: a wrong PostgreSQL password (stage auth,
SQLSTATE 28P01), a stopped Redis (stage connect, connection refused), a wrong NATS password
(Authorization Violation), a certificate from another CA (stage tls). No lab, no containers.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import tempfile
from pathlib import Path

import pytest
from audit_devtools.stack import Nats, Postgres, Redis
from support.modules import run_module as _run_module
from support.pki import make_pki

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(
    not (shutil.which("nats-server") or Path("/usr/sbin/nats-server").exists())
    or not shutil.which("redis-server"),
    reason="needs Debian's nats-server, redis-server and postgresql",
)


def run_module(module: str, args: dict, *flags: str) -> tuple[int, dict, str]:
    """auditlog.ops.<name> on localhost under /usr/bin/python3 (support.modules)."""
    return _run_module(module.removeprefix("auditlog.ops."), args, *flags)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def servers(pki):
    # Not under pytest's tmp_path: as root, PostgreSQL runs as `postgres`, which must reach its
    # directory (pytest's are private to root).
    root = Path(tempfile.mkdtemp(prefix="audit-links-"))
    pg = Postgres(root, fsync=False)
    pg.init()
    # TLS on, with the test CA's server certificate (for localhost and 127.0.0.1); the key must be
    # the server's own and private.
    data = pg.dir / "data"
    shutil.copy(pki["server"], data / "server.crt")
    shutil.copy(pki["server_key"], data / "server.key")
    os.chmod(data / "server.key", 0o600)
    if pg.as_user:
        user = pwd.getpwnam(pg.as_user)
        for name in ("server.crt", "server.key"):
            os.chown(data / name, user.pw_uid, user.pw_gid)
    with open(data / "postgresql.conf", "a") as conf:
        conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
    # Two roles that log in with md5 and with a cleartext password, as older deployments do.
    hba = data / "pg_hba.conf"
    hba.write_text(
        "host all audit_md5 127.0.0.1/32 md5\nhost all audit_clear 127.0.0.1/32 password\n" + hba.read_text()
    )
    pg.start()
    pg.create_database("audit_logs")
    pg.psql(
        f"SET password_encryption = 'md5'; CREATE ROLE audit_md5 LOGIN PASSWORD '{pg.password}';"
        f" CREATE ROLE audit_clear LOGIN PASSWORD '{pg.password}'"
    )
    redis = Redis(root)
    redis.start()
    nats = Nats(root)
    nats.start()
    yield {"pg": pg, "redis": redis, "nats": nats, "root": root}
    nats.stop()
    redis.stop()
    pg.stop()
    shutil.rmtree(root, ignore_errors=True)


def links_args(s, **override) -> dict:
    args = {
        "postgres": {
            "host": "127.0.0.1",
            "port": s["pg"].port,
            "user": "audit_user",
            "password": s["pg"].password,
            "database": "audit_logs",
        },
        "redis": {
            "host": "localhost",
            "port": s["redis"].port,
            "user": "audit-service",
            "password": s["redis"].password,
        },
        "nats": {
            "servers": [f"127.0.0.1:{s['nats'].port}"],
            "user": "audit-worker",
            "password": s["nats"].passwords["audit-worker"],
        },
        "timeout": 5,
        # The test CA's certificates last a day: no expiry warning unless a test asks for one.
        "cert_warning_days": 0,
    }
    for link, values in override.items():
        if not isinstance(values, dict) and link not in ("postgres", "redis", "nats"):
            args[link] = values
        elif values is None:
            args.pop(link)
        elif isinstance(values, dict):
            args[link] = {**args[link], **values}
        else:
            args[link] = values
    return args


def test_all_links_healthy_in_check_mode_too(servers):
    for flags in ((), ("--check",)):
        rc, result, out = run_module("auditlog.ops.service_links", links_args(servers), *flags)
        assert rc == 0, out
        assert result["changed"] is False and result["findings"] == [], out
        assert set(result["links"]) == {"postgres", "redis", "nats"}
        for link in ("postgres", "redis", "nats"):
            facts = result["links"][link]
            assert facts["available"] is True and facts["stage_failed"] == "none", facts
            assert facts["connect_ms"] is not None and facts["auth_ms"] is not None
        pg = result["links"]["postgres"]
        assert pg["auth_method"] == "scram-sha-256" and pg["server_version"]
        # ssl_mode prefer: the server offers TLS, so it is used (unverified), the certificate shown.
        assert pg["tls"]["verified"] is False and pg["tls"]["subject"] == "commonName=localhost"
        assert pg["tls"]["days_left"] > 0 and pg["tls_ms"] is not None
        assert result["links"]["redis"]["tls"] is None
        assert result["links"]["nats"]["servers"][0]["server"]["version"]
        # The action plugin gathered the (no) findings.
        assert result["ansible_facts"]["runbook_findings"] == []
    # The default threshold (14 days) warns of PostgreSQL's certificate, which expires tomorrow.
    args = links_args(servers)
    del args["cert_warning_days"]
    rc, result, out = run_module("auditlog.ops.service_links", args)
    (found,) = result["findings"]
    assert found["severity"] == "warning" and found["check"] == "tls_expiry", found
    assert "commonName=localhost" in found["summary"]
    for secret in (servers["pg"].password, servers["redis"].password, servers["nats"].password):
        assert secret not in out


def test_wrong_postgres_password_fails_at_auth_with_the_servers_error(servers):
    args = links_args(servers, postgres={"password": "not-the-password"}, redis=None, nats=None)
    rc, result, out = run_module("auditlog.ops.service_links", args)
    assert rc == 0 and "Traceback" not in out, out
    pg = result["links"]["postgres"]
    assert pg["available"] is False and pg["stage_failed"] == "auth"
    assert pg["server_error"]["code"] == "28P01"
    assert pg["server_error"]["message"] == 'password authentication failed for user "audit_user"'
    (found,) = result["findings"]
    assert found["severity"] == "critical" and found["component"] == "postgresql"
    assert found["check"] == "link_auth" and found["host"] == "localhost"
    assert f"127.0.0.1:{servers['pg'].port}" in found["summary"] and "fails at auth" in found["summary"]
    assert '28P01 password authentication failed for user "audit_user"' in found["summary"]
    assert "not-the-password" not in out


def test_postgres_tls_verify_full_and_a_foreign_ca(servers, pki):
    args = links_args(
        servers,
        postgres={"host": "localhost", "ssl_mode": "verify-full", "ca_file": str(pki["ca"])},
        redis=None,
        nats=None,
    )
    rc, result, out = run_module("auditlog.ops.service_links", args)
    assert rc == 0, out
    assert result["links"]["postgres"]["available"] is True, result["links"]["postgres"]
    assert result["links"]["postgres"]["tls"]["verified"] is True
    args["postgres"]["ca_file"] = str(pki["other-ca"])
    rc, result, out = run_module("auditlog.ops.service_links", args)
    pg = result["links"]["postgres"]
    assert pg["stage_failed"] == "tls" and pg["tls"]["verify_error"], pg
    assert "does not verify" in pg["error"]
    assert result["findings"][0]["check"] == "link_tls"


def test_stopped_redis_fails_at_connect(servers):
    redis = servers["redis"]
    redis.stop()
    try:
        rc, result, out = run_module("auditlog.ops.service_links", links_args(servers))
    finally:
        redis.start()
    assert rc == 0 and "Traceback" not in out, out
    facts = result["links"]["redis"]
    assert facts["available"] is False and facts["stage_failed"] == "connect"
    assert "connection refused" in facts["error"].lower()
    (found,) = result["findings"]
    assert found["severity"] == "critical" and found["component"] == "redis"
    assert found["check"] == "link_connect" and f"localhost:{redis.port}" in found["summary"]
    assert result["links"]["postgres"]["available"] and result["links"]["nats"]["available"]


def test_wrong_redis_password_names_wrongpass(servers):
    args = links_args(servers, redis={"password": "nope"}, postgres=None, nats=None)
    rc, result, out = run_module("auditlog.ops.service_links", args)
    assert result["links"]["redis"]["stage_failed"] == "auth"
    assert result["links"]["redis"]["server_error"]["code"] == "WRONGPASS"


def test_wrong_nats_password_is_an_authorization_violation(servers):
    args = links_args(servers, nats={"password": "not-it"}, postgres=None, redis=None)
    rc, result, out = run_module("auditlog.ops.service_links", args)
    assert rc == 0 and "Traceback" not in out, out
    facts = result["links"]["nats"]
    assert facts["available"] is False and facts["stage_failed"] == "auth"
    assert facts["server_error"]["message"] == "Authorization Violation"
    (found,) = result["findings"]
    assert found["severity"] == "critical" and found["component"] == "nats"
    assert "Authorization Violation" in found["summary"]


def test_an_unresolvable_host_fails_at_resolve(servers):
    args = links_args(servers, redis={"host": "no-such-host.invalid"}, postgres=None, nats=None)
    rc, result, out = run_module("auditlog.ops.service_links", args)
    assert rc == 0, out
    assert result["links"]["redis"]["stage_failed"] == "resolve"
    assert result["findings"][0]["check"] == "link_resolve"


@pytest.mark.parametrize(("role", "method"), [("audit_md5", "md5"), ("audit_clear", "password")])
def test_postgres_md5_and_cleartext_logins(servers, role, method):
    args = links_args(servers, postgres={"user": role, "ssl_mode": "disable"}, redis=None, nats=None)
    rc, result, out = run_module("auditlog.ops.service_links", args)
    assert rc == 0, out
    assert result["links"]["postgres"]["available"] is True, result["links"]["postgres"]
    assert result["links"]["postgres"]["auth_method"] == method and result["links"]["postgres"]["tls"] is None
    args["postgres"]["password"] = "wrong"
    rc, result, out = run_module("auditlog.ops.service_links", args)
    assert result["links"]["postgres"]["server_error"]["code"] == "28P01"


@pytest.fixture(scope="module")
def nats_tls(tmp_path_factory, pki):
    server = Nats(
        tmp_path_factory.mktemp("nats-tls"),
        tls={"cert": pki["server"], "key": pki["server_key"], "ca": pki["ca"]},
    )
    server.start()
    yield server
    server.stop()


def test_nats_over_tls_with_and_without_a_client_certificate(nats_tls, pki):
    nats = {
        "servers": [f"localhost:{nats_tls.port}"],
        "user": "audit",
        "password": nats_tls.password,
        "ca_file": str(pki["ca"]),
        "client_cert": str(pki["client"]),
        "client_key": str(pki["client_key"]),
    }
    args = {"nats": nats, "timeout": 5, "cert_warning_days": 0}
    rc, result, out = run_module("auditlog.ops.service_links", args)
    assert rc == 0, out
    facts = result["links"]["nats"]
    assert facts["available"] is True, facts
    assert facts["tls"]["verified"] is True and facts["tls"]["subject"] == "commonName=localhost"
    assert facts["tls_ms"] is not None
    # Without the client certificate the server ends the session (with TLS 1.3 at the first read
    # after the handshake): stage tls all the same.
    args["nats"] = {k: v for k, v in nats.items() if k not in ("client_cert", "client_key")}
    rc, result, out = run_module("auditlog.ops.service_links", args)
    assert rc == 0 and "Traceback" not in out, out
    assert (
        result["links"]["nats"]["available"] is False and result["links"]["nats"]["stage_failed"] == "tls"
    ), result["links"]["nats"]
    assert "client certificate" in result["links"]["nats"]["error"]
    (found,) = result["findings"]
    assert found["severity"] == "critical" and found["check"] == "link_tls"
    # A CA that did not sign the server's certificate: the verification error, by name.
    args["nats"] = {**nats, "ca_file": str(pki["other-ca"])}
    rc, result, out = run_module("auditlog.ops.service_links", args)
    assert result["links"]["nats"]["stage_failed"] == "tls"
    assert result["links"]["nats"]["tls"]["verify_error"] == "unable to get local issuer certificate"


def test_one_nats_server_down_of_two_is_critical_naming_it(servers):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    nats = {"servers": [f"127.0.0.1:{servers['nats'].port}", f"127.0.0.1:{closed}"]}
    rc, result, out = run_module("auditlog.ops.service_links", links_args(servers, nats=nats, postgres=None))
    assert rc == 0, out
    facts = result["links"]["nats"]
    assert facts["available"] is True and [s["available"] for s in facts["servers"]] == [True, False]
    (found,) = result["findings"]
    assert found["severity"] == "critical" and found["component"] == "nats"
    assert f"127.0.0.1:{closed}" in found["summary"] and "(1 of 2 servers answer)" in found["summary"]
