#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: nats_stream
short_description: Create, update or delete a NATS JetStream stream
version_added: 0.1.0
description:
  - Ensures a JetStream stream on a NATS server through the JetStream API
    (C($JS.API.STREAM.INFO), C(CREATE), C(UPDATE), C(DELETE)).
  - With O(state=present) the stream is created when missing, or updated when one of the
    settings given here differs from the server's. Settings left unset are not managed.
  - The differing settings are returned in RV(diff) (shown with C(--diff)); in check mode the
    module reports what it would do and changes nothing.
  - A server that cannot be reached fails the task with a message naming host and port.
author:
  - audit-log project (!UNKNOWN)
options:
  name:
    description:
      - The stream's name.
    type: str
    required: true
  state:
    description:
      - V(present) creates or updates the stream; V(absent) deletes it (and its messages).
    type: str
    choices: [present, absent]
    default: present
  subjects:
    description:
      - Subjects the stream captures (wildcards allowed). Unset, a new stream takes its name.
    type: list
    elements: str
  storage:
    description:
      - Where messages are kept. It cannot be changed on an existing stream (the server refuses).
    type: str
    choices: [file, memory]
    default: file
  retention:
    description:
      - The retention policy.
    type: str
    choices: [limits, interest, workqueue]
    default: limits
  discard:
    description:
      - What to discard when a limit is reached.
    type: str
    choices: [old, new]
    default: old
  max_age:
    description:
      - Maximum age of a message, in seconds. V(0) means unlimited.
    type: float
  duplicate_window:
    description:
      - The window, in seconds, within which a repeated C(Nats-Msg-Id) is dropped.
    type: float
  max_bytes:
    description:
      - Maximum size of the stream in bytes. V(-1) means unlimited.
    type: int
  max_msgs:
    description:
      - Maximum number of messages. V(-1) means unlimited.
    type: int
  max_msg_size:
    description:
      - Maximum size of one message in bytes. V(-1) means the server's C(max_payload).
    type: int
  replicas:
    description:
      - Number of replicas (1 on a single server).
    type: int
    default: 1
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - auditlog.ops.nats
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
seealso:
  - name: JetStream API reference
    description: The API this module calls.
    link: https://docs.nats.io/reference/reference-protocols/nats_api_reference
"""

EXAMPLES = r"""
- name: Ensure the stream of the audit service
  auditlog.ops.nats_stream:
    name: audit-logs
    subjects: ["audit.logs.>"]
    storage: file
    retention: limits
    max_age: "{{ 7 * 86400 }}"
    duplicate_window: 120
    replicas: 1
    password: "{{ audit_nats_password }}"
  no_log: true

- name: Check a remote broker without changing it
  auditlog.ops.nats_stream:
    name: audit-logs
    server_host: mq1
    password: "{{ audit_nats_password }}"
  check_mode: true

- name: Delete a scratch stream
  auditlog.ops.nats_stream:
    name: scratch
    state: absent
    password: "{{ audit_nats_password }}"
"""

RETURN = r"""
changed:
  description: Whether the stream was (or, in check mode, would be) created, updated or deleted.
  returned: always
  type: bool
operation:
  description:
    - What was done (or, in check mode, would be done), V(create), V(update), V(delete) or V(none).
    - Not C(action), which Ansible itself sets on every result (the module's name).
  returned: always
  type: str
  sample: update
diff:
  description:
    - The managed settings that differ, before and after, in the module's units (seconds).
    - On create, C(before) is empty; on delete, C(after) is empty.
  returned: always
  type: dict
  sample: {"before": {"max_age": 86400}, "after": {"max_age": 604800}}
stream:
  description:
    - The stream's info from the server (C(config) and C(state), durations in nanoseconds)
      after the change; in check mode the info as it is now. Empty when there is no stream.
  returned: always
  type: dict
is_available:
  description: Whether the server could be reached and logged in to.
  returned: always
  type: bool
server:
  description: The C(INFO) the server sent (version, server name, JetStream flag).
  returned: when the server could be reached
  type: dict
  sample: {"version": "2.9.10", "server_name": "mq1", "jetstream": true}
"""

# Imports after the documentation, as in every Ansible module.
from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.nats_api import (  # noqa: E402
    NatsConnectionError,
    NatsError,
    client_from_params,
    config_diff,
    config_for_module,
    merged_config,
    nats_common_argument_spec,
    wanted_config,
)


def argument_spec():
    spec = nats_common_argument_spec()
    spec.update(
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        subjects=dict(type="list", elements="str"),
        storage=dict(type="str", default="file", choices=["file", "memory"]),
        retention=dict(type="str", default="limits", choices=["limits", "interest", "workqueue"]),
        discard=dict(type="str", default="old", choices=["old", "new"]),
        max_age=dict(type="float"),
        duplicate_window=dict(type="float"),
        max_bytes=dict(type="int"),
        max_msgs=dict(type="int"),
        max_msg_size=dict(type="int"),
        replicas=dict(type="int", default=1),
    )
    return spec


def _info(info):
    """The stream info without the API envelope (response type, paging counters)."""
    if not info:
        return {}
    return dict((k, v) for k, v in info.items() if k not in ("type", "total", "offset", "limit"))


def ensure(client, params, check_mode):
    """The module's decision, separated from AnsibleModule: returns the result dict."""
    name = params["name"]
    current = client.stream_info(name)
    result = dict(changed=False, operation="none", diff={"before": {}, "after": {}}, stream=_info(current))

    if params["state"] == "absent":
        if current is None:
            return result
        result.update(changed=True, operation="delete")
        result["diff"] = {"before": config_for_module(current.get("config", {})), "after": {}}
        if not check_mode:
            client.stream_delete(name)
            result["stream"] = {}
        return result

    wanted = wanted_config(params)
    if current is None:
        result.update(changed=True, operation="create")
        result["diff"] = {"before": {}, "after": config_for_module(wanted)}
        if not check_mode:
            result["stream"] = _info(client.stream_create(wanted))
        return result

    diff = config_diff(current.get("config", {}), wanted)
    if diff["after"]:
        result.update(changed=True, operation="update", diff=diff)
        if not check_mode:
            result["stream"] = _info(client.stream_update(merged_config(current.get("config", {}), wanted)))
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    for option in ("max_age", "duplicate_window"):
        if p[option] is not None and p[option] < 0:
            module.fail_json(msg=f"{option} must be 0 or more seconds, not {p[option]}")
    if p["replicas"] < 1:
        module.fail_json(msg="replicas must be 1 or more, not {}".format(p["replicas"]))

    client = client_from_params(p)
    try:
        client.connect()
    except NatsConnectionError as exc:
        module.fail_json(msg=str(exc), is_available=False, changed=False)
    server = dict(
        (k, client.server_info.get(k))
        for k in ("version", "server_name", "server_id", "jetstream", "max_payload")
    )
    try:
        result = ensure(client, p, module.check_mode)
    except NatsError as exc:
        module.fail_json(
            msg="stream {} on NATS at {}: {}".format(p["name"], client.address, exc),
            is_available=True,
            server=server,
            changed=False,
        )
    finally:
        client.close()
    result.update(is_available=True, server=server)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
