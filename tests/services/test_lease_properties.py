"""Random sequences of lease and server operations keep every promise (hypothesis, SQLite).

The operations: create, move, extend, shorten, grow, shrink and end leases (host, flavor
and GPU-slice reservations); create servers on demand, preemptible or inside a lease, and
delete them; take hosts down and up; let time pass while the reconcilers run (a backend
that holds servers in memory stands in for the infrastructure: what is checked here is
the bookkeeping). After every step:

- no host is over capacity at any instant, counting every consumer: lease allocations
  (until the end of their grace), on-demand servers (they hold their room with no end),
  and, now, every server that is really on the host (preemptible ones included);
- a whole host booked by a lease holds nothing else, then or now;
- a server in a lease sits on a host of its reservation and within what it booked there;
- no allocation's balance is negative and no lease got back more than it paid;
- the engine in memory equals an engine rebuilt from the database.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from ecliptic.clock import ManualClock
from ecliptic.errors import EclipticError
from ecliptic.phases import LeasePhase, ServerPhase
from ecliptic.reconcile.base import Context
from ecliptic.reconcile.leases import reconcile_lease
from ecliptic.reconcile.worker import Workers
from ecliptic.services import credits, leases, servers
from ecliptic.services.booking import FOREVER, Booking, amount_from_json, build_engine, held_until
from ecliptic.services.caller import Caller
from ecliptic.services.catalogue import seed_flavors, sync_inventory
from ecliptic.services.identity import create_tenancy, create_user, set_membership
from ecliptic.services.inputs import LeaseCreate, LeaseUpdate
from ecliptic.store.db import Database
from ecliptic.store.models import Host, Lease, LedgerEntry, Server
from ecliptic.store.workqueue import WorkQueue
from tests.conftest import migrated_sqlite
from tests.services.conftest import MemoryBackend
from tests.services.test_leases import HOSTS

T0 = datetime(2027, 3, 1, 9, 0, tzinfo=UTC)
EXAMPLES = int(os.environ.get("ECLIPTIC_PROPERTY_EXAMPLES", "300"))
"""300 under ``make test``; set higher to search longer (say 3000 overnight)."""
RANDOM = os.environ.get("ECLIPTIC_PROPERTY_RANDOM") == "1"
"""``make test`` runs the same examples every time (a red CI is a regression, not luck);
``ECLIPTIC_PROPERTY_RANDOM=1`` searches new ones (with more examples, to hunt bugs)."""
FLAVORS = ["m1.small", "m1.large", "m1.xlarge", "g1.a100"]

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
        lambda n, p, f: (
            {"kind": "gpu_slice", "profile": p, "count": n} | ({"flavor": f} if f else {})
        ),
        st.integers(1, 10),
        st.sampled_from(["1g.10gb", "3g.40gb"]),
        st.sampled_from([None, "m1.small", "m1.large"]),
    ),
)
lease_ref = st.integers(0, 20)
ARGUMENTS = {
    "create": st.tuples(reservation, st.just(0) | st.integers(1, 72), st.integers(1, 48)),
    "extend": st.tuples(lease_ref, st.integers(1, 24)),
    "shorten": st.tuples(lease_ref, st.integers(1, 12)),
    "move": st.tuples(lease_ref, st.integers(0, 72)),
    "resize": st.tuples(lease_ref, st.integers(1, 8)),
    "end": st.tuples(lease_ref),
    "server": st.tuples(
        st.sampled_from(["on-demand", "preemptible", "lease", "lease"]),
        lease_ref,
        st.sampled_from(FLAVORS),
    ),
    "delete": st.tuples(st.integers(0, 30)),
    "host": st.tuples(st.sampled_from([h.name for h in HOSTS]), st.booleans()),
    "tick": st.tuples(st.sampled_from([5, 30, 60, 240, 1440])),
}
# Drawn by name first, so every kind of operation comes up about as often as its weight
# (``one_of`` favours its first branches).
WEIGHTS = {"create": 3, "server": 3, "tick": 2, "delete": 1, "host": 1}
op = st.sampled_from([k for k in ARGUMENTS for _ in range(WEIGHTS.get(k, 1))]).flatmap(
    lambda k: ARGUMENTS[k].map(lambda a: (k, *a))
)


class World:
    """One tenancy with credits, three hosts, a clock and the reconcilers."""

    def __init__(self, folder: Path) -> None:
        self.db = Database(migrated_sqlite(folder / "db.sqlite"))
        self.clock = ManualClock(T0)
        with self.db.write() as s:
            seed_flavors(s)
            sync_inventory(s, HOSTS)
        self.root = Caller("root", "root", True)
        u = create_user(self.db, None, "alice", None)
        t = create_tenancy(self.db, self.root, "physics")
        self.tenancy_id = t.id
        set_membership(self.db, self.root, "physics", "alice", "member")
        with self.db.write() as s:
            for rc in ("host:A100", "host:cpu", "gpu:A100", "vcpu", "slice:1g.10gb"):
                credits.grant(s, t.id, "grant", rc, Decimal(400), T0, T0 + timedelta(days=90))
            credits.grant(
                s, t.id, "grant", "slice:3g.40gb", Decimal(400), T0, T0 + timedelta(days=90)
            )
        self.booking = Booking(self.db, self.clock, min_preemptible_lifetime=timedelta(hours=1))
        self.queue = WorkQueue(self.db, self.clock)
        self.backend = MemoryBackend()
        self.ctx = Context(self.db, self.backend, self.queue, self.booking)  # type: ignore[arg-type]
        self.workers = Workers(self.ctx)
        self.alice = Caller(u.id, "alice", False, t.id, "physics", "member")
        self.leases: list[str] = []
        self.servers: list[str] = []

    def lease(self, i: int) -> str | None:
        return self.leases[i % len(self.leases)] if self.leases else None

    def active_lease(self, i: int) -> str | None:
        with self.db.read() as s:
            names = list(
                s.scalars(
                    select(Lease.name)
                    .where(Lease.phase == LeasePhase.ACTIVE)
                    .order_by(Lease.created_at, Lease.name)
                )
            )
        return names[i % len(names)] if names else None

    def settle(self) -> None:
        """What the workers do while time passes: every due item, every lease looked at."""
        for _ in range(4):
            self.workers.drain()
            with self.db.read() as s:
                ids = list(s.scalars(select(Lease.id).where(Lease.phase != LeasePhase.ENDED)))
            for lease_id in ids:
                reconcile_lease(self.ctx, lease_id)
        self.workers.drain()

    def do(self, step: int, o: tuple[Any, ...]) -> None:
        b, q, alice = self.booking, self.queue, self.alice
        kind = o[0]
        if kind == "create":
            _, res, offset_h, hours = o
            start = self.clock.now() + timedelta(hours=offset_h) if offset_h else "now"
            body = {"name": f"l{step}", "start": start, "duration": f"{hours}h"}
            leases.create_lease(
                b, q, alice, LeaseCreate.model_validate(body | {"reservations": [res]})
            )
            self.leases.append(f"l{step}")
            event(f"created a {res['kind']} lease")
        elif kind in ("extend", "shorten") and (name := self.lease(o[1])):
            leases.update_lease(b, q, alice, name, LeaseUpdate.model_validate({kind: f"{o[2]}h"}))
            event(f"{kind}ed a lease")
        elif kind == "move" and (name := self.lease(o[1])):
            start = self.clock.now() + timedelta(hours=o[2])
            leases.update_lease(b, q, alice, name, LeaseUpdate(start=start))
            event("moved a lease")
        elif kind == "resize" and (name := self.lease(o[1])):
            lease = leases.get_lease(b, alice, name)
            rname = lease.spec["reservations"][0]["name"]
            body = {"reservations": [{"name": rname, "count": o[2]}]}
            leases.update_lease(b, q, alice, name, LeaseUpdate.model_validate(body))
            event("resized a lease")
        elif kind == "end" and (name := self.lease(o[1])):
            leases.end_lease(b, q, alice, name)
            event("ended a lease")
        elif kind == "server":
            _, where, i, flavor = o
            name = f"s{step}"
            if where == "on-demand":
                servers.create_server(b, q, alice, name, flavor, [])
            elif where == "preemptible":
                servers.create_server(b, q, alice, name, flavor, [], preemptible=True)
            elif lease := self.active_lease(i):
                servers.create_server(b, q, alice, name, flavor, [], lease=lease)
            else:
                return
            self.servers.append(name)
            event(f"created a server ({where})")
        elif kind == "delete" and self.servers:
            servers.delete_server(self.db, q, alice, self.servers[o[1] % len(self.servers)])
            event("deleted a server")
        elif kind == "host":
            leases.set_host_state(b, q, self.root, o[1], "up" if o[2] else "down")
        elif kind == "tick":
            self.clock.advance(timedelta(minutes=o[1]))
            self.settle()


def _live(items: list[tuple[datetime, datetime, Any]], t: datetime) -> list[Any]:
    return [x for s, e, x in items if s <= t < e]


def check_invariants(w: World) -> None:
    now = w.booking.now()
    with w.db.read() as s:
        for b in credits.balances(s, w.tenancy_id):
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
        live_leases = list(s.scalars(select(Lease).where(Lease.phase != LeasePhase.ENDED)))
        all_servers = list(s.scalars(select(Server).where(Server.host_id.is_not(None))))

        # Booked: lease allocations until the end of their grace, on-demand servers forever.
        booked: dict[str, list[tuple[datetime, datetime, Any]]] = defaultdict(list)
        for lease in live_leases:
            until = held_until(lease.end_at, lease.grace_s)
            if until <= lease.start_at:
                continue
            for a in lease.allocations:
                booked[a.host].append(
                    (lease.start_at, until, (lease.id, amount_from_json(a.amount)))
                )
        for srv in all_servers:
            if srv.lease_id is None and not srv.preemptible:
                amount = servers.server_amount(srv)
                booked[srv.host.name].append(
                    (srv.created_at.replace(second=0, microsecond=0), FOREVER, ("server", amount))
                )
        for name, items in booked.items():
            h = hosts[name]
            gpus = sum(int(g["count"]) for g in h.gpus)
            for t in sorted({s0 for s0, _, _ in items} | {now}):
                live = _live(items, t)
                amounts = [a for _, a in live]
                if any(a.whole_host for a in amounts):
                    assert len(live) == 1, ("a whole host shared", name, t, live)
                    continue
                assert sum(a.vcpus for a in amounts) <= h.vcpus, ("vCPUs", name, t, live)
                assert sum(a.memory_mb for a in amounts) <= h.memory_mb, ("memory", name, t, live)
                assert sum(n for a in amounts for _, n in a.gpus) <= gpus, ("GPUs", name, t, live)
                units = sum(n for a in amounts for _, n in a.gpu_units)
                assert units <= 7 * gpus, ("GPU units", name, t, live)

        # Really there now: every server that is not on its way out, whatever holds it.
        on_host: dict[str, list[Server]] = defaultdict(list)
        for srv in all_servers:
            if srv.phase != ServerPhase.DELETING:
                on_host[srv.host.name].append(srv)
        whole_now = {
            a.host: lease.id
            for lease in live_leases
            if lease.phase == LeasePhase.ACTIVE
            for a in lease.allocations
            if amount_from_json(a.amount).whole_host
        }
        for name, here in on_host.items():
            h = hosts[name]
            assert sum(x.vcpus for x in here) <= h.vcpus, ("vCPUs now", name, here)
            assert sum(x.memory_mb for x in here) <= h.memory_mb, ("memory now", name, here)
            assert sum(x.gpus for x in here) <= sum(int(g["count"]) for g in h.gpus)
            if name in whole_now:
                strangers = [x.name for x in here if x.lease_id != whole_now[name]]
                assert not strangers, ("on a host another lease holds whole", name, strangers)

        # Inside a lease: on a host of the server's reservation, within what it booked there.
        for lease in live_leases:
            kinds = {r["name"]: r["kind"] for r in lease.spec["reservations"]}
            for a in lease.allocations:
                inside = [
                    x
                    for x in all_servers
                    if x.lease_id == lease.id
                    and x.reservation == a.reservation
                    and x.host.name == a.host
                    and x.phase != ServerPhase.DELETING
                ]
                if kinds[a.reservation] != "host":
                    assert len(inside) <= a.slots, ("slots", lease.name, a.host, inside)
                if kinds[a.reservation] == "gpu_slice":
                    amount = amount_from_json(a.amount)
                    assert sum(x.vcpus for x in inside) <= amount.vcpus
                    assert sum(x.memory_mb for x in inside) <= amount.memory_mb
            places = {(a.reservation, a.host) for a in lease.allocations}
            if lease.phase == LeasePhase.ACTIVE:
                for x in all_servers:
                    if x.lease_id == lease.id and x.phase != ServerPhase.DELETING:
                        assert (x.reservation, x.host.name) in places, (
                            "strayed",
                            lease.name,
                            x.name,
                        )
        rebuilt = build_engine(s, timedelta(hours=1))
    with w.booking.reading() as engine:
        assert engine.snapshot() == rebuilt.snapshot()


@settings(
    max_examples=EXAMPLES,
    derandomize=not RANDOM,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(op, min_size=1, max_size=16))
def test_random_operations_keep_every_promise(ops: list[tuple[Any, ...]]) -> None:
    folder = Path(tempfile.mkdtemp(prefix="ecl-prop-"))
    w = World(folder)
    try:
        for step, o in enumerate(ops):
            try:
                w.do(step, o)
            except EclipticError as exc:
                # A refusal is a fine answer; the invariants must hold either way.
                event(f"refused: {exc.code}")
            w.workers.drain()  # the workers run all the time, not only when time passes
            try:
                check_invariants(w)
            except AssertionError as exc:
                raise AssertionError(f"after step {step} of {ops!r}") from exc
    finally:
        w.db.dispose()
        shutil.rmtree(folder, ignore_errors=True)
