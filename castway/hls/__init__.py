"""HLS: the playlist renderer shared by the origin, the transcoder and the archiver."""

from castway.hls.playlist import (
    PlaylistType,
    RenditionReport,
    last_part,
    render_master_playlist,
    render_media_playlist,
    rendition_report,
    target_duration,
)

__all__ = [
    "PlaylistType",
    "RenditionReport",
    "last_part",
    "render_master_playlist",
    "render_media_playlist",
    "rendition_report",
    "target_duration",
]
