"""A first-fit host picker of the kind OpenStack Blazar uses, as a yardstick for the engine.

Same inputs and answers as :class:`~ecliptic.scheduler.engine.Engine` (``fit``, ``earliest``,
``book``, ``release``, ``booking``), the same resource model (so GPU slices pack into GPUs
the same way) and the same filter language, but Blazar's way of choosing:

- hosts are scanned in inventory order and each one's reservations are checked one by one
  (Blazar runs one allocation query per host, ``_matching_hosts``); every matching host is
  checked, because Blazar builds its candidate lists in full before slicing them;
- whole hosts: hosts with no current or future reservation first, then hosts free in the
  window, the first ``max`` of them (``not_allocated[:max]``, else ``allocated +
  not_allocated``); no notion of time gaps or host size;
- instance slots: hosts that already hold reservations first, then empty ones, each filled
  with as many slots as fit, in order (``pickup_hosts``); hosts with a whole-host booking in
  the window are skipped; affinity takes the first host with room for all slots,
  anti-affinity the first hosts with room for one;
- GPU slices (Blazar has none): first GPU, by index, with enough free units;
- no ``earliest``: like a user of Blazar, it tries start times one hour apart until the
  first-fit succeeds.

It is kinder than Blazar in one way: a host's usage is its peak inside the window, not over
the whole life of the overlapping leases as Blazar's ``max_usages`` computes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from ecliptic.scheduler.engine import check_requests, from_minutes, to_minutes
from ecliptic.scheduler.filters import compile_filter, host_properties
from ecliptic.scheduler.model import (
    Allocation,
    Amount,
    FlavorRequest,
    HostInfo,
    HostRequest,
    NoFit,
    Placement,
    Request,
    Window,
)
from ecliptic.scheduler.resources import (
    GPU0,
    MEM,
    OCC,
    UNITS_PER_GPU,
    VCPU,
    HostShape,
    SlotDemand,
    Vector,
    holding_vector,
    needs_pinning,
    pin_gpus,
    profile_units,
    slot_demand,
    whole_host_amount,
)

STEP = 60
"""Minutes between the start times the baseline tries in ``earliest``."""

_Reservation = tuple[int, int, Vector, str]


class FirstFit:
    """Blazar-style first-fit placement over per-host reservation lists."""

    def __init__(self, hosts: Iterable[HostInfo] = ()) -> None:
        self._info: list[HostInfo] = []
        self._ids: dict[str, int] = {}
        self._shape: list[HostShape] = []
        self._props: list[dict[str, object]] = []
        self._res: list[list[_Reservation]] = []
        self._leases: dict[str, Placement] = {}
        self._match: dict[str, list[int]] = {}
        for host in hosts:
            self.set_host(host)

    def set_host(self, host: HostInfo) -> None:
        """Add a host or replace what is known of it."""
        self._match.clear()
        h = self._ids.get(host.name)
        if h is None:
            self._ids[host.name] = len(self._info)
            self._info.append(host)
            self._shape.append(HostShape(host))
            self._props.append(host_properties(host))
            self._res.append([])
        else:
            self._info[h] = host
            self._shape[h] = HostShape(host)
            self._props[h] = host_properties(host)

    # -- bookings ----------------------------------------------------------------------------

    def book(self, lease_id: str, placement: Placement) -> None:
        """Record a placement (no checks: the baseline trusts its own fit)."""
        self.release(lease_id)
        s, e = to_minutes(placement.start), to_minutes(placement.end, up=True)
        allocs = []
        for a in placement.allocations:
            h = self._ids[a.host]
            amount = a.amount
            if needs_pinning(amount):
                free = [c - u for c, u in zip(self._shape[h].cap, self._peak(h, s, e), strict=True)]
                amount = replace(amount, gpu_units=pin_gpus(self._shape[h], free, amount))
                a = replace(a, amount=amount)
            allocs.append(a)
            self._res[h].append((s, e, holding_vector(self._shape[h], amount), lease_id))
        self._leases[lease_id] = replace(placement, allocations=tuple(allocs))

    def release(self, lease_id: str) -> None:
        """Forget a lease's placement."""
        placement = self._leases.pop(lease_id, None)
        if placement is None:
            return
        for h in {self._ids[a.host] for a in placement.allocations}:
            self._res[h] = [r for r in self._res[h] if r[3] != lease_id]

    def booking(self, lease_id: str) -> Placement | None:
        """The placement booked for a lease."""
        return self._leases.get(lease_id)

    # -- checks, one host at a time, like Blazar -----------------------------------------------

    def _overlapping(self, h: int, s: int, e: int) -> list[_Reservation]:
        return [r for r in self._res[h] if r[0] < e and r[1] > s]

    def _peak(self, h: int, s: int, e: int) -> Vector:
        """Peak usage of every resource inside [s, e), by a sweep over the host's reservations."""
        zero = self._shape[h].zero
        events: list[tuple[int, int, Vector]] = []
        for rs, re_, vec, _ in self._overlapping(h, s, e):
            events.append((max(rs, s), 1, vec))
            events.append((min(re_, e), -1, vec))
        events.sort(key=lambda x: (x[0], x[1]))
        level = list(zero)
        peak = list(zero)
        for _, sign, vec in events:
            for i, v in enumerate(vec):
                level[i] += sign * v
                if level[i] > peak[i]:
                    peak[i] = level[i]
        return tuple(peak)

    # -- fit ---------------------------------------------------------------------------------

    def fit(
        self, lease_id: str | None, requests: Sequence[Request], start: datetime, end: datetime
    ) -> Placement | NoFit:
        """First-fit placement of a lease for [start, end), or why not."""
        check_requests(requests)
        s, e = to_minutes(start), to_minutes(end, up=True)
        own = self._leases.get(lease_id) if lease_id else None
        if lease_id and own is not None:
            self.release(lease_id)
        try:
            got = self._place(requests, s, e)
        finally:
            if lease_id and own is not None:
                self.book(lease_id, own)
        if isinstance(got, NoFit):
            return got
        return Placement(start, end, tuple(sorted(got, key=lambda a: (a.key, a.host))))

    def _place(self, requests: Sequence[Request], s: int, e: int) -> list[Allocation] | NoFit:
        taken: dict[int, list[int]] = {}
        out: list[Allocation] = []
        for req in requests:  # Blazar allocates reservations in the order given
            if isinstance(req, HostRequest):
                got = self._hosts_for(req, s, e, taken)
            else:
                affinity = req.affinity if isinstance(req, FlavorRequest) else "none"
                got = self._slots_for(
                    req.key, req.filter, slot_demand(req), req.count, affinity, s, e, taken
                )
            if isinstance(got, NoFit):
                return got
            out.extend(got)
        return out

    def _matching(self, text: str) -> list[int]:
        """Up hosts matching a filter, in inventory order (cached: only the picking is timed)."""
        ids = self._match.get(text)
        if ids is None:
            flt = compile_filter(text)
            ids = self._match[text] = [h for h in range(len(self._info)) if flt(self._props[h])]
        return [h for h in ids if self._info[h].up]

    def _hosts_for(
        self, req: HostRequest, s: int, e: int, taken: dict[int, list[int]]
    ) -> list[Allocation] | NoFit:
        not_allocated: list[int] = []
        allocated: list[int] = []
        for h in self._matching(req.filter):
            if h in taken:
                continue
            future = [r for r in self._res[h] if r[1] > s]
            if not future:
                not_allocated.append(h)
            elif not self._overlapping(h, s, e):
                allocated.append(h)
        if len(not_allocated) >= req.min_count:
            chosen = not_allocated[: req.max_count]
        elif len(allocated) + len(not_allocated) >= req.min_count:
            chosen = (allocated + not_allocated)[: req.max_count]
        else:
            return NoFit(reason=f"reservation {req.key!r}: not enough hosts available", key=req.key)
        out = []
        for h in chosen:
            taken[h] = list(self._shape[h].whole)
            out.append(
                Allocation(
                    req.key, self._info[h].name, whole_host_amount(self._info[h], self._shape[h])
                )
            )
        return out

    def _slots_for(
        self,
        key: str,
        text: str,
        demand: SlotDemand,
        count: int,
        affinity: str,
        s: int,
        e: int,
        taken: dict[int, list[int]],
    ) -> list[Allocation] | NoFit:
        reserved: list[tuple[int, list[int]]] = []
        free_hosts: list[tuple[int, list[int]]] = []
        for h in self._matching(text):
            overlapping = self._overlapping(h, s, e)
            peak = self._peak(h, s, e) if overlapping else self._shape[h].zero
            extra = taken.get(h)
            room = [
                c - p - (extra[i] if extra else 0)
                for i, (c, p) in enumerate(zip(self._shape[h].cap, peak, strict=True))
            ]
            if room[OCC] < 1:
                continue  # a whole-host booking in the window
            (reserved if overlapping or extra else free_hosts).append((h, room))
        plan: list[tuple[int, list[int], int]] = []
        if affinity == "affinity":
            for h, room in reserved + free_hosts:
                if _first_fit(self._shape[h], room, demand, count)[0] >= count:
                    plan = [(h, room, count)]
                    break
        elif affinity == "anti-affinity":
            for h, room in reserved + free_hosts:
                if _first_fit(self._shape[h], room, demand, 1)[0] >= 1:
                    plan.append((h, room, 1))
                    if len(plan) == count:
                        break
        else:
            left = count
            for h, room in reserved + free_hosts:
                n = _first_fit(self._shape[h], room, demand, left)[0]
                if n:
                    plan.append((h, room, n))
                    left -= n
                    if not left:
                        break
        if sum(q for *_, q in plan) < count:
            return NoFit(reason=f"reservation {key!r}: not enough room for {count} slots", key=key)
        out = []
        for h, room, q in plan:
            shape = self._shape[h]
            n, vec, units = _first_fit(shape, room, demand, q)
            acc = taken.setdefault(h, [0] * len(shape.cap))
            for i, v in enumerate(vec):
                acc[i] += v
            whole: dict[str, int] = {}
            slices: dict[str, int] = {}
            for i, u in units:
                model = shape.gpu_model[i]
                if demand.profile:
                    k = f"{model}:{demand.profile}"
                    slices[k] = slices.get(k, 0) + u // profile_units(demand.profile)
                else:
                    whole[model] = whole.get(model, 0) + u // UNITS_PER_GPU
            amount = Amount(
                vcpus=vec[VCPU],
                memory_mb=vec[MEM],
                disk_gb=vec[3],
                gpus=tuple(sorted(whole.items())),
                slices=tuple(sorted(slices.items())),
                gpu_units=units,
            )
            out.append(Allocation(key, self._info[h].name, amount, slots=n))
        return out

    # -- earliest ----------------------------------------------------------------------------

    def earliest(
        self,
        requests: Sequence[Request],
        duration: timedelta,
        not_before: datetime,
        horizon: timedelta,
        alternatives: int = 3,
    ) -> list[Window]:
        """Start times one hour apart, tried in turn until first-fit succeeds."""
        d = int(duration.total_seconds() // 60)
        first = to_minutes(not_before, up=True)
        last = to_minutes(not_before) + int(horizon.total_seconds() // 60) - d
        out: list[Window] = []
        t = first
        while t <= last and len(out) < 1 + alternatives:
            got = self._place(requests, t, t + d)
            if not isinstance(got, NoFit):
                begin, end = from_minutes(t), from_minutes(t + d)
                out.append(Window(begin, end, Placement(begin, end, tuple(got))))
            t += STEP
        return out


def _first_fit(
    shape: HostShape, room: list[int], demand: SlotDemand, limit: int
) -> tuple[int, Vector, tuple[tuple[int, int], ...]]:
    """Slots that fit in ``room`` (up to ``limit``), GPUs and slices on the lowest GPU first."""
    n = limit if room[OCC] >= 1 else 0
    for pos, need in ((VCPU, demand.vcpus), (MEM, demand.memory_mb), (3, demand.disk_gb)):
        if need > 0:
            n = min(n, room[pos] // need)
    if demand.share:
        n = min(n, demand.share_limit(shape, room))
    units: dict[int, int] = {}
    left = list(room)
    placed = 0
    while placed < n:
        if demand.gpus:
            models = [demand.gpu_model] if demand.gpu_model else list(shape.models)
            idle = []
            for m in models:
                idle = [i for i in shape.gpus_of(m) if left[GPU0 + i] == UNITS_PER_GPU]
                if len(idle) >= demand.gpus:
                    break
            if len(idle) < demand.gpus:
                break
            idle = idle[: demand.gpus]
            for i in idle:
                left[GPU0 + i] = 0
                units[i] = UNITS_PER_GPU
        elif demand.profile:
            need = profile_units(demand.profile)
            spot = next(
                (
                    i
                    for i in shape.slice_gpus(demand.profile, demand.gpu_model)
                    if left[GPU0 + i] >= need
                ),
                None,
            )
            if spot is None:
                break
            left[GPU0 + spot] -= need
            units[spot] = units.get(spot, 0) + need
        placed += 1
    vec = [0] * len(shape.cap)
    if placed:
        vec[OCC] = 1
        vec[VCPU] = demand.vcpus * placed
        vec[MEM] = demand.memory_mb * placed
        vec[3] = demand.disk_gb * placed
        if demand.share:
            vec[VCPU], vec[MEM] = demand.share_of(shape, placed)
        for i, u in units.items():
            vec[GPU0 + i] = u
    return placed, tuple(vec), tuple(sorted(units.items()))
