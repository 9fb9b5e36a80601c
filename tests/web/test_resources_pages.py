"""The tenancy's resource pages: servers (console log, events, delete), credits and the
ledger, images; each for its members only, each form only from the portal's own pages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.conftest import Api
from tests.web.conftest import BASE, Browser


@pytest.fixture(scope="module")
def api(portal_app: Any, people: dict[str, str]) -> Api:
    """The administrator, through the REST API, acting in physics."""
    return Api(TestClient(portal_app, base_url=BASE), people["admin_token"], "physics")


def small_flavor(api: Api) -> str:
    """The smallest flavor of a plain VM."""
    flavors = [f for f in api.get("/flavors").json()["items"] if not f["gpus"]]
    return str(min((f for f in flavors if f["kind"] == "vm"), key=lambda f: f["vcpus"])["name"])


@pytest.fixture(scope="module")
def server(api: Api) -> Iterator[dict[str, Any]]:
    """An active server of physics (the last test deletes it through the portal); gone at
    the end either way."""
    name = f"web-{time.monotonic_ns() % 10**8}"
    r = api.post("/servers", json={"name": name, "flavor": small_flavor(api)})
    assert r.status_code == 202, r.text
    try:
        yield api.wait(name, "ACTIVE", timeout=60)
    finally:
        api.delete(f"/servers/{name}")
        api.wait(name, "GONE", timeout=60)


def test_the_server_list_shows_what_a_member_looks_for(
    alice: Browser, server: dict[str, Any]
) -> None:
    r = alice.get("/t/physics/servers")
    assert r.status_code == 200, r.text
    assert "<h1>Servers</h1>" in r.text
    name, ip = server["name"], server["addresses"]["default"][0]
    assert f'<a href="/t/physics/servers/{name}">{name}</a>' in r.text
    assert '<span class="badge ok">ACTIVE</span>' in r.text
    for text in (server["flavor"], server["host"], f"default: {ip}", "on demand"):
        assert text in r.text


def test_a_server_page_shows_facts_console_log_events_and_a_named_delete(
    alice: Browser, server: dict[str, Any]
) -> None:
    name = server["name"]
    r = alice.get(f"/t/physics/servers/{name}")
    assert r.status_code == 200, r.text
    assert f"<h1>Server {name} " in r.text
    assert '<pre class="log"' in r.text and "booted from image base" in r.text
    assert "BUILDING → ACTIVE" in r.text
    assert f'action="/t/physics/servers/{name}/delete"' in r.text
    assert f"Yes, delete {name}" in r.text
    assert "style=" not in r.text and "<script>" not in r.text
    # The log refreshes in place (htmx) ...
    r = alice.get(f"/t/physics/servers/{name}/log", headers={"HX-Request": "true"})
    assert r.status_code == 200 and r.text.lstrip().startswith('<div id="log"')
    assert "booted from image base" in r.text and "<html" not in r.text
    # ... and a browser without it goes to the page.
    r = alice.get(f"/t/physics/servers/{name}/log", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].endswith(f"/servers/{name}#log")


def test_another_tenancy_sees_none_of_it(bob: Browser, server: dict[str, Any]) -> None:
    name = server["name"]
    for path in ("/t/physics/servers", f"/t/physics/servers/{name}", "/t/physics/credits"):
        assert bob.get(path).status_code == 404, path
    assert bob.post(f"/t/physics/servers/{name}/delete").status_code == 404


def test_the_credits_page_shows_balances_and_the_ledger(alice: Browser) -> None:
    r = alice.get("/t/physics/credits")
    assert r.status_code == 200, r.text
    assert "<h1>Credits</h1>" in r.text
    assert "grant-2027" in r.text and "gpu:A100" in r.text and "5,000" in r.text
    assert "granted by admin" in r.text and "<td>grant</td>" in r.text
    # Paging back from the oldest row leaves nothing.
    r = alice.get("/t/physics/credits?before=1")
    assert r.status_code == 200 and "No movement before this point" in r.text


def test_the_images_page_lists_what_servers_boot_from(
    alice: Browser, server: dict[str, Any]
) -> None:
    r = alice.get("/t/physics/images")
    assert r.status_code == 200, r.text
    assert "<h1>Images</h1>" in r.text
    assert "<td>base</td>" in r.text and '<span class="badge ok">built</span>' in r.text


def test_deleting_needs_the_form_of_this_session_then_deletes(
    alice: Browser, api: Api, server: dict[str, Any]
) -> None:
    name = server["name"]
    path = f"/t/physics/servers/{name}/delete"
    alice.get(f"/t/physics/servers/{name}")
    for kw in ({"csrf": ""}, {"csrf": "forged"}, {"origin": "https://evil.example"}):
        r = alice.post(path, **kw)
        assert r.status_code == 403, (kw, r.text)
    assert api.get(f"/servers/{name}").json()["phase"] == "ACTIVE"
    r = alice.post(path)
    assert r.status_code == 303, r.text
    r = alice.get(r.headers["location"])
    assert f"Server {name} is being deleted." in r.text
    api.wait(name, "GONE", timeout=60)
