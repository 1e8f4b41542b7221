"""Typed messages between processes: one module per topic family (``broadcasts``,
``media``, ``nodes``, ``handover``, ``vods``,
``restreams``); :func:`castway.events.announce.announce`
sends a lifecycle event everywhere it is read.

Design: docs/architecture.md, "Typed messages between processes".
"""
