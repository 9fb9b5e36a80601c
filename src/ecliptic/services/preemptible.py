"""Preemptible servers running now, across tenancies, and until when each is protected
from eviction (its minimum lifetime)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from ecliptic.phases import ServerPhase
from ecliptic.services.booking import Booking, minute
from ecliptic.services.caller import Caller
from ecliptic.store.models import Host, Server, Tenancy


@dataclass(frozen=True)
class RunningPreemptible:
    """A preemptible server and its protection."""

    name: str
    """Server name."""
    tenancy: str
    """Tenancy name."""
    host: str
    """Host it runs on."""
    phase: str
    """Its phase."""
    started_at: datetime
    """When it started, as the scheduler counts it."""
    protected_until: datetime
    """No lease may evict it before then."""


def running(booking: Booking, caller: Caller) -> list[RunningPreemptible]:
    """Every preemptible server not being deleted, oldest first (administrators)."""
    caller.require_admin("see every tenancy's preemptible servers")
    with booking.db.read() as session:
        rows = list(
            session.execute(
                select(
                    Server.id, Server.name, Tenancy.name, Host.name, Server.phase, Server.created_at
                )
                .join(Tenancy, Server.tenancy_id == Tenancy.id)
                .join(Host, Server.host_id == Host.id)
                .where(Server.preemptible.is_(True), Server.phase != ServerPhase.DELETING)
                .order_by(Server.created_at, Server.id)
            )
        )
    with booking.reading() as engine:
        started = {sid: engine.preemptible(sid) for sid, *_ in rows}
    out = []
    for sid, name, tenancy, host, phase, created in rows:
        held = started.get(sid)
        at = held.started_at if held is not None else minute(created)
        out.append(
            RunningPreemptible(
                name, tenancy, host, phase, at, at + booking.min_preemptible_lifetime
            )
        )
    return out
