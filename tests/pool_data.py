"""Pool hosts for the tests of the pool's faces (REST API, CLI, portal).

The hosts and their ``HostRole`` rows are written straight into the store, as the Ironic
sync would have made them, and the runtime is given an Ironic link whose client fails the
test if it is ever called: listing, converting and draining only read and write the store
(the conversions themselves are the workers' business, and the workers keep the runtime's
original context, without Ironic, so they leave these rows alone).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, cast

from sqlalchemy import delete, select

from ecliptic.config import IronicSettings
from ecliptic.reconcile.base import IronicLink
from ecliptic.runtime import Runtime
from ecliptic.services.pool import PoolPolicy
from ecliptic.store.models import Event, Host, HostRole
from ecliptic.store.transitions import created

if TYPE_CHECKING:
    from ecliptic.backends.ironic import Ironic

POOL_FILTER = 'resource_class == "pool-test"'


class UnusedIronic:
    """Stands in for the Ironic client where nothing may call it."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"Ironic was called ({name}) where only the store should be")


def ironic_link() -> IronicLink:
    """An Ironic link for the faces: the pool's policy, and a client never to be called."""
    settings = IronicSettings(url="http://ironic.invalid:6385", pool=POOL_FILTER)
    return IronicLink(cast("Ironic", UnusedIronic()), settings, PoolPolicy(pool=POOL_FILTER))


@contextmanager
def with_ironic(rt: Runtime) -> Iterator[None]:
    """The runtime's API and portal see an Ironic (its workers do not) while inside."""
    before = rt.ctx
    rt.ctx = replace(before, ironic=ironic_link())
    try:
        yield
    finally:
        rt.ctx = before


@dataclass(frozen=True)
class PoolHost:
    """A host of the pool as a test wants it."""

    name: str
    phase: str = "BAREMETAL"
    hold: str = ""
    state: str = "up"
    reason: str = ""


def add_pool_hosts(rt: Runtime, hosts: Iterable[PoolHost]) -> dict[str, str]:
    """Ironic hosts in the pool, each with its role and a first event; returns name to node."""
    nodes = {}
    with rt.db.write() as session:
        for p in hosts:
            node = str(uuid.uuid4())
            host = Host(
                name=p.name,
                source="ironic",
                node_id=node,
                state=p.state,
                state_reason="" if p.state == "up" else "Ironic: maintenance (test)",
                vcpus=4,
                memory_mb=8192,
                disk_gb=100,
                properties={"resource_class": "pool-test"},
            )
            session.add(host)
            session.flush()
            role = HostRole(
                id=host.id,
                phase=p.phase,
                phase_reason=p.reason,
                hold=p.hold,
                spec={},
                status={},
            )
            session.add(role)
            session.flush()
            created(session, role, p.reason or f"joined the pool as {p.phase.lower()}")
            nodes[p.name] = node
    rt.booking.reset()
    return nodes


def remove_pool_hosts(rt: Runtime, names: Iterable[str]) -> None:
    """Take the hosts ``add_pool_hosts`` made out of the store again (a shared runtime)."""
    with rt.db.write() as session:
        ids = list(session.scalars(select(Host.id).where(Host.name.in_(list(names)))))
        session.execute(
            delete(Event).where(Event.object_kind == "hostrole", Event.object_id.in_(ids))
        )
        session.execute(delete(HostRole).where(HostRole.id.in_(ids)))
        session.execute(delete(Host).where(Host.id.in_(ids)))
    rt.booking.reset()
