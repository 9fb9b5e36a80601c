"""What a placed lease costs, in resource-hours per resource class.

Resource classes: ``host:<type>`` (whole hosts; the type is the host's ``host_type``
property, else its GPU model, else ``cpu``; multiplied by the host's ``credit_rate``
property, default 1), ``gpu:<model>`` (whole GPUs), ``slice:<profile>`` (GPU slices) and
``vcpu``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from fnmatch import fnmatchcase

from ecliptic.scheduler.model import HostInfo, Placement


def host_type(host: HostInfo) -> str:
    """The type a whole host is charged as."""
    explicit = host.properties.get("host_type")
    if explicit:
        return str(explicit)
    return host.gpus[0].model if host.gpus else "cpu"


def credit_rate(host: HostInfo) -> Decimal:
    """The host's price multiplier (``credit_rate`` property, default 1)."""
    raw = host.properties.get("credit_rate", 1)
    try:
        return Decimal(str(raw))
    except ArithmeticError:
        return Decimal(1)


def duration_hours(start: datetime, end: datetime) -> Decimal:
    """Length of [start, end) in hours, exact to the minute."""
    minutes = int((end - start).total_seconds() // 60)
    return Decimal(max(0, minutes)) / Decimal(60)


def lease_cost(
    placement: Placement, hosts: Mapping[str, HostInfo], slice_keys: Collection[str] = ()
) -> dict[str, Decimal]:
    """Resource-hours per class that ``placement`` holds over its window.

    Reservations named in ``slice_keys`` are GPU-slice reservations: the vCPUs and memory
    booked with their slices come with the slice and are not charged on their own.
    """
    h = duration_hours(placement.start, placement.end)
    cost: dict[str, Decimal] = defaultdict(Decimal)
    for a in placement.allocations:
        host = hosts.get(a.host)
        if a.amount.whole_host:
            if host is None:
                continue
            cost[f"host:{host_type(host)}"] += h * credit_rate(host)
            continue
        if a.amount.vcpus and a.key not in slice_keys:
            cost["vcpu"] += h * a.amount.vcpus
        for model, n in a.amount.gpus:
            cost[f"gpu:{model}"] += h * n
        for key, n in a.amount.slices:
            profile = key.split(":", 1)[-1]
            cost[f"slice:{profile}"] += h * n
    return {k: v for k, v in cost.items() if v}


@dataclass(frozen=True)
class MeterPolicy:
    """Which on-demand use is paid by the hour from credits, and when owners are warned."""

    classes: tuple[str, ...] = ("gpu:*", "host:*")
    """Resource classes (``fnmatch`` patterns) charged when used on demand
    (``ECLIPTIC_METERED_CLASSES``); say ``vcpu`` too to charge every server."""
    warn: timedelta = timedelta(hours=24)
    """Warn a server's owner when the credits left last less than this at the tenancy's
    current on-demand use (``ECLIPTIC_METER_WARN_HOURS``)."""

    def metered(self, resource_class: str) -> bool:
        """True when on-demand use of ``resource_class`` is charged."""
        return any(fnmatchcase(resource_class, p) for p in self.classes)


def hourly_rates(
    kind: str, vcpus: int, gpu_model: str | None, gpus: int, host: HostInfo, policy: MeterPolicy
) -> dict[str, Decimal]:
    """What one hour of an on-demand server costs, per metered class (empty: free).

    Priced as a lease of the same thing is: a bare-metal server as its whole host (times
    the host's credit rate), a virtual one by its vCPUs and whole GPUs.
    """
    rates: dict[str, Decimal] = {}
    if kind == "baremetal":
        rates[f"host:{host_type(host)}"] = credit_rate(host)
    else:
        if vcpus:
            rates["vcpu"] = Decimal(vcpus)
        if gpu_model and gpus:
            rates[f"gpu:{gpu_model}"] = Decimal(gpus)
    return {rc: r for rc, r in rates.items() if r and policy.metered(rc)}
