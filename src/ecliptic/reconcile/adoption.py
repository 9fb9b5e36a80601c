"""On start: look at what really exists, keep what belongs to known objects, remove the rest."""

from __future__ import annotations

import logging
import time

from sqlalchemy import select

from ecliptic.backends.base import GcReport, ObservedState
from ecliptic.phases import BenchmarkPhase, LeasePhase
from ecliptic.reconcile.base import Context
from ecliptic.services import security_groups
from ecliptic.services.metering import METER_OBJECT
from ecliptic.services.pool import POOL, SYNC
from ecliptic.services.servers import purge_tombstones
from ecliptic.store.models import Benchmark, HostRole, Lease, Network, Server

log = logging.getLogger("ecliptic.adoption")


def known_ids(ctx: Context) -> tuple[set[str], set[str]]:
    """Ids of every server and network in the store, whatever their phase."""
    with ctx.db.read() as session:
        servers = set(session.scalars(select(Server.id)))
        networks = set(session.scalars(select(Network.id)))
    return servers, networks


def collect_garbage(ctx: Context) -> GcReport:
    """Remove what this instance owns but no known object does.

    The known ids are read first, then the backend looks at what exists: an object
    committed (and made by a worker) between the two would look unknown, so the backend
    keeps whatever it made after the read began.
    """
    read_at = time.time()
    servers, networks = known_ids(ctx)
    return ctx.backend.collect_garbage(servers, networks, read_at=read_at)


def adopt(ctx: Context) -> GcReport:
    """Remove what no known object owns, then queue every known object for a look."""
    ctx.queue.release_dead_claims()
    report = collect_garbage(ctx)
    for r in report.removed:
        log.info("removed leftover %s %s %s", r.kind, r.name, r.detail)
    resync(ctx)
    return report


def resync(ctx: Context) -> None:
    """Queue every network and server for reconciliation (level-triggered safety net)."""
    servers, networks = known_ids(ctx)
    with ctx.db.write() as session:
        for nid in networks:
            ctx.queue.enqueue(session, "network", nid)
        for sid in servers:
            ctx.queue.enqueue(session, "server", sid)
        for lid in session.scalars(select(Lease.id).where(Lease.phase != LeasePhase.ENDED)):
            ctx.queue.enqueue(session, "lease", lid)
        ctx.queue.enqueue(session, "meter", METER_OBJECT)
        for bid in session.scalars(
            select(Benchmark.id).where(
                Benchmark.phase.not_in([BenchmarkPhase.SUCCEEDED, BenchmarkPhase.FAILED])
            )
        ):
            ctx.queue.enqueue(session, "benchmark", bid)
        if ctx.ironic is not None:
            ctx.queue.enqueue(session, "ironic", SYNC)
            ctx.queue.enqueue(session, "pool", POOL)
            for hid in session.scalars(
                select(HostRole.id).where(
                    HostRole.phase.in_(["TO_HYPERVISOR", "DRAINING", "TO_BAREMETAL"])
                )
            ):
                ctx.queue.enqueue(session, "hostrole", hid)
        security_groups.changed(session, ctx.queue)
        purge_tombstones(session, ctx.booking.clock.now() - ctx.booking.deleted_server_retention)


def observe(ctx: Context) -> ObservedState:
    """What the backend holds for this instance, each resource tied to its known object
    (``object_id`` None: an orphan garbage collection would remove)."""
    servers, networks = known_ids(ctx)
    return ctx.backend.observe(servers, networks)
