"""The operator's hosts page and the bare-metal-or-hypervisor pool: sources and roles in the
hosts table, the pool's hosts with Convert and Drain forms (this session's pages only),
members refused, and a page that says how to configure Ironic when there is none."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ecliptic.runtime import Runtime
from tests.api.conftest import Api
from tests.pool_data import PoolHost, add_pool_hosts, remove_pool_hosts, with_ironic
from tests.web.conftest import BASE, Browser

HOSTS = [
    PoolHost("web-bm"),
    PoolHost("web-hv", phase="HYPERVISOR", reason="keep 1 spare hypervisor(s) ready"),
]
FOREIGN = ({"csrf": ""}, {"csrf": "forged"}, {"origin": "https://evil.example"})


@pytest.fixture(scope="module")
def api(portal_app: Any, people: dict[str, str]) -> Api:
    return Api(TestClient(portal_app, base_url=BASE), people["admin_token"])


@pytest.fixture(scope="module")
def hosts(portal_runtime: Runtime) -> Iterator[dict[str, str]]:
    """Pool hosts in the shared portal's store for this module only."""
    made = add_pool_hosts(portal_runtime, HOSTS)
    try:
        yield made
    finally:
        remove_pool_hosts(portal_runtime, made)


@pytest.fixture
def ironic(portal_runtime: Runtime, hosts: dict[str, str]) -> Iterator[dict[str, str]]:
    with with_ironic(portal_runtime):
        yield hosts


def roles(api: Api) -> dict[str, tuple[str, str]]:
    return {r["name"]: (r["phase"], r["hold"]) for r in api.get("/hosts/pool").json()["items"]}


def test_the_hosts_page_shows_sources_roles_and_the_pool(
    operator: Browser, ironic: dict[str, str]
) -> None:
    r = operator.get("/admin/hosts")
    assert r.status_code == 200, r.text
    text = r.text
    assert '<th scope="col">Source</th><th scope="col">Role</th>' in text
    assert f'ironic<br><span class="small muted">node {ironic["web-hv"]}</span>' in text
    assert "<td>inventory</td>" in text  # cpu-a, from the inventory file
    assert '<h2 id="pool-head">Pool</h2>' in text
    assert '<span class="badge ok">HYPERVISOR</span>' in text
    assert "keep 1 spare hypervisor(s) ready" in text
    for name in ("web-bm", "web-hv"):
        assert f'action="/admin/hosts/{name}/convert"' in text
    # Drain is offered for hypervisors only.
    assert 'action="/admin/hosts/web-hv/drain"' in text
    assert 'action="/admin/hosts/web-bm/drain"' not in text
    assert f'name="csrf" value="{operator.csrf}"' in text


def test_convert_and_drain_from_the_page(
    operator: Browser, api: Api, ironic: dict[str, str]
) -> None:
    operator.get("/admin/hosts")
    r = operator.post("/admin/hosts/web-bm/convert", {"to": "hypervisor"})
    assert r.status_code == 303, r.text
    r = operator.get(r.headers["location"])
    assert "Host web-bm is to be a hypervisor, and held so" in r.text
    assert "No live lease was on this host" not in r.text
    assert '<span class="badge wait">TO_HYPERVISOR</span>' in r.text
    assert roles(api)["web-bm"] == ("TO_HYPERVISOR", "hypervisor")

    r = operator.post("/admin/hosts/web-bm/convert", {"to": "auto"})
    assert r.status_code == 303, r.text
    assert "is the policy&#39;s again" in operator.get(r.headers["location"]).text
    assert roles(api)["web-bm"] == ("TO_HYPERVISOR", "")

    r = operator.post("/admin/hosts/web-hv/drain")
    assert r.status_code == 303, r.text
    assert "Host web-hv is draining" in operator.get(r.headers["location"]).text
    assert roles(api)["web-hv"] == ("DRAINING", "drained")

    r = operator.post("/admin/hosts/web-bm/convert", {"to": "sideways"})
    assert r.status_code == 422 and "choose hypervisor, baremetal or auto" in r.text
    r = operator.post("/admin/hosts/cpu-a/convert", {"to": "hypervisor"})
    assert r.status_code == 422 and "is not in the bare-metal-or-hypervisor pool" in r.text
    r = operator.post("/admin/hosts/nope/drain")
    assert r.status_code == 404 and "no host" in r.text


def test_pool_forms_from_elsewhere_are_refused_and_change_nothing(
    operator: Browser, api: Api, ironic: dict[str, str]
) -> None:
    before = roles(api)
    operator.get("/admin/hosts")
    for path, data in (
        ("/admin/hosts/web-bm/convert", {"to": "baremetal"}),
        ("/admin/hosts/web-hv/drain", {}),
    ):
        for kw in FOREIGN:
            r = operator.post(path, data, **kw)
            assert r.status_code == 403, (path, kw, r.text)
    assert roles(api) == before


def test_members_neither_see_nor_change_the_pool(
    alice: Browser, api: Api, ironic: dict[str, str]
) -> None:
    before = roles(api)
    r = alice.get("/admin/hosts")
    assert r.status_code == 403 and "web-bm" not in r.text
    for path, data in (
        ("/admin/hosts/web-bm/convert", {"to": "hypervisor"}),
        ("/admin/hosts/web-hv/drain", {}),
    ):
        r = alice.post(path, data)
        assert r.status_code == 403, path
        assert "for the cloud&#39;s administrators" in r.text
    assert roles(api) == before


def test_without_ironic_the_page_says_how_to_configure_it(
    operator: Browser, hosts: dict[str, str]
) -> None:
    r = operator.get("/admin/hosts")
    assert r.status_code == 200
    assert "No Ironic is configured" in r.text and "ECLIPTIC_IRONIC_URL" in r.text
    assert 'action="/admin/hosts/web-bm/convert"' not in r.text
    r = operator.post("/admin/hosts/web-bm/convert", {"to": "hypervisor"})
    assert r.status_code == 409 and "set ECLIPTIC_IRONIC_URL" in r.text
