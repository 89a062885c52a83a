"""auditlog.ops.name_resolution's pure logic: the names option, /etc/hosts parsed and fixed (a
name dropped from a line, a line dropped, a line added only with add_missing), resolv.conf and
nsswitch, the findings, and the in-place write when a rename hits a bind mount (EBUSY)."""

from __future__ import annotations

import errno
import os

import pytest
from ansible_collections.auditlog.ops.plugins.module_utils import hosts_file as hf

HOSTS = """\
127.0.0.1\tlocalhost
::1\tlocalhost ip6-localhost
# the lab
10.99.0.9\tdb1 db1.lab cache1   # stale
10.20.0.11 db1
10.99.0.8 mq1
"""


def test_normalise_names_accepts_lists_and_dicts():
    assert hf.normalise_names(["db1", {"name": "mq1", "expected": "10.0.0.1"}]) == [
        ("db1", None),
        ("mq1", ["10.0.0.1"]),
    ]
    assert hf.normalise_names({"db1": ["10.20.0.11"], "cache1": None}) == [
        ("db1", ["10.20.0.11"]),
        ("cache1", None),
    ]
    assert hf.normalise_names([{"name": "x", "expected": ["::0001"]}]) == [("x", ["::1"])]
    # As the dns runbook gives a peer without facts: an empty list, no expectation.
    assert hf.normalise_names({"db1": []}) == [("db1", None)]


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ("db1", "list or a dict"),
        ([{"expected": ["1.2.3.4"]}], "needs a name"),
        ([{"name": "db1", "expected": ["db1.lab"]}], "not an IP address"),
        ([{"name": "db1", "addresses": []}], "unknown key"),
    ],
)
def test_normalise_names_rejects_bad_input(names, message):
    with pytest.raises(ValueError, match=message):
        hf.normalise_names(names)


def test_entries_for_finds_every_line_naming_it():
    lines = hf.parse_hosts(HOSTS)
    assert [(e["line"], e["address"]) for e in hf.entries_for(lines, "DB1")] == [
        (4, "10.99.0.9"),
        (5, "10.20.0.11"),
    ]
    assert hf.entries_for(lines, "stale") == []  # in a comment


def test_plan_fix_drops_only_the_wrong_name_and_keeps_the_rest():
    new, changes = hf.plan_fix(HOSTS, [("db1", ["10.20.0.11"])])
    assert "10.99.0.9\tdb1.lab cache1   # stale\n" in new
    assert "10.20.0.11 db1\n" in new and new.endswith("10.99.0.8 mq1\n")
    assert changes == [
        {
            "name": "db1",
            "action": "remove",
            "line": 4,
            "before": "10.99.0.9\tdb1 db1.lab cache1   # stale",
            "after": "10.99.0.9\tdb1.lab cache1   # stale",
        }
    ]
    # Idempotent: nothing left to do.
    assert hf.plan_fix(new, [("db1", ["10.20.0.11"])]) == (new, [])


def test_plan_fix_drops_a_line_left_without_names_and_adds_only_when_asked():
    wanted = [("mq1", ["10.20.0.13"])]
    new, changes = hf.plan_fix(HOSTS, wanted)
    assert "mq1" not in new and [c["action"] for c in changes] == ["drop_line"]
    new, changes = hf.plan_fix(HOSTS, wanted, add_missing=True, broken=["mq1"])
    assert new.endswith("10.20.0.13 mq1\n")
    assert [c["action"] for c in changes] == ["drop_line", "add"]
    # A name that resolves fine (not broken) and has no wrong line gets nothing added.
    assert hf.plan_fix(HOSTS, [("api1", ["10.20.0.20"])], add_missing=True) == (HOSTS, [])
    # A broken name without any line: added with add_missing only.
    assert hf.plan_fix(HOSTS, [("api1", ["10.20.0.20"])], broken=["api1"]) == (HOSTS, [])
    new, _ = hf.plan_fix(HOSTS, [("api1", ["10.20.0.20"])], add_missing=True, broken=["api1"])
    assert new == HOSTS + "10.20.0.20 api1\n"


def test_plan_fix_leaves_names_without_expected_addresses_alone():
    assert hf.plan_fix(HOSTS, [("db1", None)]) == (HOSTS, [])


def test_resolv_conf_and_nsswitch():
    conf = hf.parse_resolv_conf("# docker\nnameserver 127.0.0.11\nsearch lab example\noptions ndots:0\n")
    assert conf == {"nameservers": ["127.0.0.11"], "search": ["lab", "example"], "options": ["ndots:0"]}
    assert hf.parse_nsswitch_hosts("passwd: files\nhosts:  files mdns4_minimal [NOTFOUND=return] dns\n") == [
        "files",
        "mdns4_minimal",
        "[NOTFOUND=return]",
        "dns",
    ]
    assert hf.parse_nsswitch_hosts("") is None


def _facts(name, expected, addresses, hosts=HOSTS, error=None):
    answer = {"addresses": addresses, "resolved": bool(addresses), "error": error, "elapsed_ms": 0.1}
    entries = hf.entries_for(hf.parse_hosts(hosts), name)
    return hf.name_facts(name, expected, answer, entries, ["files", "dns"])


def test_a_wrong_address_names_the_line_responsible():
    facts = {"db1": _facts("db1", ["10.20.0.11"], ["10.99.0.9", "10.20.0.11"])}
    assert facts["db1"]["source"] == "files" and facts["db1"]["matches"] is False
    (found,) = hf.name_findings(facts, "/etc/hosts")
    assert found["severity"] == "critical" and found["component"] == "dns" and found["check"] == "address"
    assert found["summary"].startswith("db1 resolves to 10.99.0.9, expected 10.20.0.11")
    assert "line 4" in found["summary"] and "10.99.0.9\\tdb1 db1.lab" in found["summary"]


def test_a_wrong_line_is_found_even_when_the_answer_is_right():
    facts = {"db1": _facts("db1", ["10.20.0.11"], ["10.20.0.11"])}
    (found,) = hf.name_findings(facts, "/tmp/hosts")
    assert found["summary"].startswith("/tmp/hosts maps db1 to 10.99.0.9, expected 10.20.0.11")


def test_unresolved_is_critical_and_a_right_answer_is_no_finding():
    facts = {
        "nosuch": _facts("nosuch", None, [], error="[Errno -2] Name or service not known"),
        "mq1": _facts("mq1", ["10.99.0.8"], ["10.99.0.8"]),
        "cache1": _facts("cache1", None, ["10.99.0.9"]),
    }
    (found,) = hf.name_findings(facts, "/etc/hosts")
    assert found["check"] == "resolve" and "Name or service not known" in found["summary"]


def test_remediation_is_recorded_in_the_finding():
    facts = {"db1": _facts("db1", ["10.20.0.11"], ["10.99.0.9"])}
    findings = hf.name_findings(facts, "/etc/hosts")
    _new, changes = hf.plan_fix(HOSTS, [("db1", ["10.20.0.11"])])
    hf.attach_remediation(findings, changes, "/etc/hosts", check_mode=True)
    assert findings[0]["remediation"].startswith("would have removed db1 from line 4 of /etc/hosts")
    hf.attach_remediation(findings, changes, "/etc/hosts", check_mode=False, verified={"db1": ["10.20.0.11"]})
    assert findings[0]["remediation"].endswith("db1 now resolves to 10.20.0.11")


def test_write_atomic_keeps_the_mode(tmp_path):
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    path.chmod(0o644)
    assert hf.write_atomic(str(path), "127.0.0.1 localhost\n") is False
    assert path.read_text() == "127.0.0.1 localhost\n"
    assert (path.stat().st_mode & 0o777) == 0o644
    assert os.listdir(tmp_path) == ["hosts"]


def test_write_atomic_writes_in_place_on_a_bind_mount(tmp_path, monkeypatch):
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    inode = path.stat().st_ino

    def busy(_src, _dst):
        raise OSError(errno.EBUSY, "Device or resource busy")

    monkeypatch.setattr(hf.os, "replace", busy)
    assert hf.write_atomic(str(path), "10.20.0.11 db1\n") is True
    assert path.read_text() == "10.20.0.11 db1\n" and path.stat().st_ino == inode
    assert os.listdir(tmp_path) == ["hosts"]


def test_an_unreadable_resolver_file_is_a_warning():
    (found,) = hf.config_findings(["cannot read /etc/resolv.conf"])
    assert found["severity"] == "warning" and found["check"] == "resolver_config"
    assert found["summary"] == "cannot read /etc/resolv.conf"
