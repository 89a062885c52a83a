# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).


class ModuleDocFragment:
    # The connection options of the Redis modules (module_utils/redis_api.redis_common_argument_spec).
    DOCUMENTATION = r"""
options:
  server_host:
    description:
      - The Redis server to connect to. The module runs on the target host, so the default is
        that host's own server.
    type: str
    default: 127.0.0.1
    aliases: [host, login_host]
  server_port:
    description:
      - The Redis port.
    type: int
    default: 6379
    aliases: [port, login_port]
  user:
    description:
      - The ACL user to log in as (C(AUTH <user> <password>)). The default is the deployment's
        admin user (role redis, C(redis_admin_user)), since the service's own user may not run
        C(CONFIG GET) or C(SCAN).
      - Empty, only the password is sent (C(AUTH <password>), the C(default) user).
    type: str
    default: audit-admin
    aliases: [login_user]
  password:
    description:
      - That user's password. Never logged. Omit it for a server without authentication.
    type: str
    aliases: [login_password]
  timeout:
    description:
      - Seconds to wait for the connection and for each reply.
    type: float
    default: 5.0
  tls:
    description:
      - Connect over TLS. Implied by O(ca_file) or O(client_cert).
    type: bool
    default: false
  ca_file:
    description:
      - The CA certificate (PEM) that signed the server's certificate (the system's CAs when
        omitted), checked for the name O(server_host).
    type: path
  client_cert:
    description:
      - A client certificate (PEM) to show the server, for C(tls-auth-clients yes).
    type: path
  client_key:
    description:
      - The private key of O(client_cert).
    type: path
notes:
  - The modules speak RESP with the Python standard library only, so the target needs no
    C(redis-py).
"""
