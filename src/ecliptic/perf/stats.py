"""Repetitions of one benchmark summed up, and two such summaries compared.

A benchmark run is noisy: the same spec run three times gives three different figures.
:func:`aggregate` turns the :class:`~ecliptic.perf.kinds.base.Result` of each repetition
into an :class:`Aggregate` whose every figure is a :class:`Spread` (median, min, max, n).
:func:`compare` sets two aggregates side by side and calls a difference real only when the
two [min, max] ranges do not overlap: a change smaller than the run-to-run spread is not a
finding. Everything here is pure: plain data in, plain data out.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from ecliptic.perf.kinds.base import Result

_X_TOLERANCE: dict[str, float] = {"seconds": 0.01}
"""Relative distance within which two x values of a series are the same point. Sizes and
node counts are exact; interval end times jitter by microseconds between repetitions
(``1.000042`` and ``1.000031`` are both "after one second")."""

EN_DASH = "\u2013"
"""Between the ends of a range, as typeset (not a hyphen)."""

_TIME_UNITS = {"ns", "us", "µs", "ms", "s", "min", "h"}


@dataclass(frozen=True)
class Spread:
    """A figure over repetitions: the middle value and how far apart the runs were."""

    median: float
    """The median of the repetitions (the figure to quote)."""
    min: float
    """The smallest value seen."""
    max: float
    """The largest value seen."""
    n: int
    """How many repetitions had this figure."""

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        """The spread of ``values``; ValueError when there are none or one is not finite."""
        vs = [float(v) for v in values]
        if not vs:
            raise ValueError("a spread needs at least one value")
        if not all(math.isfinite(v) for v in vs):
            raise ValueError(f"not a finite number among {vs}")
        return cls(median=statistics.median(vs), min=min(vs), max=max(vs), n=len(vs))

    @property
    def spread_pct(self) -> float:
        """(max - min) / |median| in percent: 0 for one run, infinite around a zero median."""
        if self.n == 1 or self.max == self.min:
            return 0.0
        if self.median == 0:
            return math.inf
        return (self.max - self.min) / abs(self.median) * 100.0

    def overlaps(self, other: Spread) -> bool:
        """Whether the [min, max] ranges of the two share a value."""
        return self.min <= other.max and other.min <= self.max


@dataclass(frozen=True)
class Aggregate:
    """The repetitions of one benchmark (one permutation of a set) as spreads."""

    kind: str
    """The benchmark kind (``iperf3``)."""
    headline: str
    """The metric that answers "how fast" (``throughput_gbps``)."""
    metrics: dict[str, Spread]
    """Every scalar figure any repetition reported, over the repetitions that had it."""
    units: dict[str, str]
    """Unit of each metric and series column (``Gbit/s``, ``us``)."""
    higher_is_better: dict[str, bool]
    """Per metric or column: whether bigger is better (absent: see :meth:`better_higher`)."""
    series_x: str | None
    """The column the series is drawn against (``bytes``, ``nodes``); None: no series."""
    series: list[dict[str, Spread]]
    """One row per x value, ascending: each column over the repetitions that had that x."""
    summary: str
    """One line for people: ``9.41 Gbit/s (9.38-9.44, n=3)`` (an en dash between the two)."""

    @property
    def n(self) -> int:
        """How many repetitions the headline is made of."""
        return self.metrics[self.headline].n

    def better_higher(self, name: str) -> bool:
        """Whether a bigger value of metric or column ``name`` is the better one.

        What the results said wins; a column they did not mention measured in a unit of time
        (latency, wall time) is better lower, anything else higher."""
        if name in self.higher_is_better:
            return self.higher_is_better[name]
        return self.units.get(name, "") not in _TIME_UNITS

    def row(self, x: float) -> dict[str, Spread] | None:
        """The series row at ``x`` (within the kind's tolerance), if there is one."""
        for r in self.series:
            if self.series_x is not None and _same_x(self.series_x, r[self.series_x].median, x):
                return r
        return None


@dataclass(frozen=True)
class Difference:
    """One figure of two aggregates side by side."""

    metric: str
    """The metric or series column compared."""
    unit: str
    """Its unit."""
    a: Spread
    """The figure in the first aggregate."""
    b: Spread
    """The figure in the second aggregate."""
    ratio: float | None
    """b.median / a.median; None when a.median is 0."""
    beyond_spread: bool
    """True when the [min, max] ranges do not overlap: the difference is bigger than the
    run-to-run spread of either side."""
    better: Literal["a", "b"] | None
    """Which side is better; None when the difference is not beyond the spread."""
    x: float | None = None
    """For a series point: the x value (message size, node count); None for a metric."""

    @property
    def change_pct(self) -> float | None:
        """How much b differs from a, in percent of a (None when a.median is 0)."""
        return None if self.ratio is None else (self.ratio - 1.0) * 100.0


def aggregate(kind: str, results: Sequence[Result]) -> Aggregate:
    """The repetitions ``results`` of one benchmark of ``kind`` as one :class:`Aggregate`.

    ValueError when there are no results, when they name different headlines, give one
    figure two different units or are drawn against different x columns."""
    if not results:
        raise ValueError(f"{kind}: no results to aggregate")
    headlines = {r.headline for r in results}
    if len(headlines) > 1:
        raise ValueError(
            f"{kind}: the results have different headlines ({', '.join(sorted(headlines))}); "
            "only repetitions of one benchmark can be aggregated"
        )
    headline = results[0].headline
    xs = {r.series_x for r in results if r.series_x is not None and r.series}
    if len(xs) > 1:
        raise ValueError(f"{kind}: the results' series are against {', '.join(sorted(xs))}")
    series_x = xs.pop() if xs else None

    units: dict[str, str] = {}
    better: dict[str, bool] = {}
    for r in results:
        for name, unit in r.units.items():
            if units.setdefault(name, unit) != unit:
                raise ValueError(
                    f"{kind}: {name} is in {units[name]} in one result, {unit} in another"
                )
        for name, flag in r.higher_is_better.items():
            if better.setdefault(name, flag) != flag:
                raise ValueError(f"{kind}: the results disagree on whether more {name} is better")

    values: dict[str, list[float]] = {}
    for r in results:
        for name, v in r.metrics.items():
            values.setdefault(name, []).append(v)
    if headline not in values:
        raise ValueError(f"{kind}: no result has its headline metric {headline!r}")
    metrics = {name: Spread.of(vs) for name, vs in values.items()}

    return Aggregate(
        kind=kind,
        headline=headline,
        metrics=metrics,
        units=units,
        higher_is_better=better,
        series_x=series_x,
        series=_aggregate_series(series_x, results) if series_x is not None else [],
        summary=describe(metrics[headline], units.get(headline, "")),
    )


def _aggregate_series(x: str, results: Sequence[Result]) -> list[dict[str, Spread]]:
    rows = [row for r in results if r.series_x == x for row in r.series if x in row]
    groups: list[list[dict[str, float]]] = []
    for row in sorted(rows, key=lambda row: row[x]):
        if groups and _same_x(x, groups[-1][0][x], row[x]):
            groups[-1].append(row)
        else:
            groups.append([row])
    out = []
    for group in groups:
        columns: dict[str, list[float]] = {}
        for row in group:
            for name, v in row.items():
                columns.setdefault(name, []).append(v)
        out.append({name: Spread.of(vs) for name, vs in columns.items()})
    return out


def _same_x(column: str, a: float, b: float) -> bool:
    tolerance = _X_TOLERANCE.get(column, 0.0)
    return a == b or abs(a - b) <= tolerance * max(abs(a), abs(b))


def fmt(value: float) -> str:
    """A figure with three significant digits or so, as people write them: 9.41, 1184, 0.042."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    size = abs(value)
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 0.1:
        return f"{value:.2f}"
    return f"{value:.2g}"


def describe(s: Spread, unit: str) -> str:
    """A spread in one line: ``9.41 Gbit/s (9.38-9.44, n=3)`` (an en dash between the two)."""
    unit = f" {unit}" if unit else ""
    if s.n == 1:
        return f"{fmt(s.median)}{unit} (n=1)"
    return f"{fmt(s.median)}{unit} ({fmt(s.min)}{EN_DASH}{fmt(s.max)}, n={s.n})"


def _difference(
    name: str, unit: str, a: Spread, b: Spread, higher: bool, x: float | None = None
) -> Difference:
    beyond = not a.overlaps(b)
    winner: Literal["a", "b"] | None = None
    if beyond:
        winner = "b" if (b.median > a.median) == higher else "a"
    return Difference(
        metric=name,
        unit=unit,
        a=a,
        b=b,
        ratio=None if a.median == 0 else b.median / a.median,
        beyond_spread=beyond,
        better=winner,
        x=x,
    )


def _check_comparable(a: Aggregate, b: Aggregate) -> None:
    if a.kind != b.kind:
        raise ValueError(f"cannot compare a {a.kind} benchmark with a {b.kind} benchmark")
    for name in set(a.units) & set(b.units):
        if a.units[name] != b.units[name]:
            raise ValueError(
                f"{name} is in {a.units[name]} on one side, {b.units[name]} on the other"
            )


def compare(a: Aggregate, b: Aggregate) -> list[Difference]:
    """Every metric both aggregates have, the headline first; ValueError for other kinds."""
    _check_comparable(a, b)
    names = [a.headline] if a.headline in b.metrics else []
    names += [m for m in a.metrics if m in b.metrics and m != a.headline]
    return [
        _difference(m, a.units.get(m, ""), a.metrics[m], b.metrics[m], a.better_higher(m))
        for m in names
    ]


def compare_series(a: Aggregate, b: Aggregate) -> list[Difference]:
    """Every series column both have, at every x value both have (by column, then x)."""
    _check_comparable(a, b)
    if a.series_x is None or a.series_x != b.series_x:
        return []
    x = a.series_x
    out = []
    columns = list(dict.fromkeys(c for row in a.series for c in row if c != x))
    for column in columns:
        for ra in a.series:
            rb = b.row(ra[x].median)
            if rb is None or column not in ra or column not in rb:
                continue
            out.append(
                _difference(
                    column,
                    a.units.get(column, ""),
                    ra[column],
                    rb[column],
                    a.better_higher(column),
                    x=ra[x].median,
                )
            )
    return out
