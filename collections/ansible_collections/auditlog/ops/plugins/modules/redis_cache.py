#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: redis_cache
short_description: Clear the service's cache keys in Redis (FLUSHALL only when asked)
version_added: 0.4.0
description:
  - Removes the keys matching O(patterns) (by default the service's query results,
    C(audit:q:*)) with C(SCAN) and C(UNLINK) in batches, as the guide's
    C(redis-cli --scan --pattern ... | xargs redis-cli DEL) does, without blocking the server the
    way C(KEYS) or one large C(DEL) would. Other keys, the service's own key mirror, generation
    counters and rate limits included, stay unless a pattern names them.
  - With O(flushall=true) empties every database of the server instead (C(FLUSHALL ASYNC));
    everything of everyone goes, so the runbooks put it behind a variable of its own.
  - In check mode counts what would be removed and removes nothing. C(changed) is true only when
    a key was removed (in check mode, would be).
author: audit-log project (!UNKNOWN)
options:
  patterns:
    description:
      - The C(SCAN MATCH) patterns of the keys to remove.
    type: list
    elements: str
    default: ["audit:q:*"]
  db:
    description:
      - The database the keys are in (the C(/0) of the service's C(REDIS_URL)).
    type: int
    default: 0
  batch:
    description:
      - How many keys one C(UNLINK) removes at most (and the C(SCAN) C(COUNT) hint).
    type: int
    default: 500
  flushall:
    description:
      - Empty every database of the server (C(FLUSHALL ASYNC)) rather than the keys of
        O(patterns). Destructive for every user of the server.
    type: bool
    default: false
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - auditlog.ops.redis
attributes:
  check_mode:
    support: full
    details: Counts what would be removed and removes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - The login needs C(SCAN) and C(UNLINK) on the keys (and C(FLUSHALL) for O(flushall)); the
    deployment's admin user has them.
seealso:
  - module: auditlog.ops.redis_diagnostics
"""

EXAMPLES = r"""
- name: Remove the service's cached query results
  auditlog.ops.redis_cache:
    server_host: 127.0.0.1
    user: audit-admin
    password: "{{ audit_redis_admin_password }}"

- name: Empty the whole server (only with its own variable)
  auditlog.ops.redis_cache:
    password: "{{ audit_redis_admin_password }}"
    flushall: "{{ redis_flushall | default(false) | bool }}"
"""

RETURN = r"""
changed:
  description: Whether a key was removed (in check mode, would be).
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
removed:
  description:
    - Per pattern, the keys removed (in check mode, that would be); with O(flushall), the
      key count of every database before it was emptied, under V(*).
  returned: always
  type: dict
  sample: {"audit:q:*": 120}
total:
  description: All the keys removed (in check mode, that would be).
  returned: always
  type: int
findings:
  description: One info finding with the count and what was done, when keys were (or would be) removed.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding, unavailable  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.redis_api import (  # noqa: E402
    RedisError,
    client_from_params,
    redis_common_argument_spec,
)


def argument_spec():
    spec = redis_common_argument_spec()
    spec.update(
        patterns=dict(type="list", elements="str", default=["audit:q:*"]),
        db=dict(type="int", default=0),
        batch=dict(type="int", default=500),
        flushall=dict(type="bool", default=False),
    )
    return spec


def keyspace_total(info):
    """All keys of INFO keyspace (db0:keys=1,expires=0,... per database)."""
    return sum(
        int(fields.get("keys", 0)) for fields in info.get("keyspace", {}).values() if isinstance(fields, dict)
    )


def remove(client, patterns, db, batch, check_mode):
    """{pattern: keys removed}, UNLINK in batches of at most `batch` (counted only in check mode)."""
    removed = {}
    for pattern in patterns:
        n = 0
        for keys, _last in client.scan(pattern, count=batch, db=db):
            for start in range(0, len(keys), batch):
                chunk = keys[start : start + batch]
                n += len(chunk) if check_mode else int(client.command("UNLINK", *chunk))
        removed[pattern] = n
    return removed


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    if p["batch"] < 1:
        module.fail_json(msg=f"batch must be 1 or more, not {p['batch']}")
    if not p["flushall"] and not p["patterns"]:
        module.fail_json(msg="give the patterns of the keys to remove (or flushall: true)")
    client = client_from_params(p)
    try:
        client.connect()
        if p["flushall"]:
            removed = {"*": keyspace_total(client.info("keyspace"))}
            if removed["*"] and not module.check_mode:
                client.command("FLUSHALL", "ASYNC")
            how = "FLUSHALL ASYNC (every database)"
        else:
            removed = remove(client, p["patterns"], p["db"], p["batch"], module.check_mode)
            how = "SCAN and UNLINK of " + ", ".join(p["patterns"]) + f" in db {p['db']}"
    except RedisError as exc:
        error = str(exc)
        module.exit_json(
            changed=False,
            removed={},
            total=0,
            findings=[finding("critical", "redis", "reachable", f"Redis: {error}")],
            **unavailable(error),
        )
    finally:
        client.close()
    total = sum(removed.values())
    findings = []
    if total:
        findings.append(
            finding(
                "info",
                "redis",
                "cache_cleared",
                "{} key(s) {}".format(total, "would be removed" if module.check_mode else "removed"),
                evidence=removed,
                remediation=("would run " if module.check_mode else "") + how,
            )
        )
    module.exit_json(changed=total > 0, available=True, removed=removed, total=total, findings=findings)


if __name__ == "__main__":
    main()
