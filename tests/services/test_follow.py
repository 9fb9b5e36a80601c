"""Several processes on one database: engines follow each other's bookings from the log.

Each ``Booking`` here has its own ``Database`` (its own connection pool), as a separate
``ecliptic serve`` process would; ``tests/cli/test_serve_follow.py`` runs real processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import delete, func, select

from ecliptic.clock import ManualClock
from ecliptic.services import booking as booking_mod
from ecliptic.services import credits, leases
from ecliptic.services.booking import Booking, build_engine
from ecliptic.services.caller import Caller
from ecliptic.services.catalogue import seed_flavors, sync_inventory
from ecliptic.services.identity import create_tenancy, create_user, set_membership
from ecliptic.services.leases import LeaseNoCapacity
from ecliptic.store.db import Database
from ecliptic.store.migrate import upgrade
from ecliptic.store.models import BookingLog
from ecliptic.store.workqueue import WorkQueue
from tests.services.test_leases import HOSTS, T0, gpu_hosts
from tests.waiting import wait_until

VISIBLE_S = 0.1


@dataclass
class Proc:
    """What one process holds: its own pool, queue and engine."""

    db: Database
    queue: WorkQueue
    booking: Booking


@dataclass
class Two:
    a: Proc
    b: Proc
    alice: Caller
    url: str


def _proc(url: str, clock: ManualClock) -> Proc:
    db = Database(url)
    return Proc(db, WorkQueue(db, clock), Booking(db, clock, min_preemptible_lifetime=timedelta(1)))


@pytest.fixture
def two(database_url: str) -> Iterator[Two]:
    db = Database(database_url)
    upgrade(db)
    with db.write() as s:
        seed_flavors(s)
        sync_inventory(s, HOSTS)
    root = Caller("root", "root", True)
    u = create_user(db, None, "alice", "alice-password")
    t = create_tenancy(db, root, "physics")
    set_membership(db, root, "physics", "alice", "member")
    with db.write() as s:
        for rc in ("host:A100", "host:cpu", "gpu:A100", "vcpu"):
            credits.grant(
                s, t.id, "grant", rc, Decimal(10**6), T0 - timedelta(1), T0 + timedelta(120)
            )
    db.dispose()
    clock = ManualClock(T0)
    a, b = _proc(database_url, clock), _proc(database_url, clock)
    for p in (a, b):
        with p.booking.reading():
            pass  # built once from the tables
        p.booking.follow()
    alice = Caller(u.id, "alice", False, t.id, "physics", "member")
    try:
        yield Two(a, b, alice, database_url)
    finally:
        for p in (a, b):
            p.booking.stop()
            p.db.dispose()


def _create(p: Proc, alice: Caller, name: str, where: str, day: int) -> str | None:
    body = gpu_hosts(
        1,
        name=name,
        start=T0 + timedelta(days=day),
        duration="20h",
        reservations=[{"kind": "host", "count": 1, "where": where}],
    )
    try:
        return leases.create_lease(p.booking, p.queue, alice, body).id
    except LeaseNoCapacity:
        return None


def _seen_after(p: Proc, lease_id: str) -> float:
    """Seconds until ``p``'s engine holds ``lease_id``, without asking it to look."""
    t0 = time.monotonic()
    while p.booking.engine.booking(lease_id) is None:
        if time.monotonic() - t0 > 5:
            raise AssertionError(f"lease {lease_id} never reached the other engine")
        time.sleep(0.001)
    return time.monotonic() - t0


def _same_as_store(p: Proc) -> None:
    with p.db.read() as s:
        rebuilt = build_engine(s, timedelta(1))
    with p.booking.reading() as engine:
        assert engine.snapshot() == rebuilt.snapshot()


def test_two_processes_book_concurrently_and_follow_each_other(two: Two) -> None:
    """Both book the same hosts at once: nothing is booked twice, each sees the other's
    bookings within 100 ms, and neither engine is rebuilt from the tables."""
    results: dict[str, list[str | None]] = {"a": [], "b": []}
    delays: list[float] = []

    def booker(name: str, me: Proc, other: Proc) -> None:
        for i in range(12):
            # Both ask for the same host on the same day: one wins it, the other is refused
            # or takes the next free one.
            lid = _create(me, two.alice, f"{name}{i}", f'name == "gpu-{i % 4}"', 1 + i // 4)
            results[name].append(lid)
            if lid is not None:
                delays.append(_seen_after(other, lid))

    threads = [
        threading.Thread(target=booker, args=("a", two.a, two.b)),
        threading.Thread(target=booker, args=("b", two.b, two.a)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    won = [lid for lids in results.values() for lid in lids if lid is not None]
    assert len(won) == 12  # 12 (host, day) pairs, each won exactly once
    assert max(delays) < VISIBLE_S, sorted(delays)[-3:]
    for p in (two.a, two.b):
        _same_as_store(p)
        assert p.booking.rebuilds == 1  # followed the log, never rebuilt
    with two.a.booking.reading() as ea, two.b.booking.reading() as eb:
        assert ea.snapshot() == eb.snapshot()


def test_a_refused_booking_undoes_itself_without_a_rebuild(two: Two) -> None:
    assert _create(two.a, two.alice, "first", 'name == "gpu-0"', 2)
    assert _create(two.a, two.alice, "second", 'name == "gpu-0"', 2) is None
    with pytest.raises(ValueError), two.a.booking.transaction() as (_, engine):
        engine.release(next(iter(engine.bookings())))
        raise ValueError("the transaction fails after changing the engine")
    assert two.a.booking.rebuilds == 1
    _same_as_store(two.a)


def test_a_follower_behind_a_pruned_log_rebuilds(two: Two) -> None:
    two.b.booking.stop()
    lid = _create(two.a, two.alice, "pruned", 'name == "gpu-1"', 3)
    assert lid is not None
    with two.a.db.write() as s:
        s.execute(delete(BookingLog))  # as pruning does, once far behind
    assert two.b.booking.engine.booking(lid) is None
    with two.b.booking.reading() as engine:
        assert engine.booking(lid) is not None
    assert two.b.booking.rebuilds == 2
    _same_as_store(two.b)


def test_a_hole_in_the_log_is_waited_for_then_rebuilt(
    two: Two, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change numbered before others but not visible yet is waited for, never skipped."""
    monkeypatch.setattr(booking_mod, "HOLE_WAIT_S", 0.3)
    two.b.booking.stop()
    assert _create(two.a, two.alice, "zero", 'name == "gpu-1"', 4)
    first = _create(two.a, two.alice, "first", 'name == "gpu-2"', 4)
    second = _create(two.a, two.alice, "second", 'name == "gpu-3"', 4)
    assert first and second
    with two.a.db.write() as s:
        newest = s.scalar(select(func.max(BookingLog.seq)))
        s.execute(delete(BookingLog).where(BookingLog.seq == newest - 1))  # "not committed"
    with two.b.booking.reading() as engine:
        assert engine.booking(first) is None and engine.booking(second) is None
    assert two.b.booking.rebuilds == 1

    def both_seen() -> bool:
        with two.b.booking.reading() as engine:
            return engine.booking(first) is not None and engine.booking(second) is not None

    wait_until(both_seen, 10, "the follower to see both leases once the gap is gone")
    assert two.b.booking.rebuilds == 2


def test_host_state_changes_are_followed(two: Two) -> None:
    root = Caller("root", "root", True)
    leases.set_host_state(two.a.booking, two.a.queue, root, "cpu-0", "down")
    t0 = time.monotonic()
    while two.b.booking.engine.hosts["cpu-0"].up:
        assert time.monotonic() - t0 < 5
        time.sleep(0.005)
    assert two.b.booking.rebuilds == 1
    _same_as_store(two.b)


def test_servers_on_demand_and_preemptible_are_followed(two: Two) -> None:
    from ecliptic.services import servers

    on_demand = servers.create_server(two.a.booking, two.a.queue, two.alice, "od", "m1.tiny", [])
    spot = servers.create_server(
        two.a.booking, two.a.queue, two.alice, "spot", "m1.small", [], preemptible=True
    )
    t0 = time.monotonic()
    while not (
        two.b.booking.engine.booking(f"server:{on_demand.id}") is not None
        and any(p.server_id == spot.id for p in two.b.booking.engine.preemptibles())
    ):
        assert time.monotonic() - t0 < VISIBLE_S * 10, "servers never reached the other engine"
        time.sleep(0.002)
    assert two.b.booking.rebuilds == 1
    # (Not compared with a rebuild: a server's booking starts at the clock's minute, which
    # here is a manual clock, and a rebuild takes the row's wall-clock creation time.)
    with two.a.booking.reading() as ea, two.b.booking.reading() as eb:
        assert ea.snapshot() == eb.snapshot()
