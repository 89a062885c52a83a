#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: redis_diagnostics
short_description: Diagnose a Redis server (memory, keys, clients, evictions, config)
version_added: 0.3.0
description:
  - Reads what the troubleshooting guide's C(redis-cli INFO memory), C(INFO clients), C(DBSIZE),
    C(--scan) and C(CONFIG GET) show, and returns it as structured facts with a list of
    RV(findings).
  - Memory (used, peak, RSS, C(maxmemory) and its policy, fragmentation), keys per database, the
    service's own keys (a C(SCAN) over O(service_key_pattern), counted per prefix), clients
    against C(maxclients), evictions, rejected connections, and chosen configuration values.
  - Only reads (C(SCAN) never blocks the server the way C(KEYS) does); C(changed) is always false.
  - A server that cannot be reached, or refuses the login, is returned as RV(available=false)
    with the error and a critical finding, not as a failed task.
author:
  - audit-log project (!UNKNOWN)
options:
  service_key_pattern:
    description:
      - The C(SCAN MATCH) pattern of the service's own keys (its rate limits, query cache and
        key mirror all start with C(audit:)). Empty, no scan is made.
    type: str
    default: "audit:*"
  service_key_db:
    description:
      - The database the service's keys are in (the C(/0) of its C(REDIS_URL)).
    type: int
    default: 0
  scan_max_keys:
    description:
      - Stop counting after this many matching keys (the count is then a lower bound,
        C(complete=false) in RV(service_keys)).
    type: int
    default: 1000000
  memory_warn_ratio:
    description:
      - C(used_memory) over this share of C(maxmemory) makes a warning.
    type: float
    default: 0.8
  memory_critical_ratio:
    description:
      - C(used_memory) over this share of C(maxmemory) makes a critical finding.
    type: float
    default: 0.95
  clients_warn_ratio:
    description:
      - Connected clients over this share of C(maxclients) make a warning.
    type: float
    default: 0.8
  fragmentation_info_ratio:
    description:
      - C(mem_fragmentation_ratio) over this makes an info finding, once more than
        O(fragmentation_min_bytes) are in use (a nearly empty server always looks fragmented).
    type: float
    default: 1.5
  fragmentation_min_bytes:
    description:
      - See O(fragmentation_info_ratio).
    type: int
    default: 67108864
  config:
    description:
      - The configuration values to return in RV(config) (C(CONFIG GET), one name each).
    type: list
    elements: str
    default: [maxmemory, maxmemory-policy, maxclients, timeout, appendonly, save]
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - auditlog.ops.redis
  - auditlog.ops.probe
seealso:
  - name: INFO
    description: The fields this module reads.
    link: https://redis.io/docs/latest/commands/info/
"""

EXAMPLES = r"""
- name: Diagnose the cache host's Redis as the admin user
  auditlog.ops.redis_diagnostics:
    password: "{{ audit_redis_admin_password }}"
  register: redis

- name: Over TLS, another prefix
  auditlog.ops.redis_diagnostics:
    server_host: cache1.example.net
    ca_file: /etc/audit/tls/ca.crt
    password: "{{ audit_redis_admin_password }}"
    service_key_pattern: "audit:q:*"
"""

RETURN = r"""
changed:
  description: Always false; the module only reads.
  returned: always
  type: bool
available:
  description: Whether the server could be reached and logged in to.
  returned: always
  type: bool
error:
  description: Why it could not.
  returned: when RV(available) is false
  type: str
server:
  description: The server's address, version, mode, role and uptime.
  returned: always
  type: dict
  sample: {"address": "127.0.0.1:6379", "version": "7.0.15", "mode": "standalone",
           "role": "master", "uptime_seconds": 86400}
memory:
  description:
    - Memory figures of C(INFO memory), in bytes; C(used_ratio) is used over C(maxmemory)
      (null when C(maxmemory) is 0, no limit).
  returned: when available
  type: dict
  sample: {"used_bytes": 1048576, "used_human": "1.00M", "peak_bytes": 2097152,
           "rss_bytes": 9437184, "maxmemory_bytes": 268435456, "maxmemory_human": "256.00M",
           "maxmemory_policy": "allkeys-lru", "fragmentation_ratio": 9.0, "used_ratio": 0.0039}
keyspace:
  description: Keys per database (C(INFO keyspace)).
  returned: when available
  type: dict
  sample: {"db0": {"keys": 120, "expires": 118, "avg_ttl": 51234}}
service_keys:
  description:
    - The service's own keys, C(SCAN MATCH) O(service_key_pattern) in O(service_key_db),
      counted per prefix (the first two C(:) fields). C(available) false (with C(error)) when
      the user may not scan.
  returned: when available
  type: dict
  sample: {"available": true, "pattern": "audit:*", "db": 0, "count": 120, "complete": true,
           "by_prefix": {"audit:rate": 100, "audit:q": 19, "audit:keys": 1}}
clients:
  description: Clients of C(INFO clients) against C(maxclients).
  returned: when available
  type: dict
  sample: {"connected": 12, "blocked": 0, "maxclients": 10000, "used_ratio": 0.0012}
stats:
  description: Counters of C(INFO stats) since the server started.
  returned: when available
  type: dict
  sample: {"evicted_keys": 0, "expired_keys": 42, "rejected_connections": 0,
           "keyspace_hits": 1000, "keyspace_misses": 10, "total_connections_received": 80}
config:
  description:
    - The values of O(config) (C(CONFIG GET)). C(available) false (with C(error)) when the
      user may not run C(CONFIG GET).
  returned: when available
  type: dict
  sample: {"available": true, "values": {"maxmemory": "268435456",
           "maxmemory-policy": "allkeys-lru", "maxclients": "10000", "timeout": "0"}}
findings:
  description:
    - What is wrong, each a finding of module_utils/findings.py (component C(redis)). Checks
      are C(reachable), C(auth), C(memory), C(maxmemory), C(evictions), C(clients) (critical
      when the server rejects the module's own connection for want of a slot),
      C(rejected_connections), C(fragmentation).
  returned: always
  type: list
  elements: dict
"""

# Imports after the documentation, as in every Ansible module.
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import (  # noqa: E402
    finding,
    level,
    unavailable,
)
from ansible_collections.auditlog.ops.plugins.module_utils.redis_api import (  # noqa: E402
    RedisConnectionError,
    RedisError,
    client_from_params,
    redis_common_argument_spec,
)

COMPONENT = "redis"


# How a TLS handshake ends when the server closes the connection in it.
HANDSHAKE_CUT = ("EOF", "Connection reset by peer", "Broken pipe")


def argument_spec():
    spec = redis_common_argument_spec()
    spec.update(
        service_key_pattern=dict(type="str", default="audit:*", no_log=False),
        service_key_db=dict(type="int", default=0, no_log=False),
        scan_max_keys=dict(type="int", default=1000000, no_log=False),
        memory_warn_ratio=dict(type="float", default=0.8),
        memory_critical_ratio=dict(type="float", default=0.95),
        clients_warn_ratio=dict(type="float", default=0.8),
        fragmentation_info_ratio=dict(type="float", default=1.5),
        fragmentation_min_bytes=dict(type="int", default=64 * 1024 * 1024),
        config=dict(
            type="list",
            elements="str",
            default=["maxmemory", "maxmemory-policy", "maxclients", "timeout", "appendonly", "save"],
        ),
    )
    return spec


# -- pure logic: INFO in, facts and findings out (tests/unit/test_redis_diagnostics_module.py)


def _ratio(part, whole):
    return round(float(part) / whole, 4) if whole else None


def summarise_info(info, address):
    """parse_info()'s sections -> the server, memory, keyspace, clients and stats facts."""
    server = info.get("server", {})
    memory = info.get("memory", {})
    clients = info.get("clients", {})
    stats = info.get("stats", {})
    replication = info.get("replication", {})
    used = memory.get("used_memory")
    maxmemory = memory.get("maxmemory") or 0
    maxclients = clients.get("maxclients")
    connected = clients.get("connected_clients")
    keyspace = dict(
        (db, {"keys": v.get("keys", 0), "expires": v.get("expires", 0), "avg_ttl": v.get("avg_ttl", 0)})
        for db, v in sorted(info.get("keyspace", {}).items())
        if isinstance(v, dict)
    )
    return {
        "server": {
            "address": address,
            "version": str(server.get("redis_version")) if server.get("redis_version") is not None else None,
            "mode": server.get("redis_mode"),
            "role": replication.get("role"),
            "uptime_seconds": server.get("uptime_in_seconds"),
        },
        "memory": {
            "used_bytes": used,
            "used_human": memory.get("used_memory_human"),
            "peak_bytes": memory.get("used_memory_peak"),
            "peak_human": memory.get("used_memory_peak_human"),
            "rss_bytes": memory.get("used_memory_rss"),
            "maxmemory_bytes": maxmemory,
            "maxmemory_human": memory.get("maxmemory_human"),
            "maxmemory_policy": memory.get("maxmemory_policy"),
            "fragmentation_ratio": memory.get("mem_fragmentation_ratio"),
            "used_ratio": _ratio(used, maxmemory) if used is not None else None,
        },
        "keyspace": keyspace,
        "clients": {
            "connected": connected,
            "blocked": clients.get("blocked_clients"),
            "maxclients": maxclients,
            "used_ratio": _ratio(connected, maxclients) if connected is not None else None,
        },
        "stats": dict(
            (name, stats.get(name))
            for name in (
                "evicted_keys",
                "expired_keys",
                "rejected_connections",
                "keyspace_hits",
                "keyspace_misses",
                "total_connections_received",
                "instantaneous_ops_per_sec",
            )
        ),
    }


def diagnose(facts, params):
    """The findings for one run's facts (the thresholds are module options)."""
    out = []
    server = facts.get("server") or {}
    if not facts.get("available"):
        error = facts.get("error") or ""
        if "max number of clients" in error:
            check, what = "clients", "rejects connections: all maxclients slots are taken"
        elif "TLS handshake failed" in error and any(cut in error for cut in HANDSHAKE_CUT):
            # Redis has no way to say "max number of clients" to a TLS client it has no slot for:
            # it closes the connection in the handshake (a reset when the client's hello was unread).
            check, what = (
                "clients",
                "closes connections in the TLS handshake: all maxclients slots are probably taken",
            )
        elif "refused the login" in error or "NOAUTH" in error:
            check, what = "auth", "refused the login"
        else:
            check, what = "reachable", "cannot be reached"
        out.append(
            finding(
                "critical",
                COMPONENT,
                check,
                "Redis at {} {}".format(server.get("address"), what),
                evidence=error,
            )
        )
        return out
    memory = facts.get("memory") or {}
    ratio = memory.get("used_ratio")
    if ratio is not None:
        severity = level(ratio, params["memory_warn_ratio"], params["memory_critical_ratio"])
        if severity:
            out.append(
                finding(
                    severity,
                    COMPONENT,
                    "memory",
                    "Redis uses {} of maxmemory {} ({:.0%})".format(
                        memory.get("used_human"), memory.get("maxmemory_human"), ratio
                    ),
                    evidence=(
                        "used_memory {used_bytes}, maxmemory {maxmemory_bytes},"
                        " policy {maxmemory_policy}, peak {peak_bytes}"
                    ).format(**memory),
                    variable="redis_maxmemory",
                )
            )
    elif memory.get("maxmemory_bytes") == 0:
        out.append(
            finding(
                "info",
                COMPONENT,
                "maxmemory",
                "Redis has no maxmemory: it can grow until the host runs out of memory",
                evidence="maxmemory 0, used_memory {}".format(memory.get("used_bytes")),
                variable="redis_maxmemory",
            )
        )
    stats = facts.get("stats") or {}
    if stats.get("evicted_keys"):
        out.append(
            finding(
                "warning",
                COMPONENT,
                "evictions",
                "Redis evicted {} keys since it started (maxmemory reached)".format(stats["evicted_keys"]),
                evidence="evicted_keys {}, maxmemory {}, policy {}, used_memory {}".format(
                    stats["evicted_keys"],
                    memory.get("maxmemory_bytes"),
                    memory.get("maxmemory_policy"),
                    memory.get("used_bytes"),
                ),
                variable="redis_maxmemory",
            )
        )
    clients = facts.get("clients") or {}
    if clients.get("used_ratio") is not None and clients["used_ratio"] >= params["clients_warn_ratio"]:
        out.append(
            finding(
                "warning",
                COMPONENT,
                "clients",
                "{} of {} Redis clients in use ({:.0%})".format(
                    clients["connected"], clients["maxclients"], clients["used_ratio"]
                ),
                evidence=(
                    "connected_clients {connected}, blocked_clients {blocked}, maxclients {maxclients}"
                ).format(**clients),
            )
        )
    if stats.get("rejected_connections"):
        out.append(
            finding(
                "warning",
                COMPONENT,
                "rejected_connections",
                "Redis rejected {} connections since it started (maxclients reached)".format(
                    stats["rejected_connections"]
                ),
                evidence="rejected_connections {}, maxclients {}".format(
                    stats["rejected_connections"], clients.get("maxclients")
                ),
            )
        )
    frag = memory.get("fragmentation_ratio")
    if (
        frag is not None
        and frag > params["fragmentation_info_ratio"]
        and (memory.get("used_bytes") or 0) >= params["fragmentation_min_bytes"]
    ):
        out.append(
            finding(
                "info",
                COMPONENT,
                "fragmentation",
                f"Redis memory fragmentation ratio {frag}",
                evidence="mem_fragmentation_ratio {}, used_memory_rss {}, used_memory {}".format(
                    frag, memory.get("rss_bytes"), memory.get("used_bytes")
                ),
            )
        )
    return out


# -- the server ------------------------------------------------------------------------------------


def gather(client, params):
    facts = summarise_info(client.info(), client.address)
    facts["available"] = True
    pattern = params["service_key_pattern"]
    if pattern:
        try:
            count, prefixes, complete = client.scan_count(
                pattern, max_keys=params["scan_max_keys"], db=params["service_key_db"]
            )
            facts["service_keys"] = {
                "available": True,
                "pattern": pattern,
                "db": params["service_key_db"],
                "count": count,
                "complete": complete,
                "by_prefix": dict(sorted(prefixes.items())),
            }
        except RedisConnectionError:
            raise
        except RedisError as exc:
            facts["service_keys"] = dict(unavailable(exc), pattern=pattern, db=params["service_key_db"])
    try:
        facts["config"] = {"available": True, "values": client.config_get(*params["config"])}
    except RedisConnectionError:
        raise
    except RedisError as exc:
        facts["config"] = unavailable(f"CONFIG GET: {exc}")
    return facts


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    client = client_from_params(p)
    try:
        client.connect()
        facts = gather(client, p)
    except RedisError as exc:
        facts = unavailable(exc)
        facts["server"] = {"address": client.address}
    finally:
        client.close()
    facts["findings"] = diagnose(facts, p)
    module.exit_json(changed=False, **facts)


if __name__ == "__main__":
    main()
