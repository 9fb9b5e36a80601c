"""The REST API end to end on the real local cloud: what a user of the API would notice."""

from __future__ import annotations

import subprocess

import pytest
from fastapi.testclient import TestClient

from ecliptic.runtime import Runtime
from tests.api.conftest import Api, login


def _netns() -> set[str]:
    out = subprocess.run(["ip", "-o", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_health_and_openapi(client: TestClient) -> None:
    assert client.get("/api/v1/health").json()["status"] == "ok"
    doc = client.get("/openapi.json").json()
    assert "/api/v1/servers" in doc["paths"] and "/api/v1/servers/{ref}/exec" in doc["paths"]


def test_unauthenticated_gets_a_problem_document(client: TestClient) -> None:
    r = client.get("/api/v1/servers")
    assert r.status_code == 401
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["code"] == "unauthenticated" and "ecliptic login" in r.json()["detail"]
    r = client.post("/api/v1/auth/login", json={"username": "admin", "password": "nope"})
    assert r.status_code == 401 and r.json()["detail"] == "wrong user name or password"


def test_invalid_input_names_each_field(admin: Api) -> None:
    r = admin.post("/servers", {"name": "Bad_Name", "flavor": "m1.tiny", "colour": "red"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_input"
    fields = {e["field"]: e["msg"] for e in r.json()["errors"]}
    assert "lowercase letters" in fields["name"]
    assert "unknown field" in fields["colour"]
    r = admin.post("/networks", {"name": "n", "cidr": "198.18.0.0/33"})
    assert r.status_code == 422 and "CIDR" in r.json()["errors"][0]["msg"]
    r = admin.post("/networks", {"name": "n", "cidr": "10.1.0.0/24"})
    assert r.status_code == 422 and "outside the address pool" in r.json()["detail"]
    r = admin.post("/servers", {"name": "s", "flavor": "no-such"})
    assert r.status_code == 422 and "no flavor 'no-such'" in r.json()["detail"]


@pytest.mark.parametrize("runtime", [None, "postgresql"], indirect=True, ids=["sqlite", "pg"])
def test_servers_on_normal_and_direct_ports_reach_each_other(admin: Api, runtime: Runtime) -> None:
    r = admin.post("/networks", {"name": "fabric"})
    assert r.status_code == 202, r.text
    gw = r.json()["subnets"][0]["gateway_ip"]
    # The tenancy's default network is made on first use; here a server's first use names it.
    assert admin.post("/servers", {"name": "first", "flavor": "m1.tiny"}).status_code == 202
    admin.wait("first")
    assert admin.delete("/servers/first").status_code == 202
    # alpha has a normal port on each network; beta and gamma a direct (SR-IOV) one on fabric.
    nets = {
        "alpha": [{"network": "default"}, {"network": "fabric"}],
        "beta": [{"network": "default"}, {"network": "fabric", "vnic_type": "direct"}],
        "gamma": [{"network": "default"}, {"network": "fabric", "vnic_type": "direct"}],
    }
    for name, ports in nets.items():
        r = admin.post("/servers", {"name": name, "flavor": "m1.small", "networks": ports})
        assert r.status_code == 202 and r.json()["phase"] == "PENDING", r.text
    made = {name: admin.wait(name) for name in nets}
    alpha, beta = made["alpha"], made["beta"]
    assert [p["vnic_type"] for p in alpha["ports"]] == ["normal", "normal"]
    assert [p["vnic_type"] for p in beta["ports"]] == ["normal", "direct"]
    assert [p["vnic_type"] for p in made["gamma"]["ports"]] == ["normal", "direct"]
    assert f"ecl-{alpha['id'][:10]}" in _netns()

    def run(name: str, *argv: str) -> dict[str, object]:
        res = admin.post(f"/servers/{name}/exec", {"argv": list(argv), "timeout": 10})
        assert res.status_code == 200, res.text
        return dict(res.json())

    assert run("alpha", "hostname")["stdout"] == "alpha\n"
    # Every server reaches every other on every network: normal to normal (default),
    # normal to direct and back, and direct to direct (fabric).
    pings = 0
    for src in made:
        for dst, srv in made.items():
            if dst == src:
                continue
            for net in ("default", "fabric"):
                (ip,) = srv["addresses"][net]
                res = run(src, "ping", "-c1", "-W2", ip)
                assert res["exit_code"] == 0, (src, dst, net, ip, res)
                pings += 1
    assert pings == 12
    assert run("beta", "ping", "-c1", "-W2", gw)["exit_code"] == 0  # host over the direct port
    assert run("alpha", "ping", "-c1", "-W2", gw)["exit_code"] == 0  # and over a normal one
    assert run("beta", "sh", "-c", "exit 3")["exit_code"] == 3
    log = admin.get("/servers/beta/log").json()["log"]
    assert "eth1" in log
    events = [e["to_phase"] for e in admin.get("/servers/beta/events").json()["items"]]
    assert events[:3] == ["PENDING", "BUILDING", "ACTIVE"]
    # A network with servers on it cannot go.
    r = admin.delete("/networks/fabric")
    assert r.status_code == 409 and r.json()["code"] == "in_use" and "beta" in r.json()["detail"]
    for name in nets:
        assert admin.delete(f"/servers/{name}").status_code == 202
    admin.wait("first", "GONE")
    for name in nets:
        admin.wait(name, "GONE")
        assert f"ecl-{made[name]['id'][:10]}" not in _netns()
    assert admin.delete("/networks/fabric").status_code == 202


def test_no_capacity_says_which_flavor(admin: Api) -> None:
    for name in ("big1", "big2"):  # the GPU host's 32 vCPUs
        assert admin.post("/servers", {"name": name, "flavor": "m1.xlarge"}).status_code == 202
    r = admin.post("/servers", {"name": "big3", "flavor": "m1.xlarge"})
    assert r.status_code == 409 and r.json()["code"] == "no_capacity", r.text
    assert "m1.xlarge" in r.json()["detail"]
    for name in ("big1", "big2"):
        admin.wait(name)
        admin.delete(f"/servers/{name}")
        admin.wait(name, "GONE")


def test_other_tenancies_objects_are_invisible(admin: Api, client: TestClient) -> None:
    admin.post("/tenancies", {"name": "other"})
    admin.post("/users", {"name": "eve", "password": "eve-password"})
    admin.put("/tenancies/other/members", {"user": "eve", "role": "member"})
    eve = Api(client, login(client, "eve", "eve-password"))
    admin.post("/servers", {"name": "private", "flavor": "m1.tiny"})
    assert eve.get("/servers/private").status_code == 404
    assert eve.delete("/servers/private").status_code == 404
    assert eve.post("/servers/private/exec", {"argv": ["true"]}).status_code == 404
    assert eve.get("/servers").json()["items"] == []
    r = eve.get("/hosts")
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = Api(client, eve.headers["Authorization"][7:], tenancy="default").get("/servers")
    assert r.status_code == 404
    admin.wait("private")
    admin.delete("/servers/private")
    admin.wait("private", "GONE")


def test_listing_filters_and_pages(admin: Api) -> None:
    for i in range(5):
        assert admin.post("/servers", {"name": f"s{i}", "flavor": "m1.tiny"}).status_code == 202
    page = admin.get("/servers", params={"limit": 2}).json()
    assert [s["name"] for s in page["items"]] == ["s0", "s1"] and page["next"]
    page2 = admin.get("/servers", params={"limit": 2, "marker": page["next"]}).json()
    assert [s["name"] for s in page2["items"]] == ["s2", "s3"]
    assert [s["name"] for s in admin.get("/servers", params={"name": "s4"}).json()["items"]] == [
        "s4"
    ]
    r = admin.get("/servers", params={"phase": "SLEEPING"})
    assert r.status_code == 422
    hosts = admin.get("/hosts").json()["items"]
    assert sum(h["servers"] for h in hosts) == 5
    for i in range(5):
        admin.wait(f"s{i}")
        admin.delete(f"/servers/s{i}")
    for i in range(5):
        admin.wait(f"s{i}", "GONE")


def test_ranges_in_use_on_the_host_are_avoided(admin: Api) -> None:
    # A range used on this machine outside Ecliptic (by another instance, say) must not be
    # handed out again: the same subnet on two bridges breaks routing for both.
    import random

    third = random.Random().randrange(100, 250)
    foreign = f"198.19.{third}.0/24"
    subprocess.run(
        ["ip", "link", "add", "ecltest0", "type", "veth", "peer", "ecltest1"], check=True
    )
    try:
        subprocess.run(["ip", "addr", "add", f"198.19.{third}.1/24", "dev", "ecltest0"], check=True)
        r = admin.post("/networks", {"name": "clash", "cidr": foreign})
        assert r.status_code == 409 and "already in use on the infrastructure" in r.json()["detail"]
        r = admin.post("/networks", {"name": "fine"})
        assert r.status_code == 202 and r.json()["subnets"][0]["cidr"] != foreign
    finally:
        subprocess.run(["ip", "link", "del", "ecltest0"], check=False)
    admin.delete("/networks/fine")


def test_a_listing_shows_each_server_as_it_is_shown_alone(admin: Api) -> None:
    assert admin.post("/networks", {"name": "fabric"}).status_code == 202
    for name, nets in (
        ("one", None),
        ("two", [{"network": "default"}, {"network": "fabric", "vnic_type": "direct"}]),
    ):
        body: dict[str, object] = {"name": name, "flavor": "m1.tiny"}
        if nets:
            body["networks"] = nets
        assert admin.post("/servers", body).status_code == 202
        admin.wait(name)
    listed = admin.get("/servers").json()
    assert listed["next"] is None
    assert [s["name"] for s in listed["items"]] == ["one", "two"]
    for item in listed["items"]:
        alone = admin.get(f"/servers/{item['name']}").json()
        assert item == alone
    assert listed["items"][1]["addresses"].keys() == {"default", "fabric"}
    for name in ("one", "two"):
        admin.delete(f"/servers/{name}")
        admin.wait(name, "GONE")
    assert admin.delete("/networks/fabric").status_code == 202
