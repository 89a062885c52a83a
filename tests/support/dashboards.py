"""The Grafana dashboards of roles/grafana: their queries and the metric names those read."""

from __future__ import annotations

import json
import re
from pathlib import Path

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "roles" / "grafana" / "files" / "dashboards"

# Words of PromQL that look like metric names but are not.
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
}
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (function names, labels and keywords left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals (label values)
    s = re.sub(r"\{[^}]*\}", "", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", "", s)  # range selectors
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", s)  # label lists
    names = set()
    for m in _IDENT.finditer(s):
        word = m.group()
        if word in _KEYWORDS or s[m.end() :].lstrip().startswith("("):
            continue  # a keyword or a function call
        if m.start() > 0 and (s[m.start() - 1].isdigit() or s[m.start() - 1] == "."):
            continue  # the exponent or unit of a number (1e3, 5m)
        names.add(word)
    return names


def load() -> dict[str, dict]:
    """Every dashboard file by name, parsed."""
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARD_DIR.glob("*.json"))}


def queries(dashboard: dict) -> list[str]:
    """Every PromQL expression of a dashboard's panels (rows' nested panels included)."""
    panels = list(dashboard.get("panels", []))
    out = []
    while panels:
        panel = panels.pop(0)
        panels += panel.get("panels", [])
        out += [t["expr"] for t in panel.get("targets", []) if t.get("expr")]
    return out
