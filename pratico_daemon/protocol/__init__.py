"""Sans-IO codecs: Engine.IO v4, Socket.IO v5 and the plain-JSON framing (PROTOCOL.md §1).

Text or bytes go in, `Event`s and packets come out; events go in, text comes
out. Nothing here awaits, reads a clock or logs (a test checks the imports), so
the transport layer owns all I/O and time, and hypothesis can drive every codec
with millions of frames. Errors are `RemoteProtocolError` (the peer sent
garbage: answer or close as the error says) or `LocalProtocolError` (our bug).
"""

from pratico_daemon.protocol.errors import LocalProtocolError, ProtocolError, RemoteProtocolError
from pratico_daemon.protocol.event import Event, error, success

__all__ = [
    "Event",
    "LocalProtocolError",
    "ProtocolError",
    "RemoteProtocolError",
    "error",
    "success",
]
