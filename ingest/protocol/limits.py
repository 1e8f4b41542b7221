"""Named DoS limits of the protocol core. A peer that exceeds one gets
:class:`~ingest.protocol.errors.LimitExceeded` and the connection is closed."""

from __future__ import annotations

#: Largest Set Chunk Size we accept (RTMP 1.0 5.4.1 allows up to 0x7FFFFFFF; no real
#: publisher needs more than a message's maximum length).
MAX_CHUNK_SIZE = 0xFFFFFF

#: Largest message we reassemble. A 4K keyframe is a few MiB; 8 MiB is generous.
MAX_MESSAGE_SIZE = 8 * 1024 * 1024

#: Distinct chunk stream ids one connection may use (publishers use about five).
MAX_CHUNK_STREAMS = 64

#: Bytes buffered at once: unparsed input plus partially reassembled messages.
MAX_BUFFERED_BYTES = 32 * 1024 * 1024

#: Before a publish is accepted (handshake, connect, createStream, publish: a few small
#: commands) a connection is anyone's: it may hold this much at once, counting unparsed
#: input and partial messages together, and no message may be larger. The full limits
#: above apply once it publishes: otherwise each unauthenticated connection could hold
#: 32 MiB for as long as the idle timeout.
MAX_PREAUTH_BUFFERED_BYTES = 256 * 1024
MAX_PREAUTH_MESSAGE_SIZE = 64 * 1024

#: Deepest AMF0 nesting (objects within arrays within objects...) we decode.
MAX_AMF_DEPTH = 32

#: Most entries of one AMF0 object/array we decode.
MAX_AMF_ENTRIES = 65536

#: Default Window Acknowledgement Size we announce and the chunk size we send with.
DEFAULT_WINDOW_ACK_SIZE = 2_500_000
DEFAULT_OUT_CHUNK_SIZE = 4096
