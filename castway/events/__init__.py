"""Typed messages between processes: one module per topic family.

A :class:`~castway.events.topic.Topic` names a live-state pub/sub channel and the codec
of its messages, so ``LiveState.publish(topic, message)`` and
``LiveState.subscribe(topic)`` are checked by mypy at both ends:

- :mod:`castway.events.broadcasts`: a broadcast's lifecycle (started, resumed, ended,
  failed) on ``broadcasts``;
- :mod:`castway.events.media`: new media of one broadcast on ``media:{broadcast_id}``
  (and its end, where origins hold blocked playlist reloads);
- :mod:`castway.events.nodes`: commands to one ingest node (stop a broadcast);
- :mod:`castway.events.handover`: a broadcast moving between ingest nodes.

:func:`castway.events.announce.announce` sends a lifecycle event everywhere it is read.
"""
