"""The `lab` fixture: the lab of systemd containers, created once per test session.

Tests that use it are marked `lab` (deselect them with -m "not lab"). LAB_KEEP=1 keeps the lab
after the session (the next session then finds it up and converges it in seconds).
"""

import os

import pytest
from audit_devtools import lab as lablib


@pytest.fixture(scope="session")
def lab():
    created = lablib.create()
    if not created.ok:
        pytest.fail(f"the lab could not be created:\n{created.describe()}", pytrace=False)
    instance = lablib.Lab()
    instance.created = created  # the creating run, e.g. for its duration
    yield instance
    if os.environ.get("LAB_KEEP") != "1":
        destroyed = lablib.destroy()
        assert destroyed.ok, f"the lab could not be destroyed:\n{destroyed.describe()}"


@pytest.fixture(scope="session")
def stack(lab):
    """The whole stack converged on the lab, by molecule's default scenario (site.yml).

    Tests that inject faults into it must leave it as they found it (or converge it again).
    """
    converged = lablib.molecule("converge")
    if not converged.ok:
        pytest.fail(f"molecule converge failed on the lab:\n{converged.describe()}", pytrace=False)
    return converged
