"""Drive a lease through time: start (making way), warn before the end, end (with grace).

Level-triggered: each run looks at the clock and the lease's phase, does what is due,
and asks to be run again when the next thing is due. Events never fire early, and a run
that was missed (the process was down) catches up on the next.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select

from ecliptic.phases import LeasePhase, ServerPhase
from ecliptic.reconcile.base import Context, Outcome, reconciler
from ecliptic.services import leases
from ecliptic.services import servers as server_service
from ecliptic.services.platforms import wake_platforms
from ecliptic.store.models import Lease, Server
from ecliptic.store.transitions import move, note

POLL_S = 0.5
START_PATIENCE_S = 300.0
"""A start waits this long past the preemptible grace for its victims to go, then ERROR."""
HEAL_RETRY_S = 60.0
"""A DEGRADED lease tries to heal at least this often (and at once when capacity frees)."""
LIVE = (LeasePhase.PENDING, LeasePhase.STARTING, LeasePhase.ACTIVE, LeasePhase.DEGRADED)


def _secs(delta: timedelta) -> float:
    return max(0.0, delta.total_seconds())


@reconciler("lease")
def reconcile_lease(ctx: Context, lease_id: str) -> Outcome:
    """Do whatever is due for one lease."""
    now = ctx.booking.clock.now()
    with ctx.db.read() as session:
        lease = session.get(Lease, lease_id)
        if lease is None:
            with ctx.booking.transaction() as (_, engine):
                engine.release(lease_id)
            return Outcome()
        phase, start, end = lease.phase, lease.start_at, lease.end_at
        before_end, warned = lease.before_end_at, bool(lease.status.get("warned"))
    if phase in LIVE and now < end:
        # Level-triggered healing: a lease on a host that is down gets a replacement when
        # one is free, and a DEGRADED lease whose hosts are all up again is whole.
        with ctx.booking.reading() as engine:
            down = leases.lost_hosts(engine, lease_id)
        if down or phase == LeasePhase.DEGRADED:
            leases.heal(ctx.booking, ctx.queue, lease_id, "retried by the lease reconciler")
            with ctx.db.read() as session:
                row = session.get(Lease, lease_id)
                if row is None:
                    return Outcome()
                phase = row.phase
    if phase == LeasePhase.PENDING:
        if now < start:
            return Outcome(requeue_after=_secs(start - now))
        return _start(ctx, lease_id, now)
    if phase == LeasePhase.STARTING:
        return _start(ctx, lease_id, now)
    if phase in (LeasePhase.ACTIVE, LeasePhase.DEGRADED):
        if before_end is not None and not warned and now >= before_end:
            _warn(ctx, lease_id, end)
        if now >= end:
            with ctx.db.write() as session:
                row = session.get(Lease, lease_id)
                if row is not None:
                    move(session, row, LeasePhase.ENDING, "its end time came")
            return _end(ctx, lease_id, now)
        due = [end] + (
            [before_end] if before_end is not None and not warned and before_end > now else []
        )
        wait = _secs(min(due) - now)
        if phase == LeasePhase.DEGRADED:
            wait = min(wait, HEAL_RETRY_S)
        return Outcome(requeue_after=wait)
    if phase == LeasePhase.ENDING:
        return _end(ctx, lease_id, now)
    if phase == LeasePhase.ERROR and now >= end:
        # Stuck until its end: it ends like any lease (servers deleted after the grace).
        with ctx.db.write() as session:
            row = session.get(Lease, lease_id)
            if row is not None:
                move(session, row, LeasePhase.ENDING, "its end time came (it was in ERROR)")
        return _end(ctx, lease_id, now)
    if phase == LeasePhase.ERROR:
        return Outcome(requeue_after=_secs(end - now))
    return Outcome()


def _start(ctx: Context, lease_id: str, now: datetime) -> Outcome:
    """Stop the preemptible servers in the way; ACTIVE once they are gone."""
    with ctx.booking.transaction() as (session, engine):
        lease = session.get(Lease, lease_id)
        if lease is None or lease.phase not in (LeasePhase.PENDING, LeasePhase.STARTING):
            return Outcome(requeue_after=0)
        move(session, lease, LeasePhase.STARTING, "start is due")
        since = lease.status.get("starting_since")
        if since is None:
            since = now.isoformat()
            lease.status = {**lease.status, "starting_since": since}
        grace = ctx.booking.preemptible_grace.total_seconds()
        placement = engine.booking(lease_id)
        victims = engine.victims(placement, now) if placement is not None else []
        waiting = list(lease.status.get("victims", []))
        waiting += server_service.preempt(
            session,
            engine,
            ctx.queue,
            victims,
            grace_s=grace,
            by=("lease", lease.id),
            why=f"lease '{lease.name}' starts on host {{host}} and needs the room this "
            "preemptible server used",
        )
        still = [sid for sid in waiting if session.get(Server, sid) is not None]
        deadline = datetime.fromisoformat(since) + timedelta(seconds=grace + START_PATIENCE_S)
        if still and now >= deadline:
            # Bounded: the victims' deletion is retried by their own reconciler, but the
            # lease says it is stuck, and why, instead of STARTING forever.
            stuck = [s for s in (session.get(Server, sid) for sid in still) if s is not None]
            which = "; ".join(f"{s.name} ({s.phase}: {s.phase_reason})" for s in stuck[:5])
            move(
                session,
                lease,
                LeasePhase.ERROR,
                f"could not start: {len(stuck)} preemptible server(s) in the way could not be "
                f"deleted by {deadline:%Y-%m-%d %H:%M:%S} UTC: {which}; "
                f"'ecliptic lease retry {lease.name}' tries again, "
                f"'ecliptic lease end {lease.name}' gives it up (unused credit refunded)",
            )
            lease.status = {k: v for k, v in lease.status.items() if k != "starting_since"}
            return Outcome(requeue_after=_secs(lease.end_at - now))
        if still:
            move(
                session,
                lease,
                LeasePhase.STARTING,
                f"waiting for {len(still)} preemptible server(s) to stop",
            )
            lease.status = {**lease.status, "victims": still}
            return Outcome(requeue_after=POLL_S)
        lease.status = {
            k: v for k, v in lease.status.items() if k not in ("victims", "starting_since")
        }
        down = leases.lost_hosts(engine, lease_id)
        if down:
            move(
                session,
                lease,
                LeasePhase.DEGRADED,
                f"started without host {', '.join(down)} (down, no replacement free yet)",
            )
        else:
            move(session, lease, LeasePhase.ACTIVE, "started")
        end = lease.end_at
        before = lease.before_end_at
    due = min([end] + ([before] if before is not None and before > now else []))
    wait = _secs(due - now)
    return Outcome(requeue_after=min(wait, HEAL_RETRY_S) if down else wait)


def _warn(ctx: Context, lease_id: str, end: datetime) -> None:
    with ctx.db.write() as session:
        lease = session.get(Lease, lease_id)
        if lease is None:
            return
        lease.status = {**lease.status, "warned": True}
        wake_platforms(session, ctx.queue, lease_id)
        note(
            session,
            lease,
            f"before-end: lease '{lease.name}' ends at {end:%Y-%m-%d %H:%M} UTC; "
            "save your work or extend it ('ecliptic lease update --extend')",
        )


def _end(ctx: Context, lease_id: str, now: datetime) -> Outcome:
    """After the grace period, delete the lease's servers; ENDED when none is left."""
    with ctx.booking.transaction() as (session, engine):
        lease = session.get(Lease, lease_id)
        if lease is None or lease.phase != LeasePhase.ENDING:
            return Outcome()
        wake_platforms(session, ctx.queue, lease_id)
        deadline = lease.end_at + timedelta(seconds=lease.grace_s)
        servers = list(session.scalars(select(Server).where(Server.lease_id == lease_id)))
        if servers and now < deadline:
            lease.phase_reason = (
                f"{len(servers)} server(s) will be deleted at {deadline:%Y-%m-%d %H:%M:%S} UTC "
                "(grace period)"
            )
            return Outcome(requeue_after=min(_secs(deadline - now), 60.0))
        for srv in servers:
            if srv.phase != ServerPhase.DELETING:
                move(
                    session,
                    srv,
                    ServerPhase.DELETING,
                    f"lease '{lease.name}' ended (grace period over)",
                )
                ctx.queue.enqueue(session, "server", srv.id)
        if servers:
            return Outcome(requeue_after=POLL_S)
        engine.release(lease_id)
        move(session, lease, LeasePhase.ENDED, "ended; capacity released")
        wake_platforms(session, ctx.queue, lease_id)
        leases.wake_degraded(session, ctx.queue)
    return Outcome()
