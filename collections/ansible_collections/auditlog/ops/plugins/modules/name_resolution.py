#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: name_resolution
short_description: Resolve the names a host needs, say where each answer comes from, fix /etc/hosts
version_added: 0.3.0
description:
  - The guide's DNS Resolution Issues (C(nslookup postgres), C(cat /etc/hosts)) as data. Each name
    of O(names) is resolved with C(getaddrinfo), as the service itself resolves it (so
    C(/etc/hosts), DNS and every other source of C(/etc/nsswitch.conf) count).
  - Returns, per name, the addresses, the lines of the hosts file that name it, whether and how
    fast it resolved; and the resolver's configuration (nameservers, search domains, the
    nsswitch C(hosts) line).
  - "Findings: a name that does not resolve is critical; a name that resolves to an address not in
    its C(expected) addresses, or that a hosts-file line maps to such an address, is
    critical, naming the wrong address and the line responsible; a resolver file (O(hosts_file),
    O(resolv_conf), O(nsswitch_conf)) that cannot be read is a warning."
  - With O(fix_hosts_file=true), each hosts-file line that maps a name to an address not expected
    loses that name (the line keeps its other names; a line left without names is removed). Lines
    are added only with O(add_missing=true). The file is written atomically, keeping its mode and
    owner (in place when it is a bind mount, as in Docker containers). The change is shown with
    C(--diff), made only without C(--check), and recorded in the finding's C(remediation).
author:
  - audit-log project (!UNKNOWN)
options:
  names:
    description:
      - The names to resolve. A list of names, a list of C({name, expected}), or a dict of name
        to expected addresses (a list, one address, or null).
      - C(expected) is optional (null or an empty list mean the same); without it a name is only
        resolved, never judged on its address nor edited in the hosts file.
    type: raw
    required: true
  family:
    description:
      - The address family asked for. With V(any), every address returned must be expected.
    type: str
    choices: [any, ipv4, ipv6]
    default: any
  hosts_file:
    description:
      - The hosts file to read (and fix). C(getaddrinfo) always reads the system's own
        (C(/etc/hosts)); another file is judged on its lines alone (for tests, or an image's
        file).
    type: path
    default: /etc/hosts
  resolv_conf:
    description:
      - The resolver configuration to report.
    type: path
    default: /etc/resolv.conf
  nsswitch_conf:
    description:
      - The name service switch configuration whose C(hosts) line is reported.
    type: path
    default: /etc/nsswitch.conf
  fix_hosts_file:
    description:
      - Remove each name from the hosts-file lines that map it to an address not in its
        expected addresses. Nothing is added unless O(add_missing=true).
    type: bool
    default: false
  add_missing:
    description:
      - With O(fix_hosts_file=true), append C(<first expected address> <name>) for each name that
        does not resolve to its expected addresses and that no remaining line maps to one of them.
    type: bool
    default: false
  backup:
    description:
      - Keep a timestamped copy of the hosts file before changing it (RV(backup_file)).
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: debian
notes:
  - Docker bind-mounts C(/etc/hosts) into containers, so it cannot be replaced by a rename
    (C(EBUSY)); the module then writes the file in place.
  - A change to C(/etc/hosts) made by Docker's own container setup comes back when the container
    is recreated; persist it in the inventory (C(etc_hosts)) or the container's C(extra_hosts).
seealso:
  - module: auditlog.ops.service_links
"""

EXAMPLES = r"""
- name: Resolve every component name an app host needs
  auditlog.ops.name_resolution:
    names:
      db1: ["{{ hostvars['db1'].ansible_host }}"]
      mq1: ["{{ hostvars['mq1'].ansible_host }}"]
      cache1:

- name: Remove wrong /etc/hosts entries for the database host (shows the diff in --check --diff)
  auditlog.ops.name_resolution:
    names:
      - name: db1
        expected: ["10.20.0.11"]
    fix_hosts_file: "{{ dns_fix_hosts_file | default(false) | bool }}"
    backup: true
"""

RETURN = r"""
names:
  description: Per name, what resolving it gave.
  returned: always
  type: dict
  contains:
    addresses:
      description: The addresses C(getaddrinfo) returned, in its order, without repeats.
      type: list
      elements: str
    resolved:
      description: Whether the name resolved to at least one address.
      type: bool
    error:
      description: The resolver's error (C([Errno -2] Name or service not known)), or null.
      type: str
    elapsed_ms:
      description: How long C(getaddrinfo) took, in milliseconds.
      type: float
    expected:
      description: The expected addresses (canonical form), or null when none were given.
      type: list
      elements: str
    matches:
      description: Whether the name resolved to expected addresses only; null without expected ones.
      type: bool
    unexpected:
      description: The resolved addresses that are not expected.
      type: list
      elements: str
    hosts_file_entries:
      description: The lines of the hosts file that name it (C(line) number, C(text), C(address)).
      type: list
      elements: dict
    wrong_entries:
      description: Those of the lines that map it to an address not expected.
      type: list
      elements: dict
    source:
      description: Where the answer most likely came from (V(files), V(dns), another nsswitch source).
      type: str
  sample:
    db1:
      addresses: ["10.99.0.9"]
      resolved: true
      error: null
      elapsed_ms: 0.21
      expected: ["10.20.0.11"]
      matches: false
      unexpected: ["10.99.0.9"]
      hosts_file_entries: [{"line": 7, "text": "10.99.0.9 db1", "address": "10.99.0.9"}]
      wrong_entries: [{"line": 7, "text": "10.99.0.9 db1", "address": "10.99.0.9"}]
      source: files
resolver:
  description: The resolver's configuration.
  returned: always
  type: dict
  contains:
    nameservers:
      description: The C(nameserver) lines of O(resolv_conf).
      type: list
      elements: str
    search:
      description: The search domains.
      type: list
      elements: str
    options:
      description: The C(options) of O(resolv_conf).
      type: list
      elements: str
    nsswitch_hosts:
      description: The sources of the nsswitch C(hosts) line, or null.
      type: list
      elements: str
    hosts_file:
      description: The hosts file read.
      type: str
    errors:
      description: Files that could not be read.
      type: list
      elements: str
  sample:
    nameservers: ["127.0.0.11"]
    search: []
    options: ["ndots:0"]
    nsswitch_hosts: ["files", "dns"]
    hosts_file: /etc/hosts
    errors: []
changes:
  description:
    - The edits of the hosts file made (or, in check mode, that would be made), one per name and
      line, C(action) V(remove) (the name from a line), V(drop_line) or V(add).
  returned: always
  type: list
  elements: dict
  sample: [{"name": "db1", "action": "drop_line", "line": 7, "before": "10.99.0.9 db1", "after": null}]
written_in_place:
  description: Whether the hosts file had to be written in place (a bind mount) instead of renamed over.
  returned: when the file was changed
  type: bool
backup_file:
  description: The copy of the hosts file made before the change.
  returned: when O(backup=true) and the file was changed
  type: str
diff:
  description: The hosts file before and after the fix (shown with C(--diff)).
  returned: when O(fix_hosts_file=true)
  type: dict
findings:
  description: What is wrong (auditlog.ops findings; empty when every name resolves as expected).
  returned: always
  type: list
  elements: dict
"""

# Imports after the documentation, as in every Ansible module.
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import hosts_file as hf  # noqa: E402


def argument_spec():
    return dict(
        names=dict(type="raw", required=True),
        family=dict(type="str", default="any", choices=["any", "ipv4", "ipv6"]),
        hosts_file=dict(type="path", default="/etc/hosts"),
        resolv_conf=dict(type="path", default="/etc/resolv.conf"),
        nsswitch_conf=dict(type="path", default="/etc/nsswitch.conf"),
        fix_hosts_file=dict(type="bool", default=False),
        add_missing=dict(type="bool", default=False),
        backup=dict(type="bool", default=False),
    )


def survey(wanted, hosts_text, nsswitch, family):
    """Resolve every name; returns {name: facts}."""
    lines = hf.parse_hosts(hosts_text or "")
    out = {}
    for name, expected in wanted:
        answer = hf.resolve(name, family)
        out[name] = hf.name_facts(name, expected, answer, hf.entries_for(lines, name), nsswitch)
    return out


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    try:
        wanted = hf.normalise_names(p["names"])
    except ValueError as exc:
        module.fail_json(msg=str(exc), changed=False)

    errors = []
    hosts_text = hf.read_text(p["hosts_file"])
    if hosts_text is None:
        errors.append(f"cannot read the hosts file {p['hosts_file']}")
    resolv_text = hf.read_text(p["resolv_conf"])
    if resolv_text is None:
        errors.append(f"cannot read {p['resolv_conf']}")
    nss_text = hf.read_text(p["nsswitch_conf"])
    if nss_text is None:
        errors.append(f"cannot read {p['nsswitch_conf']}")
    nsswitch = hf.parse_nsswitch_hosts(nss_text or "")
    resolver = hf.parse_resolv_conf(resolv_text or "")
    resolver.update(nsswitch_hosts=nsswitch, hosts_file=p["hosts_file"], errors=errors)

    facts = survey(wanted, hosts_text, nsswitch, p["family"])
    findings = hf.name_findings(facts, p["hosts_file"]) + hf.config_findings(errors)
    result = dict(changed=False, names=facts, resolver=resolver, changes=[], findings=findings)

    if p["fix_hosts_file"]:
        if hosts_text is None and not p["add_missing"]:
            module.exit_json(**result)
        broken = [n for n, f in facts.items() if f["expected"] and not f["matches"]]
        new_text, changes = hf.plan_fix(hosts_text or "", wanted, p["add_missing"], broken)
        result["changes"] = changes
        result["diff"] = {
            "before": hosts_text or "",
            "after": new_text,
            "before_header": p["hosts_file"],
            "after_header": p["hosts_file"],
        }
        verified = None
        if changes:
            result["changed"] = True
            if not module.check_mode:
                if p["backup"]:
                    result["backup_file"] = module.backup_local(p["hosts_file"])
                try:
                    result["written_in_place"] = hf.write_atomic(p["hosts_file"], new_text)
                except OSError as exc:
                    module.fail_json(msg=f"cannot write {p['hosts_file']}: {exc}", **result)
                # What the names resolve to now (the system's file only changes the answers).
                changed_names = {c["name"] for c in changes}
                verified = {n.lower(): hf.resolve(n, p["family"])["addresses"] for n in changed_names}
        hf.attach_remediation(findings, changes, p["hosts_file"], module.check_mode, verified)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
