# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).


class ModuleDocFragment:
    # The connection options of the NATS modules (module_utils/nats_api.nats_common_argument_spec).
    DOCUMENTATION = r"""
options:
  server_host:
    description:
      - The NATS server to connect to (its client port).
      - The module runs on the target host, so the default is that host's own server.
    type: str
    default: 127.0.0.1
    aliases: [host]
  server_port:
    description:
      - The NATS client port.
    type: int
    default: 4222
    aliases: [port]
  user:
    description:
      - The user to log in as (the server's C(authorization) block).
    type: str
    default: audit
    aliases: [login_user]
  password:
    description:
      - That user's password. Never logged.
      - Omit it only for a server that requires no authentication.
    type: str
    aliases: [login_password]
  timeout:
    description:
      - Seconds to wait for the connection and for each reply of the JetStream API.
    type: float
    default: 10.0
  ca_file:
    description:
      - The CA certificate (PEM) that signed the server's certificate. Given, or when the server
        requires TLS, the connection is upgraded to TLS and the server's certificate is checked
        against it (the system's CAs when omitted) for the name O(server_host).
    type: path
  client_cert:
    description:
      - A client certificate (PEM) to show the server, for servers that verify their clients
        (C(verify) true in the server's C(tls) block).
    type: path
  client_key:
    description:
      - The private key of O(client_cert).
    type: path
notes:
  - The modules speak the NATS text protocol with the Python standard library only, so the
    target needs no C(nats-py).
  - With TLS, O(server_host) must be a name (or address) the server's certificate carries.
"""
