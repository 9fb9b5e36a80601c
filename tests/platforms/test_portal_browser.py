"""The portal in a real browser (Debian's Chromium through Playwright): a scientist signs
in, finds and reserves capacity, launches a workstation in the lease, opens its terminal
through the gateway and runs a command, shares it, sees the lease on the calendar, extends
it and deletes everything, with no serious accessibility problem on any page on the way.
Screenshots of the key pages go to docs/screenshots/ (the README shows them)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from tests.agent.test_terminal_browser import SCREEN
from tests.chromium import chromium
from tests.tunnel.conftest import PASSWORD as ADMIN_PASSWORD
from tests.tunnel.conftest import Served, needs_gateway

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = needs_gateway

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "docs" / "screenshots"
AXE = ROOT / "src" / "ecliptic" / "web" / "node_modules" / "axe-core" / "axe.min.js"
PASSWORD = "browser-test-password"


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert AXE.exists(), f"{AXE} is missing: run 'make setup' (npm ci of the portal's packages)"
    with chromium() as b:
        yield b


def shot(page: Page, name: str) -> None:
    """A screenshot of what the user sees now, for the README."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def accessible(page: Page) -> None:
    """axe-core finds no serious or critical WCAG 2 A/AA violation on this page."""
    page.add_script_tag(path=str(AXE))
    found = page.evaluate(
        """async () => {
            const r = await axe.run(document, {runOnly: ["wcag2a", "wcag2aa"]});
            return r.violations.filter(v => ["serious", "critical"].includes(v.impact))
              .map(v => ({id: v.id, help: v.help, nodes: v.nodes.map(n => n.target.join(" "))}));
        }"""
    )
    assert not found, f"{page.url}: {json.dumps(found, indent=1)}"


def sign_in(page: Page, served: Served, user: str) -> None:
    page.goto(f"{served.url}/login")
    accessible(page)
    shot(page, "sign-in")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/t/default/$"))


def test_reserve_launch_reach_share_extend_and_delete_in_a_browser(
    served: Served, browser: Browser
) -> None:
    api = served.api
    for user in ("eve", "fred"):
        r = api.post("/users", json={"name": user, "password": PASSWORD})
        assert r.status_code == 201, r.text
        r = api.put("/tenancies/default/members", json={"user": user, "role": "member"})
        assert r.status_code == 200, r.text
    context = browser.new_context(viewport={"width": 1366, "height": 900}, bypass_csp=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    sign_in(page, served, "eve")
    accessible(page)
    shot(page, "dashboard")

    # Find capacity: one m1.small slot for 2 hours, and reserve the first window.
    page.click("nav >> text=Reservations")
    page.click("text=Find capacity")
    page.select_option("#kind", "flavor")
    page.select_option("#flavor", "m1.small")
    page.fill("#duration", "2h")
    page.click("button:has-text('Find')")
    page.wait_for_selector("text=Reserve this")
    accessible(page)
    shot(page, "find-capacity")
    page.click("button:has-text('Reserve this') >> nth=0")
    page.fill("#name", "eve-week")
    page.click("button:has-text('Show the cost')")
    page.wait_for_selector("text=Confirm")
    accessible(page)
    shot(page, "lease-confirm")
    page.click("button:has-text('Reserve for')")
    page.wait_for_selector("text=Lease created")
    wait_lease_active(served, "eve-week")

    # Launch a workstation in that lease from the catalogue.
    page.click("nav >> text=Catalogue")
    accessible(page)
    shot(page, "catalogue")
    page.click("a[aria-label='Launch Linux workstation']")
    page.fill("#f-name", "evews")
    page.select_option("#f-lease", "eve-week")
    page.click("button:has-text('Check and show the cost')")
    page.wait_for_selector("text=It fits")
    accessible(page)
    shot(page, "platform-create")
    page.click("button:has-text('Create evews')")
    page.wait_for_url(re.compile(r"/t/default/platforms/evews$"))
    # The page follows the build live and reloads itself when the phase changes.
    page.wait_for_selector("#phase[data-phase=READY]", timeout=240_000)
    page.wait_for_selector("#timeline li:has-text('READY')")
    accessible(page)
    shot(page, "platform")

    # Its terminal, through the gateway: one sign-in for both (no second password).
    with context.expect_page() as opened:
        page.click("a:has-text('Open Terminal')")
    term = opened.value
    term.wait_for_selector(".xterm-screen", timeout=30_000)
    term.click(".xterm-screen")
    term.keyboard.type("echo $((6*7))-$(hostname)\n")
    term.wait_for_function(f"({SCREEN})().includes('42-evews-ws1')", timeout=20_000)
    shot(term, "terminal")
    term.close()

    # Share it with fred.
    page.check("input[name=users][value=fred]")
    page.click("button:has-text('Save who may use it')")
    page.wait_for_selector("text=Access list saved")
    assert page.is_checked("input[name=users][value=fred]")
    body = get(served, "/platforms/evews").json()
    assert sorted(body["access"]) == ["eve", "fred"]

    # The lease on the calendar; extend it by an hour with the cost shown first.
    page.click("nav >> text=Calendar")
    page.wait_for_selector("svg.chart text:has-text('eve-week')")
    accessible(page)
    shot(page, "calendar")
    page.locator("svg.chart a text", has_text="eve-week").click()
    page.fill("#amount", "1h")
    page.click("button:has-text('Show the cost')")
    page.wait_for_selector("text=Confirm the change")
    accessible(page)
    shot(page, "lease-extend")
    end_before = get(served, "/leases/eve-week").json()["end"]
    page.click("button:has-text('Confirm the change')")
    page.wait_for_selector("text=Lease changed")
    assert get(served, "/leases/eve-week").json()["end"] > end_before

    # Delete the platform (the confirmation names what goes), then end the lease.
    page.goto(f"{served.url}/t/default/platforms/evews")
    page.click("text=Delete this platform")
    page.wait_for_selector("text=This deletes its 1 server(s) (evews-ws1")
    shot(page, "platform-delete")
    page.fill("#confirm", "evews")
    page.click("button:has-text('Delete evews')")
    page.wait_for_selector("text=Platform evews is being deleted")
    page.goto(f"{served.url}/t/default/leases/eve-week?end=true")
    page.click("button:has-text('End lease eve-week')")
    page.wait_for_selector("text=Lease ended")
    assert not errors, errors
    context.close()
    wait_gone(served, "evews")


def get(served: Served, path: str) -> httpx.Response:
    """An API request on a new connection: the shared client's kept-alive one may be closed
    by the server while the browser works (a race at its keep-alive timeout)."""
    return httpx.get(f"{served.url}/api/v1{path}", headers=dict(served.api.headers), timeout=30)


def wait_lease_active(served: Served, name: str) -> None:
    deadline = time.monotonic() + 30
    while get(served, f"/leases/{name}").json()["phase"] != "ACTIVE":
        assert time.monotonic() < deadline
        time.sleep(0.1)


def wait_gone(served: Served, name: str) -> None:
    deadline = time.monotonic() + 60
    while get(served, f"/platforms/{name}").status_code != 404:
        assert time.monotonic() < deadline, "the platform was not deleted"
        time.sleep(0.2)


def test_every_page_is_accessible(served: Served, browser: Browser) -> None:
    """axe-core on every kind of page, the operator's included, with data on them."""
    r = get(served, "/leases/axe-lease")
    if r.status_code == 404:
        r = served.api.post(
            "/leases",
            json={
                "name": "axe-lease",
                "duration": "2h",
                "reservations": [{"kind": "flavor", "flavor": "m1.small", "count": 1}],
            },
        )
        assert r.status_code == 201, r.text
    context = browser.new_context(viewport={"width": 1366, "height": 900}, bypass_csp=True)
    page = context.new_page()
    page.goto(f"{served.url}/login")
    page.fill("#username", "admin")
    page.fill("#password", ADMIN_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/t/default/$"))
    t = "/t/default"
    pages = {
        f"{t}/": "",
        f"{t}/catalogue": "",
        f"{t}/catalogue/slurm": "",
        f"{t}/catalogue/jupyter?name=nb&p.packages=numpy": "",
        f"{t}/platforms": "",
        f"{t}/leases": "",
        f"{t}/leases/find?kind=host&count=1&duration=4h": "",
        f"{t}/leases/new?name=x&kind=flavor&count=1&flavor=m1.small&duration=2h": "",
        f"{t}/leases/axe-lease": "",
        f"{t}/leases/axe-lease?how=extend&amount=1h": "",
        f"{t}/leases/axe-lease?end=true": "",
        f"{t}/calendar?days=14": "",
        f"{t}/servers": "",
        f"{t}/benchmarks": "",
        f"{t}/credits": "",
        f"{t}/images": "",
        "/admin/hosts": "admin-hosts",
        "/admin/tenancies": "",
        "/admin/tenancies/default": "",
        "/admin/credits": "",
        "/admin/preemptible": "",
        "/admin/efficiency": "admin-efficiency",
        "/t/nonexistent/": "",
    }
    for path, name in pages.items():
        page.goto(f"{served.url}{path}")
        accessible(page)
        if name:
            shot(page, name)
    served.api.delete("/leases/axe-lease")
    context.close()
