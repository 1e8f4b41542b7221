"""A live broadcast's health as the streamer should read it: warning codes, what each
means and what to change in the encoder (OBS's menus named, the usual publisher).

The codes travel in the broadcast's stats (comma-separated strings in the live state):
``source_warnings`` from ingest (what the publisher sends, measured as packets arrive)
and ``warnings`` from the transcoder (what comes out). The API reads both through
:func:`describe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

# Above this the passthrough's segments (and a player joining) wait that long for a
# keyframe, whatever the segment target: OBS's "auto" is 250 frames, 8 s at 30 fps.
KEYFRAME_INTERVAL_MAX_S = 4.0


class SourceWarning(StrEnum):
    """Codes in the ``source_warnings`` stat (ingest: the publisher's stream)."""

    LONG_KEYFRAME_INTERVAL = "long_keyframe_interval"
    NO_AUDIO = "no_audio"
    UNSTEADY_BITRATE = "unsteady_bitrate"


@dataclass(frozen=True, slots=True)
class WarningText:
    message: str
    advice: str


_KEYFRAME_ADVICE = ("OBS: Settings -> Output -> Streaming -> Keyframe Interval: 2 s "
                    "(ffmpeg: -g at twice the frame rate)")

_TEXTS: dict[str, WarningText] = {
    SourceWarning.LONG_KEYFRAME_INTERVAL: WarningText(
        "the encoder's keyframes are too far apart: segments get long, viewers wait "
        "longer to start and fall further behind", _KEYFRAME_ADVICE),
    SourceWarning.NO_AUDIO: WarningText(
        "the stream carries no audio",
        "OBS: check the audio sources in the Audio Mixer and Settings -> Audio"),
    SourceWarning.UNSTEADY_BITRATE: WarningText(
        "the bitrate swings widely: the connection or the encoder cannot keep up",
        "OBS: Settings -> Output -> Streaming -> Rate Control: CBR, and a bitrate the "
        "upload sustains"),
    # The transcoder's codes (transcoder.supervisor.HealthWarning), for the streamer.
    "keyframe_drought": WarningText(
        "no keyframe within the segment target: segments are split without one",
        _KEYFRAME_ADVICE),
    "no_video_config": WarningText(
        "video arrives without its sequence header: nothing can decode it",
        "restart the stream; the encoder must send the codec configuration first"),
    "no_media": WarningText(
        "the stream's packets produce no video segments",
        "check the encoder's video codec (H.264, HEVC or AV1) and restart the stream"),
    "transcoding_failed": WarningText(
        "transcoding was given up for this broadcast: nothing more is served",
        "stop and restart the stream; if it happens again, change the encoder settings"),
}


def describe(code: str) -> WarningText:
    """What ``code`` means to the streamer (an unknown code is shown as it is)."""
    return _TEXTS.get(code, WarningText(code.replace("_", " "), ""))


def split_codes(value: object) -> list[str]:
    """The codes of a comma-separated warnings stat (a missing stat is no warning)."""
    return [code for code in str(value or "").split(",") if code]
