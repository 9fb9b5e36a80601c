"""Best-fit placement: never over capacity, least waste, whole hosts for bare metal."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ecliptic.scheduler.placement import Demand, HostFree, best_fit, fits


def host(name: str, vcpus: int = 64, mem: int = 262144, **kw: object) -> HostFree:
    return HostFree(name=name, vcpus=vcpus, memory_mb=mem, disk_gb=1000, **kw)  # type: ignore[arg-type]


def test_picks_the_tightest_host() -> None:
    hosts = [host("big", 64), host("small", 8), host("mid", 16)]
    chosen = best_fit(hosts, Demand(vcpus=8, memory_mb=1024))
    assert chosen is not None and chosen.name == "small"


def test_cpu_work_avoids_gpu_hosts_while_cpu_hosts_have_room() -> None:
    hosts = [host("gpu", 8, gpus={"A100": 4}), host("cpu", 64)]
    chosen = best_fit(hosts, Demand(vcpus=4, memory_mb=1024))
    assert chosen is not None and chosen.name == "cpu"


def test_gpu_demand_needs_free_gpus_of_that_model() -> None:
    hosts = [
        host("a", gpus={"A100": 2}, used_gpus={"A100": 2}),
        host("b", gpus={"H100": 4}),
        host("c", gpus={"A100": 4}, used_gpus={"A100": 1}),
    ]
    chosen = best_fit(hosts, Demand(vcpus=4, memory_mb=1024, gpu_model="A100", gpus=2))
    assert chosen is not None and chosen.name == "c"
    assert best_fit(hosts, Demand(vcpus=4, memory_mb=1024, gpu_model="L40S", gpus=1)) is None


def test_bare_metal_takes_an_empty_host_only() -> None:
    hosts = [host("busy", servers=1, used_vcpus=1), host("empty-big", 128), host("empty", 32)]
    chosen = best_fit(hosts, Demand(vcpus=32, memory_mb=1024, whole_host=True))
    assert chosen is not None and chosen.name == "empty"


def test_unschedulable_hosts_are_skipped() -> None:
    assert best_fit([host("down", schedulable=False)], Demand(vcpus=1, memory_mb=1)) is None


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(1, 8), st.integers(128, 8192), st.booleans()), min_size=1, max_size=60
    )
)
def test_placing_many_never_exceeds_any_host(requests: list[tuple[int, int, bool]]) -> None:
    hosts = {f"h{i}": host(f"h{i}", vcpus=16, mem=16384) for i in range(4)}
    for vcpus, mem, whole in requests:
        demand = Demand(vcpus=vcpus, memory_mb=mem, whole_host=whole)
        chosen = best_fit(hosts.values(), demand)
        if chosen is None:
            assert not any(fits(h, demand) for h in hosts.values())
            continue
        h = hosts[chosen.name]
        hosts[chosen.name] = HostFree(
            name=h.name,
            vcpus=h.vcpus,
            memory_mb=h.memory_mb,
            disk_gb=h.disk_gb,
            used_vcpus=h.vcpus if whole else h.used_vcpus + vcpus,
            used_memory_mb=h.memory_mb if whole else h.used_memory_mb + mem,
            servers=h.servers + 1,
            schedulable=not whole,
        )
    for h in hosts.values():
        assert h.used_vcpus <= h.vcpus and h.used_memory_mb <= h.memory_mb
