"""Ironic's nodes are Ecliptic's hosts, against a real standalone Ironic: enrolment (before
and while serving), maintenance (which heals the leases on the host), a node deleted from
Ironic, and a node someone deployed behind Ecliptic's back."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

from tests.crash.test_crash_safety import Instance
from tests.ironic_fixtures import IronicEnv, enroll, wait_state

CPU = 'resource_class == "baremetal"'
"""The filter of the host leases here: the plain CPU nodes (not the GPU one)."""


def _hosts(inst: Instance) -> dict[str, dict[str, Any]]:
    r = inst.call("GET", "/hosts")
    assert r.status_code == 200, r.text
    return {h["name"]: h for h in r.json()["items"]}


def _host_is(inst: Instance, name: str, state: str, timeout: float = 10) -> dict[str, Any]:
    """Wait until host ``name`` is in ``state``; return it."""

    def now() -> dict[str, Any] | None:
        h = _hosts(inst).get(name)
        return h if h is not None and h["state"] == state else None

    got: dict[str, Any] = inst.wait_for(now, f"host {name} {state}", timeout)
    return got


def _lease(inst: Instance, name: str, count: int) -> dict[str, Any]:
    body = {
        "name": name,
        "start": "now",
        "duration": "2h",
        "grace": "0m",
        "reservations": [{"kind": "host", "count": count, "where": CPU}],
    }
    r = inst.call("POST", "/leases", body)
    assert r.status_code == 201, r.text
    inst.wait_for(
        lambda: inst.call("GET", f"/leases/{name}").json()["phase"] == "ACTIVE",
        f"lease {name} ACTIVE",
    )
    return dict(inst.call("GET", f"/leases/{name}").json())


def _lease_hosts(lease: dict[str, Any]) -> set[str]:
    return {a["host"] for r in lease["reservations"] for a in r["allocations"]}


def _lease_events(inst: Instance, name: str) -> list[str]:
    r = inst.call("GET", f"/leases/{name}/events")
    assert r.status_code == 200, r.text
    return [f"{e['to_phase']}: {e['reason']}" for e in r.json()["items"]]


def test_nodes_become_hosts_and_their_state_follows_ironic(
    ironic_env: IronicEnv, pool_instance: Callable[..., Instance]
) -> None:
    conn = ironic_env.conn
    gpu = enroll(
        conn,
        "gpu-01",
        cpus=64,
        memory_mb=262144,
        local_gb=900,
        resource_class="gpu",
        capabilities={"gpu_model": "A100", "gpu_count": "4", "cpu_model": "EPYC", "numa": "2"},
        traits=["CUSTOM_INFINIBAND", "HW_CPU_X86_AVX2"],
        ports=["52:54:00:10:00:01"],
    )
    cpu = {name: enroll(conn, name, cpus=16, memory_mb=65536) for name in ("cpu-01", "cpu-02")}
    inst = pool_instance()

    # Every node is a host within a sync, with the node's properties.
    inst.wait_for(lambda: {"gpu-01", "cpu-01", "cpu-02"} <= set(_hosts(inst)), "hosts", 5)
    h = _host_is(inst, "gpu-01", "up")
    assert (h["source"], h["node_id"], h["pool"]) == ("ironic", gpu, None)
    assert (h["vcpus"], h["memory_mb"], h["disk_gb"]) == (64, 262144, 900)
    assert [(g["model"], g["count"]) for g in h["gpus"]] == [("A100", 4)]
    props = h["properties"]
    assert props["resource_class"] == "gpu"
    assert props["cpu_model"] == "EPYC" and props["numa"] == 2
    assert props["trait.custom_infiniband"] is True and props["trait.hw_cpu_x86_avx2"] is True
    assert not {"gpu_model", "gpu_count"} & set(props)
    assert _hosts(inst)["cpu-01"]["gpus"] == []

    # A node enrolled while serving shows up at the next sync (1 s here).
    cpu["cpu-03"] = enroll(conn, "cpu-03", cpus=16, memory_mb=65536)
    _host_is(inst, "cpu-03", "up", timeout=3)

    # Maintenance takes the host out and heals the host lease that held it.
    lease = _lease(inst, "hold", 1)
    (held,) = _lease_hosts(lease)
    conn.baremetal.set_node_maintenance(cpu[held], reason="fan 3 failed")
    h = _host_is(inst, held, "maintenance", timeout=5)
    assert h["state_reason"] == "Ironic: in maintenance: fan 3 failed"

    def healed() -> dict[str, Any] | None:
        got = dict(inst.call("GET", "/leases/hold").json())
        return got if got["phase"] == "ACTIVE" and held not in _lease_hosts(got) else None

    lease = inst.wait_for(healed, "the lease re-placed off the host in maintenance", 10)
    (moved_to,) = _lease_hosts(lease)
    assert moved_to in cpu and moved_to != held
    said = " | ".join(_lease_events(inst, "hold"))
    assert f"DEGRADED: lost host {held}" in said, said
    assert f"ACTIVE: host {held} replaced by {moved_to}" in said, said

    # Maintenance lifted: up again, and schedulable (a lease of every CPU host fits).
    conn.baremetal.unset_node_maintenance(cpu[held])
    assert _host_is(inst, held, "up", timeout=5)["state_reason"] == ""
    assert _lease_hosts(_lease(inst, "all", 2)) == set(cpu) - {moved_to}
    for name in ("hold", "all"):
        assert inst.call("POST", f"/leases/{name}/end").status_code == 202

    # A node deleted from Ironic retires its host.
    conn.baremetal.delete_node(cpu.pop("cpu-03"))
    assert _host_is(inst, "cpu-03", "retired", timeout=5)["state_reason"] == "deleted from Ironic"

    # A node deployed behind Ecliptic's back is someone else's: down, and never used.
    foreign = uuid.uuid4()
    conn.baremetal.update_node(
        cpu["cpu-02"],
        instance_id=str(foreign),
        instance_info={
            "image_source": "http://images.example/other.qcow2",
            "image_type": "whole-disk",
        },
    )
    conn.baremetal.set_node_provision_state(cpu["cpu-02"], "active")
    wait_state(conn, cpu["cpu-02"], "active")
    h = _host_is(inst, "cpu-02", "down", timeout=5)
    assert "deployed outside Ecliptic" in h["state_reason"], h
    assert foreign.hex in h["state_reason"], h
    r = inst.call(
        "POST",
        "/leases",
        {
            "name": "both",
            "start": "now",
            "duration": "1h",
            "reservations": [{"kind": "host", "count": 2, "where": CPU}],
        },
    )
    assert r.status_code == 409, r.text
    assert _lease_hosts(_lease(inst, "one", 1)) == {"cpu-01"}
    node = conn.baremetal.get_node(cpu["cpu-02"])
    assert (node.provision_state, node.instance_id) == ("active", str(foreign))
