"""Credit balances, the ledger, and allocations (administrators)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Query

from ecliptic.api.deps import AdminDep, CallerDep, RuntimeDep
from ecliptic.api.paging import PagingDep, paged
from ecliptic.api.schemas import BalanceOut, CreditAllocate, LedgerOut, Page
from ecliptic.services import credits
from ecliptic.services.booking import minute

router = APIRouter(tags=["credits"])


def _balance_out(b: credits.Balance) -> BalanceOut:
    return BalanceOut(
        allocation_id=b.allocation_id,
        allocation=b.name,
        resource_class=b.resource_class,
        description=credits.describe(b.resource_class),
        granted=credits.fmt(b.granted),
        charged=credits.fmt(b.charged),
        refunded=credits.fmt(b.refunded),
        remaining=credits.fmt(b.remaining),
        start=b.start_at,
        end=b.end_at,
    )


@router.get("/credits", response_model=Page[BalanceOut])
def balance(caller: CallerDep, rt: RuntimeDep, page: PagingDep) -> Page[BalanceOut]:
    """Your tenancy's allocations and what is left of each (derived from the ledger)."""
    rows = credits.list_balances(rt.db, caller)
    return paged(rows, page, lambda b: f"{b.allocation_id}", _balance_out)


@router.get("/credits/ledger", response_model=Page[LedgerOut])
def ledger(
    caller: CallerDep,
    rt: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=5000)] = 200,
    marker: Annotated[
        int | None, Query(ge=1, le=2**63 - 1, description="the 'next' of the last page")
    ] = None,
) -> Page[LedgerOut]:
    """Every credit movement of your tenancy, newest first, a page at a time."""
    names = {b.allocation_id: b.name for b in credits.list_balances(rt.db, caller)}
    rows = credits.list_ledger(rt.db, caller, limit, before=marker)
    items = [
        LedgerOut(
            id=e.id,
            at=e.at,
            kind=e.kind,
            resource_class=e.resource_class,
            hours=credits.fmt(e.hours),
            allocation_id=e.allocation_id,
            allocation=names.get(e.allocation_id, ""),
            lease_id=e.lease_id,
            server_id=e.server_id,
            note=e.note,
        )
        for e in rows
    ]
    return Page[LedgerOut](items=items, next=str(rows[-1].id) if len(rows) == limit else None)


@router.post("/credits/allocations", response_model=list[BalanceOut], status_code=201)
def allocate(body: CreditAllocate, caller: AdminDep, rt: RuntimeDep) -> list[BalanceOut]:
    """Grant resource-hours to a tenancy for a window (administrators)."""
    start = minute(rt.clock.now()) if body.start == "now" else body.start
    credits.allocate(
        rt.db,
        caller,
        body.tenancy,
        body.name,
        {rc: Decimal(str(h)) for rc, h in body.hours.items()},
        start,
        body.end,
    )
    return [_balance_out(b) for b in credits.allocation_balances(rt.db, body.tenancy, body.name)]
