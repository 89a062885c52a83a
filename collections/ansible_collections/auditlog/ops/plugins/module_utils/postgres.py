# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only. psycopg2 (Debian's python3-psycopg2) is imported only by connect(), and only the
# database hosts have it: the pure functions here run anywhere (and in the unit tests).
"""PostgreSQL for modules: the shared connection options, the connection, readiness, and the data
checksums' state.

The connection options are those of community.postgresql (login_host, port, login_user,
login_password, db, ssl_mode, ca_cert, connect_timeout), documented in doc_fragments/postgres.py.
"""

import datetime

APPLICATION_NAME = "ansible-auditlog-ops"

try:
    import psycopg2
    import psycopg2.extras

    HAS_PSYCOPG2 = True
    PSYCOPG2_IMPORT_ERROR = None
except ImportError as exc:  # not a database host
    psycopg2 = None
    HAS_PSYCOPG2 = False
    PSYCOPG2_IMPORT_ERROR = exc


def postgres_common_argument_spec():
    """The connection options every PostgreSQL module takes (documented in doc_fragments/postgres.py)."""
    return dict(
        login_host=dict(type="str", default="/run/postgresql", aliases=["host"]),
        port=dict(type="int", default=5432, aliases=["login_port"]),
        login_user=dict(type="str", default="postgres", aliases=["user"]),
        login_password=dict(type="str", no_log=True, aliases=["password"]),
        db=dict(type="str", default="postgres", aliases=["login_db"]),
        ssl_mode=dict(
            type="str",
            default="prefer",
            choices=["disable", "allow", "prefer", "require", "verify-ca", "verify-full"],
        ),
        ca_cert=dict(type="path", aliases=["ssl_rootcert"]),
        connect_timeout=dict(type="int", default=10),
    )


def connect_kwargs(params):
    """psycopg2.connect() keywords for the options of postgres_common_argument_spec."""
    kwargs = dict(
        host=params["login_host"],
        port=params["port"],
        user=params["login_user"],
        dbname=params["db"],
        connect_timeout=params["connect_timeout"],
        application_name=APPLICATION_NAME,
    )
    if params.get("login_password") is not None:
        kwargs["password"] = params["login_password"]
    # sslmode means nothing over a Unix socket (libpq ignores it there).
    if not str(params["login_host"]).startswith("/"):
        kwargs["sslmode"] = params["ssl_mode"]
        if params.get("ca_cert"):
            kwargs["sslrootcert"] = params["ca_cert"]
    return kwargs


def server_address(params):
    host = params["login_host"]
    if str(host).startswith("/"):
        return "{}/.s.PGSQL.{}".format(host.rstrip("/"), params["port"])
    return "{}:{}".format(host, params["port"])


def connect(params, guard=True):
    """An autocommit connection; raises psycopg2.Error (see readiness_from_error).

    guard: set this session's timeouts (see set_guards) at once. Without it, SHOW still tells
    the server's own statement_timeout and lock_timeout until set_guards() is called.
    """
    conn = psycopg2.connect(**connect_kwargs(params))
    conn.autocommit = True
    if guard:
        set_guards(conn)
    return conn


def set_guards(conn, statement_timeout_ms=30000, lock_timeout_ms=1000):
    """A module's session never waits long on a sick server, nor queues behind locks."""
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = %s", (int(statement_timeout_ms),))
        cur.execute("SET lock_timeout = %s", (int(lock_timeout_ms),))


def dict_cursor(conn):
    return conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor)


# libpq's words for a server that answers but does not let anyone in yet (pg_isready: "rejecting
# connections"), and for a login it refused (pg_isready would say "accepting connections").
_REJECTING = (
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
    "sorry, too many clients already",
    "remaining connection slots are reserved",
)
# TLS that failed before any login: the server answered, the channel could not be made safe.
_TLS_FAILED = (
    "certificate verify failed",
    "does not match host name",
    "server does not support ssl",
    "root certificate file",
    "certificate present, but not private key",
)
_LOGIN_FAILED = (
    "password authentication failed",
    "peer authentication failed",
    "no pg_hba.conf entry",
    "authentication failed",
    "no password supplied",
    "role ",  # role "x" does not exist
    'database "',  # database "x" does not exist
    "permission denied for database",
)


def readiness_from_error(message):
    """pg_isready's verdict for a connection error: the state and whether the server answered.

    state: rejecting (up, not letting anyone in: starting, stopping, full), tls_failed (up, but
    the TLS connection asked for failed: the certificate does not verify, no TLS offered),
    login_failed (up and answering, but this login was refused), no_response (nothing there, or
    no answer in time).
    """
    text = (message or "").strip()
    low = text.lower()
    if any(marker in low for marker in _REJECTING):
        state = "rejecting"
    elif any(marker in low for marker in _TLS_FAILED):
        state = "tls_failed"
    elif any(marker in low for marker in _LOGIN_FAILED):
        state = "login_failed"
    else:
        state = "no_response"
    return {
        "ready": False,
        "state": state,
        "server_answered": state != "no_response",
        "in_recovery": None,
        "error": text.splitlines()[0] if text else "unknown error",
    }


# pg_stat_database's row without a database: the shared catalogs (pg_authid, pg_database, ...).
SHARED_OBJECTS = "(shared objects)"


def checksums_summary(data_checksums, rows):
    """SHOW data_checksums and pg_stat_database rows (database, checksum_failures,
    checksum_last_failure) -> whether checksums are on and the databases with failures (the row of
    the shared objects has no database: "(shared objects)"). For pg_diagnostics and pg_integrity."""
    failing = [
        {
            "database": r.get("database") or SHARED_OBJECTS,
            "failures": int(r.get("checksum_failures") or 0),
            "last_failure": _iso(r.get("checksum_last_failure")),
        }
        for r in rows
        if r.get("checksum_failures")
    ]
    last = [f["last_failure"] for f in failing if f["last_failure"]]
    return {
        "enabled": str(data_checksums).lower() == "on",
        "failures": sum(f["failures"] for f in failing),
        "by_database": failing,
        "last_failure": max(last) if last else None,
    }


def _iso(value):
    if isinstance(value, (datetime.datetime, datetime.date)):
        return value.isoformat()
    return value
