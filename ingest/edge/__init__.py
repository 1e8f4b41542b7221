"""The RTMP edge (``castway edge``): publishers' connections end here, and each
broadcast is relayed to a transcoding node, which the edge changes without the
publisher's help when that node drains or dies.

Design: docs/architecture.md, "The edge tier".
"""
