"""Hostile input: every refusal is a typed error, and the socket survives where safe."""

from __future__ import annotations

import asyncio
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

pytestmark = pytest.mark.anyio


async def _alive(c) -> None:
    assert (await c.ok("ping"))["time"] > 0


async def test_malformed_unknown_and_invalid_frames_keep_socket(live, connect) -> None:
    """Bad JSON, an unknown type and wrong field types each get their error code; the socket stays."""
    c = await connect(live, live.token("u1"))
    await c.ws.send("{not json")
    err = await c.wait_for(lambda m: m["type"] == "error" and m["code"] == "malformed")
    assert err["id"] is None
    assert (await c.call("teleport", x=1))["code"] == "unknown_type"
    r = await c.call("post_vybe", content=42)
    assert r["code"] == "invalid" and "content" in r["message"]
    await c.ws.send(json.dumps([1, 2]))
    await c.wait_for(lambda m: m["type"] == "error" and m["code"] == "malformed" and m is not err)
    await _alive(c)


async def test_the_longest_vybe_fits_a_frame_however_it_is_escaped(start_gateway, connect) -> None:
    """The frame limit follows the content limit: the longest vybe, written entirely as JSON escapes
    of emoji (12 bytes per code point), is accepted."""
    live = await start_gateway()
    c = await connect(live, live.token("u3"))
    frame = '{"type":"post_vybe","id":"longest","content":"' + "\\ud83d\\ude42" * 5000 + '"}'
    assert len(frame) > 12 * 5000
    await c.ws.send(frame)
    ack = await c.reply("longest", timeout=10)
    assert ack["type"] == "ack" and len(ack["result"]["content"]) == 5000, ack.get("code")
    await c.ws.send(frame[:-2] + "x" + frame[-2:])  # one code point over
    assert (await c.reply("longest", start=len(c.messages)))["code"] in ("content_too_long", "frame_too_large")


async def test_oversize_and_binary_frames(start_gateway, connect) -> None:
    """A frame over the limit and a binary frame are refused with typed errors; nothing is stored."""
    live = await start_gateway(max_frame_bytes=1024)
    c = await connect(live, live.token("u2"))
    await c.ws.send(json.dumps({"type": "post_vybe", "id": "big", "content": "x" * 2000}))
    await c.wait_for(lambda m: m.get("code") == "frame_too_large")
    await c.ws.send(b"\x00\x01")
    await c.wait_for(lambda m: m.get("code") == "binary_unsupported")
    await _alive(c)
    assert await live.gateway.pool.fetchval("SELECT count(*) FROM shared_vybes") == 0


async def test_content_rules_are_typed_errors(live, connect) -> None:
    """Too long, NUL bytes and blank content are refused and nothing is stored."""
    c = await connect(live, live.token("u3"))
    assert (await c.call("post_vybe", content="a" * 5001))["code"] == "content_too_long"
    assert (await c.call("post_vybe", content="bad\u0000byte"))["code"] == "invalid_content"
    assert (await c.call("post_vybe", content="   "))["code"] == "invalid_content"
    assert (await c.call("react", target_id="00000000-0000-0000-0000-000000000000", reaction="HEART"))["code"] \
        == "not_found"
    assert await live.gateway.pool.fetchval("SELECT count(*) FROM shared_vybes") == 0
    await _alive(c)


async def test_commands_before_auth_then_auth(live, connect) -> None:
    """Before auth every command gets auth_required; a later valid auth frame works."""
    c = await connect(live)
    assert (await c.call("subscribe", channel="feed"))["code"] == "auth_required"
    await c.ok("auth", token=live.token("late"))
    await c.ok("subscribe", channel="feed")


async def test_auth_timeout_closes_4001(start_gateway, connect) -> None:
    """No auth within the timeout closes the socket with 4001."""
    live = await start_gateway(auth_timeout_s=0.3)
    c = await connect(live)
    code, _ = await c.wait_closed()
    assert code == 4001


def _rsa_pair() -> tuple[bytes, bytes]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def _claims(**extra: object) -> dict[str, object]:
    now = int(time.time())
    return {"sub": "mallory", "role": "ADMIN", "iat": now, "nbf": now, "exp": now + 600, **extra}


@pytest.mark.parametrize("case", ["expired", "wrong_signature", "alg_none", "wrong_audience", "no_sub"])
async def test_bad_tokens_are_refused(start_gateway, connect, case: str) -> None:
    """Expired, forged, unsigned, wrong-audience and sub-less tokens get an error, then close 4003."""
    live = await start_gateway(jwt_audience="vybe-live", jwt_leeway_s=0)
    secret = live.settings.jwt_secret
    token = {
        "expired": lambda: jwt.encode(_claims(exp=int(time.time()) - 10, aud="vybe-live"), secret, "HS256"),
        "wrong_signature": lambda: jwt.encode(_claims(aud="vybe-live"), "y" * 40, "HS256"),
        "alg_none": lambda: jwt.encode(_claims(aud="vybe-live"), None, "none"),
        "wrong_audience": lambda: jwt.encode(_claims(aud="other-app"), secret, "HS256"),
        "no_sub": lambda: jwt.encode({k: v for k, v in _claims(aud="vybe-live").items() if k != "sub"}, secret),
    }[case]()
    c = await connect(live)
    r = await c.call("auth", token=token)
    assert r["type"] == "error"
    assert r["code"] == ("token_expired" if case == "expired" else "auth_failed")
    code, _ = await c.wait_closed()
    assert code == 4003


async def test_hs_rs_key_confusion_is_refused(start_gateway, connect) -> None:
    """With RS256 configured, a token HMAC-signed using the public key as secret is refused."""
    private, public = _rsa_pair()
    live = await start_gateway(jwt_algorithms="RS256", jwt_public_key=public.decode())
    good = jwt.encode(_claims(), private, "RS256")
    c = await connect(live)
    assert (await c.call("auth", token=good))["type"] == "ack"
    # Forge the token by hand: pyjwt refuses to HMAC-sign with a public key.
    import base64
    import hashlib
    import hmac

    def b64(b: bytes) -> str:
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = b64(json.dumps(_claims()).encode())
    sig = b64(hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest())
    evil = await connect(live)
    r = await evil.call("auth", token=f"{head}.{body}.{sig}")
    assert r["type"] == "error" and r["code"] == "auth_failed"


def test_a_public_key_is_parsed_once_at_start_and_a_bad_one_fails_there() -> None:
    """The RS/ES key is loaded when the verifier is built (not per token), so a key that is not one
    for the configured algorithm stops the start with the setting named, as does an algorithm listed
    that the key cannot serve."""
    from common.settings import Settings, SettingsError
    from gateway.auth import Verifier

    private, public = _rsa_pair()
    with pytest.raises(SettingsError, match="VYBE_JWT_PUBLIC_KEY"):
        Verifier(Settings(jwt_algorithms="ES256", jwt_public_key=public.decode()))
    with pytest.raises(SettingsError, match="VYBE_JWT_PUBLIC_KEY"):
        Verifier(Settings(jwt_algorithms="RS256", jwt_public_key="-----BEGIN PUBLIC KEY-----\nnope\n"))
    with pytest.raises(SettingsError, match="VYBE_JWT_ALGORITHMS"):  # a typo is named, not a KeyError
        Verifier(Settings(jwt_algorithms="RS256,RS265", jwt_public_key=public.decode()))
    with pytest.raises(SettingsError, match="private key"):  # pyjwt would take it and fail on every token
        Verifier(Settings(jwt_algorithms="RS256", jwt_public_key=private.decode()))
    with pytest.raises(SettingsError, match="not a public key for ES256"):  # one key, one key type
        Verifier(Settings(jwt_algorithms="RS256,ES256", jwt_public_key=public.decode()))
    verifier = Verifier(Settings(jwt_algorithms="RS256,PS256", jwt_public_key=public.decode()))
    assert not isinstance(verifier.key, str)  # parsed
    assert verifier.verify(jwt.encode(_claims(), private, "RS256")).user_id == "mallory"
    assert verifier.verify(jwt.encode(_claims(), private, "PS256")).user_id == "mallory"


async def test_header_token_invalid_closes(live, connect) -> None:
    """A bad token in the Authorization header gets an error frame and close 4003."""
    c = await connect(live, "not.a.token", header=True)
    code, _ = await c.wait_closed()
    assert code == 4003
    assert any(m.get("code") == "auth_failed" for m in c.messages)


async def test_flood_gets_rate_limited_then_closed(start_gateway, connect) -> None:
    """Past the burst, commands get rate_limited with retry_after; a client that keeps flooding is closed 4029."""
    live = await start_gateway(rate_per_s=5, rate_burst=5)
    c = await connect(live, live.token("flooder"))
    for i in range(80):
        await c.ws.send(json.dumps({"type": "ping", "id": f"p{i}"}))
    err = await c.wait_for(lambda m: m.get("code") == "rate_limited")
    assert err["retry_after"] > 0
    code, _ = await c.wait_closed()
    assert code == 4029


async def test_rate_limit_recovers(start_gateway, connect) -> None:
    """A client that backs off after rate_limited can send again: the refusal is not fatal."""
    live = await start_gateway(rate_per_s=20, rate_burst=3)
    c = await connect(live, live.token("polite"))
    for i in range(6):
        await c.ws.send(json.dumps({"type": "ping", "id": f"q{i}"}))
    err = await c.wait_for(lambda m: m.get("code") == "rate_limited")
    await asyncio.sleep(err["retry_after"] + 0.2)
    await _alive(c)


async def test_channel_authorization(live, connect) -> None:
    """A MEMBER cannot watch mod:flagged or another user's channel; unknown channels are refused."""
    c = await connect(live, live.token("member1"))
    assert (await c.call("subscribe", channel="mod:flagged"))["code"] == "forbidden"
    assert (await c.call("subscribe", channel="user:someone-else"))["code"] == "forbidden"
    assert (await c.call("subscribe", channel="chat:lobby"))["code"] == "unknown_channel"
    assert (await c.call("unsubscribe", channel="feed"))["code"] == "not_subscribed"
    mod = await connect(live, live.token("mod1", "MODERATOR"))
    await mod.ok("subscribe", channel="mod:flagged")


async def test_subscription_limit(start_gateway, connect) -> None:
    """Subscriptions past the per-connection limit get too_many_subscriptions."""
    live = await start_gateway(max_subscriptions=2)
    c = await connect(live, live.token("greedy"))
    rooms = [f"looproom:00000000-0000-0000-0000-00000000000{i}" for i in range(4)]
    results = [await c.call("subscribe", channel=r) for r in rooms]
    assert [r["type"] for r in results[:2]] == ["ack", "ack"]
    assert results[-1]["code"] == "too_many_subscriptions"


async def test_token_expiry_warns_then_closes_unless_refreshed(start_gateway, connect) -> None:
    """A token about to expire gets a warning; a fresh token keeps the socket; an unrefreshed one closes 4004."""
    live = await start_gateway(jwt_leeway_s=0, token_warn_s=1.0)
    kept = await connect(live, live.token("refresher", ttl=2))
    dropped = await connect(live, live.token("sleeper", ttl=2))
    await kept.wait_for(lambda m: m["type"] == "notice" and m["code"] == "token_expiring", timeout=4)
    await kept.ok("auth", token=live.token("refresher", ttl=60))
    assert (await kept.call("auth", token=live.token("someone-else")))["code"] == "auth_failed"
    code, _ = await dropped.wait_closed(timeout=6)
    assert code == 4004
    await asyncio.sleep(1.5)
    await _alive(kept)


async def test_a_token_already_in_its_warning_window_is_acked_before_it_is_warned(start_gateway, connect) -> None:
    """A token with less left than the warning time gets its ack first, then `token_expiring` (a client that
    waits for the ack before it listens for notices must not miss the warning), over a frame and a header."""
    live = await start_gateway(jwt_leeway_s=0, token_warn_s=30.0)
    c = await connect(live)
    await c.send("auth", token=live.token("hurried", ttl=10))
    notice = await c.wait_for(lambda m: m["type"] == "notice" and m["code"] == "token_expiring")
    kinds = [m["type"] for m in c.messages]
    assert kinds.index("ack") < c.messages.index(notice), c.messages
    h = await connect(live, live.token("hurried-header", ttl=10), header=True)
    notice = await h.wait_for(lambda m: m["type"] == "notice" and m["code"] == "token_expiring")
    assert [m["type"] for m in h.messages].index("ack") < h.messages.index(notice), h.messages


async def test_unpaired_surrogate_and_long_ids_get_typed_errors(live, connect) -> None:
    """A lone surrogate escape is invalid content (answered with the command's id); an id over 64
    characters is invalid (no id echoed); the longest vybe in emoji escapes fits in one frame."""
    c = await connect(live, live.token("edge"))
    await c.ws.send('{"type":"post_vybe","id":"s-0","content":"\\ud800"}')
    lone = await c.reply("s-0")
    assert lone["code"] == "invalid_content"
    start = len(c.messages)
    await c.ws.send('{"type":"ping","id":"' + "x" * 65 + '"}')
    long_id = await c.wait_for(lambda m: m.get("type") == "error", start=start)
    assert long_id["code"] == "invalid" and long_id["id"] is None
    emoji = "\\ud83d\\ude00" * 5000  # 5,000 characters written as JSON escapes: 60,000 bytes
    await c.ws.send('{"type":"post_vybe","id":"big","content":"' + emoji + '"}')
    assert (await c.reply("big"))["type"] == "ack"
