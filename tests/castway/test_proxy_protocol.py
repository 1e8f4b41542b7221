"""The PROXY protocol header reader (haproxy doc/proxy-protocol.txt, v1 section 2.1,
v2 section 2.2): what it returns, what it refuses, and that it never takes a byte of
the protocol that follows."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from castway.proxy_protocol import (
    V2_MAX_PAYLOAD,
    V2_SIGNATURE,
    ProxyHeader,
    ProxyHeaderReader,
    ProxyProtocolError,
)

TLS_CLIENT_HELLO = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"
RTMP_C0C1 = b"\x03" + bytes(1536)


def read(stream: bytes) -> tuple[ProxyHeader, bytes]:
    """Read a header from ``stream`` as the server does (at most ``wanted`` at a time);
    the header and the bytes left for the next protocol."""
    reader = ProxyHeaderReader()
    offset = 0
    while True:
        n = reader.wanted
        assert n > 0
        header = reader.receive_data(stream[offset:offset + n])
        offset += n
        if header is not None:
            return header, stream[offset:]
        if offset >= len(stream):
            raise AssertionError("stream ended inside the header")


def test_v2_ipv4_from_an_nlb() -> None:
    wire = (V2_SIGNATURE + b"\x21\x11\x00\x0c" + bytes([203, 0, 113, 7, 10, 0, 0, 5])
            + (50000).to_bytes(2, "big") + (1936).to_bytes(2, "big"))
    header, rest = read(wire + TLS_CLIENT_HELLO)
    assert header.version == 2
    assert header.source == ("203.0.113.7", 50000)
    assert header.destination == ("10.0.0.5", 1936)
    assert rest == TLS_CLIENT_HELLO


def test_v2_tlvs_after_the_addresses_are_skipped() -> None:
    # An NLB on a VPC endpoint adds a PP2_TYPE_AWS (0xEA) TLV with the endpoint id.
    tlv = b"\xea\x00\x17\x01vpce-08d2bf15fac5001c9"
    body = bytes([203, 0, 113, 7, 10, 0, 0, 5]) + b"\xc3\x50\x07\x90" + tlv
    wire = V2_SIGNATURE + b"\x21\x11" + len(body).to_bytes(2, "big") + body
    header, rest = read(wire + RTMP_C0C1)
    assert header.source == ("203.0.113.7", 50000)
    assert rest == RTMP_C0C1


def test_v2_local_is_a_health_check_with_no_client_address() -> None:
    header, rest = read(V2_SIGNATURE + b"\x20\x00\x00\x00" + RTMP_C0C1)
    assert header.source is None and rest == RTMP_C0C1


def test_v1_tcp4_and_unknown() -> None:
    header, rest = read(b"PROXY TCP4 192.0.2.1 192.0.2.2 56324 1935\r\n" + RTMP_C0C1)
    assert header.version == 1 and header.source == ("192.0.2.1", 56324)
    assert rest == RTMP_C0C1
    header, _ = read(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n" + RTMP_C0C1)
    assert header.source is None


@pytest.mark.parametrize("wire", [
    RTMP_C0C1,                                            # a client without a balancer
    TLS_CLIENT_HELLO,
    b"GET / HTTP/1.1\r\n\r\n",
    b"PROXY TCP4 192.0.2.1 192.0.2.2 56324\r\n",          # a field missing
    b"PROXY TCP4 ::1 192.0.2.2 1 2\r\n",                  # IPv6 in TCP4
    b"PROXY TCP4 192.0.2.1 192.0.2.2 056324 1935\r\n",    # leading zero
    b"PROXY TCP4 192.0.2.1 192.0.2.2 65536 1935\r\n",     # port out of range
    b"PROXY TCP5 192.0.2.1 192.0.2.2 1 2\r\n",
    b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\n",               # bare LF
    b"PROXY " + b"A" * 200,                               # no end in 107 bytes
    V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),       # version 1 in a v2 header
    V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),       # command 2
    V2_SIGNATURE + b"\x21\x41\x00\x0c" + bytes(12),       # family 4
    V2_SIGNATURE + b"\x21\x11\x00\x04" + bytes(4),        # INET block too short
    V2_SIGNATURE + b"\x21\x11" + (V2_MAX_PAYLOAD + 1).to_bytes(2, "big"),
])
def test_invalid_headers_are_refused(wire: bytes) -> None:
    with pytest.raises(ProxyProtocolError):
        read(wire + bytes(2048))


def test_reading_past_the_header_is_refused() -> None:
    reader = ProxyHeaderReader()
    with pytest.raises(ProxyProtocolError, match="read past"):
        reader.receive_data(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n")


addresses4 = st.ip_addresses(v=4).map(str)
addresses6 = st.ip_addresses(v=6).map(str)
ports = st.integers(0, 65535)


@st.composite
def headers(draw: st.DrawFn) -> ProxyHeader:
    version = draw(st.sampled_from([1, 2]))
    addrs = draw(st.sampled_from([addresses4, addresses6]))
    return ProxyHeader(version, (draw(addrs), draw(ports)), (draw(addrs), draw(ports)), 0)


@given(headers(), st.binary(max_size=64))
def test_any_header_round_trips_and_leaves_what_follows(header: ProxyHeader,
                                                       after: bytes) -> None:
    wire = bytes(header)
    got, rest = read(wire + after)
    assert got.source is not None and header.source is not None
    assert ipaddress.ip_address(got.source[0]) == ipaddress.ip_address(header.source[0])
    assert got.source[1] == header.source[1]
    assert got.destination == (str(ipaddress.ip_address(header.destination[0])),  # type: ignore[index]
                               header.destination[1])  # type: ignore[index]
    assert got.length == len(wire) and rest == after


@given(st.binary(max_size=300))
def test_arbitrary_bytes_give_a_header_or_a_refusal_and_never_overread(data: bytes) -> None:
    reader = ProxyHeaderReader()
    offset = 0
    try:
        while reader.wanted and offset < len(data):
            n = reader.wanted
            chunk = data[offset:offset + n]
            offset += len(chunk)
            header = reader.receive_data(chunk)
            if header is not None:
                assert header.length == offset  # exactly the header, nothing more
                return
    except ProxyProtocolError:
        return


@given(headers(), st.lists(st.integers(1, 7), min_size=1, max_size=60))
def test_the_header_split_anywhere_reads_the_same(header: ProxyHeader,
                                                  cuts: list[int]) -> None:
    wire = bytes(header) + RTMP_C0C1
    reader = ProxyHeaderReader()
    offset, got = 0, None
    for cut in itertools.cycle(cuts):
        n = min(cut, reader.wanted)
        got = reader.receive_data(wire[offset:offset + n])
        offset += n
        if got is not None:
            break
    assert got is not None and wire[offset:] == RTMP_C0C1
