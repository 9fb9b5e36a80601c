"""One host's usage over time: a step function of resource vectors, with bisect lookups.

Times are integer minutes. ``levels[k]`` is the usage on ``[times[k], times[k+1])``; before
``times[0]`` and from the last time on, usage is zero. The function is kept canonical (no
two neighbouring pieces equal, no leading or trailing zero piece), so two timelines built
from the same holdings in any order are equal. The merged intervals where anything is held
(``busy_starts``/``busy_ends``) answer "is the host empty over [s, e)" with one bisect.
"""

from __future__ import annotations

import heapq
import operator
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

from ecliptic.scheduler.resources import OCC, Vector

FAR = 1 << 42
"""A time later than any real one (minutes), for open ends."""

SLACK_CAP = 30 * 24 * 60
"""Free time around a window counts up to this much (minutes) when comparing fits in time."""

Change = tuple[int, int, Vector, Vector]
"""A piece whose usage changed: (start, end, old vector, new vector)."""


class Timeline:
    """Usage of one host over time."""

    __slots__ = ("busy_ends", "busy_starts", "levels", "times", "zero")

    def __init__(self, zero: Vector) -> None:
        self.zero: Vector = zero
        """The empty vector (its length is the host's vector length)."""
        self.times: list[int] = []
        """Piece starts, increasing."""
        self.levels: list[Vector] = []
        """Usage of each piece."""
        self.busy_starts: list[int] = []
        """Starts of the merged intervals where something is held."""
        self.busy_ends: list[int] = []
        """Their ends."""

    @classmethod
    def build(cls, zero: Vector, holdings: Iterable[tuple[int, int, Vector]]) -> Timeline:
        """A timeline holding every ``(start, end, vector)`` at once (sorted sweep, no inserts)."""
        deltas: dict[int, list[int]] = {}
        width = len(zero)
        for start, end, vec in holdings:
            if end <= start:
                continue
            d = deltas.get(start)
            if d is None:
                deltas[start] = list(vec)
            else:
                for k in range(width):
                    d[k] += vec[k]
            d = deltas.get(end)
            if d is None:
                deltas[end] = [-x for x in vec]
            else:
                for k in range(width):
                    d[k] -= vec[k]
        tl = cls(zero)
        level = zero
        times, levels = tl.times, tl.levels
        for t in sorted(deltas):
            new = tuple(map(operator.add, level, deltas[t]))
            if new != level:
                times.append(t)
                levels.append(new)
                level = new
        tl._rebuild_busy()
        return tl

    def add(self, start: int, end: int, vec: Vector, sign: int = 1) -> list[Change]:
        """Add (``sign`` 1) or remove (-1) ``vec`` over [start, end); returns what changed."""
        if end <= start:
            return []
        op = operator.add if sign > 0 else operator.sub
        times, levels = self.times, self.levels
        i = self._split(start)
        j = self._split(end)
        changes: list[Change] = []
        for k in range(i, j):
            old = levels[k]
            new = tuple(map(op, old, vec))
            levels[k] = new
            changes.append((times[k], times[k + 1], old, new))
        for k in (j, i):
            if k < len(times) and levels[k] == (levels[k - 1] if k > 0 else self.zero):
                del times[k]
                del levels[k]
        self._rebuild_busy()
        return changes

    def _split(self, t: int) -> int:
        times = self.times
        k = bisect_left(times, t)
        if k < len(times) and times[k] == t:
            return k
        times.insert(k, t)
        self.levels.insert(k, self.levels[k - 1] if k > 0 else self.zero)
        return k

    def _rebuild_busy(self) -> None:
        starts: list[int] = []
        ends: list[int] = []
        times, levels = self.times, self.levels
        for k in range(len(times) - 1):
            if levels[k][OCC] > 0:
                if ends and ends[-1] == times[k]:
                    ends[-1] = times[k + 1]
                else:
                    starts.append(times[k])
                    ends.append(times[k + 1])
        self.busy_starts = starts
        self.busy_ends = ends

    def at(self, t: int) -> Vector:
        """Usage at instant ``t``."""
        k = bisect_right(self.times, t) - 1
        return self.levels[k] if k >= 0 else self.zero

    def peak(self, start: int, end: int) -> Vector:
        """The largest usage of every resource over [start, end), each on its own."""
        times, levels = self.times, self.levels
        k = bisect_right(times, start) - 1
        if k < 0:
            k = 0
        n = len(times)
        p: Vector | None = None
        while k < n and times[k] < end:
            lv = levels[k]
            p = lv if p is None else tuple(map(max, p, lv))
            k += 1
        return self.zero if p is None else p

    def is_free(self, start: int, end: int) -> bool:
        """Whether nothing at all is held over [start, end)."""
        i = bisect_left(self.busy_starts, end)
        return not (i and self.busy_ends[i - 1] > start)

    def busy_minutes(self, start: int, end: int) -> int:
        """Minutes of [start, end) during which something is held."""
        starts, ends = self.busy_starts, self.busy_ends
        i = max(0, bisect_right(ends, start))
        total = 0
        while i < len(starts) and starts[i] < end:
            total += min(ends[i], end) - max(starts[i], start)
            i += 1
        return total

    def slack(self, start: int, end: int) -> int:
        """Free minutes before ``start`` plus after ``end`` (each capped) on an empty window."""
        i = bisect_left(self.busy_starts, end)
        before = start - self.busy_ends[i - 1] if i else SLACK_CAP
        after = self.busy_starts[i] - end if i < len(self.busy_starts) else SLACK_CAP
        return min(before, SLACK_CAP) + min(after, SLACK_CAP)

    def free_starts(self, first: int, last: int, duration: int) -> Iterator[tuple[int, int]]:
        """Ranges [a, b) of starts in [first, last] where the host is empty for ``duration``."""
        starts, ends = self.busy_starts, self.busy_ends
        i = bisect_right(ends, first)  # first busy interval that ends after ``first``
        gap_start = first
        while gap_start <= last:
            gap_end = starts[i] if i < len(starts) else FAR
            b = min(gap_end - duration, last) + 1
            if b > gap_start:
                yield gap_start, b
            if i >= len(starts):
                return
            gap_start = max(gap_start, ends[i])
            i += 1

    def window_peaks(
        self, first: int, last: int, duration: int
    ) -> Iterator[tuple[int, int, Vector]]:
        """Pieces [a, b) of starts in [first, last], with the peak usage over [s, s + duration)."""
        times = self.times
        lefts = times[bisect_right(times, first) :]
        rights = [t - duration + 1 for t in times[bisect_right(times, first + duration - 1) :]]
        s = first
        current = self.peak(s, s + duration)
        prev = first
        for p in heapq.merge(lefts, rights):
            if p <= prev:
                continue
            if p > last:
                break
            prev = p
            w = self.peak(p, p + duration)
            if w != current:
                yield s, p, current
                s, current = p, w
        yield s, last + 1, current

    def pieces(self) -> list[tuple[int, Vector]]:
        """The step function as (start, usage) pairs; the last usage is zero."""
        return list(zip(self.times, self.levels, strict=True))
