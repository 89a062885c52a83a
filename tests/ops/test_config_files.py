"""auditlog.ops.config_files on the controller itself (connection local, files under a temporary
directory): directories, files from a template, a file and a content, and links in one call;
idempotence, check mode, the diff with secrets masked, and a key that never shows.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess

import pytest
import yaml
from audit_devtools import lab as lablib

SECRET = "s3cret-Pa55/word"
KEY = "-----BEGIN PRIVATE KEY-----\nnot-a-real-key-but-secret\n-----END PRIVATE KEY-----\n"


@pytest.fixture
def play(tmp_path):
    """Runs a play of one config_files task (its args given) against tmp_path; returns the output."""
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "app.conf.j2").write_text(
        "# {{ ansible_managed }}\n"
        "url=postgresql://u:{{ app_password | urlencode }}@db/x\n"
        "name={{ unit_name }}\n"
    )
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / "server.key").write_text(KEY)

    def run(args, *options, ok=True):
        playbook = tmp_path / "play.yml"
        task = {"name": "Config files", "auditlog.ops.config_files": args}
        play = {
            "hosts": "localhost",
            "gather_facts": False,
            "vars": {"app_password": SECRET},
            "tasks": [task],
        }
        playbook.write_text(yaml.safe_dump([play], sort_keys=False))
        env = dict(os.environ, ANSIBLE_CONFIG=str(lablib.ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
        python = shutil.which("python3")
        argv = [str(lablib.ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local"]
        argv += ["-e", f"ansible_python_interpreter={python}", str(playbook), *options]
        proc = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        output = proc.stdout + proc.stderr
        assert (proc.returncode == 0) == ok, output
        return output

    return run


def stack(root):
    return {
        "directories": [{"path": f"{root}/etc/app/tls", "mode": "0750"}],
        "files": [
            {
                "dest": f"{root}/etc/app/app.conf",
                "template": "app.conf.j2",
                "vars": {"unit_name": "api"},
                "mode": "0600",
            },
            {"dest": f"{root}/etc/app/tls/server.key", "src": "server.key", "mode": "0600", "diff": False},
            {"dest": f"{root}/etc/app/motd", "content": "hello\n", "mode": "0644"},
        ],
        "links": [{"dest": f"{root}/etc/app/current", "src": "tls"}],
        "mask": ["app_password"],
    }


def recap_changed(output):
    return int(output.split("changed=")[-1].split()[0])


def test_first_run_makes_every_item_and_a_second_run_changes_nothing(play, tmp_path):
    first = play(stack(tmp_path))
    assert recap_changed(first) == 1, first
    conf = tmp_path / "etc" / "app" / "app.conf"
    assert conf.read_text().endswith("url=postgresql://u:s3cret-Pa55/word@db/x\nname=api\n")
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "etc/app/tls").stat().st_mode) == 0o750
    assert (tmp_path / "etc/app/tls/server.key").read_text() == KEY
    assert os.readlink(tmp_path / "etc/app/current") == "tls"
    assert not [p for p in (tmp_path / "etc/app").iterdir() if p.name.startswith(".")], (
        "a temporary file was left"
    )
    second = play(stack(tmp_path))
    assert recap_changed(second) == 0, second


def test_check_mode_shows_the_hand_edit_masked_and_changes_nothing(play, tmp_path):
    play(stack(tmp_path))
    conf = tmp_path / "etc" / "app" / "app.conf"
    conf.write_text(conf.read_text().replace("name=api", "name=hand-edited"))
    conf.chmod(0o644)
    (tmp_path / "etc/app/tls/server.key").write_text("other\n")
    check = play(stack(tmp_path), "--check", "--diff")
    assert recap_changed(check) == 1, check
    assert "-name=hand-edited" in check and "+name=api" in check, check
    assert " url=postgresql://u:********@db/x" in check, check  # a context line, masked too
    assert "-mode: 0644" in check and "+mode: 0600" in check, check
    assert "server.key: content changed (not shown)" in check, check
    assert "name=hand-edited" in conf.read_text() and stat.S_IMODE(conf.stat().st_mode) == 0o644
    healed = play(stack(tmp_path), "--diff")
    assert recap_changed(healed) == 1 and "name=api" in conf.read_text()
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
    assert (tmp_path / "etc/app/tls/server.key").read_text() == KEY


def test_no_secret_and_no_key_reaches_the_output_even_verbose(play, tmp_path):
    output = play(stack(tmp_path), "--diff", "-vvv")
    for secret in (SECRET, "not-a-real-key-but-secret"):
        assert secret not in output, f"{secret!r} is in the output"


def test_a_file_with_two_sources_is_refused_by_index_and_dest(play, tmp_path):
    args = {"files": [{"dest": f"{tmp_path}/x", "content": "a", "template": "app.conf.j2"}]}
    output = play(args, ok=False)
    assert (
        f"files[0] ({tmp_path}/x) needs exactly one of template, src and content, not template, content"
        in output
    )
    assert not (tmp_path / "x").exists()
