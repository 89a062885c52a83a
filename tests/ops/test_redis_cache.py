"""auditlog.ops.redis_cache against a real redis-server on loopback (the deployment's ACL users):
only the service's cache keys go, in batches, counted in check mode; FLUSHALL only when asked."""

from __future__ import annotations

import shutil

import pytest
from ansible_collections.auditlog.ops.plugins.module_utils.redis_api import RedisClient
from support.modules import run_module

pytestmark = pytest.mark.skipif(not shutil.which("redis-server"), reason="needs Debian's redis-server")


@pytest.fixture
def admin(redis):
    client = RedisClient(port=redis.port, user="audit-admin", password=redis.password).connect()
    client.command("FLUSHALL")
    for i in range(1234):
        client.command("SET", f"audit:q:{i}", "cached")
    client.command("SET", "audit:keys:mirror", "keep")
    client.command("SET", "audit:rate:t1", "7")
    client.command("SET", "foreign:key", "keep")
    yield client
    client.close()


def clear(redis, *flags: str, **args) -> tuple[int, dict, str]:
    params = {
        "server_port": redis.port,
        "user": "audit-admin",
        "password": redis.password,
        "timeout": 5,
    } | args
    return run_module("redis_cache", params, *flags)


def keys(admin, pattern: str) -> int:
    return sum(len(k) for k, _ in admin.scan(pattern))


def test_check_mode_counts_the_cache_keys_and_removes_none(redis, admin):
    rc, result, out = clear(redis, "--check")
    assert rc == 0, out
    assert result["changed"] is True and result["removed"] == {"audit:q:*": 1234}, result
    assert result["findings"][0]["remediation"].startswith("would run SCAN and UNLINK"), result
    assert keys(admin, "audit:q:*") == 1234


def test_only_the_cache_keys_go_in_batches_and_a_second_run_changes_nothing(redis, admin):
    rc, result, out = clear(redis, batch=100)
    assert rc == 0, out
    assert result["changed"] is True and result["total"] == 1234, result
    assert keys(admin, "audit:q:*") == 0
    assert (
        admin.command("GET", "audit:keys:mirror") == b"keep"
        and admin.command("GET", "foreign:key") == b"keep"
    )
    assert admin.command("GET", "audit:rate:t1") == b"7"
    rc, again, out = clear(redis)
    assert rc == 0 and again["changed"] is False and again["total"] == 0 and again["findings"] == [], again


def test_flushall_empties_every_database_only_when_asked(redis, admin):
    rc, result, out = clear(redis, flushall=True)
    assert rc == 0, out
    assert result["removed"] == {"*": 1237} and result["changed"] is True, result
    assert "FLUSHALL" in result["findings"][0]["remediation"]
    assert admin.command("DBSIZE") == 0


def test_a_wrong_password_is_a_finding_not_a_crash(redis, admin):
    rc, result, out = clear(redis, password="not-it")
    assert rc == 0, out
    assert result["available"] is False and result["changed"] is False, result
    assert result["findings"][0]["severity"] == "critical"
    assert keys(admin, "audit:q:*") == 1234
