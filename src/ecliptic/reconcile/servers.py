"""Converge a server: build or repair it, or delete it and release its ports."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecliptic import faults
from ecliptic.backends.base import BackendError, PortSpec, ServerSpec
from ecliptic.phases import PortPhase, ServerPhase
from ecliptic.reconcile import baremetal
from ecliptic.reconcile.base import Context, Outcome, reconciler
from ecliptic.reconcile.networks import network_spec
from ecliptic.services import credits, metering, security_groups
from ecliptic.services.booking import server_booking_id
from ecliptic.store.models import DeletedServer, Network, Server
from ecliptic.store.transitions import move, note, removed

MAX_ATTEMPTS_BEFORE_ERROR = 5
WAIT_POLL_S = 1.0
"""How often a server waiting for preemptible servers to go looks (each one's deletion
wakes it too)."""


def server_spec(srv: Server) -> ServerSpec:
    """The backend's view of a server row."""
    ports = tuple(
        PortSpec(
            id=p.id,
            network_id=p.network_id,
            mac=p.mac,
            addresses=(f"{p.ip_address}/{p.subnet.cidr.split('/')[1]}",),
            vnic_type="direct" if p.vnic_type == "direct" else "normal",
            index=p.device_index,
        )
        for p in sorted(srv.ports, key=lambda p: p.device_index)
    )
    return ServerSpec(
        id=srv.id,
        name=srv.name,
        kind="baremetal" if srv.kind == "baremetal" else "vm",
        host=srv.host.name if srv.host else "",
        vcpus=srv.vcpus,
        memory_mb=srv.memory_mb,
        ports=ports,
        image=srv.image,
    )


@reconciler("server")
def reconcile_server(ctx: Context, server_id: str) -> Outcome:
    """Build, repair or delete one server."""
    with ctx.db.read() as session:
        srv = session.get(Server, server_id)
        if srv is None:
            ctx.backend.delete_server(server_id)
            return Outcome()
        if srv.phase == ServerPhase.DELETING:
            return _delete(ctx, srv)
        waiting = _waiting_for_victims(ctx, session, srv)
        if waiting is not None:
            return waiting
        target = baremetal.target_of(srv)
        moving_from = srv.spec.get("moving_from")
        spec = server_spec(srv)
        nets = [
            network_spec(n)
            for n in session.scalars(
                select(Network).where(Network.id.in_({p.network_id for p in srv.ports}))
            )
        ]
        generation = srv.generation
        converged = (
            srv.phase == ServerPhase.ACTIVE
            and srv.observed_generation == generation
            and ctx.backend.server_exists(server_id)
        )
    if converged:
        return Outcome()
    if target is not None:
        if target.waiting:
            return baremetal.wait_for_role(ctx, server_id, target.waiting)
        if spec.kind == "baremetal":
            step = baremetal.deploy(ctx, server_id, target)
            if step is not None:
                return step
    with ctx.db.write() as session:
        row = session.get(Server, server_id)
        if row is None or row.phase == ServerPhase.DELETING:
            return Outcome(requeue_after=0)
        if moving_from:
            why = f"moving from host {moving_from} to {spec.host}"
        else:
            why = "building" if row.observed_generation == 0 else "repairing"
        if not move(session, row, ServerPhase.BUILDING, why) and moving_from:
            note(session, row, why)
    if moving_from:
        # A cold migration: stopped, its disk and addresses carried over, started again.
        ctx.backend.stop_server(server_id)
    faults.point("reconcile.server.before_backend")
    for net in nets:
        ctx.backend.ensure_network(net)
    # Its ports' security groups are in place before its interfaces exist (fail closed).
    with ctx.db.read() as session:
        ctx.backend.apply_firewall(security_groups.firewall_spec(session))
    status = ctx.backend.ensure_server(spec)
    faults.point("reconcile.server.after_backend")
    with ctx.db.write() as session:
        row = session.get(Server, server_id)
        if row is None or row.phase == ServerPhase.DELETING:
            # Deleted while we built it: the delete request is queued and will clean up.
            return Outcome(requeue_after=0)
        row.status = {
            # What Ironic did for a bare-metal server (its node, how long it deployed) stays.
            **{k: v for k, v in row.status.items() if k.startswith("ironic_")},
            "backend_ref": status.backend_ref,
            "host": status.host,
            "limits_applied": status.limits_applied,
            "limits_note": status.limits_note,
            "image": status.image,
            "interfaces": [asdict(i) for i in status.interfaces],
        }
        row.observed_generation = generation
        if moving_from and row.spec.get("moving_from") == moving_from:
            row.spec = {k: v for k, v in row.spec.items() if k != "moving_from"}
            move(session, row, ServerPhase.ACTIVE, f"running: moved from host {moving_from}")
        else:
            move(session, row, ServerPhase.ACTIVE, "running")
        by_port = {i.port_id: i for i in status.interfaces}
        for port in row.ports:
            iface = by_port.get(port.id)
            port.status = {"ifname": iface.ifname} if iface else {}
            move(
                session,
                port,
                PortPhase.ACTIVE if iface else PortPhase.ERROR,
                "plugged" if iface else "not plugged",
            )
    return Outcome()


def _waiting_for_victims(ctx: Context, session: Session, srv: Server) -> Outcome | None:
    """An on-demand server placed on room preemptible servers used is built once they are
    gone (their grace), not beside them; None when nothing is in the way."""
    after = [sid for sid in srv.spec.get("after", ()) if session.get(Server, sid) is not None]
    if not after:
        return None
    grace = ctx.booking.preemptible_grace.total_seconds()
    with ctx.db.write() as w:
        row = w.get(Server, srv.id)
        if row is not None and row.phase == ServerPhase.PENDING:
            why = f"waiting for {len(after)} preemptible server(s) to stop (grace {grace:.0f} s)"
            if row.phase_reason != why:
                note(w, row, why)
    return Outcome(requeue_after=WAIT_POLL_S)


def _delete(ctx: Context, srv: Server) -> Outcome:
    server_id = srv.id
    grace = srv.spec.get("stop_grace_s")
    node_id = srv.host.node_id if srv.host and srv.kind == "baremetal" else None
    ctx.backend.delete_server(server_id, grace_s=float(grace) if grace is not None else None)
    faults.point("reconcile.server.after_backend_delete")
    if node_id and ctx.ironic is not None:
        step = baremetal.undeploy(ctx, ctx.ironic, server_id, node_id)
        if step is not None:
            return step
    with ctx.booking.transaction(credits.CREDITS_LOCK) as (session, engine):
        row = session.get(Server, server_id)
        if row is None:
            return Outcome()
        # Ports made for the server go with it; ports the user made are unplugged and kept.
        for port in list(row.ports):
            if port.spec.get("auto_delete"):
                session.delete(port)
            else:
                port.server_id = None
                move(session, port, PortPhase.DOWN, f"unplugged: server '{row.name}' deleted")
                port.status = {}
        session.flush()
        removed(session, row, row.phase_reason or "deleted")
        session.merge(
            DeletedServer(
                id=server_id,
                tenancy_id=row.tenancy_id,
                name=row.name,
                flavor=row.flavor.name,
                host=row.host.name if row.host else None,
                lease_id=row.lease_id,
                preemptible=row.preemptible,
                created_at=row.created_at,
                deleted_at=ctx.booking.clock.now(),
                reason=row.phase_reason or "deleted",
            )
        )
        # A lease waiting for this server to go (its end, or its start after a preemption)
        # looks again now rather than at its next poll.
        if row.lease_id:
            ctx.queue.enqueue(session, "lease", row.lease_id)
        if row.spec.get("preempted_by"):
            kind = str(row.spec.get("preempted_for", "lease"))
            ctx.queue.enqueue(session, kind, str(row.spec["preempted_by"]))
        metering.finish(session, row, ctx.booking.clock.now())
        security_groups.changed(session, ctx.queue, delay=1.0)  # its ports' rules go
        session.delete(row)
        engine.release(server_booking_id(server_id))
        engine.remove_preemptible(server_id)
    return Outcome()


def mark_failing(
    ctx: Context, server_id: str, attempts: int, error: BackendError | Exception
) -> None:
    """After repeated failures, say so in the server's phase (retries go on with backoff)."""
    with ctx.db.write() as session:
        row = session.get(Server, server_id)
        if row is None or row.phase == ServerPhase.DELETING:
            return
        retryable = getattr(error, "retryable", True)
        if attempts + 1 >= MAX_ATTEMPTS_BEFORE_ERROR or not retryable:
            move(session, row, ServerPhase.ERROR, f"{error}")
        else:
            row.phase_reason = f"retrying after: {error}"
