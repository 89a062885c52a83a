"""auditlog.ops.name_resolution run as a playbook runs it (`ansible localhost -m ...`), against a
temporary copy of a hosts file (option hosts_file) with a wrong entry for a name: the finding,
the fix in check mode (nothing changed, the diff shown), the fix for real, then no change.
Resolution itself is the machine's (getaddrinfo); the system's /etc/hosts is never written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# localhost resolves on every machine; the copy's second line maps it (wrongly) elsewhere too,
# and gives a name of its own to the same address.
HOSTS = "127.0.0.1\tlocalhost\n10.99.0.9\tlocalhost db1-stale\n# end\n"


def run_module(args: dict, *flags: str, callback: str = "ansible.posix.json") -> tuple[int, dict, str]:
    """Run the module once; (exit code, its result, the output). With another callback than
    json (to see what an operator sees), the result is {}."""
    env = dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK=callback,
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    ansible = shutil.which("ansible", path=str(Path(sys.executable).parent)) or "ansible"
    proc = subprocess.run(
        [
            ansible,
            "localhost",
            "-m",
            "auditlog.ops.name_resolution",
            "-a",
            json.dumps(args),
            # The targets' interpreter, without the venv's packages (as tests/support/modules.py).
            "-e",
            "ansible_python_interpreter=/usr/bin/python3",
            *flags,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if callback != "ansible.posix.json":
        return proc.returncode, {}, proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    return proc.returncode, data["plays"][0]["tasks"][0]["hosts"]["localhost"], proc.stdout + proc.stderr


def test_wrong_entry_found_fixed_in_check_mode_then_for_real(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS)
    hosts.chmod(0o640)
    args = {
        "names": {"localhost": ["127.0.0.1"], "no-such-host.invalid": None},
        "family": "ipv4",
        "hosts_file": str(hosts),
    }

    rc, result, out = run_module(args)
    assert rc == 0 and result["changed"] is False, out
    local = result["names"]["localhost"]
    assert local["resolved"] and local["addresses"] == ["127.0.0.1"]
    assert [e["line"] for e in local["hosts_file_entries"]] == [1, 2]
    assert local["wrong_entries"][0]["address"] == "10.99.0.9"
    assert result["names"]["no-such-host.invalid"]["resolved"] is False
    assert result["resolver"]["nsswitch_hosts"] and "files" in result["resolver"]["nsswitch_hosts"]
    by_check = {f["check"]: f for f in result["findings"]}
    assert set(by_check) == {"address", "resolve"}
    wrong = by_check["address"]
    assert wrong["severity"] == "critical" and wrong["component"] == "dns" and wrong["host"] == "localhost"
    assert f"{hosts} maps localhost to 10.99.0.9, expected 127.0.0.1" in wrong["summary"]
    assert "line 2" in wrong["summary"] and wrong["remediation"] is None
    assert "no-such-host.invalid does not resolve" in by_check["resolve"]["summary"]

    # Check mode: the change is reported and shown, the file stays as it is.
    args.update(fix_hosts_file=True, names={"localhost": ["127.0.0.1"]})
    rc, result, out = run_module(args, "--check", "--diff")
    assert rc == 0 and result["changed"] is True, out
    assert hosts.read_text() == HOSTS
    assert result["diff"]["before"] == HOSTS
    assert result["diff"]["after"] == "127.0.0.1\tlocalhost\n10.99.0.9\tdb1-stale\n# end\n"
    (found,) = result["findings"]
    assert found["remediation"].startswith(f"would have removed localhost from line 2 of {hosts}")
    # What --check --diff shows an operator: the unified diff of the hosts file.
    rc, _, out = run_module(args, "--check", "--diff", callback="default")
    assert rc == 0 and "-10.99.0.9\tlocalhost db1-stale" in out and "+10.99.0.9\tdb1-stale" in out, out
    assert hosts.read_text() == HOSTS

    # For real: only that name dropped from the line; mode kept; a backup made.
    rc, result, out = run_module({**args, "backup": True})
    assert rc == 0 and result["changed"] is True, out
    assert hosts.read_text() == "127.0.0.1\tlocalhost\n10.99.0.9\tdb1-stale\n# end\n"
    assert (hosts.stat().st_mode & 0o777) == 0o640
    assert Path(result["backup_file"]).read_text() == HOSTS
    assert result["written_in_place"] is False
    (found,) = result["findings"]
    assert found["remediation"].startswith(f"removed localhost from line 2 of {hosts}")
    assert found["remediation"].endswith("localhost now resolves to 127.0.0.1")

    # Again: nothing to do, no finding.
    rc, result, out = run_module(args)
    assert rc == 0 and result["changed"] is False and result["findings"] == [], out


def test_add_missing_adds_a_line_once(tmp_path):
    hosts = tmp_path / "hosts"
    hosts.write_text("127.0.0.1 localhost\n")
    args = {
        "names": [{"name": "api-test.invalid", "expected": ["10.20.0.20"]}],
        "hosts_file": str(hosts),
        "fix_hosts_file": True,
    }
    # Without add_missing nothing is added.
    rc, result, out = run_module(args)
    assert rc == 0 and result["changed"] is False, out
    assert result["findings"][0]["check"] == "resolve"
    rc, result, out = run_module({**args, "add_missing": True})
    assert rc == 0 and result["changed"] is True, out
    assert hosts.read_text() == "127.0.0.1 localhost\n10.20.0.20 api-test.invalid\n"
    rc, result, out = run_module({**args, "add_missing": True})
    assert rc == 0 and result["changed"] is False, out


def test_bad_names_fail_with_a_message():
    rc, result, out = run_module({"names": [{"name": "db1", "expected": ["not-an-address"]}]})
    assert rc != 0 and result["failed"] and "not an IP address" in result["msg"], out
    assert "Traceback" not in out
