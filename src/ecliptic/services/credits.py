"""Credit accounts, allocations of resource-hours, and the ledger every movement goes to.

Balances are never stored: an allocation's balance is the sum of its ledger rows (a grant
adds, a charge subtracts, a refund adds back). A lease's charges and refunds are always
settled against what the lease has already paid, so refunds can never exceed charges and
no movement takes an allocation below zero.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_CEILING, Decimal

from sqlalchemy import func, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ecliptic.errors import Conflict, EclipticError, InvalidInput
from ecliptic.services.caller import Caller
from ecliptic.services.identity import find_tenancy
from ecliptic.store.db import Database
from ecliptic.store.models import CreditAccount, CreditAllocation, LedgerEntry
from ecliptic.store.types import utcnow
from ecliptic.units import describe

CENT = Decimal("0.001")
CREDITS_LOCK = "credits"


class InsufficientCredits(EclipticError):
    """A lease would cost more than the account's allocations hold."""

    code = "insufficient_credits"
    status = 403
    title = "Insufficient credits"


def hours(value: Decimal | float | int) -> Decimal:
    """Resource-hours rounded up to the ledger's precision (never in the user's disfavour)."""
    return Decimal(value).quantize(CENT, rounding=ROUND_CEILING)


def fmt(value: Decimal) -> str:
    """Hours for messages: ``96``, ``40.5``."""
    text = f"{value.normalize():f}"
    return text


@dataclass(frozen=True)
class Balance:
    """One allocation and what is left of it."""

    allocation_id: str
    name: str
    resource_class: str
    granted: Decimal
    charged: Decimal
    refunded: Decimal
    remaining: Decimal
    start_at: datetime
    end_at: datetime


def account_for(session: Session, tenancy_id: str) -> CreditAccount:
    """The tenancy's credit account, made on first use."""
    acct = session.scalar(select(CreditAccount).where(CreditAccount.tenancy_id == tenancy_id))
    if acct is None:
        acct = CreditAccount(tenancy_id=tenancy_id)
        session.add(acct)
        session.flush()
    return acct


def grant(
    session: Session,
    tenancy_id: str,
    name: str,
    resource_class: str,
    amount: Decimal,
    start: datetime,
    end: datetime,
    note: str = "",
) -> CreditAllocation:
    """Add an allocation of ``amount`` hours (a grant row in the ledger)."""
    if end <= start:
        raise InvalidInput("an allocation's end must be after its start")
    acct = account_for(session, tenancy_id)
    alloc = CreditAllocation(
        account_id=acct.id,
        name=name,
        resource_class=resource_class,
        hours=hours(amount),
        start_at=start,
        end_at=end,
    )
    session.add(alloc)
    session.flush()
    session.add(
        LedgerEntry(
            account_id=acct.id,
            allocation_id=alloc.id,
            kind="grant",
            resource_class=resource_class,
            hours=hours(amount),
            note=note or f"allocation '{name}'",
        )
    )
    return alloc


def allocate(
    db: Database,
    caller: Caller,
    tenancy: str,
    name: str,
    grants: dict[str, Decimal],
    start: datetime,
    end: datetime,
) -> list[CreditAllocation]:
    """Grant resource-hours to a tenancy (administrators only)."""
    caller.require_admin("allocate credits")
    try:
        with db.write(CREDITS_LOCK) as session:
            t = find_tenancy(session, tenancy)
            return [
                grant(session, t.id, name, rc, amount, start, end, f"granted by {caller.user_name}")
                for rc, amount in sorted(grants.items())
            ]
    except IntegrityError:
        raise Conflict(
            f"tenancy '{tenancy}' already has an allocation '{name}' for one of these "
            "resource classes; pick another name"
        ) from None


def allocation_balances(db: Database, tenancy: str, name: str) -> list[Balance]:
    """The balances of one named allocation of a tenancy (name or id), as just granted."""
    with db.read() as session:
        t = find_tenancy(session, tenancy)
        return [b for b in balances(session, t.id) if b.name == name]


def balances(session: Session, tenancy_id: str) -> list[Balance]:
    """Every allocation of the tenancy with its derived balance."""
    acct = session.scalar(select(CreditAccount).where(CreditAccount.tenancy_id == tenancy_id))
    if acct is None:
        return []
    sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for alloc_id, kind, total in session.execute(
        select(LedgerEntry.allocation_id, LedgerEntry.kind, func.sum(LedgerEntry.hours))
        .where(LedgerEntry.account_id == acct.id)
        .group_by(LedgerEntry.allocation_id, LedgerEntry.kind)
    ):
        sums[(alloc_id, kind)] = Decimal(total)
    out = []
    for a in session.scalars(
        select(CreditAllocation)
        .where(CreditAllocation.account_id == acct.id)
        .order_by(CreditAllocation.end_at, CreditAllocation.name, CreditAllocation.resource_class)
    ):
        granted = sums[(a.id, "grant")]
        charged = -sums[(a.id, "charge")]
        refunded = sums[(a.id, "refund")]
        out.append(
            Balance(
                a.id,
                a.name,
                a.resource_class,
                granted,
                charged,
                refunded,
                granted - charged + refunded,
                a.start_at,
                a.end_at,
            )
        )
    return out


def list_balances(db: Database, caller: Caller) -> list[Balance]:
    """Balances of the caller's tenancy."""
    with db.read() as session:
        return balances(session, caller.require_tenancy())


def list_ledger(
    db: Database, caller: Caller, limit: int = 200, *, before: int | None = None
) -> list[LedgerEntry]:
    """The latest ledger rows of the caller's tenancy (older than row ``before``), newest
    first."""
    tenancy_id = caller.require_tenancy()
    with db.read() as session:
        acct = session.scalar(select(CreditAccount).where(CreditAccount.tenancy_id == tenancy_id))
        if acct is None:
            return []
        return list(
            session.scalars(
                select(LedgerEntry)
                .where(
                    LedgerEntry.account_id == acct.id,
                    LedgerEntry.id < before if before is not None else true(),
                )
                .order_by(LedgerEntry.id.desc())
                .limit(limit)
            )
        )


def paid_by_lease(
    session: Session, lease_id: str | None, *, server_id: str | None = None
) -> dict[str, dict[str, Decimal]]:
    """What a lease (or an on-demand server's metered use) has paid so far: resource class
    -> allocation id -> hours (positive)."""
    out: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    payer = (
        LedgerEntry.server_id == server_id
        if server_id is not None
        else LedgerEntry.lease_id == lease_id
    )
    for rc, alloc_id, total in session.execute(
        select(LedgerEntry.resource_class, LedgerEntry.allocation_id, func.sum(LedgerEntry.hours))
        .where(payer, LedgerEntry.kind.in_(["charge", "refund"]))
        .group_by(LedgerEntry.resource_class, LedgerEntry.allocation_id)
    ):
        out[rc][alloc_id] -= Decimal(total)
    return out


def settle(
    session: Session,
    tenancy_id: str,
    lease_id: str | None,
    cost: dict[str, Decimal],
    start: datetime,
    end: datetime,
    *,
    note: str,
    dry_run: bool = False,
    server_id: str | None = None,
) -> dict[str, Decimal]:
    """Make what a lease (or, given ``server_id``, an on-demand server's metered use) has
    paid equal ``cost``: charge the difference or refund it.

    Charges come from allocations of the class whose window covers [start, end), the one
    ending soonest first; refunds go back where the charges came from. Raises
    ``InsufficientCredits`` saying what is missing. Returns the movement per class
    (positive: charged).
    """
    acct = account_for(session, tenancy_id)
    paid = paid_by_lease(session, lease_id, server_id=server_id)
    moved: dict[str, Decimal] = {}
    left = {b.allocation_id: b.remaining for b in balances(session, tenancy_id)}
    allocs = list(
        session.scalars(
            select(CreditAllocation)
            .where(CreditAllocation.account_id == acct.id)
            .order_by(CreditAllocation.end_at, CreditAllocation.name)
        )
    )
    rows: list[LedgerEntry] = []
    for rc in sorted(set(cost) | set(paid)):
        want = hours(cost.get(rc, Decimal(0)))
        have = sum(paid.get(rc, {}).values(), Decimal(0))
        delta = want - have
        if delta == 0:
            continue
        moved[rc] = delta
        if delta > 0:
            usable = [
                a
                for a in allocs
                if a.resource_class == rc and a.start_at <= start and a.end_at >= end
            ]
            available = sum((max(Decimal(0), left[a.id]) for a in usable), Decimal(0))
            if available < delta:
                raise InsufficientCredits(_missing(rc, delta, usable, left, allocs, start, end))
            need = delta
            for a in usable:
                take = min(need, max(Decimal(0), left[a.id]))
                if take > 0:
                    rows.append(
                        _entry(acct.id, a, (lease_id, server_id), "charge", rc, -take, note)
                    )
                    left[a.id] -= take
                    need -= take
                if need == 0:
                    break
        else:
            back = -delta
            for alloc_id, amount in sorted(paid[rc].items(), key=lambda kv: -kv[1]):
                give = min(back, amount)
                if give > 0:
                    a = next(x for x in allocs if x.id == alloc_id)
                    rows.append(_entry(acct.id, a, (lease_id, server_id), "refund", rc, give, note))
                    back -= give
                if back == 0:
                    break
    if not dry_run:
        session.add_all(rows)
        session.flush()
    return moved


def _entry(
    account_id: str,
    a: CreditAllocation,
    payer: tuple[str | None, str | None],
    kind: str,
    rc: str,
    amount: Decimal,
    note: str,
) -> LedgerEntry:
    return LedgerEntry(
        account_id=account_id,
        allocation_id=a.id,
        lease_id=payer[0],
        server_id=payer[1],
        kind=kind,
        resource_class=rc,
        hours=amount,
        note=note,
        at=utcnow(),
    )


def _missing(
    rc: str,
    delta: Decimal,
    usable: list[CreditAllocation],
    left: dict[str, Decimal],
    allocs: list[CreditAllocation],
    start: datetime,
    end: datetime,
) -> str:
    what = describe(rc)
    if usable:
        parts = ", ".join(
            f"{fmt(max(Decimal(0), left[a.id]))} left in allocation '{a.name}'" for a in usable
        )
        return f"needs {fmt(delta)} {what}, {parts}"
    other = [a for a in allocs if a.resource_class == rc]
    if other:
        spans = ", ".join(
            f"'{a.name}' ({a.start_at:%Y-%m-%d %H:%M} to {a.end_at:%Y-%m-%d %H:%M})" for a in other
        )
        return (
            f"needs {fmt(delta)} {what} from {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}, "
            f"but no allocation covers that window (allocations: {spans}); shorten or move "
            "the lease, or ask an administrator to extend the allocation"
        )
    return (
        f"needs {fmt(delta)} {what}, but this tenancy has no allocation of {what}; ask an "
        "administrator ('ecliptic credits allocate')"
    )
