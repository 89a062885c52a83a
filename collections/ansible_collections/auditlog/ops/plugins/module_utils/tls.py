# Copyright: the audit-log project
# MIT License (see the repository's LICENSE)
# Python 3 only, standard library only: the targets are Debian 12 and 13 (Python 3.11+).
"""TLS for the modules' own clients (Redis, NATS, the NATS monitor, the links probe, the API
probe): one way to build a client context from the CA and client-certificate options, and one
explanation of a failed handshake, so that every module names the same files and the same fix.
"""

import ssl


class TLSError(Exception):
    """The TLS files could not be used, or the server's handshake failed (a message for an operator)."""


def client_context(ca_file=None, client_cert=None, client_key=None, verify="full"):
    """A client context. verify: full (chain and host name), ca (chain only), none (neither).
    Without ca_file the system's CAs are trusted. Raises TLSError naming the files."""
    try:
        if verify == "none":
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        else:
            context = ssl.create_default_context(cafile=ca_file)
            context.check_hostname = verify == "full"
        if client_cert:
            context.load_cert_chain(client_cert, client_key)
    except (OSError, ssl.SSLError) as exc:
        files = f"ca_file {ca_file}, client_cert {client_cert}"
        raise TLSError(f"cannot load the TLS files ({files}): {exc}") from None
    return context


def wrap(sock, context, server_hostname, peer):
    """The handshake on a connected socket; peer names the server in the error ("Redis at h:p")."""
    try:
        return context.wrap_socket(sock, server_hostname=server_hostname)
    except ssl.SSLCertVerificationError as exc:
        raise TLSError(
            f"{peer}: its certificate does not verify ({exc.verify_message}):"
            " give ca_file, the CA that signed it, and a server_host named in it"
        ) from None
    except (OSError, ssl.SSLError) as exc:
        raise TLSError(f"{peer}: TLS handshake failed: {exc}") from None
