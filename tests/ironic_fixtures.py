"""Pytest fixtures for a real standalone Ironic, and helpers that enrol and wait for nodes.

``ironic`` and ``slow_ironic`` are session-wide servers, started the first time a test
asks for one (``.venv-ironic``, which ``make setup`` and ``make test`` build; another venv
with ``ECLIPTIC_IRONIC_VENV``). Tests take
``ironic_env`` or ``slow_ironic_env``: a connection to the server, and a promise that the
server is empty again when the test ends, whatever state it left its nodes in.

Helpers poll every 50 ms (openstacksdk's own ``wait=True`` polls every 2 s, which makes a
0.3 s deploy look like 2.3 s) until the node is stable: the transition done
(``target_provision_state`` None) and the conductor's lock released (``reservation``).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.ironic_server import IronicServer
from tests.prerequisites import require

ROOT = Path(__file__).resolve().parent.parent
IRONIC_BIN = Path(os.environ.get("ECLIPTIC_IRONIC_VENV", ROOT / ".venv-ironic")) / "bin"
POLL_S = 0.05
SLOW_DELAYS = {"deploy_delay": "3", "power_delay": "2"}
"""Seconds the fake deploy and power interfaces of ``slow_ironic`` take."""

FAILED = {"deploy failed", "clean failed", "error", "inspect failed", "adopt failed"}
TRANSIENT = {
    "deploying",
    "wait call-back",
    "deleting",
    "cleaning",
    "clean wait",
    "verifying",
    "inspecting",
    "inspect wait",
    "adopting",
}


@dataclass
class IronicEnv:
    """A running Ironic and an openstacksdk connection to it."""

    server: IronicServer
    conn: Any

    @property
    def url(self) -> str:
        """The API's base URL."""
        return self.server.url


def _server(
    tmp_path_factory: pytest.TempPathFactory, name: str, **kwargs: Any
) -> Iterator[IronicServer]:
    require(
        (IRONIC_BIN / "ironic").exists(),
        f"standalone Ironic at {IRONIC_BIN}/ironic (make setup builds .venv-ironic)",
    )
    srv = IronicServer(IRONIC_BIN, tmp_path_factory.mktemp(name), **kwargs)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="session")
def ironic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IronicServer]:
    """A standalone Ironic for the session (fake hardware, instant actions)."""
    yield from _server(tmp_path_factory, "ironic")


@pytest.fixture(scope="session")
def slow_ironic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[IronicServer]:
    """A standalone Ironic whose fake deploys take 3 s and power actions 2 s, and whose
    conductor does not retry a node's lock itself: for waiting, timeout and NodeLocked paths.
    No automated cleaning: its power actions would make every provide and undeploy slow."""
    yield from _server(
        tmp_path_factory,
        "slow-ironic",
        automated_clean=False,
        fake_delays=SLOW_DELAYS,
        lock_retries=1,
    )


def _env(server: IronicServer) -> Iterator[IronicEnv]:
    if not server.running():  # a test that killed it and failed before restarting it
        server.restart()
    conn = server.connect()
    try:
        yield IronicEnv(server, conn)
    finally:
        if not server.running():
            server.restart()
        empty(conn)
        conn.close()


@pytest.fixture
def ironic_env(ironic: IronicServer) -> Iterator[IronicEnv]:
    """The session's Ironic, emptied after the test."""
    yield from _env(ironic)


@pytest.fixture
def slow_ironic_env(slow_ironic: IronicServer) -> Iterator[IronicEnv]:
    """The session's slow Ironic, emptied after the test."""
    yield from _env(slow_ironic)


def stable(node: Any) -> bool:
    """True when no transition is in flight and no conductor holds the node's lock."""
    if node.reservation:
        return False
    if node.provision_state in FAILED:  # Ironic keeps the target it failed to reach
        return True
    return node.target_provision_state is None and node.provision_state not in TRANSIENT


def wait_stable(conn: Any, node_id: str, timeout: float = 30.0) -> Any:
    """Poll the node until it is stable; return it."""
    deadline = time.monotonic() + timeout
    while True:
        node = conn.baremetal.get_node(node_id)
        if stable(node):
            return node
        if time.monotonic() > deadline:
            raise AssertionError(
                f"node {node_id} still {node.provision_state} -> "
                f"{node.target_provision_state} (lock: {node.reservation}) after {timeout} s"
            )
        time.sleep(POLL_S)


def wait_state(conn: Any, node_id: str, state: str, timeout: float = 30.0) -> Any:
    """Poll the node until it is stable in ``state``; fail at once if it settles elsewhere."""
    deadline = time.monotonic() + timeout
    while True:
        node = wait_stable(conn, node_id, max(deadline - time.monotonic(), 0.1))
        if node.provision_state == state:
            return node
        if node.provision_state in FAILED or time.monotonic() > deadline:
            raise AssertionError(
                f"node {node_id} is {node.provision_state}, not {state}: {node.last_error}"
            )
        time.sleep(POLL_S)


def wait_power(conn: Any, node_id: str, power: str, timeout: float = 30.0) -> Any:
    """Poll the node until its power state is ``power`` and its lock is released."""
    deadline = time.monotonic() + timeout
    while True:
        node = conn.baremetal.get_node(node_id)
        if node.power_state == power and not node.reservation:
            return node
        if time.monotonic() > deadline:
            raise AssertionError(f"node {node_id} power is {node.power_state}, not {power}")
        time.sleep(POLL_S)


def _capabilities(caps: Mapping[str, str] | str) -> str:
    if isinstance(caps, str):
        return caps
    return ",".join(f"{k}:{v}" for k, v in caps.items())


def enroll(
    conn: Any,
    name: str | None,
    *,
    cpus: int = 8,
    memory_mb: int = 16384,
    local_gb: int = 100,
    resource_class: str = "baremetal",
    capabilities: Mapping[str, str] | str = "",
    traits: Sequence[str] = (),
    ports: Sequence[str | tuple[str, dict[str, Any]]] = (),
    provide: bool = True,
) -> str:
    """Enrol a fake-hardware node with its ports, power it off, manage it and (unless
    ``provide`` is false) provide it; returns its uuid once it is stable."""
    bm = conn.baremetal
    properties: dict[str, Any] = {"cpus": cpus, "memory_mb": memory_mb, "local_gb": local_gb}
    if capabilities:
        properties["capabilities"] = _capabilities(capabilities)
    attrs: dict[str, Any] = {
        "driver": "fake-hardware",
        "resource_class": resource_class,
        "properties": properties,
    }
    if name is not None:
        attrs["name"] = name
    node_id = bm.create_node(**attrs).id
    for port in ports:
        mac, extra = (port, {}) if isinstance(port, str) else port
        bm.create_port(node_id=node_id, address=mac, extra=extra)
    if traits:
        bm.set_node_traits(node_id, list(traits))
    bm.set_node_power_state(node_id, "power off")  # fake power starts as None
    wait_power(conn, node_id, "power off")
    bm.set_node_provision_state(node_id, "manage")
    wait_state(conn, node_id, "manageable")
    if provide:
        bm.set_node_provision_state(node_id, "provide")
        wait_state(conn, node_id, "available")
    return str(node_id)


def empty(conn: Any, timeout: float = 60.0) -> None:
    """Leave Ironic without allocations or nodes, whatever state the test left them in."""
    bm = conn.baremetal
    for allocation in list(bm.allocations()):
        bm.delete_allocation(allocation)
    for node in list(bm.nodes(details=True)):
        node_id = node.id
        node = wait_stable(conn, node_id, timeout)
        if node.is_maintenance:
            bm.unset_node_maintenance(node_id)
        if node.provision_state in ("active", "deploy failed", "error"):
            bm.set_node_provision_state(node_id, "deleted")
            node = wait_stable(conn, node_id, timeout)
        if node.provision_state in ("clean failed", "inspect failed", "adopt failed"):
            bm.set_node_provision_state(node_id, "manage")
            node = wait_stable(conn, node_id, timeout)
        with contextlib.suppress(Exception):
            if node.instance_id:
                bm.update_node(node_id, instance_id=None)
        bm.delete_node(node_id)
    left = [f"{n.name or n.id}: {n.provision_state}" for n in bm.nodes(details=True)]
    assert not left, f"Ironic nodes left behind: {left}"
