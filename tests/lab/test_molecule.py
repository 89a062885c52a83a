"""molecule's default scenario on the lab: converge (the `stack` fixture), idempotence, a --check
run, and the testinfra verify (molecule/default/tests: units, ports, file modes, end to end
through nginx, Prometheus targets)."""

from __future__ import annotations

import re

import pytest
from audit_devtools import lab as lablib

pytestmark = pytest.mark.lab


def test_converge_reached_every_host(lab, stack):
    assert set(stack.stats) >= set(lab.hosts), stack.describe()
    assert stack.failed == 0, stack.describe()


def test_a_second_converge_changes_nothing(stack):
    run = lablib.molecule("idempotence")
    assert run.ok, run.describe()
    assert run.stats and run.changed == 0, run.describe()


def test_check_mode_reports_nothing_to_change(stack):
    run = lablib.molecule("check")
    assert run.ok, run.describe()
    assert run.stats and run.changed == 0, run.describe()


def test_verify_with_testinfra(stack):
    run = lablib.molecule("verify")
    assert run.ok, run.describe()
    # pytest's summary line, e.g. "22 passed in 12.94s": tests ran, none failed or errored.
    summary = re.search(r"=+ (.*(?:passed|failed|error).*) in [0-9.]+s", run.output)
    assert summary and "passed" in summary[1], run.describe()
    assert not re.search(r"\d+ (failed|error)", summary[1]), run.describe()
