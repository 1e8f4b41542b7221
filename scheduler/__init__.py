"""The ingest fleet's scheduler: capacity and lifecycle of ingest nodes (docs/scheduler.md).

- :func:`scheduler.decide.decide` the pure decision; :class:`scheduler.policy.Policy`;
- :class:`scheduler.agent.NodeAgent` inside every ingest node (heartbeats, commands,
  admission, on_drain);
- :class:`scheduler.tick.Scheduler` one idempotent, locked tick; backends in
  :mod:`scheduler.backends` (local processes, Amazon ECS);
- entry points: :mod:`scheduler.cli`, :func:`scheduler.lambda_handler.handler`,
  :func:`scheduler.beat.register`; :mod:`scheduler.simulate` the day simulator.
"""
