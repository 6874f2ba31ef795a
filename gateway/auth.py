"""JWT verification (pyjwt) with pinned algorithms, and development token minting."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

import jwt
import msgspec
from cryptography.exceptions import UnsupportedAlgorithm

from common.settings import Settings, SettingsError

Role = Literal["MEMBER", "CREATOR", "MODERATOR", "ADMIN"]
ROLES: tuple[str, ...] = ("MEMBER", "CREATOR", "MODERATOR", "ADMIN")
_HMAC = ("HS256", "HS384", "HS512")


class AuthError(Exception):
    """A token was refused; ``code`` is the protocol error code, ``str()`` says why."""

    def __init__(self, message: str, code: str = "auth_failed") -> None:
        super().__init__(message)
        self.code = code


class Identity(msgspec.Struct, frozen=True):
    user_id: str
    role: Role
    name: str | None
    expires_at: float
    channels: tuple[str, ...] = ()
    """The token's ``channels`` claim: channels (or ``<namespace>:*``) of ``claims`` namespaces it may join."""

    @property
    def is_moderator(self) -> bool:
        return self.role in ("MODERATOR", "ADMIN")

    def lists(self, channel: str) -> bool:
        """Whether the token's ``channels`` claim lists ``channel`` (or its ``<namespace>:*``)."""
        return channel in self.channels or channel.partition(":")[0] + ":*" in self.channels


class Verifier:
    """Verifies tokens against one key and an allow-list of algorithms.

    The key type decides the family: an HMAC secret is never accepted for RS/ES
    algorithms and a public key never for HS (the classic key-confusion attack),
    and ``none`` is refused by settings before we get here.
    """

    def __init__(self, settings: Settings) -> None:
        self.algorithms = list(settings.algorithms)
        known = jwt.algorithms.get_default_algorithms()
        unknown = [a for a in self.algorithms if a not in known]
        if unknown:
            signing = sorted(set(known) - {"none"})
            raise SettingsError("VYBE_JWT_ALGORITHMS", f"unknown algorithms {unknown} (known: {signing})")
        hmac = [a for a in self.algorithms if a in _HMAC]
        if hmac and len(hmac) != len(self.algorithms):
            raise SettingsError("VYBE_JWT_ALGORITHMS", "do not mix HS* with RS*/ES*: one key, one family")
        if hmac:
            if not settings.jwt_secret:
                raise SettingsError("VYBE_JWT_SECRET", "is required for HS* algorithms")
            if len(settings.jwt_secret) < 32:
                raise SettingsError("VYBE_JWT_SECRET", "must be at least 32 characters")
            self.key: Any = settings.jwt_secret
        else:
            if not settings.jwt_public_key:
                raise SettingsError("VYBE_JWT_PUBLIC_KEY", "is required for RS*/ES* algorithms")
            # Parsed once here, not per token (pyjwt would load the PEM on every verify: ~25 us
            # of a reconnect storm's auth); a key that does not parse fails at start, not per socket.
            # Every listed algorithm must take the key (so no token can reach pyjwt with a key of another type).
            self.key = _read_pem(settings.jwt_public_key)
            for name in self.algorithms:
                try:
                    self.key = known[name].prepare_key(self.key)
                except (ValueError, TypeError, jwt.InvalidKeyError, UnsupportedAlgorithm) as err:
                    raise SettingsError("VYBE_JWT_PUBLIC_KEY", f"not a public key for {name}: {err}") from err
            if hasattr(self.key, "private_bytes"):  # pyjwt takes one, then fails on every token
                raise SettingsError("VYBE_JWT_PUBLIC_KEY", "is a private key: give the gateway the public key only")
        self.issuer = settings.jwt_issuer
        self.audience = settings.jwt_audience
        self.leeway = settings.jwt_leeway_s

    def verify(self, token: str) -> Identity:
        try:
            claims = jwt.decode(
                token, self.key, algorithms=self.algorithms, leeway=self.leeway,
                issuer=self.issuer, audience=self.audience,
                options={"require": ["exp", "iat", "sub"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError as err:
            raise AuthError("token expired", "token_expired") from err
        except jwt.InvalidTokenError as err:
            raise AuthError(f"invalid token: {err}") from err
        sub, role = claims.get("sub"), claims.get("role", "MEMBER")
        if not isinstance(sub, str) or not 0 < len(sub) <= 128:
            raise AuthError("invalid token: `sub` must be a string of 1-128 characters")
        if role not in ROLES:
            raise AuthError(f"invalid token: unknown role {role!r}")
        name = claims.get("name")
        channels = claims.get("channels", [])
        if not isinstance(channels, list) or not all(isinstance(c, str) and 0 < len(c) <= 200 for c in channels):
            raise AuthError("invalid token: `channels` must be a list of channel names")
        return Identity(sub, role, name if isinstance(name, str) else None, float(claims["exp"]), tuple(channels))



def _read_pem(value: str) -> str:
    if value.lstrip().startswith("-----BEGIN"):
        return value
    path = Path(value)
    if not path.is_file():
        raise SettingsError("VYBE_JWT_PUBLIC_KEY", f"neither PEM text nor a readable file: {value!r}")
    return path.read_text()


def mint_token(settings: Settings, user_id: str, *, role: str = "MEMBER", name: str | None = None,
               ttl_s: int = 3600, channels: list[str] | None = None) -> str:
    """A development token signed with the HS secret (production tokens come from the IdP)."""
    if not settings.jwt_secret:
        raise SettingsError("VYBE_JWT_SECRET", "is required to mint tokens (vybe dev prints one)")
    now = int(time.time())
    claims: dict[str, object] = {"sub": user_id, "role": role, "iat": now, "nbf": now, "exp": now + ttl_s}
    if name:
        claims["name"] = name
    if channels:
        claims["channels"] = channels
    if settings.jwt_issuer:
        claims["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        claims["aud"] = settings.jwt_audience
    algorithm = next((a for a in settings.algorithms if a in _HMAC), "HS256")
    return jwt.encode(claims, settings.jwt_secret, algorithm=algorithm)
