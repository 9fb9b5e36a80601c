"""The ID token's checks, with keys made here: what a provider (or someone posing as one)
could send that must be refused."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from ecliptic.services.oidc import InvalidIdToken, check_id_token

ISSUER = "https://idp.example.org/realms/uni"
CLIENT = "ecliptic"
NONCE = "n-0S6_WzA2Mj"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())


def jwk(key: Any, kid: str, **extra: str) -> dict[str, Any]:
    algorithm = (
        jwt.algorithms.RSAAlgorithm
        if isinstance(key, rsa.RSAPrivateKey)
        else (jwt.algorithms.ECAlgorithm)
    )
    data: dict[str, Any] = algorithm.to_jwk(key.public_key(), as_dict=True)
    return {**data, "kid": kid, "use": "sig", **extra}


KEYS = [jwk(KEY, "k1"), jwk(EC_KEY, "k2")]


def claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": CLIENT,
        "sub": "248289761001",
        "iat": now,
        "exp": now + 300,
        "nonce": NONCE,
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def sign(body: dict[str, Any], key: Any = KEY, alg: str = "RS256", kid: str | None = "k1") -> str:
    headers = {"kid": kid} if kid else {}
    return jwt.encode(body, key, algorithm=alg, headers=headers)


def check(token: str, keys: list[dict[str, Any]] = KEYS, nonce: str = NONCE) -> dict[str, Any]:
    return check_id_token(
        token,
        keys,
        issuer=ISSUER,
        client_id=CLIENT,
        nonce=nonce,
        algorithms=["RS256", "ES256", "HS256", "none"],
    )


def test_a_good_token_gives_its_claims() -> None:
    assert check(sign(claims()))["sub"] == "248289761001"
    assert check(sign(claims(), EC_KEY, "ES256", "k2"))["sub"] == "248289761001"
    # Without a key id: the one key of the kind.
    assert check(sign(claims(), kid=None), [jwk(KEY, "only")])["nonce"] == NONCE


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda: sign(claims(nonce="another-sign-in")), "nonce"),
        (lambda: sign(claims(nonce=None)), "nonce"),
        (lambda: sign(claims(aud="another-client")), "another application"),
        (lambda: sign(claims(aud=[CLIENT, "other"], azp="other")), "another application"),
        (lambda: sign(claims(iss="https://evil.example.org")), "another provider"),
        (lambda: sign(claims(exp=int(time.time()) - 3600)), "expired"),
        (lambda: sign(claims(exp=None)), "exp"),
        (lambda: sign(claims(), OTHER_KEY), "signature is wrong"),
        (lambda: sign(claims(), OTHER_KEY, kid="k9"), "key the provider does not publish"),
        (lambda: sign(claims(), KEY, kid="k2"), "key the provider does not publish"),
        (
            lambda: jwt.encode(claims(), "a shared secret of thirty-two bytes!", algorithm="HS256"),
            "'HS256'",
        ),
        (lambda: jwt.encode(claims(), None, algorithm="none"), "'none'"),
        (lambda: "not.a.token", "not a signed token"),
    ],
    ids=[
        "wrong-nonce",
        "no-nonce",
        "wrong-audience",
        "issued-to-another-party",
        "wrong-issuer",
        "expired",
        "no-expiry",
        "forged-signature",
        "unknown-key",
        "key-of-another-kind",
        "hmac",
        "unsigned",
        "garbage",
    ],
)
def test_a_bad_token_is_refused_saying_why(make: Callable[[], str], why: str) -> None:
    # Made when the test runs, not when it is collected: a long run would expire them.
    with pytest.raises(InvalidIdToken) as refused:
        check(make())
    assert why in refused.value.message
    assert "Start signing in again" in refused.value.message


def test_a_key_published_for_another_algorithm_is_not_used_for_this_one() -> None:
    token = sign(claims(), KEY, "PS256")
    with pytest.raises(InvalidIdToken, match="does not publish"):
        check_id_token(
            token,
            [jwk(KEY, "k1", alg="RS256")],
            issuer=ISSUER,
            client_id=CLIENT,
            nonce=NONCE,
            algorithms=["RS256", "PS256"],
        )


def test_only_the_algorithms_the_provider_announces_are_taken() -> None:
    with pytest.raises(InvalidIdToken, match="ES256"):
        check_id_token(
            sign(claims(), EC_KEY, "ES256", "k2"),
            KEYS,
            issuer=ISSUER,
            client_id=CLIENT,
            nonce=NONCE,
            algorithms=["RS256"],
        )
