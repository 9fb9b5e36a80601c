"""earliest: the first window where the whole lease fits, and genuinely different alternatives."""

from __future__ import annotations

import itertools
from datetime import timedelta

from ecliptic.scheduler.engine import Engine
from ecliptic.scheduler.model import (
    FlavorRequest,
    HostRequest,
    NoFit,
    Placement,
    Request,
    SliceRequest,
)
from tests.scheduler.factories import at, cpu, gpu, hours


def placed(result: Placement | NoFit) -> Placement:
    assert isinstance(result, Placement), result
    return result


def book_host(eng: Engine, lease: str, host: str, start: float, end: float) -> None:
    req = [HostRequest("h", 1, 1, f'name == "{host}"')]
    eng.book(lease, placed(eng.fit(lease, req, at(start), at(end))))


def test_three_of_four_free_now_waits_for_the_fourth() -> None:
    eng = Engine([cpu(f"c{i}", rack="r1") for i in range(4)] + [cpu("other", rack="r2")])
    book_host(eng, "busy", "c2", 0, 5.25)  # frees at 05:15 after T0
    want = [HostRequest("h", 4, 4, 'rack == "r1"')]
    windows = eng.earliest(want, hours(3), at(0), timedelta(days=2))
    assert windows[0].start == at(5.25)
    assert windows[0].placement.hosts() == ["c0", "c1", "c2", "c3"]
    starts = [w.start for w in windows]
    assert len(starts) == 4 and len(set(starts)) == 4 and starts == sorted(starts)
    assert all(b - a >= hours(1) for a, b in itertools.pairwise(starts))
    # Every window really fits.
    for w in windows:
        assert isinstance(eng.fit("new", want, w.start, w.end), Placement)


def test_earliest_is_now_when_it_fits_now() -> None:
    eng = Engine([cpu("c1")])
    (w,) = eng.earliest([HostRequest("h", 1, 1)], hours(1), at(0), hours(10), alternatives=0)
    assert w.start == at(0) and w.end == at(1)


def test_a_gap_too_short_is_skipped() -> None:
    eng = Engine([cpu("c1")])
    book_host(eng, "a", "c1", 1, 3)
    book_host(eng, "b", "c1", 4, 6)  # a one-hour gap at 3h: too short for 2h
    windows = eng.earliest([HostRequest("h", 1, 1)], hours(2), at(1.5), hours(20), alternatives=1)
    assert [w.start for w in windows] == [at(6), at(7)]
    windows = eng.earliest([HostRequest("h", 1, 1)], hours(1), at(0), hours(20), alternatives=2)
    assert [w.start for w in windows] == [at(0), at(3), at(6)]


def test_horizon_bounds_the_search() -> None:
    eng = Engine([cpu("c1")])
    book_host(eng, "a", "c1", 0, 10)
    assert eng.earliest([HostRequest("h", 1, 1)], hours(2), at(0), hours(11)) == []
    (w,) = eng.earliest([HostRequest("h", 1, 1)], hours(2), at(0), hours(12), alternatives=5)
    assert w.start == at(10) and w.end == at(12)


def test_never_fits_returns_nothing_quickly() -> None:
    eng = Engine([cpu("c1")])
    assert eng.earliest([HostRequest("h", 2, 2)], hours(1), at(0), timedelta(days=90)) == []
    assert eng.earliest([HostRequest("h", 1, 1, "vcpus > 999")], hours(1), at(0), hours(9)) == []


def test_flavors_and_slices_wait_for_room() -> None:
    eng = Engine([cpu("c1", 16), gpu("g", 1)])
    eng.book("cpu", placed(eng.fit("cpu", [FlavorRequest("s", 3, 4, 1024)], at(0), at(2))))
    eng.book("gpu", placed(eng.fit("gpu", [SliceRequest("s", 2, "3g.40gb")], at(0), at(3.5))))
    lease: list[Request] = [FlavorRequest("s", 2, 4, 1024), SliceRequest("x", 2, "2g.20gb")]
    (w,) = eng.earliest(lease, hours(1), at(0), hours(24), alternatives=0)
    assert w.start == at(3.5)
    (w,) = eng.earliest(
        [FlavorRequest("s", 4, 4, 1024, filter="not rdma")], hours(1), at(0), hours(24), 0
    )
    assert w.start == at(2)


def test_mixed_lease_with_competing_reservations() -> None:
    # The head and the workers both want CPU hosts: the sweep alone would say "3 free";
    # the real placement needs 3 distinct ones, which only exist once c3 frees up.
    eng = Engine([cpu(f"c{i}") for i in range(4)])
    book_host(eng, "x", "c3", 0, 4)
    book_host(eng, "y", "c2", 0, 2)
    lease = [HostRequest("head", 1, 1), HostRequest("workers", 3, 3)]
    (w,) = eng.earliest(lease, hours(1), at(0), hours(24), alternatives=0)
    assert w.start == at(4)
