"""The simulated users' tokens: HS256 JWTs signed with the gateway's shared secret.

The load tester is a client and imports nothing of the server; the claims are the
ones ``vybe token`` mints (``sub``, ``role``, ``iat``, ``nbf``, ``exp``), so a
gateway that verifies an issuer or audience refuses them, as it would refuse
``vybe token``'s.
"""

from __future__ import annotations

import time

import jwt


def mint_token(secret: str, user_id: str, role: str, ttl_s: int) -> str:
    """A token for ``user_id`` with ``role``, valid for ``ttl_s`` seconds from now."""
    now = int(time.time())
    claims = {"sub": user_id, "role": role, "iat": now, "nbf": now, "exp": now + ttl_s}
    return jwt.encode(claims, secret, algorithm="HS256")
