"""A server TLS context that can be reloaded (a renewed certificate, on SIGHUP) without
touching connections already up: each new connection takes the context current when it
arrives, and an :class:`ssl.SSLContext` in use by live connections is never mutated.
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

logger = logging.getLogger(__name__)


class TlsConfigError(Exception):
    """The certificate or key cannot be loaded (missing, unreadable, not matching)."""


def server_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A TLS 1.2+ server context for ``cert_file`` (PEM, leaf first, then the chain) and
    ``key_file`` (PEM)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # TLS 1.2 is what OBS (mbedTLS / the OS stack), ffmpeg and GStreamer all speak.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as e:
        raise TlsConfigError(f"cannot load the TLS certificate {cert_file} with key "
                             f"{key_file}: {e}") from e
    return context


class ReloadableTls:
    """The current server context for a certificate/key pair kept on disk."""

    def __init__(self, cert_file: Path, key_file: Path) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.context = server_context(cert_file, key_file)
        self.reloads = 0

    def reload(self) -> bool:
        """Load the files again; on failure keep serving the old certificate (an
        operator's half-copied renewal must not take ingest down) and return False."""
        try:
            context = server_context(self.cert_file, self.key_file)
        except TlsConfigError as e:
            logger.error("TLS certificate reload failed, keeping the previous one",
                         extra={"error": str(e)})
            return False
        self.context = context
        self.reloads += 1
        logger.info("TLS certificate reloaded", extra={"cert_file": str(self.cert_file)})
        return True
