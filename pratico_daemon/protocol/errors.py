"""Codec errors that say who is at fault and what to answer (wsproto's model).

A `RemoteProtocolError` means the peer sent something we refuse. It carries
everything the transport needs to react without knowing the codec:

- `reply`: a frame (text) the codec already encoded to answer it — an ERROR
  ack, a CONNECT_ERROR or a JSON ERROR reply — when the frame could be parsed
  far enough to know whom to answer (an ack id, a `ref`, a CONNECT's namespace);
- `close_code`: the WebSocket close code to use when there is nothing to
  answer (1007 invalid frame data, 1009 too big, 1003 unsupported data);
- neither: drop the frame and log it (e.g. a binary packet without an ack id).

The caller's rule is therefore: send `reply` if set, else close with
`close_code` if set, else drop. `LocalProtocolError` means we misused the codec
(an invalid namespace or an unserialisable payload handed to an encoder): a bug
of ours, never the client's, so it is never answered to a client.
"""

from __future__ import annotations

from pratico_daemon.errors import HTTP_STATUS

# RFC 6455 §7.4.1 close codes used by the codecs.
CLOSE_UNSUPPORTED_DATA = 1003
CLOSE_INVALID_DATA = 1007
CLOSE_MESSAGE_TOO_BIG = 1009


class ProtocolError(Exception):
    """Base of codec errors; `code` is a stable code of `pratico_daemon.errors.HTTP_STATUS`."""

    def __init__(
        self,
        code: str,
        message: str = "",
        *,
        close_code: int | None = None,
        ack: int | str | None = None,
        namespace: str | None = None,
        reply: str | None = None,
    ) -> None:
        assert code in HTTP_STATUS, code
        super().__init__(message or code)
        self.code = code
        self.message = message or code.replace("_", " ")
        self.close_code = close_code
        self.ack = ack
        self.namespace = namespace
        self.reply = reply

    @property
    def http_status(self) -> int:
        """The HTTP status for the same error (used by Engine.IO long-polling)."""
        return HTTP_STATUS[self.code]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.code!r}, {self.message!r}, "
            f"close_code={self.close_code}, ack={self.ack!r}, namespace={self.namespace!r})"
        )


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; answer with `reply`, else close with `close_code`."""


class LocalProtocolError(ProtocolError):
    """We misused a codec (bad namespace, unserialisable payload): a bug on our side."""
