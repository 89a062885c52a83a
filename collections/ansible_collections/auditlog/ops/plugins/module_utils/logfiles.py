# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""The log files of the stack's components, read as journal entries.

Some components write their logs to files rather than to the journal: PostgreSQL (Debian's
pg_ctlcluster, /var/log/postgresql/postgresql-<ver>-<cluster>.log), Redis (the redis role's
`logfile`), nginx (Debian's nginx.conf: access.log in the combined format, error.log). This module
reads such a file from its end, backwards in blocks (never the whole file), turns each line into an
entry of the same shape as the journal's ({time, unit, host, priority, message, source}) and selects
the entries as journalctl does: `since`, `grep` and the newest `lines`. Everything is a plain
function for the unit tests.

Times: each format's timestamp is turned into UTC (ISO 8601, milliseconds, `Z`, as the journal
entries). Formats without a zone (Redis, nginx's error log) are in the host's local time, as the
servers write them. A line without a time of its own (the rest of a multi-line entry) takes the
time and priority of the line before it.
"""

import glob
import heapq
import os
import re
from datetime import UTC, datetime, timedelta, timezone

PRIORITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
INFO = 6

BLOCK_SIZE = 64 * 1024
MAX_BYTES = 64 * 1024 * 1024

# Rotated files (logrotate's access.log.1, error.log.2.gz, ...) are not read: only the current file.
ROTATED = re.compile(r"\.(\d+)(\.(gz|xz|bz2|zst))?$|\.(gz|xz|bz2|zst)$|-\d{8}$")

MONTHS = {
    m: i
    for i, m in enumerate(
        ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], 1
    )
}


class LogFileError(Exception):
    """A bad `since` or `grep`."""


# -- times -------------------------------------------------------------------------------------


def iso(when):
    """A datetime as the journal entries give it: ISO 8601 UTC with milliseconds and `Z`."""
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _local(naive):
    """A naive datetime in the host's local time, as an aware one."""
    return naive.astimezone()


_ZONE_OFFSET = re.compile(r"^([+-])(\d\d):?(\d\d)?$")


def _zone(name, naive):
    """A naive datetime in the zone PostgreSQL names (`UTC`, `GMT`, `+01`, `-0530`); another
    abbreviation (`CET`) is taken as the host's local time."""
    if name in ("UTC", "GMT", "Z", "UCT", "Etc/UTC"):
        return naive.replace(tzinfo=UTC)
    m = _ZONE_OFFSET.match(name)
    if m:
        delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3) or 0))
        return naive.replace(tzinfo=timezone(-delta if m.group(1) == "-" else delta))
    return _local(naive)


_RELATIVE_UNITS = {
    "us": 1e-6,
    "usec": 1e-6,
    "ms": 1e-3,
    "msec": 1e-3,
    "s": 1,
    "sec": 1,
    "second": 1,
    "seconds": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "minutes": 60,
    "h": 3600,
    "hr": 3600,
    "hour": 3600,
    "hours": 3600,
    "d": 86400,
    "day": 86400,
    "days": 86400,
    "w": 7 * 86400,
    "week": 7 * 86400,
    "weeks": 7 * 86400,
}
_RELATIVE_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]+)")
_ABSOLUTE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d", "%Y-%m-%dT%H:%M:%S")


def parse_since(text, now=None):
    """`since` as journalctl takes it, to an aware UTC datetime: relative (`-15min`, `-1h`,
    `-2d`, `-1h 30min`, `15min ago`), absolute in the host's local time (`YYYY-MM-DD HH:MM:SS`,
    `YYYY-MM-DD HH:MM`, `YYYY-MM-DD`), `now`, `today`, `yesterday`. None for an empty value;
    LogFileError for what it does not understand."""
    if text is None or not str(text).strip():
        return None
    raw = str(text).strip()
    now = now or datetime.now(UTC)
    word = raw.lower()
    if word == "now":
        return now
    if word in ("today", "yesterday"):
        midnight = now.astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
        return (midnight - timedelta(days=1 if word == "yesterday" else 0)).astimezone(UTC)
    relative = None
    if word.startswith("-"):
        relative = word[1:]
    elif word.endswith(" ago"):
        relative = word[: -len(" ago")]
    if relative is not None:
        relative = relative.strip()
        parts = _RELATIVE_PART.findall(relative)
        if parts and _RELATIVE_PART.sub("", relative).strip() == "":
            seconds = 0.0
            for number, unit in parts:
                if unit not in _RELATIVE_UNITS:
                    break
                seconds += float(number) * _RELATIVE_UNITS[unit]
            else:
                return now - timedelta(seconds=seconds)
    for fmt in _ABSOLUTE_FORMATS:
        try:
            return _local(datetime.strptime(raw, fmt)).astimezone(UTC)
        except ValueError:
            continue
    raise LogFileError(
        f"since: cannot read {raw!r} (relative as -15min, -1h, -2d, or YYYY-MM-DD HH:MM:SS, today, yesterday)"
    )


def compile_grep(pattern):
    """`grep` as a compiled regular expression, case-insensitive when it has no upper-case letter
    (journalctl --grep's rule), or None."""
    if not pattern:
        return None
    flags = 0 if any(c.isupper() for c in pattern) else re.IGNORECASE
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        raise LogFileError(f"grep: not a regular expression: {pattern!r}: {exc}") from None


# -- line formats ---------------------------------------------------------------------------------

# PostgreSQL, Debian's log_line_prefix '%m [%p] %q%u@%d ':
#   2026-12-01 15:29:00.123 UTC [4242] audit@audit_logs ERROR:  relation "x" does not exist
_PG = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))? (\S+) \[\d+\](?:.*?\b"
    r"(DEBUG[1-5]?|LOG|INFO|NOTICE|WARNING|ERROR|FATAL|PANIC|DETAIL|HINT|CONTEXT|STATEMENT|QUERY|LOCATION):)?"
)
_PG_LEVELS = {
    "DEBUG": 7,
    "LOG": 6,
    "INFO": 6,
    "NOTICE": 5,
    "WARNING": 4,
    "ERROR": 3,
    "FATAL": 2,
    "PANIC": 0,
}
# The lines that go with the message before them (they take its priority).
_PG_FOLLOWERS = ("DETAIL", "HINT", "CONTEXT", "STATEMENT", "QUERY", "LOCATION")

# Redis: pid:role dd Mon yyyy hh:mm:ss.mmm level message (level . debug, - verbose, * notice,
# # warning; mapped as Redis maps them to syslog).
#   1234:M 01 Dec 2026 15:29:00.123 * Ready to accept connections tcp
_REDIS = re.compile(r"^\d+:[XCSM] (\d\d) (\w{3}) (\d{4}) (\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))? ([.\-*#]) ")
_REDIS_LEVELS = {".": 7, "-": 6, "*": 5, "#": 4}

# nginx error log (local time): 2026/12/01 15:29:00 [error] 812#812: *1 connect() failed ...
_NGINX_ERROR = re.compile(r"^(\d{4})/(\d\d)/(\d\d) (\d\d):(\d\d):(\d\d) \[(\w+)\]")
_NGINX_LEVELS = {
    "debug": 7,
    "info": 6,
    "notice": 5,
    "warn": 4,
    "error": 3,
    "crit": 2,
    "alert": 1,
    "emerg": 0,
}

# nginx access log, the combined format (Debian's nginx.conf: access_log without a format):
#   10.0.0.1 - - [01/Dec/2026:15:29:00 +0000] "GET /health HTTP/1.1" 200 15 "-" "curl/8.5.0"
_NGINX_ACCESS = re.compile(
    r'^\S+ \S+ .*?\[(\d\d)/(\w{3})/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-]\d{4})\] "(?:[^"\\]|\\.)*" (\d{3}) '
)


# nginx's access log as the nginx role writes it (format audit_json, one JSON object a line):
#   {"time":"2026-12-01T15:29:00+00:00","msec":1796138940.123,...,"status":200,...}
_NGINX_JSON = re.compile(r'^\{"time":"[^"]*","msec":(\d+(?:\.\d+)?),.*?"status":(\d{3})')


def _micro(fraction):
    return int((fraction or "0").ljust(6, "0")[:6])


def parse_line(line):
    """One log line -> (time as an aware datetime or None, syslog priority number or None,
    follows: whether it goes with the line before it). A line of no known format gives
    (None, None, False): it takes the time and priority of the line before it."""
    try:
        m = _PG.match(line)
        if m:
            y, mo, d, h, mi, s, frac, zone, level = m.groups()
            when = _zone(zone, datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), _micro(frac)))
            if level in _PG_FOLLOWERS:
                return when, None, True
            prio = _PG_LEVELS.get(level.rstrip("12345")) if level else None
            return when, INFO if prio is None else prio, False
        m = _REDIS.match(line)
        if m:
            d, mon, y, h, mi, s, frac, level = m.groups()
            if mon in MONTHS:
                naive = datetime(int(y), MONTHS[mon], int(d), int(h), int(mi), int(s), _micro(frac))
                return _local(naive), _REDIS_LEVELS[level], False
        m = _NGINX_ERROR.match(line)
        if m:
            y, mo, d, h, mi, s, level = m.groups()
            naive = datetime(int(y), int(mo), int(d), int(h), int(mi), int(s))
            return _local(naive), _NGINX_LEVELS.get(level.lower(), INFO), False
        m = _NGINX_JSON.match(line)
        if m:
            when = datetime.fromtimestamp(float(m.group(1)), UTC)
            code = int(m.group(2))
            return when, 3 if code >= 500 else 4 if code >= 400 else INFO, False
        m = _NGINX_ACCESS.match(line)
        if m:
            d, mon, y, h, mi, s, offset, status = m.groups()
            if mon in MONTHS:
                when = _zone(offset, datetime(int(y), MONTHS[mon], int(d), int(h), int(mi), int(s)))
                code = int(status)
                return when, 3 if code >= 500 else 4 if code >= 400 else INFO, False
    except (ValueError, OverflowError):  # a date that does not exist (31 Feb)
        pass
    return None, None, False


# -- reading a file from its end -------------------------------------------------------------------


def reverse_lines(f, block_size=BLOCK_SIZE, max_bytes=MAX_BYTES):
    """The lines of a binary file object, the last first, without their end of line, reading the
    file backwards in blocks of `block_size` and at most `max_bytes` from its end. The generator's
    return value (StopIteration.value) is True when `max_bytes` cut the file (the first line of
    the window is not yielded when it is only the end of a line)."""
    f.seek(0, os.SEEK_END)
    end = f.tell()
    limit = max(0, end - max_bytes) if max_bytes else 0
    pos = end
    rest = b""
    at_end = True
    while pos > limit:
        size = min(block_size, pos - limit)
        pos -= size
        f.seek(pos)
        parts = (f.read(size) + rest).split(b"\n")
        rest = parts[0]
        complete = parts[1:]
        if at_end:
            at_end = False
            if complete and complete[-1] == b"":  # the file's final newline
                complete.pop()
        for line in reversed(complete):
            yield line.rstrip(b"\r")
    if pos > 0:
        f.seek(pos - 1)
        if f.read(1) == b"\n":  # the window begins with a whole line
            yield rest.rstrip(b"\r")
        return True
    if end > 0:
        yield rest.rstrip(b"\r")
    return False


def _entry(message, when, prio, unit, host, path):
    return {
        "time": iso(when) if when is not None else None,
        "unit": unit,
        "host": host,
        "priority": PRIORITIES[INFO if prio is None else prio],
        "message": message,
        "source": path,
    }


def _group(head, pending):
    """A line with a time and priority of its own (`head`: text, time, priority) and the lines
    after it that go with it (`pending`, newest first: text, own time or None): each line with
    its time (its own, else the one before it) and the head's priority, oldest first."""
    text, current, prio = head
    out = [(text, current, prio)]
    for message, own in reversed(pending):
        current = own or current
        out.append((message, current, prio))
    return out


def read_log_file(
    path,
    since=None,
    grep=None,
    lines=None,
    unit=None,
    host=None,
    block_size=BLOCK_SIZE,
    max_bytes=MAX_BYTES,
    opener=open,
):
    """The entries of one log file (oldest first) and its source record.

    Reads backwards until it has `lines` entries that match `grep` (a compiled expression) and
    are from `since` (an aware UTC datetime) on, or reaches a line older than `since`, or has
    read `max_bytes`. Returns (entries, {source, available, error, truncated}); a file that
    cannot be read gives no entries and available false with the error."""
    source = {"source": path, "available": True, "error": None, "truncated": False}
    found = []  # newest first

    def take(group):
        """Keep a group's lines, newest first; True when there are enough."""
        for message, when, prio in reversed(group):
            if since is not None and (when is None or when < since):
                continue
            if grep is None or grep.search(message):
                found.append(_entry(message, when, prio, unit, host, path))
                if lines and len(found) >= lines:
                    return True
        return False

    try:
        with opener(path, "rb") as f:
            reader = reverse_lines(f, block_size, max_bytes)
            # lines, newest first, that take their time or priority from a line before them
            pending = []
            while True:
                try:
                    raw = next(reader)
                except StopIteration as stop:
                    source["truncated"] = bool(stop.value)
                    # lines at the top of the file (or of the window) with nothing before them
                    if pending:
                        take([(m, own, None) for m, own in reversed(pending)])
                    break
                text = raw.decode("utf-8", "replace")
                if not text.strip():
                    continue
                when, prio, follows = parse_line(text)
                if when is None or follows:
                    pending.append((text, when))
                    continue
                group = _group((text, when, prio), pending)
                pending = []
                if take(group) or (since is not None and when < since):
                    break  # enough; or this line is older than since, and so is the rest
    except OSError as exc:
        return [], {**source, "available": False, "error": exc.strerror or str(exc)}
    found.reverse()
    return found, source


def expand_globs(patterns):
    """The files the globs name, in order, without repeats or rotated files; and a source
    record for each glob that names no file (available false)."""
    files, missing = [], []
    for pattern in patterns or []:
        if glob.has_magic(pattern):
            found = sorted(p for p in glob.glob(pattern) if not ROTATED.search(os.path.basename(p)))
            if not found:
                missing.append(
                    {"source": pattern, "available": False, "error": "no file matches", "truncated": False}
                )
        else:
            found = [pattern]  # read, so that a missing or unreadable file says why
        for path in found:
            if path not in files:
                files.append(path)
    return files, missing


def merge(sources, lines=None):
    """Entry lists of several sources (each oldest first) as one in time order, the newest
    `lines`. Each source's own order is kept (an entry without a time sorts with the one before
    it, the first ones as the oldest); for equal times, the earlier source first."""
    keyed = []
    for i, entries in enumerate(sources):
        current = ""
        run = []
        for j, entry in enumerate(entries):
            current = entry.get("time") or current
            run.append(((current, i, j), entry))
        keyed.append(run)
    merged = [entry for _key, entry in heapq.merge(*keyed, key=lambda pair: pair[0])]
    if lines:
        merged = merged[-int(lines) :]
    return merged
