"""The Blazar-style first-fit baseline behaves like Blazar; best-fit beats it where it should."""

from __future__ import annotations

from ecliptic.scheduler.baseline import FirstFit
from ecliptic.scheduler.engine import Engine
from ecliptic.scheduler.model import FlavorRequest, HostRequest, NoFit, Placement, SliceRequest
from tests.scheduler.factories import at, cpu, gpu, hours


def placed(result: Placement | NoFit) -> Placement:
    assert isinstance(result, Placement), result
    return result


def test_first_fit_takes_hosts_in_order_preferring_never_allocated_ones() -> None:
    ff = FirstFit([cpu("c0"), cpu("c1"), cpu("c2")])
    ff.book("later", placed(ff.fit("later", [HostRequest("h", 1, 1)], at(10), at(12))))
    assert ff.booking("later") is not None and ff.booking("later").hosts() == ["c0"]  # type: ignore[union-attr]
    # c0 is free at 0-2 but has a future allocation: Blazar takes untouched hosts first.
    assert placed(ff.fit("x", [HostRequest("h", 1, 1)], at(0), at(2))).hosts() == ["c1"]
    ff.release("later")
    assert placed(ff.fit("x", [HostRequest("h", 1, 1)], at(0), at(2))).hosts() == ["c0"]


def test_first_fit_fills_hosts_in_order() -> None:
    ff = FirstFit([cpu("c0", 32), cpu("c1", 16)])
    p = placed(ff.fit("a", [FlavorRequest("s", 1, 16, 1024)], at(0), at(4)))
    assert p.hosts() == ["c0"]


def test_best_fit_keeps_the_big_host_whole_where_first_fit_does_not() -> None:
    hosts = [cpu("c0", 32), cpu("c1", 16)]
    small = [FlavorRequest("s", 1, 16, 1024)]
    big = [HostRequest("h", 1, 1, "vcpus >= 32")]
    for sched, expect_big in ((Engine(hosts), True), (FirstFit(hosts), False)):
        sched.book("small", placed(sched.fit("small", small, at(0), at(4))))
        got = sched.fit("big", big, at(1), at(3))
        assert isinstance(got, Placement) is expect_big


def test_first_fit_earliest_steps_by_the_hour() -> None:
    hosts = [cpu("c0")]
    ff, eng = FirstFit(hosts), Engine(hosts)
    for sched in (ff, eng):
        sched.book("a", placed(sched.fit("a", [HostRequest("h", 1, 1)], at(0), at(2.25))))
    want = [HostRequest("h", 1, 1)]
    assert [w.start for w in ff.earliest(want, hours(1), at(0), hours(24), 1)] == [at(3), at(4)]
    assert [w.start for w in eng.earliest(want, hours(1), at(0), hours(24), 1)] == [
        at(2.25),
        at(3.25),
    ]


def test_first_fit_slices_take_the_first_gpu_with_room() -> None:
    ff = FirstFit([gpu("g", 2)])
    ff.book("a", placed(ff.fit("a", [SliceRequest("s", 1, "3g.40gb")], at(0), at(1))))
    p = placed(ff.fit("b", [SliceRequest("s", 2, "4g.40gb")], at(0), at(1)))
    assert p.allocations[0].amount.gpu_units == ((0, 4), (1, 4))  # a 4g fits beside the 3g
    assert isinstance(ff.fit("c", [SliceRequest("s", 3, "4g.40gb")], at(0), at(1)), NoFit)


def test_refit_of_own_lease_and_affinity() -> None:
    ff = FirstFit([cpu("c0", 8), cpu("c1", 8)])
    ff.book(
        "a",
        placed(ff.fit("a", [FlavorRequest("s", 2, 4, 1024, affinity="affinity")], at(0), at(1))),
    )
    assert isinstance(ff.fit("a", [FlavorRequest("s", 2, 4, 1024)], at(0), at(1)), Placement)
    apart = [FlavorRequest("s", 2, 4, 1024, affinity="anti-affinity")]
    assert isinstance(ff.fit("b", apart, at(0), at(1)), NoFit)  # c0 is full
    assert placed(ff.fit("b", apart, at(1), at(2))).hosts() == ["c0", "c1"]
