"""auditlog.ops.nats_stream against a real nats-server (JetStream, user auth) on loopback.

The server is Debian's nats-server binary, started by audit_devtools.stack's `Nats` on free ports; the
module runs through `ansible localhost -m auditlog.ops.nats_stream`, as a playbook would run it.
No lab, no containers.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from audit_devtools.stack import Nats
from support.pki import make_pki

ROOT = Path(__file__).resolve().parents[2]
NS = 1_000_000_000

pytestmark = pytest.mark.skipif(
    not (shutil.which("nats-server") or Path("/usr/sbin/nats-server").exists()),
    reason="needs Debian's nats-server binary",
)


def _ansible():
    return shutil.which("ansible", path=str(Path(sys.executable).parent)) or "ansible"


def run_module(nats: Nats, *flags: str, password: str | None = None, **args) -> tuple[int, dict, str]:
    """Run the module once; return (exit code, the module's result, the whole output)."""
    params = {
        "name": "audit-logs",
        "subjects": ["audit.logs.>"],
        "storage": "file",
        "retention": "limits",
        "max_age": 7 * 86400,
        "duplicate_window": 120,
        "server_host": "127.0.0.1",
        "server_port": nats.port,
        "user": "audit",
        "password": nats.password if password is None else password,
        "timeout": 5,
    }
    params.update(args)
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        # The json callback: one document with each host's result, easy to read back.
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    proc = subprocess.run(
        [_ansible(), "localhost", "-m", "auditlog.ops.nats_stream", "-a", json.dumps(params), *flags],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    result = data["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return proc.returncode, result, output


def stream_config(nats: Nats) -> dict | None:
    """The stream's configuration as the server has it (the module's own client, independently)."""
    from ansible_collections.auditlog.ops.plugins.module_utils.nats_api import NatsClient

    with NatsClient(port=nats.port, user="audit", password=nats.password, timeout=5) as client:
        info = client.stream_info("audit-logs")
    return None if info is None else info["config"]


@pytest.fixture(scope="module")
def nats(tmp_path_factory):
    server = Nats(tmp_path_factory.mktemp("nats-stream"))
    server.start()
    yield server
    server.stop()


def test_lifecycle(nats):
    # Create.
    rc, result, out = run_module(nats)
    assert rc == 0, out
    assert result["changed"] and result["operation"] == "create"
    assert result["is_available"] and result["server"]["jetstream"] is True
    config = stream_config(nats)
    assert config["storage"] == "file" and config["retention"] == "limits"
    assert config["max_age"] == 7 * 86400 * NS and config["duplicate_window"] == 120 * NS
    assert config["subjects"] == ["audit.logs.>"]

    # The same again: nothing to do.
    rc, result, out = run_module(nats)
    assert rc == 0, out
    assert not result["changed"] and result["operation"] == "none"
    assert result["diff"] == {"before": {}, "after": {}}

    # Another max_age: an update, with the diff, shown under --diff.
    rc, result, out = run_module(nats, "--diff", max_age=86400)
    assert rc == 0, out
    assert result["changed"] and result["operation"] == "update"
    assert result["diff"] == {"before": {"max_age": 604800}, "after": {"max_age": 86400}}
    assert stream_config(nats)["max_age"] == 86400 * NS

    # Check mode: reports the change, leaves the server as it is.
    rc, result, out = run_module(nats, "--check", max_age=7 * 86400)
    assert rc == 0, out
    assert result["changed"] and result["diff"]["after"] == {"max_age": 604800}
    assert stream_config(nats)["max_age"] == 86400 * NS

    # Back to the service's settings; then idempotent again.
    assert run_module(nats)[1]["changed"]
    assert not run_module(nats)[1]["changed"]

    # The password never shows up in the output.
    assert nats.password not in out


def test_absent(nats):
    run_module(nats, name="scratch", subjects=["scratch.>"], storage="memory")
    rc, result, out = run_module(nats, "--check", name="scratch", state="absent")
    assert rc == 0 and result["changed"] and result["operation"] == "delete", out
    rc, result, out = run_module(nats, name="scratch", state="absent")
    assert rc == 0 and result["changed"], out
    rc, result, out = run_module(nats, name="scratch", state="absent")
    assert rc == 0 and not result["changed"], out


def test_server_refusing_an_update_fails_cleanly(nats):
    run_module(nats)
    rc, result, out = run_module(nats, storage="memory")
    assert rc != 0
    assert result["failed"] and "Traceback" not in out
    assert f"127.0.0.1:{nats.port}" in result["msg"] and "storage" in result["msg"]


def test_wrong_password_fails_with_a_clear_message(nats):
    rc, result, out = run_module(nats, password="not-the-password-at-all")
    assert rc != 0
    assert result["failed"] and not result["is_available"]
    assert "Authorization Violation" in result["msg"] and f"127.0.0.1:{nats.port}" in result["msg"]
    assert "Traceback" not in out


def test_server_down_fails_with_host_and_port(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = Nats(tmp_path)
    down.port = port  # nothing listens there
    started = time.monotonic()
    rc, result, out = run_module(down)
    assert rc != 0
    assert result["failed"] and result["is_available"] is False
    assert result["msg"].startswith(f"cannot connect to NATS at 127.0.0.1:{port}")
    assert "Traceback" not in out
    assert time.monotonic() - started < 60


@pytest.fixture(scope="module")
def nats_tls(tmp_path_factory):
    pki = make_pki(tmp_path_factory.mktemp("pki"))
    server = Nats(
        tmp_path_factory.mktemp("nats-tls"),
        tls={"cert": pki["server"], "key": pki["server_key"], "ca": pki["ca"]},
    )
    server.start()
    yield server, pki
    server.stop()


def test_over_tls_the_module_shows_its_client_certificate(nats_tls):
    nats, pki = nats_tls
    tls = {"ca_file": str(pki["ca"]), "client_cert": str(pki["client"]), "client_key": str(pki["client_key"])}
    rc, result, out = run_module(nats, **tls)
    assert rc == 0, out
    assert result["operation"] == "create" and result["is_available"]
    rc, result, out = run_module(nats, **tls)
    assert rc == 0 and not result["changed"] and result["operation"] == "none", out


def test_over_tls_a_missing_client_certificate_or_a_foreign_ca_is_reported(nats_tls):
    nats, pki = nats_tls
    rc, result, out = run_module(nats, ca_file=str(pki["ca"]))
    assert rc != 0 and result["is_available"] is False, out
    assert "TLS" in result["msg"] or "closed" in result["msg"] or "certificate" in result["msg"], result[
        "msg"
    ]
    rc, result, out = run_module(
        nats, ca_file=str(pki["other-ca"]), client_cert=str(pki["client"]), client_key=str(pki["client_key"])
    )
    assert rc != 0 and result["is_available"] is False, out
    assert "does not verify" in result["msg"], result["msg"]
