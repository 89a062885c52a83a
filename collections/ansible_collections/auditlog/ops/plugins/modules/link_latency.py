#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: link_latency
short_description: Measure the TCP connect latency from a host to its peers, as the guide's ping
version_added: 0.4.0
description:
  - The guide's C(ping -c 5 postgres) as data, from the host the module runs on. ICMP needs raw
    sockets (root or C(CAP_NET_RAW)), so repeated timed TCP connects to the port the service
    uses stand in for it; they also cross the firewalls the service's own connections cross.
  - Each target's name is resolved once (C(getaddrinfo), timed), then O(count) TCP connects are
    made, O(interval_ms) apart, each closed right after it is established (no byte is sent). The
    first connect tries the resolved addresses in order, as the service's client does; the
    address that accepts is used for the others.
  - Per target, the samples in milliseconds and, as C(ping) prints them, the connects sent,
    received and lost, the minimum, median and maximum, and the jitter (the mean absolute
    difference of consecutive samples).
  - The targets are measured at the same time (a thread each), so the run takes as long as the
    slowest target, about O(count) times O(interval_ms), whatever the number of targets.
  - "Findings: a target that accepts no connect is critical (check C(unreachable)), naming the
    target and the error (connection refused, timed out, no route); some connects failed is a
    warning (C(packet_loss)); a median connect time from O(warning_ms) is a warning and from
    O(critical_ms) critical (C(latency)); a name that took O(resolve_warning_ms) or more to
    resolve is a warning (C(resolve_time), component C(dns))."
  - The module changes nothing and runs in check mode the same way.
author:
  - audit-log project (!UNKNOWN)
options:
  targets:
    description:
      - The endpoints to measure, in the order they are returned.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - What the target is, for a person (V(postgres), V(redis), V(nats nats1), V(api app1)).
        type: str
        required: true
      host:
        description: The target's name or address, resolved on the host the module runs on.
        type: str
        required: true
      port:
        description: The TCP port to connect to (1 to 65535).
        type: int
        required: true
  count:
    description:
      - How many TCP connects per target (C(ping -c)), from 1 to 100.
    type: int
    default: 5
  interval_ms:
    description:
      - Milliseconds to wait between two connects to the same target (C(ping -i)).
    type: float
    default: 100.0
  timeout:
    description:
      - Seconds to wait for each connect; a connect that takes longer is lost.
    type: float
    default: 3.0
  warning_ms:
    description:
      - A target whose median connect time is this many milliseconds or more is a warning.
    type: float
    default: 20.0
  critical_ms:
    description:
      - A target whose median connect time is this many milliseconds or more is critical. Not
        below O(warning_ms).
    type: float
    default: 200.0
  resolve_warning_ms:
    description:
      - A name whose resolution took this many milliseconds or more is a warning, which suggests
        pinning the name in C(/etc/hosts).
    type: float
    default: 100.0
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
  - Standard library only; no C(ping), no raw socket, no subprocess.
  - A TCP connect takes one round trip (SYN, SYN-ACK), as an ICMP echo does, plus the time the
    peer's kernel takes to answer; on a busy peer whose listen backlog is full it grows, which
    the service's own connects would suffer too.
  - The servers see short connections that send nothing (PostgreSQL does not log those).
seealso:
  - module: auditlog.ops.service_links
  - module: auditlog.ops.name_resolution
"""

EXAMPLES = r"""
- name: Latency from an app host to its database, cache and brokers
  auditlog.ops.link_latency:
    targets:
      - {name: postgres, host: db1, port: 5432}
      - {name: redis, host: cache1, port: 6379}
      - {name: nats nats1, host: nats1, port: 4222}
      - {name: nats nats2, host: nats2, port: 4222}
    count: 5
    warning_ms: 20
    critical_ms: 200
  register: latency

- name: Show each target's figures, as ping's last lines
  ansible.builtin.debug:
    msg: >-
      {{ item.name }} ({{ item.host }}:{{ item.port }}): {{ item.received }}/{{ item.sent }} connects,
      min/median/max {{ item.min_ms }}/{{ item.median_ms }}/{{ item.max_ms }} ms,
      jitter {{ item.jitter_ms }} ms
  loop: "{{ latency.targets }}"
  loop_control:
    label: "{{ item.name }}"

- name: The slowest target
  ansible.builtin.debug:
    msg: "{{ latency.summary.slowest }}: {{ latency.summary.slowest_median_ms }} ms"
"""

RETURN = r"""
targets:
  description: The figures of each target, in the order of O(targets).
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The target's name (O(targets[].name)).
      type: str
    host:
      description: Its name or address as given.
      type: str
    port:
      description: Its port.
      type: int
    addresses:
      description: What the name resolved to.
      type: list
      elements: str
    address:
      description: The address connected to (null when none accepted).
      type: str
    resolve_ms:
      description: Milliseconds resolving the name took.
      type: float
    samples:
      description: The time of each connect that succeeded, in milliseconds (3 decimals).
      type: list
      elements: float
    sent:
      description: Connects attempted (0 when the name did not resolve).
      type: int
    received:
      description: Connects that succeeded.
      type: int
    lost:
      description: Connects that failed or timed out.
      type: int
    min_ms:
      description: The fastest connect (null when none succeeded).
      type: float
    median_ms:
      description: The median connect time (null when none succeeded).
      type: float
    max_ms:
      description: The slowest connect (null when none succeeded).
      type: float
    jitter_ms:
      description:
        - The mean absolute difference of consecutive samples (0 with one sample, null with none).
      type: float
    error:
      description: The last error (resolution or connect), or null.
      type: str
  sample:
    - name: nats nats1
      host: nats1
      port: 4222
      addresses: ["10.20.0.21"]
      address: 10.20.0.21
      resolve_ms: 0.42
      samples: [0.311, 0.287, 0.402, 0.295, 0.301]
      sent: 5
      received: 5
      lost: 0
      min_ms: 0.287
      median_ms: 0.301
      max_ms: 0.402
      jitter_ms: 0.06
      error: null
summary:
  description: The run at a glance.
  returned: always
  type: dict
  contains:
    slowest:
      description: The name of the reachable target with the highest median (null when none answered).
      type: str
    slowest_median_ms:
      description: Its median connect time.
      type: float
    reachable:
      description: How many targets accepted at least one connect.
      type: int
    unreachable:
      description: How many accepted none.
      type: int
  sample:
    slowest: nats nats1
    slowest_median_ms: 0.301
    reachable: 4
    unreachable: 0
findings:
  description: What is wrong (auditlog.ops findings; empty when every target is fast and reachable).
  returned: always
  type: list
  elements: dict
"""

# Imports after the documentation, as in every Ansible module.
import itertools  # noqa: E402
import socket  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import links as lk  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding, level  # noqa: E402

MAX_COUNT = 100


def argument_spec():
    return dict(
        targets=dict(
            type="list",
            elements="dict",
            required=True,
            options=dict(
                name=dict(type="str", required=True),
                host=dict(type="str", required=True),
                port=dict(type="int", required=True),
            ),
        ),
        count=dict(type="int", default=5),
        interval_ms=dict(type="float", default=100.0),
        timeout=dict(type="float", default=3.0),
        warning_ms=dict(type="float", default=20.0),
        critical_ms=dict(type="float", default=200.0),
        resolve_warning_ms=dict(type="float", default=100.0),
    )


def validate(params):
    """What is wrong with the parameters, for a person (None when nothing is)."""
    if not params["targets"]:
        return "targets is empty: give at least one {name, host, port}"
    count = params["count"]
    if not 1 <= count <= MAX_COUNT:
        return f"count must be from 1 to {MAX_COUNT}, not {count}"
    for option in ("interval_ms", "warning_ms", "critical_ms", "resolve_warning_ms"):
        if params[option] < 0:
            return f"{option} must be 0 or more, not {params[option]}"
    if params["timeout"] <= 0:
        return f"timeout must be more than 0 seconds, not {params['timeout']}"
    if params["critical_ms"] < params["warning_ms"]:
        return f"critical_ms ({params['critical_ms']}) is below warning_ms ({params['warning_ms']})"
    for target in params["targets"]:
        if not 1 <= target["port"] <= 65535:
            return f"target {target['name']}: port must be from 1 to 65535, not {target['port']}"
        if not target["host"].strip():
            return f"target {target['name']}: host is empty"
    return None


# -- measuring ---------------------------------------------------------------------------------------


def connect_ms(family, sockaddr, timeout):
    """One TCP connect to sockaddr, closed as soon as it is established: its time in milliseconds
    (3 decimals). Raises OSError (TimeoutError past `timeout` seconds)."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        started = time.perf_counter()
        sock.connect(sockaddr)
        return round((time.perf_counter() - started) * 1000, 3)
    finally:
        sock.close()


def _error(address, exc, timeout):
    if isinstance(exc, TimeoutError):
        return f"{address}: timed out after {timeout:g}s"
    return f"{address}: {exc}"


def statistics_of(samples):
    """min, median, max and jitter (mean absolute difference of consecutive samples) in ms,
    3 decimals; None for each when there is no sample, jitter 0 with one."""
    if not samples:
        return {"min_ms": None, "median_ms": None, "max_ms": None, "jitter_ms": None}
    steps = [abs(b - a) for a, b in itertools.pairwise(samples)]
    return {
        "min_ms": round(min(samples), 3),
        "median_ms": round(statistics.median(samples), 3),
        "max_ms": round(max(samples), 3),
        "jitter_ms": round(statistics.fmean(steps), 3) if steps else 0.0,
    }


def new_facts(target):
    return {
        "name": target["name"],
        "host": target["host"],
        "port": target["port"],
        "addresses": [],
        "address": None,
        "resolve_ms": None,
        "samples": [],
        "sent": 0,
        "received": 0,
        "lost": 0,
        "min_ms": None,
        "median_ms": None,
        "max_ms": None,
        "jitter_ms": None,
        "error": None,
    }


def measure_target(target, count, interval_ms, timeout):
    """One target's facts: resolved once, then `count` timed connects `interval_ms` apart."""
    facts = new_facts(target)
    try:
        infos = lk.resolve(target["host"], target["port"], facts)
    except lk.StageError as exc:
        facts["error"] = str(exc)
        return facts
    # One candidate per address, in getaddrinfo's order; once one accepts it is the only one.
    candidates, seen = [], set()
    for family, _kind, _proto, _name, sockaddr in infos:
        if sockaddr[0] not in seen:
            seen.add(sockaddr[0])
            candidates.append((family, sockaddr))
    for attempt in range(count):
        if attempt:
            time.sleep(interval_ms / 1000)
        facts["sent"] += 1
        errors = []
        for family, sockaddr in candidates:
            try:
                sample = connect_ms(family, sockaddr, timeout)
            except OSError as exc:
                errors.append(_error(sockaddr[0], exc, timeout))
                continue
            facts["samples"].append(sample)
            if facts["address"] is None:
                facts["address"] = sockaddr[0]
                candidates = [(family, sockaddr)]
            break
        else:
            facts["error"] = "; ".join(errors)
    facts["received"] = len(facts["samples"])
    facts["lost"] = facts["sent"] - facts["received"]
    facts.update(statistics_of(facts["samples"]))
    return facts


def measure(targets, count, interval_ms, timeout):
    """Every target's facts, in the order given, measured at the same time (a thread each)."""
    with ThreadPoolExecutor(max_workers=len(targets), thread_name_prefix="link_latency") as pool:
        return list(pool.map(lambda t: measure_target(t, count, interval_ms, timeout), targets))


# -- findings ----------------------------------------------------------------------------------------


def _n(value):
    """A figure in ms for a summary: 153.2, 0.062."""
    return f"{value:.1f}" if value >= 1 else f"{value:.3f}"


def _evidence(facts, **thresholds):
    keep = (
        "host",
        "port",
        "address",
        "resolve_ms",
        "sent",
        "received",
        "lost",
        "min_ms",
        "median_ms",
        "max_ms",
        "jitter_ms",
        "error",
    )
    return {"target": facts["name"], **{k: facts[k] for k in keep}, **thresholds}


def target_findings(facts, warning_ms, critical_ms, resolve_warning_ms):
    """The findings of one target's facts."""
    out = []
    host = f"[{facts['host']}]" if ":" in facts["host"] else facts["host"]
    label = f"{facts['name']} ({host}:{facts['port']})"
    resolve_ms = facts["resolve_ms"]
    if facts["error"] and not facts["addresses"]:
        out.append(
            finding(
                "critical",
                "network",
                "unreachable",
                f"{label}: unreachable, {facts['error']}",
                evidence=_evidence(facts),
            )
        )
    elif not facts["received"]:
        out.append(
            finding(
                "critical",
                "network",
                "unreachable",
                f"{label}: unreachable, none of {facts['sent']} TCP connects succeeded: {facts['error']}",
                evidence=_evidence(facts),
            )
        )
    else:
        if facts["lost"]:
            out.append(
                finding(
                    "warning",
                    "network",
                    "packet_loss",
                    f"{label}: {facts['lost']} of {facts['sent']} TCP connects failed"
                    f" ({round(100 * facts['lost'] / facts['sent'])}% loss): {facts['error']}",
                    evidence=_evidence(facts),
                )
            )
        severity = level(facts["median_ms"], warning_ms, critical_ms)
        if severity:
            threshold = critical_ms if severity == "critical" else warning_ms
            kind = "critical latency" if severity == "critical" else "latency"
            out.append(
                finding(
                    severity,
                    "network",
                    "latency",
                    f"{label}: median TCP connect {_n(facts['median_ms'])} ms over {facts['received']}"
                    f" (min {_n(facts['min_ms'])}, max {_n(facts['max_ms'])}); {kind} from {threshold:g} ms",
                    evidence=_evidence(facts, warning_ms=warning_ms, critical_ms=critical_ms),
                )
            )
    if resolve_ms is not None and resolve_ms >= resolve_warning_ms and facts["addresses"]:
        out.append(
            finding(
                "warning",
                "dns",
                "resolve_time",
                f"{label}: resolving {facts['host']} took {_n(resolve_ms)} ms (warning from"
                f" {resolve_warning_ms:g} ms), which each new connection of the service waits for too;"
                f" pin the name in /etc/hosts (the network/dns.yml runbook checks the names it"
                f" resolves, and with dns_fix_hosts_file fixes their wrong /etc/hosts lines)",
                evidence={
                    "target": facts["name"],
                    "host": facts["host"],
                    "addresses": facts["addresses"],
                    "resolve_ms": resolve_ms,
                    "resolve_warning_ms": resolve_warning_ms,
                },
                variable="dns_fix_hosts_file",
            )
        )
    return out


def summarize(targets):
    reachable = [t for t in targets if t["received"]]
    slowest = max(reachable, key=lambda t: t["median_ms"], default=None)
    return {
        "slowest": slowest["name"] if slowest else None,
        "slowest_median_ms": slowest["median_ms"] if slowest else None,
        "reachable": len(reachable),
        "unreachable": len(targets) - len(reachable),
    }


def run(params):
    """The module's work without AnsibleModule: the result dict."""
    targets = measure(params["targets"], params["count"], params["interval_ms"], params["timeout"])
    findings = []
    for facts in targets:
        findings.extend(
            target_findings(facts, params["warning_ms"], params["critical_ms"], params["resolve_warning_ms"])
        )
    return dict(changed=False, targets=targets, summary=summarize(targets), findings=findings)


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    error = validate(module.params)
    if error:
        module.fail_json(msg=error)
    module.exit_json(**run(module.params))


if __name__ == "__main__":
    main()
