"""The reservation engine of this instance, kept in step with the store.

Writes that change bookings run in ``Booking.transaction()``: one process lock plus the
database locks (a PostgreSQL advisory lock, so several processes never interleave), a
check that no other process wrote since this engine last looked (a counter in ``meta``,
else the engine is rebuilt from the store), then the change, then the counter bumped.
If anything fails the engine is marked stale and rebuilt on next use, so the in-memory
state can never drift from the database.
"""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Text, cast, select
from sqlalchemy.orm import Session

from ecliptic.clock import Clock
from ecliptic.phases import LeasePhase, ServerPhase
from ecliptic.scheduler.engine import Engine
from ecliptic.scheduler.model import (
    Allocation,
    Amount,
    GpuSpec,
    HostInfo,
    Placement,
    Preemptible,
)
from ecliptic.store.db import Database
from ecliptic.store.models import Host, Lease, LeaseAllocation, Meta, Server

FOREVER = datetime(9999, 1, 1, tzinfo=UTC)
SEQ_KEY = "booking_seq"
BOOKING_LOCK = "booking"


def minute(t: datetime) -> datetime:
    """``t`` truncated to the minute."""
    return t.replace(second=0, microsecond=0)


def host_info(h: Host) -> HostInfo:
    """The engine's view of a host row."""
    return HostInfo(
        name=h.name,
        vcpus=h.vcpus,
        memory_mb=h.memory_mb,
        disk_gb=h.disk_gb,
        gpus=tuple(
            GpuSpec(
                g["model"],
                int(g["count"]),
                int(g.get("memory_gb", 0)),
                tuple(g.get("mig_profiles", ())),
            )
            for g in h.gpus
        ),
        rdma=any(n.get("rdma") for n in h.nics),
        properties=dict(h.properties),
        up=h.state == "up",
    )


def amount_to_json(a: Amount) -> dict[str, Any]:
    """An ``Amount`` as stored in ``lease_allocation.amount``."""
    return {
        "vcpus": a.vcpus,
        "memory_mb": a.memory_mb,
        "disk_gb": a.disk_gb,
        "gpus": [list(p) for p in a.gpus],
        "slices": [list(p) for p in a.slices],
        "whole_host": a.whole_host,
        "gpu_units": [list(p) for p in a.gpu_units],
    }


def amount_from_json(d: dict[str, Any]) -> Amount:
    """The inverse of ``amount_to_json``."""
    return Amount(
        vcpus=int(d.get("vcpus", 0)),
        memory_mb=int(d.get("memory_mb", 0)),
        disk_gb=int(d.get("disk_gb", 0)),
        gpus=tuple((str(m), int(n)) for m, n in d.get("gpus", ())),
        slices=tuple((str(m), int(n)) for m, n in d.get("slices", ())),
        whole_host=bool(d.get("whole_host", False)),
        gpu_units=tuple((int(i), int(n)) for i, n in d.get("gpu_units", ())),
    )


def lease_placement(lease: Lease) -> Placement:
    """A lease row's placement."""
    return Placement(
        start=lease.start_at,
        end=lease.end_at,
        allocations=tuple(
            Allocation(a.reservation, a.host, amount_from_json(a.amount), a.slots)
            for a in lease.allocations
        ),
    )


def server_amount(srv: Server) -> Amount:
    """What an on-demand or preemptible server holds on its host."""
    if srv.kind == "baremetal":
        return Amount(whole_host=True)
    gpus = ((srv.gpu_model, srv.gpus),) if srv.gpu_model and srv.gpus else ()
    return Amount(vcpus=srv.vcpus, memory_mb=srv.memory_mb, disk_gb=srv.disk_gb, gpus=gpus)


def server_booking_id(server_id: str) -> str:
    """Booking key of an on-demand server (it holds its room with no end)."""
    return f"server:{server_id}"


class Booking:
    """An ``Engine`` plus the discipline that keeps it equal to the store."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        *,
        min_preemptible_lifetime: timedelta,
        preemptible_grace: timedelta = timedelta(seconds=30),
        deleted_server_retention: timedelta = timedelta(days=7),
    ) -> None:
        self.db = db
        self.clock = clock
        self.min_preemptible_lifetime = min_preemptible_lifetime
        self.preemptible_grace = preemptible_grace
        """SIGTERM to deletion of a preempted server; a lease starting on its room waits it."""
        self.deleted_server_retention = deleted_server_retention
        """How long deleted servers stay listed (tombstones) for their tenancy."""
        self._lock = threading.RLock()
        self._seq = -1
        self._stale = True
        self.engine = Engine([], min_preemptible_lifetime=min_preemptible_lifetime)
        self.freeze_gc = False
        """Set by ``ecliptic serve``: keep the engine out of the collector's full passes."""

    def now(self) -> datetime:
        """The clock's now, to the minute."""
        return minute(self.clock.now())

    @contextmanager
    def transaction(self, *locks: str) -> Iterator[tuple[Session, Engine]]:
        """A write transaction with the engine, serialised against every other booking."""
        with self._lock:
            try:
                with self.db.write(BOOKING_LOCK, *locks) as session:
                    seq = self._read_seq(session)
                    if self._stale or seq != self._seq:
                        self._rebuild(session)
                    yield session, self.engine
                    row = session.get(Meta, SEQ_KEY)
                    if row is None:
                        session.add(Meta(key=SEQ_KEY, value=str(seq + 1)))
                    else:
                        row.value = str(seq + 1)
                    session.flush()
            except BaseException:
                self._stale = True
                raise
            self._seq = seq + 1

    @contextmanager
    def reading(self) -> Iterator[Engine]:
        """The engine, current with the store, for queries (fit, earliest, calendar)."""
        with self._lock:
            with self.db.read() as session:
                seq = self._read_seq(session)
                if self._stale or seq != self._seq:
                    self._rebuild(session)
                    self._seq = seq
            yield self.engine

    def mark_stale(self) -> None:
        """Force a rebuild at next use (after an out-of-band change, e.g. inventory)."""
        with self._lock:
            self._stale = True

    def _read_seq(self, session: Session) -> int:
        row = session.get(Meta, SEQ_KEY)
        return int(row.value) if row is not None else 0

    def _rebuild(self, session: Session) -> None:
        if self.freeze_gc:
            # The old engine was frozen with everything else at start: thaw it so it can be
            # collected, and freeze the new one so full collections never scan it.
            gc.unfreeze()
        self.engine = build_engine(session, self.min_preemptible_lifetime)
        self._stale = False
        if self.freeze_gc:
            gc.collect()
            gc.freeze()


def build_engine(session: Session, min_preemptible_lifetime: timedelta) -> Engine:
    """An engine holding every live booking in the store (bulk load, plain rows, no ORM)."""
    hosts = [host_info(h) for h in session.scalars(select(Host).where(Host.state != "retired"))]
    windows = {
        lid: (_aware(s), _aware(e))
        for lid, s, e in session.execute(
            select(Lease.id, Lease.start_at, Lease.end_at).where(Lease.phase != LeasePhase.ENDED)
        )
        if e > s  # a lease ended in its first minute holds nothing
    }
    allocs: dict[str, list[Allocation]] = {}
    # Amounts repeat a lot (a few shapes of hosts and flavors): decode each text once.
    amounts: dict[str, Amount] = {}
    rows = session.execute(
        select(
            LeaseAllocation.lease_id,
            LeaseAllocation.reservation,
            LeaseAllocation.host,
            cast(LeaseAllocation.amount, Text),
            LeaseAllocation.slots,
        ).order_by(LeaseAllocation.id)
    )
    for lid, key, host, text, slots in rows:
        if lid in windows:
            amount = amounts.get(text)
            if amount is None:
                amount = amounts[text] = amount_from_json(json.loads(text))
            allocs.setdefault(lid, []).append(Allocation(key, host, amount, slots))
    bookings: dict[str, Placement] = {
        lid: Placement(*windows[lid], tuple(a)) for lid, a in allocs.items()
    }
    preemptibles = []
    for srv in session.scalars(
        select(Server).where(Server.lease_id.is_(None), Server.host_id.is_not(None))
    ):
        if srv.host is None:
            continue
        amount = server_amount(srv)
        if srv.preemptible:
            if srv.phase != ServerPhase.DELETING:
                preemptibles.append(
                    Preemptible(srv.id, srv.host.name, amount, minute(srv.created_at))
                )
            continue
        bookings[server_booking_id(srv.id)] = Placement(
            start=minute(srv.created_at),
            end=FOREVER,
            allocations=(Allocation("server", srv.host.name, amount, 1),),
        )
    return Engine.rebuild(
        hosts, bookings, preemptibles, min_preemptible_lifetime=min_preemptible_lifetime
    )


def _aware(t: datetime) -> datetime:
    # Plain column reads skip the UTC type decorator's result processing on some paths.
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t
