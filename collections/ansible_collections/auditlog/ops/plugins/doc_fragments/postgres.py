# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).


class ModuleDocFragment:
    # The connection options of the PostgreSQL modules
    # (module_utils/postgres.postgres_common_argument_spec), as community.postgresql has them.
    DOCUMENTATION = r"""
options:
  login_host:
    description:
      - The server to connect to, a host name or address, or the directory of its Unix socket
        (a path starting with C(/)).
      - The module runs on the database host, so the default is the local socket, where
        O(login_user=postgres) logs in by peer authentication (run the task with C(become)).
    type: str
    default: /run/postgresql
    aliases: [host]
  port:
    description:
      - The server's port (also the suffix of its socket file, C(.s.PGSQL.<port>)).
    type: int
    default: 5432
    aliases: [login_port]
  login_user:
    description:
      - The role to log in as. Most facts need a superuser or a member of C(pg_monitor).
    type: str
    default: postgres
    aliases: [user]
  login_password:
    description:
      - That role's password. Never logged. Not needed for peer or trust authentication.
    type: str
    aliases: [password]
  db:
    description:
      - The database to connect to; per-database facts (tables, statements) are about it.
    type: str
    default: postgres
    aliases: [login_db]
  ssl_mode:
    description:
      - libpq's C(sslmode) for TCP connections.
    type: str
    default: prefer
    choices: [disable, allow, prefer, require, verify-ca, verify-full]
  ca_cert:
    description:
      - The CA certificate (PEM) to check the server's certificate against (libpq's
        C(sslrootcert)), for O(ssl_mode=verify-ca) or O(ssl_mode=verify-full).
    type: path
    aliases: [ssl_rootcert]
  connect_timeout:
    description:
      - Seconds to wait for the connection.
    type: int
    default: 10
requirements:
  - psycopg2 on the target (Debian's C(python3-psycopg2), present on the database hosts).
notes:
  - A server that cannot be reached, or that refuses the login, is reported as data
    (C(available=false) and the server's error), not as a failed task.
"""
