# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""Prometheus' HTTP API for auditlog.ops.prometheus_diagnostics: a small client over urllib, and
the pure functions that turn its answers (and promtool's, and systemd's) into facts and findings
(tests/unit/test_prometheus_module.py runs them on answers recorded from the lab's Prometheus).

The endpoints are Prometheus' documented ones (https://prometheus.io/docs/prometheus/latest/querying/api/):
  GET /api/v1/targets              every active target: labels (job, instance), health (up, down,
                                   unknown), lastError, lastScrape, scrapeUrl
  GET /api/v1/status/tsdb          headStats (numSeries, chunkCount, ...) and the metric names
                                   with the most series (seriesCountByMetricName)
  GET /api/v1/status/runtimeinfo   reloadConfigSuccess, lastConfigTime, storageRetention, ...
  GET /api/v1/status/flags         the command line: storage.tsdb.retention.time / .size, config.file
  GET /api/v1/status/config        the configuration Prometheus runs (YAML, as it re-writes it)
  GET /api/v1/status/buildinfo     its version
  GET /metrics                     its own metrics: process_resident_memory_bytes, ...
"""

import json
import re
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime

from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding, level

COMPONENT = "prometheus"
DEFAULT_CONFIG_FILE = "/etc/prometheus/prometheus.yml"
# The runbooks that answer a stopped component (the exporters are started by a converge, which
# enables and starts them: site.yml's play "Debian's Prometheus exporters").
SERVICES_RUNBOOK = "playbooks/runbooks/common/services_wont_start.yml"
THIS_RUNBOOK = "playbooks/runbooks/monitoring/prometheus.yml"
# The scrape jobs of roles/prometheus/templates/prometheus.yml.j2 -> (component of
# module_utils/components.py, its systemd unit, how to start it again).
JOBS = {
    "prometheus": ("prometheus", "prometheus.service", THIS_RUNBOOK),
    "audit-api": ("api", "audit-api.service", SERVICES_RUNBOOK),
    "audit-worker": ("worker", "audit-worker.service", SERVICES_RUNBOOK),
    "node": ("node_exporter", "prometheus-node-exporter.service", "playbooks/site.yml"),
    "postgres": ("postgres_exporter", "prometheus-postgres-exporter.service", "playbooks/site.yml"),
    "redis": ("redis_exporter", "prometheus-redis-exporter.service", "playbooks/site.yml"),
}
# The own metrics the memory figure reads from /metrics.
OWN_METRICS = (
    "process_resident_memory_bytes",
    "go_memstats_heap_inuse_bytes",
    "prometheus_tsdb_head_series",
    "prometheus_tsdb_head_chunks",
    "prometheus_config_last_reload_successful",
    "prometheus_config_last_reload_success_timestamp_seconds",
)
# How far a file's mtime may pass lastConfigTime (whole seconds) and still count as loaded.
LOAD_SLACK_SECONDS = 1.0


class PrometheusUnreachable(Exception):
    """Nothing answered HTTP at the URL (refused, timed out, no such host); the reason."""


class PrometheusError(Exception):
    """An endpoint answered, but not with what the API documents; the reason."""


class PrometheusClient:
    """GET requests to one Prometheus, no proxy: the module asks the Prometheus of its own host."""

    def __init__(self, url, timeout=10.0):
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"url must be http:// or https://, not {url!r}")
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def text(self, path):
        """The body of GET `path`; PrometheusUnreachable when nothing answers, PrometheusError on
        an HTTP error status."""
        request = urllib.request.Request(self.url + path)  # noqa: S310 - http(s) only, checked above
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                return answer.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            try:
                body = exc.read().decode("utf-8", "replace")
            finally:
                exc.close()
            raise PrometheusError(f"GET {path}: HTTP {exc.code} {api_error(body) or exc.reason}") from None
        except urllib.error.URLError as exc:
            raise PrometheusUnreachable(str(exc.reason)) from None
        except OSError as exc:  # a timeout, a reset connection
            raise PrometheusUnreachable(str(exc)) from None

    def data(self, path):
        """The `data` of an API answer ({"status": "success", "data": ...})."""
        return api_data(path, self.text(path))


def api_error(body):
    """The `error` of an API error answer, else None."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc.get("error") if isinstance(doc, dict) else None


def api_data(path, body):
    """The `data` of an API answer's text; PrometheusError when it is no success."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise PrometheusError(f"GET {path}: not JSON (is this Prometheus?): {body[:120]!r}") from None
    if not isinstance(doc, dict) or doc.get("status") != "success":
        error = doc.get("error") if isinstance(doc, dict) else None
        raise PrometheusError(f"GET {path}: {error or 'no success status'}")
    return doc.get("data")


# -- times and sizes -------------------------------------------------------------------------------

_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)$")


def parse_time(text):
    """An RFC 3339 time as Prometheus writes it (nanoseconds, Z) -> seconds since the epoch;
    None for none, or for Go's zero time (a target never scraped)."""
    if not text:
        return None
    m = _TIME.match(str(text))
    if not m:
        return None
    zone = "+00:00" if m[3] == "Z" else m[3]
    when = datetime.fromisoformat(m[1] + zone)
    if when.year < 1970:
        return None
    fraction = float("0." + m[2]) if m[2] else 0.0
    return when.timestamp() + fraction


def iso(seconds):
    """Seconds since the epoch -> an ISO time in UTC (None for None)."""
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def human_bytes(value):
    """1536 -> '1.5 KiB'; None -> '?'."""
    if value is None:
        return "?"
    value = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # not reached


_SYSTEMD_UINT64_MAX = 2**64 - 1


def parse_systemctl_show(text):
    """`systemctl show -p Id,LoadState,ActiveState,SubState,MemoryMax,MemoryHigh,MemoryCurrent`
    output -> {unit, exists, active_state, sub_state, memory_max, memory_high, memory_current};
    the memory figures in bytes, None for infinity or not set."""
    props = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key.strip()] = value.strip()

    def number(key):
        value = props.get(key, "")
        if not value.isdigit():  # infinity, [not set], empty
            return None
        value = int(value)
        return None if value == _SYSTEMD_UINT64_MAX else value

    return {
        "unit": props.get("Id"),
        "exists": props.get("LoadState") not in (None, "", "not-found"),
        "active_state": props.get("ActiveState"),
        "sub_state": props.get("SubState"),
        "memory_max": number("MemoryMax"),
        "memory_high": number("MemoryHigh"),
        "memory_current": number("MemoryCurrent"),
    }


# -- targets -------------------------------------------------------------------------------------


def target_host(instance):
    """app1:8000 -> app1; [::1]:9090 -> ::1."""
    host = instance.rsplit(":", 1)[0] if ":" in instance else instance
    return host.strip("[]")


def targets(data):
    """/api/v1/targets' data -> one dict per active target, sorted by job and instance."""
    out = []
    for t in (data or {}).get("activeTargets") or []:
        labels = t.get("labels") or {}
        job = labels.get("job") or t.get("scrapePool")
        instance = labels.get("instance") or ""
        component, unit, _hint = JOBS.get(job, (None, None, None))
        out.append(
            {
                "job": job,
                "instance": instance,
                "host": target_host(instance),
                "health": t.get("health") or "unknown",
                "last_error": t.get("lastError") or None,
                "last_scrape": t.get("lastScrape") if parse_time(t.get("lastScrape")) else None,
                "last_scrape_duration": t.get("lastScrapeDuration"),
                "scrape_url": t.get("scrapeUrl"),
                "component": component,
                "unit": unit,
            }
        )
    return sorted(out, key=lambda t: (t["job"] or "", t["instance"]))


def targets_summary(items):
    summary = {"total": len(items), "up": 0, "down": 0, "unknown": 0}
    for t in items:
        key = t["health"] if t["health"] in ("up", "down") else "unknown"
        summary[key] += 1
    summary["down_targets"] = [f"{t['job']}/{t['instance']}" for t in items if t["health"] == "down"]
    return summary


def target_hint(target):
    """What to do about a down target: its unit on its host and the runbook or playbook that
    starts it again."""
    component, unit, runbook = JOBS.get(target["job"], (None, None, None))
    host = target["host"]
    if runbook == THIS_RUNBOOK:
        return f"Prometheus cannot scrape itself at {target['instance']}: is that its web.listen-address?"
    if runbook == SERVICES_RUNBOOK:
        return f"{unit} on {host} (component {component}): {runbook} --limit {host}"
    if runbook:
        return (
            f"{unit} on {host} (component {component}): start it, or converge with {runbook} --limit {host}"
        )
    return f"job {target['job']} is no job of the prometheus role: look at {target['scrape_url']} on {host}"


def target_findings(items, critical_jobs):
    """A finding per down target, naming its last error and what to do; critical for the jobs in
    `critical_jobs` (the service's own), a warning for the others (a host's or data store's
    metrics missing)."""
    out = []
    for t in items:
        if t["health"] != "down":
            continue
        hint = target_hint(t)
        out.append(
            finding(
                "critical" if t["job"] in critical_jobs else "warning",
                t["component"] or COMPONENT,
                "target_down",
                "{} target {} is down: {} (last scrape {}); {}".format(
                    t["job"],
                    t["instance"],
                    t["last_error"] or "no error given",
                    t["last_scrape"] or "never",
                    hint,
                ),
                evidence={**t, "hint": hint},
            )
        )
    return out


# -- TSDB, runtime, flags ----------------------------------------------------------------------------


def tsdb(data, top=10):
    """/api/v1/status/tsdb's data -> the head's figures and the metric names with most series."""
    data = data or {}
    head = data.get("headStats") or {}
    by_name = sorted(
        (
            {"name": e.get("name"), "series": e.get("value")}
            for e in data.get("seriesCountByMetricName") or []
            if isinstance(e, dict)
        ),
        key=lambda e: -(e["series"] or 0),
    )
    return {
        "num_series": head.get("numSeries"),
        "chunks": head.get("chunkCount"),
        "num_label_pairs": head.get("numLabelPairs"),
        "min_time": iso(head["minTime"] / 1000) if isinstance(head.get("minTime"), int | float) else None,
        "max_time": iso(head["maxTime"] / 1000) if isinstance(head.get("maxTime"), int | float) else None,
        "top_series": by_name[:top],
        "top_label_values": [
            {"name": e.get("name"), "values": e.get("value")}
            for e in (data.get("labelValueCountByLabelName") or [])[:top]
            if isinstance(e, dict)
        ],
    }


def runtimeinfo(data):
    data = data or {}
    return {
        "start_time": data.get("startTime"),
        "reload_config_success": data.get("reloadConfigSuccess"),
        "last_config_time": data.get("lastConfigTime"),
        "storage_retention": data.get("storageRetention"),
        "corruption_count": data.get("corruptionCount"),
        "goroutines": data.get("goroutineCount"),
        "gomaxprocs": data.get("GOMAXPROCS"),
    }


def flags(data):
    """/api/v1/status/flags' data -> the flags the runbook reports (0s and 0B: none set)."""
    data = data or {}

    def unset_zero(value, zero):
        return None if value in (None, "", zero) else value

    return {
        "config_file": data.get("config.file"),
        "retention_time": unset_zero(data.get("storage.tsdb.retention.time"), "0s"),
        "retention_size": unset_zero(data.get("storage.tsdb.retention.size"), "0B"),
        "tsdb_path": data.get("storage.tsdb.path"),
        "listen_address": data.get("web.listen-address"),
    }


_JOB_NAME = re.compile(r"^- job_name: ?['\"]?([^'\"\n]+)['\"]?\s*$", re.M)


def loaded_jobs(data):
    """/api/v1/status/config's data ({yaml}) -> the names of the scrape jobs Prometheus runs."""
    return _JOB_NAME.findall((data or {}).get("yaml") or "")


# -- its own metrics ---------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def own_metrics(text, names=OWN_METRICS):
    """The values of `names` (samples without labels) in a /metrics text exposition."""
    wanted = set(names)
    out = {}
    for line in (text or "").splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if m and m[1] in wanted and not m[2] and m[1] not in out:
            try:
                value = float(m[3])
            except ValueError:
                continue
            out[m[1]] = int(value) if value.is_integer() else value
    return out


# -- memory ---------------------------------------------------------------------------------------------


def threshold(value, limit):
    """A threshold option: a fraction of the limit when at most 1, else bytes."""
    if value is None:
        return None
    if value <= 1:
        return None if not limit else value * limit
    return value


def memory(metrics, unit, mem_total, warning, critical):
    """Prometheus' memory against its limit: the unit's MemoryMax, else the host's memory."""
    rss = metrics.get("process_resident_memory_bytes")
    if unit.get("memory_max"):
        limit, source = unit["memory_max"], "MemoryMax"
    else:
        limit, source = mem_total or None, "MemTotal" if mem_total else None
    return {
        "rss_bytes": rss,
        "heap_inuse_bytes": metrics.get("go_memstats_heap_inuse_bytes"),
        "unit_memory_current": unit.get("memory_current"),
        "memory_max": unit.get("memory_max"),
        "limit_bytes": limit,
        "limit_source": source,
        "fraction": round(rss / limit, 4) if rss is not None and limit else None,
        "warning_bytes": threshold(warning, limit),
        "critical_bytes": threshold(critical, limit),
    }


def memory_summary(mem, head):
    """'80.1 MiB resident, 0.3 % of the host's memory 23.5 GiB; 8290 head series (most
    node_systemd_unit_state, 2480)'."""
    of = {"MemoryMax": "its MemoryMax", "MemTotal": "the host's memory"}.get(mem["limit_source"])
    share = (
        f", {mem['fraction'] * 100:.1f} % of {of} {human_bytes(mem['limit_bytes'])}"
        if of and mem["fraction"] is not None
        else ""
    )
    top = (head.get("top_series") or [None])[0]
    most = f" (most {top['name']}, {top['series']})" if top else ""
    series = head.get("num_series")
    series = "?" if series is None else series
    return f"{human_bytes(mem['rss_bytes'])} resident{share}; {series} head series{most}"


def memory_findings(mem, head):
    severity = level(
        mem["rss_bytes"], mem["warning_bytes"] or float("inf"), mem["critical_bytes"] or float("inf")
    )
    if severity is None:
        return []
    return [
        finding(
            severity,
            COMPONENT,
            "memory",
            "Prometheus uses {}: over the {} threshold {}; lower the series it keeps (retention, the "
            "scraped jobs) or give it more (prometheus_memory_max)".format(
                memory_summary(mem, head), severity, human_bytes(mem[f"{severity}_bytes"])
            ),
            evidence={
                "memory": mem,
                "top_series": head.get("top_series"),
                "num_series": head.get("num_series"),
            },
        )
    ]


# -- the configuration ---------------------------------------------------------------------------------


def promtool_result(command, rc, stdout, stderr):
    """`promtool check config FILE` -> {ok, rc, command, output, errors}: errors are its FAILED lines."""
    lines = [line.rstrip() for line in f"{stdout or ''}\n{stderr or ''}".splitlines() if line.strip()]
    return {
        "ok": rc == 0,
        "rc": rc,
        "command": command,
        "output": "\n".join(lines),
        "errors": [
            line.strip().removeprefix("FAILED: ") for line in lines if line.strip().startswith("FAILED")
        ],
    }


def changed_since_load(file_mtime, last_config_time):
    """Whether the file on disk is newer than the configuration Prometheus loaded (lastConfigTime
    has whole seconds); None when either is unknown."""
    loaded = parse_time(last_config_time)
    if file_mtime is None or loaded is None:
        return None
    return file_mtime > loaded + LOAD_SLACK_SECONDS


def config_findings(config, runtime):
    """promtool's verdict on the file on disk, Prometheus' last reload, and a file not loaded yet."""
    out = []
    check = config.get("check") or {}
    path = config.get("file")
    if check.get("ok") is False:
        error = "; ".join(check["errors"]) or check["output"] or f"rc {check['rc']}"
        out.append(
            finding(
                "critical",
                COMPONENT,
                "config_check",
                f"promtool check config {path} fails: {error}; a reload would keep the old configuration and "
                "a restart would not come up",
                evidence={
                    "check": check,
                    "file_mtime": iso(config.get("file_mtime")),
                    "changed_since_load": config.get("changed_since_load"),
                },
            )
        )
    elif check.get("ok") is None and check.get("error"):
        out.append(
            finding(
                "warning", COMPONENT, "config_check", f"{path} not checked: {check['error']}", evidence=check
            )
        )
    if runtime.get("reload_config_success") is False:
        out.append(
            finding(
                "critical",
                COMPONENT,
                "config_reload",
                "Prometheus' last configuration reload failed: it still runs the configuration it loaded at "
                f"{runtime.get('last_config_time')}",
                evidence=runtime,
            )
        )
    elif check.get("ok") and config.get("changed_since_load"):
        out.append(
            finding(
                "warning",
                COMPONENT,
                "config_pending",
                f"{path} changed after Prometheus loaded its configuration "
                f"({runtime.get('last_config_time')}): not applied until a reload",
                evidence={
                    "file_mtime": iso(config.get("file_mtime")),
                    "last_config_time": runtime.get("last_config_time"),
                },
            )
        )
    return out


def tsdb_findings(runtime):
    count = runtime.get("corruption_count") or 0
    if not count:
        return []
    return [
        finding(
            "warning",
            COMPONENT,
            "tsdb_corruption",
            f"Prometheus found {count} corrupted TSDB block(s) or WAL segment(s) since it started",
            evidence=runtime,
        )
    ]
