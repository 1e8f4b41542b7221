"""The RTMP handshake, server side (RTMP 1.0 section 5.2), plain and "complex" (digest).

Plain: C0 (version 3) + C1 (1536 bytes) in, S0 + S1 + S2 out (S2 echoes C1), then C2 in.

Complex (the digest handshake Flash Player and some librtmp builds send): C1 carries a
non-zero version field and an HMAC-SHA256 digest, keyed with the first 30 bytes of the
"Genuine Adobe Flash Player 001" key, at an offset given by scheme 0 (digest block
first, offset bytes at 8..11) or scheme 1 (key block first, offset bytes at 772..775).
When one validates we answer in kind: S1 carries our digest (keyed with the first 36
bytes of the FMS key) in the same scheme, and S2 is random bytes signed with
HMAC(HMAC(full FMS key, C1 digest), S2 random). Otherwise we fall back to plain.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

from ingest.protocol.buffer import Buffer, NeedMoreData
from ingest.protocol.errors import HandshakeError

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536
DIGEST_SIZE = 32

_KEY_TAIL = bytes.fromhex(
    "f0eec24a8068bee82e00d0d1029e7e576eec5d2d29806fab93b8e636cfeb31ae")
GENUINE_FP_KEY = b"Genuine Adobe Flash Player 001" + _KEY_TAIL  # 30 + 32 bytes
GENUINE_FMS_KEY = b"Genuine Adobe Flash Media Server 001" + _KEY_TAIL  # 36 + 32 bytes
FP_KEY_DIGEST_LEN = 30
FMS_KEY_DIGEST_LEN = 36
#: Version field of our S1 in a complex handshake (any non-zero value; FMS 3.5 style).
SERVER_VERSION = bytes((0x04, 0x05, 0x00, 0x01))


class DigestScheme(IntEnum):
    """Where C1/S1 put the digest block (the well-known Flash handshake layouts)."""

    DIGEST_FIRST = 0  # digest block at 8..771, its offset bytes at 8..11
    KEY_FIRST = 1  # digest block at 772..1535, its offset bytes at 772..775


def digest_offset(packet: bytes, scheme: DigestScheme) -> int:
    """Byte offset of the 32-byte digest within a 1536-byte C1/S1."""
    base = 8 if scheme is DigestScheme.DIGEST_FIRST else 772
    return sum(packet[base:base + 4]) % 728 + base + 4


def _hmac(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def compute_digest(packet: bytes, offset: int, key: bytes) -> bytes:
    """HMAC-SHA256 over the packet with its digest bytes left out."""
    return _hmac(key, packet[:offset] + packet[offset + DIGEST_SIZE:])


def find_client_digest(c1: bytes) -> tuple[DigestScheme, bytes] | None:
    """The scheme and digest of a digest-handshake C1, or None for a plain one."""
    if c1[4:8] == b"\x00\x00\x00\x00":
        return None
    for scheme in (DigestScheme.DIGEST_FIRST, DigestScheme.KEY_FIRST):
        offset = digest_offset(c1, scheme)
        expected = compute_digest(c1, offset, GENUINE_FP_KEY[:FP_KEY_DIGEST_LEN])
        if hmac.compare_digest(expected, c1[offset:offset + DIGEST_SIZE]):
            return scheme, c1[offset:offset + DIGEST_SIZE]
    return None


def make_digest_packet(random: bytes, version: bytes, scheme: DigestScheme,
                       key: bytes) -> bytes:
    """A 1536-byte C1/S1 (time 0) with its digest placed and computed per ``scheme``."""
    packet = bytearray(b"\x00\x00\x00\x00" + version + random[:HANDSHAKE_SIZE - 8])
    offset = digest_offset(bytes(packet), scheme)
    packet[offset:offset + DIGEST_SIZE] = compute_digest(bytes(packet), offset, key)
    return bytes(packet)


def sign_response(peer_digest: bytes, random: bytes, key: bytes) -> bytes:
    """S2 (or C2) of a digest handshake: 1504 random bytes + their signature."""
    body = random[:HANDSHAKE_SIZE - DIGEST_SIZE]
    return body + _hmac(_hmac(key, peer_digest), body)


@dataclass(frozen=True, slots=True)
class HandshakeResult:
    complex: bool
    scheme: DigestScheme | None


class ServerHandshake:
    """Server side of the handshake over a shared :class:`Buffer`.

    ``step()`` consumes what it can and returns bytes to send (S0+S1+S2 after C0+C1);
    ``done`` turns true once C2 has been consumed.
    """

    def __init__(self, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._random = random_bytes
        self._have_c1 = False
        self.done = False
        self.result: HandshakeResult | None = None

    def step(self, buf: Buffer) -> bytes:
        out = b""
        try:
            if not self._have_c1:
                c0 = buf.consume(1)
                if c0[0] != RTMP_VERSION:
                    # 6 and 8 are RTMPE (encrypted); anything else is not RTMP at all.
                    raise HandshakeError(f"unsupported RTMP version {c0[0]}")
                c1 = buf.consume(HANDSHAKE_SIZE)
                buf.commit()
                self._have_c1 = True
                out = self._reply(c1)
            if not self.done:
                buf.consume(HANDSHAKE_SIZE)  # C2: not verified, as most servers do
                buf.commit()
                self.done = True
        except NeedMoreData:
            buf.rollback()
        return out

    def _reply(self, c1: bytes) -> bytes:
        found = find_client_digest(c1)
        if found is None:
            self.result = HandshakeResult(complex=False, scheme=None)
            s1 = b"\x00\x00\x00\x00\x00\x00\x00\x00" + self._random(HANDSHAKE_SIZE - 8)
            return bytes((RTMP_VERSION,)) + s1 + c1
        scheme, client_digest = found
        self.result = HandshakeResult(complex=True, scheme=scheme)
        s1 = make_digest_packet(self._random(HANDSHAKE_SIZE), SERVER_VERSION, scheme,
                                GENUINE_FMS_KEY[:FMS_KEY_DIGEST_LEN])
        s2 = sign_response(client_digest, self._random(HANDSHAKE_SIZE), GENUINE_FMS_KEY)
        return bytes((RTMP_VERSION,)) + s1 + s2


class ClientHandshake:
    """Client side of the plain handshake (RTMP 1.0 section 5.2.5): C0 + C1 out
    (:meth:`start`), S0 + S1 + S2 in, C2 (the echo of S1) out. The plain form is what
    every server takes from a publisher; the digest form is only needed by servers that
    serve Flash Player H.264 playback, not publishing."""

    def __init__(self, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._random = random_bytes
        self._have_s1 = False
        self.done = False

    def start(self) -> bytes:
        """C0 + C1: version 3, time 0, zero, random bytes."""
        return bytes((RTMP_VERSION,)) + b"\x00" * 8 + self._random(HANDSHAKE_SIZE - 8)

    def step(self, buf: Buffer) -> bytes:
        """Consume what it can of S0 + S1 + S2; returns C2 once S1 is in."""
        out = b""
        try:
            if not self._have_s1:
                s0 = buf.consume(1)
                if s0[0] != RTMP_VERSION:
                    raise HandshakeError(f"server answered RTMP version {s0[0]}")
                s1 = buf.consume(HANDSHAKE_SIZE)
                buf.commit()
                self._have_s1 = True
                out = s1
            if not self.done:
                buf.consume(HANDSHAKE_SIZE)  # S2: not verified, as clients do
                buf.commit()
                self.done = True
        except NeedMoreData:
            buf.rollback()
        return out
