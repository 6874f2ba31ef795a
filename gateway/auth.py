"""JWT verification (pyjwt) with pinned algorithms, and development token minting."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import time
from pathlib import Path
from typing import Any, Literal

import jwt
import msgspec
from cryptography.exceptions import UnsupportedAlgorithm

from common.settings import Settings, SettingsError

Role = Literal["MEMBER", "CREATOR", "MODERATOR", "ADMIN"]
ROLES: tuple[str, ...] = ("MEMBER", "CREATOR", "MODERATOR", "ADMIN")
_HMAC = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
_SEGMENT = re.compile(r"[A-Za-z0-9_-]+")
_REQUIRED = ("exp", "iat", "sub")
MAX_TOKEN_CHARS = 16384
"""Longer tokens are refused before any decoding (an IdP's tokens are a few hundred bytes to a few KB)."""


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
        shared = [a for a in self.algorithms if a in _HMAC]
        if shared and len(shared) != len(self.algorithms):
            raise SettingsError("VYBE_JWT_ALGORITHMS", "do not mix HS* with RS*/ES*: one key, one family")
        if shared:
            if not settings.jwt_secret:
                raise SettingsError("VYBE_JWT_SECRET", "is required for HS* algorithms")
            if len(settings.jwt_secret) < 32:
                raise SettingsError("VYBE_JWT_SECRET", "must be at least 32 characters")
            self.key: Any = settings.jwt_secret
            try:  # pyjwt's checks (not a PEM, SSH or DER key, not a JWK), once
                known["HS256"].prepare_key(self.key)
            except jwt.InvalidKeyError as err:
                raise SettingsError("VYBE_JWT_SECRET", str(err)) from err
            self._secret: bytes | None = self.key.encode()
        else:
            self._secret = None
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
        """The token's identity; raises :class:`AuthError` (``token_expired`` or ``auth_failed``), and nothing else."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            raise AuthError(f"invalid token: not a string of at most {MAX_TOKEN_CHARS} characters")
        claims = self._hs_claims(token) if self._secret is not None else self._pyjwt_claims(token)
        sub, role = claims.get("sub"), claims.get("role", "MEMBER")
        if not isinstance(sub, str) or not 0 < len(sub) <= 128:
            raise AuthError("invalid token: `sub` must be a string of 1-128 characters")
        if role not in ROLES:
            raise AuthError(f"invalid token: unknown role {role!r}")
        name = claims.get("name")
        channels = claims.get("channels", [])
        if not isinstance(channels, list) or not all(isinstance(c, str) and 0 < len(c) <= 200 for c in channels):
            raise AuthError("invalid token: `channels` must be a list of channel names")
        try:
            expires_at = float(claims["exp"])
        except (OverflowError, TypeError, ValueError) as err:
            raise AuthError("invalid token: `exp` is out of range") from err
        return Identity(sub, role, name if isinstance(name, str) else None, expires_at, tuple(channels))

    def _pyjwt_claims(self, token: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token, self.key, algorithms=self.algorithms, leeway=self.leeway,
                issuer=self.issuer, audience=self.audience,
                options={"require": list(_REQUIRED), "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError as err:
            raise AuthError("token expired", "token_expired") from err
        except (jwt.InvalidTokenError, UnicodeError) as err:  # UnicodeError: a lone surrogate in the token
            raise AuthError(f"invalid token: {err}") from err

    def _hs_claims(self, token: str) -> dict[str, Any]:
        """HS* compact tokens, verified here rather than by pyjwt: a sixth of pyjwt's cost (11 vs 61 us),
        which was a quarter of a reconnect's. The same rules as :meth:`_pyjwt_claims` asks of pyjwt, and
        never looser (``tests/gateway/test_auth.py`` compares the two on valid and tampered tokens):
        strict base64url, an allowed ``alg``, the HMAC compared in constant time, then the claims. Refused
        here though pyjwt takes them: padded segments, the ``crit`` and ``b64`` headers (RFC 7797), and
        times given as strings or NaN."""
        head, payload, signature = _segments(token)
        header = _json_object(head, "header")
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise AuthError("invalid token: The specified alg value is not allowed")
        if "crit" in header or "b64" in header:
            raise AuthError("invalid token: unsupported header (crit, b64)")
        if "kid" in header and not isinstance(header["kid"], str):
            raise AuthError("invalid token: Key ID header parameter must be a string")
        signed = token[:len(head) + 1 + len(payload)].encode()
        mac = hmac.new(self._secret or b"", signed, _HMAC[alg]).digest()
        if not hmac.compare_digest(mac, _b64(signature)):
            raise AuthError("invalid token: Signature verification failed")
        claims = _json_object(payload, "payload")
        for claim in _REQUIRED:
            if claims.get(claim) is None:
                raise AuthError(f'invalid token: Token is missing the "{claim}" claim')
        now, leeway = time.time(), self.leeway
        times = {}
        for claim in ("iat", "nbf", "exp"):
            if claim in claims:
                value = claims[claim]
                if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
                    raise AuthError(f"invalid token: `{claim}` must be a number")
                times[claim] = int(value)  # as pyjwt compares them
        if times["iat"] > now + leeway or times.get("nbf", 0) > now + leeway:
            raise AuthError("invalid token: The token is not yet valid")
        if times["exp"] <= now - leeway:
            raise AuthError("token expired", "token_expired")
        if self.issuer is not None and claims.get("iss") != self.issuer:
            raise AuthError("invalid token: Invalid issuer")
        if self.audience is not None:
            aud = claims.get("aud")
            listed = [aud] if isinstance(aud, str) else aud
            if not aud or not isinstance(listed, list) or not all(isinstance(a, str) for a in listed) \
                    or self.audience not in listed:
                raise AuthError("invalid token: Invalid audience")
        if not isinstance(claims["sub"], str):
            raise AuthError("invalid token: Subject must be a string")
        if "jti" in claims and not isinstance(claims["jti"], str):
            raise AuthError("invalid token: JWT ID must be a string")
        return claims


def _segments(token: str) -> tuple[str, str, str]:
    parts = token.split(".") if isinstance(token, str) else ()
    if len(parts) != 3:
        raise AuthError("invalid token: Not enough segments" if len(parts) < 3 else "invalid token: too many segments")
    return parts[0], parts[1], parts[2]


def _b64(segment: str) -> bytes:
    """Unpadded base64url in its one canonical spelling (as pyjwt checks it), else ``auth_failed``."""
    if len(segment) % 4 == 1 or _SEGMENT.fullmatch(segment) is None:
        raise AuthError("invalid token: malformed base64url segment")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except binascii.Error as err:
        raise AuthError("invalid token: malformed base64url segment") from err
    if base64.urlsafe_b64encode(raw).rstrip(b"=") != segment.encode():
        raise AuthError("invalid token: non-canonical base64url segment")
    return raw


def _json_object(segment: str, what: str) -> dict[str, Any]:
    try:
        value = msgspec.json.decode(_b64(segment))
    except (msgspec.DecodeError, RecursionError, ValueError) as err:  # RecursionError: nesting ~1000 deep
        raise AuthError(f"invalid token: Invalid {what} string: {err}") from err
    if not isinstance(value, dict):
        raise AuthError(f"invalid token: Invalid {what} string: must be a json object")
    return value


def bearer_token(authorization: bytes | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, if that is what it is."""
    if authorization:
        kind, _, token = authorization.decode("latin-1").partition(" ")
        if kind.lower() == "bearer" and token.strip():
            return token.strip()
    return None


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
