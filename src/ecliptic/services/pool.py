"""Bare metal through Ironic, and the bare-metal-or-hypervisor pool.

Hosts come from Ironic's nodes (``sync_nodes``, at every sync): capacity and properties
from the node, the host's state from the node's (maintenance heals the leases on it like a
host that went down). Hosts of the pool (those the operator's ``ECLIPTIC_HYPERVISOR_POOL``
filter matches) carry a ``HostRole``: each is either bare metal (offered for bare-metal
servers and host leases) or a hypervisor (VM-kind servers are scheduled onto it), and
moves between the two through reconciled conversions (``reconcile/hosts.py``).

The policy (``plan``, pure) decides conversions from the bookings: a host with VM work
booked on it from now or within the lead time (the measured build time plus a margin)
becomes a hypervisor; a hypervisor whose host is booked whole (a host lease, a bare-metal
server) is drained and handed back; an idle hypervisor goes back after the idle time,
keeping ``spare`` empty ones. The reservation engine never books one host for both kinds at
once (a whole-host booking takes all of its room), so following the bookings never breaks
a reservation. Every decision is an event on the host with its reason.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecliptic.backends.base import HostRecord
from ecliptic.errors import Conflict, InvalidInput, NotFound
from ecliptic.phases import HostRolePhase, ServerPhase
from ecliptic.scheduler.engine import Engine
from ecliptic.scheduler.filters import FilterError, compile_filter, host_properties
from ecliptic.services import credits
from ecliptic.services.booking import Booking, host_info
from ecliptic.services.caller import Caller
from ecliptic.services.catalogue import fill_host
from ecliptic.services.leases import LIVE, apply_host_state
from ecliptic.services.servers import relocate
from ecliptic.store.models import Event, Host, HostRole, Lease, LeaseAllocation, Meta, Server
from ecliptic.store.transitions import created, move, note
from ecliptic.store.workqueue import WorkQueue

_HV_NAMESPACE = uuid.UUID("6f1d7d3e-5b0a-4f3c-9d62-0c5e2a7b9e41")
BUILD_TIMES = "pool_build_seconds"
"""Meta key: the last few hypervisor build times (JSON list of seconds), for the lead time."""
DEFAULT_BUILD_S = 30.0
"""The build time assumed before any was measured."""
KEEP_BUILDS = 5
POOL = "pool"
"""Object id of the pool's work item (kind ``pool``)."""
SYNC = "ironic"
"""Object id of the Ironic sync's work item (kind ``ironic``)."""
_H = HostRolePhase


def instance_key(value: str | None) -> str:
    """An instance UUID as Ecliptic compares them: 32 lowercase hex digits, no dashes."""
    return (value or "").replace("-", "").lower()


def hypervisor_instance(host_id: str) -> str:
    """The instance UUID of a host's hypervisor deployment: the same for every conversion of
    that host, so a deploy repeated after a crash is recognised as ours, never doubled."""
    return uuid.uuid5(_HV_NAMESPACE, f"hypervisor:{host_id}").hex


@dataclass(frozen=True)
class PoolPolicy:
    """The operator's pool settings (``ECLIPTIC_HYPERVISOR_POOL`` and friends)."""

    pool: str = ""
    """Filter over host properties selecting the pool's hosts; empty: no pool."""
    spare: int = 0
    """Empty hypervisors kept ready."""
    idle: timedelta = timedelta(minutes=10)
    """Idle time after which a hypervisor goes back to bare metal."""
    margin: timedelta = timedelta(seconds=60)
    """Added to the measured build time to convert ahead of a booking's start."""


def check_pool_filter(text: str) -> None:
    """Refuse a pool filter that does not parse, saying where (at start, not at first use)."""
    if not text:
        return
    try:
        compile_filter(text)
    except FilterError as exc:
        raise InvalidInput(f"ECLIPTIC_HYPERVISOR_POOL={text!r}: {exc}") from None


def in_pool(host: Host, pool: str) -> bool:
    """Whether the operator's pool filter selects this (Ironic) host."""
    if not pool or host.source != "ironic":
        return False
    return bool(compile_filter(pool)(host_properties(host_info(host))))


# ---------------------------------------------------------------------------------- sync


@dataclass(frozen=True)
class NodeView:
    """What the sync needs of one Ironic node (``backends.ironic`` gives the rest)."""

    uuid: str
    record: HostRecord | None
    state: str
    reason: str
    instance: str
    """Its instance UUID, normalised (``instance_key``); empty when it carries none."""
    provision_state: str
    unfit: str = ""
    """Why the node cannot be a host (``record`` is then None); see ``backends.ironic``."""


def ours(session: Session) -> set[str]:
    """Instance keys Ecliptic deploys: its servers on Ironic hosts and its hypervisors."""
    keys = {
        instance_key(sid)
        for sid in session.scalars(
            select(Server.id).join(Host, Server.host_id == Host.id).where(Host.source == "ironic")
        )
    }
    keys.update(hypervisor_instance(hid) for hid in session.scalars(select(HostRole.id)))
    return keys


def sync_nodes(
    session: Session, engine: Engine, queue: WorkQueue, nodes: Sequence[NodeView], pool: str
) -> list[str]:
    """Make the Ironic hosts match Ironic's nodes; returns a line per change, for the log.

    New nodes become hosts; a node in maintenance (or failed, or not provided) takes its
    host out of scheduling and heals the leases on it; a node deleted from Ironic retires
    its host. Hosts the pool filter selects get a place in the pool (bare metal at first,
    or a hypervisor when Ironic holds our hypervisor deployment on it)."""
    report: list[str] = []
    by_node = {h.node_id: h for h in session.scalars(select(Host).where(Host.source == "ironic"))}
    names = {h.name: h for h in session.scalars(select(Host))}
    mine = ours(session)
    changed_hosts: list[Host] = []
    for node in nodes:
        host = by_node.pop(node.uuid, None)
        if node.record is None:
            if host is None:
                continue
            why = node.unfit or "lacks cpus or memory_mb"
            state, reason = "down", f"Ironic: node {node.uuid} cannot be a host: {why}"
        else:
            if host is None:
                name = node.record.name
                if name in names:
                    name = f"node-{node.uuid.replace('-', '')[:8]}"
                if name in names:
                    continue
                host = Host(name=name, source="ironic", node_id=node.uuid, state="down")
                session.add(host)
                names[name] = host
                report.append(f"host {name}: enrolled from Ironic node {node.uuid}")
            before = (host.vcpus, host.memory_mb, host.disk_gb, host.gpus, host.properties)
            fill_host(host, node.record)
            if before != (host.vcpus, host.memory_mb, host.disk_gb, host.gpus, host.properties):
                changed_hosts.append(host)
            state, reason = node.state, node.reason
            if node.instance and node.instance not in mine and state == "up":
                state = "down"
                reason = f"Ironic: deployed outside Ecliptic (instance {node.instance})"
        if (host.state, host.state_reason) != (state, reason):
            session.flush()
            lines = apply_host_state(session, engine, queue, host, state, reason)
            report.append(f"host {host.name}: {state}" + (f" ({reason})" if reason else ""))
            report.extend(lines)
        elif host in changed_hosts:
            session.flush()
            engine.set_host(host_info(host))
    for gone in by_node.values():
        if gone.state != "retired":
            apply_host_state(session, engine, queue, gone, "retired", "deleted from Ironic")
            report.append(f"host {gone.name}: retired (its node left Ironic)")
    session.flush()
    report.extend(_join_pool(session, engine, queue, pool, {n.uuid: n for n in nodes}))
    return report


def _join_pool(
    session: Session, engine: Engine, queue: WorkQueue, pool: str, nodes: dict[str, NodeView]
) -> list[str]:
    """Give the pool's hosts their ``HostRole``; hosts that left the pool lose it (once
    they are bare metal again)."""
    report = []
    for host in session.scalars(select(Host).where(Host.source == "ironic")):
        role = host.pool
        wanted = host.state != "retired" and in_pool(host, pool)
        if wanted and role is None:
            node = nodes.get(host.node_id or "")
            hv = node is not None and node.instance == hypervisor_instance(host.id)
            phase = _H.HYPERVISOR if node and hv and node.provision_state == "active" else None
            if hv and phase is None:
                phase = _H.TO_HYPERVISOR  # a deployment of ours in flight: see it through
            role = HostRole(id=host.id, phase=phase or _H.BAREMETAL, spec={}, status={})
            session.add(role)
            session.flush()
            session.refresh(host)
            created(session, role, f"joined the pool as {role.phase.lower()}")
            engine.set_host(host_info(host))
            queue.enqueue(session, "hostrole", host.id)
            report.append(f"host {host.name}: joined the pool ({role.phase})")
        elif not wanted and role is not None and role.phase == _H.BAREMETAL:
            session.delete(role)
            session.flush()
            session.expire(host, ["pool"])
            engine.set_host(host_info(host))
            report.append(f"host {host.name}: left the pool (bare metal only now)")
    return report


# ------------------------------------------------------------------------------ policy


@dataclass(frozen=True)
class PoolHostView:
    """One pool host as the policy sees it."""

    name: str
    phase: str
    hold: str
    up: bool
    servers: int
    idle_since: datetime | None
    vm_need: str
    """Why it must be a hypervisor now (VM work booked from now or within the lead time,
    VM servers on it); empty when nothing needs it."""
    bm_need: str
    """Why it must be bare metal now (booked whole, a bare-metal server); empty if nothing."""


@dataclass(frozen=True)
class Decision:
    """A conversion the policy starts."""

    host: str
    to: str
    """``hypervisor`` or ``baremetal``."""
    reason: str


def plan(hosts: Sequence[PoolHostView], now: datetime, policy: PoolPolicy) -> list[Decision]:
    """What to convert now (pure): bookings first, then idle hypervisors, then spares."""
    out: list[Decision] = []
    for h in hosts:
        if not h.up:
            continue
        if h.phase == _H.BAREMETAL and h.vm_need and not h.bm_need:
            held = " (over the operator's bare-metal hold: bookings come first)" if h.hold else ""
            out.append(Decision(h.name, "hypervisor", h.vm_need + held))
        elif h.phase == _H.HYPERVISOR and h.bm_need and not h.vm_need:
            out.append(Decision(h.name, "baremetal", h.bm_need))
        # A hold that bookings overrode comes back once nothing needs the other role.
        elif h.phase == _H.HYPERVISOR and h.hold == "baremetal" and not h.vm_need:
            out.append(Decision(h.name, "baremetal", "the operator's bare-metal hold"))
        elif h.phase == _H.BAREMETAL and h.hold == "hypervisor" and not h.bm_need:
            out.append(Decision(h.name, "hypervisor", "the operator's hypervisor hold"))
    taken = {d.host for d in out}
    empty = [
        h
        for h in hosts
        if h.up
        and h.name not in taken
        and h.phase == _H.HYPERVISOR
        and not h.servers
        and not h.vm_need
        and not h.bm_need
        and h.hold != "drained"
    ]
    spare_now = len(empty) + sum(
        1 for h in hosts if h.phase == _H.TO_HYPERVISOR and not h.vm_need and not h.servers
    )
    idle = sorted(
        (h for h in empty if not h.hold and h.idle_since and now - h.idle_since >= policy.idle),
        key=lambda h: (h.idle_since or now, h.name),
    )
    surplus = max(0, spare_now - policy.spare)
    for h in idle[:surplus]:
        since = h.idle_since.strftime("%H:%M:%S UTC") if h.idle_since else "?"
        out.append(Decision(h.name, "baremetal", f"idle since {since} (over {_secs(policy.idle)})"))
    if spare_now < policy.spare:
        free = [
            h
            for h in hosts
            if h.up
            and h.name not in taken
            and h.phase == _H.BAREMETAL
            and not h.hold
            and not h.bm_need
            and not h.servers
        ]
        for h in sorted(free, key=lambda h: h.name)[: policy.spare - spare_now]:
            out.append(
                Decision(
                    h.name,
                    "hypervisor",
                    f"keep {policy.spare} spare hypervisor(s) ready ({spare_now} now)",
                )
            )
            spare_now += 1
    return out


def _secs(d: timedelta) -> str:
    s = int(d.total_seconds())
    return f"{s // 60} min" if s >= 120 and s % 60 == 0 else f"{s} s"


def lead_time(session: Session, policy: PoolPolicy) -> timedelta:
    """How far ahead of a booking's start a host is converted: the longest recent build
    (measured; ``DEFAULT_BUILD_S`` before the first) plus the operator's margin."""
    return timedelta(seconds=max(build_times(session) or [DEFAULT_BUILD_S])) + policy.margin


def build_times(session: Session) -> list[float]:
    """The last few hypervisor build times, seconds."""
    row = session.get(Meta, BUILD_TIMES)
    try:
        return [float(x) for x in json.loads(row.value)] if row else []
    except (ValueError, TypeError):
        return []


def record_build(session: Session, seconds: float) -> None:
    """Remember a hypervisor build time (the policy's lead time follows it)."""
    times = [*build_times(session), round(seconds, 3)][-KEEP_BUILDS:]
    row = session.get(Meta, BUILD_TIMES)
    if row is None:
        session.add(Meta(key=BUILD_TIMES, value=json.dumps(times)))
    else:
        row.value = json.dumps(times)


def pool_views(session: Session, now: datetime, lead: timedelta) -> list[PoolHostView]:
    """Every pool host with what needs it, for ``plan``."""
    roles = list(session.scalars(select(HostRole).join(Host, HostRole.id == Host.id)))
    if not roles:
        return []
    names = {r.host.name: r for r in roles}
    vm_need: dict[str, list[str]] = {}
    bm_need: dict[str, list[str]] = {}
    rows = session.execute(
        select(Lease.name, Lease.start_at, Lease.end_at, LeaseAllocation)
        .join(LeaseAllocation, LeaseAllocation.lease_id == Lease.id)
        .where(
            LeaseAllocation.host.in_(list(names)),
            Lease.phase.in_(list(LIVE)),
            Lease.start_at <= now + lead,
            Lease.end_at > now,
        )
    )
    for lname, start, _end, alloc in rows:
        when = "now" if start <= now else f"at {start:%H:%M} UTC"
        if alloc.amount.get("whole_host"):
            bm_need.setdefault(alloc.host, []).append(f"lease '{lname}' books it whole {when}")
        else:
            vm_need.setdefault(alloc.host, []).append(f"lease '{lname}' has VM slots on it {when}")
    counts: dict[str, list[int]] = {}
    for hname, kind in session.execute(
        select(Host.name, Server.kind)
        .join(Host, Server.host_id == Host.id)
        .where(Host.name.in_(list(names)))
    ):
        c = counts.setdefault(hname, [0, 0])
        c[0 if kind == "baremetal" else 1] += 1
    for hname, (bm, vm) in counts.items():
        if bm:
            bm_need.setdefault(hname, []).append(f"{bm} bare-metal server(s) on it")
        if vm:
            vm_need.setdefault(hname, []).append(f"{vm} VM server(s) on it")
    out = []
    for hname, role in sorted(names.items()):
        out.append(
            PoolHostView(
                name=hname,
                phase=role.phase,
                hold=role.hold,
                up=role.host.state == "up",
                servers=sum(counts.get(hname, [0, 0])),
                idle_since=role.idle_since,
                vm_need="; ".join(vm_need.get(hname, [])),
                bm_need="; ".join(bm_need.get(hname, [])),
            )
        )
    return out


def start_conversion(
    session: Session,
    engine: Engine,
    queue: WorkQueue,
    role: HostRole,
    to: str,
    reason: str,
    now: datetime,
    *,
    then: str = "baremetal",
) -> None:
    """Begin converting a pool host (``to`` hypervisor or baremetal), recording why."""
    if to == "hypervisor":
        # A draining host still is a hypervisor: it is drained no further.
        target = _H.HYPERVISOR if role.phase == _H.DRAINING else _H.TO_HYPERVISOR
    elif role.phase in (_H.HYPERVISOR, _H.ERROR, _H.DRAINING):
        target = _H.DRAINING  # servers may be on it: moved away before Ironic undeploys it
    else:
        target = _H.TO_BAREMETAL
    role.spec = {"to": to, "then": then, "why": reason}
    role.generation += 1
    role.status = {
        k: v
        for k, v in role.status.items()
        if k not in ("attempts", "deploy_started_at", "drained")
    } | {"started_at": now.isoformat()}
    if not move(session, role, target, reason):
        note(session, role, reason)
    session.flush()
    session.refresh(role.host)
    engine.set_host(host_info(role.host))
    queue.enqueue(session, "hostrole", role.id)


# ------------------------------------------------------------------------------ operators


def find_pool_host(session: Session, name: str) -> HostRole:
    """A pool host by name, or a NotFound that says what the pool is."""
    host = session.scalar(select(Host).where(Host.name == name))
    if host is None:
        raise NotFound(f"no host '{name}'")
    if host.pool is None:
        where = "from the inventory file" if host.source == "inventory" else "from Ironic"
        raise InvalidInput(
            f"host '{name}' ({where}) is not in the bare-metal-or-hypervisor pool: only the "
            "Ironic hosts that ECLIPTIC_HYPERVISOR_POOL selects are converted"
        )
    return host.pool


def booked_in_effect(
    session: Session, host: str, now: datetime, lead: timedelta, *, whole: bool
) -> list[str]:
    """Live leases with whole-host (``whole``) or VM-slot bookings on ``host`` from now or
    within the lead time: a conversion that would break them is refused."""
    out = []
    for lname, start, end, amount in session.execute(
        select(Lease.name, Lease.start_at, Lease.end_at, LeaseAllocation.amount)
        .join(LeaseAllocation, LeaseAllocation.lease_id == Lease.id)
        .where(
            LeaseAllocation.host == host,
            Lease.phase.in_(list(LIVE)),
            Lease.start_at <= now + lead,
            Lease.end_at > now,
        )
    ):
        if bool(amount.get("whole_host")) == whole:
            out.append(f"'{lname}' ({start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC)")
    return sorted(set(out))


def convert(
    booking: Booking, queue: WorkQueue, caller: Caller, name: str, to: str, policy: PoolPolicy
) -> HostRole:
    """An operator converts a pool host: ``hypervisor``, ``baremetal``, or ``auto`` (give
    it back to the policy). The choice is held (the policy keeps it) until ``auto``;
    bookings still come first, and a conversion that would break one is refused."""
    caller.require_admin("convert hosts")
    if to not in ("hypervisor", "baremetal", "auto"):
        raise InvalidInput(f"convert to 'hypervisor', 'baremetal' or 'auto', not {to!r}")
    who = f"operator {caller.user_name}"
    with booking.transaction(credits.CREDITS_LOCK) as (session, engine):
        role = find_pool_host(session, name)
        now = booking.clock.now()
        lead = lead_time(session, policy)
        if to == "auto":
            if role.hold:
                role.hold = ""
                note(session, role, f"{who} gave it back to the policy")
                session.flush()
                engine.set_host(host_info(role.host))
            queue.enqueue(session, "pool", POOL)
            return role
        if to == "baremetal":
            booked = booked_in_effect(session, name, now, lead, whole=False)
            if booked:
                raise Conflict(
                    f"host '{name}' has VM slots of lease(s) {', '.join(booked)} booked on it "
                    "now or within the lead time: converting it would break them; try after "
                    "they end"
                )
            role.hold = "baremetal"
            if role.phase == _H.TO_HYPERVISOR:
                _move_waiting_vms(session, engine, queue, role, now, f"asked by {who}")
            if role.phase not in (_H.BAREMETAL, _H.TO_BAREMETAL):
                start_conversion(session, engine, queue, role, "baremetal", f"asked by {who}", now)
            else:
                note(session, role, f"{who} holds it as bare metal")
        else:
            booked = booked_in_effect(session, name, now, lead, whole=True)
            bm = session.scalar(
                select(Server.name).where(Server.host_id == role.id, Server.kind == "baremetal")
            )
            if booked or bm:
                what = f"lease(s) {', '.join(booked)}" if booked else f"bare-metal server '{bm}'"
                raise Conflict(
                    f"host '{name}' is held whole by {what}: it can become a hypervisor "
                    "once that ends"
                )
            role.hold = "hypervisor"
            if role.phase not in (_H.HYPERVISOR, _H.TO_HYPERVISOR):
                start_conversion(session, engine, queue, role, "hypervisor", f"asked by {who}", now)
            else:
                note(session, role, f"{who} holds it as a hypervisor")
        session.flush()
        engine.set_host(host_info(role.host))
        return role


def _move_waiting_vms(
    session: Session, engine: Engine, queue: WorkQueue, role: HostRole, now: datetime, why: str
) -> None:
    """Place elsewhere the VMs waiting for a host that is to be bare metal before it became a
    hypervisor (its hold already keeps VMs off it); refused when one finds no room."""
    session.flush()
    engine.set_host(host_info(role.host))
    name = role.host.name
    stuck = [
        held
        for srv in live_servers_on(session, role.id)
        if srv.kind != "baremetal"
        and (
            held := relocate(
                session,
                engine,
                queue,
                srv,
                now,
                why=f"host {name} is to be bare metal ({why}) before it became a hypervisor",
            )
        )
    ]
    if stuck:
        raise Conflict(
            f"host '{name}' is being made a hypervisor for servers waiting for it, and "
            f"{'; '.join(stuck)}: it can be bare metal once they are gone or room is made"
        )


def drain(
    booking: Booking, queue: WorkQueue, caller: Caller, name: str, policy: PoolPolicy
) -> HostRole:
    """An operator drains a hypervisor: no new VMs go to it, and its servers are moved to
    other hypervisors (cold migration). It then stays a drained hypervisor (held) until
    ``convert --to baremetal`` hands it back or ``convert --to hypervisor`` takes VMs again."""
    caller.require_admin("drain hosts")
    with booking.transaction(credits.CREDITS_LOCK) as (session, engine):
        role = find_pool_host(session, name)
        if role.phase not in (_H.HYPERVISOR, _H.DRAINING):
            raise Conflict(f"host '{name}' is {role.phase}, not a hypervisor: nothing to drain")
        booked = booked_in_effect(
            session, name, booking.clock.now(), lead_time(session, policy), whole=False
        )
        if booked:
            raise Conflict(
                f"host '{name}' holds VM slots of lease(s) {', '.join(booked)}: their servers "
                "must stay on it until they end"
            )
        role.hold = "drained"
        who = f"operator {caller.user_name}"
        if role.phase == _H.HYPERVISOR:
            start_conversion(
                session,
                engine,
                queue,
                role,
                "baremetal",
                f"drain asked by {who}",
                booking.clock.now(),
                then="drained",
            )
        else:
            role.spec = {**role.spec, "then": "drained"}
        session.flush()
        engine.set_host(host_info(role.host))
        return role


@dataclass(frozen=True)
class PoolRow:
    """One pool host for the operator's table."""

    name: str
    node_id: str | None
    state: str
    phase: str
    reason: str
    hold: str
    servers: int
    vm_need: str
    bm_need: str
    updated_at: datetime


def pool_status(booking: Booking, caller: Caller, policy: PoolPolicy) -> list[PoolRow]:
    """The pool: each host's role, conversion and what needs it (administrators only)."""
    caller.require_admin("see the hypervisor pool")
    with booking.db.read() as session:
        now = booking.clock.now()
        views = {v.name: v for v in pool_views(session, now, lead_time(session, policy))}
        out = []
        for role in session.scalars(select(HostRole)):
            v = views.get(role.host.name)
            out.append(
                PoolRow(
                    name=role.host.name,
                    node_id=role.host.node_id,
                    state=role.host.state,
                    phase=role.phase,
                    reason=role.phase_reason,
                    hold=role.hold,
                    servers=v.servers if v else 0,
                    vm_need=v.vm_need if v else "",
                    bm_need=v.bm_need if v else "",
                    updated_at=role.updated_at,
                )
            )
        return sorted(out, key=lambda r: r.name)


def host_events(booking: Booking, caller: Caller, name: str, limit: int = 100) -> list[Event]:
    """What happened to a host's role, oldest first (administrators only)."""
    caller.require_admin("see host events")
    with booking.db.read() as session:
        host = session.scalar(select(Host).where(Host.name == name))
        if host is None:
            raise NotFound(f"no host '{name}'")
        rows = list(
            session.scalars(
                select(Event)
                .where(Event.object_kind == "hostrole", Event.object_id == host.id)
                .order_by(Event.id.desc())
                .limit(limit)
            )
        )
        return rows[::-1]


def live_servers_on(session: Session, host_id: str) -> list[Server]:
    """The servers placed on a host that are not on their way out."""
    return list(
        session.scalars(
            select(Server)
            .where(Server.host_id == host_id, Server.phase != ServerPhase.DELETING)
            .order_by(Server.created_at, Server.id)
        )
    )


class IronicNotConfigured(Conflict):
    """The pool was asked about on an instance that has no Ironic."""

    code = "ironic_not_configured"
    title = "Ironic not configured"


def require_policy(policy: PoolPolicy | None) -> PoolPolicy:
    """The pool's policy, or a refusal saying how to give this instance an Ironic."""
    if policy is None:
        raise IronicNotConfigured(
            "this Ecliptic has no Ironic, so no bare-metal-or-hypervisor pool: set "
            "ECLIPTIC_IRONIC_URL (and ECLIPTIC_HYPERVISOR_POOL to choose the pool's hosts) "
            "and restart; see docs/baremetal.md"
        )
    return policy
