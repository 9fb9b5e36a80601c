"""A real Chromium signing in to a signed-in service through the gateway, as a new user would."""

from __future__ import annotations

import html
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from playwright.sync_api import (  # after tests.chromium: it names what is missing
    Browser,
    BrowserContext,
    Request,
)

from tests.chromium import chromium
from tests.tunnel.conftest import PASSWORD, Served, needs_gateway

pytestmark = needs_gateway

CAROL_PASSWORD = "carol-password"


@dataclass
class Notebook:
    """A service that answers HTML naming the user the gateway says is asking."""

    port: int = 0
    seen: list[dict[str, str]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Notebook:
        notebook = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                headers = {k.lower(): v for k, v in self.headers.items()}
                notebook.seen.append({"path": self.path, **headers})
                user = html.escape(headers.get("x-remote-user", ""))
                body = (
                    "<!doctype html><title>Notebook</title><h1>Notebook</h1>"
                    f'<p>Hello <span id="user">{user}</span></p>'
                    f'<p>Path <code id="path">{html.escape(self.path)}</code></p>'
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def users(self) -> set[str]:
        """Everyone the service has seen a request from."""
        return {r.get("x-remote-user", "") for r in self.seen}

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture
def notebook() -> Iterator[Notebook]:
    n = Notebook().start()
    yield n
    n.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def _context(browser: Browser) -> BrowserContext:
    context = browser.new_context()
    context.set_default_timeout(15_000)
    return context


def _hops(request: Request) -> list[tuple[str, str]]:
    """The navigation that ended in ``request``: (method, URL without query) per hop."""
    chain: list[tuple[str, str]] = []
    r: Request | None = request
    while r is not None:
        chain.append((r.method, r.url.split("?")[0]))
        r = r.redirected_from
    return chain[::-1]


def test_a_user_signs_in_in_a_browser_and_a_stranger_is_turned_away(
    served: Served, notebook: Notebook, browser: Browser
) -> None:
    svc = served.service("notebook")
    host, port = svc["host"], served.http_port
    origin = f"http://{host}:{port}"
    target = f"{origin}/notebook?x=1"
    served.ssh_r(served.bind(svc["token"]["token"]), notebook.port)
    served.wait_for(
        host, lambda r: r.status_code == 200, Authorization=served.api.headers["Authorization"]
    )
    r = served.api.post("/users", json={"name": "carol", "password": CAROL_PASSWORD})
    assert r.is_success, r.text

    # The owner opens the service: sent to the sign-in page on the API's host.
    admin = _context(browser)
    try:
        page = admin.new_page()
        started = time.monotonic()
        page.goto(target)
        assert page.url.startswith(f"{served.url}/login?")
        assert page.get_by_label("User name").is_visible()
        assert page.get_by_label("Password").is_visible()
        page.screenshot(path="/tmp/ecl-browser-login.png")
        to_login = time.monotonic() - started

        page.get_by_label("User name").fill("admin")
        page.get_by_label("Password").fill(PASSWORD)
        reached = len(notebook.seen)
        started = time.monotonic()
        with page.expect_navigation(url=target) as nav:
            page.get_by_role("button", name="Sign in").click()
        signed_in = time.monotonic() - started
        response = nav.value
        assert response is not None and response.status == 200
        assert page.url == target
        assert _hops(response.request) == [
            ("POST", f"{served.url}/login"),
            ("GET", f"{served.url}/gateway/authorize"),
            ("GET", f"{origin}/_ecliptic/callback"),
            ("GET", f"{origin}/notebook"),
        ]
        assert page.locator("#user").inner_text() == "admin"
        assert page.locator("#path").inner_text() == "/notebook?x=1"
        assert notebook.seen[reached]["path"] == "/notebook?x=1"
        assert notebook.seen[reached]["x-remote-user"] == "admin"
        assert "ecliptic_gw" not in notebook.seen[reached].get("cookie", "")

        # The gateway's cookie belongs to this one subdomain, out of scripts' reach.
        (cookie,) = [c for c in admin.cookies() if c["name"] == "ecliptic_gw"]
        assert cookie["domain"] == host
        assert cookie["httpOnly"] is True

        # Reloading is served straight from the service.
        reached = len(notebook.seen)
        started = time.monotonic()
        again = page.reload()
        reloaded = time.monotonic() - started
        assert again is not None and again.status == 200
        assert again.request.redirected_from is None
        assert page.locator("#user").inner_text() == "admin"
        # (The browser's own /favicon.ico of the first load may land after ``reached``.)
        paths = [r["path"] for r in notebook.seen[reached:] if r["path"] != "/favicon.ico"]
        assert paths[:1] == ["/notebook?x=1"]

        # An unknown subdomain says so.
        unknown = f"nosuch{secrets.token_hex(3)}.localhost"
        missing = page.goto(f"http://{unknown}:{port}/")
        assert missing is not None and missing.status == 404
        assert page.get_by_role("heading").inner_text() == "No such service"
        assert unknown in page.locator("body").inner_text()
    finally:
        admin.close()

    # Carol signs in fine but is not on the access list: a clear refusal, and the service
    # never hears from her.
    carol = _context(browser)
    try:
        page = carol.new_page()
        page.goto(target)
        assert page.url.startswith(f"{served.url}/login?")
        page.get_by_label("User name").fill("carol")
        page.get_by_label("Password").fill(CAROL_PASSWORD)
        with page.expect_navigation(url=f"{served.url}/gateway/authorize?**") as nav:
            page.get_by_role("button", name="Sign in").click()
        refused = nav.value
        assert refused is not None and refused.status == 403
        assert page.get_by_role("heading").inner_text() == "You cannot open this service"
        assert "carol may not reach" in page.locator("body").inner_text()
        assert not [c for c in carol.cookies() if c["name"] == "ecliptic_gw"]
    finally:
        carol.close()
    assert notebook.users() == {"admin"}

    print(
        f"\nbrowser: service -> sign-in page {to_login:.2f} s, sign-in -> service "
        f"{signed_in:.2f} s, reload {reloaded:.3f} s"
    )
