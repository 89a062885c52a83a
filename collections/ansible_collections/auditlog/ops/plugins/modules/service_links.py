#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: service_links
short_description: Test each link the service needs (PostgreSQL, Redis, NATS) and name the server's error
version_added: 0.3.0
description:
  - The guide's Service Connectivity Test (C(psql ... -c "SELECT 1"), C(redis-cli ping), the
    NATS connections) as data, from the host the module runs on, with the service's own
    credentials, so that it fails where the service fails.
  - "Each link is tested stage by stage: C(resolve) (C(getaddrinfo)), C(connect) (TCP, timed),
    C(tls) (the handshake, timed, the peer certificate's subject and expiry, the verification
    error), C(auth): PostgreSQL by its wire protocol (SSLRequest, StartupMessage, SCRAM-SHA-256,
    md5 or cleartext, then C(SELECT 1)), Redis by C(AUTH) then C(PING), NATS by C(CONNECT) then
    C(PING). The first stage that fails is the link's RV(links.postgres.stage_failed) and the
    server's own error its RV(links.postgres.server_error) (PostgreSQL's SQLSTATE such as C(28P01) and its
    message, Redis' C(WRONGPASS), NATS' C(Authorization Violation))."
  - "Findings: each failing link is critical, naming the link, host, stage and the server's
    error (for NATS each server that fails, with how many of the link's servers answer); a
    TCP connect slower than O(connect_warning_ms) is a
    warning; a certificate that expires within O(cert_warning_days) days is a warning (critical
    once expired)."
  - Only the links given are tested. The module changes nothing, runs in check mode and
    reports an unreachable server as data.
author:
  - audit-log project (!UNKNOWN)
options:
  postgres:
    description:
      - The PostgreSQL link (the service's C(DATABASE_URL)).
    type: dict
    suboptions:
      host:
        description: The server's name or address.
        type: str
        required: true
      port:
        description: Its port.
        type: int
        default: 5432
      user:
        description: The role to log in as.
        type: str
        default: audit_user
      password:
        description: Its password. Never logged.
        type: str
      database:
        description: The database to connect to.
        type: str
        default: audit_logs
      ssl_mode:
        description:
          - As libpq's C(sslmode). V(disable) sends no SSLRequest; V(prefer) uses TLS when the
            server offers it, unverified; V(require) insists on TLS, checking the chain only when
            O(postgres.ca_file) is given; V(verify-full) checks the chain (O(postgres.ca_file) or
            the system's CAs) and the name O(postgres.host).
        type: str
        choices: [disable, prefer, require, verify-full]
        default: prefer
      ca_file:
        description: The CA certificate (PEM) that signed the server's certificate.
        type: path
  redis:
    description:
      - The Redis link (the service's C(REDIS_URL)).
    type: dict
    suboptions:
      host:
        description: The server's name or address.
        type: str
        required: true
      port:
        description: Its port.
        type: int
        default: 6379
      user:
        description: The ACL user (C(AUTH <user> <password>)); unset, C(AUTH <password>).
        type: str
      password:
        description: Its password. Never logged. Unset, no C(AUTH) is sent.
        type: str
      tls:
        description:
          - Connect over TLS, checking the certificate and the name O(redis.host). Implied by
            O(redis.ca_file) and O(redis.client_cert).
        type: bool
        default: false
      ca_file:
        description: The CA certificate (PEM) that signed the server's certificate (else the system's CAs).
        type: path
      client_cert:
        description: A client certificate (PEM), for C(tls-auth-clients yes).
        type: path
      client_key:
        description: The private key of O(redis.client_cert) (a path).
        type: path
  nats:
    description:
      - The NATS link (the service's C(NATS_URL)); every server of it is tested.
    type: dict
    suboptions:
      servers:
        description:
          - The servers, C(host:port) (C(nats://host:port) and C([v6address]:port) are read too;
            the port defaults to 4222).
        type: list
        elements: str
        required: true
      user:
        description: The user to log in as.
        type: str
      password:
        description: Its password. Never logged.
        type: str
      tls:
        description:
          - Upgrade to TLS after the server's C(INFO) even when it does not require it. A
            server that requires TLS gets it anyway. Implied by O(nats.ca_file) and
            O(nats.client_cert).
        type: bool
        default: false
      ca_file:
        description: The CA certificate (PEM) that signed the servers' certificates (else the system's CAs).
        type: path
      client_cert:
        description: A client certificate (PEM), for servers that verify their clients.
        type: path
      client_key:
        description: The private key of O(nats.client_cert) (a path).
        type: path
  timeout:
    description:
      - Seconds to wait for each stage (connect, handshake, each answer).
    type: float
    default: 5.0
  connect_warning_ms:
    description:
      - A TCP connect slower than this, in milliseconds, is a warning.
    type: float
    default: 200.0
  cert_warning_days:
    description:
      - A peer certificate that expires within this many days is a warning.
    type: int
    default: 14
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: none
  platform:
    platforms: debian
notes:
  - Standard library only (no C(psycopg2), C(redis-py), C(nats-py) on the target).
  - SCRAM is done without channel binding and without SASLprep (the deployment's passwords are
    ASCII); Kerberos, GSSAPI and certificate logins are reported as unsupported (stage C(auth)).
seealso:
  - module: auditlog.ops.name_resolution
"""

EXAMPLES = r"""
- name: Test the links of an app host with the service's own credentials
  auditlog.ops.service_links:
    postgres:
      host: db1
      user: audit_user
      password: "{{ audit_db_password }}"
      database: audit_logs
      ssl_mode: prefer
    redis:
      host: cache1
      user: audit-service
      password: "{{ audit_redis_password }}"
    nats:
      servers: ["mq1:4222"]
      user: audit-worker
      password: "{{ audit_nats_worker_password }}"
  register: links

- name: Show the failing stage of each link
  ansible.builtin.debug:
    msg: "{{ item.key }}: {{ item.value.stage_failed }} {{ item.value.error }}"
  loop: "{{ links.links | dict2items }}"

- name: The SQLSTATE PostgreSQL refused the login with (28P01 is a wrong password)
  ansible.builtin.debug:
    msg: "{{ links.links.postgres.server_error.code | default('none') }}"
"""

RETURN = r"""
links:
  description:
    - The facts of each link tested, by its name (V(postgres), V(redis), V(nats)). A link that
      was not given is not there.
  returned: always
  type: dict
  contains:
    postgres:
      description:
        - The PostgreSQL link's facts; also C(user), C(database), C(ssl_mode), C(auth_method) and
          C(server_version) once logged in.
      returned: when O(postgres) is given
      type: dict
      contains:
        available:
          description: Whether every stage passed.
          type: bool
        stage_failed:
          description: The first stage that failed, V(resolve), V(connect), V(tls), V(auth), or V(none).
          type: str
        host:
          description: The server's name as given.
          type: str
        port:
          description: Its port.
          type: int
        addresses:
          description: What the name resolved to.
          type: list
          elements: str
        address:
          description: The address connected to.
          type: str
        resolve_ms:
          description: Milliseconds resolving the name took.
          type: float
        connect_ms:
          description: Milliseconds the TCP connect took.
          type: float
        tls_ms:
          description: Milliseconds the TLS handshake took (null without TLS).
          type: float
        auth_ms:
          description: Milliseconds from the login's first message to its answer.
          type: float
        tls:
          description:
            - The TLS session (null without TLS) C(verified), C(verify_error), C(version),
              C(cipher) and the peer certificate's C(subject), C(issuer), C(names), C(not_after),
              C(days_left).
          type: dict
        error:
          description: What failed, for a person (null when available).
          type: str
        server_error:
          description:
            - The server's own error, C(code) (PostgreSQL's SQLSTATE, Redis' error kind, null for
              NATS) and C(message); PostgreSQL adds C(severity) and C(detail). Null when the
              server sent none.
          type: dict
      sample:
        available: false
        stage_failed: auth
        host: db1
        port: 5432
        addresses: ["10.20.0.11"]
        address: 10.20.0.11
        connect_ms: 0.41
        tls_ms: null
        auth_ms: 3.2
        error: >-
          PostgreSQL at db1:5432 refused user audit_user on database audit_logs:
          28P01 password authentication failed for user "audit_user"
        server_error:
          code: 28P01
          message: password authentication failed for user "audit_user"
          severity: FATAL
    redis:
      description: The Redis link's facts (as RV(links.postgres)), with C(user) and C(tls_enabled).
      returned: when O(redis) is given
      type: dict
      sample:
        available: false
        stage_failed: connect
        error: "cannot connect to cache1:6379 (10.20.0.12: [Errno 111] Connection refused)"
    nats:
      description:
        - The NATS link's facts (as RV(links.postgres)), those of its first healthy server (else of its
          first), with C(servers), each server's own facts, and C(server) (the C(INFO) name and version).
      returned: when O(nats) is given
      type: dict
      sample:
        available: false
        stage_failed: auth
        server_error: {"code": null, "message": "Authorization Violation"}
findings:
  description: What is wrong (auditlog.ops findings; empty when every link is healthy).
  returned: always
  type: list
  elements: dict
"""

# Imports after the documentation, as in every Ansible module.
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import links as lk  # noqa: E402


def argument_spec():
    tls_files = dict(
        tls=dict(type="bool", default=False),
        ca_file=dict(type="path"),
        client_cert=dict(type="path"),
        client_key=dict(type="path", no_log=False),
    )
    return dict(
        postgres=dict(
            type="dict",
            options=dict(
                host=dict(type="str", required=True),
                port=dict(type="int", default=5432),
                user=dict(type="str", default="audit_user"),
                password=dict(type="str", no_log=True),
                database=dict(type="str", default="audit_logs"),
                ssl_mode=dict(
                    type="str", default="prefer", choices=["disable", "prefer", "require", "verify-full"]
                ),
                ca_file=dict(type="path"),
            ),
        ),
        redis=dict(
            type="dict",
            options=dict(
                host=dict(type="str", required=True),
                port=dict(type="int", default=6379),
                user=dict(type="str"),
                password=dict(type="str", no_log=True),
                **tls_files,
            ),
        ),
        nats=dict(
            type="dict",
            options=dict(
                servers=dict(type="list", elements="str", required=True),
                user=dict(type="str"),
                password=dict(type="str", no_log=True),
                **tls_files,
            ),
        ),
        timeout=dict(type="float", default=5.0),
        connect_warning_ms=dict(type="float", default=200.0),
        cert_warning_days=dict(type="int", default=14),
    )


PROBES = (("postgres", lk.probe_postgres), ("redis", lk.probe_redis), ("nats", lk.probe_nats))


def run(params):
    """The module's work without AnsibleModule: the result dict."""
    result = dict(changed=False, links={}, findings=[])
    for link, probe in PROBES:
        if not params.get(link):
            continue
        facts = probe(params[link], params["timeout"])
        result["links"][link] = facts
        result["findings"].extend(
            lk.link_findings(link, facts, params["connect_warning_ms"], params["cert_warning_days"])
        )
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    if not any(p.get(link) for link, _ in PROBES):
        module.fail_json(msg="give at least one link: postgres, redis or nats")
    if p.get("nats") is not None and not p["nats"]["servers"]:
        module.fail_json(msg="nats.servers is empty: give at least one host:port")
    module.exit_json(**run(p))


if __name__ == "__main__":
    main()
