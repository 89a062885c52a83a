"""Real PostgreSQL, Redis and NATS JetStream servers, and the service's own processes, for tests,
benchmarks and the local demo.

Each server runs from the Debian packages in a temporary directory on a free loopback port,
with passwords, so that nothing here touches a system-wide instance or leaves anything behind.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from audit_devtools import ROOT

LOOPBACK = "127.0.0.1"
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {LOOPBACK}:{port} after {timeout}s")


def _need(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if not path:
        raise RuntimeError(f"{binary} not found: install the Debian package {package} (make deps does)")
    return path


def pg_bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if not found:
        raise RuntimeError("PostgreSQL server not found: install the Debian package postgresql")
    return Path(found[-1]).parent


class Postgres:
    """A PostgreSQL cluster with scram auth. As root it runs as the `postgres` user."""

    def __init__(self, root: Path, *, fsync: bool = True):
        self.dir = root / "pg"
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.fsync = fsync
        self.bindir = pg_bindir()
        self.as_user = "postgres" if os.geteuid() == 0 else None

    def _run(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.as_user:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, **kw)

    def init(self) -> None:
        self.dir.mkdir(parents=True)
        pwfile = self.dir.parent / "pgpw"
        pwfile.write_text(self.password + "\n")
        if self.as_user:
            pw = pwd.getpwnam(self.as_user)
            for path in (self.dir, pwfile):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            os.chmod(self.dir.parent, 0o755)  # noqa: S103 - postgres must traverse it
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.dir / "data"),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={pwfile}",
            "--data-checksums",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        pwfile.unlink()

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.dir} -c listen_addresses={LOOPBACK} -c max_connections=200 "
            f"-c fsync={'on' if self.fsync else 'off'} -c shared_buffers=256MB"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.dir / "data"),
            "-l",
            str(self.dir / "log"),
            "-o",
            opts,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", mode, "-w", "stop", check=False
        )

    def psql(self, sql: str, db: str = "postgres") -> str:
        out = self._run(
            str(self.bindir / "psql"),
            "-h",
            str(self.dir),
            "-p",
            str(self.port),
            "-U",
            "postgres",
            "-d",
            db,
            "-v",
            "ON_ERROR_STOP=1",
            "-qAt",
            "-c",
            sql,
        )
        return out.stdout.strip()

    # The roles as the deployment makes them (role postgresql): the owner runs migrations, the
    # service logs in as a member of audit_runtime, retention as one of audit_retention.
    OWNER, RUNTIME, RETENTION = "audit_owner", "audit_user", "audit_retention_user"

    def _ensure_roles(self) -> None:
        # Names and the password are the test's own, never input.
        have = set(self.psql("SELECT rolname FROM pg_roles").split())
        wanted = [
            ("audit_runtime", "NOLOGIN"),
            ("audit_retention", "NOLOGIN"),
            (self.OWNER, f"LOGIN PASSWORD '{self.password}'"),
            (self.RUNTIME, f"LOGIN PASSWORD '{self.password}' IN ROLE audit_runtime"),
            (self.RETENTION, f"LOGIN PASSWORD '{self.password}' IN ROLE audit_retention"),
        ]
        for role, options in wanted:
            if role not in have:
                self.psql(f"CREATE ROLE {role} {options}")

    def create_database(self, name: str) -> str:
        """A database owned by the owner role; returns the owner's URL (see url_as)."""
        self._ensure_roles()
        self.psql(f"CREATE DATABASE {name} OWNER {self.OWNER}")
        return self.url_as(self.OWNER, name)

    def url_as(self, role: str, database: str) -> str:
        return f"postgresql://{role}:{self.password}@{LOOPBACK}:{self.port}/{database}"

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres:{self.password}@{LOOPBACK}:{self.port}/postgres"


def redis_acl_rules() -> dict[str, str]:
    """The ACL rules the redis role gives its users (roles/redis/vars/main.yml): one definition."""
    import yaml

    path = ROOT / "roles" / "redis" / "vars" / "main.yml"
    return yaml.safe_load(path.read_text())["redis_acl_rules"]


class Redis:
    """redis-server with the deployment's ACL users: the service's (url), the admin (admin_url)."""

    def __init__(self, root: Path):
        self.dir = root / "redis"
        self.port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        rules = redis_acl_rules()
        self.proc = subprocess.Popen(
            [
                _need("redis-server", "redis-server"),
                "--port",
                str(self.port),
                "--bind",
                LOOPBACK,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.dir),
                # As in redis.conf: `user <name> <rules...>`, one argument per word.
                *["--user", "default", "off"],
                *["--user", *f"audit-service on >{self.password} {rules['service']}".split()],
                *["--user", *f"audit-admin on >{self.password} {rules['admin']}".split()],
                "--maxmemory",
                "256mb",
                "--maxmemory-policy",
                "allkeys-lru",
            ],
            stdout=open(self.dir / "log", "ab"),  # noqa: SIM115 - the child keeps it open
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port)

    def stop(self) -> None:
        _terminate(self.proc)
        self.proc = None

    @property
    def url(self) -> str:
        """The service's user: its own keys and commands only."""
        return f"redis://audit-service:{self.password}@{LOOPBACK}:{self.port}/0"

    @property
    def admin_url(self) -> str:
        return f"redis://audit-admin:{self.password}@{LOOPBACK}:{self.port}/0"


# The service's NATS users, with the permissions the nats role gives them (roles/nats/vars/main.yml),
# for any stream (tests give each service a stream of its own): the API publishes, the worker
# consumes. "audit" is the tests' own user, allowed everything (to inject faults).
SERVICE_NATS_USERS = {
    "audit-api": {
        "publish": ["audit.>", "$JS.API.STREAM.INFO.*", "$JS.API.CONSUMER.INFO.*.>"],
    },
    "audit-worker": {
        "publish": [
            "$JS.API.STREAM.INFO.*",
            "$JS.API.STREAM.PURGE.*",
            "$JS.API.CONSUMER.INFO.*.>",
            "$JS.API.CONSUMER.CREATE.*",
            "$JS.API.CONSUMER.CREATE.*.>",
            "$JS.API.CONSUMER.DURABLE.CREATE.*.>",
            "$JS.API.CONSUMER.MSG.NEXT.*.>",
            "$JS.API.CONSUMER.DELETE.*.>",
            "$JS.ACK.>",
        ],
    },
}


class Nats:
    """nats-server with JetStream on file storage, the service's users and the tests' own."""

    def __init__(self, root: Path, tls: dict[str, Path] | None = None):
        """tls: {"cert", "key", "ca"} files to serve TLS with, asking clients for a certificate."""
        self.dir = root / "nats"
        self.tls = tls
        self.port = free_port()
        self.monitor_port = free_port()
        self.password = secrets.token_urlsafe(16)
        self.passwords = {user: secrets.token_urlsafe(16) for user in SERVICE_NATS_USERS}
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "nats.conf"
        users = [f'{{user: "audit", password: "{self.password}"}}'] + [
            f'{{user: "{user}", password: "{self.passwords[user]}", permissions: '
            f'{{publish: {{allow: {json.dumps(perms["publish"])}}}, subscribe: {{allow: ["_INBOX.>"]}}}}}}'
            for user, perms in SERVICE_NATS_USERS.items()
        ]
        conf.write_text(
            f'listen: "{LOOPBACK}:{self.port}"\n'
            f'http: "{LOOPBACK}:{self.monitor_port}"\n'
            "max_payload: 8MB\n"
            f'jetstream {{ store_dir: "{self.dir / "store"}", max_file_store: 4G, max_memory_store: 256M }}\n'
            "authorization { users = [\n"
            + "\n".join(users)
            + "\n] }\n"
            + (
                f'tls {{ cert_file: "{self.tls["cert"]}", key_file: "{self.tls["key"]}",'
                f' ca_file: "{self.tls["ca"]}", verify: true }}\n'
                if self.tls
                else ""
            )
        )
        self.proc = subprocess.Popen(
            [_need("nats-server", "nats-server"), "-c", str(conf)],
            stdout=open(self.dir / "log", "ab"),  # noqa: SIM115 - the child keeps it open
            stderr=subprocess.STDOUT,
        )
        wait_port(self.port)
        wait_port(self.monitor_port)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        _terminate(self.proc, sig)
        self.proc = None

    @property
    def url(self) -> str:
        """The tests' own user: allowed everything."""
        return f"nats://audit:{self.password}@{LOOPBACK}:{self.port}"

    def user_url(self, user: str) -> str:
        return f"nats://{user}:{self.passwords[user]}@{LOOPBACK}:{self.port}"

    def ensure_stream(self, name: str, subjects: list[str], **options) -> dict:
        """Create or update a stream with the deployment's own code (the module
        auditlog.ops.nats_stream, which owns the stream; the service never creates it)."""
        _load_collections()
        from ansible_collections.auditlog.ops.plugins.module_utils.nats_api import NatsClient
        from ansible_collections.auditlog.ops.plugins.modules.nats_stream import ensure

        params = {
            "name": name,
            "state": "present",
            "subjects": subjects,
            "storage": "file",
            "retention": "limits",
            "discard": "old",
            "max_age": 7 * 86400,
            "duplicate_window": 120,
            "max_bytes": None,
            "max_msgs": None,
            "max_msg_size": None,
            "replicas": 1,
        } | options
        with NatsClient(LOOPBACK, self.port, "audit", self.password) as client:
            return ensure(client, params, check_mode=False)


def _load_collections() -> None:
    """Make the project's collection importable the way Ansible loads it: through Ansible's own
    collection loader, with collections/ searched first. The benchmarks run outside pytest, whose
    `pythonpath` gives the tests the collection already."""
    from ansible.plugins.loader import init_plugin_loader
    from ansible.utils.collection_loader import AnsibleCollectionConfig

    if AnsibleCollectionConfig.collection_finder is not None:  # a second init only warns
        return
    # Imported from the path already (a test module imported the collection through pytest's
    # pythonpath): Ansible's finder installed now would refuse that package ("collection
    # metadata was not loaded"), so the path's import stands.
    if "ansible_collections" in sys.modules:
        return
    init_plugin_loader([str(ROOT / "collections")])


def _terminate(proc: subprocess.Popen | None, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Stack:
    """PostgreSQL + Redis + NATS, started together in one temporary directory."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="audit-stack-")))
    fsync: bool = False

    def __post_init__(self) -> None:
        self.pg = Postgres(self.root, fsync=self.fsync)
        self.redis = Redis(self.root)
        self.nats = Nats(self.root)

    def start(self) -> Stack:
        self.pg.init()
        self.pg.start()
        self.redis.start()
        self.nats.start()
        return self

    def stop(self) -> None:
        self.nats.stop()
        self.redis.stop()
        self.pg.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def env(self, database_url: str, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_", "NATS_"))}
        env.update(
            DATABASE_URL=database_url,
            REDIS_URL=self.redis.url,
            NATS_URL=self.nats.user_url("audit-worker"),
            LOG_LEVEL="INFO",
            WORKER_METRICS_PORT="0",
            WORKER_ACK_WAIT_SECONDS="5",
        )
        env.update(extra)
        return env


class ServiceProcess:
    """`audit-service <command>` as a child process, its output kept in a log file."""

    def __init__(self, command: list[str], env: dict[str, str], log_path: Path):
        self.command = command
        self.env = env
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "audit-service"), *self.command],
            env=self.env,
            stdout=open(self.log_path, "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        _terminate(self.proc, sig)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(VENV_BIN / "audit-service"), *args], env=env, capture_output=True, text=True, timeout=120
    )


class Service:
    """An API and a worker against a Stack, on a database of their own."""

    def __init__(self, stack: Stack, database: str, workers: int = 1, stream: dict | None = None, **env: str):
        self.stack = stack
        self.stream_options = stream or {}  # nats_stream options for its stream (Nats.ensure_stream)
        # The owner's URL: migrations, and the tests' own looks at (and damage to) the data.
        self.database_url = stack.pg.create_database(database)
        runtime_url = stack.pg.url_as(stack.pg.RUNTIME, database)
        self.port = free_port()
        self.admin_key = "admin-" + secrets.token_urlsafe(24)
        # Services sharing one NATS server each get a stream of their own.
        env = {"STREAM_NAME": f"audit-logs-{database}", "STREAM_SUBJECT_PREFIX": f"audit.{database}", **env}
        self.env = stack.env(runtime_url, API_PORT=str(self.port), ADMIN_API_KEY=self.admin_key, **env)
        self.owner_env = {**self.env, "DATABASE_URL": self.database_url}
        self.retention_env = {**self.env, "DATABASE_URL": stack.pg.url_as(stack.pg.RETENTION, database)}
        self.logdir = stack.root / f"logs-{database}"
        self.logdir.mkdir()
        # The API with its own NATS user (publisher); the rest (worker, CLI) with the consumer's.
        self.api_env = {**self.env, "NATS_URL": stack.nats.user_url("audit-api")}
        self.api = ServiceProcess(["api"], self.api_env, self.logdir / "api.log")
        self.workers = [
            ServiceProcess(["worker"], self.env, self.logdir / f"worker{i}.log") for i in range(workers)
        ]
        self.url = f"http://{LOOPBACK}:{self.port}"

    def migrate(self) -> None:
        out = run_cli(self.owner_env, "migrate")
        if out.returncode != 0:
            raise RuntimeError(f"migrate failed: {out.stderr}")

    def start(self) -> Service:
        self.migrate()
        self.ensure_stream(**self.stream_options)
        return self.start_processes()

    def start_processes(self) -> Service:
        """The API and the workers (after a stop), waited healthy; the stream as it is."""
        self.api.start()
        for w in self.workers:
            w.start()
        self.wait_healthy()
        return self

    def ensure_stream(self, **options) -> dict:
        """The service's stream, as the deployment makes it (see Nats.ensure_stream)."""
        return self.stack.nats.ensure_stream(
            self.env["STREAM_NAME"], [self.env["STREAM_SUBJECT_PREFIX"] + ".>"], **options
        )

    def wait_healthy(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = None
        wanted = ("healthy",) if self.workers else ("healthy", "degraded")
        while time.monotonic() < deadline:
            try:
                r = httpx.get(f"{self.url}/api/v1/metrics/health", timeout=2)
                last = r.text
                # Without workers nobody consumes: the best it can be is degraded.
                if r.status_code == 200 and r.json()["status"] in wanted:
                    return
            except httpx.HTTPError as exc:
                last = repr(exc)
            if self.api.proc and self.api.proc.poll() is not None:
                raise RuntimeError(f"API exited: {self.api.log()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"API not healthy after {timeout}s: {last}\n{self.api.log()[-3000:]}")

    def stop(self) -> None:
        for w in self.workers:
            w.stop()
        self.api.stop()

    def tenant(self, name: str) -> tuple[str, str]:
        """Create a tenant and a key for it; returns (tenant_id, api_key)."""
        out = run_cli(self.env, "create-tenant", name)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        tenant_id = json.loads(out.stdout)["tenant_id"]
        out = run_cli(self.env, "create-api-key", name)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return tenant_id, json.loads(out.stdout)["api_key"]
