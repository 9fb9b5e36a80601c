"""Plain data the reservation engine works on: hosts, requests, placements, windows.

Everything here is frozen and free of the store and the backends, so the engine can be
tested and benchmarked alone. Times are timezone-aware UTC datetimes at minute resolution.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

ScalarValue = str | int | float | bool


@dataclass(frozen=True)
class GpuSpec:
    """GPUs of one model on a host."""

    model: str
    """Model name (``A100``)."""
    count: int
    """How many."""
    memory_gb: int = 0
    """Memory per GPU."""
    mig_profiles: tuple[str, ...] = ()
    """Slice profiles (``1g.10gb``, ``3g.40gb``...) a GPU of this model can be cut into."""


@dataclass(frozen=True)
class HostInfo:
    """One reservable host as the engine sees it."""

    name: str
    """Unique host name."""
    vcpus: int
    """vCPUs."""
    memory_mb: int
    """Memory, MiB."""
    disk_gb: int = 0
    """Local disk, GB."""
    gpus: tuple[GpuSpec, ...] = ()
    """GPUs by model."""
    rdma: bool = False
    """Has an RDMA-capable NIC."""
    properties: Mapping[str, ScalarValue] = field(default_factory=dict)
    """Free-form properties filters may use (``rack``, ``cpu_model``, ``credit_rate``...)."""
    up: bool = True
    """False when the host is down or in maintenance: nothing new is placed on it."""
    serves: Literal["any", "vm", "baremetal"] = "any"
    """Which work new placements may put on it: ``vm`` (a hypervisor held as such, or a
    host being drained) takes no whole-host requests; ``baremetal`` takes no instance
    slots, GPU slices or preemptible backfill; ``any`` takes both."""
    ready: Literal["any", "vm", "baremetal"] = "any"
    """What it takes without being converted first: a pool host that is a hypervisor now
    takes VMs (``vm``), one that is bare metal now takes whole-host work (``baremetal``).
    Requests go to ready hosts first, so a conversion happens only when they are full."""


@dataclass(frozen=True)
class HostRequest:
    """Whole hosts: between ``min_count`` and ``max_count`` of them, matching ``filter``."""

    key: str
    """Reservation key (unique within the lease)."""
    min_count: int
    """Hosts needed at least."""
    max_count: int
    """Hosts wanted at most (the engine gives as many as fit, up to this)."""
    filter: str = ""
    """Filter expression over host properties (``gpu_model == "A100" and rdma``); empty: any."""
    kind: Literal["host"] = "host"


@dataclass(frozen=True)
class FlavorRequest:
    """``count`` instance slots of one size, placed with (anti-)affinity."""

    key: str
    """Reservation key (unique within the lease)."""
    count: int
    """Slots."""
    vcpus: int
    """vCPUs per slot."""
    memory_mb: int
    """Memory per slot."""
    disk_gb: int = 0
    """Disk per slot."""
    gpu_model: str | None = None
    """GPU model, when ``gpus`` > 0 or ``gpu_profile`` is set."""
    gpus: int = 0
    """Whole GPUs per slot."""
    gpu_profile: str | None = None
    """One GPU slice of this profile per slot (instead of whole GPUs)."""
    affinity: Literal["none", "affinity", "anti-affinity"] = "none"
    """``affinity``: all slots on one host; ``anti-affinity``: each on a different host."""
    filter: str = ""
    """Filter expression the hosts must match."""
    kind: Literal["flavor"] = "flavor"


@dataclass(frozen=True)
class SliceRequest:
    """``count`` GPU slices of ``profile`` on any hosts whose GPUs offer it."""

    key: str
    """Reservation key (unique within the lease)."""
    count: int
    """Slices."""
    profile: str
    """Slice profile, e.g. ``1g.10gb`` (1/7 of an A100)."""
    gpu_model: str | None = None
    """Restrict to one GPU model."""
    filter: str = ""
    """Filter expression the hosts must match."""
    vcpus: int | None = None
    """vCPUs booked with each slice (the size of the flavor it is made for); None: the
    slice's share of its host (its compute units over all GPU units of the host)."""
    memory_mb: int | None = None
    """Memory booked with each slice, MiB; None: the slice's share of its host."""
    kind: Literal["gpu_slice"] = "gpu_slice"


Request = HostRequest | FlavorRequest | SliceRequest
Serves = Literal["any", "vm", "baremetal"]
"""Which kind of work a host serves (see ``HostInfo.serves``)."""


@dataclass(frozen=True)
class Amount:
    """Resources held on one host by one reservation (or one preemptible server)."""

    vcpus: int = 0
    """vCPUs."""
    memory_mb: int = 0
    """Memory, MiB."""
    disk_gb: int = 0
    """Disk, GB."""
    gpus: tuple[tuple[str, int], ...] = ()
    """Whole GPUs by model, sorted pairs."""
    slices: tuple[tuple[str, int], ...] = ()
    """GPU slices by ``model:profile``, sorted pairs."""
    whole_host: bool = False
    """True when the reservation holds the entire host."""
    gpu_units: tuple[tuple[int, int], ...] = ()
    """(GPU index on the host, compute units held) pairs, sorted: which GPUs the whole GPUs
    and slices sit on (7 units = a whole GPU). Filled in by the engine; see ``resources``."""


@dataclass(frozen=True)
class Allocation:
    """Part of a reservation placed on one host."""

    key: str
    """Reservation key within the lease."""
    host: str
    """Host name."""
    amount: Amount
    """What it holds there."""
    slots: int = 1
    """Instance slots (flavor reservations) or slices (slice reservations) on this host."""


@dataclass(frozen=True)
class Placement:
    """Where every reservation of a lease goes, for [start, end)."""

    start: datetime
    """Start, inclusive."""
    end: datetime
    """End, exclusive."""
    allocations: tuple[Allocation, ...]
    """Allocations, every reservation's."""

    def hosts(self, key: str | None = None) -> list[str]:
        """Hosts used (by one reservation when ``key`` is given), sorted, unique."""
        return sorted({a.host for a in self.allocations if key is None or a.key == key})


@dataclass(frozen=True)
class Blocker:
    """A booking that stands in the way, for messages that say which."""

    lease_id: str
    """The lease that holds the capacity."""
    host: str
    """Host it holds."""
    start: datetime
    """Its start."""
    end: datetime
    """Its end."""


@dataclass(frozen=True)
class NoFit:
    """Why a request cannot be placed."""

    reason: str
    """Sentence for people: which reservation, how many hosts match, how many are free."""
    key: str = ""
    """Reservation key that failed."""
    blockers: tuple[Blocker, ...] = ()
    """Bookings that hold the needed capacity (for update refusals)."""
    earliest_start: datetime | None = None
    """When preemptible minimum lifetimes are what blocks: the first start that would fit."""


@dataclass(frozen=True)
class Window:
    """A window in which a lease fits, with where it would go."""

    start: datetime
    """Start."""
    end: datetime
    """End."""
    placement: Placement
    """Where."""


@dataclass(frozen=True)
class Preemptible:
    """A preemptible server running on capacity nobody reserved."""

    server_id: str
    """Server id."""
    host: str
    """Host."""
    amount: Amount
    """What it holds."""
    started_at: datetime
    """When it started: it may not be evicted before ``started_at + min_lifetime``."""


@dataclass(frozen=True)
class CalendarBucket:
    """Capacity of one resource class in one time bucket."""

    start: datetime
    """Bucket start."""
    total: int
    """Capacity (hosts, GPUs, slices or vCPUs)."""
    reserved: int
    """Held by reservations at the busiest moment of the bucket."""


@dataclass(frozen=True)
class CalendarRow:
    """One resource class over time (``hosts:gpu``, ``gpu:A100``, ``slice:A100:1g.10gb``...)."""

    resource: str
    """Resource class."""
    buckets: tuple[CalendarBucket, ...]
    """Buckets in time order."""
