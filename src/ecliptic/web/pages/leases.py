"""Reservations: the availability finder, creating leases with their cost shown first,
extending, shortening and ending them, and the calendar."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import Depends, Query
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from ecliptic.api.routes.leases import lease_out
from ecliptic.api.schemas import FindRequest
from ecliptic.errors import InvalidInput
from ecliptic.services import catalogue, credits, leases, platforms
from ecliptic.services.inputs import LeaseCreate, LeaseUpdate
from ecliptic.web import calendar as drawing
from ecliptic.web.forms import Checked, check, parse
from ecliptic.web.pages.common import Here, HereDep, page_router
from ecliptic.web.render import page, redirect
from ecliptic.web.session import form_of, one

router = page_router()
FIND_FIELDS = (
    "kind",
    "count",
    "flavor",
    "profile",
    "gpu_model",
    "where",
    "duration",
    "not_before",
    "alternatives",
)


def _reservation(q: dict[str, str]) -> dict[str, Any]:
    """A reservation from the finder's fields (empty ones left out)."""
    kind = q.get("kind") or "host"
    out: dict[str, Any] = {"kind": kind}
    count = q.get("count", "").strip()
    if count:
        out["count"] = int(count) if count.isdigit() else count
    for key in {
        "host": ("where",),
        "flavor": ("flavor", "where"),
        "gpu_slice": ("profile", "gpu_model", "where"),
    }.get(kind, ()):
        if q.get(key, "").strip():
            out[key] = q[key].strip()
    return out


def _when(text: str) -> datetime | str:
    """A ``datetime-local`` field (read as UTC), or "now" when empty."""
    text = text.strip()
    if not text or text == "now":
        return "now"
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"'{text}' is not a date and time: write YYYY-MM-DDTHH:MM (UTC)",
            errors=[{"field": "not_before", "msg": "write YYYY-MM-DDTHH:MM (UTC)"}],
        ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


async def _form_context(here: Here) -> dict[str, Any]:
    """What the reservation forms offer and show: flavors, and the credits left."""
    return {
        "flavors": await here.run(catalogue.list_flavors, here.rt.db),
        "balances": await here.run(credits.list_balances, here.rt.db, here.caller),
    }


@router.get("/t/{tenancy}/leases")
async def list_page(here: HereDep, ended: Annotated[bool, Query()] = False) -> HTMLResponse:
    """The tenancy's leases (ended ones on request)."""
    rows = await here.run(leases.list_leases, here.rt.booking, here.caller, include_ended=ended)
    return page(
        here.request,
        "leases/list.html",
        here.v,
        tenancy=here.tenancy,
        title="Reservations",
        leases=sorted(rows, key=lambda x: x.start_at),
        ended=ended,
    )


class ReservationFields(BaseModel):
    """What the finder and the new-lease form ask for one reservation (as typed)."""

    kind: str = Field("host", max_length=16)
    count: str = Field("1", max_length=8)
    flavor: str = Field("", max_length=63)
    profile: str = Field("", max_length=16)
    gpu_model: str = Field("", max_length=63)
    where: str = Field("", max_length=2000)


ReservationQuery = Annotated[ReservationFields, Depends()]


@router.get("/t/{tenancy}/leases/find")
async def find_page(
    here: HereDep,
    fields: ReservationQuery,
    duration: Annotated[str, Query(max_length=32)] = "",
    not_before: Annotated[str, Query(max_length=32)] = "",
    alternatives: Annotated[int, Query(ge=0, le=10)] = 3,
) -> HTMLResponse:
    """The availability finder: the earliest windows for a request, with alternatives."""
    q = fields.model_dump() | {
        "duration": duration,
        "not_before": not_before,
        "alternatives": str(alternatives),
    }
    searched = bool(duration)

    async def search() -> list[dict[str, Any]]:
        body = parse(
            FindRequest,
            {
                "reservations": [_reservation(q)],
                "duration": duration,
                "not_before": _when(not_before),
                "alternatives": alternatives,
            },
        )
        r = body.reservations[0]
        found, hosts = await here.run(
            leases.find_windows,
            here.rt.booking,
            here.caller,
            body.reservations,
            body.duration,
            body.not_before,
            body.horizon,
            body.alternatives,
        )
        return [
            {
                "start": w.start,
                "end": w.end,
                "hosts": w.placement.hosts(r.name),
                "cost": leases.window_cost(w, hosts, [r]),
            }
            for w in found
        ]

    got = await check(search) if searched else Checked[list[dict[str, Any]]]([])
    return page(
        here.request,
        "leases/find.html",
        here.v,
        tenancy=here.tenancy,
        title="Find capacity",
        q=q,
        windows=got.value or [],
        errors=got.errors,
        message=got.message,
        searched=searched,
        **await _form_context(here),
    )


def _create_body(q: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": q.get("name", ""),
        "start": _when(q.get("start", "")),
        "reservations": [_reservation(q)],
    }
    if q.get("end"):
        body["end"] = _when(q["end"])
    elif q.get("duration"):
        body["duration"] = q["duration"]
    if q.get("before_end"):
        body["before_end"] = q["before_end"]
    return body


@router.get("/t/{tenancy}/leases/new")
async def new_page(
    here: HereDep,
    fields: ReservationQuery,
    name: Annotated[str, Query(max_length=63)] = "",
    start: Annotated[str, Query(max_length=40)] = "",
    end: Annotated[str, Query(max_length=40)] = "",
    duration: Annotated[str, Query(max_length=32)] = "",
    before_end: Annotated[str, Query(max_length=32)] = "",
) -> HTMLResponse:
    """A lease to create, its cost and the credits it takes shown before confirming."""
    q = {"name": name, **fields.model_dump()} | {
        "start": start,
        "end": end,
        "duration": duration,
        "before_end": before_end,
    }

    async def preview() -> leases.CostChange:
        body = parse(LeaseCreate, _create_body(q))
        return await here.run(
            leases.preview_create, here.rt.booking, here.rt.queue, here.caller, body
        )

    asked = bool(q.get("name") and (q.get("end") or q.get("duration")))
    got = await check(preview) if asked else Checked[leases.CostChange]()
    return page(
        here.request,
        "leases/new.html",
        here.v,
        tenancy=here.tenancy,
        title="New lease",
        q=q,
        preview=got.value,
        errors=got.errors,
        message=got.message,
        code=got.code,
        **await _form_context(here),
    )


@router.post("/t/{tenancy}/leases")
async def create(here: HereDep) -> Response:
    """Create the lease previewed (its cost is charged at once)."""
    form = await form_of(here.request, here.v)
    q = {k: one(form, k) for k in form}
    body = parse(LeaseCreate, _create_body(q))
    lease = await here.run(leases.create_lease, here.rt.booking, here.rt.queue, here.caller, body)
    return redirect(f"{here.base}/leases/{lease.name}?done=created")


def _update_body(q: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = {}
    how = q.get("how", "extend")
    amount = q.get("amount", "").strip()
    if how in ("extend", "shorten"):
        body[how] = amount
    elif how == "end":
        body["end"] = _when(amount)
    else:
        raise InvalidInput(f"unknown change '{how}': extend, shorten or a new end")
    return body


@router.get("/t/{tenancy}/leases/{name}")
async def lease_page(
    here: HereDep,
    name: str,
    how: Annotated[str, Query(max_length=8)] = "",
    amount: Annotated[str, Query(max_length=32)] = "",
    done: Annotated[str, Query(max_length=16)] = "",
    end: Annotated[bool, Query()] = False,
) -> HTMLResponse:
    """One lease: its reservations and hosts, events, and changes with their cost first."""
    rt, c = here.rt, here.caller
    lease = await here.run(leases.get_lease, rt.booking, c, name)
    out = lease_out(lease, await here.run(leases.lease_servers, rt.booking, lease.id))
    events = await here.run(leases.lease_events, rt.booking, c, name)

    async def preview() -> leases.CostChange:
        body = parse(LeaseUpdate, _update_body({"how": how, "amount": amount}))
        return await here.run(leases.preview_update, rt.booking, rt.queue, c, name, body)

    got = await check(preview) if how and amount else Checked[leases.CostChange]()
    ending = await here.run(leases.preview_end, rt.booking, rt.queue, c, name) if end else None
    plats = [
        p for p in await here.run(platforms.list_platforms, rt.db, c) if p.lease_id == lease.id
    ]
    flash = {
        "created": "Lease created: its cost was charged.",
        "changed": "Lease changed.",
        "ended": "Lease ended: the unused part was refunded.",
    }.get(done, "")
    return page(
        here.request,
        "leases/show.html",
        here.v,
        tenancy=here.tenancy,
        title=f"Lease {lease.name}",
        lease=out,
        events=events,
        change=got.value,
        how=how or "extend",
        amount=amount,
        errors=got.errors,
        message=got.message,
        ending=ending,
        platforms=plats,
        flash=flash,
    )


@router.post("/t/{tenancy}/leases/{name}/change")
async def change(here: HereDep, name: str) -> Response:
    """Extend or shorten (the difference charged or refunded)."""
    form = await form_of(here.request, here.v)
    body = parse(
        LeaseUpdate, _update_body({"how": one(form, "how"), "amount": one(form, "amount")})
    )
    await here.run(leases.update_lease, here.rt.booking, here.rt.queue, here.caller, name, body)
    return redirect(f"{here.base}/leases/{name}?done=changed")


@router.post("/t/{tenancy}/leases/{name}/end")
async def end(here: HereDep, name: str) -> Response:
    """End a lease now (or cancel one not started): the unused part is refunded."""
    await form_of(here.request, here.v)
    await here.run(leases.end_lease, here.rt.booking, here.rt.queue, here.caller, name)
    return redirect(f"{here.base}/leases/{name}?done=ended")


@router.get("/t/{tenancy}/calendar")
async def calendar_page(
    here: HereDep, days: Annotated[int, Query(ge=1, le=60)] = 7
) -> HTMLResponse:
    """The tenancy's leases as bars over the free capacity of each resource class."""
    rt, c = here.rt, here.caller
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    start = now - timedelta(hours=now.hour % 6, minutes=now.minute)
    end = start + timedelta(days=days)
    bucket = "1h" if days <= 7 else "6h"
    rows = await here.run(leases.calendar_window, rt.booking, c, start, end, days, bucket)
    mine = await here.run(leases.list_leases, rt.booking, c, include_ended=True)
    mine = [x for x in mine if x.end_at > start and x.start_at < end]
    svg = drawing.gantt(start, end, now, rows, mine, link=f"{here.base}/leases/")
    return page(
        here.request,
        "leases/calendar.html",
        here.v,
        tenancy=here.tenancy,
        title="Calendar",
        svg=svg,
        days=days,
        start=start,
        end=end,
        leases=mine,
    )
