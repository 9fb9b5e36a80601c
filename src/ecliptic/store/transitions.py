"""Move a reconciled object from one phase to another, through the state table, with a reason."""

from __future__ import annotations

from sqlalchemy.orm import Session

from ecliptic.phases import check_move
from ecliptic.store.models import Event, Lease, Network, Port, Reconciled, Server, Subnet
from ecliptic.store.types import utcnow

KINDS: dict[type[Reconciled | Lease], str] = {
    Lease: "lease",
    Server: "server",
    Network: "network",
    Subnet: "network",
    Port: "port",
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
    session.add(
        Event(
            tenancy_id=getattr(obj, "tenancy_id", None),
            object_kind=type(obj).__name__.lower(),
            object_id=getattr(obj, "id", ""),
            from_phase=current,
            to_phase=target,
            reason=reason,
        )
    )
    return True


def note(session: Session, obj: Reconciled | Lease, reason: str) -> None:
    """Record something that happened to ``obj`` without a phase change (it keeps its phase)."""
    obj.phase_reason = reason
    session.add(
        Event(
            tenancy_id=getattr(obj, "tenancy_id", None),
            object_kind=type(obj).__name__.lower(),
            object_id=getattr(obj, "id", ""),
            from_phase=obj.phase,
            to_phase=obj.phase,
            reason=reason,
        )
    )
