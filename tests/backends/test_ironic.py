"""The Ironic client against a real standalone Ironic (fake hardware): mapping nodes to
hosts, deploy and undeploy keyed by instance, refusals, and recovery from failures that
Ironic itself produces (a conductor killed mid-deploy, a clean step it does not have)."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ecliptic.backends.base import GpuRecord, HostRecord, NicRecord
from ecliptic.backends.ironic import (
    InvalidState,
    Ironic,
    IronicError,
    IronicNode,
    NodeInMaintenance,
    NodeInUse,
    NodeLocked,
    host_state,
    node_to_host,
)
from tests.ironic_fixtures import IronicEnv, enroll, wait_power, wait_stable
from tests.waiting import wait_until


@pytest.fixture
def client(ironic_env: IronicEnv) -> Iterator[Ironic]:
    """Ecliptic's client of the session's Ironic."""
    c = Ironic(ironic_env.url)
    yield c
    c.close()


@pytest.fixture
def slow_client(slow_ironic_env: IronicEnv) -> Iterator[Ironic]:
    """Ecliptic's client of the session's slow Ironic."""
    c = Ironic(slow_ironic_env.url)
    yield c
    c.close()


def until(
    client: Ironic, node_uuid: str, ok: Callable[[IronicNode], bool], timeout: float = 30.0
) -> IronicNode:
    """Poll the node (every 50 ms) until ``ok`` holds; return it."""

    def check() -> IronicNode | None:
        n = client.node(node_uuid)
        assert n is not None
        return n if ok(n) else None

    return wait_until(check, timeout, f"node {node_uuid}", interval=0.05)


def settled_in(state: str) -> Callable[[IronicNode], bool]:
    """Stable in ``state``: no transition in flight, no lock held."""
    return lambda n: n.provision_state == state and not n.busy


def stored_instance_info(env: IronicEnv, node_uuid: str) -> dict[str, Any]:
    """The node's instance_info as Ironic stored it (the API masks the config drive)."""
    with sqlite3.connect(env.server.dir / "ironic.sqlite") as db:
        row = db.execute("SELECT instance_info FROM nodes WHERE uuid = ?", (node_uuid,)).fetchone()
    return dict(json.loads(row[0] or "{}"))


def new_instance() -> str:
    """An Ecliptic id: 32 hex digits."""
    return uuid.uuid4().hex


def test_nodes_map_to_hosts_with_gpus_nics_and_properties(
    ironic_env: IronicEnv, client: Ironic
) -> None:
    gpu = enroll(
        ironic_env.conn,
        "gpu-a1",
        cpus=64,
        memory_mb=512000,
        local_gb=1800,
        resource_class="gpu",
        capabilities={
            "gpu_model": "A100",
            "gpu_count": "4",
            "gpu_memory_gb": "80",
            "mig_profiles": "1g.10gb|3g.40gb",
            "rdma": "true",
            "boot_mode": "uefi",
            "rack": "r12",
            "credit_rate": "1.5",
            "Fabric Zone": "east",
        },
        traits=["CUSTOM_GPU_A100", "HW_CPU_X86_AVX2"],
        ports=[("52:54:00:00:00:02", {"name": "ib0", "speed_gbps": 200}), "52:54:00:00:00:01"],
    )
    odd = enroll(ironic_env.conn, "Rack7_GPU~2", cpus=4, memory_mb=8192, provide=False)
    ironic_env.conn.baremetal.update_node(
        odd, properties={"cpus": "4", "memory_mb": "8192", "capabilities": {"secure": "false"}}
    )
    hollow = enroll(ironic_env.conn, None, cpus=0, provide=False)

    nodes = {n.uuid: n for n in client.nodes()}

    assert node_to_host(nodes[gpu]) == HostRecord(
        name="gpu-a1",
        vcpus=64,
        memory_mb=512000,
        disk_gb=1800,
        gpus=(GpuRecord("A100", 4, memory_gb=80, mig_profiles=("1g.10gb", "3g.40gb")),),
        nics=(NicRecord("nic0", rdma=True), NicRecord("ib0", speed_gbps=200, rdma=True)),
        properties=(
            ("boot_mode", "uefi"),
            ("credit_rate", 1.5),
            ("fabric_zone", "east"),
            ("ironic_node", gpu),
            ("rack", "r12"),
            ("resource_class", "gpu"),
            ("trait.custom_gpu_a100", True),
            ("trait.hw_cpu_x86_avx2", True),
        ),
    )
    assert host_state(nodes[gpu]) == ("up", "")
    odd_host = node_to_host(nodes[odd])
    assert odd_host is not None
    assert (odd_host.name, odd_host.vcpus, odd_host.memory_mb) == (f"node-{odd[:8]}", 4, 8192)
    assert ("secure", False) in odd_host.properties
    assert host_state(nodes[odd]) == (
        "down",
        "Ironic: node is manageable, not provided (baremetal node provide)",
    )
    assert node_to_host(nodes[hollow]) is None
    assert client.node(str(uuid.uuid4())) is None


def test_deploy_is_idempotent_and_never_takes_a_node_from_another_instance(
    ironic_env: IronicEnv, client: Ironic
) -> None:
    node = enroll(ironic_env.conn, "bm-1", local_gb=200)
    instance = new_instance()

    t0 = time.monotonic()
    client.deploy(
        node,
        instance,
        image="ubuntu-24.04",
        hostname="web-1",
        ssh_keys=["ssh-ed25519 AAAAC3Nza alice@laptop"],
        user_data="#!/bin/sh\necho hello\n",
        meta={"ecliptic_server": instance},
    )
    active = until(client, node, settled_in("active"))
    round_trip = time.monotonic() - t0
    print(f"deploy round trip: {round_trip:.2f} s")

    assert active.carries(instance)
    info = stored_instance_info(ironic_env, node)
    assert info["image_source"] == "ecliptic-image://ubuntu-24.04"
    drive = info["configdrive"]
    assert drive["user_data"] == "#!/bin/sh\necho hello\n"
    assert drive["meta_data"]["uuid"] == instance
    assert drive["meta_data"]["hostname"] == "web-1"
    assert drive["meta_data"]["public_keys"] == {"key0": "ssh-ed25519 AAAAC3Nza alice@laptop"}
    assert drive["meta_data"]["meta"] == {"ecliptic_server": instance}

    # Again, also with the uuid written with dashes: nothing to do (Ironic would refuse a
    # second deploy of an active node with a 400).
    client.deploy(node, instance, image="ubuntu-24.04", hostname="web-1")
    client.deploy(node, str(uuid.UUID(instance)).upper(), image="ubuntu-24.04", hostname="web-1")
    assert client.node(node) == active

    other = new_instance()
    with pytest.raises(NodeInUse) as refused:
        client.deploy(node, other, image="ubuntu-24.04", hostname="web-2")
    assert not refused.value.retryable
    assert instance in str(refused.value)
    # Undeploying another instance's node does nothing.
    client.undeploy(node, other)
    client.release(node, other)
    assert client.node(node) == active


def test_undeploy_cleans_the_node_and_frees_it(ironic_env: IronicEnv, client: Ironic) -> None:
    node = enroll(ironic_env.conn, "bm-2")
    instance = new_instance()
    client.deploy(node, instance, image="base", hostname="job-1")
    until(client, node, settled_in("active"))

    seen: set[str] = set()

    def available(n: IronicNode) -> bool:
        seen.add(n.provision_state)
        return settled_in("available")(n)

    t0 = time.monotonic()
    client.undeploy(node, instance)
    client.undeploy(node, instance)  # already on its way: nothing more
    freed = until(client, node, available)
    print(f"undeploy round trip: {time.monotonic() - t0:.2f} s")
    # Automated cleaning after the teardown: seen by polling, or (when it was quicker than a
    # poll, under load) in Ironic's own record of the node's moves.
    cleaned = f'Node {node} moved to provision state "cleaning" from state "deleting"'
    assert "cleaning" in seen or cleaned in ironic_env.server.log(), seen
    # Ironic clears the instance itself on teardown; release finds nothing to do.
    assert freed.instance_uuid is None
    client.release(node, instance)
    client.undeploy(node, instance)
    assert host_state(freed) == ("up", "")

    # A crash between setting the instance and asking for the deploy leaves the instance on
    # an available node: deploy goes on from there, release clears it.
    again = new_instance()
    ironic_env.conn.baremetal.update_node(node, instance_id=again)
    client.release(node, again)
    cleared = client.node(node)
    assert cleared is not None and cleared.instance_uuid is None
    ironic_env.conn.baremetal.update_node(node, instance_id=again)
    client.deploy(node, again, image="base", hostname="job-2")
    assert until(client, node, settled_in("active")).carries(again)


def test_maintenance_is_refused_with_the_operators_reason(
    ironic_env: IronicEnv, client: Ironic
) -> None:
    node = enroll(ironic_env.conn, "bm-3")
    ironic_env.conn.baremetal.set_node_maintenance(node, reason="fan failure")

    with pytest.raises(NodeInMaintenance) as refused:
        client.deploy(node, new_instance(), image="base", hostname="x")
    assert "maintenance" in str(refused.value) and "fan failure" in str(refused.value)
    assert not refused.value.retryable
    n = client.node(node)
    assert n is not None and n.instance_uuid is None and n.provision_state == "available"
    assert host_state(n) == ("maintenance", "Ironic: in maintenance: fan failure")


def test_clean_failed_is_down_with_ironics_error_then_recovered(
    ironic_env: IronicEnv, client: Ironic
) -> None:
    node = enroll(ironic_env.conn, "bm-4", provide=False)
    # A manual clean with a step the hardware does not have: Ironic accepts it (202) and
    # the conductor fails the cleaning.
    ironic_env.conn.baremetal.set_node_provision_state(
        node, "clean", clean_steps=[{"interface": "deploy", "step": "no_such_step"}]
    )
    failed = until(client, node, settled_in("clean failed"))
    state, reason = host_state(failed)
    assert state == "down"
    assert reason.startswith("Ironic: clean failed: ") and "no_such_step" in reason

    with pytest.raises(InvalidState, match="clean failed"):
        client.deploy(node, new_instance(), image="base", hostname="x")
    assert client.recover(node) == "provide"  # manage, then provide
    recovered = until(client, node, settled_in("available"))
    assert host_state(recovered) == ("up", "")
    assert client.recover(node) is None


def test_unreachable_ironic_is_a_retryable_error() -> None:
    from tests.ports import free_port

    client = Ironic(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(IronicError, match="unreachable") as failed:
        client.nodes()
    assert failed.value.retryable


def test_a_locked_node_is_reported_at_once(slow_ironic_env: IronicEnv, slow_client: Ironic) -> None:
    node = enroll(slow_ironic_env.conn, "slow-1")
    slow_ironic_env.conn.baremetal.set_node_power_state(node, "power on")  # takes 2 s or more

    t0 = time.monotonic()
    with pytest.raises(NodeLocked) as locked:
        slow_client.deploy(node, new_instance(), image="base", hostname="x")
    elapsed = time.monotonic() - t0
    # Neither openstacksdk nor keystoneauth retried the 409 (they back off 0.5, 1, 2... s).
    assert elapsed < 1.5, f"NodeLocked took {elapsed:.2f} s"
    assert locked.value.retryable
    assert "locked" in str(locked.value)
    wait_power(slow_ironic_env.conn, node, "power on")


def test_a_conductor_killed_mid_deploy_leaves_deploy_failed_and_recover_frees_it(
    slow_ironic_env: IronicEnv, slow_client: Ironic
) -> None:
    node = enroll(slow_ironic_env.conn, "slow-2")
    instance = new_instance()
    slow_client.deploy(node, instance, image="base", hostname="x")
    until(client=slow_client, node_uuid=node, ok=lambda n: n.provision_state == "deploying")

    slow_ironic_env.server.kill()
    t0 = time.monotonic()
    slow_ironic_env.server.restart()
    print(f"restart: {time.monotonic() - t0:.2f} s")
    # On start the conductor fails what it finds in flight (STUCK_STATES_TREATED_AS_FAIL).
    failed = until(slow_client, node, settled_in("deploy failed"))
    assert failed.carries(instance)
    assert "deploying" in failed.last_error
    assert host_state(failed) == ("up", "")  # the host is still this instance's

    with pytest.raises(InvalidState, match="deploy failed"):
        slow_client.deploy(node, instance, image="base", hostname="x")
    assert slow_client.recover(node) == "deleted"
    assert slow_client.recover(node) is None  # already on its way
    freed = until(slow_client, node, settled_in("available"), timeout=60)
    assert freed.instance_uuid is None
    wait_stable(slow_ironic_env.conn, node)
