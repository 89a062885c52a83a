"""Settings from environment variables (names from the troubleshooting guide).

Every value is checked at start-up; a bad one raises ConfigError naming the variable, so a
misconfigured unit fails fast with a message an operator can act on.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the variable."""


def _int(lo: int, hi: int) -> Callable[[str, str], int]:
    def parse(name: str, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not an integer") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name}={value} is out of range [{lo}, {hi}]")
        return value

    return parse


def _float(lo: float, hi: float) -> Callable[[str, str], float]:
    def parse(name: str, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"{name}={raw!r} is not a number") from None
        if not lo <= value <= hi:
            raise ConfigError(f"{name}={value} is out of range [{lo}, {hi}]")
        return value

    return parse


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean (use true/false)")


def _url(*schemes: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        # Check every comma-separated server (NATS accepts a list); never echo credentials.
        for part in raw.split(","):
            parts = urlsplit(part.strip())
            if parts.scheme not in schemes or not parts.hostname:
                raise ConfigError(
                    f"{name} must be a URL with scheme {' or '.join(schemes)} and a host "
                    f"(got scheme {parts.scheme or 'none'!r})"
                )
        return raw

    return parse


def _choice(*choices: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        value = raw.strip().upper()
        if value not in choices:
            raise ConfigError(f"{name}={raw!r} must be one of {', '.join(choices)}")
        return value

    return parse


def _text(name: str, raw: str) -> str:
    return raw


def _readable_file(name: str, raw: str) -> str:
    if raw and not os.access(raw, os.R_OK):
        raise ConfigError(f"{name}={raw!r} is not a file this user can read")
    return raw


def _secret(min_len: int) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw and len(raw) < min_len:
            raise ConfigError(f"{name} must be at least {min_len} characters long")
        return raw

    return parse


# variable name -> (default, parser). None as default means required.
SPEC: dict[str, tuple[str | None, Callable[[str, str], Any]]] = {
    "DATABASE_URL": (None, _url("postgresql", "postgres")),
    "DATABASE_POOL_SIZE": ("10", _int(1, 500)),
    "DATABASE_MAX_OVERFLOW": ("10", _int(0, 500)),
    "REDIS_URL": ("redis://127.0.0.1:6379/0", _url("redis", "rediss")),
    "NATS_URL": ("nats://127.0.0.1:4222", _url("nats", "tls")),
    # TLS to NATS: the CA that signed the servers' certificates, and this client's certificate
    # and key for servers that verify their clients. (PostgreSQL and Redis take theirs in the URL.)
    "NATS_TLS_CA_FILE": ("", _readable_file),
    "NATS_TLS_CERT_FILE": ("", _readable_file),
    "NATS_TLS_KEY_FILE": ("", _readable_file),
    "CACHE_ENABLED": ("true", _bool),
    "CACHE_TTL": ("30", _int(1, 86400)),
    "API_WORKERS": ("1", _int(1, 64)),
    "API_TIMEOUT": ("30", _float(0.1, 600)),
    "API_HOST": ("127.0.0.1", _text),
    "API_PORT": ("8000", _int(1, 65535)),
    "API_KEY_REFRESH_SECONDS": ("10", _float(0.5, 3600)),
    "LOG_LEVEL": ("INFO", _choice(*LOG_LEVELS)),
    "RETENTION_DAYS": ("90", _int(1, 36500)),
    "ADMIN_API_KEY": ("", _secret(16)),
    "RATE_LIMIT_PER_MINUTE": ("60000", _int(0, 10**9)),
    "AUTH_FAILURE_LIMIT_PER_MINUTE": ("60", _int(0, 10**6)),
    "FORWARDED_ALLOW_IPS": ("127.0.0.1", _text),
    "STREAM_NAME": ("audit-logs", _text),
    "STREAM_SUBJECT_PREFIX": ("audit.logs", _text),
    "MAX_REQUEST_BYTES": ("4194304", _int(1024, 64 * 1024 * 1024)),
    "WORKER_BATCH_SIZE": ("500", _int(1, 10000)),
    "WORKER_ACK_WAIT_SECONDS": ("30", _float(1, 3600)),
    "WORKER_MAX_DELIVERIES": ("5", _int(1, 1000)),
    "WORKER_METRICS_PORT": ("9101", _int(0, 65535)),
    "WORKER_METRICS_HOST": ("127.0.0.1", _text),
    "PARTITION_MONTHS_AHEAD": ("2", _int(1, 24)),
}


@dataclass(frozen=True)
class Settings:
    database_url: str
    database_pool_size: int
    database_max_overflow: int
    redis_url: str
    nats_url: str
    nats_tls_ca_file: str
    nats_tls_cert_file: str
    nats_tls_key_file: str
    cache_enabled: bool
    cache_ttl: int
    api_workers: int
    api_timeout: float
    api_host: str
    api_port: int
    api_key_refresh_seconds: float
    log_level: str
    retention_days: int
    admin_api_key: str
    rate_limit_per_minute: int
    auth_failure_limit_per_minute: int
    forwarded_allow_ips: str
    stream_name: str
    stream_subject_prefix: str
    max_request_bytes: int
    worker_batch_size: int
    worker_ack_wait_seconds: float
    worker_max_deliveries: int
    worker_metrics_port: int
    worker_metrics_host: str
    partition_months_ahead: int

    def safe_summary(self) -> dict[str, Any]:
        """Settings fit for a log line: URLs without credentials, secrets masked."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_url"):
                value = _strip_credentials(value)
            elif f.name == "admin_api_key":
                value = "set" if value else "unset"
            out[f.name] = value
        return out


def _strip_credentials(url: str) -> str:
    parts = []
    for part in url.split(","):
        s = urlsplit(part.strip())
        host = s.hostname or ""
        if s.port:
            host = f"{host}:{s.port}"
        parts.append(f"{s.scheme}://{host}{s.path}")
    return ",".join(parts)


def load(env: Mapping[str, str] | None = None, *, require_database: bool = True) -> Settings:
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    for name, (default, parse) in SPEC.items():
        raw = env.get(name)
        if raw is None or raw == "":
            if default is None:
                if name == "DATABASE_URL" and not require_database:
                    values[name.lower()] = ""
                    continue
                raise ConfigError(f"{name} is required but not set")
            raw = default
        values[name.lower()] = parse(name, raw)
    if values["stream_name"] and not all(c.isalnum() or c in "-_" for c in values["stream_name"]):
        raise ConfigError("STREAM_NAME may contain only letters, digits, '-' and '_'")
    prefix = values["stream_subject_prefix"]
    if not prefix or any(
        not part or not all(c.isalnum() or c in "-_" for c in part) for part in prefix.split(".")
    ):
        raise ConfigError(
            "STREAM_SUBJECT_PREFIX must be dot-separated tokens of letters, digits, '-' and '_'"
        )
    return Settings(**values)
