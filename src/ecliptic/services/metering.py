"""On-demand use of charged resources, paid by the hour from the tenancy's credits.

A server created on demand whose flavor uses a metered class (``MeterPolicy``: GPUs and
whole hosts by default) runs only while the tenancy's credits pay for it:

- its first hour is charged when it is created, and a tenancy whose credits cannot pay
  it is refused (403, saying what is missing and how to reserve instead);
- each next hour is charged when it begins (``meter_due``, run by the ``meter``
  reconciler), missed hours too if the service was down;
- when the credits left would last less than the policy's warning time at the
  tenancy's current on-demand use, its servers get a warning event, once;
- when an hour cannot be paid, the server is deleted; its tombstone says why;
- when it goes, the unused part of its last hour is refunded, to the minute.

Every movement is a ledger row naming the server (``server_id``), with a note.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ecliptic.phases import ServerPhase
from ecliptic.scheduler.model import HostInfo
from ecliptic.services import credits
from ecliptic.services.pricing import MeterPolicy, duration_hours, hourly_rates
from ecliptic.store.db import Database
from ecliptic.store.models import Server
from ecliptic.store.transitions import move, note
from ecliptic.store.workqueue import WorkQueue
from ecliptic.units import describe

HOUR = timedelta(hours=1)
METER_OBJECT = "on-demand"
"""The one object the ``meter`` reconciler looks after: every metered server."""
METER_POLL_S = 300.0
"""The meter looks at least this often (and when the next hour of a server begins)."""
BATCH = 500


def _minute(t: datetime) -> datetime:
    return t.replace(second=0, microsecond=0)


def rates_of(srv: Server) -> dict[str, Decimal]:
    """The hourly rates a metered server was created with (empty: not metered)."""
    return {rc: Decimal(r) for rc, r in (srv.spec.get("meter") or {}).items()}


def _pay_until(
    session: Session,
    srv: Server,
    rates: dict[str, Decimal],
    window: tuple[datetime, datetime],
    note: str,
) -> None:
    """Make what the server paid equal its use from its start to the window's end: the
    difference is charged (from allocations covering the window) or refunded."""
    hours = duration_hours(_minute(srv.created_at), window[1])
    credits.settle(
        session,
        srv.tenancy_id,
        None,
        {rc: r * hours for rc, r in rates.items()},
        window[0],
        window[1],
        note=note,
        server_id=srv.id,
    )


def start(
    session: Session, srv: Server, host: HostInfo, policy: MeterPolicy, now: datetime
) -> None:
    """Charge the first hour of an on-demand server that uses metered classes."""
    rates = hourly_rates(srv.kind, srv.vcpus, srv.gpu_model, srv.gpus, host, policy)
    if not rates:
        return
    until = _minute(now) + HOUR
    try:
        _pay_until(
            session,
            srv,
            rates,
            (_minute(now), until),
            f"on-demand server '{srv.name}' ({srv.flavor.name}): first hour",
        )
    except credits.InsufficientCredits as exc:
        raise credits.InsufficientCredits(
            f"flavor '{srv.flavor.name}' on demand is paid by the hour from your credits "
            f"({_per_hour(rates)}), and its first hour {exc.message}; or reserve it ahead "
            f"('ecliptic lease create NAME --flavor {srv.flavor.name} --duration 8h')"
        ) from None
    srv.spec = {**srv.spec, "meter": {rc: str(r) for rc, r in rates.items()}}
    srv.metered_until = until


def finish(session: Session, srv: Server, now: datetime) -> None:
    """A metered server is gone: refund the unused part of its last hour (to the minute)."""
    rates = rates_of(srv)
    if not rates or srv.metered_until is None:
        return
    end = min(srv.metered_until, _minute(now) + timedelta(minutes=1))
    end = max(end, _minute(srv.created_at))
    # Paid up to metered_until, used up to end: the difference comes back.
    _pay_until(
        session,
        srv,
        rates,
        (end, end),
        f"on-demand server '{srv.name}' deleted: unused time refunded",
    )
    srv.metered_until = None


def meter_due(db: Database, queue: WorkQueue, policy: MeterPolicy, now: datetime) -> float:
    """Charge every metered server whose next hour has begun; delete those whose credits
    ran out; warn those whose credits run low. Returns seconds until the meter is due next.
    """
    with db.write(credits.CREDITS_LOCK) as session:
        due = list(
            session.scalars(
                select(Server)
                .where(Server.metered_until <= now, Server.phase != ServerPhase.DELETING)
                .order_by(Server.metered_until)
                .limit(BATCH)
            )
        )
        charged: set[str] = set()
        for srv in due:
            if _charge_hours(session, queue, srv, now):
                charged.add(srv.tenancy_id)
        for tenancy_id in charged:
            _warn_if_low(session, tenancy_id, policy, now)
        if len(due) == BATCH:
            return 0.0
        nxt = session.scalar(
            select(func.min(Server.metered_until)).where(Server.phase != ServerPhase.DELETING)
        )
    if nxt is None:
        return METER_POLL_S
    return max(0.0, min(METER_POLL_S, (nxt - now).total_seconds()))


def _charge_hours(session: Session, queue: WorkQueue, srv: Server, now: datetime) -> bool:
    rates = rates_of(srv)
    paid = False
    while srv.metered_until is not None and srv.metered_until <= now:
        begin = srv.metered_until
        until = begin + HOUR
        try:
            _pay_until(
                session,
                srv,
                rates,
                (begin, until),
                f"on-demand server '{srv.name}' ({srv.flavor.name}): "
                f"{begin:%Y-%m-%d %H:%M} to {until:%H:%M} UTC",
            )
        except credits.InsufficientCredits as exc:
            move(
                session,
                srv,
                ServerPhase.DELETING,
                f"deleted: the credits for its on-demand use ran out ({exc.message}); ask an "
                "administrator for more ('ecliptic credits allocate') or reserve capacity "
                "('ecliptic lease create')",
            )
            queue.enqueue(session, "server", srv.id)
            return paid
        srv.metered_until = until
        paid = True
    return paid


def _warn_if_low(session: Session, tenancy_id: str, policy: MeterPolicy, now: datetime) -> None:
    running = list(
        session.scalars(
            select(Server).where(
                Server.tenancy_id == tenancy_id,
                Server.metered_until.is_not(None),
                Server.phase != ServerPhase.DELETING,
            )
        )
    )
    use: dict[str, Decimal] = defaultdict(Decimal)
    for srv in running:
        for rc, r in rates_of(srv).items():
            use[rc] += r
    left: dict[str, Decimal] = defaultdict(Decimal)
    for b in credits.balances(session, tenancy_id):
        if b.start_at <= now < b.end_at:
            left[b.resource_class] += max(Decimal(0), b.remaining)
    for rc, per_hour in use.items():
        hours_left = left[rc] / per_hour
        if hours_left * 3600 >= policy.warn.total_seconds():
            continue
        for srv in running:
            if rc in rates_of(srv) and not srv.spec.get("meter_warned"):
                srv.spec = {**srv.spec, "meter_warned": True}
                note(
                    session,
                    srv,
                    f"credits low: {credits.fmt(left[rc].normalize())} {describe(rc)} left, "
                    f"about {hours_left:.1f} h at this tenancy's on-demand use "
                    f"({credits.fmt(per_hour.normalize())} an hour); the server is deleted "
                    "when they run out: ask an administrator for more ('ecliptic credits "
                    "allocate') or reserve capacity ('ecliptic lease create')",
                )


def _per_hour(rates: dict[str, Decimal]) -> str:
    return ", ".join(
        f"{credits.fmt(r.normalize())} {describe(rc).replace('-hours', '')} an hour"
        for rc, r in sorted(rates.items())
    )
