# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
"""Filter auditlog.ops.port_problems: what is wrong with the ports that the services of one host
are set to listen on (a value that is no port, two services on one port), as messages that name
the variables."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: port_problems
short_description: Name the listen ports of one host that are no port number or that two services share
version_added: 0.2.0
author: audit-log project (!UNKNOWN)
description:
  - Takes the ports that the services of one host listen on, each with the name of the variable that
    sets it, and returns one message per problem, naming the variables, or an empty list when there is none.
  - >-
    A value is a port number (V(5432), V("5432")) or an address with a port (V(10.0.0.5:9090), V(:9090),
    V([::1]:9090)), as C(--web.listen-address) takes it; the part after the last colon is the port.
  - >-
    A port must be a whole number from 1 to 65535; anything else gives
    "<name> must be a port number (1-65535), not '<value>'".
  - >-
    Two or more different variables with the same port give
    "port <port> is set for both <name> and <name>: give each service of the host its own port"
    (with three or more, "for each of <name>, <name> and <name>").
    Listen addresses are not compared; the same variable given twice counts once.
  - Messages come in the order of the input (bad values first, then clashes, by the first variable of each).
options:
  _input:
    description:
      - The host's ports, one entry per listening service.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: The variable that sets the port, as the messages name it (e.g. V(redis_port)).
        type: str
        required: true
      value:
        description: Its value, a port or C(host:port).
        type: raw
        required: true
"""

EXAMPLES = r"""
- name: Check that no two services of this host share a port
  ansible.builtin.assert:
    that: problems | length == 0
    fail_msg: "{{ inventory_hostname }}: {{ problems | join('; ') }}"
  vars:
    problems: >-
      {{ [{'name': 'redis_port', 'value': redis_port},
          {'name': 'nats_monitor_port', 'value': nats_monitor_port},
          {'name': 'prometheus_listen_address', 'value': prometheus_listen_address}]
         | auditlog.ops.port_problems }}

# [{'name': 'redis_port', 'value': 8222}, {'name': 'nats_monitor_port', 'value': '8222'}]
#   | auditlog.ops.port_problems
# -> ['port 8222 is set for both redis_port and nats_monitor_port:
#      give each service of the host its own port']
# [{'name': 'nginx_listen_port', 'value': 'http'}] | auditlog.ops.port_problems
# -> ["nginx_listen_port must be a port number (1-65535), not 'http'"]
"""

RETURN = r"""
_value:
  description: One message per problem, naming the variables; empty when the ports are fine.
  type: list
  elements: str
"""

PORT_MAX = 65535


def port_text(value):
    """The port part of a value: all of a port number, what follows the last colon of an address."""
    if value is None:
        return ""
    if isinstance(value, bool):  # true/false is no port, though Python counts it as an int
        return str(value)
    return str(value).strip().rsplit(":", 1)[-1]


def port_number(value):
    """The port of a value (see port_text) as an int, or None when it is no port 1-65535."""
    text = port_text(value)
    if not (text.isascii() and text.isdigit()):
        return None
    port = int(text)
    return port if 1 <= port <= PORT_MAX else None


def _names(names):
    if len(names) == 2:
        return f"both {names[0]} and {names[1]}"
    return "each of " + ", ".join(names[:-1]) + f" and {names[-1]}"


def port_problems(entries):
    """Messages for the bad and the shared ports among `entries` ({name, value} each)."""
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence):
        raise AnsibleFilterError(f"port_problems expects a list of {{name, value}} entries, not {entries!r}")
    problems = []
    users = {}  # port -> the names set to it, in input order
    for entry in entries:
        if not isinstance(entry, Mapping) or "name" not in entry or "value" not in entry:
            raise AnsibleFilterError(f"port_problems: each entry needs a name and a value, not {entry!r}")
        name = str(entry["name"])
        port = port_number(entry["value"])
        if port is None:
            message = f"{name} must be a port number (1-{PORT_MAX}), not '{port_text(entry['value'])}'"
            if message not in problems:
                problems.append(message)
            continue
        names = users.setdefault(port, [])
        if name not in names:
            names.append(name)
    for port, names in users.items():
        if len(names) > 1:
            problems.append(
                f"port {port} is set for {_names(names)}: give each service of the host its own port"
            )
    return problems


class FilterModule:
    """auditlog.ops filters about listen ports."""

    def filters(self):
        return {"port_problems": port_problems}
