"""Hosts and times shared by the scheduler tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from ecliptic.scheduler.model import GpuSpec, HostInfo

T0 = datetime(2030, 1, 7, 8, 0, tzinfo=UTC)
"""A Monday morning, well away from any real clock."""

MIG = ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")


def hours(n: float) -> timedelta:
    """``n`` hours."""
    return timedelta(hours=n)


def at(n: float) -> datetime:
    """``n`` hours after ``T0``."""
    return T0 + hours(n)


def cpu(name: str, vcpus: int = 64, **props: str | int | float | bool) -> HostInfo:
    """A CPU host (256 GiB, 1 TB)."""
    return HostInfo(name, vcpus, 262144, 1000, properties=props)


def gpu(
    name: str, count: int = 4, model: str = "A100", mig: bool = True, **props: str | int | float
) -> HostInfo:
    """A GPU host with ``count`` GPUs of ``model`` (sliceable MIG-style when ``mig``)."""
    spec = GpuSpec(model, count, 80, MIG if mig else ())
    return HostInfo(name, 64, 524288, 2000, gpus=(spec,), rdma=True, properties=props)
