"""Access tokens (PROTOCOL.md §6): JWT verification and minting.

HS256 with `auth.jwt_secret`, or RS256/ES256 with `auth.jwt_public_key_file`.
With neither, an embedded node keeps a generated secret in `state_dir` so that
`pratico-daemon token` and the daemon agree on a first run; a node that shares
Redis/Postgres with others must be configured explicitly.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import attrs
import jwt

from pratico_daemon.config import Config, ConfigError
from pratico_daemon.errors import AppError

ROLES = ("teacher", "student", "admin")
_SECRET_FILE = "jwt_secret"


@attrs.frozen
class Claims:
    sub: str
    org_id: str
    role: str
    raw: dict[str, Any] = attrs.field(eq=False, repr=False)


@attrs.frozen
class Authenticator:
    verify_key: Any
    sign_key: str | None
    algorithms: tuple[str, ...]
    issuer: str
    audience: str

    @classmethod
    def from_config(cls, config: Config) -> Authenticator:
        auth = config.auth
        if auth.jwt_public_key_file:
            try:
                key = Path(auth.jwt_public_key_file).read_text()
            except OSError as exc:
                raise ConfigError("auth.jwt_public_key_file", str(exc)) from None
            return cls(key, auth.jwt_secret or None, ("RS256", "ES256"), auth.issuer, auth.audience)
        secret = auth.jwt_secret or _embedded_secret(config)
        if len(secret.encode()) < 32:
            raise ConfigError("auth.jwt_secret", "shorter than 32 bytes (RFC 7518 §3.2)")
        return cls(secret, secret, ("HS256",), auth.issuer, auth.audience)

    def verify(self, token: str) -> Claims:
        """Decode and check a token; any failure is `unauthorized` with a reason."""
        if not isinstance(token, str) or not token:
            raise AppError("unauthorized", "missing token")
        options = {"require": ["sub", "exp"]}
        try:
            claims = jwt.decode(
                token,
                self.verify_key,
                algorithms=list(self.algorithms),
                issuer=self.issuer or None,
                audience=self.audience or None,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.ExpiredSignatureError:
            raise AppError("unauthorized", "token expired") from None
        except jwt.InvalidTokenError as exc:
            raise AppError("unauthorized", f"invalid token: {exc}") from None
        role = claims.get("role", "")
        if role not in ROLES:
            raise AppError("unauthorized", "token role must be teacher, student or admin")
        return Claims(str(claims["sub"]), str(claims.get("org_id", "")), role, claims)

    def mint(self, sub: str, role: str, org_id: str, ttl_s: int = 3600) -> str:
        if self.sign_key is None:
            raise ConfigError("auth.jwt_secret", "needed to sign tokens")
        now = int(time.time())
        claims: dict[str, Any] = {"sub": sub, "role": role, "org_id": org_id, "iat": now,
                                  "exp": now + ttl_s}
        if self.issuer:
            claims["iss"] = self.issuer
        if self.audience:
            claims["aud"] = self.audience
        return jwt.encode(claims, self.sign_key, algorithm="HS256")


def _embedded_secret(config: Config) -> str:
    if not config.embedded:
        raise ConfigError(
            "auth.jwt_secret", "required when redis.url or postgres.dsn is set (nodes must agree)"
        )
    path = config.state_dir() / _SECRET_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        path.write_text(secret)
        path.chmod(0o600)
        return secret
