"""Restreaming (simulcast), the kernel's part: what the API registering targets and the
ingest node sending to them share.

- :mod:`castway.restream.targets`: a target's URL and key, parsed, masked, as stored.
- :mod:`castway.restream.sealing`: the stream key encrypted at rest (Fernet).

Design: docs/restream.md.
"""
