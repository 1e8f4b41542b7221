"""RTMP ingest: the sans-IO protocol core (:mod:`ingest.protocol`), the asyncio server
(:mod:`ingest.server`) and broadcast lifecycle (:mod:`ingest.broadcasts`)."""
