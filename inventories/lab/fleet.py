#!/usr/bin/env python3
"""More lab hosts, for fleet-sized runs (bench/fleet_health.py): AUDIT_LAB_HOSTS=20 grows the lab
to 20 hosts by adding bare Debian hosts (group audit_spare, no stack component) to the ones of
hosts.yml. Unset or not above hosts.yml's count, it adds none. An inventory script beside
hosts.yml, so that the grown lab has the same definition, group_vars and names.
"""

import json
import os
import re
import sys
from pathlib import Path

# hosts.yml names each of its hosts' containers once (ansible_host): that many it defines.
DEFINED = len(re.findall(r"^\s+ansible_host:", (Path(__file__).parent / "hosts.yml").read_text(), re.M))
IMAGES = ["local/debian-systemd:trixie", "local/debian-systemd:bookworm"]


def spare_hosts(wanted: int) -> dict:
    hosts = {}
    for n in range(1, max(wanted - DEFINED, 0) + 1):
        name = f"spare{n:02d}"
        # The container name, as hosts.yml's: lab_id is a group_vars variable, templated at use.
        hosts[name] = {"ansible_host": f"audit-{{{{ lab_id }}}}-{name}", "lab_image": IMAGES[n % 2]}
    return hosts


def main() -> None:
    raw = os.environ.get("AUDIT_LAB_HOSTS") or "0"
    if not raw.isdigit():
        sys.exit(f"AUDIT_LAB_HOSTS must be a number of hosts, not {raw!r}")
    if len(sys.argv) > 1 and sys.argv[1] == "--host":
        print("{}")
        return
    hosts = spare_hosts(int(raw))
    print(json.dumps({"audit_spare": {"hosts": sorted(hosts)}, "_meta": {"hostvars": hosts}}))


if __name__ == "__main__":
    main()
