#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: grafana_diagnostics
short_description: Diagnose Grafana (health, datasources, admin login, auth), reset its admin password
version_added: 0.4.0
description:
  - Asks the Grafana of the host it runs on, through Grafana's HTTP API, what the troubleshooting
    guide's "Grafana Dashboard Not Loading" and "Grafana Authentication Issues" check, and
    returns it as facts with a list of RV(findings). C(GET /api/health) (Grafana up, its database
    C(ok)); C(GET /api/user) with the admin's basic auth (does the admin login work);
    C(GET /api/datasources) and, for each datasource, C(GET /api/datasources/uid/<uid>/health)
    (the datasource's own test, the UI's "Save & test"); C(GET /api/admin/settings), of which the
    authentication sections are returned (RV(auth_settings)).
  - "Findings (component C(grafana)): nothing answers although Grafana is installed, critical
    (check C(reachable)); a failing database (C(database)) or another unhealthy answer
    (C(health)), critical; a refused admin login, critical (C(admin_login)); a datasource whose
    test fails, critical for the default datasource and a warning for another, with Grafana's
    message (C(datasource)); the login form hidden, or anonymous access on, warnings
    (C(auth_settings))."
  - A host without Grafana (no C(grafana-server.service) unit, no Grafana binary, nothing
    answering at O(url)) is RV(available=false) and RV(installed=false) with one info finding,
    check C(grafana_absent), saying that Grafana is not installed on this host; not a failure.
  - With O(reset_admin_password=true), and only when Grafana refuses the login of O(admin_user)
    with O(new_admin_password), resets the admin password to O(new_admin_password) with Grafana's
    own CLI (C(grafana-cli admin reset-admin-password), O(grafana_cli)) and checks the login again.
    A login that works already is left alone, so a second run changes nothing. C(changed) is true
    only when the password was reset (in check mode, would be).
  - The passwords never appear in the results; the command line in RV(reset) shows the password
    as C(********) when it is an argument. By default the password goes to the CLI on its stdin
    (C(--password-from-stdin)), not on its command line, where any user of the host could read it.
author: audit-log project (!UNKNOWN)
options:
  url:
    description:
      - Grafana's base URL, from the host the module runs on (the grafana role's C(grafana_port)
        on loopback, C(grafana_endpoint.local.url)). No proxy is used.
    type: str
    default: http://127.0.0.1:3000
  admin_user:
    description:
      - The admin account (the grafana role's C(grafana_admin_user)).
    type: str
    default: admin
  admin_password:
    description:
      - Its password, for the basic auth of the login check, the datasources and the settings.
        Without it only C(/api/health) is asked.
    type: str
  timeout:
    description:
      - Seconds to wait for each answer.
    type: float
    default: 10
  reset_admin_password:
    description:
      - Reset the password of the admin account to O(new_admin_password) when Grafana refuses
        that login. Off unless asked for.
    type: bool
    default: false
  new_admin_password:
    description:
      - The admin password to reset to (the deployment's secret); required with
        O(reset_admin_password=true). Grafana wants 4 characters at least.
    type: str
  grafana_cli:
    description:
      - Grafana's CLI as a command (argv), V([grafana-cli]) (the Debian package's wrapper, which
        sets the home path, configuration file and data directory itself), or
        V([/usr/share/grafana/bin/grafana, cli]) for the newer C(grafana cli) form. A name without
        a slash is looked for in C(PATH), C(/usr/sbin) and C(/usr/share/grafana/bin).
    type: list
    elements: str
    default: [grafana-cli]
  homepath:
    description:
      - C(--homepath) for the CLI (V(/usr/share/grafana) for the package), when the command of
        O(grafana_cli) does not set it itself.
    type: path
  config:
    description:
      - C(--config) for the CLI (V(/etc/grafana/grafana.ini) for the package), when the command
        of O(grafana_cli) does not set it itself.
    type: path
  password_from_stdin:
    description:
      - Give the CLI the password on its stdin (C(--password-from-stdin), Grafana 9.1 and
        later). V(false) gives it as the command's last argument, as older Grafana needs and as
        the guide writes it, readable in the host's process list while the command runs.
    type: bool
    default: true
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Reads as always and says whether it would reset the password; resets nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - The reset writes Grafana's database directly (C(grafana-cli) needs no running server, but the
    module resets only after a login refused by a running Grafana); it needs root, or the
    C(grafana) user, on the host. It resets the user with id 1, the initial admin account.
  - Every refused login counts against Grafana's brute force protection (5 in 5 minutes lock
    the account for a while); the module tries the admin login once, and once more after a reset.
  - Grafana's own masking of secret settings (C(************)) is kept; a value of a secret-looking
    key that Grafana did not mask is masked here as well, and a URL's password too.
seealso:
  - module: auditlog.ops.component
  - name: Grafana HTTP API
    description: The health, user, datasource and admin endpoints this module reads.
    link: https://grafana.com/docs/grafana/latest/developers/http_api/
  - name: Grafana CLI
    description: The admin reset-admin-password command.
    link: https://grafana.com/docs/grafana/latest/cli/
"""

EXAMPLES = r"""
- name: Diagnose this host's Grafana
  auditlog.ops.grafana_diagnostics:
    url: http://127.0.0.1:3000
    admin_user: admin
    admin_password: "{{ audit_grafana_admin_password }}"
  register: grafana

- name: Reset the admin password to the secret, when the login is refused (only when asked)
  auditlog.ops.grafana_diagnostics:
    admin_password: "{{ audit_grafana_admin_password }}"
    reset_admin_password: "{{ grafana_reset_admin_password | default(false) | bool }}"
    new_admin_password: "{{ audit_grafana_admin_password }}"

- name: The same with the newer CLI form, the password as an argument (Grafana before 9.1)
  auditlog.ops.grafana_diagnostics:
    admin_password: "{{ audit_grafana_admin_password }}"
    reset_admin_password: true
    new_admin_password: "{{ audit_grafana_admin_password }}"
    grafana_cli: [/usr/share/grafana/bin/grafana, cli]
    homepath: /usr/share/grafana
    config: /etc/grafana/grafana.ini
    password_from_stdin: false
"""

RETURN = r"""
changed:
  description: Whether the admin password was reset (in check mode, would be).
  returned: always
  type: bool
available:
  description: Whether Grafana answered at O(url).
  returned: always
  type: bool
installed:
  description:
    - Whether Grafana is on this host, from its answer, its systemd unit or its binaries; false
      with the C(grafana_absent) finding.
  returned: always
  type: bool
error:
  description: Why nothing answered.
  returned: when RV(available) is false
  type: str
url:
  description: The URL asked.
  returned: always
  type: str
installation:
  description:
    - The unit (C(grafana-server.service)), whether it exists, its C(active_state) and
      C(sub_state), and the Grafana binaries found.
  returned: always
  type: dict
  sample: {"unit": "grafana-server.service", "unit_exists": true, "active_state": "active",
           "sub_state": "running", "binaries": ["/usr/sbin/grafana-cli", "/usr/sbin/grafana-server"]}
health:
  description: The answer of C(/api/health).
  returned: when available
  type: dict
  sample: {"status_code": 200, "ok": true, "database": "ok", "version": "12.1.1",
           "commit": "df5de8219b4", "message": null}
admin_login:
  description:
    - The admin login check (C(GET /api/user)); C(checked) false without O(admin_password) or
      when nothing answers. After a reset, the check with the new password.
  returned: always
  type: dict
  sample: {"user": "admin", "checked": true, "status_code": 401, "ok": false, "refused": true,
           "login": null, "is_grafana_admin": null, "message": "Invalid username or password"}
datasources:
  description:
    - Each datasource with the result of its test, C(status) V(OK), V(ERROR) or V(untested) (its
      plugin has no health check) and Grafana's C(message).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "Prometheus", "uid": "audit-prometheus", "type": "prometheus",
            "url": "http://lb1:9090", "is_default": true, "status": "OK", "status_code": 200,
            "message": "Successfully queried the Prometheus API."}]
datasources_error:
  description: Why the datasources could not be listed.
  returned: when they could not
  type: str
auth_settings:
  description:
    - The sections C(auth), C(auth.basic), C(auth.anonymous), C(auth.proxy), C(auth.ldap) of
      C(/api/admin/settings) and chosen keys of C(security), secrets masked; null when the
      settings could not be read (RV(auth_settings_error)).
  returned: always
  type: dict
  sample: {"auth.basic": {"enabled": "true"}, "auth.anonymous": {"enabled": "false"},
           "security": {"admin_user": "admin", "disable_initial_admin_creation": "false"}}
auth_settings_error:
  description: Why the settings could not be read.
  returned: when they could not
  type: str
reset:
  description:
    - The admin password reset, C(requested) (O(reset_admin_password)), C(needed) (the login with
      O(new_admin_password) was refused), C(done), C(command) (the CLI's argv, the password as
      C(********)), C(rc), C(output) and C(reason) (why it was not done).
  returned: always
  type: dict
  sample: {"requested": true, "needed": true, "done": true, "rc": 0,
           "command": ["/usr/sbin/grafana-cli", "admin", "reset-admin-password", "--password-from-stdin"],
           "output": "Admin password changed successfully", "reason": null}
findings:
  description:
    - What is wrong, each a finding of module_utils/findings.py (component C(grafana)). Checks
      are C(grafana_absent), C(reachable), C(database), C(health), C(admin_login),
      C(datasource), C(auth_settings).
  returned: always
  type: list
  elements: dict
"""

# Imports after the documentation, as in every Ansible module.
import os  # noqa: E402
import urllib.parse  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import components as comp  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import grafana_api as api  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding  # noqa: E402

UNIT = comp.COMPONENTS["grafana"]["unit"]
# Where the Debian package puts Grafana's binaries (besides PATH).
BIN_DIRS = ["/usr/sbin", "/usr/share/grafana/bin"]
BINARIES = ("grafana-server", "grafana", "grafana-cli")
SHOW = "Id,LoadState,ActiveState,SubState"


def argument_spec():
    return dict(
        url=dict(type="str", default="http://127.0.0.1:3000"),
        admin_user=dict(type="str", default="admin"),
        admin_password=dict(type="str", no_log=True),
        timeout=dict(type="float", default=10),
        reset_admin_password=dict(type="bool", default=False, no_log=False),
        new_admin_password=dict(type="str", no_log=True),
        grafana_cli=dict(type="list", elements="str", default=["grafana-cli"]),
        homepath=dict(type="path"),
        config=dict(type="path"),
        password_from_stdin=dict(type="bool", default=True, no_log=False),
    )


# -- the host: is Grafana installed here? ----------------------------------------------------------


def find_binary(module, name):
    """The path of an executable: `name` itself when it has a slash, else from PATH and BIN_DIRS."""
    if "/" in name:
        return name if os.path.isfile(name) and os.access(name, os.X_OK) else None
    return module.get_bin_path(name, opt_dirs=BIN_DIRS)


def installation(module, cli):
    """The unit's state (systemctl show) and the Grafana binaries on the host."""
    facts = {"unit": UNIT, "unit_exists": False, "active_state": None, "sub_state": None, "binaries": []}
    systemctl = module.get_bin_path("systemctl")
    if systemctl:
        rc, out, err = module.run_command([systemctl, "show", f"--property={SHOW}", "--", UNIT])
        states = comp.parse_show(out) if rc == 0 else []
        if states:
            facts.update(
                unit_exists=states[0]["exists"],
                active_state=states[0]["active_state"],
                sub_state=states[0]["sub_state"],
            )
        else:
            facts["unit_error"] = (err or out or f"systemctl rc {rc}").strip()
    names = list(dict.fromkeys([*BINARIES, *(cli[:1] or [])]))
    facts["binaries"] = sorted({path for path in (find_binary(module, n) for n in names) if path})
    return facts


def absent_finding(url, facts, error):
    return finding(
        "info",
        api.COMPONENT,
        "grafana_absent",
        f"Grafana is not installed on this host: no {UNIT} unit, no Grafana binary"
        f" ({', '.join(BINARIES)}), and nothing answers at {url}",
        evidence={"installation": facts, "error": error},
    )


# -- Grafana's API ---------------------------------------------------------------------------------


def check_login(client):
    if client.password is None:
        return {"user": client.user, "checked": False}
    return api.summarise_login(client.user, client.get("/api/user"))


def read_datasources(client, result):
    answer = client.get("/api/datasources")
    if answer.status != 200 or not isinstance(answer.json, list):
        result["datasources_error"] = f"GET /api/datasources: HTTP {answer.status} {answer.message}".rstrip()
        return []
    out = []
    for ds in answer.json:
        if not isinstance(ds, dict):
            continue
        entry = api.datasource_entry(ds)
        if entry["uid"]:
            uid = urllib.parse.quote(str(entry["uid"]), safe="")
            api.datasource_health(entry, client.get(f"/api/datasources/uid/{uid}/health"))
        out.append(entry)
    return out


def read_settings(client, result):
    answer = client.get("/api/admin/settings")
    if answer.status != 200 or not isinstance(answer.json, dict):
        result["auth_settings_error"] = (
            f"GET /api/admin/settings: HTTP {answer.status} {answer.message}".rstrip()
        )
        return None
    return api.auth_settings(answer.json)


# -- the reset ---------------------------------------------------------------------------------------


def reset_password(module, client, result):
    """Reset the admin password with the CLI when the login with the new password is refused.
    Returns the login check to report, the remediation for its finding, and the password that
    logs in (None when none does)."""
    p = module.params
    reset = result["reset"]
    target = p["new_admin_password"]
    login = result["admin_login"]
    target_login = login if p["admin_password"] == target else check_login(client.with_password(target))
    if not target_login.get("refused"):
        if target_login.get("ok"):
            reset["reason"] = "the admin login with the new password works: nothing to reset"
            return target_login, None, target
        reset["reason"] = "the admin login could not be checked (HTTP {}): not reset".format(
            target_login.get("status_code")
        )
        return login, None, (p["admin_password"] if login.get("ok") else None)
    reset["needed"] = True
    argv = api.reset_command(
        p["grafana_cli"], p["homepath"], p["config"], target, from_stdin=p["password_from_stdin"]
    )
    binary = find_binary(module, argv[0])
    if binary:
        argv[0] = binary
    reset["command"] = api.shown(argv, target)
    how = "grafana-cli admin reset-admin-password (to the password given)"
    if module.check_mode:
        result["changed"] = True
        return target_login, f"would reset the admin password with {how}", None
    if not binary:
        module.fail_json(
            msg="cannot reset Grafana's admin password: {} not found (PATH, {}); set grafana_cli".format(
                argv[0], ", ".join(BIN_DIRS)
            ),
            **result,
        )
    rc, out, err = module.run_command(argv, data=target if p["password_from_stdin"] else None)
    output = api.scrub("\n".join(part.strip() for part in (out, err) if part and part.strip()), target)
    reset.update(rc=rc, output=output)
    if rc != 0:
        module.fail_json(msg=f"grafana-cli could not reset the admin password (rc {rc}): {output}", **result)
    reset["done"] = True
    result["changed"] = True
    after = check_login(client.with_password(target))
    if after.get("ok"):
        return after, f"admin password reset with {how}; the admin login works now", target
    return (
        after,
        "admin password reset with {}, but the login is still refused: {}".format(
            how, after.get("message") or "HTTP {}".format(after.get("status_code"))
        ),
        None,
    )


# -- the module --------------------------------------------------------------------------------------


def diagnose(module):
    """The module's result (exit_json's keyword arguments) for its params and check mode."""
    p = module.params
    url = p["url"].rstrip("/")
    client = api.GrafanaClient(url, p["admin_user"], p["admin_password"], p["timeout"])
    result = {
        "changed": False,
        "url": url,
        "available": False,
        "installed": False,
        "admin_login": {"user": p["admin_user"], "checked": False},
        "datasources": [],
        "auth_settings": None,
        "reset": {
            "requested": p["reset_admin_password"],
            "needed": False,
            "done": False,
            "command": None,
            "rc": None,
            "output": None,
            "reason": None,
        },
        "findings": [],
    }
    result["installation"] = facts = installation(module, p["grafana_cli"])
    try:
        result["health"] = health = api.summarise_health(client.get("/api/health", auth=False))
    except api.GrafanaUnreachable as exc:
        reason = str(exc)
        result["error"] = error = f"GET {url}/api/health: {reason}"
        result["installed"] = installed = bool(facts["unit_exists"] or facts["binaries"])
        if not installed:
            result["reset"]["reason"] = "Grafana is not installed on this host"
            result["findings"] = [absent_finding(url, facts, error)]
            return result
        if facts["unit_exists"]:
            state = f"{UNIT} {facts['active_state']} ({facts['sub_state']})"
        else:
            state = "binaries " + ", ".join(facts["binaries"])
        result["reset"]["reason"] = "Grafana does not answer: whether it takes the admin login is unknown"
        result["findings"] = [
            finding(
                "critical",
                api.COMPONENT,
                "reachable",
                f"Grafana is installed on this host ({state}) but nothing answers at {url}: {reason}",
                evidence={"installation": facts, "error": error},
            )
        ]
        return result
    result.update(available=True, installed=True)
    findings = api.health_findings(url, health)

    login = result["admin_login"] = check_login(client)
    password = p["admin_password"] if login.get("ok") else None
    remediation = None
    if p["reset_admin_password"]:
        login, remediation, password = reset_password(module, client, result)
        result["admin_login"] = login
    findings += api.login_findings(url, login, remediation)
    if remediation and not any(f["check"] == "admin_login" for f in findings):
        # The reset worked: the refused login it repaired stays the finding, with what was done.
        findings.append(
            finding(
                "critical",
                api.COMPONENT,
                "admin_login",
                f"Grafana at {url} refused the admin login of {p['admin_user']!r}",
                evidence={"user": p["admin_user"], "reset_command": result["reset"]["command"]},
                remediation=remediation,
            )
        )

    if password is not None:
        authed = client.with_password(password)
        result["datasources"] = read_datasources(authed, result)
        findings += api.datasource_findings(result["datasources"])
        result["auth_settings"] = read_settings(authed, result)
        if result["auth_settings"] is not None:
            findings += api.settings_findings(url, result["auth_settings"])
    else:
        why = "the admin login is refused" if login.get("refused") else "no working admin login"
        if not login.get("checked"):
            why = "no admin password given"
        result["datasources_error"] = result["auth_settings_error"] = why
    result["findings"] = findings
    return result


def main():
    module = AnsibleModule(
        argument_spec=argument_spec(),
        supports_check_mode=True,
        required_if=[("reset_admin_password", True, ("new_admin_password",))],
    )
    if not module.params["grafana_cli"]:
        module.fail_json(msg="grafana_cli must name a command")
    if not module.params["url"].startswith(("http://", "https://")):
        module.fail_json(msg=f"url must be http:// or https://, not {module.params['url']!r}")
    if module.params["timeout"] <= 0:
        module.fail_json(msg=f"timeout must be more than 0, not {module.params['timeout']}")
    module.exit_json(**diagnose(module))


if __name__ == "__main__":
    main()
