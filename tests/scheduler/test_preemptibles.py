"""Preemptible servers: minimum lifetime, victims with the least work lost, backfill room."""

from __future__ import annotations

from datetime import timedelta

from ecliptic.scheduler.engine import Engine
from ecliptic.scheduler.model import (
    Amount,
    FlavorRequest,
    HostRequest,
    NoFit,
    Placement,
    Preemptible,
    SliceRequest,
)
from tests.scheduler.factories import at, cpu, gpu, hours


def placed(result: Placement | NoFit) -> Placement:
    assert isinstance(result, Placement), result
    return result


def pre(sid: str, host: str, vcpus: int, started: float, **kw: object) -> Preemptible:
    return Preemptible(sid, host, Amount(vcpus=vcpus, memory_mb=1024, **kw), at(started))  # type: ignore[arg-type]


def test_minimum_lifetime_blocks_fit_with_the_earliest_start() -> None:
    eng = Engine([cpu("c1", 16)], min_preemptible_lifetime=hours(1))
    eng.add_preemptible(pre("p1", "c1", 8, started=0))
    eng.add_preemptible(pre("p2", "c1", 4, started=0.5))
    whole = [HostRequest("h", 1, 1)]
    refused = eng.fit("l", whole, at(0.75), at(3))
    assert isinstance(refused, NoFit) and refused.earliest_start == at(1.5)
    assert "minimum lifetime" in refused.reason
    assert isinstance(eng.fit("l", whole, at(1.5), at(3)), Placement)
    # A lease that fits beside them is not blocked at all.
    assert isinstance(eng.fit("l", [FlavorRequest("s", 1, 4, 1024)], at(0.75), at(3)), Placement)
    # earliest() never offers a start inside a minimum lifetime either.
    (w,) = eng.earliest(whole, hours(1), at(0.75), hours(10), alternatives=0)
    assert w.start == at(1.5)


def test_no_preemptible_means_no_earliest_start() -> None:
    eng = Engine([cpu("c1")])
    eng.book("a", placed(eng.fit("a", [HostRequest("h", 1, 1)], at(0), at(2))))
    refused = eng.fit("b", [HostRequest("h", 1, 1)], at(1), at(3))
    assert isinstance(refused, NoFit) and refused.earliest_start is None


def test_victims_free_exactly_enough_youngest_first() -> None:
    eng = Engine([cpu("c1", 16), cpu("c2", 16)], min_preemptible_lifetime=hours(1))
    for sid, vcpus, started in [("old", 4, 0), ("mid", 4, 1), ("young", 4, 2), ("baby", 2, 4.5)]:
        eng.add_preemptible(pre(sid, "c1", vcpus, started))
    eng.add_preemptible(pre("elsewhere", "c2", 8, started=0))
    # 14 vCPUs of preemptibles on c1; a lease of 8 vCPUs at 5h needs 6 of them to go.
    lease = placed(
        eng.fit("l", [FlavorRequest("s", 1, 8, 1024, filter='name == "c1"')], at(5), at(8))
    )
    eng.book("l", lease)
    victims = eng.victims(lease, at(5))
    # "baby" (2) is inside its minimum lifetime; the youngest others are "young" then "mid".
    assert victims == ["young", "mid"]
    # The same question with the placement not booked gives the same answer.
    eng.release("l")
    assert eng.victims(lease, at(5)) == ["young", "mid"]


def test_victims_never_more_than_needed() -> None:
    eng = Engine([cpu("c1", 16)], min_preemptible_lifetime=hours(1))
    eng.add_preemptible(pre("big", "c1", 8, started=0))
    eng.add_preemptible(pre("small", "c1", 2, started=1))  # youngest, but too small alone
    lease = placed(eng.fit("l", [FlavorRequest("s", 1, 12, 1024)], at(3), at(4)))
    # Greedy youngest-first takes "small" then "big"; "small" turns out not to be needed.
    assert eng.victims(lease, at(3)) == ["big"]


def test_a_whole_host_lease_stops_everything_on_its_hosts() -> None:
    eng = Engine([cpu("c1"), cpu("c2")], min_preemptible_lifetime=hours(1))
    eng.add_preemptible(pre("a", "c1", 1, 0))
    eng.add_preemptible(pre("b", "c1", 1, 0.5))
    eng.add_preemptible(pre("c", "c2", 1, 0))
    lease = placed(eng.fit("l", [HostRequest("h", 1, 1, 'name == "c1"')], at(2), at(3)))
    eng.book("l", lease)
    assert sorted(eng.victims(lease, at(2))) == ["a", "b"]


def test_gpu_preemptibles_and_slices() -> None:
    eng = Engine([gpu("g", 1)], min_preemptible_lifetime=hours(1))
    eng.add_preemptible(Preemptible("p", "g", Amount(vcpus=4, gpus=(("A100", 1),)), at(0)))
    assert isinstance(eng.fit("l", [SliceRequest("s", 1, "1g.10gb")], at(0.5), at(2)), NoFit)
    lease = placed(eng.fit("l", [SliceRequest("s", 1, "1g.10gb")], at(1), at(2)))
    assert eng.victims(lease, at(1)) == ["p"]


def test_backfill_room_keeps_the_minimum_lifetime_clear() -> None:
    eng = Engine([cpu("c1", 16)], min_preemptible_lifetime=hours(2))
    eng.book("l", placed(eng.fit("l", [FlavorRequest("s", 1, 12, 1024)], at(3), at(5))))
    assert eng.free_now("c1", at(0)).vcpus == 16
    assert eng.backfill_room("c1", at(0)).vcpus == 16
    assert eng.backfill_room("c1", at(1.5)).vcpus == 4  # would overlap the lease within 2h
    eng.add_preemptible(pre("p", "c1", 3, 1.5))
    assert eng.backfill_room("c1", at(1.5)).vcpus == 1
    eng.remove_preemptible("p")
    eng.remove_preemptible("p")
    assert [p.server_id for p in eng.preemptibles()] == []


def test_free_now_says_when_a_host_is_held_whole() -> None:
    eng = Engine([cpu("c1")])
    eng.book("l", placed(eng.fit("l", [HostRequest("h", 1, 1)], at(1), at(2))))
    assert not eng.free_now("c1", at(0)).whole_host
    held = eng.free_now("c1", at(1))
    assert held.whole_host and held.vcpus == 0


def test_min_lifetime_parameter() -> None:
    eng = Engine([cpu("c1")], min_preemptible_lifetime=timedelta(minutes=10))
    eng.add_preemptible(pre("p", "c1", 1, 0))
    refused = eng.fit("l", [HostRequest("h", 1, 1)], at(0), at(1))
    assert isinstance(refused, NoFit) and refused.earliest_start == at(0) + timedelta(minutes=10)
