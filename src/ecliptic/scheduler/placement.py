"""Best-fit placement of one on-demand server onto the hosts that have room now."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HostFree:
    """What one host has left, now."""

    name: str
    """Host name."""
    vcpus: int
    """Total schedulable vCPUs."""
    memory_mb: int
    """Total schedulable memory."""
    disk_gb: int
    """Total local disk."""
    gpus: dict[str, int] = field(default_factory=dict)
    """Total GPUs per model."""
    used_vcpus: int = 0
    """vCPUs held by servers."""
    used_memory_mb: int = 0
    """Memory held by servers."""
    used_disk_gb: int = 0
    """Disk held by servers."""
    used_gpus: dict[str, int] = field(default_factory=dict)
    """GPUs held per model."""
    servers: int = 0
    """Servers on the host (a bare-metal server needs it empty)."""
    schedulable: bool = True
    """False for hosts that are down, in maintenance, or held whole by a bare-metal server."""


@dataclass(frozen=True)
class Demand:
    """What one server needs."""

    vcpus: int
    """vCPUs."""
    memory_mb: int
    """Memory."""
    disk_gb: int = 0
    """Disk."""
    gpu_model: str | None = None
    """GPU model, when ``gpus`` > 0."""
    gpus: int = 0
    """Whole GPUs."""
    whole_host: bool = False
    """A bare-metal server: the host must be empty and is held whole."""


def fits(host: HostFree, demand: Demand) -> bool:
    """Whether ``demand`` fits on ``host`` now."""
    if not host.schedulable:
        return False
    if demand.whole_host:
        free_ok = host.servers == 0
        return (
            free_ok
            and host.vcpus >= demand.vcpus
            and host.memory_mb >= demand.memory_mb
            and host.disk_gb >= demand.disk_gb
            and (demand.gpus == 0 or host.gpus.get(demand.gpu_model or "", 0) >= demand.gpus)
        )
    gpu_free = host.gpus.get(demand.gpu_model or "", 0) - host.used_gpus.get(
        demand.gpu_model or "", 0
    )
    return (
        host.vcpus - host.used_vcpus >= demand.vcpus
        and host.memory_mb - host.used_memory_mb >= demand.memory_mb
        and host.disk_gb - host.used_disk_gb >= demand.disk_gb
        and (demand.gpus == 0 or gpu_free >= demand.gpus)
    )


def _waste(host: HostFree, demand: Demand) -> tuple[int, float, str]:
    """Sort key: idle GPUs left stranded, then free room left over, then name."""
    if demand.whole_host:
        # The smallest host that satisfies a bare-metal request wastes the least.
        spare_gpus = sum(host.gpus.values()) - demand.gpus
        return (spare_gpus, host.vcpus / 1e3 + host.memory_mb / 1e9, host.name)
    left_cpu = (host.vcpus - host.used_vcpus - demand.vcpus) / max(1, host.vcpus)
    left_mem = (host.memory_mb - host.used_memory_mb - demand.memory_mb) / max(1, host.memory_mb)
    # Keep GPU hosts for GPU work: a CPU-only server on a GPU host counts its idle GPUs as waste.
    idle_gpus = 0 if demand.gpus else sum(host.gpus.values()) - sum(host.used_gpus.values())
    return (idle_gpus, left_cpu + left_mem, host.name)


def best_fit(hosts: Iterable[HostFree], demand: Demand) -> HostFree | None:
    """The host where ``demand`` fits leaving the least free room, or None if none fits."""
    candidates = [h for h in hosts if fits(h, demand)]
    if not candidates:
        return None
    return min(candidates, key=lambda h: _waste(h, demand))
