"""Live chat: a WebSocket room per channel, fanned out over Redis Pub/Sub.

Pure parts (``protocol``, ``ratelimit``, ``history``, ``sharding``) are synchronous; the
bus (``bus``: in-process or Redis shards), the hub (``hub``) and the routes (``router``)
are the I/O edges. ``chat.app.create_chat_app`` runs chat as its own service.
"""
