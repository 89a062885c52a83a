"""auditlog.ops.component's logs from log files, through `ansible localhost` as a runbook runs it,
on files written by the test in each component's format: nginx's access and error logs (the
access log larger than the block the module reads backwards), PostgreSQL's and Redis' logs. No
systemd is needed: where the host has none, the journal and the unit's state are reported as
unavailable and the files are still read.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from support import modules


def run_module(**args) -> tuple[int, dict, str]:
    # Log lines are written and read in UTC, whatever the machine's zone.
    return modules.run_module("component", args, env={"TZ": "UTC"})


ACCESS_TIME = "%d/%b/%Y:%H:%M:%S +0000"


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


def test_nginx_access_and_error_logs_merged_since_tail(tmp_path):
    access, error = tmp_path / "access.log", tmp_path / "error.log"
    # 5000 old lines (an hour ago and more), then the last ten minutes' few
    old = [
        f'10.0.0.1 - - [{ago(7200 - i).strftime(ACCESS_TIME)}] "GET /old/{i} HTTP/1.1" 200 1 "-" "x"'
        for i in range(5000)
    ]
    new = [
        (300, 200, "/health"),
        (200, 502, "/api/v1/logs"),
        (100, 404, "/nope"),
    ]
    lines = old + [
        f'10.0.0.1 - - [{ago(s).strftime("%d/%b/%Y:%H:%M:%S +0000")}] "GET {p} HTTP/1.1" {st} 9 "-" "x"'
        for s, st, p in new
    ]
    access.write_text("\n".join(lines) + "\n")
    assert access.stat().st_size > 4 * 64 * 1024
    error.write_text(
        f"{ago(7000).strftime('%Y/%m/%d %H:%M:%S')} [notice] 9#9: old\n"
        f"{ago(250).strftime('%Y/%m/%d %H:%M:%S')} [error] 9#9: *7 connect() failed (111)\n"
        f"{ago(150).strftime('%Y/%m/%d %H:%M:%S')} [warn] 9#9: an upstream response is buffered\n"
    )
    rc, r, out = run_module(
        name="nginx",
        logs=True,
        since="-10min",
        tail=4,
        log_files=[str(access), str(error), f"{tmp_path}/gone.log"],
    )
    assert rc == 0, out
    got = [(e["source"], e["priority"], e["message"].split("]", 1)[1].strip()[:20]) for e in r["logs"]]
    assert got == [
        (str(error), "err", "9#9: *7 connect() fa"),
        (str(access), "err", '"GET /api/v1/logs HT'),
        (str(error), "warning", "9#9: an upstream res"),
        (str(access), "warning", '"GET /nope HTTP/1.1"'),
    ], got
    assert all(e["unit"] == "nginx.service" and e["time"].endswith("Z") and e["host"] for e in r["logs"])
    sources = {s["source"]: s for s in r["log_sources"]}
    assert sources[str(access)]["available"] and sources[str(error)]["available"]
    assert sources[f"{tmp_path}/gone.log"] == {
        "source": f"{tmp_path}/gone.log",
        "available": False,
        "error": "No such file or directory",
        "truncated": False,
    }
    assert "journal" in sources


def test_grep_over_the_files(tmp_path):
    access = tmp_path / "access.log"
    stamp = ago(60).strftime("%d/%b/%Y:%H:%M:%S +0000")
    access.write_text(
        "".join(
            f'1.2.3.4 - - [{stamp}] "GET /{i} HTTP/1.1" {st} 1 "-" "x"\n'
            for i, st in enumerate([200, 503, 200])
        )
    )
    rc, r, out = run_module(name="nginx", logs=True, grep='" 5[0-9][0-9] ', log_files=[str(access)])
    assert rc == 0, out
    assert [e["message"].split('"')[1] for e in r["logs"]] == ["GET /1 HTTP/1.1"]


def test_postgresql_and_redis_logs(tmp_path):
    pg = tmp_path / "postgresql-17-main.log"
    t = ago(30).strftime("%Y-%m-%d %H:%M:%S.000 UTC")
    pg.write_text(
        f"{t} [51] LOG:  database system is ready to accept connections\n"
        f'{t} [60] audit@audit_logs ERROR:  relation "nope" does not exist at character 15\n'
        f"{t} [60] audit@audit_logs STATEMENT:  select * from nope\n"
        f'{t} [61] audit@audit_logs FATAL:  password authentication failed for user "audit"\n'
    )
    rc, r, out = run_module(name="postgresql", logs=True, since="-5min", log_files=[str(pg)])
    assert rc == 0, out
    assert [e["priority"] for e in r["logs"]] == ["info", "err", "err", "crit"], r["logs"]

    redis = tmp_path / "redis-server.log"
    t = ago(30).strftime("%d %b %Y %H:%M:%S.123")
    redis.write_text(f"7:M {t} * Ready to accept connections tcp\n7:M {t} # WARNING Memory overcommit\n")
    rc, r, out = run_module(name="redis", logs=True, tail=1, log_files=[str(redis)])
    assert rc == 0, out
    assert [(e["priority"], e["message"][-17:]) for e in r["logs"]] == [("warning", "Memory overcommit")]


def test_a_bad_since_fails_with_a_message(tmp_path):
    rc, r, out = run_module(name="nginx", logs=True, since="last tuesday", log_files=[f"{tmp_path}/x.log"])
    assert rc != 0 and "since: cannot read 'last tuesday'" in r["msg"], out
