"""Guest tokens: how a participant without an account comes back as itself.

A guest token is a JWT signed by the daemon with a key *derived* from the auth
secret (HMAC-SHA256 of a fixed label), with its own audience. Deriving a
separate key means a guest token can never pass as an access token (and the
other way round) even if someone strips the audience, and every daemon that
shares the auth secret accepts the tokens the others minted.

The token names the room and the participant; it does not expire on its own
(it dies with its room, whose id is never reused) and a kicked participant's
token is revoked through the room's `revoked` set, checked on every join.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

import attrs
import jwt

from pratico_daemon import logs
from pratico_daemon.errors import AppError

log = logs.get("pratico.tokens")

AUDIENCE = "pratico-guest"
_LABEL = b"pratico-daemon guest tokens v1"


@attrs.frozen
class GuestClaims:
    room_id: str
    participant_id: str


class GuestTokens:
    """Mint and verify guest tokens (HS256 with a key derived from `secret`)."""

    def __init__(self, secret: str | None) -> None:
        if not secret:
            # RS256/ES256 deployments without a shared secret: tokens stay valid
            # on this node only (a restart or another node will not know them).
            log.warning("no auth.jwt_secret: guest tokens are only valid on this node")
            secret = secrets.token_urlsafe(48)
        self._key = hmac.new(secret.encode(), _LABEL, hashlib.sha256).hexdigest()

    def mint(self, room_id: str, participant_id: str) -> str:
        claims: dict[str, Any] = {"aud": AUDIENCE, "room": room_id, "sub": participant_id}
        return jwt.encode(claims, self._key, algorithm="HS256")

    def verify(self, token: Any) -> GuestClaims:
        """The claims of a valid token, or `unauthorized`."""
        if not isinstance(token, str) or not token or len(token) > 2000:
            raise AppError("unauthorized", "guest_token: not a token")
        try:
            claims = jwt.decode(token, self._key, algorithms=["HS256"], audience=AUDIENCE,
                                options={"require": ["aud", "room", "sub"]})
        except jwt.InvalidTokenError as exc:
            raise AppError("unauthorized", f"guest_token: {exc}") from None
        room, sub = claims.get("room"), claims.get("sub")
        if not isinstance(room, str) or not isinstance(sub, str):
            raise AppError("unauthorized", "guest_token: malformed claims")
        return GuestClaims(room, sub)
