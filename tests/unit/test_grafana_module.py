"""auditlog.ops.grafana_diagnostics without Grafana: Grafana's documented HTTP API answers, as
recorded in tests/unit/data/grafana/, served by a real HTTP server on loopback (a thread), and a
fake grafana-cli (a script in tmp_path) that records how it was called.

Grafana cannot be installed on these machines (no apt.grafana.com), so this is the proof of the
module's logic; the lab proves only that a host without Grafana is reported as such
(tests/lab/test_runbooks_monitoring.py).
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import socket
import stat
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from ansible.module_utils.testing import patch_module_args
from ansible_collections.auditlog.ops.plugins.module_utils import grafana_api as api
from ansible_collections.auditlog.ops.plugins.modules import grafana_diagnostics as gd

DATA = Path(__file__).parent / "data" / "grafana"
PASSWORD = "s3cret-Admin-pw"
WRONG = "not-the-password"


def recorded(name: str) -> tuple[int, object]:
    doc = json.loads((DATA / f"{name}.json").read_text())
    return doc["status"], doc["body"]


# -- a Grafana on loopback ---------------------------------------------------------------------------


class FakeGrafana:
    """Serves the recorded answers. The admin's password is read from `password_file` at every
    request, so that the fake grafana-cli's reset (which writes it) takes effect as Grafana's does."""

    def __init__(self, tmp_path: Path, health="health_ok", datasource_health=None, password=PASSWORD):
        self.health = health
        # uid -> recorded answer of /api/datasources/uid/<uid>/health
        self.datasource_health = datasource_health or {
            "audit-prometheus": "datasource_health_ok",
            "ops-loki": "datasource_health_error",
        }
        self.password_file = tmp_path / "grafana-admin-password"
        self.password_file.write_text(password)
        self.requests: list[tuple[str, bool]] = []  # (path, authorised)
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):  # noqa: N802 - http.server's name
                authorised = self.headers.get("Authorization") == "Basic " + base64.b64encode(
                    f"admin:{fake.password_file.read_text()}".encode()
                ).decode("ascii")
                fake.requests.append((self.path, authorised))
                status, body = fake.answer(self.path, authorised)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def answer(self, path: str, authorised: bool):
        if path == "/api/health":
            return recorded(self.health)
        if not authorised:
            return recorded("login_refused")
        if path == "/api/user":
            return recorded("user_admin")
        if path == "/api/datasources":
            return recorded("datasources")
        if path.startswith("/api/datasources/uid/") and path.endswith("/health"):
            uid = path.split("/")[4]
            if uid in self.datasource_health:
                return recorded(self.datasource_health[uid])
            return 404, {"message": "Plugin health check not implemented"}
        if path == "/api/admin/settings":
            return recorded("admin_settings")
        return 404, {"message": "Not found"}

    def paths(self) -> list[str]:
        return [p for p, _ in self.requests]

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def grafana(tmp_path):
    with FakeGrafana(tmp_path) as fake:
        yield fake


def free_port() -> int:
    """A loopback port nothing listens on (bound, then let go)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- a fake grafana-cli ----------------------------------------------------------------------------

FAKE_CLI = """#!{python}
# Records its argv and stdin, and sets the admin password the way grafana-cli does (in the
# database, here the FakeGrafana's password file).
import json, sys
argv = sys.argv[1:]
stdin = sys.stdin.readline().rstrip("\\n") if "--password-from-stdin" in argv else None
with open({record!r}, "a") as f:
    f.write(json.dumps({{"argv": argv, "stdin": stdin}}) + "\\n")
new = stdin if stdin is not None else argv[-1]
with open({password_file!r}, "w") as f:
    f.write(new)
print("INFO [01-12|09:14:03] Starting Grafana logger=settings version=12.1.1")
print("Admin password changed successfully ✔")
"""


class FakeCli:
    """The script's path (str), and the calls it recorded."""

    def __init__(self, path: Path, record: Path):
        self.path = str(path)
        self.record = record

    def calls(self) -> list[dict]:
        if not self.record.exists():
            return []
        return [json.loads(line) for line in self.record.read_text().splitlines()]


@pytest.fixture
def cli(tmp_path, grafana):
    script = tmp_path / "bin" / "grafana-cli"
    script.parent.mkdir()
    record = tmp_path / "grafana-cli.calls"
    script.write_text(
        FAKE_CLI.format(python=sys.executable, record=str(record), password_file=str(grafana.password_file))
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return FakeCli(script, record)


# -- the module with a stand-in for AnsibleModule ------------------------------------------------------


class ModuleFailed(Exception):
    def __init__(self, result):
        super().__init__(result.get("msg"))
        self.result = result


class FakeModule:
    """What diagnose() uses of AnsibleModule: params, check_mode, get_bin_path, run_command
    (systemctl answered from `systemctl_show`, anything else really run) and fail_json."""

    def __init__(self, check_mode=False, systemctl_show="LoadState=not-found\n", bins=None, **params):
        defaults = {k: v.get("default") for k, v in gd.argument_spec().items()}
        self.params = {**defaults, **params}
        self.check_mode = check_mode
        self.systemctl_show = systemctl_show
        self.bins = {"systemctl": "/usr/bin/systemctl", **(bins or {})}
        self.commands: list[list[str]] = []

    def get_bin_path(self, name, required=False, opt_dirs=None):
        return self.bins.get(name)

    def run_command(self, args, data=None, **_kwargs):
        self.commands.append(list(args))
        if args[0] == self.bins["systemctl"]:
            return 0, self.systemctl_show, ""
        proc = subprocess.run(
            args, input=None if data is None else data + "\n", capture_output=True, text=True, timeout=30
        )
        return proc.returncode, proc.stdout, proc.stderr

    def fail_json(self, **result):
        raise ModuleFailed(result)


def diagnose(url, check_mode=False, **params):
    module = FakeModule(check_mode=check_mode, url=url, **params)
    return gd.diagnose(module), module


def checks(result, **match) -> list[dict]:
    return [f for f in result["findings"] if all(f.get(k) == v for k, v in match.items())]


# -- Grafana Dashboard Not Loading ---------------------------------------------------------------------


def test_a_healthy_grafana_names_the_datasource_that_fails_with_grafanas_message(grafana):
    result, _ = diagnose(grafana.url, admin_password=PASSWORD)
    assert result["available"] and result["installed"] and not result["changed"]
    assert result["health"] == {
        "status_code": 200,
        "ok": True,
        "database": "ok",
        "version": "12.1.1",
        "commit": "df5de8219b4",
        "message": None,
    }
    assert result["admin_login"]["ok"] and result["admin_login"]["is_grafana_admin"] is True
    by_name = {d["name"]: d for d in result["datasources"]}
    assert by_name["Prometheus"]["status"] == "OK" and by_name["Prometheus"]["is_default"]
    assert by_name["Loki"]["status"] == "ERROR" and by_name["Loki"]["status_code"] == 400
    # The datasource's URL keeps its host, not its password.
    assert by_name["Loki"]["url"] == f"http://scraper:{api.MASK}@loki.internal:3100"
    (failing,) = checks(result, check="datasource")
    _, body = recorded("datasource_health_error")
    assert failing["severity"] == "warning" and failing["component"] == "grafana"
    assert "'Loki'" in failing["summary"] and failing["summary"].endswith(body["message"])
    assert checks(result, severity="critical") == []
    assert "/api/datasources/uid/ops-loki/health" in grafana.paths()


def test_the_default_datasource_failing_is_critical(tmp_path):
    broken = {"audit-prometheus": "datasource_health_error", "ops-loki": "datasource_health_ok"}
    with FakeGrafana(tmp_path, datasource_health=broken) as fake:
        result, _ = diagnose(fake.url, admin_password=PASSWORD)
    (failing,) = checks(result, check="datasource")
    assert failing["severity"] == "critical"
    assert "'Prometheus' (prometheus, the default)" in failing["summary"]


def test_a_datasource_without_a_health_check_is_untested_not_failing(tmp_path):
    with FakeGrafana(tmp_path, datasource_health={"audit-prometheus": "datasource_health_ok"}) as fake:
        result, _ = diagnose(fake.url, admin_password=PASSWORD)
    loki = next(d for d in result["datasources"] if d["name"] == "Loki")
    assert loki["status"] == "untested" and loki["status_code"] == 404
    assert checks(result, check="datasource") == []


def test_a_failing_database_is_critical_and_named(tmp_path):
    with FakeGrafana(tmp_path, health="health_db_failing") as fake:
        result, _ = diagnose(fake.url, admin_password=PASSWORD)
    assert result["available"] and result["health"]["ok"] is False
    assert result["health"]["status_code"] == 503 and result["health"]["database"] == "failing"
    (db,) = checks(result, check="database")
    assert db["severity"] == "critical" and "database failing" in db["summary"]
    assert db["evidence"]["status_code"] == 503


# -- Grafana Authentication Issues ---------------------------------------------------------------------


def test_a_refused_admin_login_is_critical_and_nothing_else_is_asked_with_it(grafana):
    result, _ = diagnose(grafana.url, admin_password=WRONG)
    login = result["admin_login"]
    assert login["refused"] and login["status_code"] == 401
    assert login["message"] == "Invalid username or password"
    (refused,) = checks(result, check="admin_login")
    assert refused["severity"] == "critical" and "refused the admin login of 'admin'" in refused["summary"]
    assert refused["remediation"] is None
    assert result["datasources"] == [] and result["auth_settings"] is None
    assert result["datasources_error"] == "the admin login is refused"
    # One login try only (Grafana's brute force protection counts them), and no more requests with it.
    assert [p for p, _ in grafana.requests] == ["/api/health", "/api/user"]
    assert WRONG not in json.dumps(result)


def test_the_auth_settings_are_reported_with_every_secret_masked(grafana):
    result, _ = diagnose(grafana.url, admin_password=PASSWORD)
    settings = result["auth_settings"]
    assert set(settings) == {"auth", "auth.basic", "auth.anonymous", "auth.proxy", "auth.ldap", "security"}
    # Masked by Grafana, and kept so.
    assert settings["auth.basic"] == {"enabled": "true", "password_policy": api.MASK}
    # Not masked by Grafana: masked here.
    assert settings["auth.ldap"]["bind_password"] == api.MASK
    assert settings["auth.ldap"]["config_file"] == "/etc/grafana/ldap.toml"
    # [security]: the chosen keys only; no admin_password, no secret_key.
    assert settings["security"]["admin_user"] == "admin"
    assert settings["security"]["disable_initial_admin_creation"] == "false"
    assert "admin_password" not in settings["security"] and "secret_key" not in settings["security"]
    # Sections not about authentication stay out, their secrets with them.
    text = json.dumps(result)
    for secret in ("ldap-bind-not-masked", "database-url-secret", "url-secret", PASSWORD):
        assert secret not in text, secret
    (anonymous,) = checks(result, check="auth_settings")
    assert anonymous["severity"] == "warning" and "anyone in without a login" in anonymous["summary"]


def test_masking_rules():
    assert api.masked("admin_password", "plain") == api.MASK
    assert api.masked("client_secret", "x") == api.MASK
    assert api.masked("enable_login_token", "false") == "false"  # a switch, not a token
    assert api.masked("api_token", "glsa_x") == api.MASK
    assert api.masked("password_policy", "") == ""
    assert api.masked("root_url", "https://u:p@host/") == f"https://u:{api.MASK}@host/"
    assert api.masked("org_role", "Viewer") == "Viewer"


# -- the reset ---------------------------------------------------------------------------------------


def test_the_reset_in_check_mode_says_it_would_reset_and_runs_nothing(grafana, cli):
    result, module = diagnose(
        grafana.url,
        check_mode=True,
        admin_password=PASSWORD,
        reset_admin_password=True,
        new_admin_password=PASSWORD,
        grafana_cli=[cli.path],
    )
    # The login works: nothing to reset, in check mode or not.
    assert not result["changed"] and not result["reset"]["needed"]

    grafana.password_file.write_text("changed-by-someone")
    result, module = diagnose(
        grafana.url,
        check_mode=True,
        admin_password=PASSWORD,
        reset_admin_password=True,
        new_admin_password=PASSWORD,
        grafana_cli=[cli.path],
    )
    assert result["changed"] and result["reset"]["needed"] and not result["reset"]["done"]
    assert result["reset"]["command"] == [cli.path, "admin", "reset-admin-password", "--password-from-stdin"]
    (refused,) = checks(result, check="admin_login")
    assert refused["remediation"].startswith("would reset the admin password")
    assert cli.calls() == [] and [c for c in module.commands if c[0] == cli.path] == []
    assert grafana.password_file.read_text() == "changed-by-someone"
    assert PASSWORD not in json.dumps(result)


def test_the_reset_gives_grafana_cli_the_password_on_stdin_and_the_login_works_after(grafana, cli):
    grafana.password_file.write_text("changed-by-someone")
    result, _ = diagnose(
        grafana.url,
        admin_password=PASSWORD,
        reset_admin_password=True,
        new_admin_password=PASSWORD,
        grafana_cli=[cli.path],
    )
    (call,) = cli.calls()
    assert call == {"argv": ["admin", "reset-admin-password", "--password-from-stdin"], "stdin": PASSWORD}
    assert result["changed"] and result["reset"]["done"] and result["reset"]["rc"] == 0
    assert "Admin password changed successfully" in result["reset"]["output"]
    assert result["admin_login"]["ok"]
    (repaired,) = checks(result, check="admin_login")
    assert repaired["remediation"].endswith("the admin login works now")
    # With the login back, the datasources and settings are read.
    assert result["datasources"] and result["auth_settings"]
    assert PASSWORD not in json.dumps(result)

    # Idempotent: the login works now, the second run resets nothing.
    again, _ = diagnose(
        grafana.url,
        admin_password=PASSWORD,
        reset_admin_password=True,
        new_admin_password=PASSWORD,
        grafana_cli=[cli.path],
    )
    assert not again["changed"] and not again["reset"]["needed"] and len(cli.calls()) == 1
    assert again["reset"]["reason"].startswith("the admin login with the new password works")
    assert checks(again, check="admin_login") == []


def test_the_reset_as_the_guide_writes_it_shows_the_password_masked(grafana, cli):
    grafana.password_file.write_text("changed-by-someone")
    result, _ = diagnose(
        grafana.url,
        admin_password=PASSWORD,
        reset_admin_password=True,
        new_admin_password=PASSWORD,
        grafana_cli=[cli.path],
        homepath="/usr/share/grafana",
        config="/etc/grafana/grafana.ini",
        password_from_stdin=False,
    )
    expected = ["--homepath", "/usr/share/grafana", "--config", "/etc/grafana/grafana.ini"]
    expected += ["admin", "reset-admin-password"]
    (call,) = cli.calls()
    assert call == {"argv": [*expected, PASSWORD], "stdin": None}
    assert result["reset"]["command"] == [cli.path, *expected, api.HIDDEN]
    assert result["changed"] and result["admin_login"]["ok"]
    assert PASSWORD not in json.dumps(result)


def test_the_newer_grafana_cli_form_is_a_command_of_its_own():
    argv = api.reset_command(["/usr/share/grafana/bin/grafana", "cli"], "/usr/share/grafana", None, "pw")
    assert argv == [
        "/usr/share/grafana/bin/grafana",
        "cli",
        "--homepath",
        "/usr/share/grafana",
        "admin",
        "reset-admin-password",
        "--password-from-stdin",
    ]
    assert api.shown(["grafana-cli", "admin", "reset-admin-password", "pw"], "pw")[-1] == api.HIDDEN


def test_a_reset_that_fails_fails_the_module_without_the_password(grafana, tmp_path):
    grafana.password_file.write_text("changed-by-someone")
    failing = tmp_path / "failing-cli"
    failing.write_text(
        f"#!{sys.executable}\nimport sys\nprint('cannot read user: ' + sys.argv[-1])\nsys.exit(1)\n"
    )
    failing.chmod(0o755)
    with pytest.raises(ModuleFailed) as failed:
        diagnose(
            grafana.url,
            admin_password=PASSWORD,
            reset_admin_password=True,
            new_admin_password=PASSWORD,
            grafana_cli=[str(failing)],
            password_from_stdin=False,
        )
    assert "rc 1" in failed.value.result["msg"] and api.HIDDEN in failed.value.result["msg"]
    assert PASSWORD not in json.dumps(failed.value.result)


# -- no Grafana on the host -------------------------------------------------------------------------


def test_no_grafana_on_the_host_is_one_plain_finding_not_a_failure(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    result, module = diagnose(
        url, admin_password=PASSWORD, reset_admin_password=True, new_admin_password=PASSWORD
    )
    assert result["available"] is False and result["installed"] is False and not result["changed"]
    assert result["installation"]["unit"] == "grafana-server.service"
    assert not result["installation"]["unit_exists"] and result["installation"]["binaries"] == []
    (absent,) = result["findings"]
    assert absent["check"] == "grafana_absent" and absent["severity"] == "info"
    assert absent["summary"].startswith("Grafana is not installed on this host")
    assert result["reset"]["reason"] == "Grafana is not installed on this host"
    assert not result["reset"]["done"]
    # systemctl was asked about the unit, and nothing else was run.
    assert [c[1] for c in module.commands] == ["show"]
    assert PASSWORD not in json.dumps(result)


def test_grafana_installed_but_not_answering_is_critical(tmp_path):
    url = f"http://127.0.0.1:{free_port()}"
    show = "Id=grafana-server.service\nLoadState=loaded\nActiveState=failed\nSubState=failed\n"
    module = FakeModule(url=url, admin_password=PASSWORD, systemctl_show=show)
    result = gd.diagnose(module)
    assert result["installed"] and not result["available"]
    (down,) = result["findings"]
    assert down["check"] == "reachable" and down["severity"] == "critical"
    assert "grafana-server.service failed (failed)" in down["summary"]


# -- main(), through AnsibleModule ------------------------------------------------------------------


def test_main_resets_through_ansible_module_and_prints_no_password(grafana, cli, monkeypatch):
    grafana.password_file.write_text("changed-by-someone")
    args = {
        "url": grafana.url,
        "admin_password": PASSWORD,
        "reset_admin_password": True,
        "new_admin_password": PASSWORD,
        "grafana_cli": [cli.path],
    }
    out = io.StringIO()
    with patch_module_args(args), contextlib.redirect_stdout(out), pytest.raises(SystemExit) as ended:
        gd.main()
    assert ended.value.code == 0
    result = json.loads(out.getvalue())
    assert result["changed"] and result["reset"]["done"] and result["admin_login"]["ok"]
    assert cli.calls()[0]["stdin"] == PASSWORD
    assert PASSWORD not in out.getvalue()
