"""Single sign-on in a real browser (Debian's Chromium through Playwright): the sign-in
page's button, the provider's own pages, and back in the portal, in alice's tenancy."""

from __future__ import annotations

import re
from pathlib import Path

from tests.chromium import chromium
from tests.oidc.conftest import Ecliptic

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def test_alice_signs_in_with_the_institutions_provider(ecliptic: Ecliptic) -> None:
    with chromium() as b:
        page = b.new_page(viewport={"width": 1366, "height": 800})
        page.goto(f"{ecliptic.url}/login")
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "sign-in-sso.png"))
        page.click("a.button.oidc")
        # The provider's own sign-in form, then its consent page.
        page.wait_for_selector("input[name=login]")
        page.fill("input[name=login]", "alice")
        page.fill("input[name=password]", "any password")
        page.click("button[type=submit]")
        page.wait_for_selector("button[type=submit]")
        if "/login/oidc/callback" not in page.url and "/t/" not in page.url:
            page.click("button[type=submit]")  # consent
        page.wait_for_url(re.compile(r"/t/physics/$"))
        assert page.inner_text("h1") == "physics"
        assert "alice" in page.inner_text("header")
        cookies = {c["name"]: c for c in page.context.cookies()}
        session = cookies["ecliptic_session"]
        assert session["httpOnly"] and session["sameSite"] == "Lax"
