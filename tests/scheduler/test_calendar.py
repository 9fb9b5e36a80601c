"""calendar: capacity and reservations per resource class, summed over hosts, per bucket."""

from __future__ import annotations

from datetime import UTC, datetime

from ecliptic.scheduler.engine import Engine
from ecliptic.scheduler.model import (
    CalendarRow,
    FlavorRequest,
    HostInfo,
    HostRequest,
    NoFit,
    Placement,
    SliceRequest,
)
from tests.scheduler.factories import at, cpu, gpu, hours


def placed(result: Placement | NoFit) -> Placement:
    assert isinstance(result, Placement), result
    return result


def rows(cal: list[CalendarRow]) -> dict[str, list[tuple[int, int]]]:
    return {r.resource: [(b.total, b.reserved) for b in r.buckets] for r in cal}


def test_rows_and_sums() -> None:
    eng = Engine([cpu("c1", 32), cpu("c2", 32), gpu("g1", 2), gpu("g2", 1, "H100", mig=False)])
    eng.book("h", placed(eng.fit("h", [HostRequest("h", 1, 1, 'name == "c1"')], at(0), at(2))))
    slots = [FlavorRequest("s", 2, 4, 1024, filter="not gpu_model")]
    eng.book("f", placed(eng.fit("f", slots, at(1), at(3))))
    eng.book("s", placed(eng.fit("s", [SliceRequest("s", 3, "2g.20gb")], at(0.5), at(1))))
    cal = eng.calendar(at(0), at(4), hours(1))
    assert [r.resource for r in cal] == [
        "hosts:cpu",
        "hosts:gpu",
        "gpu:A100",
        "gpu:H100",
        "slice:A100:1g.10gb",
        "slice:A100:2g.20gb",
        "slice:A100:3g.40gb",
        "slice:A100:4g.40gb",
        "slice:A100:7g.80gb",
        "vcpu",
    ]
    got = rows(cal)
    assert [b.start for b in cal[0].buckets] == [at(0), at(1), at(2), at(3)]
    assert got["hosts:cpu"] == [(2, 1), (2, 2), (2, 1), (2, 0)]
    # The slices book their share of g1's vCPUs: 6 of its 14 GPU units, 27 of 64 vCPU.
    assert got["vcpu"] == [(192, 32 + 27), (192, 40), (192, 8), (192, 0)]
    # 3 x 2g on one 7-unit GPU: 6 units used, the GPU is in use.
    assert got["gpu:A100"] == [(2, 1), (2, 0), (2, 0), (2, 0)]
    assert got["slice:A100:2g.20gb"] == [(6, 3), (6, 0), (6, 0), (6, 0)]
    assert got["slice:A100:1g.10gb"] == [(14, 6), (14, 0), (14, 0), (14, 0)]
    assert got["slice:A100:4g.40gb"] == [(2, 1), (2, 0), (2, 0), (2, 0)]
    assert got["gpu:H100"] == [(1, 0)] * 4


def test_reserved_is_the_busiest_moment_of_the_bucket() -> None:
    eng = Engine([cpu(f"c{i}") for i in range(3)])
    for i, (s, e) in enumerate([(0, 1), (1, 2), (0.25, 0.5)]):
        eng.book(f"l{i}", placed(eng.fit(f"l{i}", [HostRequest("h", 1, 1)], at(s), at(e))))
    got = rows(eng.calendar(at(0), at(2), hours(2)))
    assert got["hosts:cpu"] == [(3, 2)]  # never 3 at once
    got = rows(eng.calendar(at(0), at(1.25), hours(0.25)))
    assert got["hosts:cpu"] == [(3, 1), (3, 2), (3, 1), (3, 1), (3, 1)]


def test_down_hosts_leave_the_calendar() -> None:
    eng = Engine([cpu("c1", 8), cpu("c2", 8)])
    eng.book("l", placed(eng.fit("l", [HostRequest("h", 1, 1, 'name == "c1"')], at(0), at(1))))
    eng.set_host(HostInfo("c1", 8, 262144, 1000, up=False))
    assert rows(eng.calendar(at(0), at(1), hours(1)))["hosts:cpu"] == [(1, 0)]
    eng.set_host(HostInfo("c1", 8, 262144, 1000, up=True))
    assert rows(eng.calendar(at(0), at(1), hours(1)))["hosts:cpu"] == [(2, 1)]


def test_open_ended_bookings_are_cheap() -> None:
    # On-demand servers are booked until the year 9999.
    eng = Engine([cpu("c1", 8)])
    forever = datetime(9999, 1, 1, tzinfo=UTC)
    eng.book(
        "srv",
        Placement(
            at(0),
            forever,
            placed(eng.fit("srv", [FlavorRequest("s", 1, 2, 512)], at(0), forever)).allocations,
        ),
    )
    got = rows(eng.calendar(at(-1), at(24 * 365 * 3 - 1), hours(24 * 365)))
    assert got["vcpu"] == [(8, 2), (8, 2), (8, 2)]
    assert rows(eng.calendar(at(-2), at(-1), hours(1)))["vcpu"] == [(8, 0)]
