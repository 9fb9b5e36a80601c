"""Random sequences of lease operations keep every promise (hypothesis, real SQLite).

After every step: no host is over capacity at any instant, no allocation's balance is
negative, no lease got back more than it paid, and the engine in memory equals an engine
rebuilt from the database.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from ecliptic.api.schemas import LeaseCreate, LeaseUpdate
from ecliptic.clock import ManualClock
from ecliptic.errors import EclipticError
from ecliptic.phases import LeasePhase
from ecliptic.reconcile.base import Context
from ecliptic.reconcile.leases import reconcile_lease
from ecliptic.services import credits, leases
from ecliptic.services.booking import Booking, amount_from_json, build_engine
from ecliptic.services.caller import Caller
from ecliptic.services.catalogue import seed_flavors, sync_inventory
from ecliptic.services.identity import create_tenancy, create_user, set_membership
from ecliptic.store.db import Database
from ecliptic.store.migrate import upgrade
from ecliptic.store.models import Host, Lease, LedgerEntry
from ecliptic.store.workqueue import WorkQueue
from tests.services.test_leases import HOSTS

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)

reservation = st.one_of(
    st.builds(
        lambda n, w: {"kind": "host", "count": n, "where": w},
        st.integers(1, 3),
        st.sampled_from(["", 'gpu_model == "A100"', "not rdma"]),
    ),
    st.builds(
        lambda n, f, a: {"kind": "flavor", "flavor": f, "count": n, "affinity": a},
        st.integers(1, 6),
        st.sampled_from(["m1.large", "m1.xlarge", "g1.a100"]),
        st.sampled_from(["none", "anti-affinity"]),
    ),
    st.builds(
        lambda n, p: {"kind": "gpu_slice", "profile": p, "count": n},
        st.integers(1, 10),
        st.sampled_from(["1g.10gb", "3g.40gb"]),
    ),
)
op = st.one_of(
    st.tuples(st.just("create"), reservation, st.integers(0, 72), st.integers(1, 48)),
    st.tuples(st.just("extend"), st.integers(0, 20), st.integers(1, 24)),
    st.tuples(st.just("shorten"), st.integers(0, 20), st.integers(1, 12)),
    st.tuples(st.just("end"), st.integers(0, 20)),
    st.tuples(st.just("host"), st.sampled_from([h.name for h in HOSTS]), st.booleans()),
    st.tuples(st.just("tick"), st.integers(1, 30)),
)


def world() -> tuple[Database, ManualClock, Booking, WorkQueue, Caller, Caller, str]:
    path = Path(tempfile.mkdtemp(prefix="ecl-prop-")) / "db.sqlite"
    db = Database(f"sqlite:///{path}")
    upgrade(db)
    clock = ManualClock(T0)
    with db.write() as s:
        seed_flavors(s)
        sync_inventory(s, HOSTS)
    root = Caller("root", "root", True)
    u = create_user(db, None, "alice", None)
    t = create_tenancy(db, root, "physics")
    set_membership(db, root, "physics", "alice", "member")
    with db.write() as s:
        for rc in ("host:A100", "host:cpu", "gpu:A100", "vcpu", "slice:1g.10gb", "slice:3g.40gb"):
            credits.grant(s, t.id, "grant", rc, Decimal(400), T0, T0 + timedelta(days=30))
    booking = Booking(db, clock, min_preemptible_lifetime=timedelta(hours=1))
    alice = Caller(u.id, "alice", False, t.id, "physics", "member")
    return db, clock, booking, WorkQueue(db, clock), alice, root, t.id


def check_invariants(db: Database, booking: Booking, tenancy_id: str) -> None:
    with db.read() as s:
        for b in credits.balances(s, tenancy_id):
            assert b.remaining >= 0, b
        paid: dict[str, Decimal] = defaultdict(Decimal)
        back: dict[str, Decimal] = defaultdict(Decimal)
        for lease_id, kind, total in s.execute(
            select(LedgerEntry.lease_id, LedgerEntry.kind, func.sum(LedgerEntry.hours))
            .where(LedgerEntry.lease_id.is_not(None))
            .group_by(LedgerEntry.lease_id, LedgerEntry.kind)
        ):
            (paid if kind == "charge" else back)[lease_id] += abs(Decimal(total))
        for lease_id, refunded in back.items():
            assert refunded <= paid[lease_id]
        hosts = {h.name: h for h in s.scalars(select(Host))}
        spans = defaultdict(list)
        for lease in s.scalars(select(Lease).where(Lease.phase != LeasePhase.ENDED)):
            for a in lease.allocations:
                spans[a.host].append((lease.start_at, lease.end_at, amount_from_json(a.amount)))
        for name, items in spans.items():
            h = hosts[name]
            gpus = sum(int(g["count"]) for g in h.gpus)
            for t, _, _ in items:
                live = [a for s0, e0, a in items if s0 <= t < e0]
                if any(a.whole_host for a in live):
                    assert len(live) == 1, (name, t, live)
                    continue
                assert sum(a.vcpus for a in live) <= h.vcpus
                assert sum(a.memory_mb for a in live) <= h.memory_mb
                units = sum(n for a in live for _, n in a.gpu_units)
                assert units <= 7 * gpus
        rebuilt = build_engine(s, timedelta(hours=1))
    with booking.reading() as engine:
        assert engine.snapshot() == rebuilt.snapshot()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, min_size=1, max_size=14))
def test_random_operations_keep_every_promise(ops: list[tuple]) -> None:  # type: ignore[type-arg]
    db, clock, booking, queue, alice, root, tenancy_id = world()
    ctx = Context(db, None, queue, booking)  # type: ignore[arg-type]
    names: list[str] = []
    try:
        for step, o in enumerate(ops):
            try:
                if o[0] == "create":
                    _, res, offset_h, hours = o
                    body = LeaseCreate.model_validate(
                        {
                            "name": f"l{step}",
                            "start": clock.now() + timedelta(hours=offset_h) if offset_h else "now",
                            "duration": f"{hours}h",
                            "reservations": [res],
                        }
                    )
                    leases.create_lease(booking, queue, alice, body)
                    names.append(f"l{step}")
                    event("a lease was created")
                elif o[0] in ("extend", "shorten") and names:
                    name = names[o[1] % len(names)]
                    leases.update_lease(
                        booking, queue, alice, name, LeaseUpdate(**{o[0]: f"{o[2]}h"})
                    )
                elif o[0] == "end" and names:
                    leases.end_lease(booking, queue, alice, names[o[1] % len(names)])
                elif o[0] == "host":
                    leases.set_host_state(booking, queue, root, o[1], "up" if o[2] else "down")
                elif o[0] == "tick":
                    clock.advance(timedelta(hours=o[1]))
                    with db.read() as s:
                        ids = list(s.scalars(select(Lease.id)))
                    for lease_id in ids:
                        reconcile_lease(ctx, lease_id)
            except EclipticError as exc:
                # A refusal is a fine answer; the invariants must hold either way.
                event(f"refused: {exc.code}")
            check_invariants(db, booking, tenancy_id)
    finally:
        db.dispose()
