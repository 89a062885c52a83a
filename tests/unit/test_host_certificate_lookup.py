"""auditlog.ops.host_certificate: when a host's key and certificate count as current (pure logic,
on a throwaway PKI)."""

from __future__ import annotations

import shutil

import pytest
from ansible_collections.auditlog.ops.plugins.lookup.host_certificate import state
from support.pki import make_pki

NAMES = ["DNS:localhost", "IP:127.0.0.1"]


@pytest.fixture
def pki(tmp_path):
    files = make_pki(tmp_path)  # server: CN localhost, NAMES, serverAuth, valid one day
    return tmp_path, files


def check(pki, **overrides):
    directory, files = pki
    options = dict(names=NAMES, ca_path=str(files["ca"]), renew_days=0, common_name="localhost")
    options["extended_key_usage"] = ["serverAuth"]
    options.update(overrides)
    return state(str(directory / "server"), **options)


def test_a_certificate_for_its_key_names_and_ca_is_current(pki):
    assert check(pki) == {"exists": True, "current": True, "reason": ""}


def test_a_certificate_due_for_renewal_is_not_current(pki):
    result = check(pki, renew_days=30)
    assert not result["current"] and "within 30 days" in result["reason"]


def test_a_name_to_add_or_drop_is_named(pki):
    result = check(pki, names=["DNS:localhost", "DNS:db1"])
    assert not result["current"]
    assert (
        result["reason"] == "the certificate's names differ (to add: ['DNS:db1'], to drop: ['IP:127.0.0.1'])"
    )


def test_a_certificate_another_ca_signed_is_not_current(pki):
    directory, files = pki
    result = check(pki, ca_path=str(files["other-ca"]))
    assert not result["current"] and result["reason"].startswith(f"not signed by {files['other-ca']}")


def test_a_certificate_for_another_key_is_not_current(pki):
    directory, files = pki
    shutil.copy(files["client_key"], directory / "server.key")
    assert check(pki)["reason"] == "the certificate is not for the key"


def test_a_missing_key_or_certificate_is_not_current_and_says_which(pki):
    directory, _ = pki
    (directory / "server.crt").unlink()
    assert check(pki) == {
        "exists": False,
        "current": False,
        "reason": f"no certificate at {directory}/server.crt",
    }
    (directory / "server.key").unlink()
    assert check(pki)["reason"] == f"no key at {directory}/server.key"


def test_other_usages_or_common_name_are_not_current(pki):
    assert (
        "extended key usages are ['serverAuth']"
        in check(pki, extended_key_usage=["serverAuth", "clientAuth"])["reason"]
    )
    assert check(pki, common_name="db1")["reason"] == "its common name is ['localhost'], not db1"


def test_an_unreadable_certificate_is_not_current(pki):
    directory, _ = pki
    (directory / "server.crt").write_text("not a certificate\n")
    result = check(pki)
    assert result["exists"] and not result["current"] and result["reason"].startswith("unreadable")
