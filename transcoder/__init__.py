"""castway's transcoder: MediaPackets of a live broadcast (or a media file) into an ABR
ladder of fMP4/CMAF (LL-HLS parts) or MPEG-TS segments, one child process per broadcast.

Entry points: :class:`transcoder.supervisor.TranscoderSupervisor` (the ingest-facing
``MediaPipelineFactory``), :func:`transcoder.cli.main` (``castway transcode``),
:func:`benchmarks.transcode.main` (``castway bench transcode``). Design: docs/transcoder.md.
"""
