# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""Findings: what a runbook's probes and repairs tell the operator, in one shape.

Every probe module returns its facts and a list `findings` built here. The collection's action
plugins add each finding's `host`, the report callback (auditlog.ops.runbook_report) gathers them
into the run's report, and auditlog.ops.verdict fails the run on the severity the operator chose.

A finding is a dict:
  severity     critical | warning | info
  component    the stack component it is about (postgresql, redis, nats, api, worker, nginx,
               prometheus, host, dns, ...)
  check        a short stable key for what was checked (unit_state, port_owner, auth, ...)
  summary      one line for a person
  evidence     what shows it (the figures or lines the guide's command would have shown)
  remediation  what the runbook did about it (None when it did nothing)
  variable     the inventory variable that persists a change, or that allows a gated repair
"""

SEVERITIES = ("critical", "warning", "info")
_RANK = {name: rank for rank, name in enumerate(reversed(SEVERITIES), start=1)}


def finding(severity, component, check, summary, evidence=None, remediation=None, variable=None):
    """One finding (see the module docstring); raises ValueError on an unknown severity."""
    if severity not in SEVERITIES:
        raise ValueError(f"severity must be one of {', '.join(SEVERITIES)}, not {severity!r}")
    return {
        "severity": severity,
        "component": component,
        "check": check,
        "summary": summary,
        "evidence": evidence,
        "remediation": remediation,
        "variable": variable,
    }


def level(value, warning, critical, above=True):
    """critical, warning or None for a figure against its two thresholds (above=False: the figure
    is bad when low, e.g. available memory). None for an unknown figure."""
    if value is None:
        return None
    if above:
        return "critical" if value >= critical else "warning" if value >= warning else None
    return "critical" if value <= critical else "warning" if value <= warning else None


def rank(severity):
    """critical 3, warning 2, info 1; anything else (none, ok) 0."""
    return _RANK.get(severity, 0)


def at_least(findings, severity):
    """The findings as severe as `severity` or more."""
    return [f for f in findings if rank(f.get("severity")) >= rank(severity)]


def unavailable(error):
    """The facts of a component that could not be reached: data, not a crash."""
    return {"available": False, "error": str(error)}
