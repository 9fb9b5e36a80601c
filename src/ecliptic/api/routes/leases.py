"""Leases and availability (fit, earliest, calendar)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from ecliptic.api.deps import CallerDep, RuntimeDep
from ecliptic.api.paging import NameFilter, PagingDep, matches, paged
from ecliptic.api.schemas import (
    AllocationOut,
    CalendarBucketOut,
    CalendarRowOut,
    EventOut,
    FindRequest,
    FitOut,
    FitRequest,
    LeaseCreate,
    LeaseOut,
    LeaseUpdate,
    Page,
    ReservationOut,
    WindowOut,
)
from ecliptic.scheduler.model import NoFit, Window
from ecliptic.services import leases
from ecliptic.store.models import Lease

router = APIRouter(tags=["leases"])


def lease_out(lease: Lease, servers: int = 0) -> LeaseOut:
    """A lease body."""
    reservations = []
    for r in lease.spec.get("reservations", []):
        allocs = [a for a in lease.allocations if a.reservation == r["name"]]
        reservations.append(
            ReservationOut(
                name=r["name"],
                kind=r["kind"],
                request={k: v for k, v in r.items() if v not in (None, "") and k != "name"},
                allocations=[AllocationOut(host=a.host, slots=a.slots) for a in allocs],
            )
        )
    return LeaseOut(
        id=lease.id,
        name=lease.name,
        tenancy_id=lease.tenancy_id,
        start=lease.start_at,
        end=lease.end_at,
        before_end_at=lease.before_end_at,
        grace_s=lease.grace_s,
        phase=lease.phase,
        phase_reason=lease.phase_reason,
        reservations=reservations,
        cost=dict(lease.status.get("cost", {})),
        servers=servers,
        created_at=lease.created_at,
    )


@router.get("/leases", response_model=Page[LeaseOut])
def list_leases(
    caller: CallerDep,
    rt: RuntimeDep,
    page: PagingDep,
    ended: Annotated[bool, Query()] = False,
    name: NameFilter = None,
) -> Page[LeaseOut]:
    """Leases of your tenancy (ended ones with ``ended=true``)."""
    rows = leases.list_leases(rt.booking, caller, include_ended=ended)
    return paged([x for x in rows if matches(x.name, name)], page, lambda x: x.id, lease_out)


@router.post("/leases", response_model=LeaseOut, status_code=201)
def create_lease(body: LeaseCreate, caller: CallerDep, rt: RuntimeDep) -> LeaseOut:
    """Book capacity for a window; its cost is charged at once (403 if credits run short)."""
    return lease_out(leases.create_lease(rt.booking, rt.queue, caller, body))


@router.get("/leases/{ref}", response_model=LeaseOut)
def get_lease(ref: str, caller: CallerDep, rt: RuntimeDep) -> LeaseOut:
    """One lease."""
    lease = leases.get_lease(rt.booking, caller, ref)
    return lease_out(lease, leases.lease_servers(rt.booking, lease.id))


@router.patch("/leases/{ref}", response_model=LeaseOut)
def update_lease(ref: str, body: LeaseUpdate, caller: CallerDep, rt: RuntimeDep) -> LeaseOut:
    """Move, extend, shorten, grow or shrink; the difference is charged or refunded.

    A change that would end the lease now or earlier, or that changes nothing, is a 422:
    end a lease with ``DELETE`` (or ``POST .../end``)."""
    lease = leases.update_lease(rt.booking, rt.queue, caller, ref, body)
    return lease_out(lease, leases.lease_servers(rt.booking, lease.id))


@router.delete("/leases/{ref}", response_model=LeaseOut, status_code=202)
def delete_lease(ref: str, caller: CallerDep, rt: RuntimeDep) -> LeaseOut:
    """End a lease now (unused time refunded; servers go after the grace period)."""
    lease = leases.end_lease(rt.booking, rt.queue, caller, ref)
    return lease_out(lease, leases.lease_servers(rt.booking, lease.id))


@router.post("/leases/{ref}/end", response_model=LeaseOut, status_code=202)
def end_lease(ref: str, caller: CallerDep, rt: RuntimeDep) -> LeaseOut:
    """End a lease now, as ``DELETE`` does (unused time refunded; its cost shows the rest)."""
    lease = leases.end_lease(rt.booking, rt.queue, caller, ref)
    return lease_out(lease, leases.lease_servers(rt.booking, lease.id))


@router.post("/leases/{ref}/retry", response_model=LeaseOut, status_code=202)
def retry_lease(ref: str, caller: CallerDep, rt: RuntimeDep) -> LeaseOut:
    """Start a lease in ERROR again (409 for a lease in any other phase)."""
    lease = leases.retry_lease(rt.booking, rt.queue, caller, ref)
    return lease_out(lease, leases.lease_servers(rt.booking, lease.id))


@router.get("/leases/{ref}/events", response_model=Page[EventOut])
def lease_events(ref: str, caller: CallerDep, rt: RuntimeDep, page: PagingDep) -> Page[EventOut]:
    """What happened to a lease, and why."""
    rows = leases.lease_events(rt.booking, caller, ref)
    return paged(rows, page, lambda e: e.id, EventOut.model_validate)


@router.post("/availability/fit", response_model=FitOut)
def fit(body: FitRequest, caller: CallerDep, rt: RuntimeDep) -> FitOut:
    """Would this lease fit in exactly this window, and where? Nothing is booked."""
    start, end, result, hosts = leases.check_fit(
        rt.booking, caller, body.reservations, body.start, body.end, body.duration, body.grace
    )
    if isinstance(result, NoFit):
        return FitOut(
            fits=False,
            reason=result.reason,
            start=start,
            end=end,
            earliest_start=result.earliest_start,
        )
    return FitOut(
        fits=True,
        start=start,
        end=end,
        hosts={r.name: result.hosts(r.name) for r in body.reservations},
        cost=leases.window_cost(Window(start, end, result), hosts, body.reservations),
    )


@router.post("/availability/earliest", response_model=list[WindowOut])
def earliest(body: FindRequest, caller: CallerDep, rt: RuntimeDep) -> list[WindowOut]:
    """The earliest windows where the request fits, soonest first (empty: none in horizon)."""
    found, hosts = leases.find_windows(
        rt.booking,
        caller,
        body.reservations,
        body.duration,
        body.not_before,
        body.horizon,
        body.alternatives,
        body.grace,
    )
    return [
        WindowOut(
            start=w.start,
            end=w.end,
            hosts={r.name: w.placement.hosts(r.name) for r in body.reservations},
            cost=leases.window_cost(w, hosts, body.reservations),
        )
        for w in found
    ]


@router.get("/availability/calendar", response_model=list[CalendarRowOut])
def calendar(
    caller: CallerDep,
    rt: RuntimeDep,
    start: Annotated[datetime | None, Query()] = None,
    end: Annotated[datetime | None, Query()] = None,
    days: Annotated[int, Query(ge=1, le=366)] = 30,
    bucket: Annotated[str, Query(max_length=16)] = "1h",
) -> list[CalendarRowOut]:
    """Free and reserved capacity per resource class in time buckets."""
    rows = leases.calendar_window(rt.booking, caller, start, end, days, bucket)
    return [
        CalendarRowOut(
            resource=r.resource,
            buckets=[
                CalendarBucketOut(
                    start=b.start,
                    total=b.total,
                    reserved=b.reserved,
                    free=max(0, b.total - b.reserved),
                )
                for b in r.buckets
            ],
        )
        for r in rows
    ]
