"""The client's side of the wire with providers that differ from the test provider: the
provider's HTTP answers are faked (httpx.MockTransport), our code runs as it is."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from ecliptic.config import OidcSettings
from ecliptic.services.oidc import (
    Flow,
    OidcClient,
    ProviderRefused,
    ProviderUnavailable,
    StateMismatch,
)

ISSUER = "https://idp.example.org"


def provider(
    seen: list[httpx.Request], metadata: dict[str, Any], token: tuple[int, dict[str, Any]]
) -> httpx.MockTransport:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/.well-known/openid-configuration":
            return httpx.Response(200, json=metadata)
        if request.url.path == "/token":
            return httpx.Response(token[0], json=token[1])
        return httpx.Response(404)

    return httpx.MockTransport(answer)


METADATA = {
    "issuer": ISSUER,
    "authorization_endpoint": f"{ISSUER}/auth",
    "token_endpoint": f"{ISSUER}/token",
    "jwks_uri": f"{ISSUER}/jwks",
    "token_endpoint_auth_methods_supported": ["client_secret_post"],
}
FLOW = Flow("st", "no", "verifier", "/", 0.0)


def client(seen: list[httpx.Request], metadata: dict[str, Any], token: Any) -> OidcClient:
    settings = OidcSettings(ISSUER, "ecliptic", client_secret="s3cret")
    return OidcClient(settings, "https://ecl.example/cb", transport=provider(seen, metadata, token))


def test_the_secret_goes_in_the_form_where_the_provider_takes_only_that() -> None:
    seen: list[httpx.Request] = []
    c = client(seen, METADATA, (400, {"error": "invalid_grant"}))
    with pytest.raises(ProviderRefused, match="used already or has expired"):
        c.finish(FLOW, code="abc")
    form = parse_qs(seen[-1].content.decode())
    assert form["client_secret"] == ["s3cret"] and form["client_id"] == ["ecliptic"]
    assert form["code_verifier"] == ["verifier"] and "authorization" not in seen[-1].headers


def test_a_provider_naming_another_issuer_is_not_trusted() -> None:
    seen: list[httpx.Request] = []
    c = client(seen, {**METADATA, "issuer": "https://evil.example"}, (200, {}))
    with pytest.raises(ProviderUnavailable, match="check ECLIPTIC_OIDC_ISSUER"):
        c.begin("/")


def test_an_answer_from_another_issuer_is_refused_before_the_code_is_used() -> None:
    seen: list[httpx.Request] = []
    c = client(seen, METADATA, (200, {}))
    with pytest.raises(StateMismatch, match="another sign-in provider"):
        c.finish(FLOW, code="abc", iss="https://evil.example")
    assert [r.url.path for r in seen] == ["/.well-known/openid-configuration"]


def test_without_scopes_listed_only_the_standard_ones_are_asked_for() -> None:
    seen: list[httpx.Request] = []
    _, url = client(seen, METADATA, (200, {})).begin("/")
    assert "scope=openid+profile+email&" in url
    listed = {**METADATA, "scopes_supported": ["openid", "groups"]}
    _, url = client(seen, listed, (200, {})).begin("/")
    assert "scope=openid+groups&" in url
