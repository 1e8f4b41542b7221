"""Self-signed certificates for RTMPS tests, generated with ``cryptography`` (test
material is generated, never downloaded or checked in)."""

from __future__ import annotations

import ssl

from cryptography import x509

from benchmarks.selfsigned import write_self_signed

__all__ = ["client_context", "serial_of", "write_self_signed"]


def client_context() -> ssl.SSLContext:
    """A client context that accepts the self-signed test certificates."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def serial_of(der: bytes) -> int:
    return x509.load_der_x509_certificate(der).serial_number
