"""A throwaway PKI for the TLS tests: a CA, a server and a client certificate, and a foreign CA."""

from __future__ import annotations

from pathlib import Path


def make_pki(directory: Path, server_name: str = "localhost") -> dict[str, Path]:
    """A CA, a server certificate for server_name and 127.0.0.1, and a client certificate."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def write(name: str, key, cert) -> None:
        (directory / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def issue(subject: str, key, issuer_name, issuer_key, ca: bool, sans=(), usage=None):
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        if usage:
            builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = issue("test CA", ca_key, None, ca_key, ca=True)
    write("ca", ca_key, ca)
    server_key = ec.generate_private_key(ec.SECP256R1())
    sans = [x509.DNSName(server_name), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    write(
        "server",
        server_key,
        issue(server_name, server_key, ca.subject, ca_key, False, sans, ExtendedKeyUsageOID.SERVER_AUTH),
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    write(
        "client",
        client_key,
        issue("client", client_key, ca.subject, ca_key, False, (), ExtendedKeyUsageOID.CLIENT_AUTH),
    )
    other_key = ec.generate_private_key(ec.SECP256R1())
    write("other-ca", other_key, issue("another CA", other_key, None, other_key, ca=True))
    return {name: directory / f"{name}.crt" for name in ("ca", "server", "client", "other-ca")} | {
        "server_key": directory / "server.key",
        "client_key": directory / "client.key",
    }
