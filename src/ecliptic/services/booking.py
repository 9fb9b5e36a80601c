"""The reservation engine of this instance, kept in step with the store.

Writes that change bookings run in ``Booking.transaction()``: one process lock plus the
database locks (a PostgreSQL advisory lock, so several processes never interleave). While
the body runs the engine journals what it changes; at the end each change is written to
``booking_log`` with the next sequence number, in the same transaction, and
``meta.booking_seq`` (the head of the log) moves on. The numbers are taken under the
booking lock, which is held until commit, so they commit in order and without holes:
reading the log from the last number seen never skips a change that commits later.

Other processes follow the log instead of rebuilding: every use (``reading()``,
``transaction()``) first applies what was logged since this engine last looked, and a
follower thread (``follow()``) does it as soon as it happens, woken by PostgreSQL
``LISTEN``/``NOTIFY`` (on SQLite by a cheap poll of the head). Each entry holds the final
state of one key, so applying an entry twice is harmless. The engine is rebuilt from the
tables only when the log cannot tell: at first use, when entries this engine needs were
pruned, after a ``reset`` entry (inventory changed), or when a hole stays open (which the
lock rules out; it is checked all the same). A transaction that fails puts back what it
changed in the engine (from the journal) instead of rebuilding.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Text, cast, delete, insert, select
from sqlalchemy import text as sql
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
    Serves,
)
from ecliptic.services.pricing import MeterPolicy
from ecliptic.store.db import Database
from ecliptic.store.models import BookingLog, Host, Lease, LeaseAllocation, Meta, Server

log = logging.getLogger("ecliptic.booking")

FOREVER = datetime(9999, 1, 1, tzinfo=UTC)
SEQ_KEY = "booking_seq"
BOOKING_LOCK = "booking"
CHANNEL = "ecliptic_booking"
"""PostgreSQL NOTIFY channel: the payload is the new head of the log."""
LOG_KEEP = 20_000
"""Log entries kept; a process further behind than this rebuilds."""
PRUNE_EVERY = 1_000
POLL_S = 0.02
"""How often a follower on SQLite looks at the head of the log."""
WAKE_S = 1.0
"""How long a follower waits for a notification (or a change of the SQLite files) before it
looks at the head anyway."""
STOP_WAIT_S = 0.2
"""Longest wait of the PostgreSQL follower between two looks at whether it should stop."""
HOLE_WAIT_S = 2.0
"""How long a hole in the log may stay open before the engine is rebuilt instead."""


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
        up=h.state == "up" and (h.pool is None or h.pool.phase != "ERROR"),
        serves=host_serves(h),
        ready=host_ready(h),
    )


def host_ready(h: Host) -> Serves:
    """What a host takes without a conversion: a pool host's current role (requests go to
    ready hosts first); ``any`` for inventory-file hosts."""
    role = h.pool
    if role is None:
        return "baremetal" if h.source == "ironic" else "any"
    return "vm" if role.phase in ("HYPERVISOR", "TO_HYPERVISOR") else "baremetal"


def host_serves(h: Host) -> Serves:
    """Which work a host takes: Ironic nodes outside the pool, and pool hosts being drained
    or held as bare metal, take no VMs; one an operator holds as a hypervisor takes no
    whole-host bookings; inventory-file hosts take both."""
    role = h.pool
    if role is None:
        # An Ironic node outside the pool is a bare-metal machine, never a hypervisor.
        return "baremetal" if h.source == "ironic" else "any"
    if role.phase in ("DRAINING", "TO_BAREMETAL") or role.hold in ("baremetal", "drained"):
        return "baremetal"
    if role.hold == "hypervisor":
        return "vm"
    return "any"


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


def held_until(end: datetime, grace_s: int | float) -> datetime:
    """Until when a lease ending at ``end`` holds its capacity: its servers' grace period is
    booked (the next lease on its hosts starts after it, and ``lease find`` says so)."""
    return end + timedelta(seconds=grace_s)


def lease_placement(lease: Lease) -> Placement:
    """A lease row's placement."""
    return Placement(
        start=lease.start_at,
        end=held_until(lease.end_at, lease.grace_s),
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
    # The GPUs the engine chose for it when it was placed (kept, so a rebuilt engine holds
    # the same GPUs, whatever order it loads servers in).
    units = tuple((int(i), int(n)) for i, n in (srv.spec or {}).get("gpu_units", ()))
    return Amount(
        vcpus=srv.vcpus,
        memory_mb=srv.memory_mb,
        disk_gb=srv.disk_gb,
        gpus=gpus,
        gpu_units=units if gpus else (),
    )


def server_booking_id(server_id: str) -> str:
    """Booking key of an on-demand server (it holds its room with no end)."""
    return f"server:{server_id}"


def placement_to_json(p: Placement) -> dict[str, Any]:
    """A placement as logged."""
    return {
        "start": p.start.isoformat(),
        "end": p.end.isoformat(),
        "allocations": [[a.key, a.host, amount_to_json(a.amount), a.slots] for a in p.allocations],
    }


def placement_from_json(d: dict[str, Any]) -> Placement:
    """The inverse of ``placement_to_json``."""
    return Placement(
        start=datetime.fromisoformat(d["start"]),
        end=datetime.fromisoformat(d["end"]),
        allocations=tuple(
            Allocation(str(k), str(h), amount_from_json(a), int(n))
            for k, h, a, n in d["allocations"]
        ),
    )


def preemptible_to_json(p: Preemptible) -> dict[str, Any]:
    """A preemptible server as logged."""
    return {
        "host": p.host,
        "amount": amount_to_json(p.amount),
        "started_at": p.started_at.isoformat(),
    }


def preemptible_from_json(server_id: str, d: dict[str, Any]) -> Preemptible:
    """The inverse of ``preemptible_to_json``."""
    return Preemptible(
        server_id,
        str(d["host"]),
        amount_from_json(d["amount"]),
        datetime.fromisoformat(d["started_at"]),
    )


def host_to_json(h: HostInfo) -> dict[str, Any]:
    """A host as logged."""
    return {
        "name": h.name,
        "vcpus": h.vcpus,
        "memory_mb": h.memory_mb,
        "disk_gb": h.disk_gb,
        "gpus": [[g.model, g.count, g.memory_gb, list(g.mig_profiles)] for g in h.gpus],
        "rdma": h.rdma,
        "properties": dict(h.properties),
        "up": h.up,
        "serves": h.serves,
        "ready": h.ready,
    }


def host_from_json(d: dict[str, Any]) -> HostInfo:
    """The inverse of ``host_to_json``."""
    return HostInfo(
        name=str(d["name"]),
        vcpus=int(d["vcpus"]),
        memory_mb=int(d["memory_mb"]),
        disk_gb=int(d["disk_gb"]),
        gpus=tuple(GpuSpec(str(m), int(n), int(g), tuple(p)) for m, n, g, p in d["gpus"]),
        rdma=bool(d["rdma"]),
        properties=dict(d["properties"]),
        up=bool(d["up"]),
        serves=_serves(d.get("serves", "any")),
        ready=_serves(d.get("ready", "any")),
    )


def _serves(value: object) -> Serves:
    """A logged ``serves`` (entries logged before it existed have none: ``any``)."""
    if value == "vm":
        return "vm"
    if value == "baremetal":
        return "baremetal"
    if value == "any":
        return "any"
    raise ValueError(f"host entry: serves {value!r} is not any, vm or baremetal")


Change = tuple[str, str]
"""What changed: (kind, key), kind one of ``booking``, ``preemptible``, ``host``, ``reset``."""


class JournaledEngine(Engine):
    """An engine that, while a journal is open, remembers what each change replaced.

    Every public method that changes bookings, preemptible servers or hosts goes through
    here, so the journal names every key a transaction touched (to log it) with its state
    before (to put it back if the transaction fails).
    """

    _journal: dict[Change, Any] | None = None

    def open_journal(self) -> None:
        """Start remembering changes."""
        self._journal = {}

    def close_journal(self) -> dict[Change, Any]:
        """Stop; returns each key touched with its state before the first change."""
        journal, self._journal = self._journal or {}, None
        return journal

    def state(self, change: Change) -> Any:
        """The state of a key now (None when absent)."""
        kind, key = change
        if kind == "booking":
            return self.booking(key)
        if kind == "preemptible":
            return self._pre.get(key)
        if kind == "host":
            return self.hosts.get(key)
        return None

    def _note(self, kind: str, key: str) -> None:
        if self._journal is not None and (kind, key) not in self._journal:
            self._journal[(kind, key)] = self.state((kind, key))

    def book(self, lease_id: str, placement: Placement) -> None:
        """As ``Engine.book``, journaled."""
        self._note("booking", lease_id)
        super().book(lease_id, placement)

    def release(self, lease_id: str) -> None:
        """As ``Engine.release``, journaled."""
        self._note("booking", lease_id)
        super().release(lease_id)

    def add_preemptible(self, p: Preemptible) -> None:
        """As ``Engine.add_preemptible``, journaled."""
        self._note("preemptible", p.server_id)
        super().add_preemptible(p)

    def remove_preemptible(self, server_id: str) -> None:
        """As ``Engine.remove_preemptible``, journaled."""
        self._note("preemptible", server_id)
        super().remove_preemptible(server_id)

    def set_host(self, host: HostInfo) -> None:
        """As ``Engine.set_host``, journaled."""
        self._note("host", host.name)
        super().set_host(host)

    def apply(self, states: dict[Change, Any]) -> None:
        """Bring keys to the given states (None: absent), whatever they hold now.

        Every booking named is released before any is booked again, so the states of a
        whole transaction (or several) go in without a transient overbooking.
        """
        for (kind, key), st in states.items():
            if kind == "host":
                if st is None:
                    raise ValueError(f"host {key!r} cannot be removed from an engine")
                self.set_host(st)
        for kind, key in states:
            if kind == "booking":
                self.release(key)
            elif kind == "preemptible":
                self.remove_preemptible(key)
        for (kind, key), st in states.items():
            if st is None:
                continue
            if kind == "booking":
                self.book(key, st)
            elif kind == "preemptible":
                self.add_preemptible(st)


def _stamp(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except FileNotFoundError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


def _origin() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:100]


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
        meter: MeterPolicy | None = None,
    ) -> None:
        self.db = db
        self.clock = clock
        self.min_preemptible_lifetime = min_preemptible_lifetime
        self.preemptible_grace = preemptible_grace
        """SIGTERM to deletion of a preempted server; a lease starting on its room waits it."""
        self.deleted_server_retention = deleted_server_retention
        """How long deleted servers stay listed (tombstones) for their tenancy."""
        self.meter = meter or MeterPolicy()
        """Which on-demand use is paid by the hour from credits."""
        self._lock = threading.RLock()
        self._seq = -1
        self._stale = True
        self._hole_since: float | None = None
        self.engine = JournaledEngine([], min_preemptible_lifetime=min_preemptible_lifetime)
        self.freeze_gc = False
        """Set by ``ecliptic serve``: keep the engine out of the collector's full passes."""
        self.rebuilds = 0
        """How many times the engine was built from the tables (for tests and benchmarks)."""
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None

    def now(self) -> datetime:
        """The clock's now, to the minute."""
        return minute(self.clock.now())

    @property
    def seq(self) -> int:
        """The last log entry this engine holds (-1 before it was first built)."""
        return self._seq

    @contextmanager
    def transaction(self, *locks: str) -> Iterator[tuple[Session, Engine]]:
        """A write transaction with the engine, serialised against every other booking."""
        with self._lock:
            journal: dict[Change, Any] | None = None
            try:
                with self.db.write(BOOKING_LOCK, *locks) as session:
                    if self.db.is_sqlite:
                        # Take SQLite's write lock now, before reading the head: another
                        # process on the same file must not number its changes alike.
                        session.execute(
                            sql("UPDATE meta SET value = value WHERE key = :k"), {"k": SEQ_KEY}
                        )
                    head = self._read_head(session)
                    # Every other booking writer has committed (the lock): a hole is for good.
                    self._catch_up(session, head, wait_for_holes=False)
                    engine = self.engine
                    engine.open_journal()
                    try:
                        yield session, engine
                    finally:
                        journal = engine.close_journal()
                    new_head = self._log(session, head, journal)
            except BaseException:
                self._undo(journal)
                raise
            self._seq = new_head

    @contextmanager
    def reading(self) -> Iterator[Engine]:
        """The engine, current with the store, for queries (fit, earliest, calendar)."""
        with self._lock:
            with self.db.read() as session:
                self._catch_up(session, self._read_head(session), wait_for_holes=True)
            yield self.engine

    def mark_stale(self) -> None:
        """Force a rebuild at next use (after an out-of-band change, e.g. inventory)."""
        with self._lock:
            self._stale = True

    def reset(self) -> None:
        """Tell every process (this one included) to rebuild: the inventory changed."""
        self.mark_stale()
        with self.transaction() as (_, engine):
            assert isinstance(engine, JournaledEngine)
            engine._note("reset", "")

    # -- following other processes ---------------------------------------------------------

    def refresh(self) -> bool:
        """Apply what other processes booked since this engine last looked; True if any.

        Cheap when nothing happened (one read of the head); does nothing before the engine
        was first built (its first use builds it).
        """
        if self._stale:
            return False
        with self.db.read() as session:
            if self._read_head(session) == self._seq and self._hole_since is None:
                return False
        with self._lock:
            before = self._seq
            with self.db.read() as session:
                self._catch_up(session, self._read_head(session), wait_for_holes=True)
            return self._seq != before

    def follow(self) -> None:
        """Start the follower thread (PostgreSQL: LISTEN/NOTIFY; SQLite: a poll)."""
        if self._follower is not None:
            return
        self._stop.clear()
        target = self._poll_loop if self.db.is_sqlite else self._listen_loop
        self._follower = threading.Thread(target=target, daemon=True, name="ecliptic-follow")
        self._follower.start()

    def stop(self) -> None:
        """Stop the follower thread."""
        self._stop.set()
        if self._follower is not None:
            self._follower.join(timeout=10)
            self._follower = None

    def _refresh_logged(self) -> None:
        try:
            self.refresh()
        except Exception:
            log.exception("following the booking log failed; the next use catches up")

    def _poll_loop(self) -> None:
        # Every commit to the file (of any process) changes the write-ahead log's size or
        # time: look at the head only then, so an idle follower costs a stat, not a query.
        path = self.db.url.split("///", 1)[1] if "///" in self.db.url else ""
        files = [Path(path), Path(path + "-wal")] if path and path != ":memory:" else []
        # Two commits within one tick of the file system's clock may leave the same stamp:
        # look anyway every WAKE_S.
        seen: list[tuple[int, int]] = []
        looked = time.monotonic()
        while not self._stop.wait(POLL_S):
            now = [_stamp(f) for f in files]
            if now != seen or not files or time.monotonic() - looked > WAKE_S:
                seen, looked = now, time.monotonic()
                self._refresh_logged()

    def _listen_loop(self) -> None:
        import psycopg

        url = self.db.engine.url.set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    self._refresh_logged()  # what was logged before we listened
                    looked = time.monotonic()
                    while not self._stop.is_set():
                        # Short waits, so that stop() is not kept waiting.
                        notes = list(conn.notifies(timeout=STOP_WAIT_S, stop_after=1))
                        news = any(
                            not n.payload.isdigit() or int(n.payload) > self._seq for n in notes
                        )  # else our own change, or one applied already
                        if news or time.monotonic() - looked > WAKE_S:
                            self._refresh_logged()  # nothing heard for WAKE_S: look anyway
                            looked = time.monotonic()
            except Exception:
                log.exception("booking log listener lost its connection; reconnecting")
                self._stop.wait(1.0)

    # -- inside ----------------------------------------------------------------------------

    def _read_head(self, session: Session) -> int:
        value = session.scalar(select(Meta.value).where(Meta.key == SEQ_KEY))
        return int(value) if value is not None else 0

    def _catch_up(self, session: Session, head: int, *, wait_for_holes: bool) -> None:
        """Make the engine hold everything up to ``head`` (a value read in ``session``)."""
        try:
            self._follow_log(session, head, wait_for_holes)
        except BaseException:
            self._stale = True  # whatever it holds now, the next use rebuilds it
            raise

    def _follow_log(self, session: Session, head: int, wait_for_holes: bool) -> None:
        if self._stale or head < self._seq:
            self._rebuild(session, head)
            return
        if head == self._seq and self._hole_since is None:
            return
        rows = session.execute(
            select(BookingLog.seq, BookingLog.kind, BookingLog.key, BookingLog.data)
            .where(BookingLog.seq > self._seq)
            .order_by(BookingLog.seq)
        ).all()
        states: dict[Change, Any] = {}
        last = self._seq
        for seq, kind, key, data in rows:
            if seq != last + 1:
                break  # a hole: stop before it
            if kind == "reset":
                self._rebuild(session, head)
                return
            states[(kind, key)] = _decode(kind, key, data)
            last = seq
        if last < max(head, rows[-1][0] if rows else head):
            oldest = session.scalar(select(BookingLog.seq).order_by(BookingLog.seq).limit(1))
            if oldest is None or oldest > self._seq + 1:
                self._rebuild(session, head)  # pruned past us
                return
            now = time.monotonic()
            if self._hole_since is None:
                self._hole_since = now
            if not wait_for_holes or now - self._hole_since > HOLE_WAIT_S:
                log.warning("booking log has a hole after %d; rebuilding the engine", last)
                self._rebuild(session, head)
                return
        else:
            self._hole_since = None
        if states:
            try:
                self.engine.apply(states)
            except Exception:
                log.exception("applying the booking log failed; rebuilding the engine")
                self._rebuild(session, head)
                return
        self._seq = last

    def _log(self, session: Session, head: int, journal: dict[Change, Any]) -> int:
        """Write what the transaction changed to the log; returns the new head."""
        rows: list[dict[str, Any]] = []
        for change, before in journal.items():
            kind, key = change
            after = self.engine.state(change)
            if kind != "reset" and after == before:
                continue
            rows.append(
                {
                    "seq": head + len(rows) + 1,
                    "kind": kind,
                    "key": key,
                    "action": "released" if after is None else "booked",
                    "data": _encode(kind, after),
                    "origin": _origin(),
                    "created_at": self.clock.now(),
                }
            )
        if not rows:
            return head
        new_head = head + len(rows)
        session.execute(insert(BookingLog), rows)
        row = session.get(Meta, SEQ_KEY)
        if row is None:
            session.add(Meta(key=SEQ_KEY, value=str(new_head)))
        else:
            row.value = str(new_head)
        if new_head // PRUNE_EVERY != head // PRUNE_EVERY:
            session.execute(delete(BookingLog).where(BookingLog.seq <= new_head - LOG_KEEP))
        if not self.db.is_sqlite:
            session.execute(sql("SELECT pg_notify(:c, :p)"), {"c": CHANNEL, "p": str(new_head)})
        session.flush()
        return new_head

    def _undo(self, journal: dict[Change, Any] | None) -> None:
        """Put back what a failed transaction changed in the engine (else rebuild later)."""
        if not journal:
            return  # the engine was not touched
        try:
            self.engine.apply(journal)
        except Exception:
            log.exception("could not undo a failed booking in the engine; it will be rebuilt")
            self._stale = True

    def _rebuild(self, session: Session, head: int) -> None:
        if self.freeze_gc:
            # The old engine was frozen with everything else at start: thaw it so it can be
            # collected, and freeze the new one so full collections never scan it.
            gc.unfreeze()
        t0 = time.perf_counter()
        self.engine = build_engine(session, self.min_preemptible_lifetime)
        log.info(
            "booking engine built from the store at log position %d: %d hosts, %d bookings "
            "in %.2f s",
            head,
            len(self.engine.hosts),
            len(self.engine.bookings()),
            time.perf_counter() - t0,
        )
        self._seq = head
        self._stale = False
        self._hole_since = None
        self.rebuilds += 1
        if self.freeze_gc:
            gc.collect()
            gc.freeze()


def _encode(kind: str, state: Any) -> dict[str, Any] | None:
    if state is None:
        return None
    if kind == "booking":
        return placement_to_json(state)
    if kind == "preemptible":
        return preemptible_to_json(state)
    if kind == "host":
        return host_to_json(state)
    return None


def _decode(kind: str, key: str, data: Any) -> Any:
    if data is None:
        return None
    if isinstance(data, str):
        data = json.loads(data)
    if kind == "booking":
        return placement_from_json(data)
    if kind == "preemptible":
        return preemptible_from_json(key, data)
    if kind == "host":
        return host_from_json(data)
    return None


def build_engine(session: Session, min_preemptible_lifetime: timedelta) -> JournaledEngine:
    """An engine holding every live booking in the store (bulk load, plain rows, no ORM)."""
    hosts = [host_info(h) for h in session.scalars(select(Host).where(Host.state != "retired"))]
    windows = {
        lid: (_aware(s), held_until(_aware(e), grace_s))
        for lid, s, e, grace_s in session.execute(
            select(Lease.id, Lease.start_at, Lease.end_at, Lease.grace_s).where(
                Lease.phase != LeasePhase.ENDED
            )
        )
    }
    # A lease ended in its first minute holds its hosts through its servers' grace only.
    windows = {lid: w for lid, w in windows.items() if w[1] > w[0]}
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
            # A preempted server's room is the lease's already (it left the engine when it
            # was chosen); one its owner deletes holds its room until it is really gone.
            if not (srv.phase == ServerPhase.DELETING and srv.spec.get("preempted_by")):
                preemptibles.append(
                    Preemptible(srv.id, srv.host.name, amount, minute(srv.created_at))
                )
            continue
        bookings[server_booking_id(srv.id)] = Placement(
            start=minute(srv.created_at),
            end=FOREVER,
            allocations=(Allocation("server", srv.host.name, amount, 1),),
        )
    engine = JournaledEngine.rebuild(
        hosts, bookings, preemptibles, min_preemptible_lifetime=min_preemptible_lifetime
    )
    assert isinstance(engine, JournaledEngine)
    return engine


def _aware(t: datetime) -> datetime:
    # Plain column reads skip the UTC type decorator's result processing on some paths.
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t
