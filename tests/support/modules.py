"""Run one of the collection's modules as a playbook would: `ansible localhost -m auditlog.ops.X`.

The module runs under /usr/bin/python3 (the targets' interpreter, without the venv's packages),
so a module that imports anything beyond the standard library (and, on database hosts,
python3-psycopg2) fails here as it would on a target.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TARGET_PYTHON = "/usr/bin/python3"


def _ansible() -> str:
    return shutil.which("ansible", path=str(Path(sys.executable).parent)) or "ansible"


def run_module(
    module: str, args: dict, *flags: str, timeout: float = 120, env: dict | None = None
) -> tuple[int, dict, str]:
    """Run auditlog.ops.<module> once; return (exit code, the module's result, the whole output).
    env: variables to add to the module's environment (TZ, say)."""
    extra, env = env or {}, dict(os.environ)
    env.update(
        ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
        ANSIBLE_NOCOLOR="1",
        # The json callback: one document with each host's result, easy to read back.
        ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
        ANSIBLE_LOCALHOST_WARNING="0",
        ANSIBLE_INVENTORY_UNPARSED_WARNING="0",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    )
    proc = subprocess.run(
        [
            _ansible(),
            "localhost",
            "-m",
            f"auditlog.ops.{module}",
            "-a",
            json.dumps(args),
            "-e",
            f"ansible_python_interpreter={TARGET_PYTHON}",
            *flags,
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    output = proc.stdout + proc.stderr
    try:
        data = json.loads(proc.stdout)
    except ValueError as exc:
        raise AssertionError(f"no JSON from ansible (rc {proc.returncode}):\n{output}") from exc
    result = data["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return proc.returncode, result, output
