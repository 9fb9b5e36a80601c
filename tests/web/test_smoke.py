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
