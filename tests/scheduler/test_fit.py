"""fit / book / release: whole hosts, min-max counts, flavor slots, affinity, host down."""

from __future__ import annotations

import pytest

from ecliptic.scheduler.engine import CapacityError, Engine, InvalidRequest, UnknownHost
from ecliptic.scheduler.filters import FilterError
from ecliptic.scheduler.model import FlavorRequest, HostInfo, HostRequest, NoFit, Placement
from tests.scheduler.factories import at, cpu, gpu


def placed(result: Placement | NoFit) -> Placement:
    assert isinstance(result, Placement), result
    return result


def test_fit_book_release_round_trip() -> None:
    eng = Engine([cpu("c1"), cpu("c2")])
    p = placed(eng.fit("l1", [HostRequest("h", 2, 2)], at(0), at(4)))
    assert p.hosts() == ["c1", "c2"] and all(a.amount.whole_host for a in p.allocations)
    eng.book("l1", p)
    assert eng.booking("l1") == p
    refused = eng.fit("l2", [HostRequest("h", 1, 1)], at(3), at(5))
    assert isinstance(refused, NoFit)
    assert "needs 1 host(s): 2 match, 2 up, 0 free" in refused.reason
    assert {b.lease_id for b in refused.blockers} == {"l1"}
    assert placed(eng.fit("l2", [HostRequest("h", 2, 2)], at(4), at(6))).hosts() == ["c1", "c2"]
    eng.release("l1")
    eng.release("l1")  # idempotent
    assert eng.booking("l1") is None
    assert placed(eng.fit("l2", [HostRequest("h", 2, 2)], at(3), at(5))).hosts() == ["c1", "c2"]


def test_book_refuses_a_stale_placement_and_keeps_the_old_one() -> None:
    eng = Engine([cpu("c1")])
    p = placed(eng.fit("a", [HostRequest("h", 1, 1)], at(0), at(2)))
    eng.book("a", p)
    with pytest.raises(CapacityError) as err:
        eng.book("b", p)
    assert err.value.code == "no_capacity" and eng.booking("b") is None
    # Re-booking a lease over itself is fine (it replaces its own booking).
    eng.book("a", p)
    moved = placed(eng.fit("a", [HostRequest("h", 1, 1)], at(1), at(3)))
    eng.book("a", moved)
    assert eng.booking("a") == moved


def test_min_max_gives_as_many_hosts_as_fit() -> None:
    eng = Engine([cpu(f"c{i}", rack="r1") for i in range(5)] + [cpu("x", rack="r2")])
    eng.book(
        "busy", placed(eng.fit("busy", [HostRequest("h", 2, 2, 'rack == "r1"')], at(0), at(9)))
    )
    p = placed(eng.fit("l", [HostRequest("h", 2, 6, 'rack == "r1"')], at(1), at(2)))
    assert len(p.hosts()) == 3 and "x" not in p.hosts()
    assert isinstance(eng.fit("l", [HostRequest("h", 4, 6, 'rack == "r1"')], at(1), at(2)), NoFit)
    assert len(placed(eng.fit("l", [HostRequest("h", 1, 2)], at(1), at(2))).hosts()) == 2


def test_whole_hosts_prefer_small_hosts_and_tight_gaps() -> None:
    eng = Engine([cpu("big", 128), cpu("a"), cpu("b"), gpu("g")])
    # "b" is booked from 4h on: a 2h lease at 1h fits its gap more tightly than "a".
    eng.book(
        "later", placed(eng.fit("later", [HostRequest("h", 1, 1, 'name == "b"')], at(4), at(8)))
    )
    p = placed(eng.fit("l", [HostRequest("h", 1, 1)], at(1), at(3)))
    assert p.hosts() == ["b"]
    assert placed(eng.fit("l", [HostRequest("h", 3, 3)], at(1), at(3))).hosts() == ["a", "b", "big"]


def test_flavor_slots_pack_onto_the_tightest_host() -> None:
    eng = Engine([cpu("c1", 32), cpu("c2", 32), gpu("g1")])
    first = placed(eng.fit("a", [FlavorRequest("s", 1, 16, 4096)], at(0), at(5)))
    eng.book("a", first)
    second = placed(eng.fit("b", [FlavorRequest("s", 1, 8, 4096)], at(1), at(2)))
    assert second.hosts() == first.hosts()  # best-fit: next to the first, not on an empty host
    assert "g1" not in first.hosts()  # CPU work stays off GPU hosts, CPU hosts being no busier
    many = placed(eng.fit("c", [FlavorRequest("s", 5, 8, 4096)], at(1), at(2)))
    assert sum(a.slots for a in many.allocations) == 5
    assert sum(a.amount.vcpus for a in many.allocations) == 40


def test_affinity_and_anti_affinity() -> None:
    eng = Engine([cpu(f"c{i}", 16) for i in range(4)])
    together = placed(
        eng.fit("a", [FlavorRequest("s", 4, 4, 1024, affinity="affinity")], at(0), at(1))
    )
    assert len(together.hosts()) == 1 and together.allocations[0].slots == 4
    assert isinstance(
        eng.fit("a", [FlavorRequest("s", 5, 4, 1024, affinity="affinity")], at(0), at(1)), NoFit
    )
    apart = placed(
        eng.fit("a", [FlavorRequest("s", 4, 4, 1024, affinity="anti-affinity")], at(0), at(1))
    )
    assert len(apart.hosts()) == 4 and all(a.slots == 1 for a in apart.allocations)
    refused = eng.fit("a", [FlavorRequest("s", 5, 4, 1024, affinity="anti-affinity")], at(0), at(1))
    assert isinstance(refused, NoFit) and "on different hosts" in refused.reason


def test_whole_host_and_shared_never_mix() -> None:
    eng = Engine([cpu("c1")])
    eng.book("slot", placed(eng.fit("slot", [FlavorRequest("s", 1, 1, 512)], at(0), at(1))))
    assert isinstance(eng.fit("h", [HostRequest("h", 1, 1)], at(0), at(2)), NoFit)
    eng.book("h", placed(eng.fit("h", [HostRequest("h", 1, 1)], at(1), at(2))))
    assert isinstance(eng.fit("s2", [FlavorRequest("s", 1, 1, 512)], at(1), at(2)), NoFit)


def test_whole_gpus_by_model() -> None:
    eng = Engine([gpu("a", 2), gpu("h", 8, "H100"), cpu("c")])
    p = placed(
        eng.fit("l", [FlavorRequest("g", 2, 8, 8192, gpu_model="A100", gpus=1)], at(0), at(1))
    )
    assert p.hosts() == ["a"] and p.allocations[0].amount.gpus == (("A100", 2),)
    eng.book("l", p)
    refused = eng.fit("m", [FlavorRequest("g", 1, 8, 8192, gpu_model="A100", gpus=1)], at(0), at(1))
    assert isinstance(refused, NoFit)
    assert placed(
        eng.fit("m", [FlavorRequest("g", 1, 8, 8192, gpu_model="H100", gpus=4)], at(0), at(1))
    ).hosts() == ["h"]


def test_a_lease_with_several_reservations_fits_all_at_once() -> None:
    eng = Engine([cpu("c1"), cpu("c2"), gpu("g1")])
    p = placed(
        eng.fit(
            "l",
            [
                FlavorRequest("workers", 2, 32, 4096, affinity="anti-affinity"),
                HostRequest("head", 1, 1, "not gpu_model"),
            ],
            at(0),
            at(1),
        )
    )
    head = p.hosts("head")
    assert len(head) == 1 and head[0] not in p.hosts("workers")
    assert len(p.hosts("workers")) == 2


def test_down_host_takes_nothing_new_and_refit_moves_the_lease() -> None:
    eng = Engine([cpu("c1"), cpu("c2"), cpu("c3")])
    p = placed(eng.fit("l", [HostRequest("h", 2, 2)], at(0), at(5)))
    eng.book("l", p)
    assert p.hosts() == ["c1", "c2"]
    eng.set_host(HostInfo("c1", 64, 262144, 1000, up=False))
    assert isinstance(eng.fit("other", [HostRequest("h", 2, 2)], at(0), at(1)), NoFit)
    healed = placed(eng.fit("l", [HostRequest("h", 2, 2)], at(1), at(5)))
    assert healed.hosts() == ["c2", "c3"]  # keeps c2 (its own host), replaces c1
    eng.book("l", healed)
    eng.set_host(HostInfo("c1", 64, 262144, 1000, up=True))
    assert placed(eng.fit("other", [HostRequest("h", 1, 1)], at(2), at(3))).hosts() == ["c1"]


def test_refit_of_a_booked_lease_ignores_its_own_booking() -> None:
    eng = Engine([cpu("c1")])
    eng.book("l", placed(eng.fit("l", [HostRequest("h", 1, 1)], at(0), at(5))))
    assert isinstance(eng.fit("l", [HostRequest("h", 1, 1)], at(0), at(8)), Placement)
    assert isinstance(eng.fit("x", [HostRequest("h", 1, 1)], at(0), at(8)), NoFit)
    assert eng.booking("l") is not None and eng.booking("l").end == at(5)  # type: ignore[union-attr]


def test_capacity_change_rebuilds_the_host() -> None:
    eng = Engine([cpu("c1", 16)])
    eng.book("a", placed(eng.fit("a", [FlavorRequest("s", 2, 8, 1024)], at(0), at(1))))
    eng.set_host(cpu("c1", 32, rack="r9"))
    assert placed(
        eng.fit("b", [FlavorRequest("s", 2, 8, 1024, filter='rack == "r9"')], at(0), at(1))
    )


def test_bad_requests_are_refused() -> None:
    eng = Engine([cpu("c1")])
    with pytest.raises(InvalidRequest):
        eng.fit("l", [HostRequest("h", 2, 1)], at(0), at(1))
    with pytest.raises(InvalidRequest):
        eng.fit("l", [HostRequest("h", 1, 1), HostRequest("h", 1, 1)], at(0), at(1))
    with pytest.raises(InvalidRequest):
        eng.fit("l", [HostRequest("h", 1, 1)], at(2), at(1))
    with pytest.raises(InvalidRequest):
        eng.fit("l", [FlavorRequest("s", 1, 1, 1, gpu_profile="9g.1gb")], at(0), at(1))
    with pytest.raises(FilterError):
        eng.fit("l", [HostRequest("h", 1, 1, "vcpus >")], at(0), at(1))
    with pytest.raises(UnknownHost):
        eng.free_now("nope", at(0))


def test_hosts_mapping_is_read_only_and_current() -> None:
    eng = Engine([cpu("c1")])
    eng.set_host(HostInfo("c1", 64, 262144, 1000, up=False))
    assert dict(eng.hosts)["c1"].up is False
    with pytest.raises(TypeError):
        eng.hosts["c2"] = cpu("c2")  # type: ignore[index]


def test_shared_work_fills_a_partly_used_host_before_opening_an_empty_one() -> None:
    eng = Engine([cpu("small", 16), cpu("big", 64)])
    eng.book(
        "a",
        placed(
            eng.fit("a", [FlavorRequest("s", 1, 8, 1024, filter='name == "big"')], at(0), at(4))
        ),
    )
    # "small" would be the tighter fit by size, but using it takes a whole host away.
    assert placed(eng.fit("b", [FlavorRequest("s", 1, 8, 1024)], at(1), at(2))).hosts() == ["big"]
    # Beyond the first booking, "big" is as empty as "small": the smaller one is used.
    assert placed(eng.fit("b", [FlavorRequest("s", 1, 8, 1024)], at(5), at(6))).hosts() == ["small"]


def test_a_request_several_shapes_satisfy_goes_to_the_less_busy_shape() -> None:
    eng = Engine([cpu("c0"), cpu("c1"), cpu("c2"), gpu("g0"), gpu("g1"), gpu("g2")])
    # Nothing booked: the smallest hosts (CPU) are used first.
    assert placed(eng.fit("x", [HostRequest("h", 1, 1)], at(0), at(1))).hosts() == ["c0"]
    cpus = [HostRequest("h", 2, 2, "not gpu_model")]
    eng.book("busy", placed(eng.fit("busy", cpus, at(0), at(8))))
    # Two CPU hosts of three are taken then, no GPU host is: "any host" takes a GPU host
    # and leaves the last CPU host to those who need one.
    assert placed(eng.fit("x", [HostRequest("h", 1, 1)], at(1), at(2))).hosts() == ["g0"]
