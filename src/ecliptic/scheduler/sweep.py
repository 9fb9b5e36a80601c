"""Start times at which enough hosts could take a request: a lazy sweep over per-host pieces.

Each host contributes a value over ranges of *start times* (1 when it is empty for the whole
duration, or how many slots it could take); the sweep adds them up in time order and stops
at the first start where the sum reaches what the request needs. Hosts are read lazily,
one piece at a time, so a search that succeeds early never reads far into anyone's future.
This is a necessary condition only: the engine then tries a real placement at that start.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

Piece = tuple[int, int, int]
"""Start times [a, b) where a host contributes ``value`` (> 0)."""

_START, _END = 1, 0


class Sweep:
    """Sum of host contributions over start time; where it first reaches ``need``."""

    __slots__ = ("_heap", "_sources", "need", "total")

    def __init__(self, sources: list[Iterator[Piece]], need: int) -> None:
        self.need = need
        """Sum a start needs."""
        self.total = 0
        """Sum at the last time advanced to."""
        self._sources = sources
        self._heap: list[tuple[int, int, int, int, int]] = []
        for i in range(len(sources)):
            self._pull(i)

    def _pull(self, i: int) -> None:
        piece = next(self._sources[i], None)
        if piece is not None:
            a, b, v = piece
            heapq.heappush(self._heap, (a, _START, i, v, b))

    def advance(self, x: int) -> None:
        """Take in every change at or before start time ``x``."""
        heap = self._heap
        while heap and heap[0][0] <= x:
            _, kind, i, v, b = heapq.heappop(heap)
            if kind == _START:
                self.total += v
                heapq.heappush(heap, (b, _END, i, v, b))
            else:
                self.total -= v
                self._pull(i)

    def next_change(self) -> int | None:
        """The next start time (after the last advance) at which the sum changes."""
        return self._heap[0][0] if self._heap else None

    def next_ok(self, x: int, last: int) -> int | None:
        """The first start time in [x, last] where the sum is at least ``need``, or None."""
        self.advance(x)
        while self.total < self.need:
            nxt = self.next_change()
            if nxt is None or nxt > last:
                return None
            x = nxt
            self.advance(x)
        return x


def agree(sweeps: list[Sweep], x: int, last: int) -> int | None:
    """The first start time >= ``x`` where every sweep is satisfied, or None before ``last``."""
    while True:
        moved = False
        for sw in sweeps:
            y = sw.next_ok(x, last)
            if y is None:
                return None
            if y > x:
                x, moved = y, True
        if not moved:
            return x
