# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""Grafana's HTTP API for auditlog.ops.grafana_diagnostics: a small client over urllib, and the
pure functions that turn its answers into facts and findings (tests/unit/test_grafana_module.py
runs them against recorded answers served on loopback).

The endpoints are Grafana's documented ones:
  GET /api/health                         {commit, database: "ok", version}; 503, database
                                          "failing", when Grafana cannot reach its database
  GET /api/user                           the signed-in user (basic auth); 401 when refused
  GET /api/datasources                    the datasources of the admin's organisation
  GET /api/datasources/uid/<uid>/health   the datasource's own test ("Save & test"):
                                          {status: "OK" | "ERROR", message}
  GET /api/admin/settings                 the settings by section, as a server admin sees them,
                                          the secrets already shown as MASK by Grafana
"""

import base64
import json
import re
import urllib.error
import urllib.parse
import urllib.request

from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding

COMPONENT = "grafana"
# How Grafana shows a value it redacts in /api/admin/settings (setting.RedactedPassword).
MASK = "************"
# How the module shows a password of its own (a command line it ran).
HIDDEN = "********"

# The settings reported: every key of the authentication sections, and these of [security].
AUTH_SECTIONS = ("auth", "auth.basic", "auth.anonymous", "auth.proxy", "auth.ldap")
SECURITY_KEYS = (
    "admin_user",
    "admin_email",
    "disable_initial_admin_creation",
    "disable_brute_force_login_protection",
    "cookie_secure",
    "cookie_samesite",
    "allow_embedding",
)
# Keys whose values are secrets, as Grafana's own RedactedValue() names them (upper-cased key):
# masked here too, whatever the value says, so a Grafana that did not mask one still shows none.
SECRET_KEY_PATTERNS = tuple(
    re.compile(p)
    for p in (
        "PASSWORD",
        "SECRET",
        "PROVIDER_CONFIG",
        "PRIVATE_KEY",
        "CERTIFICATE",
        "ACCOUNT_KEY",
        "ENCRYPTION_KEY",
        "ENTERPRISE_LICENSE",
        "API_DB_PASS",
        "VAULT_TOKEN",
        "^TOKEN$",
        "ID_FORWARDING_TOKEN$",
        "AUTHENTICATION_TOKEN$",
        "AUTH_TOKEN$",
        "RENDERER_TOKEN$",
        "API_TOKEN$",
        "WEBHOOK_TOKEN$",
        "INSTALL_TOKEN$",
    )
)
# user:password@ in a URL value (Grafana redacts those too).
_URL_PASSWORD = re.compile(r"(://[^:/@\s]+:)[^@/\s]+@")


class GrafanaUnreachable(Exception):
    """Nothing answered HTTP at the URL (refused, timed out, no such host); the reason."""


class Response:
    """One HTTP answer: status, the body parsed as JSON (None when it is not JSON), and its text."""

    def __init__(self, status, text):
        self.status = status
        self.text = text
        try:
            self.json = json.loads(text) if text else None
        except ValueError:
            self.json = None

    @property
    def message(self):
        """Grafana's own `message` of an error answer, else the start of the text."""
        if isinstance(self.json, dict) and self.json.get("message"):
            return str(self.json["message"])
        return " ".join((self.text or "").split())[:200]


class GrafanaClient:
    """GET requests to one Grafana, with basic auth when a password is given. No proxy: the
    module talks to the Grafana of the host it runs on."""

    def __init__(self, url, user=None, password=None, timeout=10.0):
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"url must be http:// or https://, not {url!r}")
        self.url = url.rstrip("/")
        self.user = user
        self.password = password
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def with_password(self, password):
        return GrafanaClient(self.url, self.user, password, self.timeout)

    def get(self, path, auth=True):
        """The answer to GET `path` (an HTTP error status is an answer too); GrafanaUnreachable
        when nothing answers."""
        request = urllib.request.Request(self.url + path, headers={"Accept": "application/json"})  # noqa: S310
        if auth and self.password is not None:
            token = base64.b64encode(f"{self.user}:{self.password}".encode()).decode("ascii")
            request.add_header("Authorization", f"Basic {token}")
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                return Response(answer.status, answer.read().decode("utf-8", "replace"))
        except urllib.error.HTTPError as exc:
            try:
                text = exc.read().decode("utf-8", "replace")
            finally:
                exc.close()
            return Response(exc.code, text)
        except urllib.error.URLError as exc:
            raise GrafanaUnreachable(str(exc.reason)) from None
        except OSError as exc:  # a timeout, a reset connection
            raise GrafanaUnreachable(str(exc)) from None


# -- health ----------------------------------------------------------------------------------------


def summarise_health(response):
    """GET /api/health -> {status_code, ok, database, version, commit, message}."""
    body = response.json if isinstance(response.json, dict) else {}
    database = body.get("database")
    return {
        "status_code": response.status,
        "ok": response.status == 200 and database == "ok",
        "database": database,
        "version": body.get("version"),
        "commit": body.get("commit"),
        "message": None if body else response.message,
    }


def health_findings(url, health):
    """The findings of /api/health: a failing database, or an answer that is not Grafana's."""
    if health["ok"]:
        return []
    if health["database"] not in (None, "ok"):
        return [
            finding(
                "critical",
                COMPONENT,
                "database",
                f"Grafana at {url} cannot use its database (/api/health: database {health['database']})",
                evidence=health,
            )
        ]
    return [
        finding(
            "critical",
            COMPONENT,
            "health",
            "Grafana at {} is not healthy: /api/health answered HTTP {}{}".format(
                url, health["status_code"], f", {health['message']}" if health["message"] else ""
            ),
            evidence=health,
        )
    ]


# -- the admin login ---------------------------------------------------------------------------------


def summarise_login(user, response):
    """GET /api/user with the admin's basic auth -> {user, status_code, ok, refused, login,
    is_grafana_admin, message}."""
    body = response.json if isinstance(response.json, dict) else {}
    ok = response.status == 200
    return {
        "user": user,
        "checked": True,
        "status_code": response.status,
        "ok": ok,
        "refused": response.status == 401,
        "login": body.get("login") if ok else None,
        "is_grafana_admin": body.get("isGrafanaAdmin") if ok else None,
        "message": None if ok else response.message,
    }


def login_findings(url, login, remediation=None):
    """A refused admin login (critical), a login that is no server admin, or one that could not be
    checked (warning)."""
    if not login.get("checked"):
        return []
    user = login["user"]
    if login["refused"]:
        return [
            finding(
                "critical",
                COMPONENT,
                "admin_login",
                f"Grafana at {url} refused the admin login of {user!r}: {login['message'] or 'HTTP 401'}",
                evidence={k: login[k] for k in ("user", "status_code", "message")},
                remediation=remediation,
            )
        ]
    if not login["ok"]:
        return [
            finding(
                "warning",
                COMPONENT,
                "admin_login",
                "Grafana at {} did not say whether it takes the admin login of {!r}: HTTP {} {}".format(
                    url, user, login["status_code"], login["message"] or ""
                ).rstrip(),
                evidence={k: login[k] for k in ("user", "status_code", "message")},
                remediation=remediation,
            )
        ]
    if login["is_grafana_admin"] is False:
        return [
            finding(
                "warning",
                COMPONENT,
                "admin_login",
                f"{user!r} logs in to Grafana at {url} but is no server admin: the datasources and"
                " settings cannot all be read",
                evidence={k: login[k] for k in ("user", "login", "is_grafana_admin")},
                remediation=remediation,
            )
        ]
    return []


# -- datasources -----------------------------------------------------------------------------------


def datasource_entry(ds):
    """A datasource of GET /api/datasources as the module reports it (no secrets: the list has
    none but the basic auth user's name, which stays out)."""
    return {
        "name": ds.get("name"),
        "uid": ds.get("uid"),
        "type": ds.get("type"),
        "url": redact_url(ds.get("url") or ""),
        "is_default": bool(ds.get("isDefault")),
        "status": None,
        "message": None,
    }


def datasource_health(entry, response):
    """The datasource entry with the answer of /api/datasources/uid/<uid>/health: status OK or
    ERROR with Grafana's message; `untested` when its plugin has no health check (404) or the
    answer is no verdict."""
    body = response.json if isinstance(response.json, dict) else {}
    status = str(body.get("status") or "").upper()
    if status in ("OK", "ERROR"):
        entry.update(status=status, message=body.get("message"))
    elif response.status == 404:
        entry.update(status="untested", message=response.message or "no health check")
    else:
        entry.update(status="ERROR" if response.status >= 500 else "untested", message=response.message)
    entry["status_code"] = response.status
    return entry


def datasource_findings(datasources):
    """One finding per datasource whose test fails: critical for the default datasource (every
    dashboard that names none uses it), else a warning; Grafana's message is the summary's end."""
    out = []
    for ds in datasources:
        if ds.get("status") != "ERROR":
            continue
        out.append(
            finding(
                "critical" if ds.get("is_default") else "warning",
                COMPONENT,
                "datasource",
                "Grafana's datasource {!r} ({}{}) fails its test: {}".format(
                    ds.get("name"),
                    ds.get("type"),
                    ", the default" if ds.get("is_default") else "",
                    ds.get("message") or f"HTTP {ds.get('status_code')}",
                ),
                evidence=ds,
            )
        )
    return out


# -- settings ------------------------------------------------------------------------------------


def redact_url(value):
    return _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", value)


def is_secret_key(key):
    upper = str(key).upper()
    return any(p.search(upper) for p in SECRET_KEY_PATTERNS)


def masked(key, value):
    """A setting's value as the module reports it: a secret's (non-empty) value is MASK, whatever
    Grafana sent; MASK stays MASK; a URL loses its password."""
    if value is None:
        return None
    value = str(value)
    if value == "" or value == MASK:
        return value
    if is_secret_key(key):
        return MASK
    return redact_url(value)


def auth_settings(settings):
    """GET /api/admin/settings -> the authentication sections (every key, masked) and the
    [security] keys of SECURITY_KEYS; sections Grafana did not send are left out."""
    settings = settings if isinstance(settings, dict) else {}
    out = {}
    for section in AUTH_SECTIONS:
        values = settings.get(section)
        if isinstance(values, dict):
            out[section] = {k: masked(k, v) for k, v in sorted(values.items())}
    security = settings.get("security")
    if isinstance(security, dict):
        out["security"] = {k: masked(k, security[k]) for k in SECURITY_KEYS if k in security}
    return out


def _true(value):
    return str(value).strip().lower() == "true"


def settings_findings(url, settings):
    """What the authentication settings tell (they are read with the admin login, so basic auth
    is on): the login form hidden, anonymous access on."""
    out = []
    auth = settings.get("auth", {})
    if _true(auth.get("disable_login_form")):
        out.append(
            finding(
                "warning",
                COMPONENT,
                "auth_settings",
                f"Grafana at {url} hides its login form ([auth] disable_login_form true): nobody can log in"
                " with a user and password in the browser",
                evidence={"auth": {"disable_login_form": auth.get("disable_login_form")}},
            )
        )
    anonymous = settings.get("auth.anonymous", {})
    if _true(anonymous.get("enabled")):
        out.append(
            finding(
                "warning",
                COMPONENT,
                "auth_settings",
                "Grafana at {} lets anyone in without a login ([auth.anonymous] enabled true,"
                " role {})".format(url, anonymous.get("org_role") or "Viewer"),
                evidence={"auth.anonymous": anonymous},
            )
        )
    return out


# -- the admin password reset ------------------------------------------------------------------------


def reset_command(cli, homepath=None, config=None, password=None, from_stdin=True):
    """The argv of grafana-cli's admin password reset: `cli` (grafana-cli, or the newer
    [grafana, cli]) with --homepath and --config when given, then `admin reset-admin-password`
    and the password, or --password-from-stdin (Grafana 9.1 and later) for it on stdin."""
    argv = list(cli)
    if homepath:
        argv += ["--homepath", homepath]
    if config:
        argv += ["--config", config]
    argv += ["admin", "reset-admin-password"]
    argv += ["--password-from-stdin"] if from_stdin else [password]
    return argv


def shown(argv, secret):
    """A command line as it may be shown: the argument that is the secret replaced by HIDDEN."""
    return [HIDDEN if secret and a == secret else a for a in argv]


def scrub(text, secret):
    """Output of a command with the secret replaced by HIDDEN."""
    text = text or ""
    return text.replace(secret, HIDDEN) if secret else text
