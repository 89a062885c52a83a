"""A throwaway PostgreSQL for the module tests (tests/ops): Debian's server in a temporary
directory on a free loopback port, with TLS and pg_stat_statements as the postgresql role has them,
and psql sessions held open to keep a transaction (and its locks) for real."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from audit_devtools.stack import Postgres

from support.modules import TARGET_PYTHON
from support.pki import make_pki

DB = "svc"

# The modules run under the targets' interpreter, which needs Debian's python3-psycopg2.
needs_psycopg2 = pytest.mark.skipif(
    subprocess.run([TARGET_PYTHON, "-c", "import psycopg2"], capture_output=True).returncode != 0,
    reason="needs Debian's python3-psycopg2 for /usr/bin/python3 (scripts/deps.sh installs it)",
)


def start_cluster() -> Postgres:
    # Under /tmp itself: the postgres user cannot traverse pytest's tmp_path (mode 0700, root's).
    pg = Postgres(Path(tempfile.mkdtemp(prefix="pg-diag-")), fsync=False)
    pg.init()
    # TLS with a throwaway CA (for ssl_mode verify-full), and pg_stat_statements as the
    # postgresql role configures them.
    (pg.dir.parent / "pki").mkdir()
    pg.pki = make_pki(pg.dir.parent / "pki")
    data = pg.dir / "data"
    for name, source in (("server.crt", pg.pki["server"]), ("server.key", pg.pki["server_key"])):
        shutil.copy(source, data / name)
        (data / name).chmod(0o600)
        if pg.as_user:
            shutil.chown(data / name, pg.as_user, pg.as_user)
    with open(data / "postgresql.conf", "a") as conf:
        conf.write("shared_preload_libraries = 'pg_stat_statements'\n")
        conf.write("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n")
    pg.start()
    pg.psql(f"CREATE DATABASE {DB}")
    pg.psql(
        "CREATE TABLE accounts (id int PRIMARY KEY, balance int NOT NULL);"
        " INSERT INTO accounts SELECT g, 100 FROM generate_series(1, 5000) AS g",
        db=DB,
    )
    return pg


def stop_cluster(cluster: Postgres) -> None:
    cluster.stop()
    shutil.rmtree(cluster.dir.parent, ignore_errors=True)


class Session:
    """A psql session kept open on a pipe, to hold a transaction (and its locks) for real."""

    def __init__(self, pg: Postgres, name: str):
        env = dict(os.environ, PGAPPNAME=name, PGPASSWORD=pg.password)
        self.name = name
        self.proc = subprocess.Popen(
            [
                str(pg.bindir / "psql"),
                "-h",
                "127.0.0.1",
                "-p",
                str(pg.port),
                "-U",
                "postgres",
                "-d",
                DB,
                "-qAt",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            text=True,
        )

    def send(self, sql: str) -> None:
        self.proc.stdin.write(sql + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def wait_for(pg: Postgres, sql: str, timeout: float = 15) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = pg.psql(sql)
        if out:
            return out
        time.sleep(0.1)
    raise TimeoutError(sql)
