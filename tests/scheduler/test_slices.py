"""GPU slices: 7 compute units per GPU, pinned to one GPU, packed best-fit."""

from __future__ import annotations

from ecliptic.scheduler.engine import Engine
from ecliptic.scheduler.model import (
    Allocation,
    Amount,
    FlavorRequest,
    NoFit,
    Placement,
    SliceRequest,
)
from ecliptic.scheduler.resources import profile_units
from tests.scheduler.factories import at, cpu, gpu


def placed(result: Placement | NoFit) -> Placement:
    assert isinstance(result, Placement), result
    return result


def units_by_gpu(p: Placement) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for a in p.allocations:
        for i, u in a.amount.gpu_units:
            out[a.host, i] = out.get((a.host, i), 0) + u
    return out


def test_profile_units() -> None:
    assert profile_units("1g.10gb") == 1 and profile_units("3g.40gb") == 3
    assert profile_units("7g.80gb") == 7


def test_seven_1g_slices_fill_one_gpu_before_cutting_another() -> None:
    eng = Engine([gpu("g", 2)])
    p = placed(eng.fit("l", [SliceRequest("s", 7, "1g.10gb")], at(0), at(1)))
    assert units_by_gpu(p) == {("g", 0): 7}
    assert p.allocations[0].amount.slices == (("A100:1g.10gb", 7),)
    assert p.allocations[0].slots == 7


def test_two_4g_slices_never_share_a_gpu() -> None:
    eng = Engine([gpu("g", 1)])
    assert isinstance(eng.fit("l", [SliceRequest("s", 2, "4g.40gb")], at(0), at(1)), NoFit)
    eng2 = Engine([gpu("g", 2)])
    p = placed(eng2.fit("l", [SliceRequest("s", 2, "4g.40gb")], at(0), at(1)))
    assert units_by_gpu(p) == {("g", 0): 4, ("g", 1): 4}
    # A 3g fits next to a 4g (7 units), a 4g does not.
    eng2.book("l", p)
    assert isinstance(eng2.fit("m", [SliceRequest("s", 3, "4g.40gb")], at(0), at(1)), NoFit)
    q = placed(eng2.fit("m", [SliceRequest("s", 2, "3g.40gb")], at(0), at(1)))
    assert units_by_gpu(q) == {("g", 0): 3, ("g", 1): 3}


def test_slices_pack_onto_partly_cut_gpus_first() -> None:
    eng = Engine([gpu("a", 2), gpu("b", 2)])
    eng.book("l", placed(eng.fit("l", [SliceRequest("s", 1, "3g.40gb")], at(0), at(9))))
    p = placed(eng.fit("m", [SliceRequest("s", 2, "2g.20gb")], at(1), at(2)))
    first = eng.booking("l")
    assert first is not None
    ((host, gpu_index),) = units_by_gpu(first).keys()
    assert units_by_gpu(p) == {(host, gpu_index): 4}  # next to the 3g, a whole GPU left free


def test_a_partly_cut_gpu_cannot_be_given_whole() -> None:
    eng = Engine([gpu("g", 1)])
    eng.book("l", placed(eng.fit("l", [SliceRequest("s", 1, "1g.10gb")], at(0), at(2))))
    whole = [FlavorRequest("w", 1, 4, 1024, gpu_model="A100", gpus=1)]
    assert isinstance(eng.fit("m", whole, at(1), at(3)), NoFit)
    assert isinstance(eng.fit("m", whole, at(2), at(3)), Placement)


def test_slices_only_where_the_model_offers_the_profile() -> None:
    eng = Engine([gpu("plain", 4, "L40S", mig=False), gpu("h", 2, "H100"), cpu("c")])
    p = placed(eng.fit("l", [SliceRequest("s", 3, "1g.10gb")], at(0), at(1)))
    assert p.hosts() == ["h"]
    assert isinstance(
        eng.fit("l", [SliceRequest("s", 1, "1g.10gb", gpu_model="L40S")], at(0), at(1)), NoFit
    )


def test_flavor_with_one_slice_per_slot() -> None:
    eng = Engine([gpu("g", 1), cpu("c")])
    req = FlavorRequest("f", 3, 4, 4096, gpu_model="A100", gpu_profile="2g.20gb")
    p = placed(eng.fit("l", [req], at(0), at(1)))
    assert p.hosts() == ["g"] and units_by_gpu(p) == {("g", 0): 6}
    assert p.allocations[0].amount.slices == (("A100:2g.20gb", 3),)
    assert p.allocations[0].amount.vcpus == 12
    assert isinstance(eng.fit("l", [req, SliceRequest("s", 1, "2g.20gb")], at(0), at(1)), NoFit)


def test_slices_over_time_share_a_gpu_in_turn() -> None:
    eng = Engine([gpu("g", 1)])
    eng.book("a", placed(eng.fit("a", [SliceRequest("s", 1, "7g.80gb")], at(0), at(2))))
    assert isinstance(eng.fit("b", [SliceRequest("s", 1, "1g.10gb")], at(1), at(3)), NoFit)
    assert isinstance(eng.fit("b", [SliceRequest("s", 7, "1g.10gb")], at(2), at(3)), Placement)


def test_bookings_stored_without_gpu_indexes_are_pinned_on_load() -> None:
    # The store may keep only models and counts: the engine puts them on GPUs best-fit.
    eng = Engine([gpu("g", 2)])
    bare = Placement(
        at(0),
        at(2),
        (
            Allocation("s", "g", Amount(slices=(("A100:3g.40gb", 2),)), slots=2),
            Allocation("w", "g", Amount(vcpus=8, gpus=(("A100", 1),))),
        ),
    )
    eng.book("l", bare)
    booked = eng.booking("l")
    assert booked is not None
    assert units_by_gpu(booked) == {("g", 0): 6, ("g", 1): 7}
    assert isinstance(eng.fit("m", [SliceRequest("s", 1, "1g.10gb")], at(0), at(2)), Placement)
    assert isinstance(eng.fit("m", [SliceRequest("s", 2, "1g.10gb")], at(0), at(2)), NoFit)
    again = Engine.rebuild([gpu("g", 2)], {"l": bare})
    assert again.snapshot() == eng.snapshot()


def test_slices_book_their_share_of_the_host_so_slots_cannot_overcommit_it() -> None:
    # 64 vCPU, 512 GiB, 4 GPUs: 28 units, so 7 x 1g books a quarter of the CPU and memory.
    eng = Engine([gpu("g", 4)])
    p = placed(eng.fit("l", [SliceRequest("s", 7, "1g.10gb")], at(0), at(8)))
    assert (p.allocations[0].amount.vcpus, p.allocations[0].amount.memory_mb) == (16, 131072)
    eng.book("l", p)
    # What is left for instance slots is 48 vCPU: three 16-vCPU slots fit, a fourth does not.
    big = FlavorRequest("f", 4, 16, 65536)
    assert isinstance(eng.fit("m", [big], at(0), at(8)), NoFit)
    assert placed(eng.fit("m", [FlavorRequest("f", 3, 16, 65536)], at(0), at(8)))
    # Shares round down on the whole holding: 28 slices book all of it, never more.
    eng2 = Engine([gpu("g", 4)])
    q = placed(eng2.fit("l", [SliceRequest("s", 28, "1g.10gb")], at(0), at(8)))
    assert (q.allocations[0].amount.vcpus, q.allocations[0].amount.memory_mb) == (64, 524288)


def test_slices_for_a_flavor_book_its_size() -> None:
    eng = Engine([gpu("a", 4), gpu("b", 4)])
    req = SliceRequest("s", 6, "1g.10gb", vcpus=16, memory_mb=65536)
    p = placed(eng.fit("l", [req], at(0), at(8)))
    assert sorted(a.slots for a in p.allocations) == [2, 4]  # 64 vCPU hold four
    assert sum(a.amount.vcpus for a in p.allocations) == 96
