"""Taking down what an owner made (a platform's, a benchmark run's servers, networks and
security group): mark, queue, and delete the servers at once."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecliptic.backends.base import BackendError
from ecliptic.phases import NetworkPhase, PortPhase, ServerPhase
from ecliptic.reconcile.base import Context
from ecliptic.services import security_groups
from ecliptic.store.models import Network, SecurityGroup, Server
from ecliptic.store.transitions import move

log = logging.getLogger(__name__)


def servers_going(
    ctx: Context, session: Session, servers: Sequence[Server], reason: str, grace_s: float
) -> list[str]:
    """Mark ``servers`` (and their ports) DELETING with a stop grace, queue them; their ids."""
    for srv in servers:
        if srv.phase != ServerPhase.DELETING:
            move(session, srv, ServerPhase.DELETING, reason)
            srv.spec = {**srv.spec, "stop_grace_s": grace_s}
            for port in srv.ports:
                if port.phase != PortPhase.DELETING:
                    move(session, port, PortPhase.DELETING, "server deletion requested")
            srv.generation += 1
            ctx.queue.enqueue(session, "server", srv.id)
    return [srv.id for srv in servers]


def delete_now(ctx: Context, server_ids: Sequence[str], grace_s: float, owner: str) -> None:
    """Delete servers in the backend all at once (the workers would take them two by one);
    a failure is left to the server's own reconcile, which retries it."""
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="ecliptic-delete") as pool:
        for f in [pool.submit(ctx.backend.delete_server, s, grace_s=grace_s) for s in server_ids]:
            try:
                f.result()
            except BackendError as exc:
                log.warning("%s: deleting a server: %s", owner, exc)


def networks_going(ctx: Context, session: Session, nets: Sequence[Network], reason: str) -> None:
    """Mark ``nets`` (and their subnets) DELETING and queue them."""
    for net in nets:
        if net.phase != NetworkPhase.DELETING:
            move(session, net, NetworkPhase.DELETING, reason)
            for sub in net.subnets:
                move(session, sub, NetworkPhase.DELETING, "network deletion requested")
            ctx.queue.enqueue(session, "network", net.id)


def drop_group(ctx: Context, session: Session, tenancy_id: str, name: str) -> None:
    """Remove an owner's security group, if it is there."""
    group = session.scalar(
        select(SecurityGroup).where(
            SecurityGroup.tenancy_id == tenancy_id, SecurityGroup.name == name
        )
    )
    if group is not None:
        session.delete(group)
        security_groups.changed(session, ctx.queue)
