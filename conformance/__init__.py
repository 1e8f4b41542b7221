"""``castway check URL``: an HLS conformance checker for any stream, castway's or not.

The layers, bottom up: ``findings`` (typed findings and the rule table), ``playlists``
(m3u8 text -> typed playlists that remember each value's line), ``segments`` (what a
segment's media says, probed with PyAV), ``rules`` (the sans-IO core: playlists and segment
facts in, findings out), ``follow`` (the HTTP follower that feeds it), ``report`` and
``cli``. Nothing is imported here, so ``castway check --help`` does not load libav.
"""
