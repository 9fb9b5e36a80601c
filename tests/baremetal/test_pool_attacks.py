"""The pool attacked: hostile node data from Ironic, a deploy Ironic half did, an Ironic
that is not there at start, settings that do not parse. Against the session's real Ironic
and a real ``ecliptic serve``."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ecliptic.services.pool import hypervisor_instance
from tests.baremetal.conftest import clean, enroll_pool, phases, pool_env
from tests.conftest import _free_port
from tests.crash.test_crash_safety import PASSWORD, Instance
from tests.ironic_fixtures import IronicEnv, enroll, wait_state

HV = "trait.custom_hv_capable == true"


def _hosts(inst: Instance) -> dict[str, dict[str, Any]]:
    r = inst.call("GET", "/hosts")
    assert r.status_code == 200, r.text
    return {h["name"]: h for h in r.json()["items"]}


def test_hostile_node_data_neither_breaks_the_sync_nor_spoofs_the_pool(
    ironic_env: IronicEnv, pool_instance: Callable[..., Instance]
) -> None:
    conn = ironic_env.conn
    enroll(conn, "good", cpus=64, memory_mb=262144, traits=["CUSTOM_HV_CAPABLE"])
    # A capability named like a trait (or like the node's resource class) is no trait.
    enroll(
        conn,
        "spoof",
        cpus=64,
        memory_mb=262144,
        capabilities={"trait.custom_hv_capable": "true", "resource_class": "pool"},
    )
    # A size no host has: it would not fit the database, and the whole sync would fail.
    enroll(conn, "huge", cpus=8)
    huge = conn.baremetal.find_node("huge")
    conn.baremetal.update_node(huge, properties={**huge.properties, "cpus": 10**20})
    # A million GPUs: the scheduler would build a capacity vector of a million entries.
    gpus = enroll(conn, "gpus", cpus=8, capabilities={"gpu_model": "A100", "gpu_count": "1000000"})
    inst = pool_instance(ECLIPTIC_HYPERVISOR_POOL=HV)

    hosts = _hosts(inst)
    assert "good" in hosts and "spoof" in hosts, sorted(hosts)
    assert "huge" not in hosts and "gpus" not in hosts, sorted(hosts)
    assert hosts["spoof"]["pool"] is None
    assert "trait.custom_hv_capable" not in hosts["spoof"]["properties"]
    assert "resource_class" not in hosts["spoof"]["properties"] or (
        hosts["spoof"]["properties"]["resource_class"] == "baremetal"
    )
    assert phases(inst) == {"good": "BAREMETAL"}

    # A host already made goes down, saying which value is out of range, when its node
    # starts to claim the impossible.
    node = conn.baremetal.get_node(gpus)
    caps = "gpu_model:A100,gpu_count:2"
    conn.baremetal.update_node(gpus, properties={**node.properties, "capabilities": caps})
    inst.wait_for(lambda: "gpus" in _hosts(inst), "host gpus enrolled", 15)
    assert _hosts(inst)["gpus"]["gpus"][0]["count"] == 2
    caps = "gpu_model:A100,gpu_count:100000000"
    conn.baremetal.update_node(gpus, properties={**node.properties, "capabilities": caps})
    down = inst.wait_for(
        lambda: (h := _hosts(inst)["gpus"])["state"] == "down" and h, "host gpus down", 15
    )
    assert "gpu_count 100000000 is out of range (1 to 64)" in down["state_reason"], down
    assert down["gpus"][0]["count"] == 2  # the last sane record is kept


def test_a_hypervisor_deploy_ironic_half_did_is_finished(
    ironic_env: IronicEnv, pool_instance: Callable[..., Instance]
) -> None:
    (node,) = enroll_pool(ironic_env, 1)
    inst = pool_instance()
    host = _hosts(inst)["node-01"]
    # Ironic took the instance and then failed (or went away) before the deploy call: the
    # node is available and carries this host's hypervisor instance.
    ironic_env.conn.baremetal.update_node(node, instance_id=hypervisor_instance(host["id"]))

    r = inst.call("POST", "/hosts/node-01/convert", {"to": "hypervisor"})
    assert r.status_code == 200, r.text
    inst.wait_for(lambda: phases(inst)["node-01"] == "HYPERVISOR", "a hypervisor", 20)
    assert wait_state(ironic_env.conn, node, "active").instance_id.replace("-", "") == (
        hypervisor_instance(host["id"])
    )

    assert inst.call("POST", "/hosts/node-01/convert", {"to": "baremetal"}).status_code == 200
    inst.wait_for(lambda: phases(inst)["node-01"] == "BAREMETAL", "bare metal again", 20)
    assert inst.call("POST", "/hosts/node-01/convert", {"to": "auto"}).status_code == 200


def test_serve_starts_without_ironic_and_never_logs_its_password(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "hunter2-never-logged"
    pool_env(monkeypatch, tmp_path, "http://127.0.0.1:9", ECLIPTIC_IRONIC_USERNAME="ecliptic")
    monkeypatch.setenv("ECLIPTIC_IRONIC_PASSWORD", secret)
    inst = Instance(tmp_path / "data", sqlite_url)
    inst.data_dir.mkdir()
    inst.start()
    try:
        r = inst.call("GET", "/hosts/pool")
        assert r.status_code == 200 and r.json()["items"] == [], r.text
    finally:
        inst.stop()
    log = (inst.data_dir / "log").read_text()
    assert "Ironic (http://127.0.0.1:9) not reachable yet" in log, log
    assert secret not in log


@pytest.mark.parametrize(
    ("var", "value", "said"),
    [
        ("ECLIPTIC_HYPERVISOR_POOL", 'resource_class == "pool" and (', "ECLIPTIC_HYPERVISOR_POOL"),
        ("ECLIPTIC_IRONIC_URL", "ftp://ironic.example", "ECLIPTIC_IRONIC_URL"),
    ],
)
def test_settings_that_do_not_parse_stop_serve_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, var: str, value: str, said: str
) -> None:
    pool_env(monkeypatch, tmp_path, "http://127.0.0.1:9")
    env = dict(
        os.environ,
        **{var: value},
        ECLIPTIC_DATA_DIR=str(tmp_path / "data"),
        ECLIPTIC_ADMIN_PASSWORD=PASSWORD,
        ECLIPTIC_GATEWAY="off",
        ECLIPTIC_PORT=str(_free_port()),
    )
    done = subprocess.run(
        [sys.executable, "-m", "ecliptic.cli.main", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert said in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


@pytest.fixture
def slow_pool_instance(
    slow_ironic_env: IronicEnv, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Instance]]:
    """``pool_instance`` on the slow Ironic (a deploy takes 3 s: time to act mid-way)."""
    made: list[Instance] = []

    def start(**extra: str) -> Instance:
        pool_env(monkeypatch, tmp_path, slow_ironic_env.url, **extra)
        inst = Instance(tmp_path / "data", sqlite_url)
        inst.data_dir.mkdir(exist_ok=True)
        inst.start()
        made.append(inst)
        return inst

    yield start
    for inst in made:
        try:
            clean(inst)
        finally:
            inst.stop()


def test_bare_metal_asked_while_a_waited_for_hypervisor_is_built_moves_its_vm_away(
    slow_ironic_env: IronicEnv, slow_pool_instance: Callable[..., Instance]
) -> None:
    enroll_pool(slow_ironic_env, 2)
    inst = slow_pool_instance()
    # An on-demand VM: placed on a bare-metal host of the pool, which the policy converts.
    r = inst.call("POST", "/servers", {"name": "vm-1", "flavor": "m1.xlarge"})
    assert r.status_code == 202, r.text
    first = inst.wait_for(
        lambda: next((n for n, p in phases(inst).items() if p == "TO_HYPERVISOR"), None),
        "a conversion to hypervisor",
        15,
    )
    other = ({"node-01", "node-02"} - {first}).pop()
    # The operator wants that host as bare metal before it is done: the VM waiting for it
    # goes elsewhere, and the policy does not undo the operator's choice.
    r = inst.call("POST", f"/hosts/{first}/convert", {"to": "baremetal"})
    assert r.status_code == 200, r.text
    vm = inst.wait_for(
        lambda: (s := inst.call("GET", "/servers/vm-1").json())["phase"] == "ACTIVE" and s,
        "vm-1 ACTIVE",
        60,
    )
    assert vm["host"] == other, vm
    inst.wait_for(lambda: phases(inst)[first] == "BAREMETAL", f"{first} bare metal", 30)
    said = [e["to_phase"] for e in inst.call("GET", f"/hosts/{first}/events").json()["items"]]
    assert said.count("TO_HYPERVISOR") == 1, said
    assert inst.call("POST", f"/hosts/{first}/convert", {"to": "auto"}).status_code == 200
