"""The portal answers: sign-in, the dashboard, and the sign-in redirect for strangers."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.web.conftest import BASE, Browser


def test_a_stranger_is_sent_to_sign_in(portal_app: Any) -> None:
    r = TestClient(portal_app, base_url=BASE).get("/t/physics/", follow_redirects=False)
    assert r.status_code == 303
    assert r.headers["location"] == "/login?next=%2Ft%2Fphysics%2F"


def test_the_dashboard_shows_the_tenancy_and_its_credits(alice: Browser) -> None:
    r = alice.get("/", follow_redirects=True)
    assert r.status_code == 200
    assert "<h1>physics</h1>" in r.text
    assert '<th scope="row">host:cpu</th>' in r.text and "Hours left" in r.text


def test_over_https_the_session_is_a_host_only_secure_cookie_revoked_at_sign_out(
    portal_app: Any, people: dict[str, str]
) -> None:
    base = "https://portal.test"
    client = TestClient(portal_app, base_url=base)
    r = client.post(
        "/login",
        data={"username": "carol", "password": "portal-test-password", "next": "/"},
        headers={"Origin": base},
        follow_redirects=False,
    )
    assert r.status_code == 303
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("__Host-ecliptic_session=")
    for flag in ("HttpOnly", "Secure", "Path=/", "SameSite=lax"):
        assert flag.lower() in cookie.lower(), cookie
    assert "domain=" not in cookie.lower()
    page = client.get("/t/physics/")
    assert page.status_code == 200 and "carol" in page.text
    stolen = client.cookies.get("__Host-ecliptic_session")
    csrf = page.text.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    r = client.post(
        "/logout",
        data={"csrf": csrf, "next": "/login"},
        headers={"Origin": base},
        follow_redirects=False,
    )
    assert r.status_code == 303
    # The token itself is revoked on the server: replaying the old cookie gets nothing.
    again = TestClient(portal_app, base_url=base, cookies={"__Host-ecliptic_session": stolen})
    r = again.get("/t/physics/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_a_browser_gets_pages_for_errors_and_the_api_problem_documents(alice: Browser) -> None:
    html = {"Accept": "text/html,application/xhtml+xml"}
    r = alice.get("/no/such/page", headers=html)
    assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
    assert "There is no page here" in r.text and r.headers["x-frame-options"] == "DENY"
    r = alice.get("/t/physics/leases", params={"ended": "zz"}, headers=html)
    assert r.status_code == 422 and "<h1>Invalid input</h1>" in r.text and "ended" in r.text
    r = alice.get("/api/v1/no-such-thing", headers=html)
    assert r.status_code == 404 and r.headers["content-type"] == "application/problem+json"
