"""Converge the instance's firewall: every port's security groups (one object, ``all``)."""

from __future__ import annotations

from ecliptic.reconcile.base import Context, Outcome, reconciler
from ecliptic.services import security_groups


@reconciler(security_groups.FIREWALL)
def reconcile_firewall(ctx: Context, object_id: str) -> Outcome:
    """Hand the backend every plugged port with its groups (it applies them at once)."""
    with ctx.db.read() as session:
        spec = security_groups.firewall_spec(session)
    ctx.backend.apply_firewall(spec)
    return Outcome()
