"""Outbound webhooks, the kernel's part: what the API registering endpoints and the
dispatcher delivering to them (``webhooks/``, the component) share. Sans-IO except
:func:`castway.webhooks.allow.check_receiver` (one DNS lookup).

- :mod:`castway.webhooks.signing`: the Standard Webhooks signature scheme (v1, HMAC-SHA256).
- :mod:`castway.webhooks.events`: event types and the payload of each.
- :mod:`castway.webhooks.allow`: which receiver addresses are refused (SSRF).
- :mod:`castway.webhooks.retry`: the retry schedule and what an attempt's outcome does.
- :mod:`castway.webhooks.records`: endpoints and deliveries as the catalog keeps them.

Design: docs/webhooks.md.
"""
