"""Hosts that serve one kind of work: ``vm`` hosts take no whole-host reservations,
``baremetal`` hosts take no slots, slices or preemptible backfill."""

from __future__ import annotations

from dataclasses import replace
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
from tests.scheduler.factories import T0, at, cpu, gpu, hours


def placed(result: Placement | NoFit) -> Placement:
    assert isinstance(result, Placement), result
    return result


def test_vm_hosts_take_no_whole_host_reservations() -> None:
    eng = Engine([replace(cpu("c1"), serves="vm"), cpu("c2")])
    assert placed(eng.fit("a", [HostRequest("h", 1, 2)], at(0), at(2))).hosts() == ["c2"]
    refused = eng.fit("a", [HostRequest("h", 2, 2)], at(0), at(2))
    assert isinstance(refused, NoFit)
    assert "2 match, 2 up (1 of them serve VMs only), 1 free" in refused.reason
    # Slots still go to the hypervisor.
    slots = placed(eng.fit("b", [FlavorRequest("f", 2, 8, 8192)], at(0), at(2)))
    assert slots.hosts() == ["c1"]


def test_baremetal_hosts_take_no_slots_slices_or_backfill() -> None:
    eng = Engine([replace(gpu("g1"), serves="baremetal"), gpu("g2"), cpu("c1")])
    slices = placed(eng.fit("s", [SliceRequest("s", 7, "1g.10gb")], at(0), at(2)))
    assert slices.hosts() == ["g2"]
    gpus = placed(eng.fit("g", [FlavorRequest("f", 2, 8, 8192, gpus=2)], at(0), at(2)))
    assert gpus.hosts() == ["g2"]
    whole = placed(eng.fit("w", [HostRequest("h", 1, 1, "gpu_model")], at(0), at(2)))
    assert whole.hosts() == ["g1"]
    assert eng.backfill_room("g1", T0) == Amount()
    assert eng.backfill_room("g2", T0).vcpus == 64
    too_many = eng.fit("x", [FlavorRequest("f", 2, 8, 8192, gpus=4)], at(0), at(2))
    assert isinstance(too_many, NoFit)


def test_earliest_waits_for_a_host_that_serves_the_request() -> None:
    eng = Engine([replace(cpu("c1"), serves="vm"), cpu("c2")])
    eng.book("busy", placed(eng.fit("busy", [HostRequest("h", 1, 1)], at(0), at(5))))
    windows = eng.earliest([HostRequest("h", 1, 1)], hours(2), at(0), hours(24), alternatives=0)
    assert [w.start for w in windows] == [at(5)]
    assert windows[0].placement.hosts() == ["c2"]
    bm = Engine([replace(cpu("c1"), serves="baremetal")])
    assert bm.earliest([FlavorRequest("f", 1, 1, 1024)], hours(1), at(0), hours(24)) == []


def test_changing_serves_keeps_bookings_and_takes_effect_at_once() -> None:
    eng = Engine([cpu("c1"), cpu("c2")], min_preemptible_lifetime=timedelta(hours=1))
    first = eng.fit("a", [HostRequest("h", 1, 1, 'name == "c1"')], at(0), at(2))
    eng.book("a", placed(first))
    slot = placed(eng.fit("b", [FlavorRequest("f", 1, 8, 8192)], at(4), at(6)))
    eng.book("b", slot)
    # Candidates are cached per filter: a filter used before the change sees it too.
    assert placed(eng.fit(None, [HostRequest("h", 1, 1)], at(4), at(6))).hosts() != slot.hosts()
    eng.set_host(replace(eng.hosts["c1"], serves="vm"))
    eng.set_host(replace(eng.hosts["c2"], serves="vm"))
    assert eng.booking("a") == first and eng.booking("b") == slot  # nothing dropped
    assert eng.hosts["c1"].serves == "vm"
    assert isinstance(eng.fit(None, [HostRequest("h", 1, 1)], at(8), at(9)), NoFit)
    # A lease re-placed on a host that no longer serves it must move, and cannot.
    assert isinstance(eng.fit("a", [HostRequest("h", 1, 1, 'name == "c1"')], at(0), at(2)), NoFit)
    eng.set_host(replace(eng.hosts["c2"], serves="baremetal"))
    assert placed(eng.fit(None, [HostRequest("h", 1, 1)], at(8), at(9))).hosts() == ["c2"]
    assert placed(eng.fit(None, [FlavorRequest("f", 1, 8, 8192)], at(8), at(9))).hosts() == ["c1"]
    # Preemptibles already running stay known; no new backfill goes there.
    eng.add_preemptible(Preemptible("p", "c2", Amount(vcpus=2, memory_mb=512), T0))
    assert eng.backfill_room("c2", T0) == Amount()
    # Down and back up keeps what the host serves.
    eng.set_host(replace(eng.hosts["c2"], up=False))
    eng.set_host(replace(eng.hosts["c2"], up=True))
    assert isinstance(
        eng.fit(None, [FlavorRequest("f", 1, 1, 1024, filter='name == "c2"')], at(8), at(9)), NoFit
    )


def test_rebuild_keeps_serves() -> None:
    hosts = [replace(cpu("c1"), serves="vm"), replace(cpu("c2"), serves="baremetal"), cpu("c3")]
    eng = Engine(hosts)
    bulk = Engine.rebuild(list(eng.hosts.values()), eng.bookings())
    assert bulk.snapshot() == eng.snapshot()
    assert eng.snapshot()["hosts"]["c1"]["serves"] == "vm"
    assert placed(bulk.fit(None, [HostRequest("h", 2, 2)], at(0), at(1))).hosts() == ["c2", "c3"]
    fl = FlavorRequest("f", 2, 64, 262144, affinity="anti-affinity")
    assert placed(bulk.fit(None, [fl], at(0), at(1))).hosts() == ["c1", "c3"]
