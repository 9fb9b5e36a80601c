"""Bare-metal servers when Ironic is slow or fails, against a real (slow) standalone Ironic:
deploys take 3 s and power actions 2 s, so every transition can be watched from outside."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from ecliptic.services.pool import instance_key
from tests.crash.test_crash_safety import Instance
from tests.ironic_fixtures import POLL_S, IronicEnv, enroll, wait_stable

DEPLOYING = re.compile(r"Ironic: node [0-9a-f-]{36} is deploying")


def _nodes(env: IronicEnv, n: int) -> list[str]:
    """``n`` nodes a ``bm.cpu`` server fits on (32 CPUs, 128 GiB), outside the pool."""
    return [enroll(env.conn, f"metal-{i:02d}", cpus=32, memory_mb=131072) for i in range(1, n + 1)]


def _lease(inst: Instance, name: str = "metal", count: int = 1) -> None:
    body = {
        "name": name,
        "start": "now",
        "duration": "2h",
        "grace": "0m",
        "reservations": [{"kind": "host", "count": count}],
    }
    r = inst.call("POST", "/leases", body)
    assert r.status_code == 201, r.text
    inst.wait_for(
        lambda: inst.call("GET", f"/leases/{name}").json()["phase"] == "ACTIVE",
        f"lease {name} ACTIVE",
    )


def _create(inst: Instance, name: str, lease: str = "metal") -> dict[str, Any]:
    r = inst.call("POST", "/servers", {"name": name, "flavor": "bm.cpu", "lease": lease})
    assert r.status_code == 202, r.text
    return dict(r.json())


def _server(inst: Instance, name: str) -> dict[str, Any] | None:
    r = inst.call("GET", f"/servers/{name}")
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return dict(r.json())


def _phase(inst: Instance, name: str, phase: str, timeout: float = 30) -> dict[str, Any]:
    """Wait until the server is in ``phase`` (failing at once on another final phase)."""

    def now() -> dict[str, Any] | None:
        s = _server(inst, name)
        assert s is not None, f"server {name} is gone"
        final = {"ACTIVE", "ERROR"} - {phase}
        assert s["phase"] not in final, s
        return s if s["phase"] == phase else None

    got: dict[str, Any] = inst.wait_for(now, f"server {name} {phase}", timeout)
    return got


def _events(inst: Instance, name: str) -> list[str]:
    r = inst.call("GET", f"/servers/{name}/events")
    assert r.status_code == 200, r.text
    return [f"{e['to_phase']}: {e['reason']}" for e in r.json()["items"]]


def _active_nodes(env: IronicEnv) -> dict[str, str]:
    """Ironic's active nodes: uuid -> instance key."""
    return {
        n.id: instance_key(n.instance_id)
        for n in env.conn.baremetal.nodes(details=True)
        if n.provision_state == "active"
    }


def _deleted(inst: Instance, env: IronicEnv, name: str, node: str) -> None:
    """Delete a server and watch it go: it stays (DELETING) until Ironic has undeployed
    its node and says available; then it is gone and the node carries no instance."""
    r = inst.call("DELETE", f"/servers/{name}")
    assert r.status_code == 202, r.text
    seen = set()
    while True:
        s = _server(inst, name)
        n = env.conn.baremetal.get_node(node)  # read after the server: never ahead of it
        if s is None:
            assert n.provision_state == "available" and not n.reservation, n.provision_state
            assert n.instance_id is None
            break
        assert s["phase"] == "DELETING", s
        seen.add(n.provision_state)
        time.sleep(POLL_S)
    assert seen - {"available"}, f"the server went before Ironic undeployed: {seen}"


def test_a_slow_deploy_is_building_until_active_and_a_delete_lasts_until_available(
    slow_ironic_env: IronicEnv, slow_pool_instance: Callable[..., Instance]
) -> None:
    (node,) = _nodes(slow_ironic_env, 1)
    inst = slow_pool_instance()
    _lease(inst)
    srv = _create(inst, "metal-a")

    def deploying() -> dict[str, Any] | None:
        s = _server(inst, "metal-a")
        assert s is not None and s["phase"] in ("PENDING", "BUILDING"), s
        return s if DEPLOYING.search(s["phase_reason"]) else None

    s = inst.wait_for(deploying, "the server BUILDING while Ironic deploys", 10)
    assert s["phase"] == "BUILDING" and node in s["phase_reason"], s
    state = slow_ironic_env.conn.baremetal.get_node(node).provision_state
    assert state in ("deploying", "wait call-back"), state
    _phase(inst, "metal-a", "ACTIVE", 20)
    assert _active_nodes(slow_ironic_env) == {node: instance_key(srv["id"])}

    _deleted(inst, slow_ironic_env, "metal-a", node)
    # The host is free again: the lease's next server gets it.
    again = _create(inst, "metal-b")
    assert _phase(inst, "metal-b", "ACTIVE", 20)["host"] == "metal-01"
    assert _active_nodes(slow_ironic_env) == {node: instance_key(again["id"])}


def test_failed_and_overlong_deploys(
    slow_ironic_env: IronicEnv, slow_pool_instance: Callable[..., Instance]
) -> None:
    env = slow_ironic_env
    (node,) = _nodes(env, 1)
    inst = slow_pool_instance()
    _lease(inst)

    def crash_ironic_mid_deploy(name: str) -> Any:
        """Create a server, SIGKILL Ironic while it deploys, restart it: Ironic's conductor
        fails the deployment it was doing (deploy failed, with its last error)."""
        _create(inst, name)
        inst.wait_for(
            lambda: env.conn.baremetal.get_node(node).provision_state == "deploying",
            "Ironic deploying",
            10,
        )
        env.server.kill()
        env.server.restart()
        failed = env.conn.baremetal.get_node(node)
        assert failed.provision_state == "deploy failed", failed.provision_state
        assert failed.last_error, failed
        return failed

    # A failed deployment is recovered (torn down, cleaned) and deployed again.
    crash_ironic_mid_deploy("retried")
    srv = _phase(inst, "retried", "ACTIVE", 30)
    said = " | ".join(_events(inst, "retried"))
    assert "Ironic: deploy failed: " in said and "(retry 1 of 2)" in said, said
    assert _active_nodes(env) == {node: instance_key(srv["id"])}
    _deleted(inst, env, "retried", node)

    # With no retries, the server is in ERROR with Ironic's error.
    inst.stop()
    inst = slow_pool_instance(ECLIPTIC_IRONIC_RETRIES="0")
    failed = crash_ironic_mid_deploy("unretried")
    s = _phase(inst, "unretried", "ERROR", 30)
    assert f"Ironic: deploy failed: {failed.last_error} (after 1 attempts)" in s["phase_reason"], s
    _deleted(inst, env, "unretried", node)

    # A deployment that takes longer than the timeout is in ERROR, saying so.
    inst.stop()
    inst = slow_pool_instance(ECLIPTIC_IRONIC_DEPLOY_TIMEOUT_SECONDS="1")
    _create(inst, "slow")
    s = _phase(inst, "slow", "ERROR", 10)
    assert f"Ironic did not deploy node {node} within 1 s" in s["phase_reason"], s
    # Ironic finishing late does not make it a server after all: it stays in ERROR.
    assert wait_stable(env.conn, node).provision_state == "active"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        assert _phase(inst, "slow", "ERROR")["phase_reason"] == s["phase_reason"]
        time.sleep(POLL_S)
