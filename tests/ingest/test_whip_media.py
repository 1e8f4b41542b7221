"""What WHIP makes of a WebRTC publisher's offer and frames (pure parts: ingest/whip)."""

from __future__ import annotations

from castway.media import Codec, MediaKind
from ingest.publish import Rejection
from ingest.whip.media import WebRtcToMedia, opus_head
from ingest.whip.server import offer_problem, refusal_for

SPS = bytes.fromhex("6742c01fda0280bfe5c0440000030004000003032e")  # a baseline SPS
PPS = bytes.fromhex("68ce3c80")
IDR = bytes.fromhex("65888480")
P = bytes.fromhex("419a2211")
START = b"\x00\x00\x00\x01"


def annexb(*nals: bytes) -> bytes:
    return b"".join(START + n for n in nals)


def test_frames_before_the_first_keyframe_are_skipped_then_config_and_frames_go_out() -> None:
    media = WebRtcToMedia()
    assert media.video(annexb(P), 0, 10.0) == []  # joined mid-GOP: undecodable
    out = media.video(annexb(SPS, PPS, IDR), 3000, 10.1)
    assert [(p.is_config, p.is_keyframe) for p in out] == [(True, True), (False, True)]
    assert out[1].payload == len(IDR).to_bytes(4, "big") + IDR  # length-prefixed
    later = media.video(annexb(P), 6000, 10.2)
    assert [(p.is_config, p.is_keyframe, p.dts_ms) for p in later] == [(False, False, 33)]
    # The same parameter sets again (every IDR carries them): no second config.
    again = media.video(annexb(SPS, PPS, IDR), 9000, 10.3)
    assert [p.is_config for p in again] == [False]
    assert media.frames_skipped == 1


def test_one_timeline_from_the_first_frame_by_arrival_then_by_rtp_time() -> None:
    media = WebRtcToMedia()
    audio = media.audio(b"\xfc" * 20, 0, 100.0)
    assert audio[0].is_config and audio[0].payload == opus_head(2)
    assert audio[0].codec is Codec.OPUS and audio[1].kind is MediaKind.AUDIO
    assert audio[1].dts_ms == 0
    video = media.video(annexb(SPS, PPS, IDR), 0, 100.25)  # first video 250 ms later
    assert video[1].dts_ms == 250
    assert media.audio(b"\xfc", 960 * 10, 100.9)[0].dts_ms == 200  # 10 x 20 ms
    assert media.video(annexb(P), 9000, 100.5)[0].dts_ms == 350  # + 100 ms of 90 kHz


def test_video_timestamps_never_go_back_or_repeat() -> None:
    media = WebRtcToMedia()
    media.video(annexb(SPS, PPS, IDR), 9000, 1.0)
    assert media.video(annexb(P), 9000, 1.1)[0].dts_ms == 1  # same RTP time: +1 ms
    assert media.video(annexb(P), 0, 1.2)[0].dts_ms == 2  # earlier: still forward


H264 = ("m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\na=rtpmap:96 VP8/90000\r\n"
        "a=rtpmap:102 H264/90000\r\na=fmtp:102 level-asymmetry-allowed=1;"
        "packetization-mode=1;profile-level-id=42e01f\r\n")
OPUS = "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
SESSION = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"


def test_offers_castway_can_take_and_the_reasons_for_those_it_cannot() -> None:
    assert offer_problem(SESSION + H264 + OPUS) is None
    assert offer_problem(SESSION + H264) is None  # video alone
    vp8 = SESSION + "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n" + OPUS
    assert offer_problem(vp8) is None  # encoded as H.264 at ingest
    vp9 = SESSION + "m=video 9 UDP/TLS/RTP/SAVPF 98\r\na=rtpmap:98 VP9/90000\r\n" + OPUS
    assert "no usable video codec" in (offer_problem(vp9) or "")
    mode0 = SESSION + ("m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n"
                       "a=fmtp:102 packetization-mode=0;profile-level-id=42e01f\r\n") + OPUS
    assert "packetization mode 1" in (offer_problem(mode0) or "")
    simulcast = SESSION + H264 + "a=rid:h send\r\na=simulcast:send h;l\r\n" + OPUS
    assert "simulcast" in (offer_problem(simulcast) or "")
    g722 = SESSION + H264 + "m=audio 9 UDP/TLS/RTP/SAVPF 9\r\na=rtpmap:9 G722/8000\r\n"
    assert "Opus" in (offer_problem(g722) or "")
    assert "no video" in (offer_problem(SESSION + OPUS) or "")
    assert offer_problem("garbage") is not None


def test_publish_refusals_become_http_statuses() -> None:
    assert refusal_for(Rejection.bad_name()).status == 401
    assert refusal_for(Rejection.already_live()).status == 409
    unavailable = refusal_for(Rejection.unavailable("draining"))
    assert (unavailable.status, unavailable.retry_after_s) == (503, 5)
    from ingest.publish_auth import refusal
    denied = refusal(403, "")
    assert denied is not None and refusal_for(denied).status == 403
