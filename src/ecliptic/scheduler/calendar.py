"""The calendar: free and reserved capacity per resource class over time.

Reads per-class levels (:mod:`ecliptic.scheduler.occupancy`), built on first use and
then kept up to date by every booking.
"""

from __future__ import annotations

import gc
from datetime import datetime, timedelta

from ecliptic.scheduler.core import EngineCore, from_minutes, span_minutes, to_minutes
from ecliptic.scheduler.model import (
    CalendarBucket,
    CalendarRow,
)
from ecliptic.scheduler.occupancy import Levels


class CalendarIndex(EngineCore):
    """Free and reserved capacity per class, in buckets."""

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
        step = max(1, span_minutes(bucket))
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


def _class_order(name: str) -> tuple[int, str]:
    kind = name.split(":", 1)[0]
    return ({"hosts": 0, "gpu": 1, "slice": 2, "vcpu": 3}.get(kind, 4), name)
