"""Restreaming (simulcast): a live broadcast's source media, remuxed without re-encoding,
published to each of its channel's targets by castway's own RTMP client
(:mod:`ingest.protocol.client`) over asyncio, TLS for ``rtmps://``.

- :mod:`ingest.restream.queue`: the bounded per-target queue (drops oldest GOPs), pure.
- :mod:`ingest.restream.link`: one target's sender task (reconnect, backoff).
- :mod:`ingest.restream.media`: a broadcast's restream sink and its factory (a second
  consumer of the packets the transcoder gets, composed by the wiring).

Design: docs/restream.md.
"""
