"""The PROXY protocol, versions 1 and 2, receiving side: a sans-IO reader of the header a
load balancer (AWS NLB, haproxy) puts before the client's first byte, so limits keyed by
address see the client rather than the balancer.

Spec: haproxy's ``doc/proxy-protocol.txt`` (2020/03/05). Section 2.1 (v1, text), 2.2
(v2, binary). A receiver configured for the protocol must refuse a connection without a
valid header (section 2, "the receiver MUST ... close the connection"), and must never
guess: there is no fallback to a bare connection here.

The reader never consumes a byte past the header: :attr:`ProxyHeaderReader.wanted` says
how many bytes the caller may read next without over-reading, because what follows the
header (a TLS ClientHello, an RTMP C0) belongs to another parser that has not started.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import IntEnum

#: Section 2.2: the 12-byte v2 signature.
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
#: Section 2.1: a v1 line starts so, and is at most 107 bytes with its CRLF.
V1_PREFIX = b"PROXY "
V1_MAX_LINE = 107
#: v2 fixed part: signature, ver/cmd, family/transport, 2-byte length.
V2_FIXED = 16
#: Largest v2 address block + TLVs accepted. The spec allows 65535; an NLB sends the
#: addresses and a few TLVs (VPC endpoint id): 1 KiB is plenty and bounds pre-auth memory.
V2_MAX_PAYLOAD = 1024


class ProxyProtocolError(Exception):
    """The bytes are not a valid PROXY header: refuse the connection."""


class Command(IntEnum):
    """v2 command nibble (section 2.2, 13th byte, low 4 bits)."""

    LOCAL = 0x0  # health check from the proxy itself: use the real connection's address
    PROXY = 0x1


class Family(IntEnum):
    """v2 address family (section 2.2, 14th byte, high 4 bits)."""

    UNSPEC = 0x0
    INET = 0x1
    INET6 = 0x2
    UNIX = 0x3


#: Address block length per family for a STREAM transport (section 2.2).
_ADDRESS_LENGTH = {Family.UNSPEC: 0, Family.INET: 12, Family.INET6: 36, Family.UNIX: 216}


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """What the header says. ``source`` is None when the proxy speaks for itself (v2
    LOCAL, v1 UNKNOWN, or a family without IP addresses): use the socket's peer."""

    version: int
    source: tuple[str, int] | None
    destination: tuple[str, int] | None
    length: int  # bytes the header took on the wire

    def __bytes__(self) -> bytes:
        """The v2 (or v1) encoding of this header: what a proxy would send. For tests
        and for a relay that must pass the client's address on."""
        if self.version == 1:
            if self.source is None or self.destination is None:
                return b"PROXY UNKNOWN\r\n"
            proto = "TCP6" if ":" in self.source[0] else "TCP4"
            return (f"PROXY {proto} {self.source[0]} {self.destination[0]} "
                    f"{self.source[1]} {self.destination[1]}\r\n").encode("ascii")
        if self.source is None or self.destination is None:
            return V2_SIGNATURE + bytes([0x20 | Command.LOCAL, 0x00]) + b"\x00\x00"
        src = ipaddress.ip_address(self.source[0])
        dst = ipaddress.ip_address(self.destination[0])
        if src.version != dst.version:
            raise ValueError("source and destination must be of one address family")
        family = Family.INET if src.version == 4 else Family.INET6
        body = (src.packed + dst.packed + self.source[1].to_bytes(2, "big")
                + self.destination[1].to_bytes(2, "big"))
        return (V2_SIGNATURE + bytes([0x20 | Command.PROXY, (family << 4) | 0x1])
                + len(body).to_bytes(2, "big") + body)


class ProxyHeaderReader:
    """Feed bytes with :meth:`receive_data` until it returns the header; read at most
    :attr:`wanted` bytes at a time so nothing after the header is taken."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._header: ProxyHeader | None = None

    @property
    def done(self) -> bool:
        return self._header is not None

    @property
    def wanted(self) -> int:
        """Bytes that may be read next without reading past the header (0: done)."""
        if self._header is not None:
            return 0
        n = len(self._buf)
        if n < len(V1_PREFIX):
            # Both signatures start differently at byte 0, and "PROXY " is shorter than
            # the v2 signature: six bytes are always safe to read.
            return len(V1_PREFIX) - n
        if self._buf.startswith(V1_PREFIX):
            return 1  # a text line: its end is known only when seen
        if n < V2_FIXED:
            return V2_FIXED - n
        return V2_FIXED + int.from_bytes(self._buf[14:16], "big") - n

    def receive_data(self, data: bytes) -> ProxyHeader | None:
        """The header once complete, else None. Raises :class:`ProxyProtocolError` as
        soon as the bytes cannot begin a valid header, and on more bytes than
        :attr:`wanted` (a caller bug that would swallow the next protocol's bytes)."""
        if self._header is not None:
            raise ProxyProtocolError("the header is already complete")
        if len(data) > self.wanted:
            raise ProxyProtocolError("read past the PROXY header")
        self._buf += data
        buf = bytes(self._buf)
        n = len(buf)
        if n <= len(V1_PREFIX):
            if not (V1_PREFIX.startswith(buf) or V2_SIGNATURE.startswith(buf)):
                raise ProxyProtocolError("no PROXY protocol signature")
            return None
        if buf.startswith(V1_PREFIX):
            return self._v1(buf)
        return self._v2(buf)

    def _v1(self, buf: bytes) -> ProxyHeader | None:
        if not buf.endswith(b"\r\n"):
            if len(buf) >= V1_MAX_LINE:
                raise ProxyProtocolError("PROXY v1 line longer than 107 bytes")
            if b"\n" in buf or b"\r" in buf[:-1]:
                raise ProxyProtocolError("PROXY v1 line broken by a stray CR or LF")
            return None
        try:
            line = buf[:-2].decode("ascii")
        except UnicodeDecodeError:
            raise ProxyProtocolError("PROXY v1 line is not ASCII") from None
        parts = line.split(" ")
        if parts[1:2] == ["UNKNOWN"]:
            self._header = ProxyHeader(1, None, None, len(buf))
            return self._header
        if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
            raise ProxyProtocolError(f"malformed PROXY v1 line: {line[:64]!r}")
        version = 4 if parts[1] == "TCP4" else 6
        src = _address(parts[2], version)
        dst = _address(parts[3], version)
        self._header = ProxyHeader(1, (src, _port(parts[4])), (dst, _port(parts[5])),
                                   len(buf))
        return self._header

    def _v2(self, buf: bytes) -> ProxyHeader | None:
        signature = buf[:len(V2_SIGNATURE)]
        if not V2_SIGNATURE.startswith(signature):
            raise ProxyProtocolError("no PROXY protocol signature")
        if len(buf) > 12 and buf[12] >> 4 != 0x2:
            raise ProxyProtocolError(f"PROXY v2 version {buf[12] >> 4} unknown")
        if len(buf) > 12 and buf[12] & 0x0F not in (Command.LOCAL, Command.PROXY):
            raise ProxyProtocolError(f"PROXY v2 command {buf[12] & 0x0F} unknown")
        if len(buf) > 13 and (buf[13] >> 4 > Family.UNIX or buf[13] & 0x0F > 0x2):
            raise ProxyProtocolError(f"PROXY v2 family/transport {buf[13]:#04x} unknown")
        if len(buf) < V2_FIXED:
            return None
        length = int.from_bytes(buf[14:16], "big")
        if length > V2_MAX_PAYLOAD:
            raise ProxyProtocolError(f"PROXY v2 header of {length} bytes is over the "
                                     f"{V2_MAX_PAYLOAD}-byte limit")
        if len(buf) < V2_FIXED + length:
            return None
        command = Command(buf[12] & 0x0F)
        family = Family(buf[13] >> 4)
        if length < _ADDRESS_LENGTH[family]:
            raise ProxyProtocolError(f"PROXY v2 address block of {length} bytes is too "
                                     f"short for {family.name}")
        block = buf[V2_FIXED:]
        source = destination = None
        # LOCAL: the proxy's own connection (a health check); UNSPEC/UNIX carry no IP.
        # Section 2.2: the receiver then uses the real connection's addresses.
        if command is Command.PROXY and family in (Family.INET, Family.INET6):
            size = 4 if family is Family.INET else 16
            src = ipaddress.ip_address(block[:size])
            dst = ipaddress.ip_address(block[size:2 * size])
            ports = block[2 * size:2 * size + 4]
            source = (str(src), int.from_bytes(ports[:2], "big"))
            destination = (str(dst), int.from_bytes(ports[2:], "big"))
        self._header = ProxyHeader(2, source, destination, V2_FIXED + length)
        return self._header


def _address(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1 address {text[:48]!r} invalid") from None
    if address.version != version:
        raise ProxyProtocolError(f"PROXY v1 address {text!r} is not IPv{version}")
    return str(address)


def _port(text: str) -> int:
    # Section 2.1: decimal, no leading zero, 0..65535.
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0") \
            or int(text) > 65535:
        raise ProxyProtocolError(f"PROXY v1 port {text[:8]!r} invalid")
    return int(text)
