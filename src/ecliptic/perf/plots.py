"""Plots that answer "which wiring is faster": aggregates drawn side by side.

:func:`figures` takes one :class:`Entry` per permutation of a benchmark set (its label, such
as ``network=direct``, and its :class:`~ecliptic.perf.stats.Aggregate`) and draws, per kind:

- a sweep over message sizes (MPI ping-pong, RDMA): each column against the size on a log2
  axis, one line per entry through the medians, with a band from min to max;
- no sweep (iperf3, fio): a bar per entry of the headline figure, whiskers from min to max
  and the median written on the bar;
- a Slurm job: wall time against the node count, and the speed-up over the fewest nodes.

Every figure says its unit and which way is better. Drawing is pure: matplotlib's Agg and
SVG canvases write to memory (never a display), with a fixed SVG hash salt and no dates, so
the same data give the same bytes.
"""

from __future__ import annotations

import io
import math
import re
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import matplotlib
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
from matplotlib.typing import RcKeyType

from ecliptic.perf.stats import EN_DASH, Aggregate, Spread, fmt

Format = Literal["svg", "png"]

# Okabe-Ito: told apart by people with any common colour-vision deficiency; markers and
# dashes tell the lines apart in greyscale print too.
COLOURS = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
MARKERS = ("o", "s", "^", "D", "v", "P", "X")
DASHES = ("-", "--", "-.", ":")

_STYLE: dict[RcKeyType, Any] = {
    "svg.hashsalt": "ecliptic-perf",  # ids in the SVG come from this, not from a random seed
    "svg.fonttype": "none",  # text stays text: searchable, selectable, smaller
    "font.family": "DejaVu Sans",  # ships with matplotlib: the same glyphs everywhere
    "font.size": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
}
_SIZE_IN = (8.0, 5.0)
_DPI = 120
_METADATA: dict[str, dict[str, Any]] = {"svg": {"Date": None}, "png": {"Software": None}}
"""No date (the same data give the same bytes) and no software version in the files."""

_KIND_TITLES: dict[str, str] = {
    "iperf3": "iperf3",
    "fio": "fio",
    "mpi_pingpong": "MPI ping-pong",
    "rdma_bandwidth": "RDMA bandwidth (perftest)",
    "rdma_latency": "RDMA latency (perftest)",
    "slurm_job": "Slurm job",
}
"""How a kind is named in a title."""

_NAMES: dict[str, tuple[str, str]] = {
    "throughput_gbps": ("Throughput", "throughput"),
    "bandwidth_gbps": ("Bandwidth", "bandwidth"),
    "bw_avg_gbps": ("Average bandwidth", "bandwidth"),
    "msg_rate_mpps": ("Message rate", "message-rate"),
    "latency_avg_us": ("Average latency", "latency"),
    "latency_typical_us": ("Typical latency", "latency"),
    "iops": ("IOPS", "iops"),
    "latency_us": ("Latency", "latency"),
    "bandwidth_mbs": ("Bandwidth", "bandwidth"),
    "wall_s": ("Wall time", "wall-time"),
    "bytes": ("Message size", "size"),
    "nodes": ("Nodes", "nodes"),
}
"""A metric or column as people read it, and as it appears in a file name."""

_UNITS = {"us": "µs", "B": "bytes"}
_UNIT_SUFFIXES = {"us", "ms", "s", "ns", "gbps", "mbps", "mbs", "mibs", "gbs", "pct", "mpps"}


@dataclass(frozen=True)
class Entry:
    """One line or bar: the repetitions of one permutation of a benchmark set."""

    label: str
    """What tells it apart from the others (``network=direct``): the legend or the bar."""
    kind: str
    """The benchmark kind (``iperf3``)."""
    permutation: dict[str, Any]
    """The permutation's keys and values (``{"network": "direct"}``)."""
    aggregate: Aggregate
    """Its repetitions as spreads."""


@dataclass(frozen=True)
class Figure:
    """A rendered plot."""

    name: str
    """File-name safe, without extension: ``mpi_pingpong-latency``."""
    title: str
    """What it shows: ``MPI ping-pong: latency against message size``."""
    format: Format
    """``svg`` or ``png``."""
    data: bytes
    """The file's bytes."""


@dataclass(frozen=True)
class _Bars:
    """A metric of each entry as a bar: the headline, or ``metric`` when every entry has it."""

    metric: str | None = None


@dataclass(frozen=True)
class _Sweep:
    """Columns against the message size, one figure each: the first of each group of
    alternatives that the series have (perftest prints ``t_avg`` or, older, ``t_typical``)."""

    columns: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class _Scaling:
    """``column`` against the node count, and the speed-up over the fewest nodes."""

    column: str


_Plot = _Bars | _Sweep | _Scaling

PLOTS: dict[str, tuple[_Plot, ...]] = {
    "iperf3": (_Bars(),),
    "fio": (_Bars(), _Bars("iops")),
    "mpi_pingpong": (_Sweep((("latency_us",), ("bandwidth_mbs",))),),
    "rdma_bandwidth": (_Sweep((("bw_avg_gbps",), ("msg_rate_mpps",))),),
    "rdma_latency": (_Sweep((("latency_avg_us", "latency_typical_us"),)),),
    "slurm_job": (_Scaling("wall_s"),),
}
"""What is drawn for each kind. A kind missing here has no plots (a clear error)."""


def figures(entries: Sequence[Entry], fmt: Format) -> list[Figure]:
    """The plots comparing ``entries``, per kind in the order the kinds first appear."""
    if fmt not in ("svg", "png"):
        raise ValueError(f"figures are drawn as 'svg' or 'png', not {fmt!r}")
    for e in entries:
        if e.kind != e.aggregate.kind:
            raise ValueError(
                f"entry {e.label!r} is {e.kind} but its aggregate is {e.aggregate.kind}"
            )
        if e.kind not in PLOTS:
            known = ", ".join(sorted(PLOTS))
            raise ValueError(f"no plots for benchmark kind {e.kind!r}; plots exist for: {known}")
    styles = {label: i for i, label in enumerate(dict.fromkeys(e.label for e in entries))}
    out: list[Figure] = []
    for kind in dict.fromkeys(e.kind for e in entries):
        group = [e for e in entries if e.kind == kind]
        for plot in PLOTS[kind]:
            out += _draw(plot, kind, group, styles, fmt)
    seen: dict[str, int] = {}
    named = []
    for f in out:  # two figures never share a file name
        seen[f.name] = seen.get(f.name, 0) + 1
        if seen[f.name] > 1:
            f = Figure(f"{f.name}-{seen[f.name]}", f.title, f.format, f.data)
        named.append(f)
    return named


def _draw(
    plot: _Plot, kind: str, entries: list[Entry], styles: dict[str, int], fmt: Format
) -> list[Figure]:
    if isinstance(plot, _Bars):
        metric = plot.metric or entries[0].aggregate.headline
        if plot.metric and not all(metric in e.aggregate.metrics for e in entries):
            return []
        return [_bars(kind, entries, styles, fmt, metric)]
    x = "bytes" if isinstance(plot, _Sweep) else "nodes"
    swept = [e for e in entries if e.aggregate.series_x == x and e.aggregate.series]
    if not swept:  # no result carried the sweep (one size only): compare the headline
        return [_bars(kind, entries, styles, fmt, entries[0].aggregate.headline)]
    if isinstance(plot, _Sweep):
        present = {c for e in swept for row in e.aggregate.series for c in row}
        chosen = [next((c for c in group if c in present), None) for group in plot.columns]
        return [_sweep(kind, swept, styles, fmt, c) for c in chosen if c is not None]
    return [
        _scaling(kind, swept, styles, fmt, plot.column),
        _speedup(kind, swept, styles, fmt, plot.column),
    ]


# One figure each -----------------------------------------------------------------------------


def _bars(
    kind: str, entries: list[Entry], styles: dict[str, int], fmt: Format, headline: str
) -> Figure:
    agg0 = entries[0].aggregate
    unit = agg0.units.get(headline, "")
    name, slug = _name(headline)
    spreads = [e.aggregate.metrics.get(headline) for e in entries]
    if any(s is None for s in spreads):
        missing = [e.label for e, s in zip(entries, spreads, strict=True) if s is None]
        raise ValueError(f"{kind}: {', '.join(missing)} have no {headline}")
    shown = [s for s in spreads if s is not None]
    title = f"{_KIND_TITLES[kind]}: {_lower(name)} {_by(entries)}"

    def draw(fig: MplFigure, ax: Axes) -> None:
        xs = list(range(len(entries)))
        for i, (e, s) in enumerate(zip(entries, shown, strict=True)):
            style = styles[e.label]
            ax.bar(i, s.median, width=0.6, color=COLOURS[style % len(COLOURS)], zorder=2)
            ax.errorbar(
                i,
                s.median,
                yerr=[[s.median - s.min], [s.max - s.median]],
                fmt="none",
                ecolor="#333333",
                elinewidth=1.2,
                capsize=6,
                zorder=3,
            )
            ax.annotate(
                f"{fmt_value(s.median)} {_unit(unit)}".strip(),
                (i, max(s.max, s.median)),
                xytext=(0, 4),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=10,
                fontweight="bold",
            )
        ax.set_xticks(xs, [_wrap(e.label, 18) for e in entries])
        top = max(max(s.max, s.median) for s in shown)
        bottom = min(min(s.min, 0.0) for s in shown)
        ax.set_ylim(bottom * 1.15, top * 1.15 if top > 0 else 1.0)
        ax.set_ylabel(_axis(name, unit))
        ax.grid(axis="y", color="#dddddd", zorder=0)
        ax.set_xlim(-0.6, len(entries) - 0.4)

    subtitle = (
        f"{_better(agg0, headline)} · bars: median of {_runs(shown)}, whiskers: min{EN_DASH}max"
    )
    return _render(f"{kind}-{slug}", title, subtitle, fmt, draw)


def _sweep(
    kind: str, entries: list[Entry], styles: dict[str, int], fmt: Format, column: str
) -> Figure:
    x = "bytes"
    agg0 = next(e.aggregate for e in entries if any(column in r for r in e.aggregate.series))
    unit = agg0.units.get(column, "")
    name, slug = _name(column)
    title = f"{_KIND_TITLES[kind]}: {_lower(name)} against message size"
    dropped = False
    lines = []
    for e in entries:
        rows = [r for r in e.aggregate.series if column in r]
        dropped |= any(r[x].median <= 0 for r in rows)
        rows = [r for r in rows if r[x].median > 0]  # a log axis has no zero
        if rows:
            lines.append((e, rows))
    values = [v for _, rows in lines for r in rows for v in (r[column].min, r[column].max)]

    def draw(fig: MplFigure, ax: Axes) -> None:
        for e, rows in lines:
            _line(ax, e, styles[e.label], [r[x].median for r in rows], [r[column] for r in rows])
        ax.set_xscale("log", base=2)
        sizes = [r[x].median for _, rows in lines for r in rows]
        if sizes:
            _size_ticks(ax, min(sizes), max(sizes))
        positive = [v for v in values if v > 0]
        if positive and max(positive) / min(positive) > 100:
            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
        elif values:
            ax.set_ylim(bottom=min(0.0, min(values)))
        ax.set_xlabel("Message size (bytes, log scale)")
        ax.set_ylabel(_axis(name, unit) + (" (log scale)" if ax.get_yscale() == "log" else ""))
        ax.grid(which="major", color="#dddddd")
        ax.legend(loc="best")

    runs = _runs([r[column] for _, rows in lines for r in rows])
    subtitle = f"{_better(agg0, column)} · lines: median of {runs}, bands: min{EN_DASH}max"
    if dropped:
        subtitle += " · 0-byte messages not shown"
    return _render(f"{kind}-{slug}", title, subtitle, fmt, draw)


def _scaling(
    kind: str, entries: list[Entry], styles: dict[str, int], fmt: Format, column: str
) -> Figure:
    x = "nodes"
    agg0 = entries[0].aggregate
    unit = agg0.units.get(column, "")
    name, slug = _name(column)
    title = f"{_KIND_TITLES[kind]}: {_lower(name)} against node count"

    def draw(fig: MplFigure, ax: Axes) -> None:
        nodes: set[float] = set()
        for e in entries:
            rows = [r for r in e.aggregate.series if column in r]
            nodes |= {r[x].median for r in rows}
            _line(ax, e, styles[e.label], [r[x].median for r in rows], [r[column] for r in rows])
        _node_ticks(ax, sorted(nodes))
        ax.set_ylim(bottom=0)
        ax.set_xlabel("Nodes")
        ax.set_ylabel(_axis(name, unit))
        ax.grid(color="#dddddd")
        ax.legend(loc="best")

    subtitle = f"{_better(agg0, column)} · lines: median, bands: min{EN_DASH}max"
    return _render(f"{kind}-{slug}", title, subtitle, fmt, draw)


def _speedup(
    kind: str, entries: list[Entry], styles: dict[str, int], fmt: Format, column: str
) -> Figure:
    x = "nodes"
    name, _ = _name(column)
    title = f"{_KIND_TITLES[kind]}: speed-up against node count"

    def draw(fig: MplFigure, ax: Axes) -> None:
        nodes: set[float] = set()
        for e in entries:
            rows = [r for r in e.aggregate.series if column in r and r[column].median > 0]
            if not rows:
                continue
            base = rows[0]  # the fewest nodes
            t0 = base[column].median
            ups = [
                Spread(
                    median=t0 / r[column].median,
                    min=t0 / r[column].max if r[column].max > 0 else math.inf,
                    max=t0 / r[column].min if r[column].min > 0 else math.inf,
                    n=r[column].n,
                )
                for r in rows
            ]
            nodes |= {r[x].median for r in rows}
            _line(ax, e, styles[e.label], [r[x].median for r in rows], ups)
        if nodes:
            lo, hi = min(nodes), max(nodes)
            ax.plot(
                [lo, hi], [1.0, hi / lo], color="#888888", linestyle=":", label="ideal (linear)"
            )
        _node_ticks(ax, sorted(nodes))
        ax.set_ylim(bottom=0)
        ax.set_xlabel("Nodes")
        ax.set_ylabel("Speed-up over the fewest nodes (\u00d7)")  # a multiplication sign
        ax.grid(color="#dddddd")
        ax.legend(loc="best")

    subtitle = f"higher is better · median {_lower(name)} on the fewest nodes ÷ median on n"
    return _render(f"{kind}-speedup", title, subtitle, fmt, draw)


# Shared pieces -------------------------------------------------------------------------------


def _render(
    name: str,
    title: str,
    subtitle: str,
    fmt: Format,
    draw: Callable[[MplFigure, Axes], None],
) -> Figure:
    with matplotlib.rc_context(_STYLE):
        fig = MplFigure(figsize=_SIZE_IN, dpi=_DPI)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        fig.suptitle(title, x=0.02, ha="left", fontsize=13, fontweight="bold")
        ax.set_title(subtitle, loc="left", color="#555555", fontsize=9)
        draw(fig, ax)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=_DPI, metadata={**_METADATA[fmt], "Title": title})
    return Figure(name=_safe(name), title=title, format=fmt, data=buf.getvalue())


def _line(ax: Axes, e: Entry, style: int, xs: list[float], ys: list[Spread]) -> None:
    colour = COLOURS[style % len(COLOURS)]
    ax.fill_between(
        xs, [s.min for s in ys], [s.max for s in ys], color=colour, alpha=0.18, linewidth=0
    )
    ax.plot(
        xs,
        [s.median for s in ys],
        color=colour,
        marker=MARKERS[style % len(MARKERS)],
        markersize=4.5,
        linestyle=DASHES[(style // len(COLOURS)) % len(DASHES)],
        linewidth=1.6,
        label=_wrap(e.label, 40),
    )


def _size_ticks(ax: Axes, lo: float, hi: float) -> None:
    first, last = math.floor(math.log2(lo)), math.ceil(math.log2(hi))
    stride = 1
    while (last - first) // stride + 1 > 12:
        stride *= 2
    exps = [p for p in range(first, last + 1) if p % stride == 0]
    ax.xaxis.set_major_locator(FixedLocator([2.0**p for p in exps]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: size_label(v)))
    ax.xaxis.set_minor_locator(NullLocator())


def _node_ticks(ax: Axes, nodes: list[float]) -> None:
    ax.xaxis.set_major_locator(FixedLocator(nodes))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))


def size_label(n: float) -> str:
    """A message size as people write it: ``512``, ``4 KiB``, ``1 MiB``."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:g} {unit}"
    return f"{n:g}"


def fmt_value(v: float) -> str:
    """A value written on a bar."""
    return fmt(v)


def _name(metric: str) -> tuple[str, str]:
    if metric in _NAMES:
        return _NAMES[metric]
    words = metric.split("_")
    if len(words) > 1 and words[-1] in _UNIT_SUFFIXES:
        words = words[:-1]
    return " ".join(words).capitalize(), "-".join(words)


def _lower(name: str) -> str:
    return name if name.isupper() else name.lower()


def _unit(unit: str) -> str:
    return _UNITS.get(unit, unit)


def _axis(name: str, unit: str) -> str:
    return f"{name} ({_unit(unit)})" if unit else name


def _better(agg: Aggregate, metric: str) -> str:
    return "higher is better" if agg.better_higher(metric) else "lower is better"


def _runs(spreads: Sequence[Spread]) -> str:
    ns = sorted({s.n for s in spreads})
    if len(ns) == 1:
        return f"{ns[0]} run" if ns[0] == 1 else f"{ns[0]} runs"
    return f"{ns[0]}{EN_DASH}{ns[-1]} runs"


def _by(entries: list[Entry]) -> str:
    keys = dict.fromkeys(k for e in entries for k in e.permutation)
    varying = [k for k in keys if len({repr(e.permutation.get(k)) for e in entries}) > 1]
    return f"by {', '.join(varying)}" if varying else "per run"


def _wrap(label: str, width: int) -> str:
    return "\n".join(textwrap.wrap(label, width, break_on_hyphens=False)) or label


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.") or "figure"
