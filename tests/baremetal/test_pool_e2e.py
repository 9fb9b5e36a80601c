"""The judged scenario, against a real standalone Ironic: enrol 6 nodes, book a bare-metal
lease on two, watch VM demand convert two others to hypervisors and servers land on them,
end the lease and the VM demand, watch the pool shrink back, nothing left deployed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ecliptic.services.pool import instance_key
from tests.baremetal.conftest import enroll_pool, phases, pool
from tests.crash.test_crash_safety import Instance
from tests.ironic_fixtures import IronicEnv


def _server(inst: Instance, name: str) -> dict[str, Any]:
    r = inst.call("GET", f"/servers/{name}")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def _active(inst: Instance, *names: str, timeout: float = 60) -> list[dict[str, Any]]:
    def all_active() -> list[dict[str, Any]] | None:
        got = [_server(inst, n) for n in names]
        bad = [s for s in got if s["phase"] == "ERROR"]
        assert not bad, bad
        return got if all(s["phase"] == "ACTIVE" for s in got) else None

    got: list[dict[str, Any]] = inst.wait_for(all_active, f"{names} ACTIVE", timeout)
    return got


def _lease(inst: Instance, body: dict[str, Any]) -> dict[str, Any]:
    r = inst.call("POST", "/leases", body)
    assert r.status_code == 201, r.text
    inst.wait_for(
        lambda: inst.call("GET", f"/leases/{body['name']}").json()["phase"] == "ACTIVE",
        f"lease {body['name']} ACTIVE",
    )
    return dict(r.json())


def _events(inst: Instance, host: str) -> list[str]:
    r = inst.call("GET", f"/hosts/{host}/events")
    assert r.status_code == 200, r.text
    return [f"{e['to_phase']}: {e['reason']}" for e in r.json()["items"]]


def _deployed(env: IronicEnv) -> dict[str, str]:
    """Ironic's active nodes: name -> instance key."""
    return {
        n.name: instance_key(n.instance_id)
        for n in env.conn.baremetal.nodes(details=True)
        if n.provision_state == "active"
    }


def test_the_pool_follows_bare_metal_and_vm_demand(
    ironic_env: IronicEnv, pool_instance: Callable[..., Instance]
) -> None:
    enroll_pool(ironic_env, 6)
    inst = pool_instance()

    # Ecliptic sees Ironic's nodes as hosts, all bare metal to begin with.
    hosts = {h["name"]: h for h in inst.call("GET", "/hosts").json()["items"]}
    assert sorted(hosts) == [f"node-{i:02d}" for i in range(1, 7)]
    assert {h["source"] for h in hosts.values()} == {"ironic"}
    assert hosts["node-01"]["properties"]["resource_class"] == "pool"
    assert set(phases(inst).values()) == {"BAREMETAL"}

    # A bare-metal lease on two hosts: two Ironic deployments, one per server.
    _lease(
        inst,
        {
            "name": "metal",
            "start": "now",
            "duration": "2h",
            "reservations": [{"kind": "host", "count": 2}],
        },
    )
    for name in ("metal-a", "metal-b"):
        r = inst.call("POST", "/servers", {"name": name, "flavor": "bm.cpu", "lease": "metal"})
        assert r.status_code == 202, r.text
    metal = _active(inst, "metal-a", "metal-b")
    metal_hosts = {s["host"] for s in metal}
    deployed = _deployed(ironic_env)
    assert {deployed[h] for h in metal_hosts} == {instance_key(s["id"]) for s in metal}

    # VM demand: 8 slots of m1.xlarge (4 per host) starting now.
    _lease(
        inst,
        {
            "name": "vms",
            "start": "now",
            "duration": "2h",
            "reservations": [{"kind": "flavor", "flavor": "m1.xlarge", "count": 8}],
        },
    )
    inst.wait_for(
        lambda: sorted(phases(inst).values()).count("HYPERVISOR") == 2,
        "two hypervisors",
        30,
    )
    hypervisors = {n for n, p in phases(inst).items() if p == "HYPERVISOR"}
    assert not hypervisors & metal_hosts
    for name in ("vm-1", "vm-2", "vm-3"):
        r = inst.call("POST", "/servers", {"name": name, "flavor": "m1.xlarge", "lease": "vms"})
        assert r.status_code == 202, r.text
    vms = _active(inst, "vm-1", "vm-2", "vm-3")
    assert {s["host"] for s in vms} <= hypervisors
    for h in hypervisors:
        said = " | ".join(_events(inst, h))
        assert "TO_HYPERVISOR: lease 'vms' has VM slots on it now" in said, said
        assert "HYPERVISOR: a hypervisor now" in said, said
    # The servers really run: a command inside one answers.
    r = inst.call("POST", "/servers/vm-1/exec", {"argv": ["hostname"]})
    assert r.status_code == 200 and r.json()["stdout"].strip() == "vm-1", r.text

    # Demand ends: the servers go, the leases end; the pool shrinks back, nothing deployed.
    for s in inst.servers():
        inst.call("DELETE", f"/servers/{s['id']}")
    inst.wait_for(lambda: inst.servers() == [], "servers gone", 30)
    for lease in ("vms", "metal"):
        r = inst.call("POST", f"/leases/{lease}/end")
        assert r.status_code == 202, r.text
    inst.wait_for(lambda: set(phases(inst).values()) == {"BAREMETAL"}, "all bare metal again", 30)
    assert _deployed(ironic_env) == {}
    nodes = {n.name: n for n in ironic_env.conn.baremetal.nodes(details=True)}
    assert {n.provision_state for n in nodes.values()} == {"available"}
    assert all(not n.instance_id for n in nodes.values())
    for h in hypervisors:
        said = " | ".join(_events(inst, h))
        assert "BAREMETAL: bare metal again: Ironic says available" in said, said
    rows = pool(inst)
    assert all(r["servers"] == 0 for r in rows.values())
