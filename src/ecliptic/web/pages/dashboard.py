"""The front door: where a signed-in browser starts, the tenancy switcher, the dashboard."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated

from fastapi import Query, Request
from fastapi.responses import HTMLResponse, Response

from ecliptic.services import credits, leases, platforms
from ecliptic.web.pages.common import HereDep, page_router
from ecliptic.web.render import page, redirect
from ecliptic.web.session import VisitorDep

router = page_router()
SOON = timedelta(hours=24)


@dataclass(frozen=True)
class ClassBalance:
    """Credits of one resource class, summed over the tenancy's current allocations."""

    resource_class: str
    granted: Decimal
    used: Decimal
    committed: Decimal
    """Paid ahead for leases that have not ended yet (returned in part if they end early)."""
    remaining: Decimal

    @property
    def used_pct(self) -> int:
        """How much of the grant is spent or committed, in percent."""
        return (
            0
            if not self.granted
            else min(100, int(100 * (self.granted - self.remaining) / self.granted))
        )


@router.get("/")
def home(v: VisitorDep) -> Response:
    """Where a signed-in browser lands: its first tenancy (or the operator's pages)."""
    if v.tenancies:
        return redirect(f"/t/{v.tenancies[0][0]}/")
    if v.is_admin:
        return redirect("/admin/hosts")
    return redirect("/welcome")


@router.get("/welcome")
def welcome(request: Request, v: VisitorDep) -> HTMLResponse:
    """A signed-in user in no tenancy yet: what to do about it."""
    return page(request, "welcome.html", v, title="Welcome")


@router.get("/switch")
def switch(v: VisitorDep, to: Annotated[str, Query(max_length=63)] = "") -> Response:
    """The tenancy switcher (a GET form: it only moves between pages)."""
    names = {n for n, _ in v.tenancies}
    if to in names or (v.is_admin and to):
        return redirect(f"/t/{to}/")
    return redirect("/")


def _class_balances(
    rows: list[credits.Balance], committed: dict[str, Decimal], now: datetime
) -> list[ClassBalance]:
    sums: dict[str, list[Decimal]] = defaultdict(lambda: [Decimal(0)] * 3)
    for b in rows:
        if b.end_at.replace(tzinfo=b.end_at.tzinfo or UTC) <= now:
            continue
        s = sums[b.resource_class]
        s[0] += b.granted
        s[1] += b.charged - b.refunded
        s[2] += b.remaining
    out = []
    for rc in sorted(sums):
        granted, spent, remaining = sums[rc]
        ahead = min(committed.get(rc, Decimal(0)), spent)
        out.append(ClassBalance(rc, granted, spent - ahead, ahead, remaining))
    return out


@router.get("/t/{tenancy}/")
async def dashboard(here: HereDep) -> HTMLResponse:
    """Credits, leases, platforms and what needs attention, of one tenancy."""
    rt, c = here.rt, here.caller
    now = datetime.now(UTC)
    rows = await here.run(leases.list_leases, rt.booking, c)
    balances = await here.run(credits.list_balances, rt.db, c)
    plats = await here.run(platforms.list_platforms, rt.db, c)
    active = [x for x in rows if x.start_at <= now < x.end_at and x.phase != "ENDED"]
    upcoming = [x for x in rows if x.start_at > now]
    # What a lease still to run has paid ahead: its cost (net of refunds) for the part of
    # its window not yet passed, per resource class.
    committed: dict[str, Decimal] = defaultdict(Decimal)
    for x in active + upcoming:
        span = (x.end_at - x.start_at).total_seconds() or 1
        left = (x.end_at - max(now, x.start_at)).total_seconds()
        for rc, hours in (x.status.get("cost") or {}).items():
            committed[rc] += Decimal(str(hours)) * Decimal(left / span)
    warnings = []
    for x in active:
        if x.end_at - now <= SOON:
            warnings.append(
                (
                    x,
                    f"ends in {int((x.end_at - now).total_seconds() // 3600)} h "
                    f"{int((x.end_at - now).total_seconds() % 3600 // 60)} min",
                )
            )
    low = [
        b
        for b in _class_balances(balances, committed, now)
        if b.granted and b.remaining < b.granted / 10
    ]
    return page(
        here.request,
        "dashboard.html",
        here.v,
        tenancy=here.tenancy,
        title="Dashboard",
        balances=_class_balances(balances, committed, now),
        active=active,
        upcoming=upcoming,
        platforms=plats,
        ending=warnings,
        low=low,
        role=c.role,
    )
