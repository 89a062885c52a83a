# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""Name resolution for modules: /etc/hosts parsed and edited, resolv.conf and nsswitch read,
names resolved the way the service resolves them, and the findings of auditlog.ops.name_resolution.

Everything but resolve() and write_atomic() is pure and unit-tested without touching the system.
"""

import contextlib
import errno
import ipaddress
import os
import re
import socket
import tempfile
import time

from ansible_collections.auditlog.ops.plugins.module_utils.findings import finding

COMPONENT = "dns"
FAMILIES = {"any": socket.AF_UNSPEC, "ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}


# -- option normalisation ----------------------------------------------------------------------


def normalise_names(names):
    """The `names` option -> [(name, [expected addresses] or None)], in order, without repeats.

    Accepted: a list of names, a list of {name, expected}, or a dict name -> expected (a list, one
    address as a string, or null). Raises ValueError with a message naming the bad item.
    """
    out = []
    if isinstance(names, dict):
        items = [{"name": k, "expected": v} for k, v in names.items()]
    elif isinstance(names, (list, tuple)):
        items = list(names)
    else:
        raise ValueError(f"names must be a list or a dict, not {type(names).__name__}")
    seen = set()
    for item in items:
        if isinstance(item, str):
            item = {"name": item}
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"].strip():
            raise ValueError(f"each item of names needs a name (a string): {item!r}")
        unknown = set(item) - {"name", "expected"}
        if unknown:
            raise ValueError(f"names item {item['name']!r}: unknown key(s) {', '.join(sorted(unknown))}")
        expected = item.get("expected")
        if isinstance(expected, str):
            expected = [expected]
        if isinstance(expected, (list, tuple)) and not expected:
            expected = None  # [] as null: a name whose address is not known (a host without facts)
        if expected is not None:
            if not isinstance(expected, (list, tuple)) or not expected:
                raise ValueError(f"names item {item['name']!r}: expected must be a list of addresses")
            try:
                expected = [normal_address(a) for a in expected]
            except ValueError as exc:
                raise ValueError(f"names item {item['name']!r}: {exc}") from None
        name = item["name"].strip()
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        out.append((name, list(expected) if expected is not None else None))
    return out


def normal_address(address):
    """An IP address in its canonical text form ('::0001' -> '::1'); ValueError if it is none."""
    try:
        return str(ipaddress.ip_address(str(address).strip().split("%", 1)[0]))
    except ValueError:
        raise ValueError(f"{address!r} is not an IP address") from None


# -- /etc/hosts --------------------------------------------------------------------------------

_LINE = re.compile(r"^(?P<indent>\s*)(?P<address>\S+)(?P<sep>\s+)(?P<names>[^#]*?)(?P<tail>\s*(#.*)?)$")


def parse_hosts(text):
    """The hosts file's lines: [{line (1-based), text, address, names, comment}], every line,
    blank and comment lines with address None."""
    lines = []
    for number, raw in enumerate(text.splitlines(), start=1):
        entry = {"line": number, "text": raw, "address": None, "names": []}
        body = raw.split("#", 1)[0].strip()
        if body:
            fields = body.split()
            if len(fields) >= 2:
                entry["address"] = fields[0]
                entry["names"] = fields[1:]
        lines.append(entry)
    return lines


def _same_address(a, b):
    try:
        return normal_address(a) == normal_address(b)
    except ValueError:
        return False


def entries_for(lines, name):
    """The hosts-file lines that name `name` (case-insensitive): [{line, text, address}]."""
    wanted = name.lower()
    return [
        {"line": e["line"], "text": e["text"], "address": e["address"]}
        for e in lines
        if e["address"] and wanted in (n.lower() for n in e["names"])
    ]


def _render_without(raw, drop):
    """The line `raw` without the names in `drop` (lower case); None when no name is left."""
    m = _LINE.match(raw)
    if not m:
        return raw
    names = m.group("names").split()
    kept = [n for n in names if n.lower() not in drop]
    if not kept:
        return None
    tail = m.group("tail")
    return f"{m.group('indent')}{m.group('address')}{m.group('sep')}{' '.join(kept)}{tail}"


def plan_fix(text, wanted, add_missing=False, broken=()):
    """Edit the hosts file's text so that no line maps a wanted name to an address it should not have.

    wanted: [(name, [expected addresses])] (names without expected addresses are left alone).
    broken: the names that do not resolve to their expected addresses now; with add_missing, a
    broken name that no line maps to an expected address any more gets `<first expected> <name>`
    appended. Returns (new text, changes): changes is a list of
    {name, action: remove|drop_line|add, line, before, after} (line numbers of the old text;
    `add` lines have line None), one per name and line.
    """
    lines = parse_hosts(text)
    out_lines = [e["text"] for e in lines]
    changes = []
    broken = {b.lower() for b in broken}
    for name, expected in wanted:
        if not expected:
            continue
        low = name.lower()
        for index, entry in enumerate(lines):
            if not entry["address"] or low not in (n.lower() for n in entry["names"]):
                continue
            if any(_same_address(entry["address"], e) for e in expected):
                continue
            before = out_lines[index]
            if before is None:
                continue
            after = _render_without(before, {low})
            out_lines[index] = after
            entry["names"] = [n for n in entry["names"] if n.lower() != low]
            changes.append(
                {
                    "name": name,
                    "action": "remove" if after is not None else "drop_line",
                    "line": entry["line"],
                    "before": before,
                    "after": after,
                }
            )
    additions = []
    for name, expected in wanted:
        if not expected or not add_missing:
            continue
        low = name.lower()
        removed = any(c["name"].lower() == low for c in changes)
        if low not in broken and not removed:
            continue
        still = [
            e
            for i, e in enumerate(lines)
            if out_lines[i] is not None
            and e["address"]
            and low in (n.lower() for n in e["names"])
            and any(_same_address(e["address"], x) for x in expected)
        ]
        if still:
            continue
        line = f"{expected[0]} {name}"
        additions.append(line)
        changes.append({"name": name, "action": "add", "line": None, "before": None, "after": line})
    kept = [line for line in out_lines if line is not None] + additions
    new_text = "\n".join(kept)
    if kept and (text.endswith("\n") or additions or not text):
        new_text += "\n"
    if not changes:
        return text, []
    return new_text, changes


def describe_change(change, path):
    """One change of plan_fix as a sentence."""
    if change["action"] == "add":
        return f"added {change['after']!r} to {path}"
    if change["action"] == "drop_line":
        return f"removed line {change['line']} {change['before']!r} from {path}"
    return (
        f"removed {change['name']} from line {change['line']} of {path}"
        f" ({change['before']!r} -> {change['after']!r})"
    )


def write_atomic(path, text, backup=None):
    """Write text to path keeping its mode and owner: a temporary file in the same directory
    renamed over it. Returns True when the file was written in place instead (see below)."""
    data = text.encode("utf-8")
    st = os.stat(path)
    directory = os.path.dirname(os.path.abspath(path)) or "."
    fd, tmp = tempfile.mkstemp(prefix=".hosts.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fchmod(out.fileno(), st.st_mode & 0o7777)
            # Not root: the file stays ours, as the original was writable by us.
            with contextlib.suppress(PermissionError):
                os.fchown(out.fileno(), st.st_uid, st.st_gid)
            os.fsync(out.fileno())
        try:
            os.replace(tmp, path)
            return False
        except OSError as exc:
            # Docker (and other container runtimes) bind-mount /etc/hosts into the container: a
            # rename onto a mount point fails with EBUSY, so the only way to change it is to
            # write the file in place (open r+, truncate). Not atomic, but the file is small and
            # written in one call; its mode and owner are the mount's and stay as they are.
            if exc.errno != errno.EBUSY:
                raise
        with open(path, "r+b") as out:
            out.seek(0)
            out.truncate()
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# -- resolv.conf and nsswitch.conf ---------------------------------------------------------------


def parse_resolv_conf(text):
    """resolv.conf -> {nameservers, search, options} (the last search/domain line wins, as in glibc)."""
    conf = {"nameservers": [], "search": [], "options": []}
    for raw in text.splitlines():
        fields = raw.split("#", 1)[0].split(";", 1)[0].split()
        if not fields:
            continue
        key, values = fields[0], fields[1:]
        if key == "nameserver" and values:
            conf["nameservers"].append(values[0])
        elif key in ("search", "domain"):
            conf["search"] = values
        elif key == "options":
            conf["options"].extend(values)
    return conf


def parse_nsswitch_hosts(text):
    """The sources of nsswitch.conf's hosts line (['files', 'dns'], actions like [NOTFOUND=return]
    kept as they are), or None when there is no hosts line."""
    for raw in text.splitlines():
        body = raw.split("#", 1)[0].strip()
        if body.startswith("hosts:"):
            return body[len("hosts:") :].split()
    return None


def read_text(path):
    """A file's text, or None when it cannot be read (the error is the caller's to report)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


# -- resolution ------------------------------------------------------------------------------------


def resolve(name, family="any"):
    """socket.getaddrinfo, as the service calls it: {addresses, resolved, error, elapsed_ms}."""
    started = time.monotonic()
    try:
        infos = socket.getaddrinfo(name, None, FAMILIES[family], socket.SOCK_STREAM)
        error = None
    except (OSError, UnicodeError) as exc:
        infos = []
        error = str(exc)
    elapsed = round((time.monotonic() - started) * 1000, 2)
    addresses = []
    for info in infos:
        address = info[4][0]
        if address not in addresses:
            addresses.append(address)
    return {"addresses": addresses, "resolved": bool(addresses), "error": error, "elapsed_ms": elapsed}


def source_of(addresses, entries, nsswitch):
    """Where an answer most likely came from: files (a hosts line gives one of the addresses),
    else dns when nsswitch asks DNS, else the first other source; None when unresolved."""
    if not addresses:
        return None
    if any(_same_address(e["address"], a) for e in entries for a in addresses):
        return "files"
    sources = [s for s in (nsswitch or ["files", "dns"]) if not s.startswith("[") and s != "files"]
    if "dns" in sources:
        return "dns"
    return sources[0] if sources else "files"


def name_facts(name, expected, answer, entries, nsswitch):
    """The facts of one name from its answer (resolve()) and its hosts-file lines."""
    facts = dict(answer)
    facts.update(
        expected=expected,
        hosts_file_entries=entries,
        source=source_of(answer["addresses"], entries, nsswitch),
        unexpected=[],
        wrong_entries=[],
    )
    if expected:
        facts["unexpected"] = [
            a for a in answer["addresses"] if not any(_same_address(a, e) for e in expected)
        ]
        facts["wrong_entries"] = [
            e for e in entries if not any(_same_address(e["address"], x) for x in expected)
        ]
    facts["matches"] = None if not expected else (answer["resolved"] and not facts["unexpected"])
    return facts


def _line_text(entry):
    return f"line {entry['line']}: {entry['text'].strip()!r}"


def name_findings(facts_by_name, hosts_file):
    """The findings of name_resolution: a name that does not resolve, or resolves to (or has a hosts
    line with) an address it should not have -> critical."""
    out = []
    for name, facts in facts_by_name.items():
        if not facts["resolved"]:
            evidence = {
                "name": name,
                "error": facts["error"],
                "hosts_file_entries": facts["hosts_file_entries"],
            }
            out.append(
                finding(
                    "critical",
                    COMPONENT,
                    "resolve",
                    f"{name} does not resolve: {facts['error']}",
                    evidence=evidence,
                )
            )
            continue
        if not facts.get("expected"):
            continue
        unexpected, wrong = facts["unexpected"], facts["wrong_entries"]
        if not unexpected and not wrong:
            continue
        expected = ", ".join(facts["expected"])
        responsible = [e for e in wrong if any(_same_address(e["address"], a) for a in unexpected)]
        if unexpected:
            summary = f"{name} resolves to {', '.join(unexpected)}, expected {expected}"
            if responsible:
                summary += f" ({hosts_file} {'; '.join(_line_text(e) for e in responsible)})"
        else:
            summary = (
                f"{hosts_file} maps {name} to {', '.join(e['address'] for e in wrong)}, expected {expected}"
                f" ({'; '.join(_line_text(e) for e in wrong)};"
                f" it resolves to {', '.join(facts['addresses'])})"
            )
        evidence = {
            "name": name,
            "addresses": facts["addresses"],
            "expected": facts["expected"],
            "unexpected": unexpected,
            "hosts_file": hosts_file,
            "hosts_file_entries": facts["hosts_file_entries"],
            "wrong_entries": wrong,
            "source": facts["source"],
        }
        out.append(finding("critical", COMPONENT, "address", summary, evidence=evidence))
    return out


def config_findings(errors):
    """A resolver file that cannot be read (the hosts file, resolv.conf, nsswitch.conf) -> warning."""
    return [
        finding("warning", COMPONENT, "resolver_config", error, evidence={"error": error}) for error in errors
    ]


def attach_remediation(findings, changes, hosts_file, check_mode, verified=None):
    """Record in each finding of a name what the fix did (or, in check mode, would do)."""
    for item in findings:
        name = _finding_name(item)
        done = [describe_change(c, hosts_file) for c in changes if c["name"].lower() == name]
        if not done:
            continue
        text = "; ".join(done)
        if check_mode:
            text = "would have " + text + " (check mode)"
        elif verified and name in verified:
            text += f"; {name} now resolves to {', '.join(verified[name]) or 'nothing'}"
        item["remediation"] = text
    return findings


def _finding_name(item):
    return str((item.get("evidence") or {}).get("name", "")).lower()
