"""A typed ctypes binding of the part of libsrt 1.5 a listener needs (srt.h).

No Python binding of libsrt is maintained well enough to depend on, and the C API a
listener uses is small: create, set options, bind, listen (with an accept hook that can
reject a caller by streamid), accept, receive, statistics, close. Every call here blocks
or may block: callers run them on threads of their own, never on the event loop.

Debian ships the library as ``libsrt1.5-gnutls`` or ``libsrt1.5-openssl``
(``libsrt-gnutls.so.1.5`` / ``libsrt-openssl.so.1.5``); either works.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

_NAMES = ("libsrt-gnutls.so.1.5", "libsrt-openssl.so.1.5", "libsrt.so.1.5")
SRT_ERROR = -1
SRT_INVALID_SOCK = -1
#: A live-mode SRT payload is at most this (srt.h SRT_LIVE_MAX_PLSIZE).
LIVE_MAX_PAYLOAD = 1456


class SockOpt(IntEnum):
    """The ``SRT_SOCKOPT`` values used here (srt.h)."""

    RCVSYN = 2
    RCVTIMEO = 14
    LATENCY = 23
    PASSPHRASE = 26
    PBKEYLEN = 27
    RCVLATENCY = 43
    STREAMID = 46
    TRANSTYPE = 50


class ErrorCode(IntEnum):
    """``SRT_ERRNO`` values castway tells apart (srt.h)."""

    ECONNLOST = 2001
    ENOCONN = 2002
    EINVSOCK = 5004
    ETIMEOUT = 6003
    EASYNCRCV = 6002


class SrtError(OSError):
    def __init__(self, call: str, code: int, message: str) -> None:
        super().__init__(f"{call}: {message} ({code})")
        self.code = code


class LibSrtMissing(RuntimeError):  # noqa: N818 -- it names what is missing
    pass


class _Stats(ctypes.Structure):
    """The leading fields of ``struct CBytePerfMon`` (srt.h of libsrt 1.4/1.5, where
    the byte-loss counters are always in); padded for the fields after them."""

    _fields_ = [
        ("msTimeStamp", ctypes.c_int64), ("pktSentTotal", ctypes.c_int64),
        ("pktRecvTotal", ctypes.c_int64), ("pktSndLossTotal", ctypes.c_int),
        ("pktRcvLossTotal", ctypes.c_int), ("pktRetransTotal", ctypes.c_int),
        ("pktSentACKTotal", ctypes.c_int), ("pktRecvACKTotal", ctypes.c_int),
        ("pktSentNAKTotal", ctypes.c_int), ("pktRecvNAKTotal", ctypes.c_int),
        ("usSndDurationTotal", ctypes.c_int64), ("pktSndDropTotal", ctypes.c_int),
        ("pktRcvDropTotal", ctypes.c_int), ("pktRcvUndecryptTotal", ctypes.c_int),
        ("byteSentTotal", ctypes.c_uint64), ("byteRecvTotal", ctypes.c_uint64),
        ("byteRcvLossTotal", ctypes.c_uint64),
        ("byteRetransTotal", ctypes.c_uint64), ("byteSndDropTotal", ctypes.c_uint64),
        ("byteRcvDropTotal", ctypes.c_uint64), ("byteRcvUndecryptTotal", ctypes.c_uint64),
        ("pktSent", ctypes.c_int64), ("pktRecv", ctypes.c_int64),
        ("pktSndLoss", ctypes.c_int), ("pktRcvLoss", ctypes.c_int),
        ("pktRetrans", ctypes.c_int), ("pktRcvRetrans", ctypes.c_int),
        ("pktSentACK", ctypes.c_int), ("pktRecvACK", ctypes.c_int),
        ("pktSentNAK", ctypes.c_int), ("pktRecvNAK", ctypes.c_int),
        ("mbpsSendRate", ctypes.c_double), ("mbpsRecvRate", ctypes.c_double),
        ("usSndDuration", ctypes.c_int64), ("pktReorderDistance", ctypes.c_int),
        ("pktRcvAvgBelatedTime", ctypes.c_double), ("pktRcvBelated", ctypes.c_int64),
        ("pktSndDrop", ctypes.c_int), ("pktRcvDrop", ctypes.c_int),
        ("pktRcvUndecrypt", ctypes.c_int), ("byteSent", ctypes.c_uint64),
        ("byteRecv", ctypes.c_uint64), ("byteRcvLoss", ctypes.c_uint64),
        ("byteRetrans", ctypes.c_uint64),
        ("byteSndDrop", ctypes.c_uint64), ("byteRcvDrop", ctypes.c_uint64),
        ("byteRcvUndecrypt", ctypes.c_uint64),
        ("usPktSndPeriod", ctypes.c_double), ("pktFlowWindow", ctypes.c_int),
        ("pktCongestionWindow", ctypes.c_int), ("pktFlightSize", ctypes.c_int),
        ("msRTT", ctypes.c_double), ("mbpsBandwidth", ctypes.c_double),
        ("_padding", ctypes.c_char * 1024),
    ]


@dataclass(frozen=True, slots=True)
class Stats:
    """A receiver's view of one SRT connection (srt_bstats, totals since it opened)."""

    rtt_ms: float
    bandwidth_mbps: float  # link capacity estimate
    recv_rate_mbps: float
    packets_received: int
    packets_lost: int  # sequence gaps seen (most are then recovered)
    packets_retransmitted: int  # retransmitted packets received
    packets_dropped: int  # too late to play: lost for good
    bytes_received: int


# int (*)(void* opaque, SRTSOCKET ns, int hsversion, const struct sockaddr* peer,
#         const char* streamid)
_LISTEN_HOOK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int,
                                ctypes.c_void_p, ctypes.c_char_p)

#: (new socket, peer "host:port", streamid) -> a rejection code, or None to let it in.
ListenHook = Callable[[int, str, str], int | None]

_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _load() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        found = ctypes.util.find_library("srt-gnutls") or ctypes.util.find_library("srt")
        for name in (*_NAMES, *([found] if found else [])):
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        else:
            raise LibSrtMissing("libsrt not found: install libsrt1.5-gnutls (or -openssl)")
        c_int, c_void_p, c_char_p = ctypes.c_int, ctypes.c_void_p, ctypes.c_char_p
        for fname, argtypes in {
            "srt_startup": [], "srt_cleanup": [],
            "srt_create_socket": [],
            "srt_bind": [c_int, c_void_p, c_int],
            "srt_listen": [c_int, c_int],
            "srt_accept": [c_int, c_void_p, ctypes.POINTER(c_int)],
            "srt_close": [c_int],
            "srt_recvmsg": [c_int, c_char_p, c_int],
            "srt_setsockflag": [c_int, c_int, c_void_p, c_int],
            "srt_getsockflag": [c_int, c_int, c_void_p, ctypes.POINTER(c_int)],
            "srt_getsockname": [c_int, c_void_p, ctypes.POINTER(c_int)],
            "srt_getlasterror": [ctypes.POINTER(c_int)],
            "srt_bstats": [c_int, ctypes.POINTER(_Stats), c_int],
            "srt_listen_callback": [c_int, _LISTEN_HOOK, c_void_p],
            "srt_setrejectreason": [c_int, c_int],
            "srt_getrejectreason": [c_int],
        }.items():
            fn = getattr(lib, fname)
            fn.argtypes = argtypes
            fn.restype = c_int
        lib.srt_getlasterror_str.argtypes = []
        lib.srt_getlasterror_str.restype = c_char_p
        # Warnings go to stderr otherwise (one per empty read); errors still do.
        lib.srt_setloglevel.argtypes = [c_int]
        lib.srt_setloglevel.restype = None
        lib.srt_setloglevel(3)  # LOG_ERR
        if lib.srt_startup() < 0:
            raise LibSrtMissing("srt_startup failed")
        _lib = lib
        return lib


def available() -> bool:
    """Whether libsrt can be loaded here."""
    try:
        _load()
    except LibSrtMissing:
        return False
    return True


def _check(call: str, result: int) -> int:
    if result == SRT_ERROR:
        lib = _load()
        code = int(lib.srt_getlasterror(None))
        message = (lib.srt_getlasterror_str() or b"").decode("utf-8", "replace")
        raise SrtError(call, code, message)
    return result


def _sockaddr(host: str, port: int) -> bytes:
    """A ``struct sockaddr_in`` (IPv4: what the listener binds)."""
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + \
        socket.inet_aton(socket.gethostbyname(host)) + bytes(8)


def _peer(addr: int | None) -> str:
    if not addr:
        return "?"
    raw = ctypes.string_at(addr, 16)
    family = struct.unpack("=H", raw[:2])[0]
    if family != socket.AF_INET:
        return "?"
    return f"{socket.inet_ntoa(raw[4:8])}:{struct.unpack('!H', raw[2:4])[0]}"


class Socket:
    """One SRT socket (a listener, or a caller's accepted connection)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._closed = False
        self._hook: object = None  # the C callback, kept alive as long as the socket

    @classmethod
    def create(cls) -> Socket:
        return cls(_check("srt_create_socket", _load().srt_create_socket()))

    def set_int(self, opt: SockOpt, value: int) -> None:
        v = ctypes.c_int(value)
        _check(f"srt_setsockflag({opt.name})",
               _load().srt_setsockflag(self.fd, opt, ctypes.byref(v), ctypes.sizeof(v)))

    def set_bool(self, opt: SockOpt, value: bool) -> None:
        v = ctypes.c_bool(value)
        _check(f"srt_setsockflag({opt.name})",
               _load().srt_setsockflag(self.fd, opt, ctypes.byref(v), ctypes.sizeof(v)))

    def set_str(self, opt: SockOpt, value: str) -> None:
        raw = value.encode()
        buf = ctypes.create_string_buffer(raw, len(raw))
        _check(f"srt_setsockflag({opt.name})",
               _load().srt_setsockflag(self.fd, opt, buf, len(raw)))

    def get_str(self, opt: SockOpt) -> str:
        buf = ctypes.create_string_buffer(1024)
        size = ctypes.c_int(len(buf))
        _check(f"srt_getsockflag({opt.name})",
               _load().srt_getsockflag(self.fd, opt, buf, ctypes.byref(size)))
        return buf.raw[:size.value].decode("utf-8", "replace")

    def bind(self, host: str, port: int) -> None:
        addr = _sockaddr(host, port)
        _check("srt_bind", _load().srt_bind(self.fd, addr, len(addr)))

    def port(self) -> int:
        buf = ctypes.create_string_buffer(128)
        size = ctypes.c_int(len(buf))
        _check("srt_getsockname", _load().srt_getsockname(self.fd, buf, ctypes.byref(size)))
        return int(struct.unpack("!H", buf.raw[2:4])[0])

    def listen(self, backlog: int, hook: ListenHook | None = None) -> None:
        """Listen; ``hook`` decides about each caller during its handshake (it runs on a
        libsrt thread: keep it short)."""
        lib = _load()
        if hook is not None:
            def c_hook(_opaque: int | None, ns: int, _hsversion: int, peer: int | None,
                       streamid: bytes | None) -> int:
                try:
                    code = hook(ns, _peer(peer), (streamid or b"").decode("utf-8", "replace"))
                except Exception:  # an exception must never unwind into libsrt
                    code = 1500
                if code is None:
                    return 0
                lib.srt_setrejectreason(ns, code)
                return -1

            self._hook = _LISTEN_HOOK(c_hook)
            _check("srt_listen_callback", lib.srt_listen_callback(self.fd, self._hook, None))
        _check("srt_listen", lib.srt_listen(self.fd, backlog))

    def accept(self) -> tuple[Socket, str]:
        """Block until a caller is connected (its hook said yes)."""
        buf = ctypes.create_string_buffer(128)
        size = ctypes.c_int(len(buf))
        fd = _check("srt_accept", _load().srt_accept(self.fd, buf, ctypes.byref(size)))
        return Socket(fd), _peer(ctypes.addressof(buf))

    def recv(self, buf: ctypes.Array[ctypes.c_char]) -> int:
        """One message into ``buf`` (at most a live payload, 1456 bytes); 0 after
        SRTO_RCVTIMEO with nothing; :class:`SrtError` once the connection is gone."""
        n = _load().srt_recvmsg(self.fd, buf, len(buf))
        if n == SRT_ERROR:
            code = int(_load().srt_getlasterror(None))
            if code in (ErrorCode.ETIMEOUT, ErrorCode.EASYNCRCV):
                return 0
            _check("srt_recvmsg", n)
        return int(n)

    def stats(self) -> Stats:
        s = _Stats()
        _check("srt_bstats", _load().srt_bstats(self.fd, ctypes.byref(s), 0))
        return Stats(rtt_ms=float(s.msRTT), bandwidth_mbps=float(s.mbpsBandwidth),
                     recv_rate_mbps=float(s.mbpsRecvRate),
                     packets_received=int(s.pktRecvTotal),
                     packets_lost=int(s.pktRcvLossTotal),
                     packets_retransmitted=int(s.pktRcvRetrans),
                     packets_dropped=int(s.pktRcvDropTotal),
                     bytes_received=int(s.byteRecvTotal))

    def close(self) -> None:
        """Close (idempotent; any thread: a blocked recv/accept returns an error)."""
        if not self._closed:
            self._closed = True
            _load().srt_close(self.fd)
