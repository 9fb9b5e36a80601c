"""The engine's state: hosts, their capacity timelines, and the bookings on them.

Everything else the engine does (placement, search, the calendar, preemption) reads
this state; only ``book``, ``release`` and the inventory change it. See
:mod:`ecliptic.scheduler.engine` for the whole engine and its contract.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, NamedTuple

from ecliptic.scheduler.filters import host_properties
from ecliptic.scheduler.model import (
    Allocation,
    HostInfo,
    HostRequest,
    Placement,
    Preemptible,
    Request,
)
from ecliptic.scheduler.occupancy import Levels
from ecliptic.scheduler.resources import (
    GPU0,
    OCC,
    UNITS_PER_GPU,
    VCPU,
    HostShape,
    Vector,
    holding_vector,
    needs_pinning,
    pin_gpus,
    profile_units,
)
from ecliptic.scheduler.timeline import Timeline

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidRequest(ValueError):
    """A request that cannot mean anything (negative counts, start after end, duplicate keys)."""

    code = "invalid_request"


class CapacityError(RuntimeError):
    """A booking that would put a host over capacity (the placement is stale)."""

    code = "no_capacity"


class UnknownHost(KeyError):
    """A host name the engine does not know."""

    code = "not_found"


def to_minutes(t: datetime, *, up: bool = False) -> int:
    """Minutes since the epoch (UTC; naive times are taken as UTC), rounded down or up."""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    ts = t.timestamp()
    return int(-(-ts // 60)) if up else int(ts // 60)


def from_minutes(m: int) -> datetime:
    """The UTC datetime of ``m`` minutes since the epoch."""
    return _EPOCH + timedelta(minutes=m)


def span_minutes(d: timedelta) -> int:
    return math.ceil(d.total_seconds() / 60)


class Holding(NamedTuple):
    """One allocation as it sits in a timeline."""

    host: int
    start: int
    end: int
    vec: Vector


def when_text(s: int, e: int) -> str:
    return f"from {from_minutes(s):%Y-%m-%d %H:%M} to {from_minutes(e):%Y-%m-%d %H:%M}"


class Terms:
    """The calendar classes a host counts in, and how much of each a usage vector holds.

    ``hosts:gpu``/``hosts:cpu``: 1 while anything is reserved on the host; ``vcpu``: vCPUs
    held; ``gpu:<model>``: GPUs with anything on them; ``slice:<model>:<profile>``: slices
    of that profile that no longer fit (all that would fit on empty GPUs minus those that
    still fit). The GPU part is remembered per distinct GPU usage (there are few).
    """

    __slots__ = ("_gpu", "_memo", "_vcpus", "names", "totals", "zeros")

    def __init__(self, shape: HostShape) -> None:
        self._vcpus = shape.cap[VCPU]
        names = ["hosts:gpu" if shape.ngpus else "hosts:cpu", "vcpu"]
        gpu: list[tuple[tuple[int, ...], int]] = []  # (positions, units per slice; 0: whole)
        for model in shape.models:
            idx = tuple(GPU0 + i for i in shape.gpus_of(model))
            names.append(f"gpu:{model}")
            gpu.append((idx, 0))
            offered: set[str] = set()
            for i in idx:
                offered |= shape.gpu_profiles[i - GPU0]
            for profile in sorted(offered):
                names.append(f"slice:{model}:{profile}")
                pidx = tuple(GPU0 + i for i in shape.slice_gpus(profile, model))
                gpu.append((pidx, profile_units(profile)))
        self.names: tuple[str, ...] = tuple(names)
        """Class names, in the order of :meth:`values`."""
        self._gpu = gpu
        self._memo: dict[Vector, tuple[int, ...]] = {}
        self.totals: tuple[int, ...] = tuple(
            [1, self._vcpus] + [len(idx) * (UNITS_PER_GPU // u if u else 1) for idx, u in gpu]
        )
        """Capacity in each class."""
        self.zeros: tuple[int, ...] = (0,) * len(names)
        """Values of an empty host."""

    def values(self, v: Vector) -> tuple[int, ...]:
        """How much of each class the usage ``v`` holds."""
        units = v[GPU0:]
        g = self._memo.get(units)
        if g is None:
            out = []
            for idx, per in self._gpu:
                if per:
                    full = len(idx) * (UNITS_PER_GPU // per)
                    out.append(full - sum(max(0, UNITS_PER_GPU - v[i]) // per for i in idx))
                else:
                    out.append(sum(1 for i in idx if v[i] > 0))
            g = self._memo[units] = tuple(out)
        return (1 if v[OCC] > 0 else 0, min(v[VCPU], self._vcpus), *g)


def zip3(cap: Vector, used: Vector, extra: list[int] | None) -> Iterator[tuple[int, int, int]]:
    if extra is None:
        return ((c, u, 0) for c, u in zip(cap, used, strict=True))
    return zip(cap, used, extra, strict=True)


def within(total: Sequence[int], cap: Vector) -> bool:
    return all(t <= c for t, c in zip(total, cap, strict=True))


def add_into(total: list[int], vec: Vector) -> None:
    for i, v in enumerate(vec):
        total[i] += v


def sub_from(total: list[int], vec: Vector) -> None:
    for i, v in enumerate(vec):
        total[i] -= v


def copy_timeline(tl: Timeline) -> Timeline:
    out = Timeline(tl.zero)
    out.times = list(tl.times)
    out.levels = list(tl.levels)
    out.busy_starts = list(tl.busy_starts)
    out.busy_ends = list(tl.busy_ends)
    return out


class EngineCore:
    """Hosts, their timelines and the bookings on them."""

    def __init__(
        self,
        hosts: Iterable[HostInfo] = (),
        min_preemptible_lifetime: timedelta = timedelta(hours=1),
        *,
        alternative_spacing: timedelta = timedelta(hours=1),
    ) -> None:
        self._min_life = span_minutes(min_preemptible_lifetime)
        self._spacing = max(1, span_minutes(alternative_spacing))
        self._info: list[HostInfo] = []
        self._by_name: dict[str, HostInfo] = {}
        self._ids: dict[str, int] = {}
        self._shape: list[HostShape] = []
        self._props: list[dict[str, Any]] = []
        self._size: list[tuple[int, int, int, int]] = []
        self._up: list[bool] = []
        self._takes_hosts: list[bool] = []
        """Per host: up, and serves whole-host requests (not held for VMs only)."""
        self._takes_slots: list[bool] = []
        """Per host: up, and serves slots, slices and backfill (not held for bare metal)."""
        self._tl: list[Timeline] = []
        self._terms: list[Terms] = []
        self._term_cache: dict[tuple[Any, ...], Terms] = {}
        self._host_leases: list[dict[str, int]] = []
        self._leases: dict[str, Placement] = {}
        self._span_of: dict[str, tuple[int, int]] = {}
        self._holdings: dict[str, list[Holding]] = {}
        self._pre: dict[str, Preemptible] = {}
        self._pre_vec: dict[str, Vector] = {}
        self._pre_on: dict[int, set[str]] = {}
        self._levels: dict[str, Levels] | None = None
        """Calendar index (per-class reserved levels); None until the calendar is first used."""
        self._cache: dict[tuple[Any, ...], tuple[list[int], list[range]]] = {}
        self._by_value: dict[str, dict[str, list[int]]] = {}
        """Per property, the hosts of each string value (built when a filter needs it)."""
        self._pooled = 0
        """Hosts whose ``ready`` is not ``any`` (hosts that convert between kinds)."""
        for host in hosts:
            self.set_host(host)

    def set_host(self, host: HostInfo) -> None:
        """Add a host or replace what is known of it (capacity, properties, up or down)."""
        h = self._ids.get(host.name)
        if h is None:
            self._add_host(host)
            return
        old = self._info[h]
        if old == host:
            return
        self._by_name[host.name] = host
        if replace(old, up=host.up, serves=host.serves, ready=host.ready) == host:
            # Nothing cached depends on up, serves or ready: candidates are checked one by one.
            self._pooled += (host.ready != "any") - (old.ready != "any")
            self._info[h] = host
            self._set_up(h, host.up)
            self._set_serves(h)
            return
        self._set_up(h, False)
        shape = HostShape(host)
        self._pooled += (host.ready != "any") - (old.ready != "any")
        self._info[h] = host
        self._shape[h] = shape
        self._props[h] = host_properties(host)
        self._size[h] = (shape.ngpus, host.vcpus, host.memory_mb, host.disk_gb)
        self._terms[h] = self._terms_for(shape)
        holdings: list[tuple[int, int, Vector]] = []
        for lid in self._host_leases[h]:
            s, e = self._span_of[lid]
            kept: list[Holding] = []
            for hd, alloc in zip(self._holdings[lid], self._alloc_list(lid), strict=True):
                if hd.host == h:
                    hd = Holding(h, s, e, holding_vector(shape, alloc.amount))
                    holdings.append((s, e, hd.vec))
                kept.append(hd)
            self._holdings[lid] = kept
        for sid in self._pre_on.get(h, ()):
            self._pre_vec[sid] = holding_vector(shape, self._pre[sid].amount)
        self._tl[h] = Timeline.build(shape.zero, holdings)
        self._cache.clear()
        self._by_value.clear()
        self._set_up(h, host.up)
        self._set_serves(h)

    def _add_host(self, host: HostInfo) -> int:
        h = len(self._info)
        shape = HostShape(host)
        self._pooled += host.ready != "any"
        self._ids[host.name] = h
        self._info.append(host)
        self._by_name[host.name] = host
        self._shape.append(shape)
        self._props.append(host_properties(host))
        self._size.append((shape.ngpus, host.vcpus, host.memory_mb, host.disk_gb))
        self._up.append(False)
        self._takes_hosts.append(False)
        self._takes_slots.append(False)
        self._tl.append(Timeline(shape.zero))
        self._terms.append(self._terms_for(shape))
        self._host_leases.append({})
        if self._levels is not None:
            for name in self._terms[h].names:
                self._levels.setdefault(name, Levels())
        self._cache.clear()
        self._by_value.clear()
        self._set_up(h, host.up)
        self._set_serves(h)
        return h

    def _terms_for(self, shape: HostShape) -> Terms:
        """Calendar terms, shared by every host of the same shape."""
        key = (shape.cap, shape.gpu_model, shape.gpu_profiles)
        terms = self._term_cache.get(key)
        if terms is None:
            terms = self._term_cache[key] = Terms(shape)
        return terms

    def _ready_for(self, requests: Sequence[Request]) -> set[int]:
        """Hosts that take these requests without a conversion (empty when no host converts,
        or the requests are of both kinds)."""
        if not self._pooled:
            return set()
        kinds = {"baremetal" if isinstance(r, HostRequest) else "vm" for r in requests}
        if len(kinds) != 1:
            return set()
        kind = kinds.pop()
        return {h for h, info in enumerate(self._info) if info.ready in ("any", kind)}

    def _set_serves(self, h: int) -> None:
        """Which requests the host takes now, from its ``up`` and ``serves``."""
        up, serves = self._up[h], self._info[h].serves
        self._takes_hosts[h] = up and serves != "vm"
        self._takes_slots[h] = up and serves != "baremetal"

    def _set_up(self, h: int, up: bool) -> None:
        """Mark a host up or down, adding or removing its share of the calendar."""
        if self._up[h] == up:
            return
        self._up[h] = up
        if self._levels is None:
            return
        sign = 1 if up else -1
        terms = self._terms[h]
        tl = self._tl[h]
        for k in range(len(tl.times) - 1):
            for name, c in zip(terms.names, terms.values(tl.levels[k]), strict=True):
                if c:
                    lv = self._levels.setdefault(name, Levels())
                    lv.add(tl.times[k], tl.times[k + 1], sign * c)

    @property
    def hosts(self) -> Mapping[str, HostInfo]:
        """Every host known, by name (read-only)."""
        return MappingProxyType(self._by_name)

    def _host_id(self, name: str) -> int:
        h = self._ids.get(name)
        if h is None:
            raise UnknownHost(name)
        return h

    def book(self, lease_id: str, placement: Placement) -> None:
        """Record ``placement`` for ``lease_id`` (replacing any earlier one); never overbooks."""
        previous = self._leases.get(lease_id)
        if previous is not None:
            self._unbook(lease_id)
        try:
            self._book(lease_id, placement, check=True)
        except Exception:
            if previous is not None:
                self._book(lease_id, previous, check=False)
            raise

    def _book(self, lease_id: str, placement: Placement, *, check: bool) -> None:
        s = to_minutes(placement.start)
        e = to_minutes(placement.end, up=True)
        if e <= s:
            raise InvalidRequest(f"lease {lease_id!r} ends before it starts")
        allocs: list[Allocation] = []
        holdings: list[Holding] = []
        extra: dict[int, list[int]] = {}
        for alloc in placement.allocations:
            h = self._host_id(alloc.host)
            shape = self._shape[h]
            if needs_pinning(alloc.amount):
                free = [
                    c - u - x for c, u, x in zip3(shape.cap, self._tl[h].peak(s, e), extra.get(h))
                ]
                alloc = replace(
                    alloc,
                    amount=replace(alloc.amount, gpu_units=pin_gpus(shape, free, alloc.amount)),
                )
            vec = holding_vector(shape, alloc.amount)
            allocs.append(alloc)
            holdings.append(Holding(h, s, e, vec))
            acc = extra.setdefault(h, [0] * len(vec))
            for i, v in enumerate(vec):
                acc[i] += v
        if check:
            for h, total in extra.items():
                shape = self._shape[h]
                peak = self._tl[h].peak(s, e)
                if any(p + v > c for p, v, c in zip(peak, total, shape.cap, strict=True)):
                    raise CapacityError(
                        f"lease {lease_id!r} no longer fits on host {self._info[h].name!r} "
                        f"{when_text(s, e)}"
                    )
        if tuple(allocs) != placement.allocations:
            placement = replace(placement, allocations=tuple(allocs))
        for hd in holdings:
            self._apply(hd.host, self._tl[hd.host].add(s, e, hd.vec, 1))
            self._host_leases[hd.host][lease_id] = self._host_leases[hd.host].get(lease_id, 0) + 1
        self._leases[lease_id] = placement
        self._span_of[lease_id] = (s, e)
        self._holdings[lease_id] = holdings

    def _apply(self, h: int, changes: list[tuple[int, int, Vector, Vector]]) -> None:
        """Carry a host's timeline changes into the calendar levels."""
        levels = self._levels
        if levels is None or not self._up[h]:
            return
        terms = self._terms[h]
        for a, b, old, new in changes:
            before = terms.values(old)
            after = terms.values(new)
            if before != after:
                for name, x, y in zip(terms.names, before, after, strict=True):
                    if x != y:
                        levels[name].add(a, b, y - x)

    def release(self, lease_id: str) -> None:
        """Forget a lease's placement (nothing happens for a lease that is not booked)."""
        if lease_id in self._leases:
            self._unbook(lease_id)

    def _unbook(self, lease_id: str) -> Placement:
        placement = self._leases.pop(lease_id)
        del self._span_of[lease_id]
        for hd in self._holdings.pop(lease_id):
            self._apply(hd.host, self._tl[hd.host].add(hd.start, hd.end, hd.vec, -1))
            held = self._host_leases[hd.host]
            held[lease_id] -= 1
            if not held[lease_id]:
                del held[lease_id]
        return placement

    def _alloc_list(self, lease_id: str) -> tuple[Allocation, ...]:
        return self._leases[lease_id].allocations

    def booking(self, lease_id: str) -> Placement | None:
        """The placement booked for ``lease_id``, if any."""
        return self._leases.get(lease_id)

    def bookings(self) -> dict[str, Placement]:
        """Every booked placement by lease id."""
        return dict(self._leases)

    @contextmanager
    def _lifted(self, lease_id: str | None) -> Iterator[set[int]]:
        """Take a lease's own booking out while it is re-placed; yields the hosts it held."""
        if not lease_id or lease_id not in self._leases:
            yield set()
            return
        own = {hd.host for hd in self._holdings[lease_id]}
        placement = self._unbook(lease_id)
        try:
            yield own
        finally:
            self._book(lease_id, placement, check=False)
