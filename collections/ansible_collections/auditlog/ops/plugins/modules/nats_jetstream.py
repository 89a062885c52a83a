#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: nats_jetstream
short_description: Diagnose a NATS server and its JetStream streams and consumers; purge a stream when asked
version_added: 0.3.0
description:
  - Reads what the troubleshooting guide's C(curl :8222/varz), C(connz), C(routez) and C(jsz)
    show, from the server's monitoring port, and the state of every stream and consumer through
    the JetStream API (the client port), and returns them as structured facts with a list of
    RV(findings).
  - The server (version, uptime, CPU, memory, connections, slow consumers), its client
    connections (name, address, user, subscriptions, pending bytes, last activity) with the
    authentication failures among the closed connections the server still remembers, its
    routes, the JetStream totals and meta cluster (leader and peers), and per stream its
    messages, bytes and sequences, per consumer its pending, ack pending and redelivered counts
    and last activity.
  - Only reads, unless O(purge=true) - the guide's C(nats stream purge) - removes the messages of
    the one stream of O(streams), all of them or those below O(purge_up_to_seq). A purge that would
    remove a message some consumer has not acknowledged yet (above its ack floor, an event the
    worker has not stored) is refused, with a critical finding naming how many and the sequence
    that would purge only acknowledged ones, unless O(purge_unacknowledged=true). In check mode it
    says what it would purge and purges nothing.
  - A monitoring port or client port that cannot be reached is returned as data
    (RV(available=false), or C(available=false) in RV(streams), with the error) and a critical
    finding, not as a failed task.
author:
  - audit-log project (!UNKNOWN)
options:
  monitor_url:
    description:
      - The monitoring port's base URL, such as V(http://127.0.0.1:8222). Unset, it is made of
        O(monitor_host) and O(monitor_port) (C(https) when O(monitor_ca_file) is given).
    type: str
  monitor_host:
    description:
      - The monitoring port's host. Unset, O(server_host).
    type: str
  monitor_port:
    description:
      - The monitoring port (the server's C(http) setting; role nats, C(nats_monitor_port)).
    type: int
    default: 8222
  monitor_ca_file:
    description:
      - The CA certificate (PEM) of an C(https) monitoring port.
    type: path
  jetstream_api:
    description:
      - Read the streams and consumers through the JetStream API (needs O(password) on a server
        with authentication). V(false) reads the monitoring port only.
    type: bool
    default: true
  streams:
    description:
      - The streams to report. Empty, every stream of the user's account. A stream named here
        that does not exist makes a critical finding.
    type: list
    elements: str
    default: []
  connections_limit:
    description:
      - How many client connections to list (those with the most pending bytes first).
    type: int
    default: 100
  expected_routes:
    description:
      - How many routes (other servers of the cluster) the server should have. Fewer make a
        warning. V(0) for a single server.
    type: int
    default: 0
  pending_warn:
    description:
      - A consumer with more messages than this not yet delivered (C(num_pending)) makes a warning.
    type: int
    default: 1000
  ack_pending_warn:
    description:
      - A consumer with more delivered messages than this awaiting their ack
        (C(num_ack_pending)) makes a warning.
    type: int
    default: 1000
  redelivered_warn:
    description:
      - A consumer with more messages than this redelivered (C(num_redelivered)) makes a warning.
    type: int
    default: 100
  storage_warn_ratio:
    description:
      - JetStream storage (file or memory) over this share of its maximum makes a warning.
    type: float
    default: 0.8
  purge:
    description:
      - Purge the stream named in O(streams) (exactly one). Destructive, so off unless asked for.
    type: bool
    default: false
  purge_up_to_seq:
    description:
      - Purge only the messages with a sequence below this one (JetStream's C(seq)). Unset, the
        whole stream.
    type: int
  purge_unacknowledged:
    description:
      - Purge messages that a consumer has not acknowledged too. They are events nobody has
        processed; with the service's stream, events the API acknowledged and the database does
        not have. Off unless asked for.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - auditlog.ops.nats
attributes:
  check_mode:
    support: full
    details: Reads as ever; a purge says what it would remove and removes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
seealso:
  - name: Monitoring
    description: The endpoints this module reads.
    link: https://docs.nats.io/running-a-nats-service/nats_admin/monitoring
  - module: auditlog.ops.nats_stream
"""

EXAMPLES = r"""
- name: Diagnose the local broker and the service's stream
  auditlog.ops.nats_jetstream:
    password: "{{ audit_nats_password }}"
    streams: [audit-logs]
    expected_routes: "{{ groups['mq'] | length - 1 }}"
  register: nats

- name: Monitoring port only, on another host
  auditlog.ops.nats_jetstream:
    monitor_url: http://mq1.example.net:8222
    jetstream_api: false
"""

RETURN = r"""
changed:
  description: Whether messages were purged (in check mode, would be).
  returned: always
  type: bool
purged:
  description:
    - With O(purge), the stream, the sequence below which it was (or would be) purged
      (C(up_to_seq)), the messages removed (C(messages); in check mode an estimate from the
      sequences), the lowest ack floor of its consumers (C(ack_floor)), and C(refused) with the
      C(reason) when unacknowledged messages were in the way.
  returned: when O(purge) is true
  type: dict
  sample: {"stream": "audit-logs", "up_to_seq": 1201, "messages": 1200, "ack_floor": 1200,
           "refused": false, "reason": null}
available:
  description: Whether the monitoring port answered.
  returned: always
  type: bool
error:
  description: Why it did not.
  returned: when RV(available) is false
  type: str
monitor_url:
  description: The monitoring port's base URL used.
  returned: always
  type: str
server:
  description: The server's figures from C(varz).
  returned: when available
  type: dict
  sample: {"server_name": "mq1", "version": "2.9.10", "uptime": "3h2m", "cpu_percent": 1.0,
           "mem_bytes": 16777216, "connections": 4, "total_connections": 30,
           "slow_consumers": 0, "routes": 0, "jetstream": true}
connections:
  description:
    - Client connections from C(connz) (at most O(connections_limit), most pending bytes first).
    - C(auth_failures) counts the connections closed for their credentials among the closed
      connections the server still remembers (C(connz?state=closed)).
  returned: when available
  type: dict
  sample: {"count": 2, "total": 2, "pending_bytes": 0, "list": [{"cid": 5, "name": "audit-worker",
           "ip": "10.0.0.5", "port": 51234, "user": "audit-worker", "subscriptions": 2,
           "pending_bytes": 0, "last_activity": "2026-12-01T10:00:00Z", "idle": "1s"}],
           "auth_failures": {"count": 1, "closed_seen": 12, "recent": [{"ip": "10.0.0.9",
           "user": null, "stop": "2026-12-01T09:59:00Z", "reason": "Authentication Failure"}]}}
routes:
  description:
    - The server's routes from C(routez), with O(expected_routes); C(peers) are the other servers
      they reach (a server keeps several routes to each peer, so C(count) may be higher).
  returned: when available
  type: dict
  sample: {"count": 2, "expected": 2, "list": [{"remote_name": "mq2", "ip": "10.0.0.12",
           "port": 6222, "rtt": "1ms", "pending_bytes": 0}]}
jetstream:
  description:
    - The JetStream totals from C(jsz); C(enabled) false when the server runs without JetStream.
    - C(meta_cluster) is null on a single server; in a cluster it has the C(leader) (null when
      there is none) and the peers, each C(current) and C(offline).
  returned: when available
  type: dict
  sample: {"enabled": true, "memory_bytes": 0, "storage_bytes": 180, "max_memory": 268435456,
           "max_storage": 4294967296, "streams": 1, "consumers": 1, "messages": 5, "bytes": 180,
           "api_total": 6, "api_errors": 0, "meta_cluster": {"name": "audit", "leader": "mq1",
           "cluster_size": 3, "peers": [{"name": "mq2", "current": true, "offline": false,
           "active_seconds": 0.2, "lag": 0}]}}
streams:
  description:
    - Per stream (JetStream API, the client port) its state and its consumers' state, with
      C(num_pending) (not yet delivered), C(num_ack_pending) (delivered, awaiting an ack),
      C(num_redelivered), and C(last_delivered) / C(last_ack) times.
    - A dict with C(available=false) and C(error) when the client port cannot be used; empty
      when O(jetstream_api=false).
  returned: always
  type: raw
  sample: [{"name": "audit-logs", "subjects": ["audit.logs.>"], "messages": 120, "bytes": 48000,
            "first_seq": 1, "last_seq": 120, "last_ts": "2026-12-01T10:00:00Z",
            "consumer_count": 1, "consumers": [{"name": "audit-worker", "num_pending": 0,
            "num_ack_pending": 0, "num_redelivered": 0, "last_delivered": "2026-12-01T10:00:00Z"}]}]
findings:
  description:
    - What is wrong, each a finding of module_utils/findings.py (component C(nats)). Checks are
      C(reachable), C(monitoring), C(jetstream_api), C(jetstream), C(meta_leader),
      C(meta_peers), C(routes), C(storage), C(slow_consumers), C(auth_failures),
      C(stream_missing), C(consumer_pending), C(consumer_ack_pending), C(consumer_redelivered).
  returned: always
  type: list
  elements: dict
"""

# Imports after the documentation, as in every Ansible module.
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import nats_monitor  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import (  # noqa: E402
    finding,
    unavailable,
)
from ansible_collections.auditlog.ops.plugins.module_utils.nats_api import (  # noqa: E402
    NatsError,
    client_from_params,
    nats_common_argument_spec,
)

COMPONENT = "nats"


def argument_spec():
    spec = nats_common_argument_spec()
    spec.update(
        monitor_url=dict(type="str"),
        monitor_host=dict(type="str"),
        monitor_port=dict(type="int", default=8222),
        monitor_ca_file=dict(type="path"),
        jetstream_api=dict(type="bool", default=True),
        streams=dict(type="list", elements="str", default=[]),
        connections_limit=dict(type="int", default=100),
        expected_routes=dict(type="int", default=0),
        pending_warn=dict(type="int", default=1000),
        ack_pending_warn=dict(type="int", default=1000),
        redelivered_warn=dict(type="int", default=100),
        storage_warn_ratio=dict(type="float", default=0.8),
        purge=dict(type="bool", default=False),
        purge_up_to_seq=dict(type="int"),
        purge_unacknowledged=dict(type="bool", default=False),
    )
    return spec


def purge_plan(stream, up_to_seq=None, allow_unacknowledged=False):
    """What a purge of `stream` (summarise_stream's shape) below `up_to_seq` (None: all) removes,
    and whether it is refused because a consumer has not acknowledged some of it."""
    last, first = stream.get("last_seq") or 0, stream.get("first_seq") or 0
    target = last + 1 if up_to_seq is None else min(up_to_seq, last + 1)
    floors = [
        c["ack_floor_stream_seq"] or 0 for c in stream.get("consumers") or [] if c.get("ack_policy") != "none"
    ]
    floor = min(floors) if floors else None
    plan = {
        "stream": stream["name"],
        "up_to_seq": target,
        "messages": max(0, target - max(first, 1)) if stream.get("messages") else 0,
        "ack_floor": floor,
        "refused": False,
        "reason": None,
    }
    unacked = 0 if floor is None else max(0, target - 1 - floor)
    if unacked and plan["messages"] and not allow_unacknowledged:
        plan["refused"] = True
        plan["reason"] = (
            f"{unacked} message(s) of {stream['name']} below seq {target} are not acknowledged"
            f" by all consumers (ack floor {floor}): purging them loses events nobody has stored;"
            f" purge_up_to_seq={floor + 1} purges only acknowledged ones,"
            " purge_unacknowledged=true all of them"
        )
    return plan


def purge_findings(plan, check_mode):
    if plan["refused"]:
        return [
            finding("critical", "nats", "purge_refused", "purge refused: " + plan["reason"], evidence=plan)
        ]
    if not plan["messages"]:
        return []
    did = "would purge" if check_mode else "purged"
    return [
        finding(
            "warning",
            "nats",
            "purged",
            f"{did} {plan['messages']} message(s) of {plan['stream']} below seq {plan['up_to_seq']}",
            evidence=plan,
            remediation=f"{did} $JS.API.STREAM.PURGE.{plan['stream']} (seq {plan['up_to_seq']})",
        )
    ]


# -- pure logic: facts -> findings (tests/unit/test_nats_jetstream_module.py)


def _unavailable(value):
    return isinstance(value, dict) and value.get("available") is False


def _consumer_evidence(s, c):
    return (
        f"stream {s['name']} messages {s['messages']}, last_seq {s['last_seq']};"
        f" consumer {c['name']}: num_pending {c['num_pending']}, num_ack_pending {c['num_ack_pending']},"
        f" num_redelivered {c['num_redelivered']}, delivered stream_seq {c['delivered_stream_seq']},"
        f" last delivered {c['last_delivered']}"
    )


def diagnose(facts, params):
    out = []
    monitor_down = not facts.get("available")
    streams = facts.get("streams")
    client_down = _unavailable(streams)
    if monitor_down and client_down:
        out.append(
            finding(
                "critical",
                COMPONENT,
                "reachable",
                "NATS at {} cannot be reached (monitoring and client port)".format(params.get("server_host")),
                evidence="{}; {}".format(facts.get("error"), streams.get("error")),
            )
        )
        return out
    if monitor_down:
        out.append(
            finding(
                "critical",
                COMPONENT,
                "monitoring",
                "NATS monitoring at {} cannot be read".format(facts.get("monitor_url")),
                evidence=facts.get("error"),
            )
        )
    if client_down:
        out.append(
            finding(
                "critical",
                COMPONENT,
                "jetstream_api",
                "the JetStream API of NATS at {}:{} cannot be used".format(
                    params.get("server_host"), params.get("server_port")
                ),
                evidence=streams.get("error"),
            )
        )

    server = facts.get("server") or {}
    if server.get("slow_consumers"):
        out.append(
            finding(
                "info",
                COMPONENT,
                "slow_consumers",
                "NATS cut off {} slow consumer(s) since it started".format(server["slow_consumers"]),
                evidence="varz slow_consumers {}".format(server["slow_consumers"]),
            )
        )
    routes = facts.get("routes") or {}
    expected = params.get("expected_routes") or 0
    reached = len(routes.get("peers", routes.get("list") or [])) if routes else 0
    if routes and reached < expected:
        out.append(
            finding(
                "warning",
                COMPONENT,
                "routes",
                f"NATS reaches {reached} other server(s) by its routes, {expected} expected",
                evidence="routez: {}".format(
                    ", ".join(
                        "{} {}:{}".format(
                            r.get("remote_name") or r.get("remote_id"), r.get("ip"), r.get("port")
                        )
                        for r in routes.get("list") or []
                    )
                    or "no routes"
                ),
            )
        )
    connections = facts.get("connections") or {}
    auth = connections.get("auth_failures") or {}
    if auth.get("count"):
        out.append(
            finding(
                "warning",
                COMPONENT,
                "auth_failures",
                "{} connection(s) to NATS closed for bad credentials (of the last {} closed)".format(
                    auth["count"], auth.get("closed_seen")
                ),
                evidence="; ".join(
                    "{ip} user {user} at {stop}: {reason}".format(**f) for f in auth.get("recent", [])[:5]
                ),
            )
        )
    js = facts.get("jetstream")
    if js is not None and not js.get("enabled"):
        out.append(
            finding(
                "critical",
                COMPONENT,
                "jetstream",
                "JetStream is not enabled on NATS at {}".format(facts.get("monitor_url")),
                evidence="jsz: disabled",
            )
        )
    elif js:
        meta = js.get("meta_cluster")
        if meta is not None:
            if not meta.get("leader"):
                out.append(
                    finding(
                        "critical",
                        COMPONENT,
                        "meta_leader",
                        "the JetStream meta cluster {} has no leader: no stream can be created or"
                        " changed".format(meta.get("name")),
                        evidence="jsz meta_cluster: cluster_size {}, peers {}".format(
                            meta.get("cluster_size"),
                            ", ".join(
                                "{} (current {}, offline {})".format(p["name"], p["current"], p["offline"])
                                for p in meta.get("peers") or []
                            )
                            or "none seen",
                        ),
                    )
                )
            lagging = [p for p in meta.get("peers") or [] if p.get("offline") or not p.get("current")]
            if lagging and meta.get("leader"):
                out.append(
                    finding(
                        "warning",
                        COMPONENT,
                        "meta_peers",
                        "JetStream meta peer(s) offline or behind: {}".format(
                            ", ".join(p["name"] for p in lagging)
                        ),
                        evidence="; ".join(
                            "{name}: current {current}, offline {offline}, last seen {active_seconds}s ago,"
                            " lag {lag}".format(**p)
                            for p in lagging
                        ),
                    )
                )
        for kind in ("storage", "memory"):
            used, limit = js.get(kind + "_bytes"), js.get("max_" + kind)
            if (
                used is not None
                and limit
                and limit > 0
                and float(used) / limit >= params["storage_warn_ratio"]
            ):
                out.append(
                    finding(
                        "warning",
                        COMPONENT,
                        "storage",
                        f"JetStream {kind} {float(used) / limit:.0%} full",
                        evidence=f"jsz {kind} {used} of max_{kind} {limit}",
                    )
                )

    for stream in streams if isinstance(streams, list) else []:
        if stream.get("missing"):
            out.append(
                finding(
                    "critical",
                    COMPONENT,
                    "stream_missing",
                    "the JetStream stream {} does not exist".format(stream["name"]),
                    evidence="$JS.API.STREAM.INFO.{}: stream not found".format(stream["name"]),
                )
            )
            continue
        for consumer in stream.get("consumers") or []:
            for field, option, check, what in (
                ("num_pending", "pending_warn", "consumer_pending", "messages not yet delivered"),
                (
                    "num_ack_pending",
                    "ack_pending_warn",
                    "consumer_ack_pending",
                    "messages awaiting their ack",
                ),
                ("num_redelivered", "redelivered_warn", "consumer_redelivered", "messages redelivered"),
            ):
                value = consumer.get(field) or 0
                if value > params[option]:
                    out.append(
                        finding(
                            "warning",
                            COMPONENT,
                            check,
                            "consumer {} of stream {}: {} {} (over {})".format(
                                consumer["name"], stream["name"], value, what, params[option]
                            ),
                            evidence=_consumer_evidence(stream, consumer),
                        )
                    )
    return out


# -- the server ------------------------------------------------------------------------------------


def gather_monitor(monitor, params):
    facts = {"available": True}
    facts["server"] = nats_monitor.summarise_varz(monitor.get("varz"))
    open_connz = monitor.get("connz", auth="true", sort="pending", limit=params["connections_limit"])
    try:
        closed_connz = monitor.get("connz", state="closed", auth="true", limit=1024)
    except nats_monitor.MonitorError:
        closed_connz = None  # older servers: no closed-connections ring
    facts["connections"] = nats_monitor.summarise_connz(open_connz, closed_connz)
    facts["routes"] = nats_monitor.summarise_routez(monitor.get("routez"), params["expected_routes"])
    facts["jetstream"] = nats_monitor.summarise_jsz(monitor.get("jsz"))
    return facts


def gather_streams(params, check_mode=False):
    """The streams' state; with purge, the purge (or its refusal) too: (streams, plan or None)."""
    client = client_from_params(params)
    plan = None
    try:
        client.connect()
        streams = nats_monitor.streams_state(client, params["streams"] or None)
        if params["purge"] and not streams[0].get("missing"):
            plan = purge_plan(streams[0], params["purge_up_to_seq"], params["purge_unacknowledged"])
            if plan["messages"] and not plan["refused"] and not check_mode:
                body = {} if params["purge_up_to_seq"] is None else {"seq": plan["up_to_seq"]}
                plan["messages"] = client.js_request(f"$JS.API.STREAM.PURGE.{plan['stream']}", body).get(
                    "purged", 0
                )
                streams = nats_monitor.streams_state(client, params["streams"])
        return streams, plan
    except NatsError as exc:
        return unavailable(exc), plan
    finally:
        client.close()


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    url = nats_monitor.monitor_base_url(p)
    facts = {"monitor_url": url}
    try:
        monitor = nats_monitor.Monitor(url, timeout=p["timeout"], ca_file=p["monitor_ca_file"])
        facts.update(gather_monitor(monitor, p))
    except nats_monitor.MonitorError as exc:
        facts.update(unavailable(exc))
    if p["purge"] and (len(p["streams"]) != 1 or not p["jetstream_api"]):
        module.fail_json(
            msg="purge needs exactly one stream in streams, and jetstream_api", streams=p["streams"]
        )
    if p["purge_up_to_seq"] is not None and p["purge_up_to_seq"] < 1:
        module.fail_json(msg=f"purge_up_to_seq is a stream sequence (1 or more), not {p['purge_up_to_seq']}")
    facts["streams"], plan = gather_streams(p, module.check_mode) if p["jetstream_api"] else ([], None)
    facts["findings"] = diagnose(facts, p)
    changed = False
    if plan is not None:
        facts["purged"] = plan
        facts["findings"].extend(purge_findings(plan, module.check_mode))
        changed = bool(plan["messages"]) and not plan["refused"]
    module.exit_json(changed=changed, **facts)


if __name__ == "__main__":
    main()
