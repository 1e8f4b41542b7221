"""WHIP ingest (RFC 9725): a WebRTC publisher posts its SDP offer with its stream key as
a bearer token; castway answers, and the H.264 and Opus frames it receives go down the
same publish path as RTMP's and SRT's (a :class:`PublishHandler`, in castway the
BroadcastManager: key check, channel claim, one publisher per channel, reconnect grace).

WebRTC is aiortc's (ICE, DTLS, SRTP, RTP, jitter buffer, depacketizers), on the event
loop. castway takes the frames aiortc has reassembled *before* its decoder: H.264 goes on
as it came, without a decode or a re-encode (media.py turns frames into MediaPackets).
libwebrtc encoders (browsers, OBS's WHIP output) send a keyframe only when asked, so a
picture loss indication is sent every segment's target duration: segments can start on
time. A VP8-only publisher is encoded once as H.264 at ingest (vp8.py). Refused up front,
with the reason: an offer with neither H.264 (packetization mode 1) nor VP8, without Opus
when it has audio, and simulcast layers (one video track is taken).

The HTTP side (routes.py) is mounted on the HTTP port of the process that runs the ingest
node: ``castway serve``'s platform, ``castway ingest``'s health listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import queue
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from castway.media import MediaPacket
from castway.settings import Settings
from ingest.protocol.commands import StatusCode
from ingest.publish import PublishHandler, PublishRequest, PublishSession, Rejection
from ingest.whip.media import WebRtcToMedia
from ingest.whip.vp8 import EncodedUnit, Vp8ToH264

logger = logging.getLogger(__name__)

#: Frames waiting for the publish path; past this a publisher is cut (it cannot be slowed:
#: WebRTC has no backpressure castway could apply).
QUEUE_LIMIT = 4096
_H264_MODE_1 = re.compile(r"packetization-mode=1")


@dataclass(frozen=True, slots=True)
class WhipAnswer:
    session_id: str
    sdp: str
    etag: str


@dataclass(frozen=True, slots=True)
class WhipRefusal:
    """An HTTP status and a message the publisher (and its user) can act on."""

    status: int
    detail: str
    retry_after_s: int | None = None


def refusal_for(rejection: Rejection) -> WhipRefusal:
    """The publish path's refusal as WHIP's HTTP answer."""
    if rejection == Rejection.already_live():
        return WhipRefusal(409, rejection.description)
    if rejection.code == StatusCode.PUBLISH_DENIED.value:
        if rejection.description.startswith("Node unavailable"):
            return WhipRefusal(503, rejection.description, retry_after_s=5)
        return WhipRefusal(403, rejection.description)  # the platform's callback said no
    return WhipRefusal(401, rejection.description)  # unknown key, another channel's key


def offer_problem(offer: str) -> str | None:
    """Why castway cannot take this SDP offer, or None. Checked before anything is set
    up, so a refusal costs nothing."""
    sections = re.split(r"\r?\n(?=m=)", offer)
    kinds = [s.split(" ", 1)[0].removeprefix("m=") for s in sections[1:]]
    if not kinds:
        return "the offer has no media section"
    videos = [s for s in sections[1:] if s.startswith("m=video")]
    audios = [s for s in sections[1:] if s.startswith("m=audio")]
    if not videos:
        return "the offer has no video: castway takes H.264 video with Opus audio"
    if len(videos) > 1 or len(audios) > 1:
        return "the offer has several video or audio tracks: castway takes one of each"
    video = videos[0]
    if re.search(r"^a=(simulcast|rid):", video, re.M):
        return ("the offer has simulcast layers: castway makes the ladder itself; "
                "turn simulcast off in the encoder")
    h264 = re.findall(r"^a=rtpmap:(\d+) H264/90000", video, re.M | re.I)
    vp8 = re.search(r"^a=rtpmap:\d+ VP8/90000", video, re.M | re.I)
    if not any(_H264_MODE_1.search(_fmtp(video, pt)) for pt in h264) and not vp8:
        return ("no usable video codec: castway takes H.264 (packetization mode 1), or "
                "VP8 (encoded to H.264 at ingest), over WHIP; VP9 and AV1 are not taken")
    if audios and not re.search(r"^a=rtpmap:\d+ opus/48000", audios[0], re.M | re.I):
        return "no usable audio codec: castway takes Opus over WHIP"
    return None


def _fmtp(section: str, payload_type: str) -> str:
    match = re.search(rf"^a=fmtp:{payload_type} (.*)$", section, re.M)
    return match.group(1) if match else ""


class _FrameTap:
    """Stands in for an aiortc receiver's decoder queue: reassembled frames go to
    ``on_frame`` on the event loop instead of to a decoder; the decoder thread aiortc
    starts anyway waits here for its end-of-stream and exits."""

    def __init__(self, on_frame: Callable[[Any, Any], None]) -> None:
        self._on_frame = on_frame
        self._end: queue.Queue[None] = queue.Queue()

    def put(self, item: tuple[Any, Any] | None) -> None:
        if item is None:
            self._end.put(None)
        else:
            self._on_frame(*item)

    def get(self) -> None:
        return self._end.get()


@dataclass(eq=False)
class _Session:
    id: str
    connection_id: str
    channel: str
    peer: str
    pc: Any  # aiortc.RTCPeerConnection
    publication: PublishSession
    converter: WebRtcToMedia = field(default_factory=WebRtcToMedia)
    packets: asyncio.Queue[MediaPacket | None] = field(
        default_factory=lambda: asyncio.Queue(QUEUE_LIMIT))
    last_frame_s: float = field(default_factory=time.monotonic)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    vp8: Vp8ToH264 | None = None  # a VP8 publisher's encoder
    closed: bool = False
    input_done: bool = False  # the end is queued: nothing more goes to the publish path
    close_reason: str = ""

    @property
    def log_fields(self) -> dict[str, str]:
        return {"session": self.id, "connection_id": self.connection_id,
                "channel": self.channel, "peer": self.peer}


def gather_candidates_on(addresses: list[str]) -> None:
    """Make aiortc's ICE gather host candidates on ``addresses`` only. aioice has no
    option for it and gathers on every interface but loopback; a node with one public
    address, or a test on loopback, names its addresses (CASTWAY_WHIP_ICE_ADDRESSES).
    Process-wide, as aioice's own lookup is."""
    import aioice.ice

    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


class WhipServer:
    """WHIP sessions of one ingest node."""

    def __init__(self, settings: Settings, handler: PublishHandler) -> None:
        self.settings = settings
        self.handler = handler
        addresses = [a.strip() for a in settings.whip_ice_addresses.split(",") if a.strip()]
        if addresses:
            gather_candidates_on(addresses)
        self.stopping = False
        self._sessions: dict[str, _Session] = {}
        self._by_connection: dict[str, _Session] = {}
        self._per_ip: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._prefix = secrets.token_hex(3)
        self._changed = asyncio.Event()

    # --- what the node asks -------------------------------------------------------
    @property
    def active_publishers(self) -> int:
        return len(self._sessions)

    async def wait_for_publishers(self, timeout_s: float) -> int:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._sessions:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
        return len(self._sessions)

    def disconnect(self, connection_id: str, reason: str = "broadcast stopped") -> bool:
        session = self._by_connection.get(connection_id)
        if session is None:
            return False
        asyncio.get_running_loop().create_task(self._close(session, reason))
        return True

    async def stop(self, grace_s: float = 0.0) -> None:
        self.stopping = True
        await self.wait_for_publishers(grace_s)
        await asyncio.gather(*(self._close(s, "server stopping")
                               for s in list(self._sessions.values())))

    # --- what publishers ask (routes.py) --------------------------------------------
    async def publish(self, channel: str, key: str, offer: str,
                      peer: str) -> WhipAnswer | WhipRefusal:
        fields = {"channel": channel, "peer": peer}
        if self.stopping:
            return WhipRefusal(503, "Node unavailable: shutting down.", retry_after_s=5)
        problem = offer_problem(offer)
        if problem is not None:
            logger.info("whip offer refused", extra={**fields, "reason": problem})
            return WhipRefusal(406, problem)
        ip = peer.rpartition(":")[0] or peer
        if self._per_ip[ip] >= self.settings.max_connections_per_ip:
            return WhipRefusal(429, "Too many publishers from this address.", retry_after_s=5)
        connection_id = f"whip-{self._prefix}-{next(self._ids)}"
        request = PublishRequest(app=self.settings.rtmp_app, stream_key=key, peer=peer,
                                 connection_id=connection_id, channel=channel)
        self._per_ip[ip] += 1
        try:
            outcome = await self.handler.on_publish(request)
        except Exception as exc:  # the catalog, the live state: say it passes
            self._release_ip(ip)
            logger.warning("whip publish refused: the publish path failed",
                           extra={**fields, "error": repr(exc)})
            return WhipRefusal(503, "Node unavailable: retry shortly.", retry_after_s=5)
        if isinstance(outcome, Rejection):
            self._release_ip(ip)
            logger.info("whip publish rejected", extra={
                **fields, "connection_id": connection_id, "description": outcome.description})
            return refusal_for(outcome)
        try:
            session, answer = await self._negotiate(channel, peer, connection_id, offer,
                                                    outcome)
        except Exception as exc:
            self._release_ip(ip)
            await outcome.on_close("webrtc negotiation failed")
            logger.info("whip negotiation failed", extra={**fields, "error": repr(exc)})
            return WhipRefusal(400, f"The offer could not be negotiated: {exc}")
        logger.info("whip publish started", extra=session.log_fields)
        return answer

    async def add_candidates(self, session_id: str, fragment: str) -> bool:
        """Trickled ICE candidates (RFC 9725 4.3.1, an SDP fragment); False: no session."""
        from aiortc.sdp import candidate_from_sdp

        session = self._sessions.get(session_id)
        if session is None:
            return False
        for line in fragment.splitlines():
            line = line.strip()
            if line.startswith("a=candidate:"):
                candidate = candidate_from_sdp(line.removeprefix("a=candidate:"))
                candidate.sdpMLineIndex = 0
                with contextlib.suppress(Exception):  # a candidate it cannot use
                    await session.pc.addIceCandidate(candidate)
        return True

    async def end(self, session_id: str) -> bool:
        """DELETE on the session's resource: the publisher has stopped."""
        session = self._sessions.get(session_id)
        if session is None:
            return False
        await self._close(session, "publisher ended the session")
        return True

    # --- the session ------------------------------------------------------------------
    async def _negotiate(self, channel: str, peer: str, connection_id: str, offer: str,
                         publication: PublishSession) -> tuple[_Session, WhipAnswer]:
        from aiortc import RTCPeerConnection, RTCRtpReceiver, RTCSessionDescription

        pc = RTCPeerConnection()
        session = _Session(id=secrets.token_urlsafe(12), connection_id=connection_id,
                           channel=channel, peer=peer, pc=pc, publication=publication)
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            for transceiver in pc.getTransceivers():
                # H.264 first (passed through), then VP8 (encoded once, vp8.py).
                wanted = {"video": ("video/H264", "video/VP8", "video/rtx"),
                          "audio": ("audio/opus",)}.get(transceiver.kind, ())
                capabilities = RTCRtpReceiver.getCapabilities(transceiver.kind)
                codecs = capabilities.codecs if capabilities is not None else []
                transceiver.setCodecPreferences(sorted(
                    (c for c in codecs if c.mimeType in wanted),
                    key=lambda c: wanted.index(c.mimeType)))
                transceiver.direction = "recvonly"
                # aiortc keeps the queue its decoder thread reads in a private attribute:
                # the one place castway reaches inside it (pinned: aiortc 1.16).
                setattr(transceiver.receiver, "_RTCRtpReceiver__decoder_queue",  # noqa: B010
                        _FrameTap(self._on_frame(session, transceiver.kind)))
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except BaseException:
            await pc.close()
            raise

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self._close(session, f"webrtc connection {pc.connectionState}")

        self._sessions[session.id] = session
        self._by_connection[connection_id] = session
        self._changed.set()
        session.tasks = [
            asyncio.create_task(self._deliver(session), name=f"whip-{session.id}"),
            asyncio.create_task(self._watch(session), name=f"whip-watch-{session.id}"),
        ]
        sdp = pc.localDescription.sdp
        return session, WhipAnswer(session.id, sdp,
                                   '"' + hashlib.sha256(sdp.encode()).hexdigest()[:16] + '"')

    def _on_frame(self, session: _Session, kind: str) -> Callable[[Any, Any], None]:
        def on_frame(codec: Any, frame: Any) -> None:
            if session.closed:
                return
            now = time.monotonic()
            session.last_frame_s = now
            if kind == "video" and codec.name == "VP8":
                if session.vp8 is None:
                    session.vp8 = self._vp8_encoder(session)
                session.vp8.feed(frame.data, frame.timestamp, now)
                return
            if kind == "video":
                packets = session.converter.video(frame.data, frame.timestamp, now)
            else:
                packets = session.converter.audio(frame.data, frame.timestamp, now,
                                                  channels=codec.channels or 2)
            self._queue(session, packets)

        return on_frame

    def _queue(self, session: _Session, packets: list[MediaPacket]) -> None:
        for packet in packets:
            try:
                session.packets.put_nowait(packet)
            except asyncio.QueueFull:
                asyncio.get_running_loop().create_task(
                    self._close(session, "publish path too slow: frames piled up"))
                return

    def _vp8_encoder(self, session: _Session) -> Vp8ToH264:
        loop = asyncio.get_running_loop()

        def encoded(unit: EncodedUnit) -> None:  # on the encoder's thread
            loop.call_soon_threadsafe(self._encoded, session, unit)

        logger.info("whip publisher sends VP8: encoding it as H.264 at ingest",
                    extra=session.log_fields)
        return Vp8ToH264(encoded, preset=self.settings.x264_preset,
                         keyframe_every_s=self.settings.target_segment_s)

    def _encoded(self, session: _Session, unit: EncodedUnit) -> None:
        if not session.input_done:
            self._queue(session, session.converter.video(unit.data, unit.rtp_ts,
                                                         unit.arrival_s))

    async def _deliver(self, session: _Session) -> None:
        while (packet := await session.packets.get()) is not None:
            await session.publication.on_packet(packet)

    async def _watch(self, session: _Session) -> None:
        """Close a session whose ICE/DTLS handshake does not finish within the handshake
        timeout, or that sends no media for the idle timeout, as an RTMP connection's;
        ask for a keyframe every segment target."""
        started = time.monotonic()
        keyframe_every = max(0.5, self.settings.target_segment_s)
        asked = started
        while not session.closed:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            if session.pc.connectionState != "connected" and \
                    now - started > self.settings.handshake_timeout_s:
                await self._close(session, "webrtc handshake timed out")
                return
            if now - session.last_frame_s > self.settings.idle_timeout_s:
                await self._close(session, "no media")
                return
            if now - asked >= keyframe_every:
                asked = now
                await self._request_keyframe(session)

    async def _request_keyframe(self, session: _Session) -> None:
        for transceiver in session.pc.getTransceivers():
            if transceiver.kind != "video":
                continue
            receiver = transceiver.receiver
            for ssrc in list(getattr(receiver, "_RTCRtpReceiver__active_ssrc", {})):
                with contextlib.suppress(Exception):
                    await receiver._send_rtcp_pli(ssrc)

    async def _close(self, session: _Session, reason: str) -> None:
        if session.closed:
            return
        session.closed = True
        session.close_reason = reason
        self._sessions.pop(session.id, None)
        self._by_connection.pop(session.connection_id, None)
        self._release_ip(session.peer.rpartition(":")[0] or session.peer)
        current = asyncio.current_task()
        deliver = session.tasks[0] if session.tasks else None
        for task in session.tasks[1:]:
            if task is not current:
                task.cancel()
        if session.vp8 is not None:  # what it has encoded goes out too
            await asyncio.to_thread(session.vp8.close)
            await asyncio.sleep(0)  # its last units, handed to the loop, are queued
        session.input_done = True
        with contextlib.suppress(asyncio.QueueFull):
            session.packets.put_nowait(None)  # what was received goes out first
        if deliver is not None and deliver is not current:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await deliver
        await session.publication.on_close(reason)
        with contextlib.suppress(Exception):
            await session.pc.close()
        self._changed.set()
        logger.info("whip publish ended", extra={**session.log_fields, "reason": reason,
                                                 "skipped_before_keyframe":
                                                     session.converter.frames_skipped})

    def _release_ip(self, ip: str) -> None:
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
