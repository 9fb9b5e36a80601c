"""What a host serves (any, vm, baremetal) in the services layer: the booking log carries
it, preemptible servers are never placed on a bare-metal host."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ecliptic.scheduler.engine import Engine
from ecliptic.services.booking import host_from_json, host_to_json
from ecliptic.services.kinds import NoCapacity
from ecliptic.services.servers import placement_preemptible
from ecliptic.store.models import Flavor
from tests.scheduler.factories import T0, cpu


def test_the_booking_log_carries_serves_and_reads_old_entries() -> None:
    for serves in ("any", "vm", "baremetal"):
        host = replace(cpu("c1", rack="r1"), serves=serves)
        assert host_from_json(host_to_json(host)) == host
    old_entry = host_to_json(cpu("c1"))
    del old_entry["serves"]  # logged before hosts had it
    assert host_from_json(old_entry).serves == "any"
    with pytest.raises(ValueError, match="serves"):
        host_from_json({**old_entry, "serves": "containers"})


def test_preemptible_servers_skip_bare_metal_hosts() -> None:
    small = Flavor(name="small", vcpus=2, memory_mb=2048, disk_gb=0, gpus=0, kind="vm")
    eng = Engine([replace(cpu("c1", 8), serves="baremetal"), cpu("c2", 64)])
    # c1 would be the best fit (the least room wasted), but it serves bare metal only.
    assert placement_preemptible(eng, small, T0) == "c2"
    eng.set_host(replace(eng.hosts["c2"], serves="baremetal"))
    with pytest.raises(NoCapacity):
        placement_preemptible(eng, small, T0)
