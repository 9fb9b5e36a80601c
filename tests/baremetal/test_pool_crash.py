"""SIGKILL ``ecliptic serve`` in the middle of Ironic work, against a real standalone Ironic;
restarted without the crash point, it converges, and no node is orphaned or deployed twice."""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ecliptic.services.pool import hypervisor_instance, instance_key
from tests.baremetal.conftest import enroll_pool, phases
from tests.crash.test_crash_safety import Instance
from tests.ironic_fixtures import IronicEnv


def _nodes(env: IronicEnv) -> dict[str, Any]:
    """Ironic's nodes by name, once none is in a transition."""
    return {n.name: n for n in env.conn.baremetal.nodes(details=True)}


def _deployed(env: IronicEnv) -> dict[str, str]:
    """Ironic's deployed (or deploying) nodes: name -> instance key."""
    return {
        name: instance_key(n.instance_id)
        for name, n in _nodes(env).items()
        if n.instance_id or n.provision_state != "available"
    }


def _host_ids(inst: Instance) -> dict[str, str]:
    return {h["name"]: h["id"] for h in inst.call("GET", "/hosts").json()["items"]}


def _killed(inst: Instance) -> None:
    assert inst.wait_killed() == -signal.SIGKILL


def _call(inst: Instance, method: str, path: str, body: Any = None) -> httpx.Response | None:
    """A request the crash may cut off (the worker reached the point first)."""
    try:
        return inst.call(method, path, body)
    except httpx.TransportError:
        return None


def _phase_is(inst: Instance, phase: str, *names: str) -> None:
    inst.wait_for(lambda: all(phases(inst).get(n) == phase for n in names), f"{names} {phase}", 30)


def test_crash_after_a_bare_metal_deploy(
    ironic_env: IronicEnv, pool_instance: Callable[..., Instance]
) -> None:
    enroll_pool(ironic_env, 2)
    inst = pool_instance(crash_at="baremetal.after_deploy")
    r = inst.call(
        "POST",
        "/leases",
        {
            "name": "metal",
            "start": "now",
            "duration": "1h",
            "grace": "0m",
            "reservations": [{"kind": "host", "count": 1}],
        },
    )
    assert r.status_code == 201, r.text
    inst.wait_for(lambda: inst.call("GET", "/leases/metal").json()["phase"] == "ACTIVE", "lease")
    _call(inst, "POST", "/servers", {"name": "metal-a", "flavor": "bm.cpu", "lease": "metal"})
    _killed(inst)

    inst.start()
    srv = inst.wait_for(
        lambda: next((s for s in inst.servers() if s["phase"] == "ACTIVE"), None), "ACTIVE", 30
    )
    assert [s["name"] for s in inst.servers()] == ["metal-a"]
    assert _deployed(ironic_env) == {srv["host"]: instance_key(srv["id"])}
    assert _nodes(ironic_env)[srv["host"]].provision_state == "active"


def test_crash_after_a_hypervisor_deploy(
    ironic_env: IronicEnv, pool_instance: Callable[..., Instance]
) -> None:
    enroll_pool(ironic_env, 2)
    inst = pool_instance(crash_at="hosts.to_hypervisor.after_deploy")
    _phase_is(inst, "BAREMETAL", "node-01", "node-02")
    _call(inst, "POST", "/hosts/node-01/convert", {"to": "hypervisor"})
    _killed(inst)

    inst.start()
    _phase_is(inst, "HYPERVISOR", "node-01")
    assert phases(inst)["node-02"] == "BAREMETAL"
    hv = hypervisor_instance(_host_ids(inst)["node-01"])
    assert _deployed(ironic_env) == {"node-01": hv}
    assert _nodes(ironic_env)["node-01"].provision_state == "active"


@pytest.mark.parametrize(
    "crash_at", ["reconcile.server.before_backend", "hosts.to_baremetal.after_undeploy"]
)
def test_crash_while_handing_a_hypervisor_back(
    ironic_env: IronicEnv, pool_instance: Callable[..., Instance], crash_at: str
) -> None:
    enroll_pool(ironic_env, 2)
    inst = pool_instance()
    # Three servers on node-01, then a second hypervisor for them to move to.
    assert inst.call("POST", "/hosts/node-01/convert", {"to": "hypervisor"}).status_code == 200
    _phase_is(inst, "HYPERVISOR", "node-01")
    for name in ("a", "b", "c"):
        r = inst.call("POST", "/servers", {"name": name, "flavor": "m1.tiny"})
        assert r.status_code == 202, r.text
    inst.wait_for(
        lambda: [(s["phase"], s["host"]) for s in inst.servers()] == [("ACTIVE", "node-01")] * 3,
        "three servers ACTIVE on node-01",
    )
    assert inst.call("POST", "/hosts/node-02/convert", {"to": "hypervisor"}).status_code == 200
    _phase_is(inst, "HYPERVISOR", "node-02")
    ids = _host_ids(inst)

    inst.stop()
    inst = pool_instance(crash_at=crash_at)
    _call(inst, "POST", "/hosts/node-01/convert", {"to": "baremetal"})
    _killed(inst)

    inst.start()
    _phase_is(inst, "BAREMETAL", "node-01")
    inst.wait_for(
        lambda: [(s["phase"], s["host"]) for s in inst.servers()] == [("ACTIVE", "node-02")] * 3,
        "the three servers ACTIVE on node-02",
    )
    for s in inst.servers():
        r = inst.call("POST", f"/servers/{s['name']}/exec", {"argv": ["hostname"]})
        assert r.status_code == 200 and r.json()["stdout"].strip() == s["name"], r.text
    nodes = _nodes(ironic_env)
    assert nodes["node-01"].provision_state == "available" and not nodes["node-01"].instance_id
    assert _deployed(ironic_env) == {"node-02": hypervisor_instance(ids["node-02"])}
