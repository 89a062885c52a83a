#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: ingest_load
short_description: Send a known set of audit events across tenants and record every acknowledged id
version_added: 0.4.0
description:
  - A load generator for drills (the disaster-recovery drill) - O(events) events sent through
    O(url) (nginx, or one API) in batches of O(batch) with C(POST /api/v1/audit/logs/batch), the
    tenants taken in turn, at most O(rate) events a second.
  - Every id the service acknowledged (202) is recorded per tenant in O(record), a JSON file on the
    host - what the drill then looks for in the database, each exactly once. A request that got no
    202 is not retried (its events were not acknowledged) and is counted as a failure.
  - C(changed) is true (events are created); in check mode nothing is sent.
author: audit-log project (!UNKNOWN)
options:
  url:
    description: The service's base URL (C(https://127.0.0.1) for the host's nginx).
    type: str
    required: true
  ca_file:
    description: The CA certificate that the URL's certificate is checked against (https).
    type: path
  tenants:
    description: The tenants to send for, each with its API key.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description: A name for the tenant in the record.
        type: str
        required: true
      key:
        description: Its API key (kept out of the output).
        type: str
        required: true
  events:
    description: How many events to send in all.
    type: int
    default: 3000
  batch:
    description: Events per request (1 to 1000).
    type: int
    default: 20
  rate:
    description: At most this many events a second; V(0) is as fast as the service answers.
    type: float
    default: 200
  record:
    description: Where the acknowledged ids go (JSON - C(tenants) name to ids, C(failures)).
    type: path
    required: true
  timeout:
    description: Seconds to wait for one answer.
    type: float
    default: 10
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: Sends nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - Run it with C(async) and C(poll=0) to ingest while something else happens, then C(async_status).
seealso:
  - module: auditlog.ops.api_health
"""

EXAMPLES = r"""
- name: Ingest 3000 events across the drill's tenants while the drill goes on
  auditlog.ops.ingest_load:
    url: https://127.0.0.1
    ca_file: /etc/nginx/tls/ca.crt
    tenants: "{{ drill_tenants }}"
    events: 3000
    record: /var/tmp/drill-acked.json
  async: 900
  poll: 0
  register: drill_load
"""

RETURN = r"""
acked:
  description: Events acknowledged, per tenant.
  returned: always
  type: dict
  sample: {"drill-1": 1000, "drill-2": 1000, "drill-3": 980}
failed_requests:
  description: Requests that got no 202 (their events are not acknowledged).
  returned: always
  type: int
failures:
  description: The first failures (status or error), at most 20.
  returned: always
  type: list
  elements: str
seconds:
  description: How long the load took.
  returned: always
  type: float
"""

import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402
from http.client import HTTPConnection, HTTPException, HTTPSConnection  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import tls  # noqa: E402

PATH = "/api/v1/audit/logs/batch"


class Client:
    """One kept-alive connection to the service, made again after an error."""

    def __init__(self, url, context, timeout):
        parts = urlsplit(url)
        self.https = parts.scheme == "https"
        self.host, self.port = parts.hostname, parts.port or (443 if self.https else 80)
        self.context, self.timeout = context, timeout
        self.conn = None

    def post(self, key, body):
        if self.conn is None:
            if self.https:
                self.conn = HTTPSConnection(self.host, self.port, timeout=self.timeout, context=self.context)
            else:
                self.conn = HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request(
                "POST", PATH, body=body, headers={"X-API-Key": key, "Content-Type": "application/json"}
            )
            r = self.conn.getresponse()
            data = r.read()
        except (OSError, HTTPException) as exc:  # TimeoutError is an OSError
            self.conn.close()
            self.conn = None
            return None, f"{type(exc).__name__}: {exc}"
        return r.status, data


def run_load(client, tenants, events, batch, rate, clock=time.monotonic, sleep=time.sleep):
    """Send the events; returns ({tenant: [acked ids]}, failed requests, failure samples)."""
    acked = {t["name"]: [] for t in tenants}
    failed, samples = 0, []
    start, sent, n = clock(), 0, 0
    while sent < events:
        size = min(batch, events - sent)
        k = tenants[n % len(tenants)]
        n += 1
        body = json.dumps(
            {"events": [{"actor": f"drill-{sent + i}", "action": "drill.event"} for i in range(size)]}
        ).encode()
        status, data = client.post(k["key"], body)
        if status == 202:
            acked[k["name"]].extend(json.loads(data)["ids"])
        else:
            failed += 1
            if len(samples) < 20:
                samples.append(
                    f"{k['name']}: {status if status is not None else ''} {str(data)[:200]}".strip()
                )
        sent += size
        if rate > 0:
            ahead = sent / rate - (clock() - start)
            if ahead > 0:
                sleep(ahead)
    return acked, failed, samples


def main():
    module = AnsibleModule(
        argument_spec=dict(
            url=dict(type="str", required=True),
            ca_file=dict(type="path"),
            tenants=dict(
                type="list",
                elements="dict",
                required=True,
                options=dict(
                    name=dict(type="str", required=True), key=dict(type="str", required=True, no_log=True)
                ),
            ),
            events=dict(type="int", default=3000),
            batch=dict(type="int", default=20),
            rate=dict(type="float", default=200),
            record=dict(type="path", required=True),
            timeout=dict(type="float", default=10),
        ),
        supports_check_mode=True,
    )
    p = module.params
    if not p["url"].startswith(("http://", "https://")):
        module.fail_json(msg=f"url must be http(s)://..., not {p['url']!r}")
    if not p["tenants"]:
        module.fail_json(msg="tenants must name at least one {name, key}")
    if p["events"] < 1 or not 1 <= p["batch"] <= 1000 or p["rate"] < 0:
        module.fail_json(msg="events must be at least 1, batch from 1 to 1000, rate not negative")
    if module.check_mode:
        module.exit_json(changed=False, acked={}, failed_requests=0, failures=[], seconds=0.0)
    try:
        context = tls.client_context(p["ca_file"]) if p["url"].startswith("https") else None
    except tls.TLSError as exc:
        module.fail_json(msg=str(exc))
    started = time.monotonic()
    acked, failed, samples = run_load(
        Client(p["url"], context, p["timeout"]), p["tenants"], p["events"], p["batch"], p["rate"]
    )
    tmp = p["record"] + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"tenants": acked, "failures": samples, "failed_requests": failed}, fh)
    os.replace(tmp, p["record"])
    module.exit_json(
        changed=True,
        acked={t: len(ids) for t, ids in acked.items()},
        failed_requests=failed,
        failures=samples,
        seconds=round(time.monotonic() - started, 3),
    )


if __name__ == "__main__":
    main()
