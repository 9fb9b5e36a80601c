"""The operator's pages: hosts and their state, tenancies and members, allocations,
preemptible capacity, efficiency. Administrators only; every form only from the portal's
own pages."""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ecliptic.runtime import Runtime
from ecliptic.services import efficiency
from ecliptic.services.caller import Caller
from tests.api.conftest import Api
from tests.web.conftest import BASE, Browser
from tests.web.test_resources_pages import small_flavor

PAGES = [
    "/admin/hosts",
    "/admin/tenancies",
    "/admin/tenancies/physics",
    "/admin/credits",
    "/admin/preemptible",
    "/admin/efficiency",
]
ACTIONS = [
    ("/admin/hosts/cpu-a/state", {"state": "down"}),
    ("/admin/tenancies", {"name": "alices-own"}),
    ("/admin/tenancies/physics/members", {"user": "alice", "role": "admin"}),
    ("/admin/tenancies/physics/members/carol/remove", {}),
    ("/admin/credits", {"tenancy": "physics", "name": "more", "rc_0": "vcpu", "hours_0": "9"}),
]
FOREIGN = ({"csrf": ""}, {"csrf": "forged"}, {"origin": "https://evil.example"})


@pytest.fixture(scope="module")
def api(portal_app: Any, people: dict[str, str]) -> Api:
    """The administrator, through the REST API, acting in physics."""
    return Api(TestClient(portal_app, base_url=BASE), people["admin_token"], "physics")


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns() % 10**8}"


def test_a_member_gets_403_on_every_operator_page_and_action(alice: Browser, api: Api) -> None:
    for path in PAGES:
        r = alice.get(path)
        assert r.status_code == 403, path
        assert "for the cloud&#39;s administrators" in r.text, path
    for path, data in ACTIONS:
        r = alice.post(path, data)
        assert r.status_code == 403, path
    hosts = {h["name"]: h["state"] for h in api.get("/hosts").json()["items"]}
    assert hosts["cpu-a"] == "up"
    members = {m["user"]: m["role"] for m in api.get("/tenancies/physics/members").json()["items"]}
    assert members == {"alice": "member", "carol": "member"}
    assert "alices-own" not in api.get("/tenancies").text


def test_forms_from_elsewhere_are_refused_and_change_nothing(operator: Browser, api: Api) -> None:
    operator.get("/admin/hosts")
    for path, data in ACTIONS:
        for kw in FOREIGN:
            r = operator.post(path, data, **kw)
            assert r.status_code == 403, (path, kw, r.text)
    assert all(h["state"] == "up" for h in api.get("/hosts").json()["items"])
    members = {m["user"]: m["role"] for m in api.get("/tenancies/physics/members").json()["items"]}
    assert members == {"alice": "member", "carol": "member"}
    assert "alices-own" not in api.get("/tenancies").text
    assert "more" not in {b["allocation"] for b in api.get("/credits").json()["items"]}


def test_hosts_show_capacity_gpus_nics_and_a_state_change_heals_leases(
    operator: Browser, api: Api
) -> None:
    r = operator.get("/admin/hosts")
    assert r.status_code == 200, r.text
    assert "<h1>Hosts</h1>" in r.text
    for text in (
        "cpu-a",
        "of 8</td>",
        "of 16.0 GiB",
        "A100 × 4 (80 GB)",  # noqa: RUF001 (the page writes a multiplication sign)
        "MIG: 1g.10gb, 3g.40gb",
        "ib0: 100 Gb/s, RDMA, 16 SR-IOV VFs",
        "eth0: 25 Gb/s",
        "leases holding cpu-a are healed",
    ):
        assert text in r.text, text
    name = unique("held")
    r = api.post(
        "/leases",
        json={
            "name": name,
            "duration": "1h",
            "reservations": [{"name": "h", "kind": "host", "count": 1, "where": "vcpus == 8"}],
        },
    )
    assert r.status_code == 201, r.text
    host = r.json()["reservations"][0]["allocations"][0]["host"]
    try:
        r = operator.post(f"/admin/hosts/{host}/state", {"state": "maintenance"})
        assert r.status_code == 303, r.text
        r = operator.get(r.headers["location"])
        assert f"Host {host} is now maintenance." in r.text
        assert "Leases healed" in r.text and name in r.text
        assert '<span class="badge warn">maintenance</span>' in r.text
        assert api.get(f"/leases/{name}").json()["phase"] in ("DEGRADED", "PENDING", "ACTIVE")
        r = operator.post(f"/admin/hosts/{host}/state", {"state": "sideways"})
        assert r.status_code == 422 and "choose up, down or maintenance" in r.text
    finally:
        r = operator.post(f"/admin/hosts/{host}/state", {"state": "up"})
        assert r.status_code == 303, r.text
        api.post(f"/leases/{name}/end")
    assert {h["name"]: h["state"] for h in api.get("/hosts").json()["items"]}[host] == "up"


def test_efficiency_sets_host_hours_reserved_against_those_used(
    operator: Browser, api: Api, portal_runtime: Runtime
) -> None:
    lease = unique("eff")
    r = api.post(
        "/leases",
        json={
            "name": lease,
            "duration": "1h",
            "reservations": [{"name": "h", "kind": "host", "count": 1, "where": "vcpus == 8"}],
        },
    )
    assert r.status_code == 201, r.text
    name = unique("in-lease")
    try:
        deadline = time.monotonic() + 30
        while api.get(f"/leases/{lease}").json()["phase"] != "ACTIVE":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        r = api.post(
            "/servers",
            json={"name": name, "flavor": small_flavor(api), "lease": lease, "reservation": "h"},
        )
        assert r.status_code == 202, r.text
        api.wait(name, "ACTIVE", timeout=60)
        time.sleep(0.2)
        r = operator.get("/admin/efficiency?days=7")
        assert r.status_code == 200, r.text
        assert "<h1>Reservation efficiency</h1>" in r.text
        assert '<svg class="chart"' in r.text and "<title>physics used:" in r.text
        assert re.search(r"<td>physics</td><td class=\"num\">\d+</td>", r.text), r.text
        now = portal_runtime.clock.now()
        admin = Caller("admin-id", "admin", True)
        [row] = [
            e
            for e in efficiency.tenancy_efficiency(
                portal_runtime.db, admin, now - timedelta(days=1), now
            )
            if e.tenancy == "physics"
        ]
        assert 0 < row.used_hours <= row.reserved_hours
    finally:
        api.delete(f"/servers/{name}")
        api.wait(name, "GONE", timeout=60)
        api.post(f"/leases/{lease}/end")


def test_tenancies_are_created_and_members_added_changed_and_removed(
    operator: Browser, api: Api
) -> None:
    r = operator.get("/admin/tenancies")
    assert r.status_code == 200, r.text
    assert re.search(r"physics</a></td><td></td><td class=\"num\">2</td>", r.text), r.text
    name = unique("bio")
    r = operator.post("/admin/tenancies", {"name": name, "description": "Biology"})
    assert r.status_code == 303, r.text
    r = operator.get(r.headers["location"])
    assert f"Tenancy {name} created" in r.text and f'href="/admin/tenancies/{name}"' in r.text
    # Errors come back inline, the fields kept.
    r = operator.post("/admin/tenancies", {"name": name})
    assert r.status_code == 409 and "exists already; pick another name" in r.text
    assert 'aria-invalid="true"' in r.text and f'value="{name}"' in r.text
    r = operator.post("/admin/tenancies", {"name": "no spaces please"})
    assert r.status_code == 422 and 'class="field-error" id="name-error"' in r.text

    page = f"/admin/tenancies/{name}"
    r = operator.get(page)
    assert r.status_code == 200 and "No member yet" in r.text
    r = operator.post(f"{page}/members", {"user": "carol", "role": "member"})
    assert r.status_code == 303, r.text
    assert "carol is now a member" in operator.get(r.headers["location"]).text
    r = operator.post(f"{page}/members", {"user": "carol", "role": "admin", "change": "1"})
    r = operator.get(r.headers["location"])
    assert "<td>carol</td><td>admin</td>" in r.text
    r = operator.post(f"{page}/members", {"user": "nobody-such", "role": "member"})
    assert r.status_code == 404 and 'id="user-error"' in r.text and "no user" in r.text
    r = operator.post(f"{page}/members/carol/remove")
    assert r.status_code == 303
    r = operator.get(r.headers["location"])
    assert "carol was removed" in r.text and "<td>carol</td>" not in r.text
    assert api.get(f"/tenancies/{name}/members").json()["items"] == []
    assert api.delete(f"/tenancies/{name}").status_code == 204


def test_allocations_are_listed_and_granted_with_errors_inline(operator: Browser, api: Api) -> None:
    r = operator.get("/admin/credits")
    assert r.status_code == 200, r.text
    assert "<td>physics</td><td>grant-2027</td><td>gpu:A100</td>" in r.text
    name = unique("extra")
    base = {"tenancy": "chemistry", "name": name, "end": "2027-06-30T00:00"}
    r = operator.post("/admin/credits", {**base, "rc_0": "vcpu", "hours_0": "-5"})
    assert r.status_code == 422 and 'id="hours-error"' in r.text, r.text
    assert f'value="{name}"' in r.text and 'value="-5"' in r.text
    r = operator.post("/admin/credits", {**base, "end": "", "rc_0": "vcpu", "hours_0": "5"})
    assert r.status_code == 422 and 'id="end-error"' in r.text, r.text
    r = operator.post(
        "/admin/credits",
        {**base, "rc_0": "vcpu", "hours_0": "100", "rc_1": "gpu:A100", "hours_1": "12.5"},
    )
    assert r.status_code == 303, r.text
    r = operator.get(r.headers["location"])
    assert f"Allocation {name} granted to chemistry." in r.text
    assert f"<td>chemistry</td><td>{name}</td><td>gpu:A100</td>" in r.text
    chem = Api(api.client, api.headers["Authorization"].split()[1], "chemistry")
    got = {b["resource_class"]: b["granted"] for b in chem.get("/credits").json()["items"]}
    assert got == {"vcpu": "100", "gpu:A100": "12.5"}


def test_preemptible_settings_and_the_servers_running_now(operator: Browser, api: Api) -> None:
    r = operator.get("/admin/preemptible")
    assert r.status_code == 200, r.text
    for text in (
        "ECLIPTIC_PREEMPTIBLE_MIN_LIFETIME_MINUTES",
        "ECLIPTIC_PREEMPTIBLE_GRACE_SECONDS",
        "ECLIPTIC_PLATFORM_PREEMPTIBLE",
        "<strong>60 min</strong>",
        "No preemptible server is running",
    ):
        assert text in r.text, text
    name = unique("pre")
    r = api.post("/servers", json={"name": name, "flavor": small_flavor(api), "preemptible": True})
    assert r.status_code == 202, r.text
    try:
        r = operator.get("/admin/preemptible")
        assert re.search(rf"<td>{name}</td><td>physics</td><td>[a-z0-9-]+</td>", r.text), r.text
        assert "(in 59 min)" in r.text or "(in 1 h)" in r.text
    finally:
        api.delete(f"/servers/{name}")
        api.wait(name, "GONE", timeout=60)
