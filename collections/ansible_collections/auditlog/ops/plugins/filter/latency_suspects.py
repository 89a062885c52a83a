# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
"""Filter auditlog.ops.latency_suspects: from every host's link_latency measurements, the host
whose network the slow links have in common (every link from it slow, or every link to it), as
findings for the network_latency runbook's fleet play."""

from __future__ import annotations

from collections.abc import Mapping

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: latency_suspects
short_description: Name the host that a fleet's slow links have in common
version_added: 0.4.0
author: audit-log project (!UNKNOWN)
description:
  - Takes, per source host, the C(targets) that auditlog.ops.link_latency returned there, and
    returns findings (severity, component, check, summary, evidence) for the auditlog.ops.finding
    action.
  - A link is slow when its target accepted no connect or its median connect time is
    O(warning_ms) or more.
  - "A source host with two links or more, every one of them slow, is a suspect: its own network
    (its interface, its link, its host's load). The slow links into it from other hosts are its
    evidence too."
  - A target host measured from two sources or more, slow from every one of them, is a suspect
    (its link, its server's load).
  - Each suspect is one finding (check C(latency_suspect)), critical when every one of its links
    has a median from O(critical_ms) or no answer, else a warning. Slow links that have no host in
    common give one warning naming them. With no slow link, one info finding names the slowest.
options:
  _input:
    description:
      - Source host name to the list of link_latency's C(targets) measured there.
    type: dict
    required: true
  warning_ms:
    description: The median from which a link is slow.
    type: float
    default: 20
  critical_ms:
    description: The median from which a slow link is critical.
    type: float
    default: 200
"""

EXAMPLES = r"""
- name: The host the slow links have in common
  auditlog.ops.finding:
    severity: "{{ item.severity }}"
    component: "{{ item.component }}"
    check: "{{ item.check }}"
    summary: "{{ item.summary }}"
    evidence: "{{ item.evidence }}"
  loop: >-
    {{ dict(groups['audit_api'] | zip(groups['audit_api'] | map('extract', hostvars, ['latency', 'targets'])))
       | auditlog.ops.latency_suspects(warning_ms=20, critical_ms=200) }}
"""

RETURN = r"""
_value:
  description: Findings, each a dict of severity, component, check, summary and evidence.
  type: list
  elements: dict
"""


def _links(measured):
    if not isinstance(measured, Mapping):
        raise AnsibleFilterError(
            f"latency_suspects expects a dict of host to link_latency targets, not {measured!r}"
        )
    links = []
    for source, targets in measured.items():
        if not isinstance(targets, list):
            raise AnsibleFilterError(
                f"latency_suspects: the targets of {source} must be a list, not {targets!r}"
            )
        for t in targets:
            links.append(
                {
                    "source": source,
                    "target": t.get("name"),
                    "target_host": t.get("host"),
                    "median_ms": t.get("median_ms"),
                    "received": t.get("received", 0),
                }
            )
    return links


def _text(link):
    median = link["median_ms"]
    shown = "no answer" if not link["received"] or median is None else f"{median:.1f} ms"
    return f"{link['source']} -> {link['target']} {shown}"


def _severity(links, critical_ms):
    bad = all(not lk["received"] or (lk["median_ms"] or 0) >= critical_ms for lk in links)
    return "critical" if bad else "warning"


def latency_suspects(measured, warning_ms=20, critical_ms=200):
    """Findings naming the host the slow links share (see DOCUMENTATION)."""
    links = _links(measured)

    def slow(link):
        return not link["received"] or link["median_ms"] is None or link["median_ms"] >= warning_ms

    suspects = {}
    for source in measured:
        out = [lk for lk in links if lk["source"] == source]
        if len(out) >= 2 and all(slow(lk) for lk in out):
            into = [lk for lk in links if lk["target_host"] == source and slow(lk)]
            suspects[source] = ("from", out, into)
    for host in sorted({lk["target_host"] for lk in links} - set(suspects)):
        into = [lk for lk in links if lk["target_host"] == host and lk["source"] != host]
        if len({lk["source"] for lk in into}) >= 2 and all(slow(lk) for lk in into):
            suspects[host] = ("to", into, [])

    findings = []
    explained = set()
    for host, (way, main, more) in suspects.items():
        every = f"every link {way} {host} is slow ({len(main)} of {len(main)}: "
        summary = every + ", ".join(_text(lk) for lk in main) + ")"
        if more:
            summary += "; and into it: " + ", ".join(_text(lk) for lk in more)
        summary += (
            f": {host}'s own network (its interface, its link, its host's load) rather than any one peer"
            if way == "from"
            else f": {host}'s link or its server's load, not its clients'"
        )
        findings.append(
            {
                "severity": _severity(main, critical_ms),
                "component": "network",
                "check": "latency_suspect",
                "summary": summary,
                "evidence": {"host": host, "links": main + more, "warning_ms": warning_ms},
            }
        )
        explained.update(id(lk) for lk in main + more)
    rest = [lk for lk in links if slow(lk) and id(lk) not in explained]
    if rest:
        findings.append(
            {
                "severity": "warning",
                "component": "network",
                "check": "latency_suspect",
                "summary": "slow links with no host in common: " + ", ".join(_text(lk) for lk in rest),
                "evidence": {"host": None, "links": rest, "warning_ms": warning_ms},
            }
        )
    if not any(slow(lk) for lk in links):
        answered = [lk for lk in links if lk["median_ms"] is not None]
        slowest = max(answered, key=lambda lk: lk["median_ms"], default=None)
        findings.append(
            {
                "severity": "info",
                "component": "network",
                "check": "latency_suspect",
                "summary": f"every one of {len(links)} links under {warning_ms:g} ms"
                + (f", the slowest {_text(slowest)}" if slowest else ""),
                "evidence": {"host": None, "links": [], "warning_ms": warning_ms},
            }
        )
    return findings


class FilterModule:
    """auditlog.ops filters about network latency."""

    def filters(self):
        return {"latency_suspects": latency_suspects}
