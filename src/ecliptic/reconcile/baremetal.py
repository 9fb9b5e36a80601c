"""Servers on hosts from Ironic: bare-metal deployments, and waiting for a pool host's role.

A ``baremetal`` server on an Ironic host is an Ironic deployment: the server's id is the
node's instance UUID (the idempotency key: a deploy repeated after a crash finds it and
waits, never deploys twice), instance info names its image, and a config drive carries its
hostname, its tenancy's SSH keys and its metadata. It is ACTIVE once Ironic says ``active``
(the local cloud then runs the machine's system as a sandbox on that host, so the server
is reached and used like any other). Deleting it undeploys the node (Ironic cleans it) and
the server's row, and so the host's room, goes only once Ironic says ``available``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NoReturn

from sqlalchemy import select

from ecliptic import faults
from ecliptic.backends.ironic import IronicError, NodeBusy, NodeLocked
from ecliptic.phases import ServerPhase
from ecliptic.reconcile.base import Context, IronicLink, Outcome
from ecliptic.reconcile.hosts import (
    CLEANING_STATES,
    FAILED_STATES,
    LOCKED_S,
    POLL_S,
    WAIT_S,
    seconds_since,
)
from ecliptic.reconcile.hosts import host_ready_for as _ready
from ecliptic.services.pool import POOL, instance_key
from ecliptic.store.models import Membership, Server, UserSshKey
from ecliptic.store.transitions import move, note


@dataclass(frozen=True)
class Target:
    """What the server reconciler knows of a server's host, read in its transaction."""

    name: str
    node_id: str | None
    waiting: str
    """Why the server cannot be built on it yet (its pool role); empty when it can."""


def target_of(srv: Server) -> Target | None:
    """The Ironic side of a server's host; None for hosts from the inventory file."""
    host = srv.host
    if host is None or (host.source != "ironic" and host.pool is None):
        return None
    return Target(host.name, host.node_id, _ready(host, srv.kind))


def wait_for_role(ctx: Context, server_id: str, why: str) -> Outcome:
    """The server's pool host is not what it needs yet: say so, and nudge the policy."""
    with ctx.db.write() as session:
        row = session.get(Server, server_id)
        if row is not None and row.phase != ServerPhase.DELETING:
            if row.phase_reason != why:
                note(session, row, why)
            ctx.queue.enqueue(session, "pool", POOL)
    return Outcome(requeue_after=0.2)


def _keys(ctx: Context, tenancy_id: str) -> dict[str, str]:
    with ctx.db.read() as session:
        rows = session.execute(
            select(UserSshKey.name, UserSshKey.public_key, UserSshKey.user_id)
            .join(Membership, Membership.user_id == UserSshKey.user_id)
            .where(Membership.tenancy_id == tenancy_id)
            .order_by(UserSshKey.user_id, UserSshKey.name)
        )
        return {f"{uid[:8]}-{name}": key for name, key, uid in rows}


def _step(ctx: Context, server_id: str, reason: str, **status: object) -> None:
    with ctx.db.write() as session:
        row = session.get(Server, server_id)
        if row is None or row.phase == ServerPhase.DELETING:
            return
        if status:
            row.status = {**row.status, **status}
        if row.phase == ServerPhase.PENDING:
            move(session, row, ServerPhase.BUILDING, reason)
        elif row.phase_reason != reason:
            note(session, row, reason)


def _give_up(ctx: Context, server_id: str, reason: str) -> NoReturn:
    """Fail the server's deployment for good: it stays in ERROR (with ``reason``) until it
    is deleted, even should Ironic finish the deployment later."""
    with ctx.db.write() as session:
        row = session.get(Server, server_id)
        if row is not None:
            row.status = {**row.status, "ironic_failed": reason}
    raise IronicError(reason, retryable=False)


def deploy(ctx: Context, server_id: str, target: Target) -> Outcome | None:
    """Drive the node's deployment for a bare-metal server; None once Ironic says active."""
    link = ctx.ironic
    if link is None or not target.node_id:
        raise IronicError(f"host {target.name} is an Ironic node, but no Ironic is configured")
    node = link.client.node(target.node_id)
    if node is None:
        raise IronicError(f"Ironic has no node {target.node_id} (host {target.name}) any more")
    ours = instance_key(server_id)
    key = instance_key(node.instance_uuid)
    with ctx.db.read() as session:
        row = session.get(Server, server_id)
        if row is None:
            return Outcome(requeue_after=0)
        status, name, image, tenancy = dict(row.status), row.name, row.image, row.tenancy_id
    now = ctx.booking.clock.now()
    if status.get("ironic_failed"):
        # Given up on (timeout, retries spent): Ironic finishing late does not revive it.
        raise IronicError(str(status["ironic_failed"]), retryable=False)
    if key and key != ours:
        raise IronicError(
            f"node {node.uuid} (host {target.name}) carries instance {key}: it is not "
            "deployed twice",
            retryable=False,
        )
    if key == ours and node.provision_state == "active" and not node.busy:
        if "ironic_deploy_s" not in status:
            took = seconds_since(status.get("ironic_started_at"), now)
            _step(ctx, server_id, "Ironic says active", ironic_deploy_s=round(took, 3))
        return None
    started = status.get("ironic_started_at")
    if started and seconds_since(started, now) > link.settings.deploy_timeout.total_seconds():
        _give_up(
            ctx,
            server_id,
            f"Ironic did not deploy node {node.uuid} within "
            f"{link.settings.deploy_timeout.total_seconds():.0f} s (it is "
            f"{node.provision_state})",
        )
    if key == ours and node.provision_state in FAILED_STATES and not node.busy:
        attempts = int(status.get("ironic_attempts", 0))
        why = f"Ironic: {node.provision_state}: {node.last_error or 'no detail'}"
        if attempts >= link.settings.retries:
            _give_up(ctx, server_id, f"{why} (after {attempts + 1} attempts)")
        link.client.recover(node.uuid)
        _step(
            ctx,
            server_id,
            f"{why}; Ironic tears it down and cleans it, then it is deployed again "
            f"(retry {attempts + 1} of {link.settings.retries})",
            ironic_attempts=attempts + 1,
        )
        return Outcome(requeue_after=POLL_S)
    # Ours but still available: a deploy half done (Ironic took the instance, then failed
    # or went away before the deploy call) is started again below, not waited for.
    if node.busy or (key == ours and node.provision_state != "available"):
        _step(ctx, server_id, f"Ironic: node {node.uuid} is {node.provision_state}")
        return Outcome(requeue_after=POLL_S)
    if node.maintenance:
        _step(
            ctx,
            server_id,
            f"waiting: node {node.uuid} is in maintenance ({node.maintenance_reason or '-'})",
        )
        return Outcome(requeue_after=WAIT_S)
    if node.provision_state != "available":
        _step(ctx, server_id, f"waiting for Ironic: node {node.uuid} is {node.provision_state}")
        return Outcome(requeue_after=POLL_S if node.provision_state in CLEANING_STATES else WAIT_S)
    try:
        link.client.deploy(
            node.uuid,
            server_id,
            image=image,
            hostname=name,
            ssh_keys=tuple(_keys(ctx, tenancy).values()),
            meta={"ecliptic_server": server_id, "ecliptic_tenancy": tenancy},
        )
    except (NodeLocked, NodeBusy):
        return Outcome(requeue_after=LOCKED_S)
    faults.point("baremetal.after_deploy")
    _step(
        ctx,
        server_id,
        f"Ironic deploys image '{image}' on node {node.uuid}",
        ironic_node=node.uuid,
        ironic_started_at=now.isoformat(),
    )
    return Outcome(requeue_after=POLL_S)


def undeploy(ctx: Context, link: IronicLink, server_id: str, node_id: str) -> Outcome | None:
    """Undeploy a deleted bare-metal server's node; None once Ironic says it is free (the
    row may go: the host's room returns), or that cleaning failed (the host is then out of
    the pool, marked down with Ironic's error, until an operator recovers the node)."""
    node = link.client.node(node_id)
    if node is None:
        return None
    ours = instance_key(server_id)
    key = instance_key(node.instance_uuid)
    if node.provision_state == "clean failed" and not node.busy:
        return None
    if key != ours:
        if node.busy or node.provision_state in CLEANING_STATES:
            return Outcome(requeue_after=POLL_S)
        return None  # available (or someone else's): ours no more
    if node.busy or node.provision_state in CLEANING_STATES:
        return Outcome(requeue_after=POLL_S)
    if node.provision_state == "available":
        link.client.release(node_id, server_id)
        return None
    try:
        link.client.undeploy(node_id, server_id)
    except (NodeLocked, NodeBusy):
        return Outcome(requeue_after=LOCKED_S)
    with ctx.db.write() as session:
        row = session.get(Server, server_id)
        if row is not None:
            note(session, row, f"Ironic undeploys node {node_id} and cleans it")
    return Outcome(requeue_after=POLL_S)
