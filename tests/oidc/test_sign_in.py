"""Signing in with a real OpenID provider (npm's oidc-provider), over HTTP, through the
provider's own sign-in and consent pages."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import select

from ecliptic.api.app import create_app
from ecliptic.services import identity
from ecliptic.services.auth import authenticate
from ecliptic.services.caller import Caller
from ecliptic.store.models import Membership, OidcLink, Tenancy, User
from tests.oidc.conftest import Browser, Ecliptic, OpenIdProvider, start_runtime
from tests.ports import free_port


def memberships(ecliptic: Ecliptic, name: str) -> dict[str, tuple[str, str]]:
    """``{tenancy: (role, origin)}`` of a user."""
    with ecliptic.runtime.db.read() as session:
        rows = session.execute(
            select(Tenancy.name, Membership.role, Membership.origin)
            .join(Membership, Membership.tenancy_id == Tenancy.id)
            .join(User, User.id == Membership.user_id)
            .where(User.name == name)
        ).all()
    return {t: (r, o) for t, r, o in rows}


def user(ecliptic: Ecliptic, name: str) -> User:
    with ecliptic.runtime.db.read() as session:
        u = session.scalar(select(User).where(User.name == name))
        assert u is not None, f"no user {name}"
        return u


def admin_caller(ecliptic: Ecliptic) -> Caller:
    a = user(ecliptic, "admin")
    return Caller(a.id, a.name, True)


def test_alice_signs_in_as_a_member_of_physics_and_the_cookie_works(
    ecliptic: Ecliptic, browser: Browser
) -> None:
    r = browser.sign_in("alice", next="/portal/servers?x=1")
    assert r.status_code == 303, r.text
    assert r.headers["location"] == "/portal/servers?x=1"
    set_cookie = r.headers["set-cookie"]
    assert "ecliptic_session=" in set_cookie
    assert "HttpOnly" in set_cookie and "SameSite=lax" in set_cookie
    assert f"Max-Age={int(ecliptic.runtime.settings.gateway_session_ttl.total_seconds())}" in (
        set_cookie
    )
    assert memberships(ecliptic, "alice") == {"physics": ("member", "oidc")}
    alice = user(ecliptic, "alice")
    assert not alice.is_admin and alice.password_hash is None
    assert alice.email == "alice@example.org"

    token = browser.portal_cookie()
    assert token is not None
    assert authenticate(ecliptic.runtime.db, token).name == "alice"
    # The API takes the browser token as a bearer token, and she sees her tenancy.
    r = httpx.get(f"{ecliptic.url}/api/v1/tenancies", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    assert [t["name"] for t in r.json()["items"]] == ["physics"]
    # The portal's own pages know her: the gateway's authorize page does not send her to
    # /login, but says this service does not exist.
    r = browser.http.get(f"{ecliptic.url}/gateway/authorize", params={"host": "x.localhost"})
    assert r.status_code != 303 and "cannot open this service" in r.text
    r = httpx.get(f"{ecliptic.url}/gateway/authorize", params={"host": "x.localhost"})
    assert r.status_code == 303 and r.headers["location"].startswith("/login?")

    # Signing in again is the same user, not a second one.
    again = Browser(ecliptic)
    try:
        assert again.sign_in("alice").status_code == 303
    finally:
        again.close()
    with ecliptic.runtime.db.read() as session:
        assert (
            len(list(session.scalars(select(OidcLink).where(OidcLink.subject == "sub-alice")))) == 1
        )
        assert len(list(session.scalars(select(User).where(User.name.like("alice%"))))) == 1


def test_bob_in_the_ops_group_becomes_an_administrator(
    ecliptic: Ecliptic, browser: Browser
) -> None:
    r = browser.sign_in("bob")
    assert r.status_code == 303, r.text
    assert user(ecliptic, "bob").is_admin
    assert memberships(ecliptic, "bob") == {"chemistry": ("member", "oidc")}
    token = browser.portal_cookie()
    r = httpx.get(f"{ecliptic.url}/api/v1/users", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text


def test_leaving_a_group_removes_what_it_gave_and_keeps_what_an_admin_gave(
    ecliptic: Ecliptic, provider: OpenIdProvider
) -> None:
    first = Browser(ecliptic)
    try:
        assert first.sign_in("dave").status_code == 303
    finally:
        first.close()
    assert memberships(ecliptic, "dave") == {"physics": ("member", "oidc")}
    identity.set_membership(
        ecliptic.runtime.db, admin_caller(ecliptic), "chemistry", "dave", "member"
    )
    provider.set_groups("dave", ["physics-admins"])
    try:
        second = Browser(ecliptic)
        try:
            assert second.sign_in("dave").status_code == 303
        finally:
            second.close()
        # physics-admins gives admin in physics: the membership the groups gave changes.
        assert memberships(ecliptic, "dave") == {
            "physics": ("admin", "oidc"),
            "chemistry": ("member", "manual"),
        }
        provider.set_groups("dave", [])
        third = Browser(ecliptic)
        try:
            assert third.sign_in("dave").status_code == 303
        finally:
            third.close()
        assert memberships(ecliptic, "dave") == {"chemistry": ("member", "manual")}
    finally:
        provider.set_groups("dave", ["physics"])


def test_no_mapped_group_signs_in_but_says_to_ask_the_administrator(
    ecliptic: Ecliptic, browser: Browser
) -> None:
    r = browser.sign_in("carol")
    assert r.status_code == 403
    assert "signed in as &#x27;carol&#x27;" in r.text
    assert "ask your administrator" in r.text
    assert browser.portal_cookie() is not None
    assert memberships(ecliptic, "carol") == {}


def test_a_local_account_of_the_same_name_is_never_taken_over(
    ecliptic: Ecliptic, browser: Browser
) -> None:
    identity.create_user(ecliptic.runtime.db, None, "erin-smith", "erin-local-password")
    assert browser.sign_in("erin").status_code == 303
    token = browser.portal_cookie()
    assert token is not None
    assert authenticate(ecliptic.runtime.db, token).name == "erin-smith-2"
    assert memberships(ecliptic, "erin-smith") == {}
    assert memberships(ecliptic, "erin-smith-2") == {"chemistry": ("member", "oidc")}
    assert user(ecliptic, "erin-smith").password_hash is not None


def test_a_tampered_state_is_refused(ecliptic: Ecliptic, browser: Browser) -> None:
    url = urlsplit(browser.to_callback("alice"))
    query = dict(parse_qsl(url.query))
    query["state"] = query["state"][:-2] + "xx"
    r = browser.http.get(url._replace(query=urlencode(query)).geturl())
    assert r.status_code == 400
    assert "does not belong to this sign-in" in r.text
    assert browser.portal_cookie() is None


def test_a_callback_in_another_browser_is_refused(ecliptic: Ecliptic, browser: Browser) -> None:
    callback = browser.to_callback("alice")
    r = httpx.get(callback)  # no flow cookie: not the browser that started
    assert r.status_code == 400
    assert "not started in this browser" in r.text
    forged = httpx.get(callback, cookies={"ecliptic_oidc": "sealed:v1:abc:AAAA"})
    assert forged.status_code == 400 and "not one this site started" in forged.text


def test_a_replayed_callback_is_refused(ecliptic: Ecliptic, browser: Browser) -> None:
    callback = browser.to_callback("alice")
    flow = browser.http.cookies.get("ecliptic_oidc")
    assert flow
    assert browser.http.get(callback).status_code == 303
    # Even with the flow cookie put back, the provider takes a code only once.
    replay = httpx.get(callback, cookies={"ecliptic_oidc": flow})
    assert replay.status_code == 400, replay.text
    assert "used already or has expired" in replay.text
    assert "ecliptic_session" not in replay.headers.get("set-cookie", "")


def test_cancelling_at_the_provider_says_so(ecliptic: Ecliptic, browser: Browser) -> None:
    callback = browser.to_callback("alice", cancel=True)
    assert "error=access_denied" in callback
    r = browser.http.get(callback)
    assert r.status_code == 401
    assert "cancelled at the sign-in provider" in r.text
    assert browser.portal_cookie() is None


def test_next_cannot_leave_the_site(ecliptic: Ecliptic, browser: Browser) -> None:
    r = browser.sign_in("alice", next="https://evil.example/")
    assert r.status_code == 303 and r.headers["location"] == "/"


def test_unconfigured_says_single_sign_on_is_not_configured(tmp_path: Path) -> None:
    rt = start_runtime(tmp_path, {})
    try:
        with TestClient(create_app(rt)) as client:
            r = client.get("/login/oidc", params={"next": "/x"}, follow_redirects=False)
            assert r.status_code == 404
            assert "no single sign-on provider" in r.text
            assert "/login?next=%2Fx" in r.text
    finally:
        rt.stop()


def test_a_provider_that_does_not_answer_is_reported(tmp_path: Path) -> None:
    env = {
        "ECLIPTIC_OIDC_ISSUER": f"http://127.0.0.1:{free_port()}",
        "ECLIPTIC_OIDC_CLIENT_ID": "x",
    }
    rt = start_runtime(tmp_path, env)
    try:
        with TestClient(create_app(rt)) as client:
            r = client.get("/login/oidc", follow_redirects=False)
            assert r.status_code == 503
            assert "could not be reached" in r.text and "Try again" in r.text
    finally:
        rt.stop()


def test_the_flow_cookie_is_httponly_and_short_lived(ecliptic: Ecliptic, browser: Browser) -> None:
    r = browser.http.get(f"{ecliptic.url}/login/oidc")
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("ecliptic_oidc=") and '"' not in cookie
    assert "HttpOnly" in cookie and "Max-Age=600" in cookie and "SameSite=lax" in cookie
    query = dict(parse_qsl(urlsplit(r.headers["location"]).query))
    assert query["code_challenge_method"] == "S256"
    assert query["scope"] == "openid profile email groups"
    assert {"state", "nonce", "code_challenge"} <= set(query)
    assert query["state"] not in cookie and query["nonce"] not in cookie


def test_failed_callbacks_from_one_address_are_throttled(tmp_path: Path) -> None:
    env = {
        "ECLIPTIC_OIDC_ISSUER": f"http://127.0.0.1:{free_port()}",
        "ECLIPTIC_OIDC_CLIENT_ID": "x",
    }
    rt = start_runtime(tmp_path, env)
    try:
        with TestClient(create_app(rt)) as client:
            answers = [
                client.get("/login/oidc/callback", params={"code": "c", "state": "s"}).status_code
                for _ in range(21)
            ]
            assert answers == [400] * 20 + [429]
            r = client.get("/login/oidc/callback", params={"code": "c", "state": "s"})
            assert "too many failed sign-ins" in r.text and int(r.headers["retry-after"]) > 0
    finally:
        rt.stop()
