"""How much of one resource class is reserved over time, summed over hosts, for the calendar.

A :class:`Levels` is an integer step function of time, stored as its *changes* grouped in
one-hour slots: the change at each slot start (which also carries the net of the changes
inside the slot before it), and the changes inside a slot with the highest point they
reach. Adding a reservation touches two slots however long it is (on-demand servers are
booked until the year 9999), and "the busiest moment of each hour" is one lookup per hour,
walking whole empty ten-day blocks in one step.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from operator import itemgetter

SLOT = 60
"""Slot length, minutes."""

BLOCK = 256
"""Slots per block (a block with no change at all is skipped in one step)."""


class _Inner:
    """Changes strictly inside one slot, and the highest running sum they reach (at least 0)."""

    __slots__ = ("deltas", "times", "top")

    def __init__(self) -> None:
        self.times: list[int] = []
        self.deltas: list[int] = []
        self.top = 0

    def insert(self, t: int, d: int) -> None:
        i = bisect_left(self.times, t)
        if i < len(self.times) and self.times[i] == t:
            self.deltas[i] += d
            if self.deltas[i] == 0:
                del self.times[i]
                del self.deltas[i]
        else:
            self.times.insert(i, t)
            self.deltas.insert(i, d)
        self.recompute()

    def recompute(self) -> None:
        run = top = 0
        for d in self.deltas:
            run += d
            if run > top:
                top = run
        self.top = top

    def max_between(self, base: int, a: int, b: int) -> int:
        """The highest level in [a, b) of the slot, given the level ``base`` at its start."""
        level = base
        times, deltas = self.times, self.deltas
        i = 0
        while i < len(times) and times[i] <= a:
            level += deltas[i]
            i += 1
        best = level
        while i < len(times) and times[i] < b:
            level += deltas[i]
            if level > best:
                best = level
            i += 1
        return best


class Levels:
    """One integer level over time (vCPUs reserved, GPU hosts in use...)."""

    __slots__ = ("_block_keys", "_block_sum", "_d", "_inner", "_inner_blocks")

    def __init__(self) -> None:
        self._d: dict[int, dict[int, int]] = {}
        """Block -> {slot: change of the level at the slot start vs the previous slot start}."""
        self._block_sum: dict[int, int] = {}
        self._block_keys: list[int] = []
        self._inner: dict[int, _Inner] = {}
        self._inner_blocks: dict[int, int] = {}

    @classmethod
    def build(cls, changes: list[tuple[int, int]]) -> Levels:
        """The levels of a function given as (time, change) pairs (sorted here, in place)."""
        lv = cls()
        changes.sort(key=itemgetter(0))
        changes.append((1 << 62, 0))  # sentinel: flushes the last change
        at_start: dict[int, int] = {}
        inner_of = lv._inner
        cur_k = -1
        inner: _Inner | None = None
        net = 0  # sum of the changes inside the current slot
        pt, pd = changes[0][0], 0
        for t, d in changes:
            if t == pt:
                pd += d
                continue
            if pd:
                k = pt // SLOT
                if k != cur_k:
                    if net:
                        at_start[cur_k + 1] = at_start.get(cur_k + 1, 0) + net
                    cur_k, inner, net = k, None, 0
                if pt == k * SLOT:
                    at_start[k] = at_start.get(k, 0) + pd
                else:
                    if inner is None:
                        inner = inner_of[k] = _Inner()
                    inner.times.append(pt)
                    inner.deltas.append(pd)
                    net += pd
            pt, pd = t, d
        if net:
            at_start[cur_k + 1] = at_start.get(cur_k + 1, 0) + net
        changes.pop()
        for k, slot in inner_of.items():
            slot.recompute()
            lv._inner_blocks[k // BLOCK] = lv._inner_blocks.get(k // BLOCK, 0) + 1
        for k, d in at_start.items():
            if d:
                b = k // BLOCK
                blk = lv._d.get(b)
                if blk is None:
                    blk = lv._d[b] = {}
                    lv._block_sum[b] = 0
                blk[k] = d
                lv._block_sum[b] += d
        lv._block_keys = sorted(lv._d)
        return lv

    def _bump(self, k: int, d: int) -> None:
        b = k // BLOCK
        blk = self._d.get(b)
        if blk is None:
            blk = self._d[b] = {}
            self._block_sum[b] = 0
            insort(self._block_keys, b)
        v = blk.get(k, 0) + d
        if v:
            blk[k] = v
        else:
            blk.pop(k, None)
        self._block_sum[b] += d
        if not blk:
            del self._d[b]
            del self._block_sum[b]
            del self._block_keys[bisect_left(self._block_keys, b)]

    def _change(self, t: int, d: int) -> None:
        k = t // SLOT
        if t == k * SLOT:
            self._bump(k, d)
            return
        inner = self._inner.get(k)
        if inner is None:
            inner = self._inner[k] = _Inner()
            self._inner_blocks[k // BLOCK] = self._inner_blocks.get(k // BLOCK, 0) + 1
        inner.insert(t, d)
        if not inner.times:
            del self._inner[k]
            left = self._inner_blocks[k // BLOCK] - 1
            if left:
                self._inner_blocks[k // BLOCK] = left
            else:
                del self._inner_blocks[k // BLOCK]
        self._bump(k + 1, d)

    def add(self, start: int, end: int, delta: int) -> None:
        """Add ``delta`` to the level over [start, end)."""
        if delta and end > start:
            self._change(start, delta)
            self._change(end, -delta)

    def _base(self, k: int) -> int:
        """The level at the start of slot ``k``."""
        b = k // BLOCK
        keys = self._block_keys
        total = sum(self._block_sum[x] for x in keys[: bisect_left(keys, b)])
        blk = self._d.get(b)
        if blk:
            total += sum(v for s, v in blk.items() if s <= k)
        return total

    def _next(self, k: int, base: int, limit: int) -> tuple[int, int]:
        """From slot ``k`` (level ``base`` at its start) to the next slot, or to the last slot
        of a following block where nothing changes, never past ``limit``."""
        k += 1
        b = k // BLOCK
        blk = self._d.get(b)
        if blk is None:
            if k % BLOCK == 0 and k + BLOCK <= limit and b not in self._inner_blocks:
                return k + BLOCK - 1, base
            return k, base
        return k, base + blk.get(k, 0)

    def level_at(self, t: int) -> int:
        """The level at instant ``t``."""
        k = t // SLOT
        level = self._base(k)
        inner = self._inner.get(k)
        if inner is not None:
            level += sum(inner.deltas[: bisect_right(inner.times, t)])
        return level

    def peak(self, start: int, end: int) -> int:
        """The highest level over [start, end)."""
        return self.peaks([start], end)[0]

    def peaks(self, edges: list[int], end: int) -> list[int]:
        """The highest level in each bucket [edges[i], edges[i+1]) (the last ends at ``end``)."""
        out: list[int] = []
        if not edges:
            return out
        inner_of = self._inner
        k = edges[0] // SLOT
        base = self._base(k)
        for i, a in enumerate(edges):
            b = edges[i + 1] if i + 1 < len(edges) else end
            ka, kb = a // SLOT, (b - 1) // SLOT
            while k < ka:
                k, base = self._next(k, base, ka)
            best = 0
            while True:
                lo = k * SLOT
                inner = inner_of.get(k)
                if inner is None:
                    m = base
                elif a <= lo and b >= lo + SLOT:
                    m = base + inner.top
                else:
                    m = inner.max_between(base, max(a, lo), min(b, lo + SLOT))
                if m > best:
                    best = m
                if k >= kb:
                    break
                k, base = self._next(k, base, kb)
            out.append(best)
        return out

    def canonical(self) -> list[tuple[int, int]]:
        """The function as (time, new level) change points, for comparing two indexes."""
        slots = sorted(
            {k for blk in self._d.values() for k in blk}
            | set(self._inner)
            | {k + 1 for k in self._inner}  # the level after a slot's inner changes
        )
        raw: list[tuple[int, int]] = []
        base = 0
        for k in slots:
            blk = self._d.get(k // BLOCK)
            base += blk.get(k, 0) if blk else 0
            raw.append((k * SLOT, base))
            inner = self._inner.get(k)
            if inner is not None:
                run = base
                for t, d in zip(inner.times, inner.deltas, strict=True):
                    run += d
                    raw.append((t, run))
        points: list[tuple[int, int]] = []
        for t, v in raw:
            if points and points[-1][0] == t:
                points.pop()
            if v != (points[-1][1] if points else 0):
                points.append((t, v))
        return points
