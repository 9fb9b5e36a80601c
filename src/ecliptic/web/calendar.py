"""Pictures drawn on the server as SVG: the lease calendar and simple bar plots."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from markupsafe import Markup, escape

LABEL_W = 170
ROW_H = 26
CHART_W = 900
FREE = "#2f8f5b"
BUSY = "#d7dbe4"
LEASE = {"ACTIVE": "#2149b8", "PENDING": "#7a8fd6", "DEGRADED": "#b55d00", "ENDED": "#8b93a3"}


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def gantt(
    start: datetime,
    end: datetime,
    now: datetime,
    capacity: Sequence[Any],
    leases: Sequence[Any],
    *,
    link: str,
) -> Markup:
    """Free capacity per resource class (shaded by how much is free) and the tenancy's
    leases as bars, over [start, end), with day lines and a "now" line."""
    span = (end - start).total_seconds()

    def x(t: datetime) -> float:
        s = (_utc(t) - start).total_seconds()
        return LABEL_W + max(0.0, min(1.0, s / span)) * CHART_W

    rows = len(capacity) + max(1, len(leases)) + 2
    height = 34 + rows * ROW_H
    out: list[str] = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {LABEL_W + CHART_W + 10} {height}" '
        f'width="{LABEL_W + CHART_W + 10}" role="figure" aria-labelledby="cal-title cal-desc">',
        '<title id="cal-title">Lease calendar</title>',
        f'<desc id="cal-desc">Free capacity per resource class and {len(leases)} leases of this tenancy '
        f"from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC</desc>",
    ]
    day = start.replace(hour=0, minute=0)
    while day <= end:
        if day >= start:
            out.append(
                f'<line x1="{x(day):.1f}" y1="20" x2="{x(day):.1f}" y2="{height}" stroke="#e3e7ef"/>'
            )
            out.append(
                f'<text x="{x(day) + 3:.1f}" y="14" font-size="11" fill="#4b5567">{day:%a %d %b}</text>'
            )
        day += timedelta(days=1)
    y = 30
    out.append(
        f'<text x="4" y="{y + 12}" font-size="12" font-weight="600" fill="#1d2330">Free capacity</text>'
    )
    y += ROW_H
    for row in capacity:
        out.append(
            f'<text x="12" y="{y + 16}" font-size="12" fill="#1d2330">{escape(row.resource)}</text>'
        )
        step = (
            row.buckets[1].start - row.buckets[0].start
            if len(row.buckets) > 1
            else timedelta(hours=1)
        )
        # Neighbouring buckets with the same free share are drawn as one block.
        runs: list[list[Any]] = []
        for b in row.buckets:
            free = max(0, b.total - b.reserved)
            if runs and runs[-1][2] == free and runs[-1][3] == b.total:
                runs[-1][1] = b.start + step
            else:
                runs.append([b.start, b.start + step, free, b.total])
        for r_start, r_end, free, total in runs:
            share = free / total if total else 0.0
            colour = FREE if share > 0 else BUSY
            opacity = 0.25 + 0.75 * share if share > 0 else 1.0
            out.append(
                f'<rect x="{x(r_start):.1f}" y="{y + 3}" width="{max(0.5, x(r_end) - x(r_start)):.1f}" '
                f'height="{ROW_H - 8}" fill="{colour}" fill-opacity="{opacity:.2f}">'
                f"<title>{escape(row.resource)} {_utc(r_start):%a %H:%M} to {_utc(r_end):%a %H:%M}: {free} of {total} free</title></rect>"
            )
        y += ROW_H
    y += 4
    out.append(
        f'<text x="4" y="{y + 12}" font-size="12" font-weight="600" fill="#1d2330">Your leases</text>'
    )
    y += ROW_H
    if not leases:
        out.append(
            f'<text x="{LABEL_W}" y="{y + 14}" font-size="12" fill="#4b5567">none in this range</text>'
        )
    for lease in sorted(leases, key=lambda v: v.start_at):
        colour = LEASE.get(lease.phase, "#2149b8")
        x0, x1 = x(lease.start_at), x(lease.end_at)
        name = escape(lease.name)
        out.append(
            f'<a href="{escape(link)}{name}"><text x="12" y="{y + 16}" font-size="12" fill="#2149b8">{name}</text>'
            f'<rect x="{x0:.1f}" y="{y + 3}" width="{max(2.0, x1 - x0):.1f}" height="{ROW_H - 8}" rx="3" fill="{colour}">'
            f"<title>{name}: {_utc(lease.start_at):%Y-%m-%d %H:%M} to {_utc(lease.end_at):%Y-%m-%d %H:%M} UTC ({escape(lease.phase)})</title></rect></a>"
        )
        y += ROW_H
    if start <= now <= end:
        out.append(
            f'<line x1="{x(now):.1f}" y1="18" x2="{x(now):.1f}" y2="{height}" stroke="#a11b1b" stroke-width="2"/>'
        )
        out.append(f'<text x="{x(now) + 3:.1f}" y="28" font-size="11" fill="#a11b1b">now</text>')
    out.append("</svg>")
    return Markup("".join(out))


def _num(value: float) -> str:
    """A figure with the precision it needs (0.03 is not "0.0")."""
    if value == 0:
        return "0"
    if abs(value) < 10:
        return f"{value:,.2f}".rstrip("0").rstrip(".")
    return f"{value:,.1f}".removesuffix(".0")


def bars(
    title: str,
    series: Sequence[tuple[str, float, float]],
    *,
    first: str,
    second: str,
    unit: str,
) -> Markup:
    """Grouped horizontal bars: per label, ``first`` against ``second`` (e.g. reserved
    against used host-hours)."""
    top = max([max(a, b) for _, a, b in series] + [1e-9])
    height = 40 + len(series) * 44
    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {LABEL_W + CHART_W + 80} {height}" '
        f'width="{LABEL_W + CHART_W + 80}" role="img" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
    ]
    y = 20
    for label, a, b in series:
        out.append(f'<text x="4" y="{y + 18}" font-size="12" fill="#1d2330">{escape(label)}</text>')
        for i, (value, colour, what) in enumerate(((a, "#8b9fe0", first), (b, "#2149b8", second))):
            w = CHART_W * value / top
            yy = y + i * 16
            out.append(
                f'<rect x="{LABEL_W}" y="{yy}" width="{max(1.0, w):.1f}" height="14" fill="{colour}">'
                f"<title>{escape(label)} {escape(what)}: {_num(value)} {escape(unit)}</title></rect>"
            )
            out.append(
                f'<text x="{LABEL_W + w + 4:.1f}" y="{yy + 11}" font-size="11" fill="#1d2330">{_num(value)}</text>'
            )
        y += 44
    out.append("</svg>")
    return Markup("".join(out))
