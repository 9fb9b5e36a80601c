"""Resource vectors of hosts and of what is placed on them, and how GPUs are shared.

A host's capacity and every holding on it are integer vectors (tuples)::

    (occupancy, vcpus, memory_mb, disk_gb, units of GPU 0, units of GPU 1, ...)

``occupancy`` counts holders: a shared holding (instance slots, slices, a preemptible)
adds 1, a whole-host holding adds :data:`WHOLE`, which is also the capacity, so a whole
host fits only where nothing else is and nothing fits where a whole host is.

GPU slices, simplified from A100/H100 MIG:

- every GPU is :data:`UNITS_PER_GPU` (7) compute units; a profile ``Ng.Mgb`` takes N of
  them and a whole GPU takes all 7, so a GPU with any slice on it cannot be given whole;
- slices are pinned to one GPU when placed (``Amount.gpu_units``) and stay there for the
  whole reservation, so a 4g and a 4g never share a GPU and the check "units of each GPU
  never exceed 7 at any instant" is sound over time without migrating running slices;
- any mix of profiles whose units add up to 7 fits on one GPU: the memory part of the
  profile name and MIG's fixed placement offsets are not modelled;
- a GPU model offers slices only when its :class:`GpuSpec` lists ``mig_profiles``; the
  profile must be one of them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from ecliptic.scheduler.model import Amount, FlavorRequest, HostInfo, SliceRequest

UNITS_PER_GPU = 7
"""Compute units of one GPU; a whole GPU is all of them."""

WHOLE = 1 << 40
"""Occupancy of a whole-host holding, and the occupancy capacity of every host."""

OCC, VCPU, MEM, DISK, GPU0 = 0, 1, 2, 3, 4
"""Positions in a resource vector; GPU ``i`` is at ``GPU0 + i``."""

Vector = tuple[int, ...]

_PROFILE_RE = re.compile(r"^([1-7])g\.\d+gb(?:\+\w+)?$", re.IGNORECASE)


class ProfileError(ValueError):
    """A GPU slice profile that is not of the form ``Ng.Mgb`` with N between 1 and 7."""

    code = "invalid_request"


@lru_cache(maxsize=256)
def profile_units(profile: str) -> int:
    """Compute units a slice of ``profile`` (``3g.40gb``) takes on its GPU."""
    m = _PROFILE_RE.match(profile)
    if m is None:
        raise ProfileError(
            f"GPU slice profile {profile!r} is not of the form 'Ng.Mgb' with N from 1 to 7"
        )
    return int(m.group(1))


class HostShape:
    """The capacity vector of one host and the layout of its GPUs."""

    __slots__ = ("cap", "gpu_model", "gpu_profiles", "models", "ngpus", "whole", "zero")

    def __init__(self, host: HostInfo) -> None:
        models: list[str] = []
        profiles: list[frozenset[str]] = []
        for spec in host.gpus:
            for _ in range(spec.count):
                models.append(spec.model)
                profiles.append(frozenset(spec.mig_profiles))
        self.ngpus = len(models)
        """Number of GPUs."""
        self.gpu_model: tuple[str, ...] = tuple(models)
        """Model of each GPU, by index."""
        self.gpu_profiles: tuple[frozenset[str], ...] = tuple(profiles)
        """Slice profiles each GPU offers, by index."""
        self.models: tuple[str, ...] = tuple(sorted(set(models)))
        """GPU models present, sorted."""
        self.cap: Vector = (WHOLE, host.vcpus, host.memory_mb, host.disk_gb) + (
            UNITS_PER_GPU,
        ) * self.ngpus
        """Capacity vector."""
        self.whole: Vector = self.cap
        """The vector of a whole-host holding."""
        self.zero: Vector = (0,) * len(self.cap)
        """The empty vector."""

    def gpus_of(self, model: str) -> list[int]:
        """Indices of the GPUs of ``model``."""
        return [i for i, m in enumerate(self.gpu_model) if m == model]

    def slice_gpus(self, profile: str, model: str | None) -> list[int]:
        """Indices of the GPUs (of ``model`` when given) that offer ``profile``."""
        return [
            i
            for i in range(self.ngpus)
            if profile in self.gpu_profiles[i] and (model is None or self.gpu_model[i] == model)
        ]


@dataclass(frozen=True)
class SlotDemand:
    """What one instance slot (or one GPU slice) needs on a host."""

    vcpus: int = 0
    """vCPUs."""
    memory_mb: int = 0
    """Memory, MiB."""
    disk_gb: int = 0
    """Disk, GB."""
    gpu_model: str | None = None
    """GPU model (None: any model, for whole GPUs; any offering the profile, for slices)."""
    gpus: int = 0
    """Whole GPUs."""
    profile: str | None = None
    """One slice of this profile."""
    share: bool = False
    """The slice also books its share of the host's vCPUs and memory (a GPU-slice
    reservation that names no size): see :meth:`share_of`."""

    @property
    def units(self) -> int:
        """Compute units of the slice, 0 without one."""
        return profile_units(self.profile) if self.profile else 0

    def share_limit(self, shape: HostShape, free: Sequence[int]) -> int:
        """With ``share``: how many slices' shares of vCPUs and memory fit in ``free``."""
        total = UNITS_PER_GPU * shape.ngpus
        n = 1 << 30
        for pos in (VCPU, MEM):
            per = shape.cap[pos] * self.units
            if per > 0:
                # The most k with cap * units * k // total <= free.
                n = min(n, max(0, ((free[pos] + 1) * total - 1) // per))
        return n

    def share_of(self, shape: HostShape, n: int) -> tuple[int, int]:
        """With ``share``: the vCPUs and memory ``n`` slices book on a host of ``shape``, their
        units' part of the host's, rounded down (so shares never add up to more than it)."""
        total = UNITS_PER_GPU * shape.ngpus
        if total == 0:
            return 0, 0
        units = self.units * n
        return shape.cap[VCPU] * units // total, shape.cap[MEM] * units // total


def slot_demand(req: FlavorRequest | SliceRequest) -> SlotDemand:
    """What one slot of a flavor reservation, or one slice of a slice reservation, needs."""
    if isinstance(req, FlavorRequest):
        return SlotDemand(
            req.vcpus, req.memory_mb, req.disk_gb, req.gpu_model, req.gpus, req.gpu_profile
        )
    return SlotDemand(
        vcpus=req.vcpus or 0,
        memory_mb=req.memory_mb or 0,
        gpu_model=req.gpu_model,
        profile=req.profile,
        share=req.vcpus is None and req.memory_mb is None,
    )


@dataclass(frozen=True)
class HostFit:
    """How many slots fit on one host, and what taking them would hold."""

    slots: int
    """Slots placed."""
    vector: Vector
    """Resource vector of the holding (occupancy 1)."""
    gpu_units: tuple[tuple[int, int], ...]
    """(GPU index, units) pairs held, sorted."""
    gpus: tuple[tuple[str, int], ...]
    """Whole GPUs by model."""


def room(cap: Sequence[int], used: Sequence[int]) -> list[int]:
    """Capacity left: ``cap - used`` per position."""
    return [c - u for c, u in zip(cap, used, strict=False)]


def place_slots(shape: HostShape, free: Sequence[int], demand: SlotDemand, limit: int) -> HostFit:
    """Put up to ``limit`` slots of ``demand`` on a host with ``free`` room, best-fit on GPUs.

    Whole GPUs go on wholly free GPUs (lowest index first); each slice goes on the GPU that
    offers the profile and has the least room that still holds it, so partly cut GPUs fill
    up before whole ones are cut.
    """
    if free[OCC] < 1 or limit <= 0:
        return HostFit(0, shape.zero, (), ())
    n = limit
    for pos, need in ((VCPU, demand.vcpus), (MEM, demand.memory_mb), (DISK, demand.disk_gb)):
        if need > 0:
            n = min(n, free[pos] // need)
    if demand.share:
        n = min(n, demand.share_limit(shape, free))
    if n <= 0:
        return HostFit(0, shape.zero, (), ())
    units: dict[int, int] = {}
    whole: dict[str, int] = {}
    if demand.gpus > 0:
        models = [demand.gpu_model] if demand.gpu_model else list(shape.models)
        best: tuple[int, str, list[int]] | None = None
        for model in models:
            idle = [i for i in shape.gpus_of(model) if free[GPU0 + i] == UNITS_PER_GPU]
            k = min(n, len(idle) // demand.gpus)
            if k > 0 and (best is None or k > best[0]):
                best = (k, model, idle)
        if best is None:
            return HostFit(0, shape.zero, (), ())
        n, model, idle = best
        for i in idle[: n * demand.gpus]:
            units[i] = UNITS_PER_GPU
        whole[model] = n * demand.gpus
    elif demand.profile:
        need = demand.units
        left = {i: free[GPU0 + i] for i in shape.slice_gpus(demand.profile, demand.gpu_model)}
        placed = 0
        while placed < n:
            fitting = [(u, i) for i, u in left.items() if u >= need]
            if not fitting:
                break
            _, i = min(fitting)
            left[i] -= need
            units[i] = units.get(i, 0) + need
            placed += 1
        n = placed
        if n == 0:
            return HostFit(0, shape.zero, (), ())
    vec = [0] * len(shape.cap)
    vec[OCC] = 1
    vec[VCPU] = demand.vcpus * n
    vec[MEM] = demand.memory_mb * n
    vec[DISK] = demand.disk_gb * n
    if demand.share:
        vec[VCPU], vec[MEM] = demand.share_of(shape, n)
    for i, u in units.items():
        vec[GPU0 + i] = u
    return HostFit(n, tuple(vec), tuple(sorted(units.items())), tuple(sorted(whole.items())))


def max_slots(shape: HostShape, free: Sequence[int], demand: SlotDemand) -> int:
    """How many slots of ``demand`` fit in ``free`` room (no more than the GPUs allow)."""
    if free[OCC] < 1:
        return 0
    n = 1 << 30
    for pos, need in ((VCPU, demand.vcpus), (MEM, demand.memory_mb), (DISK, demand.disk_gb)):
        if need > 0:
            n = min(n, free[pos] // need)
    if demand.share:
        n = min(n, demand.share_limit(shape, free))
    if n <= 0:
        return 0
    if demand.gpus > 0:
        models = [demand.gpu_model] if demand.gpu_model else list(shape.models)
        best = 0
        for model in models:
            idle = sum(1 for i in shape.gpus_of(model) if free[GPU0 + i] == UNITS_PER_GPU)
            best = max(best, idle // demand.gpus)
        n = min(n, best)
    elif demand.profile:
        need = demand.units
        n = min(
            n,
            sum(
                max(0, free[GPU0 + i]) // need
                for i in shape.slice_gpus(demand.profile, demand.gpu_model)
            ),
        )
    return max(0, n)


def holding_vector(shape: HostShape, amount: Amount) -> Vector:
    """The resource vector of ``amount`` on a host of ``shape``.

    GPU holdings must say which GPUs they sit on (``amount.gpu_units``); see
    :func:`pin_gpus` for amounts that do not.
    """
    if amount.whole_host:
        return shape.whole
    vec = [0] * len(shape.cap)
    vec[OCC] = 1
    vec[VCPU] = amount.vcpus
    vec[MEM] = amount.memory_mb
    vec[DISK] = amount.disk_gb
    for i, u in amount.gpu_units:
        if 0 <= i < shape.ngpus:  # a GPU the host no longer has holds nothing
            vec[GPU0 + i] += u
    return tuple(vec)


def needs_pinning(amount: Amount) -> bool:
    """Whether ``amount`` holds GPUs or slices without saying on which GPUs."""
    return not amount.whole_host and bool(amount.gpus or amount.slices) and not amount.gpu_units


def pin_gpus(shape: HostShape, free: Sequence[int], amount: Amount) -> tuple[tuple[int, int], ...]:
    """Choose GPUs for an amount's whole GPUs and slices in ``free`` room (best-fit).

    Returns (GPU index, units) pairs; GPUs that do not fit are put on GPU 0 of the model
    anyway (over capacity), so that a recorded holding is never silently dropped.
    """
    left = [free[GPU0 + i] if GPU0 + i < len(free) else 0 for i in range(shape.ngpus)]
    units: dict[int, int] = {}
    for model, count in amount.gpus:
        for _ in range(count):
            idle = [i for i in shape.gpus_of(model) if left[i] == UNITS_PER_GPU]
            i = idle[0] if idle else (shape.gpus_of(model) or [0])[0]
            left[i] = left[i] - UNITS_PER_GPU if i < len(left) else 0
            units[i] = units.get(i, 0) + UNITS_PER_GPU
    for key, count in amount.slices:
        model, _, profile = key.partition(":")
        need = profile_units(profile)
        for _ in range(count):
            offer = shape.slice_gpus(profile, model or None) or shape.gpus_of(model) or [0]
            fitting = [(left[i], i) for i in offer if i < len(left) and left[i] >= need]
            i = min(fitting)[1] if fitting else offer[0]
            if i < len(left):
                left[i] -= need
            units[i] = units.get(i, 0) + need
    return tuple(sorted(units.items()))


def free_amount(shape: HostShape, used: Sequence[int]) -> Amount:
    """The room left on a host as an :class:`Amount` (whole GPUs idle, slices that still fit).

    ``whole_host`` says the host is held whole (and the room is nothing), as on a holding.
    """
    free = room(shape.cap, used)
    whole: dict[str, int] = {}
    slices: dict[str, int] = {}
    units: list[tuple[int, int]] = []
    for i in range(shape.ngpus):
        left = max(0, free[GPU0 + i])
        units.append((i, left))
        model = shape.gpu_model[i]
        if left == UNITS_PER_GPU:
            whole[model] = whole.get(model, 0) + 1
        for profile in shape.gpu_profiles[i]:
            k = f"{model}:{profile}"
            slices[k] = slices.get(k, 0) + left // profile_units(profile)
    return Amount(
        vcpus=max(0, free[VCPU]),
        memory_mb=max(0, free[MEM]),
        disk_gb=max(0, free[DISK]),
        gpus=tuple(sorted((m, n) for m, n in whole.items() if n)),
        slices=tuple(sorted((k, n) for k, n in slices.items() if n)),
        whole_host=used[OCC] >= WHOLE,
        gpu_units=tuple(units),
    )


def whole_host_amount(host: HostInfo, shape: HostShape) -> Amount:
    """The amount a whole-host reservation holds: everything."""
    counts: dict[str, int] = {}
    for m in shape.gpu_model:
        counts[m] = counts.get(m, 0) + 1
    return Amount(
        vcpus=host.vcpus,
        memory_mb=host.memory_mb,
        disk_gb=host.disk_gb,
        gpus=tuple(sorted(counts.items())),
        whole_host=True,
        gpu_units=tuple((i, UNITS_PER_GPU) for i in range(shape.ngpus)),
    )
