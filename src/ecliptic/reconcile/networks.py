"""Converge a network: build its bridge (or equivalent), or tear it down."""

from __future__ import annotations

from sqlalchemy import delete, select

from ecliptic.backends.base import NetworkSpec, SubnetSpec
from ecliptic.phases import NetworkPhase
from ecliptic.reconcile.base import Context, Outcome, reconciler
from ecliptic.store.models import Network, Subnet
from ecliptic.store.transitions import move, removed


def network_spec(net: Network) -> NetworkSpec:
    """The backend's view of a network row."""
    return NetworkSpec(
        id=net.id,
        name=net.name,
        subnets=tuple(SubnetSpec(s.id, s.cidr, s.gateway_ip) for s in net.subnets),
    )


@reconciler("network")
def reconcile_network(ctx: Context, network_id: str) -> Outcome:
    """Build, repair or delete one network."""
    with ctx.db.read() as session:
        net = session.get(Network, network_id)
        if net is None:
            ctx.backend.delete_network(network_id)
            return Outcome()
        spec = network_spec(net)
        deleting = net.phase == NetworkPhase.DELETING
        generation = net.generation
    if deleting:
        ctx.backend.delete_network(network_id)
        with ctx.db.write() as session:
            session.execute(delete(Subnet).where(Subnet.network_id == network_id))
            row = session.get(Network, network_id)
            if row is not None:
                removed(session, row, "deleted")
                session.delete(row)
        return Outcome()
    with ctx.db.write() as session:
        row = session.get(Network, network_id)
        if row is not None and row.phase != NetworkPhase.ACTIVE:
            move(session, row, NetworkPhase.BUILDING, "building")
        for sub in row.subnets if row is not None else ():
            if sub.phase != NetworkPhase.ACTIVE:  # new subnets of an active network too
                move(session, sub, NetworkPhase.BUILDING, "building")
    status = ctx.backend.ensure_network(spec)
    with ctx.db.write() as session:
        row = session.get(Network, network_id)
        if row is None or row.phase == NetworkPhase.DELETING:
            return Outcome(requeue_after=0)
        row.status = {"backend_ref": status.backend_ref, "ready": status.ready}
        row.observed_generation = generation
        move(session, row, NetworkPhase.ACTIVE, "ready")
        for sub in session.scalars(select(Subnet).where(Subnet.network_id == network_id)):
            move(session, sub, NetworkPhase.ACTIVE, "ready")
    return Outcome()
