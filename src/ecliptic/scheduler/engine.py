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

How it works (each idea has its module: :mod:`~ecliptic.scheduler.core` for hosts,
timelines and bookings, :mod:`~ecliptic.scheduler.placement`,
:mod:`~ecliptic.scheduler.search`, :mod:`~ecliptic.scheduler.calendar` and
:mod:`~ecliptic.scheduler.preemption`; this module puts them together):

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, replace
from datetime import datetime, timedelta
from typing import Any

from ecliptic.scheduler.calendar import CalendarIndex
from ecliptic.scheduler.core import (
    CapacityError,
    Holding,
    InvalidRequest,
    UnknownHost,
    from_minutes,
    span_minutes,
    to_minutes,
)
from ecliptic.scheduler.model import (
    Amount,
    HostInfo,
    NoFit,
    Placement,
    Preemptible,
    Request,
)
from ecliptic.scheduler.placement import check_requests
from ecliptic.scheduler.preemption import Preempting
from ecliptic.scheduler.resources import (
    Vector,
    holding_vector,
    needs_pinning,
)
from ecliptic.scheduler.search import Searching
from ecliptic.scheduler.timeline import Timeline

__all__ = [
    "CapacityError",
    "Engine",
    "InvalidRequest",
    "UnknownHost",
    "check_requests",
    "from_minutes",
    "to_minutes",
]

SEARCH_HORIZON = timedelta(days=366)
"""How far ``fit`` looks for the start preemptible lifetimes allow, for ``NoFit.earliest_start``."""


def _amount_json(a: Amount) -> dict[str, Any]:
    d = asdict(a)
    for k in ("gpus", "slices", "gpu_units"):
        d[k] = [list(x) for x in d[k]]
    return d


class Engine(Searching, CalendarIndex, Preempting):
    """Capacity timelines of every host, and fit / earliest / calendar / victims over them.

    Put together from one class per idea: :class:`~ecliptic.scheduler.core.EngineCore`
    (state and bookings), :class:`~ecliptic.scheduler.placement.Placing`,
    :class:`~ecliptic.scheduler.search.Searching`,
    :class:`~ecliptic.scheduler.calendar.CalendarIndex` and
    :class:`~ecliptic.scheduler.preemption.Preempting`.
    """

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
                holdings.append(Holding(h, s, e, vec))
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
            eng._set_serves(h)
        for lid, placement in later:
            eng._book(lid, placement, check=False)
        for p in preemptibles:
            eng.add_preemptible(p)
        return eng

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
            prefer = own | self._ready_for(requests)
            result = self._place(requests, s, e, protect=True, prefer=prefer)
            if isinstance(result, NoFit) and self._pre:
                relaxed = self._place(requests, s, e, protect=False, prefer=prefer)
                if not isinstance(relaxed, NoFit):
                    last = s + span_minutes(SEARCH_HORIZON)
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
                    "serves": info.serves,
                    "ready": info.ready,
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
