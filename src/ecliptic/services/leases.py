"""Leases: book capacity for a window, pay for it, change it, end it; ask when things fit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ecliptic.errors import Conflict, InvalidInput, NotFound
from ecliptic.phases import LeasePhase, ServerPhase
from ecliptic.scheduler.engine import Engine
from ecliptic.scheduler.filters import FilterError, check_filter, compile_filter
from ecliptic.scheduler.model import (
    HostInfo,
    NoFit,
    Placement,
    Request,
    Window,
)
from ecliptic.services import credits
from ecliptic.services.booking import Booking, amount_to_json, held_until, host_info, minute
from ecliptic.services.caller import Caller
from ecliptic.services.inputs import (
    MAX_DURATION,
    LeaseCreate,
    LeaseUpdate,
    ReservationIn,
    parse_duration,
)
from ecliptic.services.kinds import kind_of
from ecliptic.services.pricing import lease_cost
from ecliptic.store.models import Event, Host, Lease, LeaseAllocation, Server
from ecliptic.store.transitions import created, move, note
from ecliptic.store.workqueue import WorkQueue

MAX_LEASE = timedelta(days=366)
LIVE = (LeasePhase.PENDING, LeasePhase.STARTING, LeasePhase.ACTIVE, LeasePhase.DEGRADED)


class LeaseChangeRefused(InvalidInput):
    """An update that would end a lease, or that changes nothing."""

    code = "invalid_change"


class LeaseNoCapacity(Conflict):
    """The lease does not fit in the window asked for."""

    code = "no_capacity"


def find_lease(session: Session, tenancy_id: str, ref: str) -> Lease:
    """A lease of the tenancy by name or id; others' leases do not exist."""
    lease = session.scalar(
        select(Lease).where(Lease.tenancy_id == tenancy_id, (Lease.name == ref) | (Lease.id == ref))
    )
    if lease is None:
        raise NotFound(f"no lease '{ref}' in this tenancy; see 'ecliptic lease list'")
    return lease


def to_requests(session: Session, items: Sequence[ReservationIn | dict[str, Any]]) -> list[Request]:
    """Engine requests from API reservation bodies (flavor names resolved)."""
    from pydantic import TypeAdapter

    adapter: TypeAdapter[ReservationIn] = TypeAdapter(ReservationIn)
    out: list[Request] = []
    seen: set[str] = set()
    for i, raw in enumerate(items):
        r = adapter.validate_python(raw) if isinstance(raw, dict) else raw
        if r.name in seen:
            raise InvalidInput(
                f"two reservations are named '{r.name}'; give each its own name",
                errors=[{"loc": ["body", "reservations", i, "name"], "msg": "duplicate name"}],
            )
        seen.add(r.name)
        out.append(_one_request(session, r, i))
    return out


def check_filters(engine: Engine, requests: Sequence[Request]) -> None:
    """Refuse filters that name a property no host has or compare it with the wrong kind
    of value: a typo would otherwise match nothing, and look like a full cloud."""
    hosts = engine.hosts.values()
    for i, r in enumerate(requests):
        if not r.filter:
            continue
        try:
            check_filter(compile_filter(r.filter), hosts)
        except FilterError as exc:
            raise InvalidInput(
                f"reservation '{r.key}': {exc}",
                errors=[{"loc": ["body", "reservations", i, "where"], "msg": exc.reason}],
            ) from None


def _one_request(session: Session, r: ReservationIn, i: int) -> Request:
    return kind_of(r.kind).request(session, r, ["body", "reservations", i])


def window(
    now: datetime, start: Any, end: datetime | None, duration: str | None
) -> tuple[datetime, datetime]:
    """Start and end at minute resolution, checked."""
    s = minute(now) if start in (None, "now") else start
    if s.tzinfo is None:
        raise InvalidInput("give times with a timezone (e.g. 2027-03-01T09:00Z)")
    if s.second or s.microsecond:
        raise InvalidInput(
            f"start {s.isoformat()} is not on a minute; leases have minute resolution",
            errors=[{"loc": ["body", "start"], "msg": "use whole minutes"}],
        )
    if end is not None and duration is not None:
        raise InvalidInput("give end or duration, not both")
    if end is None and duration is None:
        raise InvalidInput(
            "give an end or a duration (e.g. duration 48h)",
            errors=[{"loc": ["body", "end"], "msg": "end or duration required"}],
        )
    if s - now > MAX_DURATION:
        raise InvalidInput(
            f"start {s.isoformat()} is too far ahead: leases start within {MAX_DURATION.days} days",
            errors=[{"loc": ["body", "start"], "msg": "too far ahead"}],
        )
    e = end if end is not None else s + parse_duration(str(duration))
    if e - s > MAX_DURATION:
        raise InvalidInput(
            f"a lease can last at most {MAX_DURATION.days} days",
            errors=[{"loc": ["body", "end"], "msg": "too long"}],
        )
    if e.tzinfo is None:
        raise InvalidInput("give times with a timezone (e.g. 2027-03-03T09:00Z)")
    if e.second or e.microsecond:
        raise InvalidInput(
            f"end {e.isoformat()} is not on a minute; leases have minute resolution",
            errors=[{"loc": ["body", "end"], "msg": "use whole minutes"}],
        )
    if e <= s:
        raise InvalidInput("a lease must end after it starts")
    if s < minute(now):
        raise InvalidInput("a lease cannot start in the past; use start 'now'")
    if e - s > MAX_LEASE:
        raise InvalidInput("a lease may last at most 366 days")
    return s, e


def _hosts(engine: Engine) -> dict[str, HostInfo]:
    return dict(engine.hosts)


def _refuse(nofit: NoFit, session: Session) -> LeaseNoCapacity:
    """The refusal for ``nofit``, naming the leases (of this store) that block it."""
    shown = nofit.blockers[:5]
    names = _lease_names(session, {b.lease_id for b in shown})
    msg = nofit.reason
    if nofit.earliest_start is not None:
        msg += (
            f"; the earliest start that needs no preemptible server stopped early is "
            f"{nofit.earliest_start:%Y-%m-%d %H:%M} UTC"
        )
    if nofit.blockers:
        who = ", ".join(
            f"lease {names.get(b.lease_id, b.lease_id)} on {b.host} "
            f"({b.start:%Y-%m-%d %H:%M} to {b.end:%Y-%m-%d %H:%M})"
            for b in shown
        )
        msg += f"; blocked by {who}"
    msg += "; try 'ecliptic lease find' for the earliest window"
    return LeaseNoCapacity(msg)


def _store_placement(session: Session, lease: Lease, placement: Placement) -> None:
    lease.allocations.clear()
    session.flush()
    for a in placement.allocations:
        lease.allocations.append(
            LeaseAllocation(
                reservation=a.key, host=a.host, amount=amount_to_json(a.amount), slots=a.slots
            )
        )


def slice_keys(spec: Sequence[dict[str, Any]]) -> set[str]:
    """Names of the reservations of a lease spec priced by their unit alone (GPU slices:
    the vCPUs and memory booked with a slice come with it)."""
    return {r["name"] for r in spec if kind_of(r["kind"]).priced_alone}


def _cost_json(cost: dict[str, Decimal]) -> dict[str, str]:
    return {k: credits.fmt(credits.hours(v)) for k, v in sorted(cost.items())}


@dataclass(frozen=True)
class CostChange:
    """What a lease change would do to its cost (hours per resource class), undone."""

    before: dict[str, str]
    after: dict[str, str]
    start: datetime
    end: datetime

    def difference(self) -> dict[str, Decimal]:
        """Hours charged (positive) or refunded (negative) per resource class."""
        keys = sorted(set(self.before) | set(self.after))
        return {k: Decimal(self.after.get(k, "0")) - Decimal(self.before.get(k, "0")) for k in keys}


class _Preview(Exception):
    """Raised inside a booking transaction to undo it, carrying what it would have done."""

    def __init__(self, change: CostChange) -> None:
        super().__init__("preview")
        self.change = change


def _preview(fn: Callable[[], Lease]) -> CostChange:
    try:
        lease = fn()  # only a lease already ending comes back: nothing was to change
    except _Preview as done:
        return done.change
    cost = dict(lease.status.get("cost", {}))
    return CostChange(cost, cost, lease.start_at, lease.end_at)


def preview_create(
    booking: Booking, queue: WorkQueue, caller: Caller, body: LeaseCreate
) -> CostChange:
    """What creating this lease would cost, with every check (capacity, credits) made;
    nothing is booked."""
    return _preview(lambda: create_lease(booking, queue, caller, body, dry_run=True))


def preview_update(
    booking: Booking, queue: WorkQueue, caller: Caller, ref: str, body: LeaseUpdate
) -> CostChange:
    """What this change would charge or refund, every check made; nothing changes."""
    return _preview(lambda: update_lease(booking, queue, caller, ref, body, dry_run=True))


def preview_end(booking: Booking, queue: WorkQueue, caller: Caller, ref: str) -> CostChange:
    """What ending this lease now would refund; nothing changes."""
    return _preview(lambda: end_lease(booking, queue, caller, ref, dry_run=True))


def create_lease(
    booking: Booking, queue: WorkQueue, caller: Caller, body: LeaseCreate, *, dry_run: bool = False
) -> Lease:
    """Place a lease, charge its cost and queue its start."""
    tenancy_id = caller.require_tenancy()
    with booking.transaction(credits.CREDITS_LOCK) as (session, engine):
        start, end = window(booking.clock.now(), body.start, body.end, body.duration)
        if session.scalar(
            select(Lease.id).where(Lease.tenancy_id == tenancy_id, Lease.name == body.name)
        ):
            raise Conflict(f"a lease named '{body.name}' exists already in this tenancy")
        requests = to_requests(session, body.reservations)
        check_filters(engine, requests)
        lease = Lease(
            tenancy_id=tenancy_id,
            name=body.name,
            start_at=start,
            end_at=end,
            before_end_at=end - parse_duration(body.before_end) if body.before_end else None,
            grace_s=int(parse_duration(body.grace).total_seconds()),
            phase=LeasePhase.PENDING,
            phase_reason="waiting for its start",
            spec={"reservations": [r.model_dump() for r in body.reservations]},
            created_by=caller.user_id,
        )
        session.add(lease)
        session.flush()
        # The capacity is held through the grace period after the end (servers still run).
        result = engine.fit(lease.id, requests, start, held_until(end, lease.grace_s))
        if isinstance(result, NoFit):
            raise _refuse(result, session)
        cost = lease_cost(
            replace(result, end=end), _hosts(engine), slice_keys(lease.spec["reservations"])
        )
        credits.settle(
            session, tenancy_id, lease.id, cost, start, end, note=f"lease '{lease.name}' created"
        )
        if dry_run:
            raise _Preview(CostChange({}, _cost_json(cost), start, end))
        lease.status = {"cost": _cost_json(cost)}
        _store_placement(session, lease, result)
        created(session, lease, f"booked {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M}")
        queue.enqueue(
            session,
            "lease",
            lease.id,
            delay=max(0.0, (start - booking.clock.now()).total_seconds()),
        )
        engine.book(lease.id, result)
        session.flush()
        session.refresh(lease)
        return lease


def _lease_names(session: Session, ids: set[str]) -> dict[str, str]:
    if not ids:
        return {}
    return {i: n for i, n in session.execute(select(Lease.id, Lease.name).where(Lease.id.in_(ids)))}


def update_lease(
    booking: Booking,
    queue: WorkQueue,
    caller: Caller,
    ref: str,
    body: LeaseUpdate,
    *,
    dry_run: bool = False,
) -> Lease:
    """Move, extend, shorten, grow or shrink a lease; re-placed when its hosts are taken."""
    tenancy_id = caller.require_tenancy()
    with booking.transaction(credits.CREDITS_LOCK) as (session, engine):
        lease = find_lease(session, tenancy_id, ref)
        if lease.phase not in LIVE:
            raise Conflict(f"lease '{lease.name}' is {lease.phase}; only live leases change")
        now = booking.clock.now()
        started = lease.phase != LeasePhase.PENDING
        start, end = lease.start_at, lease.end_at
        if body.start is not None:
            if started:
                raise Conflict(
                    f"lease '{lease.name}' has started; it can be extended or "
                    "shortened but not moved"
                )
            start = minute(now) if body.start == "now" else body.start
            if body.end is None and body.extend is None and body.shorten is None:
                end = start + (lease.end_at - lease.start_at)  # a move keeps the length
        if body.end is not None:
            end = body.end
        if body.extend:
            end = end + parse_duration(body.extend)
        if body.shorten:
            end = end - parse_duration(body.shorten)
        if started:
            if end <= minute(now):
                raise LeaseChangeRefused(
                    f"this change would end lease '{lease.name}' at {end:%Y-%m-%d %H:%M} UTC, "
                    f"which is not after now ({minute(now):%Y-%m-%d %H:%M} UTC); an update "
                    "never ends a lease: to end it now, with the unused part refunded, use "
                    f"'ecliptic lease end {lease.name}'",
                    errors=[{"loc": ["body"], "msg": "the new end is not in the future"}],
                )
            start_check, end_check = window(now, minute(now), end, None)
            start_check = lease.start_at
        else:
            start_check, end_check = window(now, start, end, None)
        spec = [dict(r) for r in lease.spec["reservations"]]
        for resize in body.reservations:
            match = next((r for r in spec if r.get("name") == resize.name), None)
            if match is None:
                raise InvalidInput(f"lease '{lease.name}' has no reservation '{resize.name}'")
            match.update(kind_of(match["kind"]).resized(match, resize.count))
        before_end_at = (
            end_check - parse_duration(body.before_end) if body.before_end else lease.before_end_at
        )
        if (
            (start_check, end_check) == (lease.start_at, lease.end_at)
            and spec == lease.spec["reservations"]
            and before_end_at == lease.before_end_at
        ):
            raise LeaseChangeRefused(
                f"this update leaves lease '{lease.name}' as it is "
                f"({lease.start_at:%Y-%m-%d %H:%M} to {lease.end_at:%Y-%m-%d %H:%M} UTC, "
                "same sizes): say what to change, e.g. --extend 2h, --shorten 1h, "
                "--resize hosts=3",
                errors=[{"loc": ["body"], "msg": "changes nothing"}],
            )
        requests = to_requests(session, spec)
        old = engine.booking(lease.id)
        held = held_until(end_check, lease.grace_s)
        result = engine.fit(lease.id, requests, start_check, held)
        if started and old is not None and _has_servers(session, lease.id):
            # Servers run on its hosts: a started lease may not leave them. If the free
            # re-placement would, ask again pinned to them, to name what blocks.
            left = isinstance(result, NoFit) or any(
                set(old.hosts(r.key)) - set(result.hosts(r.key)) for r in requests
            )
            if left:
                result = engine.fit(
                    lease.id,
                    [
                        kind_of(k["kind"]).pinned(r, old.hosts(r.key))
                        for k, r in zip(spec, requests, strict=True)
                    ],
                    start_check,
                    held,
                )
        if isinstance(result, NoFit):
            raise _refuse(result, session)
        cost = lease_cost(replace(result, end=end_check), _hosts(engine), slice_keys(spec))
        credits.settle(
            session,
            tenancy_id,
            lease.id,
            cost,
            start_check,
            end_check,
            note=f"lease '{lease.name}' updated",
        )
        if dry_run:
            was = dict(lease.status.get("cost", {}))
            raise _Preview(CostChange(was, _cost_json(cost), start_check, end_check))
        lease.start_at, lease.end_at = start_check, end_check
        lease.before_end_at = before_end_at
        lease.spec = {"reservations": spec}
        lease.status = {**lease.status, "cost": _cost_json(cost)}
        lease.generation += 1
        _store_placement(session, lease, result)
        note(session, lease, f"updated: {start_check:%Y-%m-%d %H:%M} to {end_check:%Y-%m-%d %H:%M}")
        engine.release(lease.id)
        engine.book(lease.id, result)
        queue.enqueue(session, "lease", lease.id)
        session.flush()
        session.refresh(lease)
        return lease


def _has_servers(session: Session, lease_id: str) -> bool:
    return bool(session.scalar(select(func.count()).where(Server.lease_id == lease_id)))


def end_lease(
    booking: Booking, queue: WorkQueue, caller: Caller, ref: str, *, dry_run: bool = False
) -> Lease:
    """End a lease now (refunding the unused part) or cancel it before it starts."""
    tenancy_id = caller.require_tenancy()
    with booking.transaction(credits.CREDITS_LOCK) as (session, engine):
        lease = find_lease(session, tenancy_id, ref)
        if lease.phase in (LeasePhase.ENDING, LeasePhase.ENDED):
            return lease
        now = minute(booking.clock.now())
        placement = engine.booking(lease.id)
        new_end = max(lease.start_at, min(lease.end_at, now))
        if placement is not None and new_end < lease.end_at:
            shortened = Placement(lease.start_at, new_end, placement.allocations)
            cost = (
                lease_cost(shortened, _hosts(engine), slice_keys(lease.spec["reservations"]))
                if new_end > lease.start_at
                else {}
            )
            credits.settle(
                session,
                tenancy_id,
                lease.id,
                cost,
                lease.start_at,
                new_end,
                note=f"lease '{lease.name}' ended early by {caller.user_name}",
            )
            if dry_run:
                was = dict(lease.status.get("cost", {}))
                raise _Preview(CostChange(was, _cost_json(cost), lease.start_at, new_end))
            lease.status = {**lease.status, "cost": _cost_json(cost)}
        if dry_run:
            cost_now = dict(lease.status.get("cost", {}))
            raise _Preview(CostChange(cost_now, cost_now, lease.start_at, new_end))
        if lease.phase == LeasePhase.PENDING:
            move(session, lease, LeasePhase.ENDED, f"cancelled by {caller.user_name}")
            engine.release(lease.id)
            lease.end_at = new_end
        else:
            lease.status = {**lease.status, "ending_at": now.isoformat()}
            lease.end_at = new_end
            # The capacity after now is free again for everyone else, once the servers'
            # grace is over (even for a lease ended in its first minute: they are there).
            held = held_until(new_end, lease.grace_s)
            if placement is not None and held > lease.start_at:
                engine.book(lease.id, Placement(lease.start_at, held, placement.allocations))
            else:
                engine.release(lease.id)
            move(session, lease, LeasePhase.ENDING, f"ended early by {caller.user_name}")
        queue.enqueue(session, "lease", lease.id)
        wake_degraded(session, queue)
        return lease


def retry_lease(booking: Booking, queue: WorkQueue, caller: Caller, ref: str) -> Lease:
    """Try again to start a lease that went to ERROR (its booking was kept)."""
    tenancy_id = caller.require_tenancy()
    with booking.db.write() as session:
        lease = find_lease(session, tenancy_id, ref)
        if lease.phase != LeasePhase.ERROR:
            raise Conflict(
                f"lease '{lease.name}' is {lease.phase}, not ERROR: only a lease in ERROR is "
                "retried (a lease retries everything else by itself)"
            )
        move(session, lease, LeasePhase.STARTING, f"retry asked by {caller.user_name}")
        lease.status = {k: v for k, v in lease.status.items() if k != "starting_since"}
        queue.enqueue(session, "lease", lease.id)
        session.flush()
        session.refresh(lease)
        return lease


def list_leases(booking: Booking, caller: Caller, *, include_ended: bool = False) -> list[Lease]:
    """Leases of the caller's tenancy."""
    tenancy_id = caller.require_tenancy()
    with booking.db.read() as session:
        q = select(Lease).where(Lease.tenancy_id == tenancy_id).order_by(Lease.start_at, Lease.name)
        if not include_ended:
            q = q.where(Lease.phase != LeasePhase.ENDED)
        return list(session.scalars(q))


def get_lease(booking: Booking, caller: Caller, ref: str) -> Lease:
    """One lease."""
    with booking.db.read() as session:
        return find_lease(session, caller.require_tenancy(), ref)


def lease_servers(booking: Booking, lease_id: str) -> int:
    """How many servers run inside a lease."""
    with booking.db.read() as session:
        return int(session.scalar(select(func.count()).where(Server.lease_id == lease_id)) or 0)


def find_windows(
    booking: Booking,
    caller: Caller,
    reservations: Sequence[ReservationIn],
    duration: str,
    not_before: Any,
    horizon: str,
    alternatives: int,
    grace: str = "10m",
) -> tuple[list[Window], dict[str, HostInfo]]:
    """The earliest windows where the request fits, its grace period after the end included
    (as a created lease books it)."""
    caller.require_tenancy()
    now = booking.clock.now()
    start = minute(now) if not_before in (None, "now") else not_before
    if start.tzinfo is None:
        raise InvalidInput("give not_before with a timezone")
    if start < minute(now):
        start = minute(now)
    if start - now > MAX_DURATION:
        raise InvalidInput(f"not_before is too far ahead: search within {MAX_DURATION.days} days")
    with booking.db.read() as session:
        requests = to_requests(session, reservations)
    length = parse_duration(duration)
    with booking.reading() as engine:
        check_filters(engine, requests)
        found = engine.earliest(
            requests, length + parse_duration(grace), start, parse_duration(horizon), alternatives
        )
        windows = [
            Window(w.start, w.start + length, replace(w.placement, end=w.start + length))
            for w in found
        ]
        return windows, _hosts(engine)


def check_fit(
    booking: Booking,
    caller: Caller,
    reservations: Sequence[ReservationIn],
    start: Any,
    end: datetime | None,
    duration: str | None,
    grace: str = "10m",
) -> tuple[datetime, datetime, Placement | NoFit, dict[str, HostInfo]]:
    """Whether the request fits in exactly [start, end) (and its grace period after), and
    where; nothing is booked."""
    caller.require_tenancy()
    s, e = window(booking.clock.now(), start, end, duration)
    with booking.db.read() as session:
        requests = to_requests(session, reservations)
    with booking.reading() as engine:
        check_filters(engine, requests)
        held = held_until(e, parse_duration(grace).total_seconds())
        result = engine.fit("fit-check", requests, s, held)
        if isinstance(result, Placement):
            result = replace(result, end=e)
        return s, e, result, _hosts(engine)


def window_cost(
    w: Window, hosts: dict[str, HostInfo], reservations: Sequence[ReservationIn]
) -> dict[str, str]:
    """What a found window would cost."""
    keys = {r.name for r in reservations if r.kind == "gpu_slice"}
    return _cost_json(lease_cost(w.placement, hosts, keys))


def lease_events(booking: Booking, caller: Caller, ref: str) -> list[Event]:
    """What happened to a lease of the caller's tenancy, and why, oldest first."""
    lease = get_lease(booking, caller, ref)
    with booking.db.read() as session:
        return list(
            session.scalars(
                select(Event)
                .where(Event.object_kind == "lease", Event.object_id == lease.id)
                .order_by(Event.id)
            )
        )


def calendar_window(
    booking: Booking,
    caller: Caller,
    start: datetime | None,
    end: datetime | None,
    days: int,
    bucket: str,
) -> list[Any]:
    """The calendar from ``start`` (now) to ``end`` (``days`` later) in ``bucket`` steps."""
    caller.require_tenancy()
    s = minute(start or booking.clock.now())
    e = end or s + timedelta(days=days)
    try:
        step = parse_duration(bucket)
    except ValueError as exc:
        raise InvalidInput(
            str(exc), errors=[{"loc": ["query", "bucket"], "msg": str(exc)}]
        ) from None
    return calendar(booking, s, e, step)


def calendar(booking: Booking, start: datetime, end: datetime, bucket: timedelta) -> list[Any]:
    """Free and reserved capacity per resource class in time buckets."""
    if end <= start:
        raise InvalidInput("the calendar's end must be after its start")
    if (end - start) / bucket > 5000:
        raise InvalidInput("too many buckets: use a longer bucket or a shorter range (max 5000)")
    with booking.reading() as engine:
        return list(engine.calendar(start, end, bucket))


def set_host_state(
    booking: Booking, queue: WorkQueue, caller: Caller, name: str, state: str
) -> list[str]:
    """Mark a host up, down or in maintenance, and heal the leases that held it.

    Leases that have not started get their part on that host re-placed; a started lease
    becomes DEGRADED and gets a replacement host if one is free (ACTIVE again), else it
    stays DEGRADED with the reason, and its reconciler keeps trying (see :func:`heal`).
    A host coming back makes whole the leases that kept their claim on it, and wakes every
    other DEGRADED lease (there is room again). Returns a line per lease touched.
    """
    caller.require_admin("change host state")
    with booking.transaction(credits.CREDITS_LOCK) as (session, engine):
        host = session.scalar(select(Host).where(Host.name == name))
        if host is None:
            raise NotFound(f"no host '{name}'")
        reason = "" if state == "up" else f"marked {state} by {caller.user_name or 'an operator'}"
        return apply_host_state(session, engine, queue, host, state, reason)


def apply_host_state(
    session: Session, engine: Engine, queue: WorkQueue, host: Host, state: str, reason: str
) -> list[str]:
    """``set_host_state`` inside the caller's booking transaction (the Ironic sync's too):
    a host that goes down or into maintenance heals the leases that held it."""
    report: list[str] = []
    name = host.name
    host.state, host.state_reason = state, reason
    engine.set_host(host_info(host))
    affected = session.scalars(
        select(Lease)
        .join(LeaseAllocation)
        .where(LeaseAllocation.host == name, Lease.phase.in_(list(LIVE)))
        .distinct()
    )
    cause = f"host {name} is back" if state == "up" else f"host {name} went {state}"
    if reason and state != "up":
        cause += f" ({reason})"
    for lease in list(affected):
        line = _heal(session, engine, queue, lease, cause)
        if line:
            report.append(line)
    if state == "up":
        wake_degraded(session, queue)
    return report


def wake_degraded(session: Session, queue: WorkQueue) -> None:
    """Ask every DEGRADED lease to try healing again now (capacity was freed)."""
    for lease_id in session.scalars(select(Lease.id).where(Lease.phase == LeasePhase.DEGRADED)):
        queue.enqueue(session, "lease", lease_id)


def lost_hosts(engine: Engine, lease_id: str) -> list[str]:
    """Hosts of a lease's booking that are down (or gone), sorted."""
    placement = engine.booking(lease_id)
    if placement is None:
        return []
    hosts = engine.hosts
    return sorted({a.host for a in placement.allocations if not _up(hosts.get(a.host))})


def _up(info: HostInfo | None) -> bool:
    return info is not None and info.up


def heal(booking: Booking, queue: WorkQueue, lease_id: str, cause: str) -> str:
    """Try once to make a lease whole: replace what it holds on hosts that are down.

    Level-triggered: the lease reconciler calls it while the lease is DEGRADED (and when a
    live lease is found on a down host), so a lease heals when a spare host frees, when the
    lost host comes back, or at the periodic resync. Returns what happened, in a line.
    """
    with booking.transaction(credits.CREDITS_LOCK) as (session, engine):
        lease = session.get(Lease, lease_id)
        if lease is None or lease.phase not in LIVE:
            return ""
        return _heal(session, engine, queue, lease, cause)


def _heal(session: Session, engine: Engine, queue: WorkQueue, lease: Lease, cause: str) -> str:
    placement = engine.booking(lease.id)
    if placement is None:
        return f"{lease.name}: nothing booked"
    down = lost_hosts(engine, lease.id)
    started = lease.phase != LeasePhase.PENDING
    if not down:
        if lease.phase == LeasePhase.DEGRADED:
            move(session, lease, LeasePhase.ACTIVE, f"whole again: {cause}")
            queue.enqueue(session, "lease", lease.id)
            return f"{lease.name}: whole again ({cause})"
        return ""
    which = ", ".join(down)
    keep = tuple(a for a in placement.allocations if a.host not in down)
    lost = [a for a in placement.allocations if a.host in down]
    spec = {r["name"]: r for r in lease.spec["reservations"]}
    wanted = [
        _replacement(session, spec[key], [a for a in lost if a.key == key])
        for key in sorted({a.key for a in lost})
    ]
    if started and lease.phase != LeasePhase.STARTING:
        move(session, lease, LeasePhase.DEGRADED, f"lost host {which}")
    engine.book(lease.id, Placement(placement.start, placement.end, keep))
    found = engine.fit(f"heal:{lease.id}", wanted, placement.start, placement.end)
    if isinstance(found, NoFit):
        engine.book(lease.id, placement)  # keep the claim: the host may come back
        why = (
            f"lost host {which}; no replacement is free ({found.reason}); it is retried when "
            "capacity frees or the host comes back"
        )
        if lease.phase_reason != why:
            note(session, lease, why)
        return f"{lease.name}: no replacement for {which}"
    combined = Placement(placement.start, placement.end, keep + found.allocations)
    engine.book(lease.id, combined)
    _store_placement(session, lease, combined)
    cost = lease_cost(
        replace(combined, end=lease.end_at), _hosts(engine), slice_keys(lease.spec["reservations"])
    )
    credits.settle(
        session,
        lease.tenancy_id,
        lease.id,
        cost,
        placement.start,
        lease.end_at,
        note=f"lease '{lease.name}' healed after host {which} failed",
    )
    lease.status = {**lease.status, "cost": _cost_json(cost)}
    new_hosts = ", ".join(found.hosts())
    # The lease's servers on the lost hosts went down with them, and those hosts are no
    # longer the lease's: were they to come back, their room may be someone else's. They
    # are deleted, and their tombstones say why and what to do.
    for srv in session.scalars(
        select(Server)
        .join(Host, Server.host_id == Host.id)
        .where(Server.lease_id == lease.id, Host.name.in_(down))
    ):
        if srv.phase != ServerPhase.DELETING:
            move(
                session,
                srv,
                ServerPhase.DELETING,
                f"lost with host {which}, which went down; lease '{lease.name}' was "
                f"re-placed on {new_hosts}: create the server again in the lease",
            )
            queue.enqueue(session, "server", srv.id)
    if lease.phase == LeasePhase.DEGRADED:
        move(session, lease, LeasePhase.ACTIVE, f"host {which} replaced by {new_hosts}")
    else:
        note(session, lease, f"host {which} went down; re-placed on {new_hosts}")
    queue.enqueue(session, "lease", lease.id)
    return f"{lease.name}: {which} replaced by {new_hosts}"


def _replacement(session: Session, spec: dict[str, Any], lost: list[Any]) -> Request:
    """A request for what a reservation lost with a host."""
    req = _one_request(session, _adapter().validate_python(spec), 0)
    return kind_of(spec["kind"]).replacement(req, lost)


def _adapter() -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(ReservationIn)
