"""The handshake (RTMP 1.0 5.2): plain, and the digest ("complex") scheme 0 and 1."""

from __future__ import annotations

import hashlib
import hmac
import os

import pytest

from ingest.protocol.buffer import Buffer
from ingest.protocol.errors import HandshakeError
from ingest.protocol.handshake import (
    FMS_KEY_DIGEST_LEN,
    FP_KEY_DIGEST_LEN,
    GENUINE_FMS_KEY,
    GENUINE_FP_KEY,
    HANDSHAKE_SIZE,
    DigestScheme,
    ServerHandshake,
    compute_digest,
    digest_offset,
    find_client_digest,
    make_digest_packet,
)

FLASH_VERSION = bytes((0x80, 0x00, 0x07, 0x02))


def run(data: bytes) -> tuple[ServerHandshake, bytes]:
    hs = ServerHandshake()
    buf = Buffer(1 << 20)
    buf.feed(data)
    return hs, hs.step(buf)


def test_plain_handshake_echoes_c1_and_waits_for_c2() -> None:
    c1 = bytes(8) + os.urandom(HANDSHAKE_SIZE - 8)
    hs = ServerHandshake()
    buf = Buffer(1 << 20)
    buf.feed(b"\x03" + c1[:1000])
    assert hs.step(buf) == b""
    buf.feed(c1[1000:])
    out = hs.step(buf)
    assert len(out) == 1 + 2 * HANDSHAKE_SIZE
    assert out[0] == 3
    assert out[1 + HANDSHAKE_SIZE:] == c1
    assert not hs.done
    assert hs.result is not None and not hs.result.complex
    buf.feed(bytes(HANDSHAKE_SIZE - 1))
    assert hs.step(buf) == b"" and not hs.done
    buf.feed(b"\x00")
    hs.step(buf)
    assert hs.done


@pytest.mark.parametrize("scheme", list(DigestScheme))
def test_digest_handshake_is_detected_and_answered_in_kind(scheme: DigestScheme) -> None:
    c1 = make_digest_packet(os.urandom(HANDSHAKE_SIZE), FLASH_VERSION, scheme,
                            GENUINE_FP_KEY[:FP_KEY_DIGEST_LEN])
    found = find_client_digest(c1)
    assert found is not None and found[0] is scheme
    client_digest = found[1]

    hs, out = run(b"\x03" + c1)
    assert hs.result is not None and hs.result.complex and hs.result.scheme is scheme
    s1 = out[1:1 + HANDSHAKE_SIZE]
    s2 = out[1 + HANDSHAKE_SIZE:]
    # What a Flash client verifies: S1's digest (FMS key, same scheme)...
    offset = digest_offset(s1, scheme)
    assert s1[offset:offset + 32] == compute_digest(s1, offset,
                                                    GENUINE_FMS_KEY[:FMS_KEY_DIGEST_LEN])
    assert s1[4:8] != bytes(4)
    # ...and S2 signed with a key derived from its own C1 digest.
    key = hmac.new(GENUINE_FMS_KEY, client_digest, hashlib.sha256).digest()
    assert s2[-32:] == hmac.new(key, s2[:-32], hashlib.sha256).digest()


def test_non_zero_version_without_a_valid_digest_falls_back_to_plain() -> None:
    c1 = bytes(4) + FLASH_VERSION + os.urandom(HANDSHAKE_SIZE - 8)
    hs, out = run(b"\x03" + c1)
    assert hs.result is not None and not hs.result.complex
    assert out[1 + HANDSHAKE_SIZE:] == c1


@pytest.mark.parametrize("version", [0, 6, 8, ord("G")])
def test_other_versions_are_refused_at_once(version: int) -> None:
    with pytest.raises(HandshakeError, match="version"):
        run(bytes((version,)))
