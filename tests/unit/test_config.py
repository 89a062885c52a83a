"""Settings: every bad value stops start-up with a message naming the variable."""

import pytest
from audit_service import config

BASE = {"DATABASE_URL": "postgresql://u:secret@db:5432/audit_logs"}


def test_defaults_and_summary_hide_secrets():
    s = config.load({**BASE, "ADMIN_API_KEY": "x" * 20, "REDIS_URL": "redis://:pw@cache:6379/0"})
    assert s.database_pool_size == 10 and s.cache_enabled and s.api_timeout == 30.0
    summary = s.safe_summary()
    assert "secret" not in str(summary) and "pw" not in summary["redis_url"]
    assert summary["admin_api_key"] == "set"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DATABASE_POOL_SIZE", "lots"),
        ("DATABASE_POOL_SIZE", "0"),
        ("DATABASE_MAX_OVERFLOW", "-1"),
        ("CACHE_ENABLED", "maybe"),
        ("CACHE_TTL", "0"),
        ("API_WORKERS", "100"),
        ("API_TIMEOUT", "soon"),
        ("LOG_LEVEL", "LOUD"),
        ("RETENTION_DAYS", "0"),
        ("REDIS_URL", "http://cache:6379"),
        ("NATS_URL", "nats://"),
        ("DATABASE_URL", "mysql://db/x"),
        ("ADMIN_API_KEY", "short"),
        ("STREAM_NAME", "audit logs!"),
    ],
)
def test_bad_value_names_the_variable(name, value):
    with pytest.raises(config.ConfigError) as exc:
        config.load({**BASE, name: value})
    assert name in str(exc.value)


def test_missing_database_url_is_named():
    with pytest.raises(config.ConfigError, match="DATABASE_URL"):
        config.load({})


def test_error_never_echoes_credentials():
    with pytest.raises(config.ConfigError) as exc:
        config.load({"DATABASE_URL": "mysql://user:topsecret@db/x"})
    assert "topsecret" not in str(exc.value)
