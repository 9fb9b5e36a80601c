"""A store with the shipped flavors and a small inventory, but no backend (services only)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from ecliptic.backends.base import (
    GpuRecord,
    HostRecord,
    ImageInfo,
    NetworkSpec,
    NetworkStatus,
    ServerSpec,
    ServerStatus,
)
from ecliptic.clock import ManualClock
from ecliptic.services.booking import Booking
from ecliptic.services.caller import Caller
from ecliptic.services.catalogue import seed_flavors, sync_inventory
from ecliptic.services.identity import create_tenancy, create_user, set_membership
from ecliptic.store.db import Database
from ecliptic.store.migrate import upgrade
from ecliptic.store.workqueue import WorkQueue

HOSTS = [
    HostRecord(name="cpu-1", vcpus=8, memory_mb=16384, disk_gb=500),
    HostRecord(name="cpu-2", vcpus=8, memory_mb=16384, disk_gb=500),
    HostRecord(
        name="gpu-1",
        vcpus=32,
        memory_mb=262144,
        disk_gb=1000,
        gpus=(GpuRecord("A100", 4, 80, ("1g.10gb",)),),
    ),
]


@dataclass
class Env:
    db: Database
    queue: WorkQueue
    booking: Booking
    admin: Caller
    alice: Caller
    bob: Caller


@pytest.fixture
def env(database_url: str) -> Iterator[Env]:
    db = Database(database_url)
    upgrade(db)
    with db.write() as s:
        seed_flavors(s)
        sync_inventory(s, HOSTS)
    root = Caller("root", "root", True)
    a = create_user(db, None, "alice", "alice-password")
    b = create_user(db, None, "bob", "bob-password-1")
    ta = create_tenancy(db, root, "physics")
    tb = create_tenancy(db, root, "chemistry")
    set_membership(db, root, "physics", "alice", "member")
    set_membership(db, root, "chemistry", "bob", "admin")
    clock = ManualClock(datetime.now(UTC).replace(second=0, microsecond=0))
    yield Env(
        db=db,
        queue=WorkQueue(db, clock),
        booking=Booking(db, clock, min_preemptible_lifetime=timedelta(hours=1)),
        admin=root,
        alice=Caller(a.id, "alice", False, ta.id, "physics", "member"),
        bob=Caller(b.id, "bob", False, tb.id, "chemistry", "admin"),
    )
    db.dispose()


class MemoryBackend:
    """Infrastructure that holds servers in memory: builds and deletions finish at once."""

    name = "memory"

    def __init__(self) -> None:
        self.servers: dict[str, ServerSpec] = {}

    def ensure_network(self, spec: NetworkSpec) -> NetworkStatus:
        return NetworkStatus(backend_ref=spec.id, ready=True)

    def delete_network(self, network_id: str) -> None:
        return None

    def ensure_server(self, spec: ServerSpec) -> ServerStatus:
        self.servers[spec.id] = spec
        return ServerStatus(spec.id, spec.host, (), True)

    def delete_server(self, server_id: str, *, grace_s: float | None = None) -> None:
        self.servers.pop(server_id, None)

    def stop_server(self, server_id: str, *, grace_s: float | None = None) -> None:
        self.servers.pop(server_id, None)

    def server_exists(self, server_id: str) -> bool:
        return server_id in self.servers

    def images(self) -> list[ImageInfo]:
        return [ImageInfo("base", "1", "memory", "built")]

    def build_image(self, name: str, progress: object = None) -> ImageInfo:
        return self.images()[0]

    def delete_image(self, name: str) -> list[str]:
        return []

    def image_log(self, name: str) -> str:
        return ""

    def down_servers(self, timeout: float) -> list[str]:
        return []

    def apply_firewall(self, spec: object) -> None:
        self.firewall = spec
