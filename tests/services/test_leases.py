"""Leases and credits through the services, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from ecliptic.api.schemas import LeaseCreate, LeaseUpdate
from ecliptic.backends.base import GpuRecord, HostRecord, NicRecord
from ecliptic.clock import ManualClock
from ecliptic.errors import Conflict, InvalidInput
from ecliptic.reconcile.base import Context
from ecliptic.reconcile.leases import reconcile_lease
from ecliptic.scheduler.model import NoFit
from ecliptic.services import credits, leases, servers
from ecliptic.services.booking import Booking, build_engine
from ecliptic.services.caller import Caller
from ecliptic.services.catalogue import seed_flavors, sync_inventory
from ecliptic.services.identity import create_tenancy, create_user, set_membership
from ecliptic.services.leases import LeaseNoCapacity
from ecliptic.services.servers import NoCapacity
from ecliptic.store.db import Database
from ecliptic.store.migrate import upgrade
from ecliptic.store.models import Event, Host, LedgerEntry, Server, Tenancy
from ecliptic.store.workqueue import WorkQueue

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
A100 = (GpuRecord("A100", 4, 80, ("1g.10gb", "3g.40gb")),)
IB = (NicRecord("ib0", 100, True, 16),)
HOSTS = [
    *(HostRecord(f"gpu-{i}", 64, 512 * 1024, 2000, gpus=A100, nics=IB) for i in range(4)),
    *(HostRecord(f"cpu-{i}", 32, 128 * 1024, 500) for i in range(3)),
]


@dataclass
class L:
    db: Database
    clock: ManualClock
    queue: WorkQueue
    booking: Booking
    alice: Caller
    tenancy_id: str
    admin: Caller


@pytest.fixture
def env(database_url: str) -> Iterator[L]:
    db = Database(database_url)
    upgrade(db)
    clock = ManualClock(T0)
    with db.write() as s:
        seed_flavors(s)
        sync_inventory(s, HOSTS)
    root = Caller("root", "root", True)
    u = create_user(db, None, "alice", "alice-password")
    t = create_tenancy(db, root, "physics")
    set_membership(db, root, "physics", "alice", "member")
    with db.write() as s:
        for rc, h in [
            ("host:A100", 1000),
            ("host:cpu", 1000),
            ("gpu:A100", 500),
            ("vcpu", 5000),
            ("slice:1g.10gb", 500),
        ]:
            credits.grant(
                s,
                t.id,
                "spring-2027",
                rc,
                Decimal(h),
                T0 - timedelta(days=1),
                T0 + timedelta(days=120),
            )
    booking = Booking(db, clock, min_preemptible_lifetime=timedelta(hours=1))
    yield L(
        db,
        clock,
        WorkQueue(db, clock),
        booking,
        Caller(u.id, "alice", False, t.id, "physics", "member"),
        t.id,
        root,
    )
    db.dispose()


def gpu_hosts(n: int, **kw: object) -> LeaseCreate:
    body = {
        "name": kw.pop("name", "gpus"),
        "start": kw.pop("start", T0 + timedelta(days=1)),
        "duration": kw.pop("duration", "24h"),
        "reservations": [{"kind": "host", "count": n, "where": 'gpu_model == "A100"'}],
    }
    body.update(kw)
    return LeaseCreate.model_validate(body)


def remaining(env: L, rc: str) -> Decimal:
    with env.db.read() as s:
        return next(
            b.remaining for b in credits.balances(s, env.tenancy_id) if b.resource_class == rc
        )


def test_reserve_two_gpu_hosts_for_tomorrow_and_pay(env: L) -> None:
    lease = leases.create_lease(env.booking, env.queue, env.alice, gpu_hosts(2))
    assert lease.phase == "PENDING"
    hosts = sorted(a.host for a in lease.allocations)
    assert len(hosts) == 2 and all(h.startswith("gpu-") for h in hosts)
    assert lease.status["cost"] == {"host:A100": "48"}
    assert remaining(env, "host:A100") == Decimal(1000 - 48)


def test_earliest_when_only_three_of_four_are_free(env: L) -> None:
    leases.create_lease(
        env.booking, env.queue, env.alice, gpu_hosts(1, name="blocker", start="now", duration="36h")
    )
    body = gpu_hosts(4)
    with pytest.raises(LeaseNoCapacity, match="lease find"):
        leases.create_lease(
            env.booking,
            env.queue,
            env.alice,
            gpu_hosts(4, name="four", start="now", duration="48h"),
        )
    found, _ = leases.find_windows(
        env.booking, env.alice, body.reservations, "48h", "now", "30d", 2
    )
    # The blocker's servers get their 10-minute grace after its end: that is booked too.
    assert found and found[0].start == T0 + timedelta(hours=36, minutes=10)
    assert len(found[0].placement.hosts()) == 4
    assert all(w.start > found[0].start for w in found[1:])


def test_running_out_of_credits_says_what_is_missing(env: L) -> None:
    with env.db.write() as s:
        t = s.scalar(select(Tenancy).where(Tenancy.name == "physics"))
        assert t is not None
    with pytest.raises(credits.InsufficientCredits) as err:
        leases.create_lease(env.booking, env.queue, env.alice, gpu_hosts(4, duration="300h"))
    assert "needs 1200 'A100' host credits, 1000 left in allocation 'spring-2027'" in str(err.value)
    assert remaining(env, "host:A100") == Decimal(1000)  # nothing charged, nothing booked
    leases.create_lease(env.booking, env.queue, env.alice, gpu_hosts(4, duration="200h"))


def test_update_charges_and_refunds_the_difference(env: L) -> None:
    leases.create_lease(env.booking, env.queue, env.alice, gpu_hosts(2))
    leases.update_lease(env.booking, env.queue, env.alice, "gpus", LeaseUpdate(extend="12h"))
    assert remaining(env, "host:A100") == Decimal(1000 - 72)
    leases.update_lease(
        env.booking,
        env.queue,
        env.alice,
        "gpus",
        LeaseUpdate(reservations=[{"name": "hosts", "count": 1}]),
    )
    assert remaining(env, "host:A100") == Decimal(1000 - 36)
    leases.end_lease(env.booking, env.queue, env.alice, "gpus")  # cancelled before start
    assert remaining(env, "host:A100") == Decimal(1000)


def test_extension_past_a_later_booking_is_replaced_or_refused(env: L) -> None:
    first = leases.create_lease(
        env.booking, env.queue, env.alice, gpu_hosts(4, name="first", duration="24h")
    )
    leases.create_lease(
        env.booking,
        env.queue,
        env.alice,
        gpu_hosts(2, name="later", start=first.end_at + timedelta(minutes=10), duration="24h"),
    )
    with pytest.raises(LeaseNoCapacity, match="lease later"):
        leases.update_lease(env.booking, env.queue, env.alice, "first", LeaseUpdate(extend="2h"))
    leases.update_lease(
        env.booking,
        env.queue,
        env.alice,
        "first",
        LeaseUpdate(extend="2h", reservations=[{"name": "hosts", "count": 2}]),
    )


def _warnings(env: L, lease_id: str) -> list[str]:
    with env.db.read() as s:
        return [
            e.reason
            for e in s.scalars(
                select(Event)
                .where(Event.object_kind == "lease", Event.object_id == lease_id)
                .order_by(Event.id)
            )
            if e.reason.startswith("before-end")
        ]


def test_lease_runs_on_time_and_ends(env: L) -> None:
    ctx = Context(env.db, None, env.queue, env.booking)  # type: ignore[arg-type]
    lease = leases.create_lease(
        env.booking, env.queue, env.alice, gpu_hosts(1, before_end="1h", duration="3h")
    )
    start = T0 + timedelta(days=1)
    assert reconcile_lease(ctx, lease.id).requeue_after == pytest.approx(24 * 3600)
    env.clock.advance(timedelta(days=1))
    # Started, it asks to run again when the warning is due: an hour before its end.
    assert reconcile_lease(ctx, lease.id).requeue_after == pytest.approx(2 * 3600)
    assert leases.get_lease(env.booking, env.alice, "gpus").phase == "ACTIVE"
    assert _warnings(env, lease.id) == []
    # A minute early: no warning yet.
    env.clock.advance(timedelta(hours=1, minutes=59))
    assert reconcile_lease(ctx, lease.id).requeue_after == pytest.approx(60)
    assert _warnings(env, lease.id) == []
    env.clock.advance(timedelta(minutes=1))
    assert reconcile_lease(ctx, lease.id).requeue_after == pytest.approx(3600)
    end = start + timedelta(hours=3)
    warned = _warnings(env, lease.id)
    assert warned == [
        f"before-end: lease 'gpus' ends at {end:%Y-%m-%d %H:%M} UTC; "
        "save your work or extend it ('ecliptic lease update --extend')"
    ]
    still = leases.get_lease(env.booking, env.alice, "gpus")
    assert still.phase == "ACTIVE" and still.phase_reason == warned[0]
    # Warned once, not on every later run.
    env.clock.advance(timedelta(minutes=30))
    reconcile_lease(ctx, lease.id)
    assert len(_warnings(env, lease.id)) == 1
    env.clock.advance(timedelta(minutes=30))
    reconcile_lease(ctx, lease.id)
    done = leases.get_lease(env.booking, env.alice, "gpus")
    assert done.phase == "ENDED"
    assert len(_warnings(env, lease.id)) == 1
    with env.booking.reading() as engine:
        assert engine.booking(lease.id) is None


def test_early_end_refunds_the_unused_part(env: L) -> None:
    leases.create_lease(env.booking, env.queue, env.alice, gpu_hosts(1, start="now"))
    ctx = Context(env.db, None, env.queue, env.booking)  # type: ignore[arg-type]
    lease = leases.get_lease(env.booking, env.alice, "gpus")
    reconcile_lease(ctx, lease.id)
    env.clock.advance(timedelta(hours=6))
    leases.end_lease(env.booking, env.queue, env.alice, "gpus")
    assert remaining(env, "host:A100") == Decimal(1000 - 6)
    with env.db.read() as s:
        kinds = [
            e.kind
            for e in s.scalars(
                select(LedgerEntry).where(LedgerEntry.lease_id == lease.id).order_by(LedgerEntry.id)
            )
        ]
    assert kinds == ["charge", "refund"]


def test_bad_filter_points_at_the_error(env: L) -> None:
    with pytest.raises(ValueError, match="column"):
        gpu_hosts(
            1,
            reservations=[
                {"kind": "host", "count": 1, "where": 'gpu_model == "A100" and and rdma'}
            ],
        )


def test_minute_resolution_and_sane_windows(env: L) -> None:
    with pytest.raises(InvalidInput, match="minute"):
        leases.create_lease(
            env.booking,
            env.queue,
            env.alice,
            gpu_hosts(1, start=T0 + timedelta(days=1, seconds=30)),
        )
    with pytest.raises(InvalidInput, match="past"):
        leases.create_lease(
            env.booking, env.queue, env.alice, gpu_hosts(1, start=T0 - timedelta(hours=1))
        )


def test_gpu_slices_and_flavor_slots(env: L) -> None:
    body = LeaseCreate.model_validate(
        {
            "name": "mixed",
            "start": "now",
            "duration": "10h",
            "reservations": [
                {"kind": "gpu_slice", "profile": "1g.10gb", "count": 9},
                {"kind": "flavor", "flavor": "m1.large", "count": 3, "affinity": "anti-affinity"},
            ],
        }
    )
    lease = leases.create_lease(env.booking, env.queue, env.alice, body)
    slots = [a for a in lease.allocations if a.reservation == "slots"]
    assert len({a.host for a in slots}) == 3
    assert sum(a.slots for a in lease.allocations if a.reservation == "slices") == 9
    assert lease.status["cost"]["slice:1g.10gb"] == "90"
    assert lease.status["cost"]["vcpu"] == "120"


def test_concurrent_creators_never_double_book_or_overspend(env: L) -> None:
    # PostgreSQL serialises lease writes with an advisory lock, SQLite with its write lock.
    # 32 creators, each with its own engine (as separate processes would have), race for
    # 4 GPU hosts; what is left of the credit pays for 2 of them.
    with env.db.write() as s:
        for a in s.scalars(select(credits.CreditAllocation)):
            if a.resource_class == "host:A100":
                s.add(
                    LedgerEntry(
                        account_id=a.account_id,
                        allocation_id=a.id,
                        kind="charge",
                        resource_class=a.resource_class,
                        hours=Decimal(-940),
                    )
                )
    results: list[str] = []
    lock = threading.Lock()

    def creator(i: int) -> None:
        own = Booking(env.db, env.clock, min_preemptible_lifetime=timedelta(hours=1))
        try:
            leases.create_lease(
                own, env.queue, env.alice, gpu_hosts(1, name=f"l{i}", duration="24h")
            )
            outcome = "ok"
        except (LeaseNoCapacity, credits.InsufficientCredits) as exc:
            outcome = exc.code
        with lock:
            results.append(outcome)

    threads = [threading.Thread(target=creator, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("ok") == 2
    assert remaining(env, "host:A100") == Decimal(1000 - 940 - 2 * 24)
    with env.db.read() as s:
        engine = build_engine(s, timedelta(hours=1))
    booked = [h for lid in engine.bookings() for h in (engine.booking(lid) or []).hosts()]
    assert sorted(booked) == sorted(set(booked))


def test_host_failure_heals_future_and_degrades_active(env: L) -> None:
    ctx = Context(env.db, None, env.queue, env.booking)  # type: ignore[arg-type]
    future = leases.create_lease(env.booking, env.queue, env.alice, gpu_hosts(2, name="future"))
    now = leases.create_lease(
        env.booking, env.queue, env.alice, gpu_hosts(2, name="now", start="now", duration="10h")
    )
    reconcile_lease(ctx, now.id)
    victim = sorted(a.host for a in now.allocations)[0]
    report = leases.set_host_state(env.booking, env.queue, env.admin, victim, "down")
    healed = leases.get_lease(env.booking, env.alice, "now")
    assert healed.phase == "ACTIVE" and victim not in {a.host for a in healed.allocations}
    assert len({a.host for a in healed.allocations}) == 2
    assert any("replaced by" in line for line in report)
    moved = leases.get_lease(env.booking, env.alice, "future")
    assert victim not in {a.host for a in moved.allocations}
    del future
    # Two more hosts down: no replacement left for "now", which stays DEGRADED, saying why.
    others = sorted(a.host for a in leases.get_lease(env.booking, env.alice, "now").allocations)
    spare = sorted({f"gpu-{i}" for i in range(4)} - {victim} - set(others))
    for h in spare:
        leases.set_host_state(env.booking, env.queue, env.admin, h, "down")
    leases.set_host_state(env.booking, env.queue, env.admin, others[0], "down")
    degraded = leases.get_lease(env.booking, env.alice, "now")
    assert degraded.phase == "DEGRADED" and "no replacement" in degraded.phase_reason
    with env.db.read() as s:
        rebuilt = build_engine(s, timedelta(hours=1))
    with env.booking.reading() as engine:
        assert rebuilt.snapshot() == engine.snapshot()
    # A spare comes back but another lease takes it first: still DEGRADED, retried.
    leases.set_host_state(env.booking, env.queue, env.admin, spare[0], "up")
    leases.create_lease(
        env.booking, env.queue, env.alice, gpu_hosts(1, name="blocker", start="now")
    )
    assert reconcile_lease(ctx, now.id).requeue_after == pytest.approx(60)
    assert leases.get_lease(env.booking, env.alice, "now").phase == "DEGRADED"
    # The other lease ends: the freed host heals "now" at its next look (level-triggered).
    leases.end_lease(env.booking, env.queue, env.alice, "blocker")
    assert ("lease", now.id) in {(i.kind, i.object_id) for i in env.queue.pending()}
    reconcile_lease(ctx, now.id)
    healed = leases.get_lease(env.booking, env.alice, "now")
    assert healed.phase == "ACTIVE", healed.phase_reason
    assert {a.host for a in healed.allocations} == {others[1], spare[0]}
    # It loses a host again with nothing spare; the lost host comes back: whole again.
    leases.set_host_state(env.booking, env.queue, env.admin, spare[0], "down")
    assert leases.get_lease(env.booking, env.alice, "now").phase == "DEGRADED"
    leases.set_host_state(env.booking, env.queue, env.admin, spare[0], "up")
    back = leases.get_lease(env.booking, env.alice, "now")
    assert back.phase == "ACTIVE" and "whole again" in back.phase_reason
    assert {a.host for a in back.allocations} == {others[1], spare[0]}
    with env.db.read() as s:
        rebuilt = build_engine(s, timedelta(hours=1))
    with env.booking.reading() as engine:
        assert rebuilt.snapshot() == engine.snapshot()


def start_now(env: L, lease_id: str) -> None:
    ctx = Context(env.db, None, env.queue, env.booking)  # type: ignore[arg-type]
    reconcile_lease(ctx, lease_id)


def used_per_host(env: L) -> dict[str, tuple[int, int]]:
    """vCPUs and memory of every server on each host."""
    with env.db.read() as s:
        rows = s.execute(
            select(Host.name, func.sum(Server.vcpus), func.sum(Server.memory_mb))
            .join(Host, Server.host_id == Host.id)
            .group_by(Host.name)
        )
        return {name: (int(c), int(m)) for name, c, m in rows}


def assert_no_host_overcommitted(env: L) -> None:
    with env.db.read() as s:
        size = {h.name: (h.vcpus, h.memory_mb) for h in s.scalars(select(Host))}
    for name, (cpu, mem) in used_per_host(env).items():
        assert cpu <= size[name][0] and mem <= size[name][1], (name, cpu, mem, size[name])


def test_slice_lease_books_its_share_of_the_host_and_holds_servers_to_it(
    env: L, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On-demand servers fill the hosts here: capacity, not the quota, must stop them.
    monkeypatch.setenv("ECLIPTIC_QUOTA_MEMORY_MB", str(1 << 30))
    monkeypatch.setenv("ECLIPTIC_QUOTA_VCPUS", str(1 << 20))
    # The reproduction: 7 m1.xlarge (16 vCPU, 64 GiB) in a 7-slice lease plus on-demand
    # servers put more on a GPU host than it has.
    body = LeaseCreate.model_validate(
        {
            "name": "mig",
            "start": "now",
            "duration": "10h",
            "reservations": [{"kind": "gpu_slice", "profile": "1g.10gb", "count": 7}],
        }
    )
    lease = leases.create_lease(env.booking, env.queue, env.alice, body)
    start_now(env, lease.id)
    (alloc,) = lease.allocations
    # 7 of the host's 28 GPU units: a quarter of its 64 vCPU and 512 GiB.
    assert (alloc.amount["vcpus"], alloc.amount["memory_mb"]) == (16, 128 * 1024)
    assert lease.status["cost"] == {"slice:1g.10gb": "70"}  # the share comes with the slice
    made = refused = 0
    for i in range(7):
        try:
            servers.create_server(
                env.booking, env.queue, env.alice, f"in-{i}", "m1.xlarge", [], lease="mig"
            )
            made += 1
        except NoCapacity as exc:
            refused += 1
            assert "booked 16 vCPU" in str(exc) and "flavor" in str(exc)
    assert (made, refused) == (1, 6)
    for i in range(40):
        try:
            servers.create_server(env.booking, env.queue, env.alice, f"od-{i}", "m1.xlarge", [])
        except NoCapacity:
            break
    assert_no_host_overcommitted(env)
    # The lease's share stays its own: on-demand servers took the rest of its host only.
    with env.db.read() as s:
        on_demand = s.scalar(
            select(func.sum(Server.vcpus))
            .join(Host, Server.host_id == Host.id)
            .where(Host.name == alloc.host, Server.lease_id.is_(None))
        )
    assert on_demand == 64 - 16


def test_slices_reserved_for_a_flavor_book_its_size(env: L) -> None:
    body = LeaseCreate.model_validate(
        {
            "name": "mig",
            "start": "now",
            "duration": "10h",
            "reservations": [
                {"kind": "gpu_slice", "profile": "1g.10gb", "count": 7, "flavor": "m1.xlarge"}
            ],
        }
    )
    lease = leases.create_lease(env.booking, env.queue, env.alice, body)
    start_now(env, lease.id)
    # 7 x 16 vCPU do not fit on one 64-vCPU host: the slices spread over two or more.
    assert sum(a.amount["vcpus"] for a in lease.allocations) == 7 * 16
    assert all(a.amount["vcpus"] <= 64 for a in lease.allocations)
    assert len(lease.allocations) >= 2
    for i in range(7):
        servers.create_server(
            env.booking, env.queue, env.alice, f"in-{i}", "m1.xlarge", [], lease="mig"
        )
    with pytest.raises(NoCapacity, match="all in use"):
        servers.create_server(
            env.booking, env.queue, env.alice, "in-7", "m1.xlarge", [], lease="mig"
        )
    for i in range(40):
        try:
            servers.create_server(env.booking, env.queue, env.alice, f"od-{i}", "m1.xlarge", [])
        except NoCapacity:
            break
    assert_no_host_overcommitted(env)


def test_an_update_never_ends_a_lease_nor_does_nothing(env: L) -> None:
    lease = leases.create_lease(env.booking, env.queue, env.alice, gpu_hosts(1, start="now"))
    start_now(env, lease.id)
    env.clock.advance(timedelta(hours=2))
    for change in (LeaseUpdate(shorten="100d"), LeaseUpdate(shorten="22h")):
        with pytest.raises(leases.LeaseChangeRefused, match="lease end gpus") as err:
            leases.update_lease(env.booking, env.queue, env.alice, "gpus", change)
        assert err.value.status == 422
    for change in (LeaseUpdate(extend="0m"), LeaseUpdate(extend="1h", shorten="1h")):
        with pytest.raises(leases.LeaseChangeRefused, match="leaves lease 'gpus' as it is"):
            leases.update_lease(env.booking, env.queue, env.alice, "gpus", change)
    still = leases.get_lease(env.booking, env.alice, "gpus")
    assert still.phase == "ACTIVE" and still.end_at == T0 + timedelta(hours=24)
    assert remaining(env, "host:A100") == Decimal(1000 - 24)
    # Shortening to a minute from now is a change, not an end.
    leases.update_lease(env.booking, env.queue, env.alice, "gpus", LeaseUpdate(shorten="21h59m"))
    assert leases.get_lease(env.booking, env.alice, "gpus").phase == "ACTIVE"


def test_a_start_that_cannot_finish_goes_to_error_and_can_be_retried(env: L) -> None:
    ctx = Context(env.db, None, env.queue, env.booking)  # type: ignore[arg-type]
    spot = servers.create_server(
        env.booking, env.queue, env.alice, "spot", "m1.large", [], preemptible=True
    )
    assert spot.host is not None
    env.clock.advance(timedelta(hours=2))  # past its minimum lifetime
    where = f'name == "{spot.host.name}"'
    lease = leases.create_lease(
        env.booking,
        env.queue,
        env.alice,
        gpu_hosts(1, name="mine", start="now", reservations=[{"kind": "host", "where": where}]),
    )
    reconcile_lease(ctx, lease.id)
    assert leases.get_lease(env.booking, env.alice, "mine").phase == "STARTING"
    with pytest.raises(Conflict, match="not ERROR"):
        leases.retry_lease(env.booking, env.queue, env.alice, "mine")
    # The victim's deletion never finishes (its worker is stuck): the start gives up after
    # the preemptible grace plus a bounded wait, with the reason and the ways out.
    env.clock.advance(timedelta(minutes=3))
    reconcile_lease(ctx, lease.id)
    assert leases.get_lease(env.booking, env.alice, "mine").phase == "STARTING"
    env.clock.advance(timedelta(minutes=3))
    reconcile_lease(ctx, lease.id)
    stuck = leases.get_lease(env.booking, env.alice, "mine")
    assert stuck.phase == "ERROR"
    for text in ("could not start", "spot (DELETING: preempted", "lease retry mine", "lease end"):
        assert text in stuck.phase_reason
    # Retried, it waits again; once the victim is gone it starts.
    assert leases.retry_lease(env.booking, env.queue, env.alice, "mine").phase == "STARTING"
    reconcile_lease(ctx, lease.id)
    assert leases.get_lease(env.booking, env.alice, "mine").phase == "STARTING"
    with env.db.write() as s:
        gone = s.get(Server, spot.id)
        assert gone is not None
        for port in list(gone.ports):
            s.delete(port)
        s.delete(gone)
    reconcile_lease(ctx, lease.id)
    assert leases.get_lease(env.booking, env.alice, "mine").phase == "ACTIVE"


def test_a_lease_in_error_can_be_ended_with_a_refund(env: L) -> None:
    ctx = Context(env.db, None, env.queue, env.booking)  # type: ignore[arg-type]
    spot = servers.create_server(
        env.booking, env.queue, env.alice, "spot", "m1.large", [], preemptible=True
    )
    assert spot.host is not None
    env.clock.advance(timedelta(hours=2))
    where = f'name == "{spot.host.name}"'
    lease = leases.create_lease(
        env.booking,
        env.queue,
        env.alice,
        gpu_hosts(1, name="mine", start="now", reservations=[{"kind": "host", "where": where}]),
    )
    reconcile_lease(ctx, lease.id)
    env.clock.advance(timedelta(minutes=10))
    reconcile_lease(ctx, lease.id)
    assert leases.get_lease(env.booking, env.alice, "mine").phase == "ERROR"
    ended = leases.end_lease(env.booking, env.queue, env.alice, "mine")
    assert ended.phase == "ENDING"
    reconcile_lease(ctx, lease.id)
    assert leases.get_lease(env.booking, env.alice, "mine").phase == "ENDED"
    assert remaining(env, "host:cpu") == Decimal("999.833")  # all but its 10 minutes back


def test_the_grace_period_is_booked_so_the_next_lease_waits_for_it(env: L) -> None:
    first = leases.create_lease(
        env.booking, env.queue, env.alice, gpu_hosts(4, name="first", start="now", duration="2h")
    )
    start_now(env, first.id)
    # Its servers run 10 minutes past its end (the grace): no lease may start there before.
    body = gpu_hosts(4)
    found, _ = leases.find_windows(env.booking, env.alice, body.reservations, "4h", "now", "7d", 0)
    assert found[0].start == first.end_at + timedelta(minutes=10)
    assert found[0].end == found[0].start + timedelta(hours=4)
    *_, fit, _ = leases.check_fit(
        env.booking, env.alice, body.reservations, first.end_at, None, "4h"
    )
    assert isinstance(fit, NoFit)
    with pytest.raises(LeaseNoCapacity):
        leases.create_lease(
            env.booking, env.queue, env.alice, gpu_hosts(4, name="x", start=first.end_at)
        )
    # A lease with no grace may follow right at the end; the next one only after its own grace.
    leases.create_lease(
        env.booking,
        env.queue,
        env.alice,
        gpu_hosts(4, name="second", start=found[0].start, duration="1h", grace="0m"),
    )
    found, _ = leases.find_windows(env.booking, env.alice, body.reservations, "1h", "now", "7d", 0)
    assert found[0].start == first.end_at + timedelta(hours=1, minutes=10)
    # Ending early frees the rest, but not the grace its servers are given.
    env.clock.advance(timedelta(hours=1))
    leases.end_lease(env.booking, env.queue, env.alice, "first")
    found, _ = leases.find_windows(env.booking, env.alice, body.reservations, "20m", "now", "7d", 0)
    assert found[0].start == T0 + timedelta(hours=1, minutes=10)
    # It was charged for its hours, not for the grace.
    assert remaining(env, "host:A100") == Decimal(1000 - 4 * 1 - 4 * 1)
    with env.db.read() as s2:
        rebuilt = build_engine(s2, timedelta(hours=1))
    with env.booking.reading() as engine:
        assert rebuilt.snapshot() == engine.snapshot()


def hosts_of(env: L, name: str) -> set[str]:
    return {a.host for a in leases.get_lease(env.booking, env.alice, name).allocations}


def test_moving_a_pending_lease_keeps_its_length_and_frees_the_old_window(env: L) -> None:
    leases.create_lease(env.booking, env.queue, env.alice, gpu_hosts(4, duration="10h"))
    later = T0 + timedelta(days=3)
    moved = leases.update_lease(env.booking, env.queue, env.alice, "gpus", LeaseUpdate(start=later))
    assert (moved.start_at, moved.end_at) == (later, later + timedelta(hours=10))
    assert remaining(env, "host:A100") == Decimal(1000 - 40)  # same length, same price
    # The old window is free again, the new one is taken.
    leases.create_lease(env.booking, env.queue, env.alice, gpu_hosts(4, name="old-slot"))
    with pytest.raises(LeaseNoCapacity, match="lease gpus"):
        leases.create_lease(
            env.booking, env.queue, env.alice, gpu_hosts(1, name="clash", start=later)
        )


def test_growing_and_shortening_charge_and_refund_the_difference(env: L) -> None:
    leases.create_lease(env.booking, env.queue, env.alice, gpu_hosts(2, duration="10h"))
    grown = leases.update_lease(
        env.booking,
        env.queue,
        env.alice,
        "gpus",
        LeaseUpdate(reservations=[{"name": "hosts", "count": 3}]),
    )
    assert len(grown.allocations) == 3 and grown.status["cost"] == {"host:A100": "30"}
    assert remaining(env, "host:A100") == Decimal(1000 - 30)
    short = leases.update_lease(
        env.booking, env.queue, env.alice, "gpus", LeaseUpdate(shorten="4h")
    )
    assert short.end_at == T0 + timedelta(days=1, hours=6)
    assert remaining(env, "host:A100") == Decimal(1000 - 18)
    # A running lease shortened keeps running and gets the rest back.
    lease = leases.create_lease(
        env.booking, env.queue, env.alice, gpu_hosts(1, name="now", start="now", duration="10h")
    )
    start_now(env, lease.id)
    env.clock.advance(timedelta(hours=2))
    after = leases.update_lease(env.booking, env.queue, env.alice, "now", LeaseUpdate(shorten="5h"))
    assert after.phase == "ACTIVE" and after.end_at == T0 + timedelta(hours=5)
    assert remaining(env, "host:A100") == Decimal(1000 - 18 - 5)
    with pytest.raises(Conflict, match="not moved"):
        leases.update_lease(
            env.booking, env.queue, env.alice, "now", LeaseUpdate(start=T0 + timedelta(days=9))
        )


def test_an_update_re_places_a_lease_whose_hosts_are_taken_later(env: L) -> None:
    leases.create_lease(env.booking, env.queue, env.alice, gpu_hosts(1, duration="10h"))
    (mine,) = hosts_of(env, "gpus")
    end = T0 + timedelta(days=1, hours=10, minutes=10)  # after its grace
    leases.create_lease(
        env.booking,
        env.queue,
        env.alice,
        gpu_hosts(
            1,
            name="next",
            start=end,
            reservations=[{"kind": "host", "count": 1, "where": f'name == "{mine}"'}],
        ),
    )
    # Extending runs into "next" on its host: the lease moves to another free host.
    leases.update_lease(env.booking, env.queue, env.alice, "gpus", LeaseUpdate(extend="5h"))
    (now_on,) = hosts_of(env, "gpus")
    assert now_on != mine and now_on.startswith("gpu-")
    assert hosts_of(env, "next") == {mine}


def test_a_started_lease_with_servers_stays_on_its_hosts(env: L) -> None:
    lease = leases.create_lease(
        env.booking,
        env.queue,
        env.alice,
        gpu_hosts(1, name="run", start="now", duration="10h"),
    )
    start_now(env, lease.id)
    (mine,) = hosts_of(env, "run")
    leases.create_lease(
        env.booking,
        env.queue,
        env.alice,
        gpu_hosts(
            1,
            name="next",
            start=T0 + timedelta(hours=10, minutes=10),
            reservations=[{"kind": "host", "count": 1, "where": f'name == "{mine}"'}],
        ),
    )
    servers.create_server(env.booking, env.queue, env.alice, "job", "m1.large", [], lease="run")
    # Its server runs on its host: an extension that needs another host is refused, naming
    # the booking in the way, and nothing changed.
    with pytest.raises(LeaseNoCapacity, match="lease next on " + mine):
        leases.update_lease(env.booking, env.queue, env.alice, "run", LeaseUpdate(extend="2h"))
    assert hosts_of(env, "run") == {mine}
    assert leases.get_lease(env.booking, env.alice, "run").end_at == T0 + timedelta(hours=10)
    # Without servers a started lease may move (nothing runs there yet).
    with env.db.write() as s:
        srv = s.scalar(select(Server).where(Server.name == "job"))
        assert srv is not None
        for port in list(srv.ports):
            s.delete(port)
        s.delete(srv)
    leases.update_lease(env.booking, env.queue, env.alice, "run", LeaseUpdate(extend="2h"))
    assert hosts_of(env, "run") != {mine}


def test_credit_rate_multiplies_the_price_of_a_whole_host(env: L) -> None:
    fat = HostRecord("fat-0", 32, 128 * 1024, 500, properties=(("credit_rate", 2.5),))
    with env.db.write() as s:
        sync_inventory(s, [*HOSTS, fat])
    env.booking.mark_stale()
    where = 'name == "fat-0"'
    body = gpu_hosts(1, name="fat", duration="4h", reservations=[{"kind": "host", "where": where}])
    lease = leases.create_lease(env.booking, env.queue, env.alice, body)
    assert lease.status["cost"] == {"host:cpu": "10"}  # 4 host-hours x 2.5
    assert remaining(env, "host:cpu") == Decimal(1000 - 10)
    found, hosts = leases.find_windows(
        env.booking, env.alice, body.reservations, "2h", "now", "7d", 0
    )
    assert leases.window_cost(found[0], hosts, body.reservations) == {"host:cpu": "5"}


def test_a_lease_spec_stored_by_an_earlier_version_still_reads(env: L) -> None:
    """Stored specs are read with the services' own input types, not the API's wire models:
    the form written before those types existed still turns into engine requests."""
    from ecliptic.services.leases import to_requests

    stored = {
        "reservations": [
            {"kind": "host", "name": "hosts", "count": 2, "min": None, "max": None, "where": ""},
            {
                "kind": "gpu_slice",
                "name": "slices",
                "count": 3,
                "profile": "1g.10gb",
                "gpu_model": None,
                "where": "",
            },
        ]
    }
    with env.db.read() as session:
        requests = to_requests(session, stored["reservations"])
    assert [r.key for r in requests] == ["hosts", "slices"]
    assert requests[0].min_count == requests[0].max_count == 2
