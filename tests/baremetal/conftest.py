"""An ``ecliptic serve`` pointed at the session's real Ironic, with no other hosts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.crash.test_crash_safety import Instance
from tests.ironic_fixtures import IronicEnv, enroll

POOL_CLASS = "pool"
"""Resource class of the test nodes the pool filter selects."""


def pool_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, url: str, **extra: str) -> None:
    """Environment of a serve whose only hosts are Ironic's and whose pool is the nodes of
    resource class ``pool``; the policy acts at once (no idle time, a 1 s sync)."""
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("hosts: []\n")
    values = {
        "ECLIPTIC_INVENTORY": str(inventory),
        "ECLIPTIC_IRONIC_URL": url,
        "ECLIPTIC_IRONIC_SYNC_SECONDS": "1",
        "ECLIPTIC_HYPERVISOR_POOL": f'resource_class == "{POOL_CLASS}"',
        "ECLIPTIC_POOL_IDLE_SECONDS": "0",
        "ECLIPTIC_POOL_SPARE_HYPERVISORS": "0",
        "ECLIPTIC_POOL_LEAD_MARGIN_SECONDS": "0",
        "ECLIPTIC_WORKERS": "3",
        **extra,
    }
    for k, v in values.items():
        monkeypatch.setenv(k, v)


def enroll_pool(env: IronicEnv, n: int, prefix: str = "node") -> list[str]:
    """``n`` pool nodes of 64 CPUs and 256 GiB (four m1.xlarge VMs, or one bm.cpu)."""
    return [
        enroll(
            env.conn,
            f"{prefix}-{i:02d}",
            cpus=64,
            memory_mb=262144,
            local_gb=1000,
            resource_class=POOL_CLASS,
            capabilities={"cpu_model": "EPYC", "boot_mode": "uefi"},
            ports=[f"52:54:00:00:{i // 256:02x}:{i % 256:02x}"],
        )
        for i in range(1, n + 1)
    ]


def _instances(
    env: IronicEnv, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Instance]]:
    made: list[Instance] = []
    armed: set[int] = set()

    def start(crash_at: str = "", **extra: str) -> Instance:
        pool_env(monkeypatch, tmp_path, env.url, **extra)
        inst = Instance(tmp_path / "data", sqlite_url)
        inst.data_dir.mkdir(exist_ok=True)
        inst.start(crash_at=crash_at)
        made.append(inst)
        if crash_at:
            armed.add(id(inst))
        return inst

    yield start
    for inst in made[:-1]:
        inst.stop()
    if made:
        inst = made[-1]
        try:
            if id(inst) in armed or inst.proc is None or inst.proc.poll() is not None:
                inst.stop()
                inst.start()  # without its crash point, or killed by the test: to clean
            clean(inst)
        finally:
            inst.stop()


@pytest.fixture
def pool_instance(
    ironic_env: IronicEnv, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Instance]]:
    """Start (once enrolled) a serve on the session's Ironic (``crash_at`` a fault point,
    keywords more environment); everything it made is deleted after the test, and the
    Ironic emptied (``ironic_env``). Each call is the same instance (data, database) again."""
    yield from _instances(ironic_env, tmp_path, sqlite_url, monkeypatch)


@pytest.fixture
def slow_pool_instance(
    slow_ironic_env: IronicEnv, tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Instance]]:
    """``pool_instance`` on the session's slow Ironic (deploys 3 s, power actions 2 s)."""
    yield from _instances(slow_ironic_env, tmp_path, sqlite_url, monkeypatch)


def clean(inst: Instance) -> None:
    """Delete servers, end leases, give held pool hosts back to the policy, and wait until
    nothing is deployed."""
    for s in inst.servers():
        inst.call("DELETE", f"/servers/{s['id']}")
    inst.wait_for(lambda: inst.servers() == [], "servers gone", 60)
    for lease in inst.call("GET", "/leases").json()["items"]:
        if lease["phase"] not in ("ENDED",):
            inst.call("POST", f"/leases/{lease['name']}/end")
    for n in inst.call("GET", "/networks").json()["items"]:
        inst.call("DELETE", f"/networks/{n['id']}")
    inst.wait_for(lambda: inst.call("GET", "/networks").json()["items"] == [], "networks gone")
    for name, row in pool(inst).items():
        if row["hold"]:
            inst.call("POST", f"/hosts/{name}/convert", {"to": "auto"})
    inst.wait_for(
        lambda: all(r["phase"] == "BAREMETAL" for r in pool(inst).values()),
        "the pool back to bare metal",
        60,
    )


def pool(inst: Instance) -> dict[str, dict[str, Any]]:
    """The pool, by host name."""
    r = inst.call("GET", "/hosts/pool")
    assert r.status_code == 200, r.text
    return {row["name"]: row for row in r.json()["items"]}


def phases(inst: Instance) -> dict[str, str]:
    """Each pool host's phase."""
    return {name: row["phase"] for name, row in pool(inst).items()}
