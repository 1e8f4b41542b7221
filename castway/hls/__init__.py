"""HLS: the playlist renderer (``playlist``) shared by the origin, the transcoder and the
archiver, and the timing rules of a playlist (``timing``).

Nothing is imported here: the transcoder child imports ``castway.hls.timing`` alone."""
