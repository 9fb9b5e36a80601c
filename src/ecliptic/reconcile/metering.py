"""Charge on-demand use by the hour (see ``ecliptic.services.metering``)."""

from __future__ import annotations

from ecliptic.reconcile.base import Context, Outcome, reconciler
from ecliptic.services import metering


@reconciler("meter")
def reconcile_meter(ctx: Context, object_id: str) -> Outcome:
    """Charge every metered server whose next hour began; come back when the next one does."""
    wait = metering.meter_due(ctx.db, ctx.queue, ctx.booking.meter, ctx.booking.clock.now())
    return Outcome(requeue_after=wait)
