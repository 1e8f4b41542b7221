"""The wiring: castway's command line and one module per process (``castway serve``,
``ingest``, ``origin``, ``worker``), built from the components below it. Nothing imports
this package but its own modules and the tests (docs/architecture.md, tests/test_layers.py).
"""
