# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)

from __future__ import annotations

DOCUMENTATION = r"""
name: host_certificate
short_description: Whether a host's key and certificate on the controller are current
version_added: "0.3.0"
author: audit-log project (!UNKNOWN)
description:
  - Looks at C(<base>.key) and C(<base>.crt) on the controller and says whether they are current, that is
    both readable, the certificate made for that key, signed by O(ca_cert), for exactly the names
    O(names), and valid for more than O(renew_days) days.
  - Reads files only and changes nothing, in the controller's own process. The common role runs
    its key, signing request and signing tasks (community.crypto, one Python process per host and
    task) only when this says no, which a converge that changes nothing never needs.
options:
  _terms:
    description: The path of the host's files without the extension (C(<base>.key), C(<base>.crt)).
    required: true
    type: list
    elements: path
  names:
    description:
      - The subject alternative names the certificate must have, as community.crypto writes them
        (C(DNS:db1), C(IP:10.0.0.5)).
    required: true
    type: list
    elements: str
  ca_cert:
    description: The CA certificate that must have signed it.
    required: true
    type: path
  common_name:
    description: The subject's common name it must have (not checked when omitted).
    type: str
  extended_key_usage:
    description: The extended key usages it must have, exactly (C(serverAuth), C(clientAuth)), if any.
    type: list
    elements: str
    default: []
  renew_days:
    description: A certificate that expires within this many days is not current.
    type: int
    default: 30
"""

EXAMPLES = r"""
- name: Look at this host's key and certificate
  ansible.builtin.set_fact:
    host_cert: >-
      {{ lookup('auditlog.ops.host_certificate', pki ~ '/hosts/' ~ inventory_hostname,
                names=['DNS:' ~ inventory_hostname], ca_cert=pki ~ '/ca.crt', renew_days=30) }}
"""

RETURN = r"""
_raw:
  description: One mapping per term.
  type: list
  elements: dict
  contains:
    exists:
      description: Whether the certificate file exists.
      type: bool
    current:
      description: Whether the key and certificate need no change.
      type: bool
    reason:
      description: Why they are not current (empty when they are).
      type: str
      sample: the certificate's names differ (DNS:db1 added)
"""

import datetime  # noqa: E402
import ipaddress  # noqa: E402
import os  # noqa: E402

from ansible.errors import AnsibleLookupError  # noqa: E402
from ansible.plugins.lookup import LookupBase  # noqa: E402

try:  # noqa: E402
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
except ImportError:  # reported by run()
    x509 = None


def san_strings(cert):
    """The certificate's names in community.crypto's notation."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    found = {f"DNS:{n}" for n in names.get_values_for_type(x509.DNSName)}
    return found | {f"IP:{n}" for n in names.get_values_for_type(x509.IPAddress)}


def normal_names(names):
    """`names` with IP addresses written as ipaddress writes them (IP:0:0::1 is IP:::1)."""
    normal = set()
    for name in names:
        kind, _, value = str(name).partition(":")
        if kind == "IP":
            value = str(ipaddress.ip_address(value))
        normal.add(f"{kind}:{value}")
    return normal


def usages(cert):
    """The certificate's extended key usages by name (serverAuth, clientAuth)."""
    try:
        value = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return set()
    return {getattr(oid, "_name", oid.dotted_string) for oid in value}


def state(base, names, ca_path, renew_days, common_name=None, extended_key_usage=(), now=None):
    key_path, cert_path = f"{base}.key", f"{base}.crt"
    exists = os.path.isfile(cert_path)

    def stale(reason):
        return {"exists": exists, "current": False, "reason": reason}

    if not os.path.isfile(key_path):
        return stale(f"no key at {key_path}")
    if not exists:
        return stale(f"no certificate at {cert_path}")
    try:
        with open(key_path, "rb") as handle:
            key = serialization.load_pem_private_key(handle.read(), password=None)
        with open(cert_path, "rb") as handle:
            cert = x509.load_pem_x509_certificate(handle.read())
        with open(ca_path, "rb") as handle:
            ca = x509.load_pem_x509_certificate(handle.read())
    except (OSError, ValueError, TypeError) as err:
        return stale(f"unreadable: {err}")
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if cert.public_key().public_bytes(*raw) != key.public_key().public_bytes(*raw):
        return stale("the certificate is not for the key")
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError) as err:  # InvalidSignature has no message
        return stale(f"not signed by {ca_path} ({type(err).__name__})")
    wanted, found = normal_names(names), san_strings(cert)
    if wanted != found:
        added, dropped = sorted(wanted - found), sorted(found - wanted)
        return stale(f"the certificate's names differ (to add: {added}, to drop: {dropped})")
    if common_name is not None:
        found_cn = [a.value for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
        if found_cn != [common_name]:
            return stale(f"its common name is {found_cn}, not {common_name}")
    if extended_key_usage and usages(cert) != set(extended_key_usage):
        return stale(f"its extended key usages are {sorted(usages(cert))}, not {sorted(extended_key_usage)}")
    now = now or datetime.datetime.now(datetime.UTC)
    if cert.not_valid_after_utc - now <= datetime.timedelta(days=renew_days):
        return stale(f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}, within {renew_days} days")
    return {"exists": True, "current": True, "reason": ""}


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        if x509 is None:
            raise AnsibleLookupError(
                "auditlog.ops.host_certificate needs the cryptography package on the controller"
            )
        self.set_options(var_options=variables, direct=kwargs)
        options = dict(
            names=self.get_option("names"),
            ca_path=self.get_option("ca_cert"),
            renew_days=int(self.get_option("renew_days")),
            common_name=self.get_option("common_name"),
            extended_key_usage=self.get_option("extended_key_usage"),
        )
        return [state(str(term), **options) for term in terms]
