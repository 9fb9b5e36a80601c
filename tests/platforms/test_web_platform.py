"""A platform's whole life on the local cloud with a small test type: created, configured,
exposed through the gateway, scaled, failed and retried, deleted with nothing left."""

from __future__ import annotations

import time

import pytest

from tests.platforms.conftest import events, wait_phase
from tests.tunnel.conftest import Served, needs_gateway

pytestmark = needs_gateway


def _exec(served: Served, server: str, *argv: str) -> dict:
    r = served.api.post(f"/servers/{server}/exec", json={"argv": list(argv), "timeout": 20})
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_create_configure_expose_scale_delete(served: Served) -> None:
    api = served.api
    r = api.post("/platforms", json={"name": "w1", "type": "web", "parameters": {"workers": 2}})
    assert r.status_code == 202, r.text
    body = wait_phase(api, "w1", "READY", timeout=90)
    assert [s["name"] for s in body["servers"]] == ["w1-web1", "w1-worker1", "w1-worker2"]
    site = next(s for s in body["services"] if s["name"] == "site")
    assert site["healthy"] is True and site["url"], body
    assert "Workers: 2" in body["usage"] and site["url"] in body["usage"]
    # The templated page lists the workers with their addresses; the secret is there once.
    page = _exec(served, "w1-web1", "cat", "/srv/www/index.html")["stdout"]
    workers = {s["name"]: s["address"] for s in body["servers"] if s["role"] == "worker"}
    for name, addr in workers.items():
        assert f"worker {name} {addr}" in page
    assert _exec(served, "w1-worker2", "cat", "/etc/worker-name")["stdout"].strip() == "w1-worker2"
    hosts = _exec(served, "w1-worker1", "getent", "hosts", "w1-web1")["stdout"]
    assert hosts.split()[0] == next(s["address"] for s in body["servers"] if s["role"] == "web")
    # Through the gateway: signed in as the owner it answers the page.
    sub = site["subdomain"]
    assert served.front(f"{sub}.localhost", "/index.html").status_code in (302, 401)
    timeline = events(api, "w1")
    assert any("step 'page' finished on 1 server(s)" in e for e in timeline), timeline
    # Scale to 3 workers: one server more, the page rewritten, the others untouched.
    before = _exec(served, "w1-worker1", "stat", "-c", "%Y", "/etc/worker-name")["stdout"]
    r = api.patch("/platforms/w1", json={"parameters": {"workers": 3}})
    assert r.status_code == 202, r.text
    body = wait_phase(api, "w1", "READY", timeout=60)
    assert len(body["servers"]) == 4
    assert "w1-worker3" in _exec(served, "w1-web1", "cat", "/srv/www/index.html")["stdout"]
    after = _exec(served, "w1-worker1", "stat", "-c", "%Y", "/etc/worker-name")["stdout"]
    assert before == after
    # Down to 1: the leaving servers see themselves named, then go.
    r = api.patch("/platforms/w1", json={"parameters": {"workers": 1}})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 60
    while len(api.get("/platforms/w1").json()["servers"]) != 2:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    body = wait_phase(api, "w1", "READY", timeout=60)
    assert "w1-worker2" not in _exec(served, "w1-web1", "cat", "/srv/www/index.html")["stdout"]
    # Immutable parameters are refused by name.
    r = api.patch("/platforms/w1", json={"parameters": {"greeting": "bye"}})
    assert r.status_code == 422 and "greeting" in r.json()["detail"], r.text
    # Delete: services, servers and network go.
    assert api.delete("/platforms/w1").status_code == 202
    deadline = time.monotonic() + 60
    while api.get("/platforms/w1").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    names = [s["name"] for s in api.get("/servers").json()["items"]]
    assert not [n for n in names if n.startswith("w1-")]
    assert not [n for n in api.get("/networks").json()["items"] if n["name"].startswith("w1-")]
    assert not [s for s in api.get("/services").json()["items"] if s["name"].startswith("w1-")]


def test_failed_step_keeps_output_and_retry_resumes(served: Served) -> None:
    api = served.api
    r = api.post(
        "/platforms",
        json={"name": "wf", "type": "web", "parameters": {"workers": 0, "fail_at": "configure"}},
    )
    assert r.status_code == 202, r.text
    body = wait_phase(api, "wf", "FAILED", timeout=60)
    assert body["failed"]["step"] == "page" and body["failed"]["exit_code"] == 3
    assert "failing on purpose" in body["failed"]["output"]
    assert "step 'page' failed on wf-web1 (exit 3)" in body["phase_reason"]
    # Fix it in the server, then retry: it resumes and gets READY.
    r = api.post("/platforms/wf/retry")
    assert r.status_code == 202
    # Still fails the same way (the parameter is what fails it).
    body = wait_phase(api, "wf", "FAILED", timeout=60)
    api.delete("/platforms/wf")


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"workers": 99}, "must be at most 8"),
        ({"wrokers": 1}, "did you mean 'workers'"),
        ({"size": "m9.huge"}, "no flavor 'm9.huge'"),
        ({"workers": "2"}, "whole number"),
    ],
)
def test_bad_parameters_are_refused_before_anything_is_made(
    served: Served, params: dict, needle: str
) -> None:
    r = served.api.post("/platforms", json={"name": "bad", "type": "web", "parameters": params})
    assert r.status_code == 422, r.text
    assert needle in r.json()["detail"]
    assert served.api.get("/platforms/bad").status_code == 404
    assert not [
        s for s in served.api.get("/servers").json()["items"] if s["name"].startswith("bad-")
    ]


def test_access_list_lets_members_in_and_keeps_others_out(served: Served) -> None:
    api = served.api
    for user in ("bob", "carol"):
        r = api.post("/users", json={"name": user, "password": f"{user}-password-1"})
        assert r.status_code in (201, 409), r.text
        api.put("/tenancies/default/members", json={"user": user, "role": "member"})
    tokens = {
        u: "Bearer "
        + api.post("/auth/login", json={"username": u, "password": f"{u}-password-1"}).json()[
            "secret"
        ]
        for u in ("bob", "carol")
    }
    r = api.post("/platforms", json={"name": "wa", "type": "web", "parameters": {"workers": 0}})
    assert r.status_code == 202, r.text
    body = wait_phase(api, "wa", "READY", timeout=60)
    host = f"{body['services'][0]['subdomain']}.localhost"
    owner = api.headers["Authorization"]

    def status(bearer: str) -> int:
        deadline = time.monotonic() + 10
        while (r := served.front(host, "/index.html", Authorization=bearer)).status_code in (
            404,
            503,
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        return r.status_code

    assert status(owner) == 200
    assert status(tokens["bob"]) == 403 and status(tokens["carol"]) == 403
    # The owner gives bob access: bob gets in, carol still not.
    r = api.put("/platforms/wa/access", json={"users": ["admin", "bob"]})
    assert r.status_code == 200 and r.json()["access"] == ["admin", "bob"], r.text
    deadline = time.monotonic() + 10
    while status(tokens["bob"]) != 200:
        assert time.monotonic() < deadline, "bob was never let in"
        time.sleep(0.2)
    assert status(tokens["carol"]) == 403
    # Only the creator (or an admin) may change who gets in; members may not.
    bob_api = {"Authorization": tokens["bob"]}
    r = api.put("/platforms/wa/access", json={"users": ["bob", "carol"]}, headers=bob_api)
    assert r.status_code == 403, r.text
    # Nor may carol get inside its servers; bob may.
    carol_api = {"Authorization": tokens["carol"]}
    argv = {"argv": ["true"], "timeout": 10}
    r = api.post("/servers/wa-web1/exec", json=argv, headers=carol_api)
    assert r.status_code == 403 and "access list" in r.json()["detail"], r.text
    assert api.get("/servers/wa-web1/log", headers=carol_api).status_code == 403
    assert api.post("/servers/wa-web1/exec", json=argv, headers=bob_api).status_code == 200
    r = api.put("/platforms/wa/access", json={"users": ["nosuchuser"]})
    assert r.status_code == 422 and "not a member" in r.json()["detail"]
    api.delete("/platforms/wa")


def test_platform_in_a_lease_is_warned_and_removed_when_the_lease_ends(served: Served) -> None:
    api = served.api
    r = api.post(
        "/leases",
        json={
            "name": "pl-lease",
            "duration": "2h",
            "before_end": "2h",
            "grace": "0m",
            "reservations": [{"kind": "flavor", "flavor": "m1.tiny", "count": 2}],
        },
    )
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 30
    while api.get("/leases/pl-lease").json()["phase"] != "ACTIVE":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    # Three servers do not fit a two-slot lease: refused, nothing made (the plan says so
    # first; two do fit, and cost nothing more than the lease).
    r = api.post(
        "/platform-plans",
        json={"name": "wl", "type": "web", "lease": "pl-lease", "parameters": {"workers": 2}},
    )
    assert r.status_code == 409, r.text
    r = api.post(
        "/platform-plans",
        json={"name": "wl", "type": "web", "lease": "pl-lease", "parameters": {"workers": 1}},
    )
    assert r.status_code == 200 and r.json()["lease"] == "pl-lease", r.text
    assert r.json()["hourly"] == {} and len(r.json()["servers"]) == 2
    r = api.post(
        "/platforms",
        json={"name": "wl", "type": "web", "lease": "pl-lease", "parameters": {"workers": 2}},
    )
    assert r.status_code == 409, r.text
    assert api.get("/platforms/wl").status_code == 404
    assert not [s for s in api.get("/servers").json()["items"] if s["name"].startswith("wl-")]
    r = api.post(
        "/platforms",
        json={"name": "wl", "type": "web", "lease": "pl-lease", "parameters": {"workers": 1}},
    )
    assert r.status_code == 202, r.text
    body = wait_phase(api, "wl", "READY", timeout=60)
    assert body["lease_id"] == api.get("/leases/pl-lease").json()["id"]
    deadline = time.monotonic() + 20
    while not any("ends at" in e and "extend the lease" in e for e in events(api, "wl")):
        assert time.monotonic() < deadline, events(api, "wl")
        time.sleep(0.2)
    # The lease ends: the platform goes with it, and everything it made.
    r = api.post("/leases/pl-lease/end")
    assert r.status_code in (200, 202), r.text
    deadline = time.monotonic() + 60
    while api.get("/platforms/wl").status_code != 404:
        assert time.monotonic() < deadline, api.get("/platforms/wl").json()
        time.sleep(0.2)
    assert not [s for s in api.get("/servers").json()["items"] if s["name"].startswith("wl-")]
    assert not [n for n in api.get("/networks").json()["items"] if n["name"].startswith("wl-")]


def test_a_service_that_stops_answering_degrades_the_platform_until_it_answers(
    served: Served,
) -> None:
    api = served.api
    r = api.post("/platforms", json={"name": "wd", "type": "web", "parameters": {"workers": 0}})
    assert r.status_code == 202, r.text
    wait_phase(api, "wd", "READY", timeout=60)
    # Freeze the web server (it stays "running"): the gateway's liveness check times out.
    stop = "kill -STOP $(pgrep -f 'http[.]server 8000')"
    assert _exec(served, "wd-web1", "sh", "-c", stop)["exit_code"] == 0
    body = wait_phase(api, "wd", "DEGRADED", timeout=60)
    assert "site" in body["phase_reason"] and body["services"][0]["healthy"] is False
    cont = "kill -CONT $(pgrep -f 'http[.]server 8000')"
    assert _exec(served, "wd-web1", "sh", "-c", cont)["exit_code"] == 0
    wait_phase(api, "wd", "READY", timeout=60)
    timeline = events(api, "wd")
    assert "service wd-site down" in timeline and timeline[-1] in ("ready", "service wd-site up")
    # A daemon that dies is started again by the next look (every 5 s).
    kill = "kill -9 $(pgrep -f 'http[.]server 8000')"
    assert _exec(served, "wd-web1", "sh", "-c", kill)["exit_code"] == 0
    deadline = time.monotonic() + 40
    while not any("restarted web on wd-web1" in e for e in events(api, "wd")):
        assert time.monotonic() < deadline, events(api, "wd")
        time.sleep(0.5)
    wait_phase(api, "wd", "READY", timeout=60)
    api.delete("/platforms/wd")


def test_a_preemptible_platform_goes_when_its_server_goes(served: Served) -> None:
    api = served.api
    r = api.post(
        "/platforms",
        json={"name": "pp", "type": "web", "lease": "x", "preemptible": True},
    )
    assert r.status_code == 422 and "not both" in r.json()["detail"], r.text
    r = api.post(
        "/platforms",
        json={"name": "pp", "type": "web", "preemptible": True, "parameters": {"workers": 1}},
    )
    assert r.status_code == 202 and r.json()["preemptible"] is True, r.text
    wait_phase(api, "pp", "READY", timeout=60)
    assert api.get("/servers/pp-worker1").json()["preemptible"] is True
    # Its server goes (as when a lease takes the room): the platform goes too, saying why,
    # rather than making the server again on room that is not its to take.
    assert api.delete("/servers/pp-worker1").status_code == 202
    deadline = time.monotonic() + 60
    while api.get("/platforms/pp").status_code != 404:
        assert time.monotonic() < deadline, api.get("/platforms/pp").json()
        time.sleep(0.2)
    r = api.get("/servers", params={"limit": 1000})
    assert not [s for s in r.json()["items"] if s["name"].startswith("pp-")]
