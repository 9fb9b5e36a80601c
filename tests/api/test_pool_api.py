"""The bare-metal-or-hypervisor pool through the REST API: hosts say where they come from
and their role, the pool's table, converting, draining, a host's events. Administrators
only; without an Ironic the pool's endpoints say how to configure one."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ecliptic.runtime import Runtime
from tests.api.conftest import Api, login
from tests.pool_data import PoolHost, add_pool_hosts, with_ironic

POOL = [
    PoolHost("bm-1"),
    PoolHost("hv-1", phase="HYPERVISOR", reason="asked by operator admin"),
    PoolHost("hv-down", phase="HYPERVISOR", state="maintenance"),
]


@pytest.fixture
def nodes(runtime: Runtime) -> Iterator[dict[str, str]]:
    made = add_pool_hosts(runtime, POOL)
    with with_ironic(runtime):
        yield made


@pytest.fixture
def member(admin: Api, client: TestClient) -> Api:
    assert admin.post("/users", {"name": "mia", "password": "mia-password"}).status_code == 201
    assert admin.put("/tenancies/default/members", {"user": "mia", "role": "member"}).is_success
    return Api(client, login(client, "mia", "mia-password"), tenancy="default")


def problem(r: Any, status: int) -> dict[str, Any]:
    """The problem document of a refusal with ``status``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["detail"]
    return body


def test_hosts_say_where_they_come_from_and_their_role(admin: Api, nodes: dict[str, str]) -> None:
    hosts = {h["name"]: h for h in admin.get("/hosts").json()["items"]}
    assert hosts["cpu-a"]["source"] == "inventory"
    assert hosts["cpu-a"]["node_id"] is None and hosts["cpu-a"]["pool"] is None
    hv = hosts["hv-1"]
    assert hv["source"] == "ironic" and hv["node_id"] == nodes["hv-1"]
    assert hv["pool"]["phase"] == "HYPERVISOR" and hv["pool"]["hold"] == ""
    assert hv["pool"]["reason"] == "asked by operator admin" and hv["pool"]["updated_at"]
    down = hosts["hv-down"]
    assert down["state"] == "maintenance"
    assert down["state_reason"] == "Ironic: maintenance (test)"


def test_the_pool_table_lists_only_pool_hosts_with_their_needs(
    admin: Api, nodes: dict[str, str]
) -> None:
    r = admin.get("/hosts/pool")
    assert r.status_code == 200, r.text
    rows = {x["name"]: x for x in r.json()["items"]}
    assert sorted(rows) == ["bm-1", "hv-1", "hv-down"]  # not cpu-a or gpu-a: the inventory's
    assert rows["bm-1"] == {
        "name": "bm-1",
        "node_id": nodes["bm-1"],
        "state": "up",
        "phase": "BAREMETAL",
        "reason": "",
        "hold": "",
        "servers": 0,
        "vm_need": "",
        "bm_need": "",
        "updated_at": rows["bm-1"]["updated_at"],
    }
    assert rows["hv-down"]["state"] == "maintenance"
    page = admin.get("/hosts/pool", params={"limit": 1}).json()
    assert [x["name"] for x in page["items"]] == ["bm-1"] and page["next"] == "bm-1"


def test_converting_holds_the_choice_until_auto_and_is_recorded(
    admin: Api, nodes: dict[str, str]
) -> None:
    r = admin.post("/hosts/bm-1/convert", {"to": "hypervisor"})
    assert r.status_code == 200, r.text
    host = r.json()
    assert host["name"] == "bm-1" and host["source"] == "ironic"
    assert host["pool"]["phase"] == "TO_HYPERVISOR" and host["pool"]["hold"] == "hypervisor"
    assert host["pool"]["reason"] == "asked by operator admin"

    r = admin.post("/hosts/bm-1/convert", {"to": "auto"})
    assert r.status_code == 200 and r.json()["pool"]["hold"] == ""

    r = admin.get("/hosts/bm-1/events")
    assert r.status_code == 200, r.text
    events = r.json()["items"]
    assert [(e["from_phase"], e["to_phase"]) for e in events] == [
        ("", "BAREMETAL"),
        ("BAREMETAL", "TO_HYPERVISOR"),
        ("TO_HYPERVISOR", "TO_HYPERVISOR"),
    ]
    assert events[0]["reason"] == "joined the pool as baremetal"
    assert events[1]["reason"] == "asked by operator admin"
    assert events[2]["reason"] == "operator admin gave it back to the policy"
    assert all(e["object_kind"] == "hostrole" and e["at"] for e in events)


def test_draining_a_hypervisor_and_refusals_that_say_why(admin: Api, nodes: dict[str, str]) -> None:
    r = admin.post("/hosts/hv-1/drain")
    assert r.status_code == 200, r.text
    assert r.json()["pool"]["phase"] == "DRAINING" and r.json()["pool"]["hold"] == "drained"
    assert admin.get("/hosts/hv-1/events").json()["items"][-1]["reason"] == (
        "drain asked by operator admin"
    )

    body = problem(admin.post("/hosts/bm-1/drain"), 409)
    assert body["code"] == "conflict"
    assert body["detail"] == "host 'bm-1' is BAREMETAL, not a hypervisor: nothing to drain"

    body = problem(admin.post("/hosts/cpu-a/convert", {"to": "hypervisor"}), 422)
    assert (
        "host 'cpu-a' (from the inventory file) is not in the bare-metal-or-hypervisor"
        in body["detail"]
    )
    for path in ("/hosts/nope/convert", "/hosts/nope/drain", "/hosts/nope/events"):
        body = problem(
            admin.post(path, {"to": "auto"}) if "events" not in path else admin.get(path), 404
        )
        assert body["detail"] == "no host 'nope'", path


def test_a_bad_convert_body_is_refused_with_the_field(admin: Api, nodes: dict[str, str]) -> None:
    body = problem(admin.post("/hosts/bm-1/convert", {"to": "sideways"}), 422)
    assert body["code"] == "invalid_input"
    assert body["detail"].startswith("to: Input should be 'hypervisor', 'baremetal' or 'auto'")
    body = problem(admin.post("/hosts/bm-1/convert", {"to": "auto", "now": True}), 422)
    assert "now: unknown field" in body["detail"]
    problem(admin.post("/hosts/bm-1/convert", {}), 422)
    # Nothing changed.
    assert admin.get("/hosts/pool").json()["items"][0]["phase"] == "BAREMETAL"


def test_members_are_refused_every_pool_route(
    admin: Api, member: Api, nodes: dict[str, str]
) -> None:
    for r in (
        member.get("/hosts/pool"),
        member.post("/hosts/bm-1/convert", {"to": "hypervisor"}),
        member.post("/hosts/bm-1/convert", {"to": "sideways"}),  # refused before validation
        member.post("/hosts/hv-1/drain"),
        member.get("/hosts/hv-1/events"),
        member.get("/hosts/nope/events"),  # no hint of which hosts exist
    ):
        body = problem(r, 403)
        assert body["code"] == "forbidden"
    rows = {x["name"]: x for x in admin.get("/hosts/pool").json()["items"]}
    assert rows["bm-1"]["phase"] == "BAREMETAL" and rows["hv-1"]["phase"] == "HYPERVISOR"


def test_without_ironic_the_pool_routes_say_how_to_configure_it(admin: Api, member: Api) -> None:
    for r in (
        admin.get("/hosts/pool"),
        admin.post("/hosts/cpu-a/convert", {"to": "hypervisor"}),
        admin.post("/hosts/cpu-a/drain"),
    ):
        body = problem(r, 409)
        assert body["code"] == "ironic_not_configured"
        assert "set ECLIPTIC_IRONIC_URL" in body["detail"], body
    # A host's events need no Ironic (an inventory host has none); members stay refused.
    assert admin.get("/hosts/cpu-a/events").json() == {"items": [], "next": None}
    problem(member.get("/hosts/pool"), 403)
