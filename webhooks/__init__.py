"""Outbound webhooks: the dispatcher that turns broadcast and VOD events into signed
deliveries to the registered endpoints, at least once, with retries. In-process in the
embedded mode (:class:`webhooks.service.WebhookService`), Celery tasks in the distributed
mode (:mod:`webhooks.tasks`). The pure parts are the kernel's (:mod:`castway.webhooks`).

Design: docs/webhooks.md.
"""
