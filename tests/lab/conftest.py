"""The `lab` fixture: the lab of systemd containers, created once per test session.

Tests that use it are marked `lab` (deselect them with -m "not lab"). LAB_KEEP=1 keeps the lab
after the session (the next session then finds it up and converges it in seconds).
"""

import os

import pytest
from audit_devtools import lab as lablib
from support import SESSION_LAB


def pytest_collection_modifyitems(items):
    """Tests marked leaves_lab_changed run last, in file order: no test after them needs the lab
    as the inventory has it, so they need no converge back (each costs CI minutes). The next
    session's converge puts a kept lab back."""
    items.sort(key=lambda item: item.get_closest_marker("leaves_lab_changed") is not None)


@pytest.fixture(scope="session")
def lab():
    leftover = lablib.existing_containers() if not lablib.LAB_SECRETS.exists() else []
    if leftover:
        # Another checkout made these (its secrets file is there, not here), and common rightly
        # refuses to deploy new passwords over them. The session's own lab is remade; a lab the
        # user named is theirs, so it is only reported.
        if lablib.LAB_ID != SESSION_LAB:
            pytest.fail(
                f"{', '.join(leftover)} exist but {lablib.LAB_SECRETS} does not: restore it, or remove"
                f" the lab (AUDIT_LAB={lablib.LAB_ID} make lab-down)",
                pytrace=False,
            )
        destroyed = lablib.destroy()
        if not destroyed.ok:
            pytest.fail(f"a leftover lab could not be removed:\n{destroyed.describe()}", pytrace=False)
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

    Tests that inject faults into it must leave it as they found it (or converge it again), unless
    they are marked leaves_lab_changed.
    """
    converged = lablib.molecule("converge")
    if not converged.ok:
        pytest.fail(f"molecule converge failed on the lab:\n{converged.describe()}", pytrace=False)
    return converged
