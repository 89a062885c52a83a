# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""The audit service's own CLI (`audit-service <command>`) run as one of its systemd units runs:
as the service's user (`runuser -u`), with the unit's environment files, and its one-line JSON
report read back. For the modules that run a service operation (retention, chain_verify).

The module itself runs as root, which alone may read the environment files (mode 0600); runuser
keeps the environment, so the secrets in them never appear on a command line.
"""

import json
import os


def argument_spec():
    """The options every module that runs the service's CLI takes (doc fragment
    auditlog.ops.service_cli documents command and run_as; each module its env_files)."""
    return dict(
        command=dict(type="path", default="/opt/audit-service/bin/audit-service"),
        env_files=dict(type="list", elements="path", required=True),
        run_as=dict(type="str", default="audit-service"),
    )


def read_env_file(text):
    """KEY=VALUE lines as systemd's EnvironmentFile reads them (comments, blank lines, quotes)."""
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")) or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def cli_argv(run_as, command, args):
    """The command line: the service's console script as its user, the secrets left out."""
    return ["runuser", "-u", run_as, "--", command, *args]


def last_json(out):
    """The report: the last line of stdout that is a JSON object, or None."""
    for line in reversed((out or "").strip().splitlines()):
        line = line.strip()
        if not line:
            continue
        try:
            value = json.loads(line)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None
    return None


def run(module, command, env_files, run_as, args, ok_rcs=(0,)):
    """Run `command args...` as the unit does; returns (exit code, report).

    Fails the module (naming the file or the command's error) when the command is missing, an
    environment file cannot be read, the command exits with a code not in ok_rcs, or it printed no
    JSON report. ok_rcs: the exit codes that come with a report (verify: 1 is a broken chain).
    """
    name = "audit-service " + (args[0] if args else "")
    if not os.access(command, os.X_OK):
        module.fail_json(
            msg=f"{command} is not there or not executable: is the service deployed on this host?"
        )
    environ = {}
    for path in env_files:
        try:
            with open(path) as env_file:
                environ.update(read_env_file(env_file.read()))
        except OSError as exc:
            module.fail_json(msg=f"cannot read the environment file {path}: {exc.strerror}")
    rc, out, err = module.run_command(cli_argv(run_as, command, args), environ_update=environ)
    report = last_json(out)
    if rc not in ok_rcs or (report is None and rc != 0):
        # An error (stderr says which): a code of its own, or one shared with a report, without it.
        module.fail_json(msg=f"{name} exited {rc}: {err.strip() or out.strip()[:500]}", rc=rc)
    if report is None:
        module.fail_json(msg=f"{name} printed no report: {out.strip()[:500]}", rc=rc)
    return rc, report
