"""Nothing of another tenancy is visible or reachable from the portal, by URL guessing
either: every page and action of tenancy physics, tried by bob (chemistry) with his own
valid session and form token; and every operator page, tried by a non-administrator."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ecliptic.runtime import Runtime
from ecliptic.services import benchmarks
from ecliptic.web.render import PageRoute
from tests.web.conftest import BASE, Browser
from tests.web.test_benchmark_pages import fixture, make_run, member, mpi_set, play

PARAM = re.compile(r"\{(\w+)\}")


@pytest.fixture(scope="module")
def physics_objects(portal_app: Any, people: dict[str, str]) -> Iterator[dict[str, str]]:
    """A lease and a server of physics, made through the API."""
    api = TestClient(portal_app, base_url=BASE)
    h = {"Authorization": f"Bearer {people['admin_token']}", "X-Ecliptic-Tenancy": "physics"}
    r = api.post(
        "/api/v1/leases",
        json={
            "name": "secret-lease",
            "duration": "2h",
            "reservations": [{"kind": "flavor", "flavor": "m1.small", "count": 1}],
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    r = api.post("/api/v1/servers", json={"name": "secret-server", "flavor": "m1.small"}, headers=h)
    assert r.status_code in (201, 202), r.text
    yield {"lease": "secret-lease", "server": "secret-server"}
    api.delete("/api/v1/servers/secret-server", headers=h)
    deadline = time.monotonic() + 30
    while api.get("/api/v1/servers/secret-server", headers=h).status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    api.delete("/api/v1/leases/secret-lease", headers=h)


@pytest.fixture(scope="module")
def physics_benchmarks(portal_runtime: Runtime, people: dict[str, str]) -> Iterator[None]:
    """A finished benchmark set and a finished lone run of physics, with figures and plots."""
    rt = portal_runtime
    alice = member(rt, "alice", "physics")
    mpi_set(rt, alice, "secret-set")
    run = make_run(rt, alice, "secret-run", {"kind": "mpi_pingpong"})
    play(rt, run.id, to="SUCCEEDED", raw=fixture("mpi_pingpong_bridge.txt"))
    yield
    benchmarks.delete_set(rt.db, rt.queue, alice, "secret-set")
    benchmarks.delete_benchmark(rt.db, rt.queue, alice, "secret-run")


def _routes(app: Any) -> list[tuple[str, str]]:
    """Every portal route (method, path), included routers walked through."""
    out = []
    stack = list(app.routes)
    while stack:
        route = stack.pop()
        inner = getattr(route, "original_router", None)
        if inner is not None:
            stack.extend(inner.routes)
        elif isinstance(route, PageRoute):
            out.extend((m, route.path) for m in sorted(route.methods - {"HEAD"}))
    return sorted(out)


def _fill(path: str, tenancy: str, objects: dict[str, str]) -> str:
    def value(m: re.Match[str]) -> str:
        key = m.group(1)
        if key == "tenancy":
            return tenancy
        before = path[: m.start()].rstrip("/").rsplit("/", 1)[-1]
        return {
            "leases": objects["lease"],
            "servers": objects["server"],
            "platforms": "secret-platform",
            "catalogue": "workstation",
            "hosts": "gpu-a",
            "tenancies": "physics",
            "benchmarks": "secret-run",
            "sets": "secret-set",
            "plots": "mpi_pingpong-latency.svg",
        }.get(before, "secret")

    return PARAM.sub(value, path)


def _state(api: TestClient, admin_token: str) -> tuple[Any, ...]:
    h = {"Authorization": f"Bearer {admin_token}", "X-Ecliptic-Tenancy": "physics"}
    lease = api.get("/api/v1/leases/secret-lease", headers=h).json()
    server = api.get("/api/v1/servers/secret-server", headers=h).json()
    members = api.get("/api/v1/tenancies/physics/members", headers=h).json()
    bench = api.get("/api/v1/benchmark-sets/secret-set", headers=h).json()
    run = api.get("/api/v1/benchmarks/secret-run", headers=h).json()
    return (
        lease["end"],
        lease["phase"],
        server["id"],
        str(members),
        bench["phase"],
        bench["runs"],
        run["phase"],
    )


def test_every_page_and_action_of_another_tenancy_is_a_404(
    portal_app: Any,
    people: dict[str, str],
    bob: Browser,
    physics_objects: dict[str, str],
    physics_benchmarks: None,
) -> None:
    api = TestClient(portal_app, base_url=BASE)
    before = _state(api, people["admin_token"])
    routes = [(m, p) for m, p in _routes(portal_app) if "{tenancy}" in p]
    assert len(routes) >= 20, routes  # every tenancy page is on the list
    tried = 0
    for method, template in routes:
        for tenancy in ("physics", "chemistry"):
            if tenancy == "chemistry" and ("{name}" not in template or "/catalogue/" in template):
                # bob's own tenancy: only physics's object names are a guess (the
                # catalogue's types are everyone's)
                continue
            path = _fill(template, tenancy, physics_objects)
            if method == "GET":
                r = bob.get(path, follow_redirects=False)
            else:
                r = bob.post(
                    path,
                    {
                        "confirm": "secret-platform",
                        "how": "extend",
                        "amount": "1h",
                        "users": "bob",
                        "name": "x",
                        "spec": "name: bobs-run\nkind: iperf3\n",
                    },
                )
            tried += 1
            assert r.status_code == 404, (method, path, r.status_code, r.text[:300])
            for secret in ("secret-lease", "secret-server", "198.18.", "secret-set", "secret-run"):
                body = r.text.split("<main", 1)[-1]
                assert secret not in body or secret in path, (method, path, secret)
    assert tried >= 25
    assert _state(api, people["admin_token"]) == before


def test_switching_to_another_tenancy_leads_to_a_404(bob: Browser) -> None:
    r = bob.get("/switch", params={"to": "physics"}, follow_redirects=True)
    assert r.status_code == 200 and "<h1>chemistry</h1>" in r.text
    assert bob.get("/t/physics/", follow_redirects=False).status_code == 404


def test_operator_pages_refuse_who_is_not_an_administrator(
    portal_app: Any, alice: Browser, operator: Browser, physics_objects: dict[str, str]
) -> None:
    routes = [(m, p) for m, p in _routes(portal_app) if p.startswith("/admin")]
    assert len(routes) >= 8, routes
    for method, template in routes:
        path = _fill(template, "physics", physics_objects)
        if method == "GET":
            r = alice.get(path, follow_redirects=False)
            assert r.status_code == 403, (path, r.status_code)
            assert operator.get(path, follow_redirects=False).status_code == 200, path
        else:
            r = alice.post(path, {"state": "down", "user": "alice", "role": "admin"})
            assert r.status_code == 403, (path, r.status_code)
