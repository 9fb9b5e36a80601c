"""Converge the hosts that come from Ironic: the sync, the pool's policy, and conversions.

Three kinds of work:

* ``ironic`` (one item): read every node back, make the hosts match (``services.pool``),
  and look again after ``ECLIPTIC_IRONIC_SYNC_SECONDS``.
* ``pool`` (one item): the policy decides which pool hosts to convert, every
  ``POOL_TICK_S`` (and at once when a server waits for a hypervisor).
* ``hostrole`` (one per pool host): carry a conversion through its phases. A hypervisor is
  an Ironic deployment of the ``hypervisor`` image whose instance UUID is derived from the
  host's id (``hypervisor_instance``), so a deploy repeated after a crash is recognised as
  ours and never doubled; handing a host back is Ironic's undeploy (with cleaning), and the
  host is bare metal again only when Ironic says ``available``.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import select

from ecliptic import faults
from ecliptic.backends.ironic import (
    IronicNode,
    NodeBusy,
    NodeLocked,
    host_state,
    node_record,
)
from ecliptic.phases import HostRolePhase, ServerPhase
from ecliptic.reconcile.base import Context, IronicLink, Outcome, reconciler
from ecliptic.services import credits
from ecliptic.services.booking import host_info
from ecliptic.services.pool import (
    POOL,
    NodeView,
    hypervisor_instance,
    instance_key,
    lead_time,
    live_servers_on,
    plan,
    pool_views,
    record_build,
    start_conversion,
    sync_nodes,
)
from ecliptic.services.servers import relocate
from ecliptic.store.models import Host, HostRole, Server
from ecliptic.store.transitions import move, note

log = logging.getLogger("ecliptic.hosts")
_H = HostRolePhase
POOL_TICK_S = 2.0
"""How often the policy looks at the pool."""
POLL_S = 0.05
"""How often a deployment or a cleaning in flight is looked at (a node read is ~20 ms)."""
LOCKED_S = 0.2
"""How long to wait when Ironic says the node is locked by a transition in flight."""
WAIT_S = 1.0
"""How often a drain looks again while a server cannot move yet."""
FAILED_STATES = ("deploy failed", "error")
CLEANING_STATES = ("deleting", "cleaning", "clean wait")


@reconciler("ironic")
def reconcile_ironic(ctx: Context, _object_id: str) -> Outcome:
    """Make the Ironic hosts match Ironic's nodes, then look again after the sync interval."""
    link = ctx.ironic
    if link is None:
        return Outcome()
    views = [node_view(n) for n in link.client.nodes()]
    with ctx.booking.transaction(credits.CREDITS_LOCK) as (session, engine):
        lines = sync_nodes(session, engine, ctx.queue, views, link.policy.pool)
        if lines:
            ctx.queue.enqueue(session, "pool", POOL)
    for line in lines:
        log.info("ironic sync: %s", line)
    return Outcome(requeue_after=link.settings.sync_s)


def node_view(n: IronicNode) -> NodeView:
    """What the sync needs of a node."""
    state, reason = host_state(n)
    record, problem = node_record(n)
    return NodeView(
        uuid=n.uuid,
        record=record,
        unfit=problem,
        state=state,
        reason=reason,
        instance=instance_key(n.instance_uuid),
        provision_state=n.provision_state,
    )


@reconciler("pool")
def reconcile_pool(ctx: Context, _object_id: str) -> Outcome:
    """Start the conversions the policy asks for; keep hypervisors' idle times."""
    link = ctx.ironic
    if link is None:
        return Outcome()
    with ctx.booking.transaction(credits.CREDITS_LOCK) as (session, engine):
        roles = {r.host.name: r for r in session.scalars(select(HostRole))}
        if not roles:
            return Outcome(requeue_after=POOL_TICK_S * 5)
        now = ctx.booking.clock.now()
        views = pool_views(session, now, lead_time(session, link.policy))
        for v in views:
            role = roles[v.name]
            if role.phase == _H.HYPERVISOR and not v.servers:
                role.idle_since = role.idle_since or now
            elif role.idle_since is not None and (v.servers or role.phase != _H.HYPERVISOR):
                role.idle_since = None
        for d in plan(views, now, link.policy):
            start_conversion(session, engine, ctx.queue, roles[d.host], d.to, d.reason, now)
    return Outcome(requeue_after=POOL_TICK_S)


@reconciler("hostrole")
def reconcile_host_role(ctx: Context, host_id: str) -> Outcome:
    """Carry a pool host's conversion one step further."""
    link = ctx.ironic
    if link is None:
        return Outcome()
    with ctx.db.read() as session:
        role = session.get(HostRole, host_id)
        if role is None:
            return Outcome()
        phase, node_id = role.phase, role.host.node_id or ""
    if phase == _H.TO_HYPERVISOR:
        return _to_hypervisor(ctx, link, host_id, node_id)
    if phase == _H.DRAINING:
        return _drain(ctx, host_id)
    if phase == _H.TO_BAREMETAL:
        return _to_baremetal(ctx, link, host_id, node_id)
    return Outcome()


def seconds_since(iso: object, now: datetime) -> float:
    """Seconds from a time stored in a status (ISO text) to ``now``; 0 when there is none."""
    if not isinstance(iso, str):
        return 0.0
    try:
        return max(0.0, (now - datetime.fromisoformat(iso)).total_seconds())
    except ValueError:
        return 0.0


def _fail(ctx: Context, host_id: str, reason: str) -> Outcome:
    with ctx.booking.transaction(credits.CREDITS_LOCK) as (session, engine):
        role = session.get(HostRole, host_id)
        if role is not None:
            move(session, role, _H.ERROR, reason)
            session.flush()
            engine.set_host(host_info(role.host))
    return Outcome()


def _say(ctx: Context, host_id: str, reason: str, **status: object) -> None:
    """Record a step of a conversion (an event only when the reason changes)."""
    with ctx.db.write() as session:
        role = session.get(HostRole, host_id)
        if role is None:
            return
        if status:
            role.status = {**role.status, **status}
        if role.phase_reason != reason:
            note(session, role, reason)


def _to_hypervisor(ctx: Context, link: IronicLink, host_id: str, node_id: str) -> Outcome:
    hv = hypervisor_instance(host_id)
    node = link.client.node(node_id)
    if node is None:
        return _fail(ctx, host_id, f"Ironic has no node {node_id} any more")
    now = ctx.booking.clock.now()
    with ctx.db.read() as session:
        role = session.get(HostRole, host_id)
        if role is None or role.phase != _H.TO_HYPERVISOR:
            return Outcome(requeue_after=0)
        status, name = dict(role.status), role.host.name
    if seconds_since(status.get("started_at"), now) > link.settings.deploy_timeout.total_seconds():
        return _fail(
            ctx,
            host_id,
            f"Ironic did not deploy the hypervisor within "
            f"{link.settings.deploy_timeout.total_seconds():.0f} s (node is "
            f"{node.provision_state})",
        )
    key = instance_key(node.instance_uuid)
    if key and key != hv:
        return _fail(
            ctx, host_id, f"node {node_id} carries instance {key}, not this host's hypervisor"
        )
    if key == hv and node.provision_state == "active" and not node.busy:
        return _became_hypervisor(ctx, host_id, now, status)
    if key == hv and node.provision_state in FAILED_STATES and not node.busy:
        attempts = int(status.get("attempts", 0))
        why = f"Ironic: {node.provision_state}: {node.last_error or 'no detail'}"
        if attempts >= link.settings.retries:
            return _fail(ctx, host_id, f"{why} (after {attempts + 1} attempts)")
        link.client.recover(node_id)
        _say(
            ctx,
            host_id,
            f"{why}; Ironic tears it down and cleans it, then it is deployed again "
            f"(retry {attempts + 1} of {link.settings.retries})",
            attempts=attempts + 1,
        )
        return Outcome(requeue_after=POLL_S)
    # Ours but still available: a deploy half done (Ironic took the instance, then failed
    # or went away before the deploy call) is started again below, not waited for.
    if node.busy or (key == hv and node.provision_state != "available"):
        return Outcome(requeue_after=POLL_S)
    if node.maintenance:
        _say(ctx, host_id, f"waiting: node in maintenance ({node.maintenance_reason or '-'})")
        return Outcome(requeue_after=WAIT_S)
    if node.provision_state != "available":
        _say(ctx, host_id, f"waiting for Ironic: node is {node.provision_state}")
        return Outcome(requeue_after=POLL_S if node.provision_state in CLEANING_STATES else WAIT_S)
    try:
        link.client.deploy(
            node_id,
            hv,
            image="hypervisor",
            hostname=name,
            meta={"ecliptic_role": "hypervisor", "ecliptic_host": name},
        )
    except (NodeLocked, NodeBusy):
        return Outcome(requeue_after=LOCKED_S)
    faults.point("hosts.to_hypervisor.after_deploy")
    _say(
        ctx,
        host_id,
        f"Ironic deploys the hypervisor image on node {node_id}",
        deploy_started_at=now.isoformat(),
    )
    return Outcome(requeue_after=POLL_S)


def _became_hypervisor(
    ctx: Context, host_id: str, now: datetime, status: dict[str, object]
) -> Outcome:
    took = seconds_since(status.get("started_at"), now)
    ironic_took = seconds_since(status.get("deploy_started_at"), now)
    with ctx.booking.transaction(credits.CREDITS_LOCK) as (session, engine):
        role = session.get(HostRole, host_id)
        if role is None or role.phase != _H.TO_HYPERVISOR:
            return Outcome()
        role.status = {**role.status, "built_s": round(took, 3), "deploy_s": round(ironic_took, 3)}
        record_build(session, took)
        move(
            session,
            role,
            _H.HYPERVISOR,
            f"a hypervisor now: VMs are scheduled onto it (built in {took:.1f} s, Ironic's "
            f"deploy {ironic_took:.1f} s); it was converted because {role.spec.get('why', '-')}",
        )
        session.flush()
        engine.set_host(host_info(role.host))
        # Servers placed on it while it was built were waiting for it.
        for sid in session.scalars(select(Server.id).where(Server.host_id == host_id)):
            ctx.queue.enqueue(session, "server", sid)
    return Outcome()


def _drain(ctx: Context, host_id: str) -> Outcome:
    """Move every server off a draining hypervisor; when none is left, hand it back (or
    keep it drained, when an operator asked for a drain only)."""
    with ctx.booking.transaction(credits.CREDITS_LOCK) as (session, engine):
        role = session.get(HostRole, host_id)
        if role is None or role.phase != _H.DRAINING:
            return Outcome()
        now = ctx.booking.clock.now()
        name = role.host.name
        why = f"host {name} is drained ({role.spec.get('why', '-')})"
        waiting = []
        for srv in live_servers_on(session, host_id):
            if srv.kind == "baremetal":
                continue  # placed on it for when it is bare metal again: it waits
            held = relocate(session, engine, ctx.queue, srv, now, why=why)
            if held:
                waiting.append(held)
        session.flush()
        faults.point("hosts.drain.after_relocate")
        moving = [
            sid
            for sid, spec in session.execute(
                select(Server.id, Server.spec).where(Server.phase != ServerPhase.DELETING)
            )
            if (spec or {}).get("moving_from") == name
        ]
        leaving = session.scalar(
            select(Server.id).where(
                Server.host_id == host_id,
                Server.phase == ServerPhase.DELETING,
                Server.kind != "baremetal",
            )
        )
        if waiting or moving or leaving:
            if waiting:
                reason = "draining: " + "; ".join(waiting[:3])
            else:
                reason = f"draining: {len(moving)} server(s) moving to other hypervisors"
            if role.phase_reason != reason:
                note(session, role, reason)
            return Outcome(requeue_after=WAIT_S if waiting else POLL_S * 4)
        if role.spec.get("then") == "drained":
            if not role.status.get("drained"):
                role.status = {**role.status, "drained": True}
                note(
                    session,
                    role,
                    "drained: no server left and none will be placed on it; "
                    "'ecliptic host convert "
                    f"{name} --to baremetal' hands it back, '--to hypervisor' takes VMs again",
                )
            return Outcome()
        move(session, role, _H.TO_BAREMETAL, f"no server left on it: Ironic undeploys {name}")
        session.flush()
        engine.set_host(host_info(role.host))
        ctx.queue.enqueue(session, "hostrole", host_id)
    return Outcome()


def _to_baremetal(ctx: Context, link: IronicLink, host_id: str, node_id: str) -> Outcome:
    hv = hypervisor_instance(host_id)
    node = link.client.node(node_id)
    if node is None:
        return _fail(ctx, host_id, f"Ironic has no node {node_id} any more")
    key = instance_key(node.instance_uuid)
    if node.provision_state == "clean failed" and not node.busy:
        return _fail(
            ctx,
            host_id,
            f"Ironic: clean failed: {node.last_error or 'no detail'}; the node stays out of "
            "the pool until an operator recovers it (baremetal node manage, then provide)",
        )
    if key == hv:
        if node.busy or node.provision_state in CLEANING_STATES:
            return Outcome(requeue_after=POLL_S)
        if node.provision_state == "available":
            link.client.release(node_id, hv)
            return Outcome(requeue_after=0)
        try:
            link.client.undeploy(node_id, hv)
        except (NodeLocked, NodeBusy):
            return Outcome(requeue_after=LOCKED_S)
        faults.point("hosts.to_baremetal.after_undeploy")
        _say(ctx, host_id, f"Ironic undeploys and cleans node {node_id}")
        return Outcome(requeue_after=POLL_S)
    if key:
        return _fail(ctx, host_id, f"node {node_id} carries instance {key}, not ours")
    if node.busy or node.provision_state != "available":
        return Outcome(requeue_after=POLL_S)
    now = ctx.booking.clock.now()
    with ctx.booking.transaction(credits.CREDITS_LOCK) as (session, engine):
        role = session.get(HostRole, host_id)
        if role is None or role.phase != _H.TO_BAREMETAL:
            return Outcome()
        took = seconds_since(role.status.get("started_at"), now)
        role.idle_since = None
        role.status = {k: v for k, v in role.status.items() if k not in ("drained", "attempts")} | {
            "handed_back_s": round(took, 3)
        }
        move(
            session,
            role,
            _H.BAREMETAL,
            f"bare metal again: Ironic says available (handed back in {took:.1f} s); "
            f"it was converted because {role.spec.get('why', '-')}",
        )
        session.flush()
        engine.set_host(host_info(role.host))
        ctx.queue.enqueue(session, "pool", POOL)
        for sid in session.scalars(select(Server.id).where(Server.host_id == host_id)):
            ctx.queue.enqueue(session, "server", sid)
    return Outcome()


def host_ready_for(session_host: Host, kind: str) -> str:
    """Why a server of ``kind`` cannot be built on this host yet; empty when it can.

    A VM needs its pool host to be a hypervisor; a bare-metal server needs it to be bare
    metal (hosts outside the pool take either)."""
    role = session_host.pool
    if role is None:
        return ""
    if kind == "baremetal":
        if role.phase == _H.BAREMETAL:
            return ""
        return f"waiting for host {session_host.name} to return to bare metal ({role.phase})"
    if role.phase == _H.HYPERVISOR:
        return ""
    if role.phase == _H.DRAINING:
        return f"host {session_host.name} is being drained; the server will be moved"
    return f"waiting for host {session_host.name} to become a hypervisor ({role.phase})"
