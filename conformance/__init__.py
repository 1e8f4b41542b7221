"""``castway check URL``: an HLS conformance checker for any stream, castway's or not.

The rules live in the kernel (``castway.hls``: ``reading`` parses, ``invariants`` and
``measured`` hold every rule, ``watch`` runs them revision after revision); this component
holds what is its own: ``segments`` (what a segment's media says, probed with PyAV),
``follow`` (the HTTP follower that feeds the kernel's watch), ``report`` and ``cli``.
Nothing is imported here, so ``castway check --help`` does not load libav.
"""
