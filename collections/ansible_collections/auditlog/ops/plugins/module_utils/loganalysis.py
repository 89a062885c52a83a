# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""The guide's log analysis over the stack's JSON logs, in one pass over each source.

The API and the worker write one JSON object a line (service/audit_service/jsonlog.py: timestamp,
level, service, host, message, correlation_id, and the fields of each line); nginx writes its
access log as JSON too (roles/nginx/templates/audit.conf.j2, format audit_json). An Analysis is
fed their lines and keeps only what the report needs, so memory stays small on large logs:

- errors: lines at WARNING and above, by pattern (the message with its numbers, ids and quoted
  values blanked), counted;
- responses: answers of status 400 and above, by source, status, method, path and tenant;
- auth_failures: nginx's 401 and 403 answers by client address and API key prefix (the first 10
  characters nginx logs, as the service's api_keys.key_prefix), with the paths they asked for;
- requests: by source, method, path (ids blanked) and status: count, p50, p99 and max from a
  log-scale histogram (1 % wide buckets, so p50 and p99 are within 1 % of the exact figure);
- slow: the slowest requests over a threshold (a bounded heap);
- correlation: every line that names one correlation id, whichever source wrote it.

Speed: a line is decoded only when it can matter (its level, "Request completed", nginx's status
field or the correlation id is found in it as text first), and a file is entered at the window's
start by bisection on its timestamps, not read from its beginning.
"""

import heapq
import json
import math
import re
from datetime import UTC, datetime

SOURCES = ("api", "worker", "nginx")
# The `service` field of the service's lines -> the stack's component.
SERVICES = {"audit-api": "api", "audit-worker": "worker"}
ERROR_LEVELS = ("WARNING", "ERROR", "CRITICAL")
_REQUEST_MARK = '"message":"Request completed"'

# How an id in a path or a message is blanked.
_UUID = re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b")
_HEX = re.compile(r"\b[0-9a-fA-F]{16,}\b")
_NUMBER = re.compile(r"(?<![A-Za-z_])\d+(?:\.\d+)?")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_PATH_PART = re.compile(r"/(?:[0-9a-fA-F]{8}-[0-9a-fA-F-]{27}|\d+|[0-9a-fA-F]{16,})(?=/|$)")

# Histogram: bucket i holds durations in [BASE**i, BASE**(i+1)) milliseconds.
_BASE = 1.01
_LOG_BASE = math.log(_BASE)
_MIN_MS = 0.001

MAX_CORRELATION_LINES = 1000
MAX_SAMPLE_IDS = 5


class LogAnalysisError(Exception):
    """A bad window or parameter."""


def path_template(path):
    """A request path with its ids blanked: /api/v1/audit/logs/<uuid> -> /api/v1/audit/logs/{id}."""
    if not path:
        return path
    path = path.split("?", 1)[0]
    return _PATH_PART.sub("/{id}", path)


def message_pattern(text):
    """A log message with what varies from line to line blanked, so alike lines count as one."""
    text = _UUID.sub("<uuid>", text)
    text = _HEX.sub("<hex>", text)
    text = _QUOTED.sub("<s>", text)
    return _NUMBER.sub("<n>", text)


def iso_ms(when):
    """A datetime as the service's timestamps begin: 2026-12-01T15:29:00.123 (UTC)."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}"


class Histogram:
    """Durations in log-scale buckets: quantiles within 1 % of the exact ones, in little memory."""

    __slots__ = ("buckets", "count", "max")

    def __init__(self):
        self.buckets = {}
        self.count = 0
        self.max = 0.0

    def add(self, ms):
        i = int(math.log(max(ms, _MIN_MS)) / _LOG_BASE)
        self.buckets[i] = self.buckets.get(i, 0) + 1
        self.count += 1
        if ms > self.max:
            self.max = ms

    def quantile(self, q):
        """The q-quantile (0 < q <= 1): the middle of the bucket that holds it, at most max."""
        if not self.count:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for i in sorted(self.buckets):
            seen += self.buckets[i]
            if seen >= rank:
                return round(min(_BASE ** (i + 0.5), self.max), 3)
        return round(self.max, 3)


class _Count:
    __slots__ = ("count", "first", "last", "ids", "example")

    def __init__(self, when, example=None):
        self.count, self.first, self.last, self.ids, self.example = 0, when, when, [], example

    def add(self, when, cid=None):
        self.count += 1
        if when and (not self.first or when < self.first):
            self.first = when
        if when and (not self.last or when > self.last):
            self.last = when
        if cid and len(self.ids) < MAX_SAMPLE_IDS and cid not in self.ids:
            self.ids.append(cid)


class Analysis:
    """What the report needs from the lines of a window; feed it lines, then call result().

    since/until: ISO strings (iso_ms) bounding the service's timestamps, and the same as epoch
    seconds for nginx's `msec`; None for no bound."""

    def __init__(self, since=None, until=None, correlation_id=None, slow_ms=1000.0, top=20):
        self.since, self.until = since, until
        self.since_epoch = _epoch(since)
        self.until_epoch = _epoch(until)
        self.cid = correlation_id or None
        self.slow_ms = slow_ms
        self.top = top
        self.errors = {}
        self.responses = {}
        self.auth_failures = {}
        self.requests = {}
        self.slow = []  # heap of (duration, seq, entry)
        self.slow_count = 0
        self.correlation = []
        self.correlation_dropped = 0
        self.lines = 0
        self.decoded = 0
        self.unparsed = 0
        self._seq = 0

    # -- the window ----------------------------------------------------------------------------

    def _outside(self, stamp):
        """Whether a service timestamp (ISO, UTC) falls outside the window."""
        head = stamp[:23]
        return (self.since is not None and head < self.since) or (
            self.until is not None and head > self.until
        )

    # -- lines -----------------------------------------------------------------------------------

    def feed_service(self, line, host=None, source=None):
        """One line of the API's or the worker's log (their JSON; anything else is counted as
        unparsed, and kept as an error pattern when it reads like one: a traceback's lines)."""
        self.lines += 1
        cid_hit = self.cid is not None and self.cid in line
        request = _REQUEST_MARK in line
        # Most lines are INFO: two substring tests rule them out before any decoding.
        error = not request and '"level":"INFO"' not in line and '"level":"DEBUG"' not in line
        if not (cid_hit or request or error):
            if line.startswith("{"):
                return
            return self._text(line, host, source)
        try:
            doc = json.loads(line)
        except ValueError:
            return self._text(line, host, source)
        if not isinstance(doc, dict):
            return self._text(line, host, source)
        self.decoded += 1
        stamp = str(doc.get("timestamp") or "")
        if stamp and self._outside(stamp):
            return
        source = source or SERVICES.get(doc.get("service"), doc.get("service")) or "service"
        host = doc.get("host") or host
        when = stamp[:23] + "Z" if stamp else None
        cid = doc.get("correlation_id")
        if cid_hit and (cid == self.cid or self.cid in (doc.get("correlation_ids") or ())):
            self._correlate(when, source, host, doc)
        if request:
            status = _int(doc.get("status"))
            ms = _float(doc.get("duration_ms"))
            self._request(
                when, source, host, doc.get("method"), doc.get("path"), status, ms, cid, doc.get("tenant_id")
            )
        elif error and doc.get("level") in ERROR_LEVELS:
            text = str(doc.get("message") or "")
            if doc.get("error"):
                text += ": " + str(doc["error"])
            key = (source, str(doc.get("level")), message_pattern(text))
            entry = self.errors.get(key)
            if entry is None:
                entry = self.errors[key] = _Count(
                    when, {"message": doc.get("message"), "error": doc.get("error"), "host": host}
                )
            entry.add(when, cid)

    def feed_nginx(self, line, host=None):
        """One line of nginx's JSON access log (format audit_json)."""
        self.lines += 1
        if not line.startswith("{"):
            self.unparsed += 1
            return
        try:
            doc = json.loads(line)
        except ValueError:
            self.unparsed += 1
            return
        self.decoded += 1
        msec = _float(doc.get("msec"))
        if msec is not None and (
            (self.since_epoch is not None and msec < self.since_epoch)
            or (self.until_epoch is not None and msec > self.until_epoch)
        ):
            return
        when = _from_epoch(msec)
        status = _int(doc.get("status"))
        seconds = _float(doc.get("request_time"))
        ms = None if seconds is None else round(seconds * 1000, 3)
        cid = doc.get("correlation_id") or None
        path = doc.get("path") or doc.get("uri")
        if self.cid is not None and cid == self.cid:
            self._correlate(when, "nginx", host, doc)
        if status in (401, 403):
            key = (doc.get("remote_addr") or "-", doc.get("key_prefix") or "", status)
            entry = self.auth_failures.get(key)
            if entry is None:
                entry = self.auth_failures[key] = _Count(when, {})
            entry.add(when, cid)
            template = path_template(path)
            entry.example[template] = entry.example.get(template, 0) + 1
        self._request(when, "nginx", host, doc.get("method"), path, status, ms, cid, None)

    def _text(self, line, host, source):
        self.unparsed += 1
        text = line.strip()
        if not text or not re.search(r"(?i)traceback|error|exception|fatal|critical", text):
            return
        key = (source or "service", "TEXT", message_pattern(text[:300]))
        entry = self.errors.get(key)
        if entry is None:
            entry = self.errors[key] = _Count(None, {"message": text[:300], "host": host})
        entry.add(None)

    def _correlate(self, when, source, host, doc):
        if len(self.correlation) >= MAX_CORRELATION_LINES:
            self.correlation_dropped += 1
            return
        fields = {k: v for k, v in doc.items() if k not in ("timestamp", "msec", "time", "host", "service")}
        self.correlation.append({"time": when, "source": source, "host": host, "fields": fields})

    def _request(self, when, source, host, method, path, status, ms, cid, tenant):
        template = path_template(path)
        key = (source, method, template, status)
        hist = self.requests.get(key)
        if hist is None:
            hist = self.requests[key] = Histogram()
        if ms is not None:
            hist.add(ms)
        else:
            hist.count += 1
        if status is not None and status >= 400:
            rkey = (source, status, method, template, tenant)
            entry = self.responses.get(rkey)
            if entry is None:
                entry = self.responses[rkey] = _Count(when)
            entry.add(when, cid)
        if ms is not None and ms >= self.slow_ms:
            self.slow_count += 1
            self._seq += 1
            entry = {
                "time": when,
                "source": source,
                "host": host,
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": ms,
                "correlation_id": cid,
                "tenant_id": tenant,
            }
            item = (ms, self._seq, entry)
            if len(self.slow) < self.top:
                heapq.heappush(self.slow, item)
            elif item > self.slow[0]:
                heapq.heapreplace(self.slow, item)

    # -- the result -----------------------------------------------------------------------------

    def result(self):
        errors = sorted(
            (
                {
                    "source": src,
                    "level": lvl,
                    "pattern": pattern,
                    "count": c.count,
                    "first": c.first,
                    "last": c.last,
                    "correlation_ids": c.ids,
                    "example": c.example,
                }
                for (src, lvl, pattern), c in self.errors.items()
            ),
            key=lambda e: -e["count"],
        )
        responses = sorted(
            (
                {
                    "source": src,
                    "status": status,
                    "method": method,
                    "path": path,
                    "tenant_id": tenant,
                    "count": c.count,
                    "first": c.first,
                    "last": c.last,
                    "correlation_ids": c.ids,
                }
                for (src, status, method, path, tenant), c in self.responses.items()
            ),
            key=lambda r: -r["count"],
        )
        auth_failures = sorted(
            (
                {
                    "address": address,
                    "key_prefix": prefix or None,
                    "status": status,
                    "count": c.count,
                    "first": c.first,
                    "last": c.last,
                    "paths": dict(sorted(c.example.items(), key=lambda p: -p[1])[: self.top]),
                }
                for (address, prefix, status), c in self.auth_failures.items()
            ),
            key=lambda r: -r["count"],
        )
        requests = sorted(
            (
                {
                    "source": src,
                    "method": method,
                    "path": path,
                    "status": status,
                    "count": h.count,
                    "p50_ms": h.quantile(0.5),
                    "p99_ms": h.quantile(0.99),
                    "max_ms": round(h.max, 3) if h.buckets else None,
                }
                for (src, method, path, status), h in self.requests.items()
            ),
            key=lambda r: -r["count"],
        )
        return {
            "errors": errors[: self.top * 5],
            "responses": responses[: self.top * 5],
            "auth_failures": auth_failures[: self.top * 5],
            "requests": requests[: self.top * 5],
            "slow_requests": [e for _, _, e in sorted(self.slow, reverse=True)],
            "slow_count": self.slow_count,
            "correlation": sorted(self.correlation, key=lambda c: c["time"] or ""),
            "correlation_dropped": self.correlation_dropped,
            "lines": self.lines,
            "decoded": self.decoded,
            "unparsed": self.unparsed,
        }


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _float(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _epoch(stamp):
    if stamp is None:
        return None
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f").replace(tzinfo=UTC).timestamp()


def _from_epoch(seconds):
    if seconds is None:
        return None
    return iso_ms(datetime.fromtimestamp(seconds, UTC)) + "Z"


# -- files: entering at the window's start --------------------------------------------------------

_STAMP = re.compile(r'"timestamp":"([^"]{19,32})"')
_MSEC = re.compile(r'"msec":"?(\d+(?:\.\d+)?)')


def line_time(line):
    """The ISO (UTC, to the millisecond) time of a service or nginx JSON line, or None."""
    if line.startswith('{"timestamp":"'):  # the service's lines: the time comes first
        return line[14:37]
    m = _STAMP.search(line)
    if m:
        return m.group(1)[:23]
    m = _MSEC.search(line)
    if m:
        return _from_epoch(float(m.group(1)))[:23]
    return None


def seek_window(f, since, size, margin_bytes=1 << 20):
    """Move the binary file f to a line start at most margin_bytes before the first line at or
    after `since` (an iso_ms string), by bisection on the lines' times; the lines are in time
    order give or take the few seconds a process buffers its log."""
    if since is None or size <= margin_bytes:
        f.seek(0)
        return 0
    lo, hi = 0, size
    while hi - lo > margin_bytes:
        mid = (lo + hi) // 2
        f.seek(mid)
        f.readline()  # the rest of a line cut in two
        stamp = None
        for _ in range(50):  # the next line with a time
            raw = f.readline()
            if not raw:
                break
            stamp = line_time(raw.decode("utf-8", "replace"))
            if stamp:
                break
        if stamp is None or stamp >= since:
            hi = mid
        else:
            lo = mid
    start = max(0, lo - margin_bytes)
    f.seek(start)
    if start:
        f.readline()
    return f.tell()
