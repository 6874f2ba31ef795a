"""The HS* verifier (``Verifier._hs_claims``) against pyjwt's, token by token.

The gateway checks HS256/384/512 tokens itself (a sixth of pyjwt's cost on a reconnect); pyjwt stays the
reference. On every token here both must refuse, or both accept with the same claims; where ours is
stricter on purpose (padded segments, ``crit``/``b64`` headers, times that are not numbers) ours refuses
and pyjwt accepts, and nothing else differs.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
from typing import Any

import jwt
import pytest

from common.settings import Settings, SettingsError
from gateway.auth import AuthError, Verifier

SECRET = "s" * 64
NOW = int(time.time())
DAY = 86400  # offsets from NOW (taken at import, minutes before a test may run) stay far from the boundary


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _forge(header: Any, payload: Any, secret: str = SECRET, digest: Any = hashlib.sha256,
           raw_payload: bytes | None = None) -> str:
    """A token signed by hand, so that headers and payloads pyjwt would not write can be tried."""
    head = _b64(json.dumps(header).encode())
    body = _b64(raw_payload if raw_payload is not None else json.dumps(payload).encode())
    sig = _b64(hmac.new(secret.encode(), f"{head}.{body}".encode(), digest).digest())
    return f"{head}.{body}.{sig}"


def _claims(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"sub": "ana", "role": "MEMBER", "iat": NOW, "nbf": NOW, "exp": NOW + DAY}
    base.update(extra)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def _outcome(call: Any, token: str) -> tuple[str, Any]:
    try:
        return "ok", call(token)
    except AuthError as err:
        return err.code, None


def _compare(v: Verifier, token: str, *, stricter: bool = False) -> tuple[str, Any]:
    """Ours, after checking it against pyjwt: ours accepts only what pyjwt accepts, with the same
    claims; ``stricter``: pyjwt accepts what ours refuses (the documented differences)."""
    ours, theirs = _outcome(v._hs_claims, token), _outcome(v._pyjwt_claims, token)
    if ours[0] == "ok":
        assert repr(theirs) == repr(ours), token  # repr: 1, 1.0 and True are equal, but not the same claim
    else:
        assert (theirs[0] == "ok") is stricter, token
    return ours


def _verifier(**over: Any) -> Verifier:
    return Verifier(Settings(jwt_secret=SECRET, jwt_leeway_s=5, **over))


def test_valid_tokens_agree_on_every_hs_algorithm_and_claim_shape() -> None:
    v = _verifier(jwt_algorithms="HS256,HS384,HS512", jwt_audience="vybe", jwt_issuer="idp")
    shapes = [
        _claims(aud="vybe", iss="idp"),
        _claims(aud=["other", "vybe"], iss="idp", name="Ana", channels=["dating:*"], jti="j1"),
        _claims(aud="vybe", iss="idp", exp=NOW + DAY + 0.75, iat=NOW - 0.5, nbf=_DROP),
        _claims(aud="vybe", iss="idp", iat=int(time.time()) + 3),  # ahead, but within the leeway
    ]
    for alg in ("HS256", "HS384", "HS512"):
        for claims in shapes:
            token = jwt.encode(claims, SECRET, algorithm=alg, headers={"kid": "k1"})
            assert _compare(v, token)[0] == "ok"
    assert v.verify(jwt.encode(shapes[1], SECRET, algorithm="HS512")).channels == ("dating:*",)


@pytest.mark.parametrize(("claims", "code"), [
    (_claims(exp=NOW - DAY), "token_expired"),
    (_claims(nbf=NOW + DAY), "auth_failed"),
    (_claims(iat=NOW + DAY), "auth_failed"),
    (_claims(exp=_DROP), "auth_failed"),
    (_claims(iat=_DROP), "auth_failed"),
    (_claims(sub=_DROP), "auth_failed"),
    (_claims(sub=None), "auth_failed"),
    (_claims(sub=7), "auth_failed"),
    (_claims(jti=7), "auth_failed"),
    (_claims(exp=None), "auth_failed"),
])
def test_refused_claims_agree(claims: dict[str, Any], code: str) -> None:
    v = _verifier()
    assert _compare(v, _forge({"alg": "HS256", "typ": "JWT"}, claims))[0] == code


@pytest.mark.parametrize("claims", [
    _claims(),  # no aud, no iss
    _claims(aud="other", iss="idp"),
    _claims(aud=[], iss="idp"),
    _claims(aud=["a", 7], iss="idp"),
    _claims(aud={"vybe": 1}, iss="idp"),
    _claims(aud="vybe", iss="other"),
    _claims(aud="vybe", iss=7),
    _claims(aud="vybe"),
])
def test_audience_and_issuer_agree(claims: dict[str, Any]) -> None:
    v = _verifier(jwt_audience="vybe", jwt_issuer="idp")
    assert _compare(v, _forge({"alg": "HS256", "typ": "JWT"}, claims))[0] == "auth_failed"


def test_headers_and_keys_agree() -> None:
    v = _verifier(jwt_algorithms="HS256")
    good = _claims()
    for token in [
        jwt.encode(good, "t" * 64, algorithm="HS256"),  # another secret
        jwt.encode(good, SECRET, algorithm="HS512"),  # an algorithm not allowed
        jwt.encode(good, None, algorithm="none"),
        _forge({"alg": "none"}, good),
        _forge({"typ": "JWT"}, good),  # no alg
        _forge({"alg": None}, good),
        _forge({"alg": ["HS256"]}, good),
        _forge(["HS256"], good),  # a header that is not an object
        _forge({"alg": "HS256", "kid": 5}, good),
        _forge({"alg": "HS256"}, ["sub"]),  # a payload that is not an object
        _forge({"alg": "HS256"}, None, raw_payload=b"{not json"),
        _forge({"alg": "HS256"}, None, raw_payload=f'{{"sub": "a", "iat": {NOW}, "exp": NaN}}'.encode()),
        _forge({"alg": "HS256"}, good, digest=hashlib.sha512),  # alg says 256, signed with 512
        "", "a.b", "a.b.c.d", "..", "\u00e9.b.c",
    ]:
        assert _compare(v, token)[0] == "auth_failed", token
    assert _compare(v, _forge({"alg": "HS256", "typ": "JWT", "x": [1]}, good))[0] == "ok"  # unknown headers: fine


def test_where_ours_is_stricter_on_purpose() -> None:
    v = _verifier()
    def pad(segment: str) -> str:
        return segment + "=" * (-len(segment) % 4)

    for name in ("Ana", "Ana M", "Ana Ma"):  # payload lengths that leave 0, 1 and 2 padding characters
        head, body = pad(_b64(b'{"alg":"HS256"}')), pad(_b64(json.dumps(_claims(name=name)).encode()))
        sig = pad(_b64(hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()))
        assert "=" in head + body + sig
        assert _compare(v, f"{head}.{body}.{sig}", stricter=True)[0] == "auth_failed"  # signed as padded
    assert _compare(v, _forge({"alg": "HS256", "crit": ["b64"], "b64": True}, _claims()), stricter=True)[0] \
        == "auth_failed"
    assert _compare(v, _forge({"alg": "HS256"}, _claims(exp=str(NOW + DAY))), stricter=True)[0] == "auth_failed"
    assert _compare(v, jwt.encode(_claims(exp=True), SECRET, algorithm="HS256"))[0] == "auth_failed"


def test_duplicate_claims_resolve_as_pyjwt_resolves_them() -> None:
    v = _verifier()
    raw = json.dumps(_claims())[:-1] + ', "sub": "mallory"}'
    ours = _compare(v, _forge({"alg": "HS256"}, None, raw_payload=raw.encode()))
    assert ours[0] == "ok" and ours[1]["sub"] == "mallory"


def test_every_mutation_of_a_valid_token_is_refused_by_both_or_neither() -> None:
    """Each character of a valid token changed, removed or doubled, and dots and padding inserted:
    ours accepts only what pyjwt accepts (a changed character can still decode to the same bytes in
    the last base64 character: both must then refuse, as the spelling is not canonical)."""
    v = _verifier()
    token = jwt.encode(_claims(name="Ana", channels=["community:7"]), SECRET, algorithm="HS256")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/"
    rng = random.Random(13)
    tried = accepted = 0
    for i in range(len(token)):
        for new in rng.sample(alphabet, 6):
            for mutated in (token[:i] + new + token[i + 1:], token[:i] + token[i + 1:], token[:i] + new + token[i:]):
                if mutated == token:
                    continue
                tried += 1
                ours = _outcome(v._hs_claims, mutated)
                theirs = _outcome(v._pyjwt_claims, mutated)
                assert ours[0] != "ok" or theirs == ours, mutated
                assert theirs[0] != "ok" or "=" in mutated, mutated  # padding: pyjwt takes it, ours not
                accepted += ours[0] == "ok"
    assert tried > 3000 and accepted == 0


def test_a_secret_that_is_a_key_stops_the_start() -> None:
    with pytest.raises(SettingsError, match="VYBE_JWT_SECRET"):
        Verifier(Settings(jwt_secret="-----BEGIN PUBLIC KEY-----\n" + "A" * 40 + "\n-----END PUBLIC KEY-----"))


@pytest.mark.parametrize("where", ["header", "payload"])
def test_deeply_nested_json_is_an_auth_error_not_a_crash(where: str) -> None:
    """~1000 levels of nesting make the JSON decoder raise RecursionError: ours answers auth_failed,
    as pyjwt does (the header is read before the signature, so anyone can send this)."""
    v = _verifier()
    nested = '{"alg": "HS256", "x": ' + "[" * 1000 + "]" * 1000 + "}"
    if where == "header":
        token = f"{_b64(nested.encode())}.e30.AAAA"
    else:
        token = _forge({"alg": "HS256"}, None, raw_payload=nested.encode())
    assert _compare(v, token)[0] == "auth_failed"
    with pytest.raises(AuthError):
        v.verify(token)


def test_only_auth_errors_come_out_of_verify() -> None:
    """Whatever the token, verify() raises AuthError (its callers catch nothing else)."""
    v = _verifier()
    huge_exp = _forge({"alg": "HS256"}, None,
                      raw_payload=f'{{"sub": "a", "iat": {NOW}, "exp": 1{"0" * 400}}}'.encode())
    for token in [huge_exp, "a" * 20000, "\ud800.e30.AAAA", ".".join(["e30"] * 3), 5, None]:
        with pytest.raises(AuthError):
            v.verify(token)  # type: ignore[arg-type]
    rs = Verifier(Settings(jwt_algorithms="RS256", jwt_public_key=_RSA_PUBLIC))
    with pytest.raises(AuthError):
        rs.verify("\ud800.e30.AAAA")


def _rsa_public() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


_RSA_PUBLIC = _rsa_public()


@pytest.mark.parametrize("raw", [
    '{"sub":"ana","iat":%d,"exp":%d}',
    ' { "sub" : "ana" , "iat" : %d , "exp" : %d } ',
    '{"sub":"\\u0061na","iat":%d.0,"exp":%d.999}',
    '{"sub":"ana","iat":%d,"exp":%d,"big":123456789012345678901234567890,"neg":-0,"f":1e-300}',
    '{"sub":"ana","iat":%d,"exp":%d,"nested":{"a":[1,{"b":null}]},"name":"\\ud83d\\ude00"}',
    '{"sub":"ana","iat":%d,"exp":%d,"exp":1}',
    '{"sub":"ana","iat":%d,"exp":%de0}',
    '{"sub":"ana","iat":%d,"exp":%d,"aud":null}',
    '{"sub":"ana","iat":%d,"exp":%d}\n',
    '{"sub":"ana","iat":%d,"exp":%d} x',
    '{"sub":"ana","iat":%d,"exp":%d,"x":"\\ud800"}',
    '\ufeff{"sub":"ana","iat":%d,"exp":%d}',
])
def test_signed_payloads_that_test_the_json_parsers(raw: str) -> None:
    """Correctly signed tokens whose payload JSON is unusual (whitespace, escapes, big and negative
    numbers, duplicate keys, trailing data, a lone surrogate, a BOM): the claims pass the signature,
    so these reach the JSON parsers, and ours must agree with pyjwt's or refuse."""
    v = _verifier()
    _compare(v, _forge({"alg": "HS256"}, None, raw_payload=(raw % (NOW, NOW + DAY)).encode()),
             stricter=raw.startswith("\ufeff") or "\\ud800" in raw)
