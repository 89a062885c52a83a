"""The local lab for the tests and the demo: systemd containers, one per host of inventories/lab.

A test session creates the lab once (`create`, through playbooks/lab.yml), runs playbooks and
commands against it (`run_playbook`, `Lab.exec`) and destroys it at the end (`destroy`), unless
LAB_KEEP=1 asks to keep it for the next session or for a look by hand. The pytest fixture that does
so is `lab`, in tests/lab/conftest.py.

Every ansible-playbook run is logged in full under .cache/lab-logs/ (the newest run's path is in
the result), since pytest shows only the tail of a failed one.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from audit_devtools import ROOT

LAB_INVENTORY = ROOT / "inventories" / "lab"
# Which lab (inventories/lab/group_vars/all.yml): AUDIT_LAB names it, `lab` (the user's) unless set;
# the test session sets `lab-test` (tests/conftest.py). AUDIT_LAB_PORT_OFFSET moves its ports.
LAB_ID = os.environ.get("AUDIT_LAB") or "lab"
PORT_OFFSET = int(os.environ.get("AUDIT_LAB_PORT_OFFSET") or 0)
LOG_DIR = ROOT / ".cache" / "lab-logs"
# The secrets the common role generates into the secrets file (the tests' own statement of it).
SECRET_NAMES = [
    "audit_db_password",
    "audit_db_owner_password",
    "audit_db_retention_password",
    "audit_redis_password",
    "audit_redis_exporter_password",
    "audit_redis_admin_password",
    "audit_nats_publisher_password",
    "audit_nats_consumer_password",
    "audit_nats_admin_password",
    "audit_nats_route_password",
    "audit_admin_api_key",
    "audit_grafana_admin_password",
]


def secrets_path(inventory_dir: str | Path) -> Path:
    """Where the common role keeps an inventory's secrets file by default: beside the inventory
    directory (inventories/lab -> inventories/lab.secrets.yml), not in it."""
    inventory_dir = Path(inventory_dir)
    return inventory_dir.parent / f"{inventory_dir.name}.secrets.yml"


def pki_path(inventory_dir: str | Path) -> Path:
    """Where the common role keeps an inventory's CA and host certificates (inventories/lab ->
    inventories/lab.pki)."""
    inventory_dir = Path(inventory_dir)
    return inventory_dir.parent / f"{inventory_dir.name}.pki"


# The lab's secrets file and CA (inventories/lab/group_vars/all.yml): inventories/lab.secrets.yml
# and inventories/lab.pki for the user's lab.
LAB_SECRETS = ROOT / "inventories" / f"{LAB_ID}.secrets.yml"
LAB_PKI = ROOT / "inventories" / f"{LAB_ID}.pki"

# nginx of the lab, as published on the controller's loopback (inventories/lab/hosts.yml): HTTPS,
# and HTTP, which only redirects to it; Prometheus.
LB_URL = f"https://127.0.0.1:{18443 + PORT_OFFSET}"
LB_HTTP_URL = f"http://127.0.0.1:{18080 + PORT_OFFSET}"
PROMETHEUS_URL = f"http://127.0.0.1:{19090 + PORT_OFFSET}"


def lab_tls() -> ssl.SSLContext:
    """A TLS context trusting the lab's CA only: nginx's certificate names 127.0.0.1 too."""
    return ssl.create_default_context(cafile=str(LAB_PKI / "ca.crt"))


def lb(**kwargs) -> httpx.Client:
    """An HTTP client for the lab's nginx over HTTPS, checking its certificate."""
    kwargs.setdefault("timeout", 30)
    return httpx.Client(base_url=LB_URL, verify=lab_tls(), **kwargs)


def lb_request(method: str, path: str, **kwargs) -> httpx.Response:
    """One request to the lab's nginx over HTTPS (path: /api/...)."""
    with lb() as client:
        return client.request(method, path, **kwargs)


# Building both base images from nothing takes a few minutes; a normal run, well under one.
PLAYBOOK_TIMEOUT = 1800

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_RECAP = re.compile(
    r"^[\s│]*(?P<host>\S+)\s+:\s+ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)"
    r"\s+failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.MULTILINE,
)


def _tool(name: str) -> str:
    """An Ansible command from the running interpreter's environment (the project's venv)."""
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install the ops extra (pip install -e '.[test,ops]')")
    return found


def _env() -> dict[str, str]:
    env = dict(os.environ)
    # ansible.cfg is read from the working directory only when that is safe; name it explicitly.
    env["ANSIBLE_CONFIG"] = str(ROOT / "ansible.cfg")
    env["ANSIBLE_NOCOLOR"] = "1"
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["NO_COLOR"] = "1"
    # molecule wraps output lines at the terminal's width: wide enough to keep a recap line whole.
    env["COLUMNS"] = "500"
    # Modules and the docker CLI come from the same environment as ansible-playbook.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


@dataclass
class PlaybookResult:
    """One ansible-playbook run: exit code, full output and the recap's counters per host."""

    args: list[str]
    rc: int
    output: str
    log: Path
    seconds: float
    stats: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.rc == 0

    @property
    def changed(self) -> int:
        """Changed tasks over all hosts (0 for an idempotent second run)."""
        return sum(s["changed"] for s in self.stats.values())

    @property
    def failed(self) -> int:
        return sum(s["failed"] + s["unreachable"] for s in self.stats.values())

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output.splitlines()[-lines:])

    def describe(self) -> str:
        """For assertion messages: the command, its exit code, its log and its last lines."""
        return f"{shlex.join(self.args)} -> rc={self.rc} (log: {self.log})\n{self.tail()}"


def _reports_root() -> Path:
    root = LOG_DIR / "reports"
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass
class RunbookResult(PlaybookResult):
    """A runbook's run: the playbook's result and the report it left (docs/reports.md)."""

    report: dict | None = None
    report_dir: Path | None = None

    def findings(self, **match) -> list[dict]:
        """The report's findings whose fields equal every keyword given (host=, component=...)."""
        found = (self.report or {}).get("findings", [])
        return [f for f in found if all(f.get(k) == v for k, v in match.items())]

    def describe(self) -> str:
        findings = "\n".join(
            f"  {f['severity']:8} {f['host']:6} {f['component']:10} {f['check']}: {f['summary']}"
            for f in (self.report or {}).get("findings", [])
        )
        return f"{super().describe()}\nfindings:\n{findings or '  (none)'}"


def run_playbook(
    playbook: str | Path,
    *args: str,
    extra_vars: dict | None = None,
    inventory: str | Path | None = None,
    limit: str | None = None,
    check: bool = False,
    diff: bool = False,
    timeout: float = PLAYBOOK_TIMEOUT,
    stream: bool = False,
    env: dict[str, str] | None = None,
) -> PlaybookResult:
    """Run a playbook (path relative to the repository root, or absolute) and parse its recap.

    `env` adds environment variables (e.g. ANSIBLE_* settings). Does not raise on failure: look
    at `.ok`, `.changed`, `.stats` and `.describe()`.
    """
    cmd = [_tool("ansible-playbook"), str(playbook)]
    if inventory is not None:
        cmd += ["-i", str(inventory)]
    if limit:
        cmd += ["--limit", limit]
    if extra_vars:
        cmd += ["-e", json.dumps(extra_vars)]
    if check:
        cmd.append("--check")
    if diff:
        cmd.append("--diff")
    cmd += list(args)

    return _run(cmd, Path(playbook).stem, timeout, stream, env)


def _new_log(name: str) -> Path:
    """A log file of the run's own, claimed now: runs of the same playbook may start in the same
    second (make test runs the lab tests and the others side by side)."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{name}"
    log, n = LOG_DIR / f"{stem}.log", 1
    while True:
        try:
            log.touch(exist_ok=False)
            return log
        except FileExistsError:
            n += 1
            log = LOG_DIR / f"{stem}-{n}.log"


def _run(
    cmd: list[str], name: str, timeout: float, stream: bool = False, env: dict[str, str] | None = None
) -> PlaybookResult:
    """Run an Ansible tool from the repository root, log its output and parse the recap.

    With stream=True the output is also copied to stdout as it comes (for long runs a person watches).
    """
    log = _new_log(name)
    started = time.monotonic()
    with subprocess.Popen(
        cmd, cwd=ROOT, env=_env() | (env or {}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        lines = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if stream:
                sys.stdout.write(line)
                sys.stdout.flush()
        rc = proc.wait()
        if not killer.is_alive():
            lines.append(f"\n(killed after {timeout:.0f} s)\n")
        killer.cancel()
    # molecule frames and colours ansible-playbook's output: drop that to read the recap.
    output = _ANSI.sub("", "".join(lines))
    log.write_text(f"$ {shlex.join(cmd)}\n{output}")
    stats = {}
    for m in _RECAP.finditer(output):
        stats[m["host"]] = {k: int(v) for k, v in m.groupdict().items() if k != "host"}
    return PlaybookResult(cmd, rc, output, log, time.monotonic() - started, stats)


def molecule(command: str, scenario: str = "default", timeout: float = PLAYBOOK_TIMEOUT) -> PlaybookResult:
    """Run one molecule step (converge, idempotence, check, verify...) of a scenario on the lab.

    The result is read like a playbook's: for converge, idempotence and check `.stats` holds the
    recap of the ansible-playbook run molecule made.
    """
    return _run(
        [_tool("molecule"), command, "--scenario-name", scenario], f"molecule-{scenario}-{command}", timeout
    )


def create(inventory: str | Path = LAB_INVENTORY, stream: bool = False) -> PlaybookResult:
    """Create (or converge) the lab: engine, base images, network, containers."""
    return run_playbook(
        "playbooks/lab.yml", inventory=inventory, extra_vars={"lab_state": "present"}, stream=stream
    )


def destroy(inventory: str | Path = LAB_INVENTORY) -> PlaybookResult:
    """Remove the lab's containers and network (the base images stay)."""
    return run_playbook("playbooks/lab.yml", inventory=inventory, extra_vars={"lab_state": "absent"})


def existing_containers(inventory: str | Path = LAB_INVENTORY) -> list[str]:
    """The inventory's containers that exist now, running or not ([] when Docker is not up yet)."""
    lab = Lab(inventory)
    names = {lab.container(h) for h in lab.hosts}
    try:
        out = subprocess.run(
            ["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return sorted(names & set(out.stdout.split())) if out.returncode == 0 else []


def with_lab_id(value: str) -> str:
    """A hosts.yml value with the lab's id put in (`ansible-inventory --list`, which the tests and
    testinfra read, does not template: audit-{{ lab_id }}-db1 -> audit-lab-test-db1)."""
    return value.replace("{{ lab_id }}", LAB_ID)


def inventory_hosts(inventory: str | Path = LAB_INVENTORY) -> dict[str, dict]:
    """Every host of the inventory with its variables (group_vars merged), as Ansible sees them."""
    out = subprocess.run(
        [_tool("ansible-inventory"), "-i", str(inventory), "--list"],
        cwd=ROOT,
        env=_env(),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    data = json.loads(out)
    hostvars = data.get("_meta", {}).get("hostvars", {})
    hosts = {h for name, group in data.items() if name != "_meta" for h in group.get("hosts", [])}
    return {h: hostvars.get(h, {}) for h in hosts}


class Lab:
    """A created lab: its hosts, their containers, and ways to act on them."""

    def __init__(self, inventory: str | Path = LAB_INVENTORY):
        self.inventory = Path(inventory)
        self.hostvars = inventory_hosts(self.inventory)

    @property
    def hosts(self) -> list[str]:
        return sorted(self.hostvars)

    def container(self, host: str) -> str:
        """The container behind an inventory host (its ansible_host, with the lab's id in it)."""
        return with_lab_id(self.hostvars[host].get("ansible_host", host))

    def exec(
        self, host: str, command: str | list[str], check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """Run a command in a host with `docker exec` (a string goes through sh -c)."""
        argv = ["sh", "-c", command] if isinstance(command, str) else list(command)
        proc = subprocess.run(
            ["docker", "exec", self.container(host), *argv], capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{host}: {argv!r} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
            )
        return proc

    def put(self, host: str, path: str, text: str, mode: str = "0644") -> None:
        """Write a file in a host (a script a test runs there, say)."""
        container = self.container(host)
        proc = subprocess.run(
            ["docker", "exec", "-i", container, "sh", "-c", f"cat > {path} && chmod {mode} {path}"],
            input=text,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if proc.returncode != 0:
            raise AssertionError(f"{host}: writing {path} failed: {proc.stderr}")

    def playbook(self, playbook: str | Path, *args: str, **kwargs) -> PlaybookResult:
        """Run a playbook against the lab (see run_playbook for the keyword arguments)."""
        kwargs.setdefault("inventory", self.inventory)
        return run_playbook(playbook, *args, **kwargs)

    def runbook(self, playbook: str, *args: str, **kwargs) -> RunbookResult:
        """Run a runbook (playbooks/runbooks/....yml) against the lab; the result holds the run's report.

        The report goes to a directory of the run's own (AUDITLOG_REPORT_DIR), so that a result
        never reads another run's report.
        """
        report_dir = Path(tempfile.mkdtemp(prefix="report-", dir=_reports_root()))
        env = {**kwargs.pop("env", {}), "AUDITLOG_REPORT_DIR": str(report_dir)}
        kwargs.setdefault("inventory", self.inventory)
        run = run_playbook(playbook, *args, env=env, **kwargs)
        reports = sorted(report_dir.glob("*-latest.json"))
        report = json.loads(reports[0].read_text()) if reports else None
        return RunbookResult(**vars(run), report=report, report_dir=report_dir)


@contextmanager
def private_lab(workdir: Path, inventory: str, network: str, what: str) -> Iterator[Lab]:
    """Hosts of a test's own, beside the shared lab, on their own Docker network: the inventory
    (hosts.yml) and the lab's connection settings written into workdir, the containers created,
    and removed afterwards (unless LAB_KEEP=1). `what` names them in failure messages."""
    hosts = workdir / "hosts.yml"
    hosts.write_text(inventory)
    (workdir / "group_vars").mkdir(exist_ok=True)
    (workdir / "group_vars" / "all.yml").write_text(
        "audit_deploy_mode: systemd\n"
        "ansible_connection: community.docker.docker\n"
        "ansible_python_interpreter: /usr/bin/python3\n"
        "ansible_user: root\n"
        f"lab_network: {network}\n"
    )
    created = create(hosts)
    if not created.ok:
        destroy(hosts)
        raise RuntimeError(f"{what} could not be created:\n{created.describe()}")
    instance = Lab(hosts)
    instance.workdir = workdir
    try:
        yield instance
    finally:
        if os.environ.get("LAB_KEEP") != "1":
            destroyed = destroy(hosts)
            assert destroyed.ok, f"{what} could not be destroyed:\n{destroyed.describe()}"
