"""Search: the earliest windows where every request of a lease fits.

One lazy sweep per request over start times, jumping to where every request could
have enough hosts, then a real placement there (see :mod:`ecliptic.scheduler.sweep`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

from ecliptic.scheduler.core import (
    InvalidRequest,
    copy_timeline,
    from_minutes,
    span_minutes,
    to_minutes,
)
from ecliptic.scheduler.model import (
    Allocation,
    FlavorRequest,
    HostRequest,
    NoFit,
    Placement,
    Request,
    Window,
)
from ecliptic.scheduler.placement import Placing, check_requests
from ecliptic.scheduler.resources import (
    HostShape,
    SlotDemand,
    Vector,
    max_slots,
    slot_demand,
)
from ecliptic.scheduler.sweep import Piece, Sweep, agree
from ecliptic.scheduler.timeline import Timeline


class Searching(Placing):
    """The earliest windows for a set of requests."""

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
        d = span_minutes(duration)
        if d <= 0:
            raise InvalidRequest("the duration must be positive")
        first = to_minutes(not_before, up=True)
        last = to_minutes(not_before) + span_minutes(horizon) - d
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
                    if self._takes_hosts[h]:
                        tl = self._timeline_for(h, first, copies)
                        sources.append(_ones(tl.free_starts(first, last, d)))
                sweeps.append(Sweep(sources, req.min_count))
                continue
            demand = slot_demand(req)
            affinity = req.affinity if isinstance(req, FlavorRequest) else "none"
            need = 1 if affinity == "affinity" else req.count
            for h in self._eligible(req.filter, demand)[0]:
                if self._takes_slots[h]:
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
            tl = copy_timeline(self._tl[h])
            for a, b, vec in self._protected(h, first, 1 << 42):
                tl.add(a, b, vec, 1)
            copies[h] = tl
        return tl


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
