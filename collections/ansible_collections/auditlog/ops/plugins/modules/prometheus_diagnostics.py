#!/usr/bin/python
# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).

DOCUMENTATION = r"""
---
module: prometheus_diagnostics
short_description: Diagnose Prometheus (targets, configuration, TSDB head, memory) on its host
version_added: 0.4.0
description:
  - Asks the Prometheus of the host it runs on, through Prometheus' HTTP API, what the
    troubleshooting guide's "Prometheus Metrics Not Collected" and "Prometheus High Memory Usage"
    check, and returns it as facts with a list of RV(findings). C(GET /api/v1/targets) (each
    target's job, instance, health, last error, last scrape, scrape URL);
    C(GET /api/v1/status/tsdb) (the head's series and chunks, the metric names with the most
    series); C(GET /api/v1/status/runtimeinfo) (whether the last reload worked, when the
    configuration was loaded, the retention in force); C(GET /api/v1/status/flags) (the retention
    flags, the configuration file); C(GET /api/v1/status/config) (the scrape jobs it runs);
    C(GET /metrics) (its own C(process_resident_memory_bytes)).
  - Runs C(promtool check config) on the configuration file on disk (O(config_file), by default
    the file of Prometheus' C(config.file) flag), so that a broken configuration pushed but not
    loaded yet is found before a reload keeps the old one or a restart does not come up. Also
    reads the systemd unit's C(MemoryMax) (C(systemctl show)) and the host's memory, to put the
    memory figure against its limit.
  - "Findings (component C(prometheus) unless said): each target down, critical for the jobs of
    O(critical_jobs) and a warning for the others, naming the target's last error, its unit and
    host, and what starts it again, with the component of the target (C(api), C(node_exporter),
    ...; check C(target_down)); the file on disk failing promtool, critical (C(config_check));
    the last reload failed, critical (C(config_reload)); the file changed after Prometheus loaded
    it, a warning (C(config_pending)); the resident memory over O(memory_warning) or
    O(memory_critical) (C(memory)); TSDB corruption seen (C(tsdb_corruption)); nothing answering
    at O(url), critical (C(reachable)), with promtool's verdict on the file still given."
  - The module only reads; it repairs nothing (the runbook writes the configuration back through
    the prometheus role).
author: audit-log project (!UNKNOWN)
options:
  url:
    description:
      - Prometheus' base URL, from the host the module runs on (the prometheus role's
        C(prometheus_listen_address), C(prometheus_endpoint.local.url)). No proxy is used.
    type: str
    default: http://127.0.0.1:9090
  timeout:
    description:
      - Seconds to wait for each answer.
    type: float
    default: 10
  promtool:
    description:
      - promtool, a path or a name looked for in C(PATH) (Debian's prometheus package installs
        C(/usr/bin/promtool)).
    type: str
    default: promtool
  config_file:
    description:
      - The configuration file to check. Default the C(config.file) flag of the running
        Prometheus, else V(/etc/prometheus/prometheus.yml).
    type: path
  memory_warning:
    description:
      - The resident memory above which the C(memory) finding is a warning; up to V(1) a fraction
        of the limit (the unit's C(MemoryMax) when set, else the host's memory), above V(1) bytes.
    type: float
    default: 0.8
  memory_critical:
    description:
      - The same for a critical finding.
    type: float
    default: 0.9
  critical_jobs:
    description:
      - Scrape jobs whose down targets are critical findings; the others' are warnings.
    type: list
    elements: str
    default: [audit-api, audit-worker, prometheus]
  top_series:
    description:
      - How many metric names with the most series to return (Prometheus gives 10 at most).
    type: int
    default: 10
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - auditlog.ops.probe
notes:
  - Run it on the monitoring host; promtool, the file and systemd are that host's.
seealso:
  - module: auditlog.ops.component
  - name: Prometheus HTTP API
    description: The targets, status and metrics endpoints this module reads.
    link: https://prometheus.io/docs/prometheus/latest/querying/api/
"""

EXAMPLES = r"""
- name: Diagnose this host's Prometheus
  auditlog.ops.prometheus_diagnostics:
    url: "{{ prometheus_endpoint.local.url }}"
  register: prometheus

- name: A memory warning above 2 GiB whatever the limit
  auditlog.ops.prometheus_diagnostics:
    url: http://10.0.0.5:9090
    memory_warning: 2147483648
    memory_critical: 0.95
"""

RETURN = r"""
available:
  description: Whether Prometheus answered at O(url).
  returned: always
  type: bool
error:
  description: Why nothing answered.
  returned: when RV(available) is false
  type: str
url:
  description: The URL asked.
  returned: always
  type: str
version:
  description: Prometheus' version (C(/api/v1/status/buildinfo)).
  returned: when available
  type: str
  sample: 2.42.0+ds
unit:
  description:
    - The systemd unit, whether it exists, its C(active_state) and C(sub_state), and
      C(memory_max), C(memory_high) and C(memory_current) in bytes (null for none or infinity).
  returned: always
  type: dict
  sample: {"unit": "prometheus.service", "exists": true, "active_state": "active", "sub_state": "running",
           "memory_max": null, "memory_high": null, "memory_current": 57495552}
targets:
  description:
    - Every active target, with C(job), C(instance), C(host), C(health) (V(up), V(down),
      V(unknown)), C(last_error), C(last_scrape), C(last_scrape_duration), C(scrape_url), and the
      stack C(component) and C(unit) of its job.
  returned: always
  type: list
  elements: dict
  sample: [{"job": "node", "instance": "mq2:9100", "host": "mq2", "health": "down",
            "last_error": "Get \"http://mq2:9100/metrics\": dial tcp 172.18.0.3:9100: connect:
                           connection refused",
            "last_scrape": "2026-12-02T08:03:41.385476254Z", "last_scrape_duration": 0.0009,
            "scrape_url": "http://mq2:9100/metrics", "component": "node_exporter",
            "unit": "prometheus-node-exporter.service"}]
targets_summary:
  description: The targets counted by health, and the down ones as C(job/instance).
  returned: always
  type: dict
  sample: {"total": 14, "up": 13, "down": 1, "unknown": 0, "down_targets": ["node/mq2:9100"]}
tsdb:
  description:
    - The head block, C(num_series), C(chunks), C(num_label_pairs), C(min_time), C(max_time),
      C(top_series) (metric names with their series, most first) and C(top_label_values).
  returned: when available
  type: dict
  sample: {"num_series": 8290, "chunks": 16240, "num_label_pairs": 1584,
           "top_series": [{"name": "node_systemd_unit_state", "series": 2480}]}
runtime:
  description:
    - From C(/api/v1/status/runtimeinfo), C(start_time), C(reload_config_success),
      C(last_config_time), C(storage_retention), C(corruption_count), C(goroutines), C(gomaxprocs).
  returned: when available
  type: dict
  sample: {"reload_config_success": true, "last_config_time": "2026-12-02T07:51:40Z",
           "storage_retention": "15d"}
flags:
  description:
    - From C(/api/v1/status/flags), C(config_file), C(retention_time), C(retention_size) (null
      when not set), C(tsdb_path), C(listen_address).
  returned: when available
  type: dict
  sample: {"config_file": "/etc/prometheus/prometheus.yml", "retention_time": "15d", "retention_size": null,
           "tsdb_path": "/var/lib/prometheus/metrics2/", "listen_address": "172.18.0.4:9090"}
metrics:
  description: Prometheus' own metrics read from C(/metrics) (resident memory, heap, head series...).
  returned: when available
  type: dict
  sample: {"process_resident_memory_bytes": 84013056, "prometheus_tsdb_head_series": 8290}
memory:
  description:
    - C(rss_bytes) (C(process_resident_memory_bytes)), C(heap_inuse_bytes),
      C(unit_memory_current), C(memory_max), the C(limit_bytes) the thresholds apply to and its
      C(limit_source) (V(MemoryMax) or V(MemTotal)), C(fraction) of it, C(warning_bytes) and
      C(critical_bytes), and C(summary), the figures in one line for a person.
  returned: when available
  type: dict
  sample: {"rss_bytes": 84013056, "memory_max": null, "limit_bytes": 25276030976, "limit_source": "MemTotal",
           "fraction": 0.0033, "summary": "80.1 MiB resident, 0.3 % of the host's memory 23.5 GiB; 8290 head
           series (most node_systemd_unit_state, 2480)"}
config:
  description:
    - The configuration, C(file) (the one checked), C(file_mtime), C(changed_since_load) (newer
      than Prometheus' C(last_config_time)), C(loaded_jobs) (the scrape jobs Prometheus runs) and
      C(check), promtool's verdict (C(ok), C(rc), C(command), C(output), C(errors), the FAILED
      lines; C(ok) null with C(error) when promtool or the file is missing).
  returned: always
  type: dict
  sample: {"file": "/etc/prometheus/prometheus.yml", "loaded_jobs": ["prometheus", "audit-api"],
           "check": {"ok": false, "rc": 1,
                     "errors": ["parsing YAML file /etc/prometheus/prometheus.yml: not a valid duration
                                 string: \"soon\""]}}
errors:
  description: The endpoints that answered with an error, and the error.
  returned: always
  type: dict
findings:
  description:
    - What is wrong, each a finding of module_utils/findings.py. Checks are C(reachable),
      C(target_down), C(config_check), C(config_reload), C(config_pending), C(memory),
      C(tsdb_corruption).
  returned: always
  type: list
  elements: dict
"""

# Imports after the documentation, as in every Ansible module.
import os  # noqa: E402

from ansible.module_utils.basic import AnsibleModule  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import procfs  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils import prometheus_api as api  # noqa: E402
from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding  # noqa: E402

UNIT = "prometheus.service"
SHOW = "Id,LoadState,ActiveState,SubState,MemoryMax,MemoryHigh,MemoryCurrent"


def argument_spec():
    return dict(
        url=dict(type="str", default="http://127.0.0.1:9090"),
        timeout=dict(type="float", default=10),
        promtool=dict(type="str", default="promtool"),
        config_file=dict(type="path"),
        memory_warning=dict(type="float", default=0.8),
        memory_critical=dict(type="float", default=0.9),
        critical_jobs=dict(type="list", elements="str", default=["audit-api", "audit-worker", "prometheus"]),
        top_series=dict(type="int", default=10),
    )


# -- the host ------------------------------------------------------------------------------------------


def unit_facts(module):
    facts = {
        "unit": UNIT,
        "exists": False,
        "active_state": None,
        "sub_state": None,
        "memory_max": None,
        "memory_high": None,
        "memory_current": None,
    }
    systemctl = module.get_bin_path("systemctl")
    if not systemctl:
        facts["error"] = "systemctl not found"
        return facts
    rc, out, err = module.run_command([systemctl, "show", f"--property={SHOW}", "--", UNIT])
    if rc != 0:
        facts["error"] = (err or out or f"systemctl rc {rc}").strip()
        return facts
    facts.update(api.parse_systemctl_show(out))
    facts["unit"] = facts["unit"] or UNIT
    return facts


def mem_total(path="/proc/meminfo"):
    try:
        with open(path, encoding="ascii") as f:
            return procfs.parse_meminfo(f.read())["memory"]["total_bytes"] or None
    except OSError:
        return None


def check_config(module, path):
    """promtool's verdict on the file (the check of the file, as the role's template task runs it)."""
    config = {"file": path, "file_mtime": None}
    try:
        config["file_mtime"] = os.stat(path).st_mtime
    except OSError as exc:
        config["check"] = {"ok": None, "error": f"cannot read {path}: {exc.strerror}"}
        return config
    name = module.params["promtool"]
    binary = name if "/" in name else module.get_bin_path(name)
    if not binary or not os.access(binary, os.X_OK):
        config["check"] = {
            "ok": None,
            "error": f"{name} not found: the configuration on disk was not checked",
        }
        return config
    argv = [binary, "check", "config", path]
    rc, out, err = module.run_command(argv)
    config["check"] = api.promtool_result(argv, rc, out, err)
    return config


# -- the module -----------------------------------------------------------------------------------------


def read(client, path, result, parse=None):
    """An endpoint's data (parsed), or None with the error recorded in result['errors']."""
    try:
        data = client.data(path) if parse is None else client.text(path)
    except api.PrometheusError as exc:
        result["errors"][path] = str(exc)
        return None
    return data if parse is None else parse(data)


def diagnose(module):
    """The module's result (exit_json's keyword arguments) for its params."""
    p = module.params
    url = p["url"].rstrip("/")
    client = api.PrometheusClient(url, p["timeout"])
    result = {
        "changed": False,
        "url": url,
        "available": False,
        "targets": [],
        "targets_summary": api.targets_summary([]),
        "errors": {},
        "findings": [],
    }
    result["unit"] = unit = unit_facts(module)
    try:
        build = client.data("/api/v1/status/buildinfo")
    except api.PrometheusUnreachable as exc:
        result["error"] = f"GET {url}/api/v1/status/buildinfo: {exc}"
        result["config"] = config = check_config(module, p["config_file"] or api.DEFAULT_CONFIG_FILE)
        state = (
            f"{unit['unit']} {unit['active_state']} ({unit['sub_state']})" if unit["exists"] else f"no {UNIT}"
        )
        result["findings"] = [
            finding(
                "critical",
                api.COMPONENT,
                "reachable",
                f"Prometheus does not answer at {url} ({state}): {exc}",
                evidence={"unit": unit, "error": result["error"]},
            ),
            *api.config_findings(config, {}),
        ]
        return result
    except api.PrometheusError as exc:
        result["errors"]["/api/v1/status/buildinfo"] = str(exc)
        build = None
    result["available"] = True
    result["version"] = (build or {}).get("version")

    items = read(client, "/api/v1/targets", result)
    result["targets"] = api.targets(items) if items is not None else []
    result["targets_summary"] = api.targets_summary(result["targets"])
    result["tsdb"] = head = api.tsdb(read(client, "/api/v1/status/tsdb", result), p["top_series"])
    result["runtime"] = runtime = api.runtimeinfo(read(client, "/api/v1/status/runtimeinfo", result))
    result["flags"] = flags = api.flags(read(client, "/api/v1/status/flags", result))
    result["metrics"] = metrics = read(client, "/metrics", result, parse=api.own_metrics) or {}

    config = check_config(module, p["config_file"] or flags["config_file"] or api.DEFAULT_CONFIG_FILE)
    config["changed_since_load"] = api.changed_since_load(config["file_mtime"], runtime["last_config_time"])
    config["loaded_jobs"] = api.loaded_jobs(read(client, "/api/v1/status/config", result))
    result["config"] = config

    result["memory"] = mem = api.memory(metrics, unit, mem_total(), p["memory_warning"], p["memory_critical"])
    mem["summary"] = api.memory_summary(mem, head)
    result["findings"] = [
        *api.target_findings(result["targets"], set(p["critical_jobs"])),
        *api.config_findings(config, runtime),
        *api.memory_findings(mem, head),
        *api.tsdb_findings(runtime),
    ]
    return result


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    p = module.params
    if not p["url"].startswith(("http://", "https://")):
        module.fail_json(msg=f"url must be http:// or https://, not {p['url']!r}")
    if p["timeout"] <= 0:
        module.fail_json(msg=f"timeout must be more than 0, not {p['timeout']}")
    for name in ("memory_warning", "memory_critical"):
        if p[name] <= 0:
            module.fail_json(
                msg=f"{name} must be more than 0 (a fraction up to 1, else bytes), not {p[name]}"
            )
    if p["top_series"] < 0:
        module.fail_json(msg=f"top_series must be 0 or more, not {p['top_series']}")
    module.exit_json(**diagnose(module))


if __name__ == "__main__":
    main()
