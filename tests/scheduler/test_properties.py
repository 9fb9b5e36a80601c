"""Random sequences of book / release / host down / what a host serves / preemptibles / time
never overbook a host nor place work on a host that does not serve it,
``earliest`` never skips a start where the lease fits, and an engine rebuilt from its bookings
is identical to the one that made them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from hypothesis import event, given, settings
from hypothesis import strategies as st

from ecliptic.scheduler.engine import Engine
from ecliptic.scheduler.model import (
    Amount,
    FlavorRequest,
    HostInfo,
    HostRequest,
    Placement,
    Preemptible,
    Request,
    SliceRequest,
)
from ecliptic.scheduler.resources import UNITS_PER_GPU, profile_units
from tests.scheduler.factories import T0, cpu, gpu

Q = timedelta(minutes=15)
HOSTS = [
    cpu("c0", 16, rack="r1"),
    cpu("c1", 16, rack="r1"),
    cpu("c2", 32, rack="r2"),
    gpu("g0", 2, rack="r1"),
    gpu("g1", 2, "H100", rack="r2"),
    gpu("l0", 2, "L40S", mig=False, rack="r2"),
]
LIFE = timedelta(hours=1)

requests = st.one_of(
    st.builds(
        lambda lo, extra, f: [HostRequest("h", lo, lo + extra, f)],
        st.integers(1, 3),
        st.integers(0, 2),
        st.sampled_from(["", 'rack == "r1"', "rdma", "not rdma", 'gpu_model in ["A100", "H100"]']),
    ),
    st.builds(
        lambda n, v, aff, gpus: [
            FlavorRequest("f", n, v, 1024 * v, affinity=aff, gpus=gpus, gpu_model=None)
        ],
        st.integers(1, 4),
        st.sampled_from([1, 2, 4, 8]),
        st.sampled_from(["none", "affinity", "anti-affinity"]),
        st.sampled_from([0, 0, 1, 2]),
    ),
    st.builds(
        lambda n, p, m: [SliceRequest("s", n, p, m)],
        st.integers(1, 6),
        st.sampled_from(["1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"]),
        st.sampled_from([None, "A100", "H100"]),
    ),
    st.builds(
        lambda n, p: [HostRequest("h", 1, 1, "not gpu_model"), SliceRequest("s", n, p)],
        st.integers(1, 3),
        st.sampled_from(["1g.10gb", "3g.40gb"]),
    ),
)

ops = st.lists(
    st.one_of(
        st.tuples(st.just("book"), requests, st.integers(0, 24), st.integers(1, 16)),
        st.tuples(st.just("book"), requests, st.integers(0, 24), st.integers(1, 16)),
        st.tuples(st.just("release"), st.integers(0, 50)),
        st.tuples(st.just("refit"), st.integers(0, 50)),
        st.tuples(st.just("down"), st.integers(0, len(HOSTS) - 1)),
        st.tuples(st.just("up"), st.integers(0, len(HOSTS) - 1)),
        st.tuples(
            st.just("serves"),
            st.integers(0, len(HOSTS) - 1),
            st.sampled_from(["any", "vm", "baremetal"]),
        ),
        st.tuples(st.just("pre"), st.integers(0, len(HOSTS) - 1), st.integers(0, 40)),
        st.tuples(st.just("unpre"), st.integers(0, 50)),
        st.tuples(st.just("earliest"), requests, st.integers(0, 24), st.integers(1, 12)),
    ),
    min_size=5,
    max_size=30,
)


def check_capacity(eng: Engine) -> None:
    """No host over capacity at any instant, computed from the bookings alone."""
    hosts = {h.name: h for h in HOSTS}
    per_host: dict[str, list[tuple[datetime, datetime, Amount]]] = {}
    for p in eng.bookings().values():
        for a in p.allocations:
            per_host.setdefault(a.host, []).append((p.start, p.end, a.amount))
    for name, rows in per_host.items():
        info = hosts[name]
        ngpus = sum(g.count for g in info.gpus)
        for t in {r[0] for r in rows}:
            live = [amount for s, e, amount in rows if s <= t < e]
            if any(x.whole_host for x in live):
                assert len(live) == 1, f"{name} held whole and shared at {t}"
                continue
            assert sum(x.vcpus for x in live) <= info.vcpus
            assert sum(x.memory_mb for x in live) <= info.memory_mb
            assert sum(x.disk_gb for x in live) <= info.disk_gb
            units: dict[int, int] = {}
            for x in live:
                for i, u in x.gpu_units:
                    assert 0 <= i < ngpus
                    units[i] = units.get(i, 0) + u
                whole = sum(n for _, n in x.gpus)
                sliced = sum(n * profile_units(k.split(":")[1]) for k, n in x.slices)
                assert sum(u for _, u in x.gpu_units) == whole * UNITS_PER_GPU + sliced
            assert all(u <= UNITS_PER_GPU for u in units.values()), (name, t, units)


def check_serves(eng: Engine, placement: Placement) -> None:
    """No allocation on a host whose ``serves`` excludes its kind (whole host or slots)."""
    for a in placement.allocations:
        serves = eng.hosts[a.host].serves
        assert serves != ("vm" if a.amount.whole_host else "baremetal"), (a, serves)


def run(eng: Engine, steps: Sequence[tuple[object, ...]]) -> dict[str, list[Request]]:
    leases: dict[str, list[Request]] = {}
    names = [h.name for h in HOSTS]
    n = 0
    for step in steps:
        kind = step[0]
        if kind == "book":
            _, reqs, s, d = step
            assert isinstance(reqs, list) and isinstance(s, int) and isinstance(d, int)
            n += 1
            got = eng.fit(f"L{n}", reqs, T0 + s * Q, T0 + (s + d) * Q)
            if isinstance(got, Placement):
                check_serves(eng, got)
                eng.book(f"L{n}", got)
                leases[f"L{n}"] = reqs
            event("book fits" if isinstance(got, Placement) else "book refused")
        elif kind in ("release", "refit") and leases:
            i = step[1]
            assert isinstance(i, int)
            lid = sorted(leases)[i % len(leases)]
            if kind == "release":
                eng.release(lid)
                del leases[lid]
            else:
                old = eng.booking(lid)
                assert old is not None
                got = eng.fit(lid, leases[lid], old.start, old.end)
                if isinstance(got, Placement):
                    check_serves(eng, got)
                    eng.book(lid, got)
        elif kind in ("down", "up"):
            i = step[1]
            assert isinstance(i, int)
            eng.set_host(replace(eng.hosts[names[i]], up=kind == "up"))
        elif kind == "serves":
            _, i, serves = step
            assert isinstance(i, int) and serves in ("any", "vm", "baremetal")
            eng.set_host(replace(eng.hosts[names[i]], serves=serves))
        elif kind == "pre":
            _, i, s = step
            assert isinstance(i, int) and isinstance(s, int)
            n += 1
            gpus = (("A100", 1),) if names[i] == "g0" else ()
            eng.add_preemptible(
                Preemptible(
                    f"P{n}", names[i], Amount(vcpus=2, memory_mb=512, gpus=gpus), T0 + s * Q
                )
            )
        elif kind == "unpre" and eng.preemptibles():
            i = step[1]
            assert isinstance(i, int)
            pres = eng.preemptibles()
            eng.remove_preemptible(pres[i % len(pres)].server_id)
        elif kind == "earliest":
            _, reqs, s, d = step
            assert isinstance(reqs, list) and isinstance(s, int) and isinstance(d, int)
            check_earliest(eng, reqs, s, d)
    return leases


def check_earliest(eng: Engine, reqs: list[Request], s: int, d: int) -> None:
    """The first window is the first quarter hour (everything is on that grid) where fit works."""
    horizon = 48
    windows = eng.earliest(reqs, d * Q, T0 + s * Q, horizon * Q, alternatives=2)
    first = next(
        (
            k
            for k in range(s, s + horizon - d + 1)
            if isinstance(eng.fit(None, reqs, T0 + k * Q, T0 + (k + d) * Q), Placement)
        ),
        None,
    )
    event("earliest: none" if first is None else f"earliest: +{first - s}")
    if first is None:
        assert windows == []
        return
    assert windows and windows[0].start == T0 + first * Q
    for w in windows:
        assert isinstance(eng.fit(None, reqs, w.start, w.end), Placement)
        check_serves(eng, w.placement)
    assert all(b.start - a.start >= timedelta(hours=1) for a, b in itertools.pairwise(windows))


@settings(max_examples=300, deadline=None)
@given(ops)
def test_random_sequences_never_overbook_and_rebuild_identically(
    steps: list[tuple[object, ...]],
) -> None:
    eng = Engine(HOSTS, min_preemptible_lifetime=LIFE)
    run(eng, steps)
    check_capacity(eng)
    snap = eng.snapshot()
    hosts: list[HostInfo] = list(eng.hosts.values())
    bulk = Engine.rebuild(hosts, eng.bookings(), eng.preemptibles(), min_preemptible_lifetime=LIFE)
    assert bulk.snapshot() == snap
    one_by_one = Engine(hosts, min_preemptible_lifetime=LIFE)
    for lid, p in sorted(eng.bookings().items()):
        one_by_one.book(lid, p)
    for server in eng.preemptibles():
        one_by_one.add_preemptible(server)
    assert one_by_one.snapshot() == snap
    # Releasing everything leaves nothing behind in any index.
    for lid in list(eng.bookings()):
        eng.release(lid)
    empty = eng.snapshot()
    assert empty["timelines"] == {} and all(v == [] for v in empty["calendar"].values())


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(requests, st.integers(0, 24), st.integers(4, 24)), min_size=8, max_size=20),
    st.lists(st.tuples(requests, st.integers(0, 12), st.integers(1, 12)), min_size=1, max_size=4),
    st.lists(st.tuples(st.integers(0, len(HOSTS) - 1), st.integers(0, 8)), max_size=3),
)
def test_earliest_never_skips_a_start_in_a_crowded_pool(
    bookings: list[tuple[list[Request], int, int]],
    queries: list[tuple[list[Request], int, int]],
    preemptibles: list[tuple[int, int]],
) -> None:
    steps: list[tuple[object, ...]] = [("book", r, s, d) for r, s, d in bookings]
    steps += [("pre", i, s) for i, s in preemptibles]
    steps += [("earliest", r, s, d) for r, s, d in queries]
    eng = Engine(HOSTS, min_preemptible_lifetime=LIFE)
    run(eng, steps)
    check_capacity(eng)
