"""TLS between the components of the converged lab (audit_tls_enabled, on by default).

Each store refuses plain text; the service's own connections are encrypted and checked against
the deployment's CA; nginx sends HTTP to HTTPS and sets HSTS.
"""

import json

import httpx
import pytest
import yaml
from audit_devtools import lab as lablib
from cryptography import x509

pytestmark = pytest.mark.lab

CA = "/etc/audit-service/tls/ca.crt"  # the CA's certificate on the app hosts


def secrets() -> dict[str, str]:
    return yaml.safe_load(lablib.LAB_SECRETS.read_text())


def test_every_host_certificate_names_its_host_and_chains_to_the_ca(stack):
    pki = lablib.LAB_PKI
    ca = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    for host in lablib.Lab().hosts:
        cert = x509.load_pem_x509_certificate((pki / "hosts" / f"{host}.crt").read_bytes())
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert host in names.get_values_for_type(x509.DNSName), (host, names)
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert {u._name for u in usages} == {"serverAuth", "clientAuth"}, host
    # The key is never readable by others on the controller.
    assert (pki / "ca.key").stat().st_mode & 0o077 == 0


def test_postgresql_refuses_plain_text_and_verifies_by_name(stack):
    lab = lablib.Lab()
    password = secrets()["audit_db_password"]
    plain = lab.exec(
        "db1",
        [
            "env",
            f"PGPASSWORD={password}",
            "psql",
            "-XAtq",
            "-c",
            "SELECT 1",
            "host=db1 dbname=audit_logs user=audit_user sslmode=disable",
        ],
        check=False,
    )
    assert plain.returncode != 0 and "no encryption" in plain.stderr, plain.stderr
    tls_dir = lab.exec("db1", "ls -d /etc/postgresql/*/main/tls").stdout.strip()
    ca = f"{tls_dir}/ca.crt"
    verified = lab.exec(
        "db1",
        [
            "env",
            f"PGPASSWORD={password}",
            "psql",
            "-XAtq",
            "-c",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            f"host=db1 dbname=audit_logs user=audit_user sslmode=verify-full sslrootcert={ca}",
        ],
    )
    assert verified.stdout.strip() == "t"
    # verify-full checks the name: db1's server reached under another host's name is refused.
    wrong_name = lab.exec(
        "db1",
        [
            "env",
            f"PGPASSWORD={password}",
            "PGHOSTADDR=127.0.0.1",
            "psql",
            "-XAtq",
            "-c",
            "SELECT 1",
            f"host=mq1 dbname=audit_logs user=audit_user sslmode=verify-full sslrootcert={ca}",
        ],
        check=False,
    )
    assert wrong_name.returncode != 0 and "does not match host name" in wrong_name.stderr, wrong_name.stderr


def test_the_service_connects_to_postgresql_over_tls_only(stack):
    sql = (
        "SELECT a.usename, s.ssl, count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)"
        " WHERE a.usename LIKE 'audit%' GROUP BY 1, 2 ORDER BY 1, 2"
    )
    rows = (
        lablib.Lab().exec("db1", f'runuser -u postgres -- psql -XAtq -d audit_logs -c "{sql}"').stdout.split()
    )
    assert rows, "no connection of the service"
    assert all(row.split("|")[1] == "t" for row in rows), rows


def test_redis_takes_tls_only(stack):
    lab = lablib.Lab()
    password = secrets()["audit_redis_admin_password"]
    base = [
        "env",
        f"REDISCLI_AUTH={password}",
        "redis-cli",
        "--no-auth-warning",
        "-h",
        "mq1",
        "-p",
        "6379",
        "--user",
        "audit-admin",
    ]
    plain = lab.exec("mq1", [*base, "ping"], check=False)
    assert "PONG" not in plain.stdout, plain.stdout
    tls = [*base, "--tls", "--cacert", "/etc/redis/tls/ca.crt"]
    assert lab.exec("mq1", [*tls, "ping"]).stdout.strip() == "PONG"
    assert lab.exec("mq1", [*tls, "config", "get", "port"]).stdout.split() == ["port", "0"]
    clients = lab.exec("mq1", [*tls, "client", "list"]).stdout
    assert "user=audit-service" in clients, clients


def test_nats_requires_tls_and_a_client_certificate(stack):
    lab = lablib.Lab()
    probe = r"""
import json, socket, ssl, sys
s = socket.create_connection(("mq1", 4222), 5)
info = json.loads(s.recv(65536).split(b" ", 1)[1])
ctx = ssl.create_default_context(cafile=sys.argv[1])
if len(sys.argv) > 2:
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
try:
    t = ctx.wrap_socket(s, server_hostname="mq1")
    t.sendall(b'CONNECT {"verbose":false,"user":"nobody","pass":"x"}\r\nPING\r\n')
    reply = t.recv(4096).decode(errors="replace")
except (ssl.SSLError, OSError) as exc:
    reply = "tls error: " + str(exc)
keys = ("tls_required", "tls_verify")
print(json.dumps({**{k: info.get(k) for k in keys}, "reply": reply}))
"""
    without = json.loads(lab.exec("app1", ["python3", "-c", probe, CA]).stdout)
    assert without["tls_required"] is True and without["tls_verify"] is True, without
    assert "tls error" in without["reply"], without
    cert = ["/etc/audit-service/tls/server.crt", "/etc/audit-service/tls/server.key"]
    with_cert = json.loads(lab.exec("app1", ["python3", "-c", probe, CA, *cert]).stdout)
    # Past TLS, the server judges the user: a wrong password is refused by authorization.
    assert "Authorization Violation" in with_cert["reply"], with_cert


def test_the_service_connects_to_nats_over_tls(stack):
    lab = lablib.Lab()
    connections = []
    for host in ("mq1", "mq2", "mq3"):
        connz = json.loads(lab.exec(host, "curl -fsS 'http://127.0.0.1:8222/connz?auth=true'").stdout)
        connections += connz["connections"] or []
    users = {c.get("authorized_user") for c in connections}
    assert {"audit-api", "audit-worker"} <= users, users
    assert all(c.get("tls_version") for c in connections), [
        (c.get("name"), c.get("tls_version")) for c in connections
    ]


def test_nginx_redirects_http_to_https_with_hsts(stack):
    r = httpx.get(f"{lablib.LB_HTTP_URL}/api/v1/audit/logs?limit=1", timeout=30)
    assert r.status_code == 301 and r.headers["location"].startswith("https://"), (r.status_code, r.headers)
    with lablib.lb() as lb:
        health = lb.get("/health")
    assert health.status_code == 200
    assert health.headers["strict-transport-security"] == "max-age=31536000"
    # The certificate is checked: a client that trusts only the system's CAs refuses it.
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{lablib.LB_URL}/health", timeout=30)
