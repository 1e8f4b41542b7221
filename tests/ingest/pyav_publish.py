"""A PyAV (libavformat) RTMP publisher, run as its own process by the interop tests:
libavformat blocks in network I/O holding the GIL, so it cannot share a process with
the asyncio server it talks to.

    python -m tests.ingest.pyav_publish SOURCE rtmp://host:port/app/key
"""

from __future__ import annotations

import sys

import av


def publish(src: str, url: str) -> None:
    with av.open(src) as inp, av.open(url, "w", format="flv") as out:
        streams = {s.index: out.add_stream_from_template(s) for s in inp.streams}
        for packet in inp.demux():
            if packet.dts is None:
                continue
            packet.stream = streams[packet.stream.index]
            out.mux(packet)


if __name__ == "__main__":
    publish(sys.argv[1], sys.argv[2])
