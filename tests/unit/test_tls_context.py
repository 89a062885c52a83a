"""module_utils/tls.py: the client context the modules' own clients share, and its errors."""

import ssl

import pytest
from ansible_collections.auditlog.ops.plugins.module_utils import tls


def test_full_verification_checks_the_chain_and_the_name():
    context = tls.client_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_ca_verification_checks_the_chain_alone():
    context = tls.client_context(verify="ca")
    assert context.verify_mode == ssl.CERT_REQUIRED and not context.check_hostname


def test_no_verification_checks_neither():
    context = tls.client_context(verify="none")
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname


def test_an_unreadable_ca_file_is_named(tmp_path):
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(tls.TLSError, match=f"ca_file {missing}, client_cert None"):
        tls.client_context(str(missing))


def test_a_client_certificate_that_is_no_certificate_is_named(tmp_path):
    cert = tmp_path / "client.pem"
    cert.write_text("not a certificate\n")
    with pytest.raises(tls.TLSError, match=f"client_cert {cert}"):
        tls.client_context(client_cert=str(cert), client_key=str(cert))
