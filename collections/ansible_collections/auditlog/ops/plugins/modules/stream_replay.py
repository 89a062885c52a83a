#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: stream_replay
short_description: Catch a restored database up from the stream with the service's C(audit-service replay)
version_added: 0.4.0
description:
  - Runs the service's own catch-up, C(audit-service replay), as the worker's unit runs the service
    (its environment files, as the service's user through C(runuser)) - every event the stream still
    holds, from O(from_seq) on, stored where the database lacks it and recognised where it has it.
  - After a restore, events the API acknowledged after the backup are in the stream (which keeps
    acknowledged messages for its window) but not in the database; this brings them back, each
    once, appended to its tenant's chain. Safe while the workers run.
  - C(changed) when it stored at least one event.
author: audit-log project (!UNKNOWN)
options:
  env_files:
    description:
      - The environment files of the worker's unit (C(audit-service.env), C(audit-worker.env)), in
        order, later ones winning - its login may append events.
    type: list
    elements: path
    required: true
  from_seq:
    description: The first stream sequence to replay; the stream's first message when not given.
    type: int
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - auditlog.ops.service_cli
attributes:
  check_mode:
    support: full
    details: In check mode nothing is replayed; the module says that it would replay.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Run it as root (C(become)) on a worker host.
  - It reads every message of the stream once (from O(from_seq)); its time grows with the stream's window.
seealso:
  - module: auditlog.ops.pg_backup
  - module: auditlog.ops.chain_verify
"""

EXAMPLES = r"""
- name: Store again what the restored database lacks
  auditlog.ops.stream_replay:
    env_files:
      - /etc/audit-service/audit-service.env
      - /etc/audit-service/audit-worker.env
  become: true
"""

RETURN = r"""
report:
  description:
    - The replay's report - the stream, the sequences read (C(from_seq), C(to_seq)), the messages
      read, the events C(stored) (the database lacked them) and the C(duplicates) (it had them).
  returned: always
  type: dict
  sample: {"stream": "AUDIT_EVENTS", "from_seq": 1, "to_seq": 5000, "messages": 5000, "stored": 312,
           "duplicates": 4688}
findings:
  description: Check C(stream_replay) (component C(worker)) - one info finding with the counts.
  returned: always
  type: list
  elements: dict
"""

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import service_cli  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding  # noqa: E402


def cli_args(from_seq=None):
    return ["replay"] + (["--from-seq", str(from_seq)] if from_seq else [])


def replay_summary(report):
    return (
        "replayed stream {} from sequence {} to {}: {} message(s) read, {} event(s) the database lacked"
        " stored, {} it had already".format(
            report.get("stream"),
            report.get("from_seq"),
            report.get("to_seq"),
            report.get("messages", 0),
            report.get("stored", 0),
            report.get("duplicates", 0),
        )
    )


def main():
    module = AnsibleModule(
        argument_spec=dict(**service_cli.argument_spec(), from_seq=dict(type="int")),
        supports_check_mode=True,
    )
    p = module.params
    if p["from_seq"] is not None and p["from_seq"] < 1:
        module.fail_json(msg=f"from_seq must be at least 1, not {p['from_seq']}")
    if module.check_mode:
        module.exit_json(
            changed=False,
            report={},
            findings=[
                finding("info", "worker", "stream_replay", "would replay the stream into the database")
            ],
        )
    _rc, report = service_cli.run(module, p["command"], p["env_files"], p["run_as"], cli_args(p["from_seq"]))
    module.exit_json(
        changed=int(report.get("stored") or 0) > 0,
        report=report,
        findings=[finding("info", "worker", "stream_replay", replay_summary(report), evidence=report)],
    )


if __name__ == "__main__":
    main()
