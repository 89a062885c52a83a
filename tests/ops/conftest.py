"""Fixtures of the module tests (tests/ops)."""

import shutil
import tempfile
from pathlib import Path

import pytest
from audit_devtools.stack import Redis
from support.pgcluster import start_cluster, stop_cluster


@pytest.fixture(scope="module")
def pg():
    """A throwaway PostgreSQL of the test module's own (tests/support/pgcluster.py)."""
    cluster = start_cluster()
    yield cluster
    stop_cluster(cluster)


@pytest.fixture(scope="module")
def redis():
    """Debian's redis-server with the deployment's ACL users, of the test module's own."""
    root = Path(tempfile.mkdtemp(prefix="redis-ops-"))
    server = Redis(root)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)
