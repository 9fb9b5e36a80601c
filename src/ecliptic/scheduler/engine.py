"""The reservation engine: capacity timelines of every host, and the questions asked of them.

CONTRACT (the services layer is written against these signatures; keep them):

    engine = Engine(hosts, min_preemptible_lifetime=timedelta(hours=1))
    engine.set_host(host_info)                  # add or replace a host (inventory sync, down/up)
    engine.fit(lease_id, requests, start, end) -> Placement | NoFit
    engine.earliest(requests, duration, not_before, horizon, alternatives=3) -> list[Window]
    engine.book(lease_id, placement)            # record a placement (after fit/earliest)
    engine.release(lease_id)                    # forget a lease's placement
    engine.booking(lease_id) -> Placement | None
    engine.calendar(start, end, bucket) -> list[CalendarRow]
    engine.add_preemptible(p) / engine.remove_preemptible(server_id)
    engine.free_now(host, at) -> Amount         # room nobody reserved at instant ``at``
    engine.victims(placement, at) -> list[str]  # preemptible server ids to stop for it
    engine.snapshot() -> dict                   # canonical state, for rebuild-equality tests

``fit`` with a ``lease_id`` that is already booked places the lease as if its own booking
were absent (that is how an update re-places a lease). Preemptible servers never block a
reservation once their minimum lifetime has passed; before it, ``fit`` answers ``NoFit``
with ``earliest_start`` set. Placement is best-fit (the host that leaves the least
stranded room), so large requests still find whole hosts later.

Additions to the contract (extra, nothing above changed):

    Engine.rebuild(hosts, bookings, preemptibles=(), min_preemptible_lifetime=...) -> Engine
                                                # bulk load from the database, no re-checks
    engine.bookings() -> dict[str, Placement]; engine.preemptibles() -> list[Preemptible]
    engine.hosts -> Mapping[str, HostInfo]      # read-only, by name
    engine.backfill_room(host, at) -> Amount    # room a new preemptible may take at ``at``
                                                # and keep for its whole minimum lifetime

How it works:

- Every host has a :class:`~ecliptic.scheduler.timeline.Timeline`: a step function of
  resource vectors (see :mod:`~ecliptic.scheduler.resources`) with bisect lookups, so a
  question about one host costs a few bisects, never a scan of its reservations.
- Candidates are the hosts a filter matches (cached per filter text, dropped when the
  inventory changes), kept in runs of one shape, smallest first.
- Whole hosts: among the shapes the filter allows, the one least in demand over the
  window (the largest share of its hosts still empty, in tenths, from an evenly spread
  sample) and then the smallest; within a shape, the host whose free gap in time is the
  tightest around the window, so long gaps stay whole for long leases (Blazar takes the
  first hosts in database order, untouched ones first).
- Slots and slices: hosts already in use during the window first, those the window adds
  the fewest idle minutes to first; an empty host only when those are full, of the least
  busy shape. Ties go to the host left with the least idle GPU room (slices pack onto
  partly cut GPUs; CPU work stays off hosts with idle GPUs), then the least CPU and memory
  left, then the tightest gap in time. On a host, GPUs are chosen best-fit.
- The search is bounded, as Slurm bounds its backfill test: about ``EXAMINE`` partly used
  hosts with room and a few empty hosts of each shape are compared.
- A lease being re-placed (``fit`` with its own id: an update, or healing after a host
  went down) prefers the hosts it holds, so only what must move moves.
- ``earliest`` tries ``not_before`` directly; if that fails it runs one lazy sweep per
  request over start times (:mod:`~ecliptic.scheduler.sweep`), jumps to the next start
  where every request could have enough hosts, and tries a real placement there; a start
  can only become possible where a booking ends, so no start is skipped.
- Preemptible servers inside their minimum lifetime count as held capacity (for ``fit``
  and ``earliest``); past it they are invisible, and ``victims`` picks who goes.
- The calendar reads per-class hourly maxima (:mod:`~ecliptic.scheduler.occupancy`). That
  index is built on first use (about a second for 100,000 bookings) and then kept up to
  date by every booking, so rebuilding an engine for fit/book never pays for it.

Times are integer minutes since the epoch inside; starts are rounded down and ends up.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from typing import Any, NamedTuple

from ecliptic.scheduler.filters import compile_filter, host_properties
from ecliptic.scheduler.model import (
    Allocation,
    Amount,
    Blocker,
    CalendarBucket,
    CalendarRow,
    FlavorRequest,
    HostInfo,
    HostRequest,
    NoFit,
    Placement,
    Preemptible,
    Request,
    SliceRequest,
    Window,
)
from ecliptic.scheduler.occupancy import Levels
from ecliptic.scheduler.resources import (
    GPU0,
    MEM,
    OCC,
    UNITS_PER_GPU,
    VCPU,
    WHOLE,
    HostShape,
    ProfileError,
    SlotDemand,
    Vector,
    free_amount,
    holding_vector,
    max_slots,
    needs_pinning,
    pin_gpus,
    place_slots,
    profile_units,
    slot_demand,
    whole_host_amount,
)
from ecliptic.scheduler.sweep import Piece, Sweep, agree
from ecliptic.scheduler.timeline import Timeline

EXAMINE = 48
"""A fit compares about this many partly used hosts with room, and about this many empty
hosts of each shape (more when it needs more), the way Slurm bounds its backfill test."""

PRESSURE_SAMPLE = 64
"""Hosts of a shape looked at (evenly spread) to estimate how busy that shape is."""

SEARCH_HORIZON = timedelta(days=366)
"""How far ``fit`` looks for the start preemptible lifetimes allow, for ``NoFit.earliest_start``."""

MAX_BLOCKERS = 10
"""Bookings named in a refusal, at most."""

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


def _span(d: timedelta) -> int:
    return math.ceil(d.total_seconds() / 60)


class _Holding(NamedTuple):
    """One allocation as it sits in a timeline."""

    host: int
    start: int
    end: int
    vec: Vector


@dataclass
class _Option:
    """A host that can take some slots of a request, during a fit."""

    host: int
    slots: int
    free: list[int]
    order: int
    opens: bool = False
    """The host is empty in the window: using it takes a whole host away."""
    idle: int = 10
    """Tenths of the window during which the host holds nothing yet (rounded up)."""
    pressure: int = 0
    """For an empty host: how busy hosts of its shape are in the window (0-10)."""


class Engine:
    """Capacity timelines of every host, and fit / earliest / calendar / victims over them."""

    def __init__(
        self,
        hosts: Iterable[HostInfo] = (),
        min_preemptible_lifetime: timedelta = timedelta(hours=1),
        *,
        alternative_spacing: timedelta = timedelta(hours=1),
    ) -> None:
        self._min_life = _span(min_preemptible_lifetime)
        self._spacing = max(1, _span(alternative_spacing))
        self._info: list[HostInfo] = []
        self._by_name: dict[str, HostInfo] = {}
        self._ids: dict[str, int] = {}
        self._shape: list[HostShape] = []
        self._props: list[dict[str, Any]] = []
        self._size: list[tuple[int, int, int, int]] = []
        self._up: list[bool] = []
        self._tl: list[Timeline] = []
        self._terms: list[_Terms] = []
        self._term_cache: dict[tuple[Any, ...], _Terms] = {}
        self._host_leases: list[dict[str, int]] = []
        self._leases: dict[str, Placement] = {}
        self._span_of: dict[str, tuple[int, int]] = {}
        self._holdings: dict[str, list[_Holding]] = {}
        self._pre: dict[str, Preemptible] = {}
        self._pre_vec: dict[str, Vector] = {}
        self._pre_on: dict[int, set[str]] = {}
        self._levels: dict[str, Levels] | None = None
        """Calendar index (per-class reserved levels); None until the calendar is first used."""
        self._cache: dict[tuple[Any, ...], tuple[list[int], list[range]]] = {}
        self._by_value: dict[str, dict[str, list[int]]] = {}
        """Per property, the hosts of each string value (built when a filter needs it)."""
        for host in hosts:
            self.set_host(host)

    # -- inventory ---------------------------------------------------------------------------

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
        if replace(old, up=host.up) == host:
            self._info[h] = host
            self._set_up(h, host.up)
            return
        self._set_up(h, False)
        shape = HostShape(host)
        self._info[h] = host
        self._shape[h] = shape
        self._props[h] = host_properties(host)
        self._size[h] = (shape.ngpus, host.vcpus, host.memory_mb, host.disk_gb)
        self._terms[h] = self._terms_for(shape)
        holdings: list[tuple[int, int, Vector]] = []
        for lid in self._host_leases[h]:
            s, e = self._span_of[lid]
            kept: list[_Holding] = []
            for hd, alloc in zip(self._holdings[lid], self._alloc_list(lid), strict=True):
                if hd.host == h:
                    hd = _Holding(h, s, e, holding_vector(shape, alloc.amount))
                    holdings.append((s, e, hd.vec))
                kept.append(hd)
            self._holdings[lid] = kept
        for sid in self._pre_on.get(h, ()):
            self._pre_vec[sid] = holding_vector(shape, self._pre[sid].amount)
        self._tl[h] = Timeline.build(shape.zero, holdings)
        self._cache.clear()
        self._by_value.clear()
        self._set_up(h, host.up)

    def _add_host(self, host: HostInfo) -> int:
        h = len(self._info)
        shape = HostShape(host)
        self._ids[host.name] = h
        self._info.append(host)
        self._by_name[host.name] = host
        self._shape.append(shape)
        self._props.append(host_properties(host))
        self._size.append((shape.ngpus, host.vcpus, host.memory_mb, host.disk_gb))
        self._up.append(False)
        self._tl.append(Timeline(shape.zero))
        self._terms.append(self._terms_for(shape))
        self._host_leases.append({})
        if self._levels is not None:
            for name in self._terms[h].names:
                self._levels.setdefault(name, Levels())
        self._cache.clear()
        self._by_value.clear()
        self._set_up(h, host.up)
        return h

    def _terms_for(self, shape: HostShape) -> _Terms:
        """Calendar terms, shared by every host of the same shape."""
        key = (shape.cap, shape.gpu_model, shape.gpu_profiles)
        terms = self._term_cache.get(key)
        if terms is None:
            terms = self._term_cache[key] = _Terms(shape)
        return terms

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

    # -- bookings ----------------------------------------------------------------------------

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
        holdings: list[_Holding] = []
        extra: dict[int, list[int]] = {}
        for alloc in placement.allocations:
            h = self._host_id(alloc.host)
            shape = self._shape[h]
            if needs_pinning(alloc.amount):
                free = [
                    c - u - x for c, u, x in _zip3(shape.cap, self._tl[h].peak(s, e), extra.get(h))
                ]
                alloc = replace(
                    alloc,
                    amount=replace(alloc.amount, gpu_units=pin_gpus(shape, free, alloc.amount)),
                )
            vec = holding_vector(shape, alloc.amount)
            allocs.append(alloc)
            holdings.append(_Holding(h, s, e, vec))
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
                        f"{_when(s, e)}"
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

    @classmethod
    def rebuild(
        cls,
        hosts: Iterable[HostInfo],
        bookings: Mapping[str, Placement] | Iterable[tuple[str, Placement]],
        preemptibles: Iterable[Preemptible] = (),
        min_preemptible_lifetime: timedelta = timedelta(hours=1),
        **options: Any,
    ) -> Engine:
        """An engine loaded from stored hosts and bookings in bulk (bookings are not re-checked).

        The garbage collector is paused meanwhile: the load makes millions of objects that all
        live on, and collecting them as they come would only cost time.
        """
        paused = gc.isenabled()
        gc.disable()
        try:
            return cls._rebuild(hosts, bookings, preemptibles, min_preemptible_lifetime, options)
        finally:
            if paused:
                gc.enable()

    @classmethod
    def _rebuild(
        cls,
        hosts: Iterable[HostInfo],
        bookings: Mapping[str, Placement] | Iterable[tuple[str, Placement]],
        preemptibles: Iterable[Preemptible],
        min_preemptible_lifetime: timedelta,
        options: dict[str, Any],
    ) -> Engine:
        eng = cls((), min_preemptible_lifetime, **options)
        infos = list(hosts)
        for host in infos:
            if host.name in eng._ids:
                raise ValueError(f"host {host.name!r} is listed twice")
            eng._add_host(replace(host, up=False))
        per_host: list[list[tuple[int, int, Vector]]] = [[] for _ in eng._info]
        later: list[tuple[str, Placement]] = []
        items = bookings.items() if isinstance(bookings, Mapping) else bookings
        ids, shapes, host_leases = eng._ids, eng._shape, eng._host_leases
        leases, spans, all_holdings = eng._leases, eng._span_of, eng._holdings
        for lid, placement in items:
            s = to_minutes(placement.start)
            e = to_minutes(placement.end, up=True)
            holdings = []
            for alloc in placement.allocations:
                amount = alloc.amount
                if needs_pinning(amount):
                    break
                h = ids.get(alloc.host)
                if h is None:
                    raise UnknownHost(alloc.host)
                vec = shapes[h].whole if amount.whole_host else holding_vector(shapes[h], amount)
                holdings.append(_Holding(h, s, e, vec))
            else:
                for hd in holdings:
                    per_host[hd.host].append((s, e, hd.vec))
                    held = host_leases[hd.host]
                    held[lid] = held.get(lid, 0) + 1
                leases[lid] = placement
                spans[lid] = (s, e)
                all_holdings[lid] = holdings
                continue
            later.append((lid, placement))
        for h, holdings_h in enumerate(per_host):
            if holdings_h:
                eng._tl[h] = Timeline.build(shapes[h].zero, holdings_h)
            eng._info[h] = eng._by_name[infos[h].name] = infos[h]
            eng._up[h] = infos[h].up
        for lid, placement in later:
            eng._book(lid, placement, check=False)
        for p in preemptibles:
            eng.add_preemptible(p)
        return eng

    # -- fit ---------------------------------------------------------------------------------

    def fit(
        self, lease_id: str | None, requests: Sequence[Request], start: datetime, end: datetime
    ) -> Placement | NoFit:
        """Where every request of a lease would go for [start, end), best-fit, or why it cannot."""
        check_requests(requests)
        s = to_minutes(start)
        e = to_minutes(end, up=True)
        if e <= s:
            raise InvalidRequest("the lease must end after it starts")
        with self._lifted(lease_id) as own:
            result = self._place(requests, s, e, protect=True, prefer=own)
            if isinstance(result, NoFit) and self._pre:
                relaxed = self._place(requests, s, e, protect=False, prefer=own)
                if not isinstance(relaxed, NoFit):
                    last = s + _span(SEARCH_HORIZON)
                    found = self._search(requests, e - s, s, last, 1)
                    when = from_minutes(found[0][0]) if found else None
                    later = f"; it would fit from {when:%Y-%m-%d %H:%M}" if when else ""
                    result = replace(
                        result,
                        reason=result.reason
                        + " (preemptible servers there are inside their minimum lifetime"
                        + later
                        + ")",
                        earliest_start=when,
                    )
        if isinstance(result, NoFit):
            return result
        return Placement(start, end, tuple(sorted(result, key=lambda a: (a.key, a.host))))

    def _place(
        self, requests: Sequence[Request], s: int, e: int, *, protect: bool, prefer: set[int]
    ) -> list[Allocation] | NoFit:
        overlay: dict[int, list[int]] = {}
        out: list[Allocation] = []
        for req in sorted(requests, key=_request_order):
            if isinstance(req, HostRequest):
                got = self._place_hosts(req, s, e, protect, overlay, prefer)
            else:
                affinity = req.affinity if isinstance(req, FlavorRequest) else "none"
                got = self._place_slots(
                    req.key,
                    req.filter,
                    slot_demand(req),
                    req.count,
                    affinity,
                    s,
                    e,
                    protect,
                    overlay,
                    prefer,
                )
            if isinstance(got, NoFit):
                return got
            out.extend(got)
        return out

    def _matching(self, text: str) -> list[int]:
        """Hosts matching a filter, smallest first (cached per filter text)."""
        return self._candidates(("match", text))[0]

    def _eligible(self, text: str, demand: SlotDemand) -> tuple[list[int], list[range]]:
        """Hosts matching a filter that have the GPUs a slot needs, smallest first, and the
        runs of hosts of one shape in that list."""
        return self._candidates(
            ("eligible", text, demand.gpus > 0, demand.gpu_model, demand.profile)
        )

    def _candidates(self, key: tuple[Any, ...]) -> tuple[list[int], list[range]]:
        got = self._cache.get(key)
        if got is not None:
            return got
        text = key[1]
        if key[0] == "match":
            flt = compile_filter(text)
            if flt.words is not None:
                index = self._value_index(flt.words[0])
                ids = [h for word in flt.words[1] for h in index.get(word, ())]
            else:
                ids = [h for h in range(len(self._info)) if flt(self._props[h])]
            ids.sort(key=lambda h: (self._size[h], h))
        else:
            _, _, whole_gpus, model, profile = key
            base = self._matching(text)
            if profile:
                ids = [h for h in base if self._shape[h].slice_gpus(profile, model)]
            elif whole_gpus:
                ids = [
                    h
                    for h in base
                    if any(
                        self._shape[h].gpus_of(m)
                        for m in ([model] if model else self._shape[h].models)
                    )
                ]
            else:
                ids = list(base)
        runs: list[range] = []
        lo = 0
        for i in range(1, len(ids) + 1):
            if i == len(ids) or self._size[ids[i]] != self._size[ids[lo]]:
                runs.append(range(lo, i))
                lo = i
        got = self._cache[key] = (ids, runs)
        return got

    def _value_index(self, name: str) -> dict[str, list[int]]:
        """The hosts of each string value of property ``name``."""
        index = self._by_value.get(name)
        if index is None:
            index = self._by_value[name] = {}
            for h, props in enumerate(self._props):
                v = props.get(name)
                if isinstance(v, str):
                    index.setdefault(v, []).append(h)
        return index

    def _pressure(self, cands: list[int], run: range, s: int, e: int, protect: bool) -> int:
        """How busy hosts of one shape are over [s, e), 0 (all empty) to 10 (none empty),
        from an evenly spread sample of them."""
        up = empty = 0
        for i in run[:: max(1, len(run) // PRESSURE_SAMPLE)]:
            h = cands[i]
            if self._up[h]:
                up += 1
                if self._empty(h, s, e, protect):
                    empty += 1
        return 10 - (10 * empty) // max(1, up)

    def _protected(self, h: int, s: int, e: int) -> list[tuple[int, int, Vector]]:
        """Preemptibles on a host still inside their minimum lifetime somewhere in [s, e)."""
        out = []
        for sid in self._pre_on.get(h, ()):
            a = to_minutes(self._pre[sid].started_at)
            b = a + self._min_life
            if a < e and b > s:
                out.append((a, b, self._pre_vec[sid]))
        return out

    def _peak(self, h: int, s: int, e: int, protect: bool) -> Vector:
        tl = self._tl[h]
        if protect and h in self._pre_on:
            extra = self._protected(h, s, e)
            if extra:
                tmp = _copy(tl)
                for a, b, vec in extra:
                    tmp.add(max(a, s), min(b, e), vec, 1)
                return tmp.peak(s, e)
        return tl.peak(s, e)

    def _room(
        self, h: int, s: int, e: int, protect: bool, overlay: dict[int, list[int]]
    ) -> list[int]:
        return [
            c - p - x
            for c, p, x in _zip3(self._shape[h].cap, self._peak(h, s, e, protect), overlay.get(h))
        ]

    def _empty(self, h: int, s: int, e: int, protect: bool) -> bool:
        """Nothing reserved on the host over [s, e) (nor a protected preemptible, if asked)."""
        if not self._tl[h].is_free(s, e):
            return False
        return not (protect and h in self._pre_on and self._protected(h, s, e))

    def _place_hosts(
        self,
        req: HostRequest,
        s: int,
        e: int,
        protect: bool,
        overlay: dict[int, list[int]],
        prefer: set[int],
    ) -> list[Allocation] | NoFit:
        cands, runs = self._candidates(("match", req.filter))
        up, tls, size = self._up, self._tl, self._size
        enough = max(4 * req.max_count, EXAMINE) if not prefer else len(cands)
        # Candidates come in runs of one shape, smallest first. A request that several shapes
        # satisfy goes to the shape least in demand over the window (the largest share of
        # its hosts still empty), then to the smallest; within a shape, to the host whose
        # free gap in time is the tightest, so long gaps stay whole for long leases.
        free: list[tuple[int, int, tuple[int, int, int, int], int, int]] = []
        busy: list[int] = []
        pre_on = self._pre_on if protect else {}
        for run in runs:
            found: list[int] = []
            for i in run:
                h = cands[i]
                if not up[h] or h in overlay:
                    continue
                tl = tls[h]
                if not tl.is_free(s, e) or (h in pre_on and self._protected(h, s, e)):
                    if len(busy) < MAX_BLOCKERS:
                        busy.append(h)
                    continue
                found.append(h)
                if len(found) >= enough:
                    break
            if not found:
                continue
            pressure = self._pressure(cands, run, s, e, protect) if len(runs) > 1 else 0
            for h in found:
                free.append((0 if h in prefer else 1, pressure, size[h], tls[h].slack(s, e), h))
        if len(free) < req.min_count:
            n_up = sum(1 for h in cands if up[h])
            what = f" matching {req.filter!r}" if req.filter else ""
            return NoFit(
                reason=(
                    f"reservation {req.key!r} needs {req.min_count} host(s){what}: "
                    f"{len(cands)} match, {n_up} up, {len(free)} free {_when(s, e)}"
                ),
                key=req.key,
                blockers=self._blockers(busy, s, e),
            )
        free.sort()
        out = []
        for *_, h in free[: req.max_count]:
            overlay[h] = list(self._shape[h].whole)
            out.append(
                Allocation(
                    req.key, self._info[h].name, whole_host_amount(self._info[h], self._shape[h])
                )
            )
        return out

    def _place_slots(
        self,
        key: str,
        text: str,
        demand: SlotDemand,
        count: int,
        affinity: str,
        s: int,
        e: int,
        protect: bool,
        overlay: dict[int, list[int]],
        prefer: set[int],
    ) -> list[Allocation] | NoFit:
        cands, runs = self._eligible(text, demand)
        need_hosts = count if affinity == "anti-affinity" else 1
        options: list[_Option] = []
        examined = 0
        busy: list[int] = []
        up, tls, shapes = self._up, self._tl, self._shape
        if prefer:  # a lease being re-placed looks at its own hosts first
            runs = [range(len(cands))]
            cands = [h for h in cands if h in prefer] + [h for h in cands if h not in prefer]
        # Within each run of one shape: empty hosts are all alike, so a few are kept; partly
        # used hosts get the full check, up to EXAMINE with room in all.
        room_of_empty: dict[Vector, int] = {}
        for run in runs:
            empties: list[_Option] = []
            if prefer:
                quota = len(cands)
            else:
                first = shapes[cands[run.start]]
                per_empty = max_slots(first, first.cap, demand)
                quota = (
                    need_hosts if affinity == "anti-affinity" else -(-count // max(1, per_empty))
                )
                quota = quota + 4 if per_empty > 0 else 0
            for i in run:
                h = cands[i]
                if not up[h]:
                    continue
                shape = shapes[h]
                if h not in overlay and self._empty(h, s, e, protect):
                    n = room_of_empty.get(shape.cap)
                    if n is None:
                        n = room_of_empty[shape.cap] = max_slots(shape, shape.cap, demand)
                    if n > 0 and len(empties) < quota:
                        empties.append(_Option(h, n, list(shape.cap), i, opens=True))
                    elif examined >= EXAMINE:
                        break
                    continue
                if examined >= EXAMINE and h not in prefer:
                    if len(empties) >= quota:
                        break
                    continue
                at_s = tls[h].at(s)
                if at_s[OCC] >= WHOLE or at_s[VCPU] + demand.vcpus > shape.cap[VCPU]:
                    if len(busy) < MAX_BLOCKERS:
                        busy.append(h)
                    continue
                free = self._room(h, s, e, protect, overlay)
                n = max_slots(shape, free, demand)
                if n <= 0:
                    if len(busy) < MAX_BLOCKERS:
                        busy.append(h)
                    continue
                idle = (e - s) - tls[h].busy_minutes(s, e)
                options.append(_Option(h, n, free, i, idle=-(-10 * idle // (e - s))))
                examined += 1
            if empties:
                pressure = self._pressure(cands, run, s, e, protect) if len(runs) > 1 else 0
                for opt in empties:
                    opt.pressure = pressure
                    options.append(opt)
        chosen = self._choose(options, demand, count, affinity, s, e, prefer)
        if chosen is None:
            what = f" matching {text!r}" if text else ""
            room = sum(o.slots for o in options)
            unit = "slice(s)" if demand.profile and not demand.vcpus else "slot(s)"
            how = {"affinity": " on one host", "anti-affinity": " on different hosts"}.get(
                affinity, ""
            )
            return NoFit(
                reason=(
                    f"reservation {key!r} needs {count} {unit}{how}{what}: "
                    f"{len(cands)} host(s) could hold it, {len(options)} have room for "
                    f"{room} {_when(s, e)}"
                ),
                key=key,
                blockers=self._blockers(busy, s, e),
            )
        out = []
        for opt, q in chosen:
            shape = shapes[opt.host]
            got = place_slots(shape, opt.free, demand, q)
            acc = overlay.setdefault(opt.host, [0] * len(shape.cap))
            for i, v in enumerate(got.vector):
                acc[i] += v
            slices: dict[str, int] = {}
            if demand.profile:
                per_slice = profile_units(demand.profile)
                for i, held in got.gpu_units:
                    k = f"{shape.gpu_model[i]}:{demand.profile}"
                    slices[k] = slices.get(k, 0) + held // per_slice
            amount = Amount(
                vcpus=got.vector[VCPU],
                memory_mb=got.vector[MEM],
                disk_gb=got.vector[3],
                gpus=got.gpus,
                slices=tuple(sorted(slices.items())),
                gpu_units=got.gpu_units,
            )
            out.append(Allocation(key, self._info[opt.host].name, amount, slots=got.slots))
        return out

    def _choose(
        self,
        options: list[_Option],
        demand: SlotDemand,
        count: int,
        affinity: str,
        s: int,
        e: int,
        prefer: set[int],
    ) -> list[tuple[_Option, int]] | None:
        """Pick hosts and slot counts best-fit; None if the options cannot hold ``count``."""

        memo: dict[tuple[int, int], tuple[Any, ...]] = {}

        def score(opt: _Option, q: int) -> tuple[Any, ...]:
            got_score = memo.get((opt.host, q))
            if got_score is None:
                got_score = memo[opt.host, q] = raw_score(opt, q)
            return got_score

        def raw_score(opt: _Option, q: int) -> tuple[Any, ...]:
            shape = self._shape[opt.host]
            got = place_slots(shape, opt.free, demand, q)
            left = [f - v for f, v in zip(opt.free, got.vector, strict=True)]
            cap = shape.cap
            if demand.gpus or demand.profile:
                used = {i for i, _ in got.gpu_units}
                # Least room left on the GPUs it touches, then on the other GPUs of the host.
                gpu_waste = (sum(left[GPU0 + i] for i in used), sum(left[GPU0:]))
            else:
                gpu_waste = (sum(left[GPU0:]), 0)
            cpu_left = sum(left[d] / cap[d] for d in (VCPU, MEM) if cap[d] > 0)
            slack = self._tl[opt.host].slack(s, e)
            return (
                opt.host not in prefer,
                opt.idle,
                opt.pressure,
                gpu_waste,
                round(cpu_left, 6),
                -q,
                slack,
                opt.order,
            )

        if affinity == "affinity":
            fits = [o for o in options if o.slots >= count]
            if not fits:
                return None
            return [(min(fits, key=lambda o: score(o, count)), count)]
        if affinity == "anti-affinity":
            fits = [o for o in options if o.slots >= 1]
            if len(fits) < count:
                return None
            fits.sort(key=lambda o: score(o, 1))
            return [(o, 1) for o in fits[:count]]
        if sum(o.slots for o in options) < count:
            return None
        left = count
        pool = list(options)
        chosen: list[tuple[_Option, int]] = []
        while left > 0:
            best = min(pool, key=lambda o: score(o, min(o.slots, left)))
            q = min(best.slots, left)
            chosen.append((best, q))
            pool.remove(best)
            left -= q
        return chosen

    def _blockers(self, hosts: Iterable[int], s: int, e: int) -> tuple[Blocker, ...]:
        out: list[Blocker] = []
        for h in hosts:
            for lid in sorted(self._host_leases[h]):
                ls, le = self._span_of[lid]
                if ls < e and le > s:
                    out.append(Blocker(lid, self._info[h].name, from_minutes(ls), from_minutes(le)))
                    if len(out) >= MAX_BLOCKERS:
                        return tuple(out)
        return tuple(out)

    # -- earliest ----------------------------------------------------------------------------

    def earliest(
        self,
        requests: Sequence[Request],
        duration: timedelta,
        not_before: datetime,
        horizon: timedelta,
        alternatives: int = 3,
    ) -> list[Window]:
        """The first window of ``duration`` from ``not_before`` (ending within ``horizon`` of
        it) where the whole lease fits, then up to ``alternatives`` later starts, each at least
        ``alternative_spacing`` after the previous one."""
        check_requests(requests)
        d = _span(duration)
        if d <= 0:
            raise InvalidRequest("the duration must be positive")
        first = to_minutes(not_before, up=True)
        last = to_minutes(not_before) + _span(horizon) - d
        out = []
        for start, allocs in self._search(requests, d, first, last, 1 + max(0, alternatives)):
            begin, end = from_minutes(start), from_minutes(start + d)
            placement = Placement(begin, end, tuple(sorted(allocs, key=lambda a: (a.key, a.host))))
            out.append(Window(begin, end, placement))
        return out

    def _search(
        self, requests: Sequence[Request], d: int, first: int, last: int, want: int
    ) -> list[tuple[int, list[Allocation]]]:
        out: list[tuple[int, list[Allocation]]] = []
        sweeps: list[Sweep] | None = None
        x = first
        while len(out) < want and x <= last:
            got = self._place(requests, x, x + d, protect=True, prefer=set())
            if not isinstance(got, NoFit):
                out.append((x, got))
                x += self._spacing
                continue
            if sweeps is None:
                sweeps = self._sweeps(requests, d, x, last)
                if not sweeps:
                    break  # nothing to wait for: it will never fit
            for sw in sweeps:
                sw.advance(x)
            changes = [c for c in (sw.next_change() for sw in sweeps) if c is not None]
            if not changes:
                break
            nxt = agree(sweeps, min(changes), last)
            if nxt is None:
                break
            x = nxt
        return out

    def _sweeps(self, requests: Sequence[Request], d: int, first: int, last: int) -> list[Sweep]:
        """One sweep per request over start times in [first, last]."""
        sweeps: list[Sweep] = []
        copies: dict[int, Timeline] = {}
        for req in requests:
            sources: list[Iterator[Piece]] = []
            if isinstance(req, HostRequest):
                if req.min_count == 0:
                    continue
                for h in self._matching(req.filter):
                    if self._up[h]:
                        tl = self._timeline_for(h, first, copies)
                        sources.append(_ones(tl.free_starts(first, last, d)))
                sweeps.append(Sweep(sources, req.min_count))
                continue
            demand = slot_demand(req)
            affinity = req.affinity if isinstance(req, FlavorRequest) else "none"
            need = 1 if affinity == "affinity" else req.count
            for h in self._eligible(req.filter, demand)[0]:
                if self._up[h]:
                    tl = self._timeline_for(h, first, copies)
                    pieces = tl.window_peaks(first, last, d)
                    sources.append(
                        _slot_values(pieces, self._shape[h], demand, affinity, req.count)
                    )
            sweeps.append(Sweep(sources, need))
        return sweeps

    def _timeline_for(self, h: int, first: int, copies: dict[int, Timeline]) -> Timeline:
        """The host's timeline, with its protected preemptibles added when it has any."""
        if h not in self._pre_on:
            return self._tl[h]
        tl = copies.get(h)
        if tl is None:
            tl = _copy(self._tl[h])
            for a, b, vec in self._protected(h, first, 1 << 42):
                tl.add(a, b, vec, 1)
            copies[h] = tl
        return tl

    # -- calendar ----------------------------------------------------------------------------

    def _calendar_index(self) -> dict[str, Levels]:
        """The per-class levels, built from the timelines on first use, then kept current."""
        if self._levels is not None:
            return self._levels
        paused = gc.isenabled()
        gc.disable()  # as in rebuild: many objects, all kept
        try:
            self._levels = self._build_calendar_index()
        finally:
            if paused:
                gc.enable()
        return self._levels

    def _build_calendar_index(self) -> dict[str, Levels]:
        deltas: dict[str, list[tuple[int, int]]] = {}
        for terms in self._term_cache.values():
            for name in terms.names:
                deltas.setdefault(name, [])
        targets: dict[int, list[list[tuple[int, int]]]] = {}
        for h, tl in enumerate(self._tl):
            if not self._up[h] or not tl.times:
                continue
            terms = self._terms[h]
            out = targets.get(id(terms))
            if out is None:
                out = targets[id(terms)] = [deltas[name] for name in terms.names]
            values = terms.values
            prev = terms.zeros
            for t, level in zip(tl.times, tl.levels, strict=True):
                vals = values(level)
                if vals != prev:
                    for target, x, y in zip(out, prev, vals, strict=True):
                        if x != y:
                            target.append((t, y - x))
                    prev = vals
        return {name: Levels.build(d) for name, d in deltas.items()}

    def _totals(self) -> dict[str, int]:
        """Capacity per class over the hosts that are up."""
        totals: dict[str, int] = {}
        for terms in self._term_cache.values():
            for name in terms.names:
                totals.setdefault(name, 0)
        for h, terms in enumerate(self._terms):
            if self._up[h]:
                for name, total in zip(terms.names, terms.totals, strict=True):
                    totals[name] += total
        return totals

    def calendar(self, start: datetime, end: datetime, bucket: timedelta) -> list[CalendarRow]:
        """Capacity and reservations per resource class in ``bucket`` steps over [start, end)."""
        a = to_minutes(start)
        b = to_minutes(end, up=True)
        step = max(1, _span(bucket))
        edges = list(range(a, b, step))
        starts = [from_minutes(t) for t in edges]
        rows = []
        index = self._calendar_index()
        totals = self._totals()
        for name in sorted(index, key=_class_order):
            lv = index[name]
            total = totals.get(name, 0)
            buckets = tuple(
                CalendarBucket(starts[i], total, reserved)
                for i, reserved in enumerate(lv.peaks(edges, b))
            )
            rows.append(CalendarRow(name, buckets))
        return rows

    # -- preemptibles ------------------------------------------------------------------------

    def add_preemptible(self, p: Preemptible) -> None:
        """Record a running preemptible server (GPUs it does not place are put on GPUs free
        for its whole minimum lifetime, when there are such)."""
        h = self._host_id(p.host)
        if p.server_id in self._pre:
            self.remove_preemptible(p.server_id)
        shape = self._shape[h]
        if needs_pinning(p.amount):
            # GPUs free for the whole minimum lifetime, as backfill_room counts them.
            t = to_minutes(p.started_at)
            used = list(self._tl[h].peak(t, t + max(1, self._min_life)))
            for sid in self._pre_on.get(h, ()):
                for i, v in enumerate(self._pre_vec[sid]):
                    used[i] += v
            free = [c - u for c, u in zip(shape.cap, used, strict=True)]
            p = replace(p, amount=replace(p.amount, gpu_units=pin_gpus(shape, free, p.amount)))
        self._pre[p.server_id] = p
        self._pre_vec[p.server_id] = holding_vector(shape, p.amount)
        self._pre_on.setdefault(h, set()).add(p.server_id)

    def remove_preemptible(self, server_id: str) -> None:
        """Forget a preemptible server (nothing happens for an unknown id)."""
        p = self._pre.pop(server_id, None)
        if p is None:
            return
        del self._pre_vec[server_id]
        h = self._ids[p.host]
        on = self._pre_on[h]
        on.discard(server_id)
        if not on:
            del self._pre_on[h]

    def preemptibles(self) -> list[Preemptible]:
        """Every preemptible server recorded, by server id."""
        return [self._pre[k] for k in sorted(self._pre)]

    def free_now(self, host: str, at: datetime) -> Amount:
        """Room nobody reserved on ``host`` at instant ``at`` (nothing on a down host).

        ``whole_host`` is True when a whole-host reservation holds the host then (so there
        is no room at all). Preemptible servers are not subtracted: they run on this room.
        """
        h = self._host_id(host)
        if not self._up[h]:
            return Amount()
        return free_amount(self._shape[h], self._tl[h].at(to_minutes(at)))

    def backfill_room(self, host: str, at: datetime) -> Amount:
        """Room a new preemptible may take on ``host`` at ``at`` and keep for its minimum
        lifetime: capacity minus reservations over that lifetime minus running preemptibles."""
        h = self._host_id(host)
        if not self._up[h]:
            return Amount()
        t = to_minutes(at)
        used = list(self._tl[h].peak(t, t + max(1, self._min_life)))
        for sid in self._pre_on.get(h, ()):
            for i, v in enumerate(self._pre_vec[sid]):
                used[i] += v
        if used[OCC] >= WHOLE:
            return Amount()
        return free_amount(self._shape[h], tuple(used))

    def victims(self, placement: Placement, at: datetime) -> list[str]:
        """Preemptible servers to stop so ``placement`` has its room at ``at``: on each host the
        fewest needed, youngest first (least work lost), never one inside its minimum lifetime."""
        t = to_minutes(at)
        booked = self._is_booked(placement)
        extra: dict[int, list[int]] = {}
        for alloc in placement.allocations:
            h = self._host_id(alloc.host)
            if booked or h not in self._pre_on:
                extra.setdefault(h, [0] * len(self._shape[h].cap))
                continue
            shape = self._shape[h]
            amount = alloc.amount
            acc = extra.setdefault(h, [0] * len(shape.cap))
            if needs_pinning(amount):
                free = [c - u - x for c, u, x in _zip3(shape.cap, self._tl[h].at(t), acc)]
                amount = replace(amount, gpu_units=pin_gpus(shape, free, amount))
            for i, v in enumerate(holding_vector(shape, amount)):
                acc[i] += v
        out: list[str] = []
        for h, add in sorted(extra.items()):
            running = sorted(self._pre_on.get(h, ()))
            if not running:
                continue
            cap = self._shape[h].cap
            total = [u + x for u, x in zip(self._tl[h].at(t), add, strict=True)]
            for sid in running:
                for i, v in enumerate(self._pre_vec[sid]):
                    total[i] += v
            if _within(total, cap):
                continue
            evictable = [
                sid
                for sid in running
                if to_minutes(self._pre[sid].started_at) + self._min_life <= t
            ]
            evictable.sort(key=lambda sid: (-to_minutes(self._pre[sid].started_at), sid))
            chosen: list[str] = []
            for sid in evictable:
                chosen.append(sid)
                _sub(total, self._pre_vec[sid])
                if _within(total, cap):
                    break
            # Keep running any victim (oldest first) the room turns out not to need.
            for sid in sorted(chosen, key=lambda x: (to_minutes(self._pre[x].started_at), x)):
                vec = self._pre_vec[sid]
                if _within([a + b for a, b in zip(total, vec, strict=True)], cap):
                    _add(total, vec)
                    chosen.remove(sid)
            out.extend(chosen)
        return out

    def _is_booked(self, placement: Placement) -> bool:
        if not placement.allocations:
            return False
        h = self._ids.get(placement.allocations[0].host)
        if h is None:
            return False
        return any(self._leases[lid] == placement for lid in self._host_leases[h])

    # -- state -------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Canonical state (hosts, bookings, preemptibles and every derived index) as plain data."""
        return {
            "min_preemptible_lifetime": self._min_life,
            "hosts": {
                info.name: {
                    "vcpus": info.vcpus,
                    "memory_mb": info.memory_mb,
                    "disk_gb": info.disk_gb,
                    "gpus": [
                        [g.model, g.count, g.memory_gb, list(g.mig_profiles)] for g in info.gpus
                    ],
                    "rdma": info.rdma,
                    "properties": sorted(info.properties.items()),
                    "up": info.up,
                }
                for info in sorted(self._info, key=lambda i: i.name)
            },
            "bookings": {
                lid: {
                    "start": to_minutes(pl.start),
                    "end": to_minutes(pl.end, up=True),
                    "allocations": sorted(
                        ([a.key, a.host, a.slots, _amount_json(a.amount)] for a in pl.allocations),
                        key=lambda row: json.dumps(row, sort_keys=True),
                    ),
                }
                for lid, pl in sorted(self._leases.items())
            },
            "preemptibles": {
                sid: [p.host, to_minutes(p.started_at), _amount_json(p.amount)]
                for sid, p in sorted(self._pre.items())
            },
            "timelines": {
                self._info[h].name: [[t, list(v)] for t, v in self._tl[h].pieces()]
                for h in range(len(self._info))
                if self._tl[h].times
            },
            "calendar": {
                name: lv.canonical() for name, lv in sorted(self._calendar_index().items())
            },
            "totals": dict(sorted(self._totals().items())),
        }


# -- helpers ----------------------------------------------------------------------------------


def check_requests(requests: Sequence[Request]) -> None:
    """Refuse requests that cannot mean anything; compile their filters (FilterError)."""
    keys = [r.key for r in requests]
    if len(set(keys)) != len(keys):
        raise InvalidRequest("reservation keys must be unique within a lease")
    for r in requests:
        compile_filter(r.filter)
        if isinstance(r, HostRequest):
            if not 0 <= r.min_count <= r.max_count or r.max_count < 1:
                raise InvalidRequest(
                    f"reservation {r.key!r}: need 0 <= min_count <= max_count and max_count >= 1"
                )
        elif isinstance(r, FlavorRequest):
            if r.count < 1 or min(r.vcpus, r.memory_mb, r.disk_gb, r.gpus) < 0:
                raise InvalidRequest(f"reservation {r.key!r}: counts and sizes must be positive")
            if r.gpus and r.gpu_profile:
                raise InvalidRequest(
                    f"reservation {r.key!r}: a slot takes whole GPUs or one slice, not both"
                )
            if r.gpu_profile:
                _profile_ok(r.key, r.gpu_profile)
        elif isinstance(r, SliceRequest):
            if r.count < 1:
                raise InvalidRequest(f"reservation {r.key!r}: count must be at least 1")
            if (r.vcpus is None) != (r.memory_mb is None) or min(
                r.vcpus or 0, r.memory_mb or 0
            ) < 0:
                raise InvalidRequest(
                    f"reservation {r.key!r}: give both vcpus and memory_mb per slice, or neither"
                )
            _profile_ok(r.key, r.profile)
        else:
            raise InvalidRequest(f"unknown request kind {type(r).__name__}")


def _profile_ok(key: str, profile: str) -> None:
    try:
        profile_units(profile)
    except ProfileError as err:
        raise InvalidRequest(f"reservation {key!r}: {err}") from None


def _when(s: int, e: int) -> str:
    return f"from {from_minutes(s):%Y-%m-%d %H:%M} to {from_minutes(e):%Y-%m-%d %H:%M}"


def _request_order(r: Request) -> int:
    """Whole hosts first, then GPU work, then CPU work (the hardest to place first)."""
    if isinstance(r, HostRequest):
        return 0
    if isinstance(r, SliceRequest) or r.gpus or r.gpu_profile:
        return 1
    return 2


def _ones(ranges: Iterator[tuple[int, int]]) -> Iterator[Piece]:
    for a, b in ranges:
        yield a, b, 1


def _slot_values(
    pieces: Iterator[tuple[int, int, Vector]],
    shape: HostShape,
    demand: SlotDemand,
    affinity: str,
    count: int,
) -> Iterator[Piece]:
    """What a host contributes to a slot request's sweep over start times."""
    cap = shape.cap
    for a, b, peak in pieces:
        n = max_slots(shape, [c - p for c, p in zip(cap, peak, strict=True)], demand)
        if affinity == "affinity":
            n = 1 if n >= count else 0
        elif affinity == "anti-affinity":
            n = min(n, 1)
        if n > 0:
            yield a, b, n


class _Terms:
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


def _class_order(name: str) -> tuple[int, str]:
    kind = name.split(":", 1)[0]
    return ({"hosts": 0, "gpu": 1, "slice": 2, "vcpu": 3}.get(kind, 4), name)


def _zip3(cap: Vector, used: Vector, extra: list[int] | None) -> Iterator[tuple[int, int, int]]:
    if extra is None:
        return ((c, u, 0) for c, u in zip(cap, used, strict=True))
    return zip(cap, used, extra, strict=True)


def _within(total: Sequence[int], cap: Vector) -> bool:
    return all(t <= c for t, c in zip(total, cap, strict=True))


def _add(total: list[int], vec: Vector) -> None:
    for i, v in enumerate(vec):
        total[i] += v


def _sub(total: list[int], vec: Vector) -> None:
    for i, v in enumerate(vec):
        total[i] -= v


def _copy(tl: Timeline) -> Timeline:
    out = Timeline(tl.zero)
    out.times = list(tl.times)
    out.levels = list(tl.levels)
    out.busy_starts = list(tl.busy_starts)
    out.busy_ends = list(tl.busy_ends)
    return out


def _amount_json(a: Amount) -> dict[str, Any]:
    d = asdict(a)
    for k in ("gpus", "slices", "gpu_units"):
        d[k] = [list(x) for x in d[k]]
    return d
