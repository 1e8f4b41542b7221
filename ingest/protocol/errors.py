"""The RTMP error hierarchy. Everything the protocol core raises on peer input is an
:class:`RtmpError`; callers catch that one type and close the connection."""

from __future__ import annotations


class RtmpError(Exception):
    """Base of every error the RTMP protocol core raises."""


class ProtocolError(RtmpError):
    """The peer broke the protocol (malformed bytes, a message in the wrong state)."""


class HandshakeError(ProtocolError):
    """The handshake (RTMP 1.0 section 5.2) failed: bad version or a short/odd packet."""


class LimitExceeded(ProtocolError):
    """The peer asked for more than a named DoS limit (see :mod:`ingest.protocol.limits`)."""


class AmfError(ProtocolError):
    """Malformed or unsupported AMF data (AMF0 spec; AMF3 is rejected)."""


class FlvError(ProtocolError):
    """A malformed FLV audio/video tag body (FLV spec v10.1 annex E, E-RTMP)."""


class LocalProtocolError(RtmpError):
    """The local application used the session API out of order (a bug on our side)."""
