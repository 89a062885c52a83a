"""auditlog.ops component logs from files (module_utils/logfiles.py): each format's parser, `since`,
reading backwards, the merge with the journal and `tail` over both, and the module's sources."""

from __future__ import annotations

import io
import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from ansible_collections.auditlog.ops.plugins.module_utils import components as comp
from ansible_collections.auditlog.ops.plugins.module_utils import logfiles as lf
from ansible_collections.auditlog.ops.plugins.modules import component


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Formats without a zone are in the host's local time: UTC here, as on the targets."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def at(*args):
    return datetime(*args, tzinfo=UTC)


def iso(line):
    when, _prio, _follows = lf.parse_line(line)
    return lf.iso(when) if when else None


# -- parsers -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "time", "prio", "follows"),
    [
        (
            '2026-12-01 15:29:00.123 UTC [4242] audit@audit_logs ERROR:  relation "x" does not exist',
            "2026-12-01T15:29:00.123Z",
            3,
            False,
        ),
        (
            "2026-12-01 15:29:00.123 UTC [51] LOG:  database system is ready",
            "2026-12-01T15:29:00.123Z",
            6,
            False,
        ),
        (
            "2026-12-01 15:29:01.5 UTC [60] FATAL:  password authentication failed",
            "2026-12-01T15:29:01.500Z",
            2,
            False,
        ),
        ("2026-12-01 15:29:02.000 UTC [1] PANIC:  could not write", "2026-12-01T15:29:02.000Z", 0, False),
        ("2026-12-01 15:29:02.000 UTC [1] WARNING:  terminating", "2026-12-01T15:29:02.000Z", 4, False),
        ("2026-12-01 15:29:02.000 UTC [1] u@d STATEMENT:  select 1", "2026-12-01T15:29:02.000Z", None, True),
        ("2026-12-01 16:29:00.000 +01 [1] LOG:  zone as an offset", "2026-12-01T15:29:00.000Z", 6, False),
        (
            "1234:M 01 Dec 2026 15:29:00.123 * Ready to accept connections tcp",
            "2026-12-01T15:29:00.123Z",
            5,
            False,
        ),
        (
            "1234:M 01 Dec 2026 15:29:00.123 # WARNING overcommit_memory is set to 0",
            "2026-12-01T15:29:00.123Z",
            4,
            False,
        ),
        ("77:C 01 Dec 2026 15:29:00.001 . debug line", "2026-12-01T15:29:00.001Z", 7, False),
        (
            "2026/12/01 15:29:00 [error] 812#812: *1 connect() failed (111)",
            "2026-12-01T15:29:00.000Z",
            3,
            False,
        ),
        ("2026/12/01 15:29:00 [warn] 812#812: conflicting server name", "2026-12-01T15:29:00.000Z", 4, False),
        (
            "2026/12/01 15:29:00 [notice] 812#812: signal process started",
            "2026-12-01T15:29:00.000Z",
            5,
            False,
        ),
        ("2026/12/01 15:29:00 [emerg] 812#812: bind() failed", "2026-12-01T15:29:00.000Z", 0, False),
        (
            '10.0.0.1 - - [01/Dec/2026:15:29:00 +0000] "GET /health HTTP/1.1" 200 15 "-" "curl/8.5.0"',
            "2026-12-01T15:29:00.000Z",
            6,
            False,
        ),
        (
            '10.0.0.1 - bob [01/Dec/2026:16:29:00 +0100] "POST /api/v1/logs HTTP/1.1" 502 157 "-" "x"',
            "2026-12-01T15:29:00.000Z",
            3,
            False,
        ),
        (
            '::1 - - [01/Dec/2026:15:29:00 +0000] "GET /x\\" HTTP/1.1" 404 0 "-" "-"',
            "2026-12-01T15:29:00.000Z",
            4,
            False,
        ),
        (
            '{"time":"2026-12-01T15:29:00+00:00","msec":1796138940.123,"remote_addr":"10.0.0.1",'
            '"method":"POST","path":"/api/v1/audit/logs","status":503,"bytes":0}',
            "2026-12-01T15:29:00.123Z",
            3,
            False,
        ),
        ("    at some continuation line", None, None, False),
        ("2026-02-31 15:29:00.000 UTC [1] LOG:  no such day", None, None, False),
    ],
)
def test_parse_line(line, time, prio, follows):
    when, p, f = lf.parse_line(line)
    assert (lf.iso(when) if when else None, p, f) == (time, prio, follows)


def test_formats_without_a_zone_are_local_time(monkeypatch):
    monkeypatch.setenv("TZ", "CET-1")
    time.tzset()
    assert iso("2026/12/01 16:29:00 [error] 1#1: x") == "2026-12-01T15:29:00.000Z"
    assert iso("1:M 01 Dec 2026 16:29:00.000 * x") == "2026-12-01T15:29:00.000Z"


# -- since ---------------------------------------------------------------------------------------

NOW = at(2026, 12, 1, 15, 30, 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-15min", NOW - timedelta(minutes=15)),
        ("-1h", NOW - timedelta(hours=1)),
        ("-2d", NOW - timedelta(days=2)),
        ("-1h 30min", NOW - timedelta(minutes=90)),
        ("-90s", NOW - timedelta(seconds=90)),
        ("15min ago", NOW - timedelta(minutes=15)),
        ("2026-12-01 15:29:00", at(2026, 12, 1, 15, 29, 0)),
        ("2026-12-01 15:29", at(2026, 12, 1, 15, 29, 0)),
        ("2026-12-01", at(2026, 12, 1)),
        ("now", NOW),
        ("today", at(2026, 12, 1)),
        ("yesterday", at(2026, 11, 30)),
        ("", None),
        (None, None),
    ],
)
def test_parse_since(text, expected):
    assert lf.parse_since(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["-15 fortnights", "last tuesday", "2026-13-01", "-"])
def test_parse_since_refuses_what_it_does_not_know(text):
    with pytest.raises(lf.LogFileError, match="since: cannot read"):
        lf.parse_since(text, now=NOW)


def test_grep_is_smart_case_as_journalctl():
    assert lf.compile_grep("error").search("ERROR: x")
    assert not lf.compile_grep("Error").search("ERROR: x")
    assert lf.compile_grep(None) is None
    with pytest.raises(lf.LogFileError, match="grep: not a regular expression"):
        lf.compile_grep("(")


# -- reading backwards ---------------------------------------------------------------------------


class CountingFile(io.BytesIO):
    """A file that counts the bytes read from it."""

    def __init__(self, data):
        super().__init__(data)
        self.bytes_read = 0

    def read(self, size=-1):
        data = super().read(size)
        self.bytes_read += len(data)
        return data


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64, 4096])
@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n",
        b"a",
        b"a\n",
        b"a\nb",
        b"a\nb\n",
        b"one\r\ntwo\r\n",
        b"\n\nx\n\n",
        b"long line " * 50 + b"\nz\n",
    ],
)
def test_reverse_lines_as_splitlines_in_reverse(data, block):
    expected = [line.rstrip(b"\r") for line in data.splitlines()][::-1]
    assert list(lf.reverse_lines(io.BytesIO(data), block_size=block)) == expected


def test_reverse_lines_stops_at_max_bytes_and_says_so():
    data = b"".join(b"line %05d\n" % i for i in range(1000))  # 11 bytes a line
    reader = lf.reverse_lines(io.BytesIO(data), block_size=16, max_bytes=115)
    got = []
    with pytest.raises(StopIteration) as stop:
        while True:
            got.append(next(reader))
    assert got == [b"line %05d" % i for i in range(999, 989, -1)]
    assert stop.value.value is True


def _pg_log(n, start=at(2026, 12, 1, 12, 0, 0)):
    """n PostgreSQL lines a second apart, each 100 bytes or so, every 10th an ERROR with a
    continuation line (no time) and a STATEMENT line."""
    out = []
    for i in range(n):
        stamp = (start + timedelta(seconds=i)).strftime("%Y-%m-%d %H:%M:%S.000 UTC")
        if i % 10 == 0:
            out.append(f"{stamp} [42] audit@audit_logs ERROR:  duplicate key {i}")
            out.append(f"\tcontinued {i}")
            out.append(f"{stamp} [42] audit@audit_logs STATEMENT:  insert {i}")
        else:
            out.append(f"{stamp} [42] LOG:  checkpoint {i} " + "x" * 40)
    return ("\n".join(out) + "\n").encode()


def test_read_a_file_larger_than_the_block_from_its_end_only(tmp_path):
    data = _pg_log(20000)  # about 1.4 MB
    path = tmp_path / "postgresql-17-main.log"
    path.write_bytes(data)
    files = []

    def opener(p, mode):
        f = CountingFile(open(p, mode).read())  # noqa: SIM115 - the test's own copy
        files.append(f)
        return f

    entries, source = lf.read_log_file(str(path), lines=5, block_size=4096, opener=opener, unit="u", host="h")
    assert source == {"source": str(path), "available": True, "error": None, "truncated": False}
    assert [e["message"].split()[6] for e in entries] == ["19995", "19996", "19997", "19998", "19999"]
    assert files[0].bytes_read <= 4096 and len(data) > 300 * 4096
    assert entries[-1] == {
        "time": "2026-12-01T17:33:19.000Z",
        "unit": "u",
        "host": "h",
        "priority": "info",
        "message": entries[-1]["message"],
        "source": str(path),
    }


def test_read_since_stops_at_the_first_older_line(tmp_path):
    path = tmp_path / "pg.log"
    path.write_bytes(_pg_log(20000))
    files = []

    def opener(p, mode):
        files.append(CountingFile(open(p, mode).read()))  # noqa: SIM115
        return files[-1]

    since = at(2026, 12, 1, 17, 33, 0)  # the last 20 seconds
    entries, _ = lf.read_log_file(str(path), since=since, block_size=4096, opener=opener)
    assert (
        entries[0]["time"] == "2026-12-01T17:33:00.000Z" and entries[-1]["time"] == "2026-12-01T17:33:19.000Z"
    )
    assert len(entries) == 18 + 2 * 3  # 20 seconds, two of them an ERROR of three lines
    assert files[0].bytes_read <= 3 * 4096


def test_multi_line_entries_take_time_and_priority_of_the_line_before(tmp_path):
    path = tmp_path / "pg.log"
    path.write_bytes(_pg_log(11))
    entries, _ = lf.read_log_file(str(path), grep=lf.compile_grep(" 10$"))
    assert [(e["time"], e["priority"], e["message"].split()[-1]) for e in entries] == [
        ("2026-12-01T12:00:10.000Z", "err", "10"),
        ("2026-12-01T12:00:10.000Z", "err", "10"),
        ("2026-12-01T12:00:10.000Z", "err", "10"),
    ]


def test_lines_before_any_time_have_none_and_are_left_out_with_since(tmp_path):
    path = tmp_path / "redis.log"
    path.write_text(
        "                _._\n           _.-``__ ''-._\n1:M 01 Dec 2026 15:29:00.000 * Server initialized\n"
    )
    entries, _ = lf.read_log_file(str(path))
    assert [(e["time"], e["priority"]) for e in entries] == [
        (None, "info"),
        (None, "info"),
        ("2026-12-01T15:29:00.000Z", "notice"),
    ]
    entries, _ = lf.read_log_file(str(path), since=at(2026, 12, 1))
    assert [e["message"] for e in entries] == ["1:M 01 Dec 2026 15:29:00.000 * Server initialized"]


def test_max_bytes_cuts_and_says_so(tmp_path):
    path = tmp_path / "pg.log"
    path.write_bytes(_pg_log(2000))
    entries, source = lf.read_log_file(str(path), grep=lf.compile_grep("nothing matches"), max_bytes=10000)
    assert entries == [] and source["truncated"] is True


def test_missing_and_unreadable_files_are_data(tmp_path):
    entries, source = lf.read_log_file(str(tmp_path / "nope.log"))
    assert entries == [] and source["available"] is False and source["error"] == "No such file or directory"
    entries, source = lf.read_log_file(str(tmp_path))  # a directory
    assert entries == [] and source["available"] is False and source["error"]
    if os.geteuid() != 0:
        locked = tmp_path / "locked.log"
        locked.write_text("x\n")
        locked.chmod(0)
        assert lf.read_log_file(str(locked))[1]["error"] == "Permission denied"


def test_globs_skip_rotated_files_and_name_what_matches_nothing(tmp_path):
    for name in ("access.log", "access.log.1", "access.log.2.gz", "error.log", "other.log-20261201"):
        (tmp_path / name).write_text("")
    files, missing = lf.expand_globs([f"{tmp_path}/*.log*", f"{tmp_path}/x/*.log", f"{tmp_path}/access.log"])
    assert files == [f"{tmp_path}/access.log", f"{tmp_path}/error.log"]
    assert missing == [
        {"source": f"{tmp_path}/x/*.log", "available": False, "error": "no file matches", "truncated": False}
    ]


def test_log_file_globs_of_the_components():
    assert comp.log_file_globs("postgresql", "postgresql@17-main.service") == [
        "/var/log/postgresql/postgresql-17-main.log"
    ]
    assert comp.log_file_globs("postgresql", None) == ["/var/log/postgresql/postgresql-*.log"]
    assert comp.log_file_globs("nginx", "nginx.service") == [
        "/var/log/nginx/access.log",
        "/var/log/nginx/error.log",
    ]
    assert comp.log_file_globs("redis") == ["/var/log/redis/redis-server.log"]
    assert comp.log_file_globs("nats") == [] and comp.log_file_globs("prometheus") == []
    assert comp.log_file_globs("nginx", override=[]) == []


# -- merge, tail, the module ---------------------------------------------------------------------


def test_merge_in_time_order_and_tail_the_newest():
    journal = [
        {"time": "2026-12-01T15:00:01.000Z", "m": "j1"},
        {"time": "2026-12-01T15:00:03.000Z", "m": "j3"},
    ]
    access = [
        {"time": "2026-12-01T15:00:02.000Z", "m": "a2"},
        {"time": "2026-12-01T15:00:03.000Z", "m": "a3"},
    ]
    error = [{"time": None, "m": "e0"}, {"time": "2026-12-01T15:00:04.000Z", "m": "e4"}]
    assert [e["m"] for e in lf.merge([journal, access, error])] == ["e0", "j1", "a2", "j3", "a3", "e4"]
    assert [e["m"] for e in lf.merge([journal, access, error], lines=3)] == ["j3", "a3", "e4"]


class FakeJournal:
    mode = "systemd"
    hostname = "web1"

    def __init__(self, entries=None, error=None):
        self.entries, self.error, self.calls = entries or [], error, []

    def logs(self, target, since=None, lines=None, grep=None):
        self.calls.append((target, since, lines, grep))
        if self.error:
            raise comp.ComponentError(self.error)
        return self.entries[-lines:] if lines else self.entries


ACCESS = [
    '10.0.0.1 - - [01/Dec/2026:15:00:01 +0000] "GET /health HTTP/1.1" 200 15 "-" "curl"',
    '10.0.0.1 - - [01/Dec/2026:15:00:03 +0000] "GET /api/v1/logs HTTP/1.1" 502 157 "-" "curl"',
    '10.0.0.1 - - [01/Dec/2026:15:00:05 +0000] "GET /nope HTTP/1.1" 404 0 "-" "curl"',
]
ERRORS = ["2026/12/01 15:00:03 [error] 9#9: *1 connect() failed (111: Connection refused) while connecting"]


def test_collect_logs_merges_journal_and_files_and_tails_over_both(tmp_path):
    (tmp_path / "access.log").write_text("\n".join(ACCESS) + "\n")
    (tmp_path / "error.log").write_text("\n".join(ERRORS) + "\n")
    journal = FakeJournal(
        [
            {
                "time": "2026-12-01T15:00:04.000Z",
                "priority": "notice",
                "message": "reloaded",
                "source": "journal",
            }
        ]
    )
    logs, sources = component.collect_logs(
        journal, "nginx", "nginx.service", [f"{tmp_path}/*.log", f"{tmp_path}/gone.log"], lines=4, host="web1"
    )
    assert [(e["source"].rsplit("/", 1)[-1], e["priority"]) for e in logs] == [
        ("access.log", "err"),
        ("error.log", "err"),
        ("journal", "notice"),
        ("access.log", "warning"),
    ]
    assert journal.calls == [("nginx.service", None, 4, None)]
    assert logs[0]["host"] == "web1" and logs[0]["unit"] == "nginx.service"
    assert [(s["source"].rsplit("/", 1)[-1], s["available"]) for s in sources] == [
        ("journal", True),
        ("access.log", True),
        ("error.log", True),
        ("gone.log", False),
    ]


def test_collect_logs_since_and_grep_on_the_files(tmp_path):
    (tmp_path / "access.log").write_text("\n".join(ACCESS) + "\n")
    now = at(2026, 12, 1, 15, 0, 6)
    logs, _ = component.collect_logs(
        FakeJournal(), "nginx", "nginx.service", [f"{tmp_path}/access.log"], since="-4s", now=now
    )
    assert [e["message"].split('"')[1] for e in logs] == ["GET /api/v1/logs HTTP/1.1", "GET /nope HTTP/1.1"]
    logs, _ = component.collect_logs(
        FakeJournal(), "nginx", "nginx.service", [f"{tmp_path}/access.log"], grep='" 5'
    )
    assert [e["priority"] for e in logs] == ["err"]


def test_collect_logs_a_journal_that_cannot_be_read_is_a_source_with_its_error(tmp_path):
    logs, sources = component.collect_logs(
        FakeJournal(error="journalctl not found"), "nats", "nats-server.service"
    )
    assert logs == [] and sources == [
        {"source": "journal", "available": False, "error": "journalctl not found", "truncated": False}
    ]


def test_collect_logs_bad_since_with_files_to_read_is_refused(tmp_path):
    with pytest.raises(lf.LogFileError):
        component.collect_logs(FakeJournal(), "nginx", "nginx.service", [str(tmp_path)], since="last tuesday")
    # the journal alone takes what journalctl takes
    _, sources = component.collect_logs(FakeJournal(), "nats", "nats-server.service", since="@1700000000")
    assert sources[0]["available"] is True


def test_reverse_lines_a_window_that_begins_with_a_whole_line():
    data = b"".join(b"line %05d\n" % i for i in range(1000))
    got = list(lf.reverse_lines(io.BytesIO(data), block_size=16, max_bytes=110))
    assert got == [b"line %05d" % i for i in range(999, 989, -1)]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ([], []),
        (["/var/log/nginx/*.log"], ["/var/log/nginx/*.log"]),
        (["[/tmp/a.log", "/tmp/b.log]"], ["/tmp/a.log", "/tmp/b.log"]),  # log_files=[/tmp/a.log,/tmp/b.log]
        (["['/tmp/a.log'", " '/tmp/b.log']"], ["/tmp/a.log", "/tmp/b.log"]),
        (["[]"], []),
    ],
)
def test_log_files_option_from_a_k_v_argument(value, expected):
    assert component.log_files_option(value) == expected
