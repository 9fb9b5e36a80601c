"""Move a reconciled object from one phase to another, through the state table, with a reason."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecliptic.phases import check_move
from ecliptic.store.models import (
    Benchmark,
    Event,
    HostRole,
    Lease,
    Network,
    Platform,
    Port,
    Reconciled,
    Server,
    Service,
    Subnet,
)
from ecliptic.store.types import utcnow

KINDS: dict[type[Reconciled | Lease], str] = {
    Lease: "lease",
    Server: "server",
    Network: "network",
    Subnet: "network",
    Port: "port",
    Platform: "platform",
    Benchmark: "benchmark",
    HostRole: "hostrole",
}


def move(session: Session, obj: Reconciled | Lease, target: str, reason: str = "") -> bool:
    """Set ``obj``'s phase to ``target`` if the state table allows it, recording an event.

    Returns False when the object already was in ``target`` (only the reason is
    refreshed), True after a real move; raises ``IllegalTransition`` otherwise.
    """
    kind = KINDS[type(obj)]
    current = obj.phase
    if not check_move(kind, current, target):
        obj.phase_reason = reason or obj.phase_reason
        return False
    obj.phase = target
    obj.phase_reason = reason
    obj.updated_at = utcnow()
    _record(session, obj, current, target, reason)
    return True


def note(session: Session, obj: Reconciled | Lease, reason: str) -> None:
    """Record something that happened to ``obj`` without a phase change (it keeps its phase)."""
    obj.phase_reason = reason
    _record(session, obj, obj.phase, obj.phase, reason)


def created(session: Session, obj: Reconciled | Lease, reason: str) -> None:
    """Record that ``obj`` came to be, in its first phase (its row must have an id)."""
    _record(session, obj, None, obj.phase, reason)


def removed(session: Session, obj: Reconciled | Lease, reason: str) -> None:
    """Record that ``obj`` is gone for good (its row is about to be deleted)."""
    _record(session, obj, obj.phase, "DELETED", reason)


def _record(
    session: Session, obj: Reconciled | Lease, before: str | None, after: str, reason: str
) -> None:
    """The one place events are written: what happened to which object, and why."""
    session.add(
        Event(
            tenancy_id=getattr(obj, "tenancy_id", None),
            object_kind=type(obj).__name__.lower(),
            object_id=getattr(obj, "id", ""),
            from_phase=before,
            to_phase=after,
            reason=reason,
        )
    )


def audit(session: Session, service: Service, reason: str) -> None:
    """Record a change to a gateway service (a key bound or revoked, access changed, a
    token issued): services have no phases, so the event moves from nothing to ``AUDIT``."""
    session.add(
        Event(
            tenancy_id=service.tenancy_id,
            object_kind="service",
            object_id=service.id,
            from_phase="",
            to_phase="AUDIT",
            reason=reason,
        )
    )


def timeline(session: Session, kind: str, object_id: str, limit: int) -> list[Event]:
    """An object's last ``limit`` events, oldest first."""
    rows = session.scalars(
        select(Event)
        .where(Event.object_kind == kind, Event.object_id == object_id)
        .order_by(Event.id.desc())
        .limit(limit)
    )
    return list(reversed(list(rows)))
