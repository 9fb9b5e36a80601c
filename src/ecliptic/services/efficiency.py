"""How much of what tenancies reserve their servers use: reserved host-hours of leases
against the host-hours in which a server of the lease ran on that host.

A lease holds each host of its allocations from its start to its end; it *uses* a host
while at least one of its servers lives there (from the server's creation, as metering
counts it, to its deletion). Both are clipped to the lease's window and to the window
looked at, so use never exceeds what was reserved.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from ecliptic.services.caller import Caller
from ecliptic.store.db import Database
from ecliptic.store.models import DeletedServer, Host, Lease, LeaseAllocation, Server, Tenancy

HOUR_S = 3600.0


@dataclass(frozen=True)
class Held:
    """A host held by a lease."""

    tenancy: str
    """Tenancy name."""
    lease_id: str
    """The lease."""
    host: str
    """The host."""
    start: datetime
    """The lease's start."""
    end: datetime
    """The lease's end."""


@dataclass(frozen=True)
class Lived:
    """A server of a lease on a host, from its creation to its deletion."""

    lease_id: str
    """Its lease."""
    host: str
    """Its host."""
    start: datetime
    """Created."""
    end: datetime | None
    """Deleted (None: still there)."""


@dataclass(frozen=True)
class Efficiency:
    """A tenancy's reserved and used host-hours over a window."""

    tenancy: str
    """Tenancy name."""
    reserved_hours: float
    """Host-hours its leases held."""
    used_hours: float
    """Of those, host-hours in which a server of the lease ran on the host."""
    leases: int
    """Leases that held a host in the window."""

    @property
    def share(self) -> float | None:
        """Used over reserved (None when nothing was reserved)."""
        return self.used_hours / self.reserved_hours if self.reserved_hours else None


def _clip(a: datetime, b: datetime, lo: datetime, hi: datetime) -> tuple[datetime, datetime]:
    return max(a, lo), min(b, hi)


def _union_seconds(spans: Iterable[tuple[datetime, datetime]]) -> float:
    """Length of the union of intervals, in seconds (empty ones ignored)."""
    total = 0.0
    cur: tuple[datetime, datetime] | None = None
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if cur is None or a > cur[1]:
            if cur is not None:
                total += (cur[1] - cur[0]).total_seconds()
            cur = (a, b)
        elif b > cur[1]:
            cur = (cur[0], b)
    if cur is not None:
        total += (cur[1] - cur[0]).total_seconds()
    return total


def efficiency(
    held: Sequence[Held], lived: Sequence[Lived], start: datetime, end: datetime
) -> list[Efficiency]:
    """Reserved and used host-hours per tenancy over [start, end), by tenancy name.

    A host held twice by one lease (two reservations on it) counts once; servers that
    overlap on a host count once for the time they overlap.
    """
    windows: dict[tuple[str, str], tuple[str, datetime, datetime]] = {}
    for h in held:
        a, b = _clip(h.start, h.end, start, end)
        if b > a:
            windows[(h.lease_id, h.host)] = (h.tenancy, a, b)
    runs: dict[tuple[str, str], list[tuple[datetime, datetime]]] = defaultdict(list)
    for s in lived:
        key = (s.lease_id, s.host)
        if key in windows:
            _, a, b = windows[key]
            runs[key].append(_clip(s.start, s.end or end, a, b))
    reserved: dict[str, float] = defaultdict(float)
    used: dict[str, float] = defaultdict(float)
    leases: dict[str, set[str]] = defaultdict(set)
    for key, (tenancy, a, b) in windows.items():
        reserved[tenancy] += (b - a).total_seconds() / HOUR_S
        used[tenancy] += _union_seconds(runs.get(key, ())) / HOUR_S
        leases[tenancy].add(key[0])
    return [Efficiency(t, reserved[t], used[t], len(leases[t])) for t in sorted(reserved)]


def tenancy_efficiency(
    db: Database, caller: Caller, start: datetime, end: datetime
) -> list[Efficiency]:
    """Every tenancy's reserved and used host-hours over [start, end) (administrators).

    Servers deleted before the tombstone retention are forgotten, so their use is not
    counted.
    """
    caller.require_admin("see how reservations are used")
    with db.read() as session:
        held = [
            Held(t, lid, host, s, e)
            for t, lid, host, s, e in session.execute(
                select(Tenancy.name, Lease.id, LeaseAllocation.host, Lease.start_at, Lease.end_at)
                .join(Lease, Lease.tenancy_id == Tenancy.id)
                .join(LeaseAllocation, LeaseAllocation.lease_id == Lease.id)
                .where(Lease.start_at < end, Lease.end_at > start)
                .distinct()
            )
        ]
        ids = list({h.lease_id for h in held})
        lived: list[Lived] = []
        for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
            lived += [
                Lived(str(lid), host, created, None)
                for lid, host, created in session.execute(
                    select(Server.lease_id, Host.name, Server.created_at)
                    .join(Host, Server.host_id == Host.id)
                    .where(Server.lease_id.in_(chunk))
                )
            ]
            lived += [
                Lived(str(lid), str(host), created, deleted)
                for lid, host, created, deleted in session.execute(
                    select(
                        DeletedServer.lease_id,
                        DeletedServer.host,
                        DeletedServer.created_at,
                        DeletedServer.deleted_at,
                    ).where(DeletedServer.lease_id.in_(chunk), DeletedServer.host.is_not(None))
                )
            ]
    return efficiency(held, lived, start, end)
