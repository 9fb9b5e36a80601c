"""Servers: create (placed best-fit, ports allocated), list, show, delete, log, exec."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, delete, or_, select
from sqlalchemy.orm import Session, defer, joinedload, raiseload, selectinload

from ecliptic.backends.base import Backend, NotFoundInBackend, RunResult
from ecliptic.errors import Conflict, EclipticError, Forbidden, InvalidInput, NotFound
from ecliptic.phases import LeasePhase, PortPhase, ServerPhase
from ecliptic.scheduler.engine import Engine
from ecliptic.scheduler.model import (
    Allocation,
    Amount,
    FlavorRequest,
    HostRequest,
    NoFit,
    Placement,
    Preemptible,
    Request,
)
from ecliptic.services import metering, quotas
from ecliptic.services import security_groups as sg
from ecliptic.services.booking import (
    FOREVER,
    Booking,
    minute,
    server_amount,
    server_booking_id,
)
from ecliptic.services.caller import Caller
from ecliptic.services.catalogue import find_flavor
from ecliptic.services.kinds import NoCapacity, kind_of
from ecliptic.services.leases import find_lease
from ecliptic.services.networks import (
    IPAM_LOCK,
    UsedRanges,
    allocate_port,
    default_network,
    find_network,
    find_port,
    not_a_platforms,
)
from ecliptic.store.db import Database
from ecliptic.store.models import (
    DeletedServer,
    Event,
    Flavor,
    Host,
    Lease,
    Network,
    PlatformAccess,
    Port,
    Server,
)
from ecliptic.store.transitions import created, move, note
from ecliptic.store.workqueue import WorkQueue


class NotReady(Conflict):
    """The server is not in a phase where this works."""

    code = "not_ready"


@dataclass(frozen=True)
class NicRequest:
    """One interface asked for: on a network (new port) or an existing port."""

    network: str | None = None
    port: str | None = None
    vnic_type: str = "normal"


def find_server(session: Session, tenancy_id: str, ref: str) -> Server:
    """A server of the tenancy by name or id; others' servers do not exist."""
    srv = session.scalar(
        select(Server).where(
            Server.tenancy_id == tenancy_id, (Server.name == ref) | (Server.id == ref)
        )
    )
    if srv is None:
        raise NotFound(f"no server '{ref}' in this tenancy; see 'ecliptic server list'")
    return srv


@dataclass(frozen=True)
class Placing:
    """Where a new server should go and what holds its room."""

    host: str
    """Host name."""
    booking: Placement | None
    """For on-demand servers: the open-ended booking that holds the room."""


class ReservationOnly(EclipticError):
    """A flavor for reserved capacity asked for on demand."""

    code = "reservation_only"
    status = 409
    title = "Reserve it first"


def create_server(
    booking: Booking,
    queue: WorkQueue,
    caller: Caller,
    name: str,
    flavor: str,
    nics: list[NicRequest],
    used_elsewhere: UsedRanges = tuple,
    *,
    lease: str | None = None,
    reservation: str | None = None,
    preemptible: bool = False,
    image: str = "base",
    security_groups: list[str] | None = None,
) -> Server:
    """Place a server (on demand, preemptible, or inside a lease), allocate its ports, queue it.

    ``image`` is checked by the caller against the backend's images (``images.check_image``).
    """
    with booking.transaction(IPAM_LOCK) as (session, engine):
        return add_server(
            session,
            engine,
            booking,
            queue,
            caller,
            name,
            flavor,
            nics,
            used_elsewhere,
            lease=lease,
            reservation=reservation,
            preemptible=preemptible,
            image=image,
            security_groups=security_groups,
        )


def add_server(
    session: Session,
    engine: Engine,
    booking: Booking,
    queue: WorkQueue,
    caller: Caller,
    name: str,
    flavor: str,
    nics: list[NicRequest],
    used_elsewhere: UsedRanges = tuple,
    *,
    lease: str | None = None,
    reservation: str | None = None,
    preemptible: bool = False,
    image: str = "base",
    security_groups: list[str] | None = None,
    platform: dict[str, Any] | None = None,
) -> Server:
    """``create_server`` inside the caller's booking transaction (holding the IPAM lock), so
    that several servers are placed all or none (a platform's). ``platform`` (id, role,
    index) marks a platform's server."""
    tenancy_id = caller.require_tenancy()
    try:
        fl = find_flavor(session, flavor)
    except NotFound as exc:
        raise InvalidInput(
            exc.message, errors=[{"loc": ["body", "flavor"], "msg": exc.message}]
        ) from None
    if session.scalar(
        select(Server.id).where(Server.tenancy_id == tenancy_id, Server.name == name)
    ):
        raise Conflict(f"a server named '{name}' exists already in this tenancy")
    if preemptible and lease:
        raise InvalidInput(
            "a server is either preemptible or inside a lease, not both",
            errors=[{"loc": ["body", "preemptible"], "msg": "exclusive with lease"}],
        )
    if not lease and not preemptible:
        if fl.reservation_only:
            raise ReservationOnly(
                f"flavor '{fl.name}' runs only on reserved capacity: reserve it first "
                f"(ecliptic lease create NAME --flavor {fl.name} --duration 8h), then "
                f"create the server in it (--lease NAME), or run it --preemptible"
            )
        quotas.check_on_demand(session, tenancy_id, fl)
    srv = Server(
        tenancy_id=tenancy_id,
        name=name,
        flavor_id=fl.id,
        kind=fl.kind,
        vcpus=fl.vcpus,
        memory_mb=fl.memory_mb,
        disk_gb=fl.disk_gb,
        gpu_model=fl.gpu_model,
        gpus=fl.gpus,
        image=image,
        preemptible=preemptible,
        phase=ServerPhase.PENDING,
        phase_reason="waiting for a worker",
        created_by=caller.user_id,
        spec={"flavor": fl.name, "nics": [n.__dict__ for n in nics]}
        | ({"platform": platform} if platform else {}),
        platform_id=platform["id"] if platform else None,
        # The booking's clock, so the room it holds from now on starts where a rebuild
        # of the engine (from this column) says it does.
        created_at=booking.clock.now(),
    )
    session.add(srv)
    session.flush()
    now = minute(srv.created_at)
    if lease:
        lease_row = find_lease(session, tenancy_id, lease)
        place = placement_in_lease(session, lease_row, reservation, fl, srv)
        srv.lease_id, srv.reservation = lease_row.id, place.reservation
        host_name = place.host
    elif preemptible:
        host_name = placement_preemptible(engine, fl, now)
    else:
        host_name = placement_on_demand(engine, fl, srv.id, now)
    host_row = session.scalar(select(Host).where(Host.name == host_name))
    assert host_row is not None
    srv.host_id = host_row.id
    if fl.kind == "baremetal":
        srv.vcpus, srv.memory_mb, srv.disk_gb = (
            host_row.vcpus,
            host_row.memory_mb,
            host_row.disk_gb,
        )
        srv.gpus = sum(int(g["count"]) for g in host_row.gpus if g["model"] == fl.gpu_model)
    session.flush()
    session.refresh(srv)
    amount = server_amount(srv)
    if preemptible:
        engine.add_preemptible(Preemptible(srv.id, host_name, amount, now))
        held = engine.preemptible(srv.id)
        _keep_gpus(srv, held.amount if held is not None else amount)
    elif not lease:
        holding = Placement(now, FOREVER, (Allocation("server", host_name, amount, 1),))
        engine.book(server_booking_id(srv.id), holding)
        booked = engine.booking(server_booking_id(srv.id))
        _keep_gpus(srv, booked.allocations[0].amount if booked is not None else amount)
        # Room that preemptible servers backfill (past their minimum lifetime) is
        # anyone's: they make way, and this server is built once they are gone.
        victims = preempt(
            session,
            engine,
            queue,
            engine.victims(holding, now),
            grace_s=booking.preemptible_grace.total_seconds(),
            by=("server", srv.id),
            why=f"on-demand server '{name}' needs the room this preemptible server used on "
            "host {host}",
        )
        if victims:
            srv.spec = {**srv.spec, "after": victims}
        metering.start(session, srv, engine.hosts[host_name], booking.meter, now)
        if srv.metered_until is not None:
            queue.enqueue(
                session, "meter", metering.METER_OBJECT, delay=metering.HOUR.total_seconds()
            )
    _attach_nics(session, queue, srv, nics or [NicRequest()], used_elsewhere)
    groups = sg.resolve(session, tenancy_id, security_groups)
    session.flush()
    session.refresh(srv)
    sg.give_ports(session, srv.ports, groups)
    srv.spec = {**srv.spec, "security_groups": [g.name for g in groups]}
    # Its reconcile applies them before its interfaces exist; this is the safety net.
    sg.changed(session, queue, delay=1.0)
    what = "preemptible, " if preemptible else (f"in lease '{lease}', " if lease else "")
    created(session, srv, f"created {what}on host {host_name}")
    queue.enqueue(session, "server", srv.id)
    session.flush()
    session.refresh(srv)
    return srv


def _keep_gpus(srv: Server, held: Amount) -> None:
    """Remember which GPUs the engine gave a server outside leases (see server_amount)."""
    if held.gpu_units:
        srv.spec = {**srv.spec, "gpu_units": [list(u) for u in held.gpu_units]}


def _no_room(fl: Flavor, where: str = "") -> NoCapacity:
    gpus = f", {fl.gpus}x {fl.gpu_model}" if fl.gpus else ""
    whole = "an empty host with " if fl.kind == "baremetal" else ""
    return NoCapacity(
        f"no host has room{where} for flavor '{fl.name}' ({whole}{fl.vcpus} vCPU, "
        f"{fl.memory_mb} MiB{gpus}); pick a smaller flavor, delete servers, or book capacity "
        "ahead with 'ecliptic lease create'"
    )


def _flavor_request(fl: Flavor) -> Request:
    if fl.kind == "baremetal":
        where = f"vcpus >= {fl.vcpus} and memory_mb >= {fl.memory_mb}"
        if fl.gpus:
            where += f' and "{fl.gpu_model}" in gpu_models and gpu_count >= {fl.gpus}'
        return HostRequest(key="server", min_count=1, max_count=1, filter=where)
    return FlavorRequest(
        key="server",
        count=1,
        vcpus=fl.vcpus,
        memory_mb=fl.memory_mb,
        disk_gb=fl.disk_gb,
        gpu_model=fl.gpu_model,
        gpus=fl.gpus,
    )


def placement_on_demand(engine: Engine, fl: Flavor, server_id: str, now: datetime) -> str:
    """An on-demand server holds its room from now on, so no future lease may take it."""
    result = engine.fit(server_booking_id(server_id), [_flavor_request(fl)], now, FOREVER)
    if isinstance(result, NoFit):
        raise _no_room(fl)
    return result.allocations[0].host


def placement_preemptible(engine: Engine, fl: Flavor, now: datetime) -> str:
    """A preemptible server goes where it can keep its room for its minimum lifetime."""
    if fl.kind == "baremetal":
        raise InvalidInput("bare-metal flavors cannot be preemptible; use a vm flavor")
    best: tuple[bool, int, float, str] | None = None
    for info in engine.hosts.values():
        if not info.up or info.serves == "baremetal":
            continue
        room = engine.backfill_room(info.name, now)
        if room.vcpus < fl.vcpus or room.memory_mb < fl.memory_mb or room.disk_gb < fl.disk_gb:
            continue
        if fl.gpus and dict(room.gpus).get(fl.gpu_model or "", 0) < fl.gpus:
            continue
        idle_gpus = 0 if fl.gpus else sum(n for _, n in room.gpus)
        waste = (room.vcpus - fl.vcpus) / max(1, info.vcpus) + (
            room.memory_mb - fl.memory_mb
        ) / max(1, info.memory_mb)
        # A hypervisor (or an inventory host) before a pool host that would need converting.
        key = (info.ready == "baremetal", idle_gpus, waste, info.name)
        if best is None or key < best:
            best = key
    if best is None:
        raise _no_room(fl, " that nobody reserved for the next minimum lifetime")
    return best[3]


def preempt(
    session: Session,
    engine: Engine,
    queue: WorkQueue,
    victims: list[str],
    *,
    grace_s: float,
    by: tuple[str, str],
    why: str,
) -> list[str]:
    """Stop preemptible servers so that ``by`` (``("lease", id)`` or ``("server", id)``)
    gets their room: SIGTERM, ``grace_s``, then deletion (``why`` says so, ``{host}`` in it
    naming the victim's host); their room leaves the engine now
    (it is ``by``'s), and ``by`` is looked at again when each is gone. Returns the ids
    that are on their way out."""
    out = []
    for sid in victims:
        srv = session.get(Server, sid)
        engine.remove_preemptible(sid)
        if srv is None or srv.phase == ServerPhase.DELETING:
            continue
        host = srv.host.name if srv.host else "?"
        srv.spec = {
            **srv.spec,
            "stop_grace_s": grace_s,
            "preempted_by": by[1],
            "preempted_for": by[0],
        }
        move(session, srv, ServerPhase.DELETING, "preempted: " + why.replace("{host}", host))
        queue.enqueue(session, "server", sid)
        out.append(sid)
    return out


def relocate(
    session: Session, engine: Engine, queue: WorkQueue, srv: Server, now: datetime, *, why: str
) -> str | None:
    """Find a server another host (its own one is being drained) and send it there: a cold
    migration its reconciler carries out (stop, move its disk and addresses, start).

    An on-demand server's open-ended booking moves with it; a preemptible one goes where it
    can keep its room for its minimum lifetime, or is preempted when nothing can (``why``
    says what drains its host). Returns None when it is on its way, else why it must stay
    for now (no room elsewhere; a lease's server stays with its lease)."""
    if srv.lease_id:
        return f"server '{srv.name}' belongs to a lease booked on this host"
    if srv.spec.get("moving_from"):
        return None
    old = srv.host.name if srv.host else "?"
    fl = srv.flavor
    # The GPUs it held are the old host's: the new host's engine picks its own.
    srv.spec = {k: v for k, v in srv.spec.items() if k != "gpu_units"}
    if srv.preemptible:
        held = engine.preemptible(srv.id)
        engine.remove_preemptible(srv.id)
        try:
            target = placement_preemptible(engine, fl, now)
        except NoCapacity:
            if held is not None:
                engine.add_preemptible(held)
            preempt(
                session,
                engine,
                queue,
                [srv.id],
                grace_s=0.0,
                by=("hostrole", srv.host_id or ""),
                why=f"{why}, and no other host has room for it",
            )
            return None
        since = held.started_at if held is not None else minute(srv.created_at)
        engine.add_preemptible(Preemptible(srv.id, target, server_amount(srv), since))
        now_held = engine.preemptible(srv.id)
        _keep_gpus(srv, now_held.amount if now_held is not None else server_amount(srv))
    else:
        key = server_booking_id(srv.id)
        before = engine.booking(key)
        engine.release(key)
        try:
            target = placement_on_demand(engine, fl, srv.id, now)
        except NoCapacity:
            if before is not None:
                engine.book(key, before)
            return f"no other host has room for server '{srv.name}' (flavor {fl.name})"
        holding = Placement(now, FOREVER, (Allocation("server", target, server_amount(srv), 1),))
        engine.book(key, holding)
        booked = engine.booking(key)
        _keep_gpus(srv, booked.allocations[0].amount if booked is not None else server_amount(srv))
    host_row = session.scalar(select(Host).where(Host.name == target))
    assert host_row is not None
    srv.host_id = host_row.id
    srv.spec = {**srv.spec, "moving_from": old}
    srv.generation += 1
    note(session, srv, f"moving from host {old} to {target}: {why}")
    queue.enqueue(session, "server", srv.id)
    return None


@dataclass(frozen=True)
class LeasePlace:
    """Where a server inside a lease goes."""

    host: str
    reservation: str


def placement_in_lease(
    session: Session, lease: Lease, reservation: str | None, fl: Flavor, srv: Server
) -> LeasePlace:
    """A host of the lease with room left for this server, or a refusal that says why."""
    if lease.phase not in (LeasePhase.ACTIVE, LeasePhase.DEGRADED):
        when = (
            f"starts {lease.start_at:%Y-%m-%d %H:%M} UTC"
            if lease.phase == LeasePhase.PENDING
            else f"is {lease.phase}"
        )
        raise NotReady(
            f"lease '{lease.name}' is not active (it {when}); servers can be "
            "created in it while it is ACTIVE"
        )
    keys = sorted({a.reservation for a in lease.allocations})
    if reservation is None:
        if len(keys) != 1:
            raise InvalidInput(
                f"lease '{lease.name}' has reservations {', '.join(keys)}: say "
                "which one with --reservation"
            )
        reservation = keys[0]
    if reservation not in keys:
        raise InvalidInput(
            f"lease '{lease.name}' has no reservation '{reservation}' (it has {', '.join(keys)})"
        )
    request = next(r for r in lease.spec["reservations"] if r.get("name") == reservation)
    allocs = [a for a in lease.allocations if a.reservation == reservation]
    inside = [
        (str(host), int(vcpus), int(memory_mb), int(gpus))
        for host, vcpus, memory_mb, gpus in session.execute(
            select(Host.name, Server.vcpus, Server.memory_mb, Server.gpus)
            .join(Host, Server.host_id == Host.id)
            .where(
                Server.lease_id == lease.id, Server.reservation == reservation, Server.id != srv.id
            )
        )
    ]
    host = kind_of(request["kind"]).place_server(
        session, lease, reservation, request, allocs, fl, inside
    )
    return LeasePlace(host, reservation)


def _attach_nics(
    session: Session,
    queue: WorkQueue,
    srv: Server,
    nics: list[NicRequest],
    used_elsewhere: UsedRanges,
) -> None:
    for index, nic in enumerate(nics):
        loc = ["body", "networks", index]
        if nic.port and nic.network:
            raise InvalidInput(
                "give either a network or a port for an interface, not both",
                errors=[{"loc": loc, "msg": "network and port are exclusive"}],
            )
        if nic.port:
            port = find_port(session, srv.tenancy_id, nic.port)
            not_a_platforms(port.network, "put servers on it", srv.platform_id)
            if port.server_id:
                raise Conflict(f"port '{nic.port}' is attached to another server already")
            port.server_id = srv.id
            port.device_index = index
            continue
        net: Network = (
            find_network(session, srv.tenancy_id, nic.network)
            if nic.network
            else default_network(session, queue, srv.tenancy_id, used_elsewhere)
        )
        not_a_platforms(net, "put servers on it", srv.platform_id)
        allocate_port(
            session,
            net,
            vnic_type=nic.vnic_type,
            server_id=srv.id,
            device_index=index,
            name=f"{srv.name}-{index}",
            auto_delete=True,
        )


@dataclass(frozen=True)
class ServerFilter:
    """Filters of a server listing."""

    name: str | None = None
    """Substring of the name."""
    phase: str | None = None
    """Exact phase."""
    host: str | None = None
    """Host name."""
    flavor: str | None = None
    """Flavor name."""


def _encode_marker(srv: Server) -> str:
    return _encode_marker_at(srv.created_at, srv.id)


def _encode_marker_at(created_at: datetime, server_id: str) -> str:
    raw = f"{created_at.isoformat()}|{server_id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_marker(marker: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(marker + "=" * (-len(marker) % 4)).decode()
        at, sid = raw.split("|", 1)
        return datetime.fromisoformat(at), sid
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput(
            "marker is not one this API handed out; pass the 'next' value of the previous page",
            errors=[{"loc": ["query", "marker"], "msg": "invalid marker"}],
        ) from None


def _page(
    query: Select[Any], tenancy_id: str, filters: ServerFilter, marker: str | None, limit: int
) -> Select[Any]:
    """``query`` (over servers) narrowed to one page of the tenancy's servers, oldest first."""
    query = query.where(Server.tenancy_id == tenancy_id)
    if filters.name:
        query = query.where(Server.name.contains(filters.name, autoescape=True))
    if filters.phase:
        query = query.where(Server.phase == filters.phase.upper())
    if filters.host:
        query = query.where(Server.host_id.in_(select(Host.id).where(Host.name == filters.host)))
    if filters.flavor:
        query = query.where(
            Server.flavor_id.in_(select(Flavor.id).where(Flavor.name == filters.flavor))
        )
    if marker:
        at, sid = _decode_marker(marker)
        query = query.where(
            or_(Server.created_at > at, and_(Server.created_at == at, Server.id > sid))
        )
    return query.order_by(Server.created_at, Server.id).limit(limit + 1)


def list_servers(
    db: Database,
    caller: Caller,
    filters: ServerFilter,
    *,
    limit: int = 100,
    marker: str | None = None,
) -> tuple[list[Server], str | None]:
    """One page of the tenancy's servers, oldest first, and the marker of the next page."""
    query = _page(select(Server), caller.require_tenancy(), filters, marker, limit).options(
        # A listing shows names of the host, flavor and networks: load just those,
        # not their JSON documents (decoding them was most of a listing's cost).
        joinedload(Server.host).load_only(Host.name),
        joinedload(Server.flavor).load_only(Flavor.name),
        selectinload(Server.ports).options(
            defer(Port.spec),
            joinedload(Port.network).load_only(Network.name).raiseload(Network.subnets),
            raiseload(Port.subnet),
        ),
    )
    with db.read() as session:
        rows = list(session.scalars(query).unique())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (_encode_marker(rows[-1]) if more and rows else None)


_ROW_COLUMNS = (
    Server.id,
    Server.name,
    Server.tenancy_id,
    Server.kind,
    Server.vcpus,
    Server.memory_mb,
    Server.gpu_model,
    Server.gpus,
    Server.image,
    Server.spec,
    Server.lease_id,
    Server.reservation,
    Server.preemptible,
    Server.phase,
    Server.phase_reason,
    Server.generation,
    Server.observed_generation,
    Server.status,
    Server.created_at,
    Server.updated_at,
    Flavor.name.label("flavor"),
    Host.name.label("host"),
)
_PORT_COLUMNS = (
    Port.id,
    Port.name,
    Port.network_id,
    Port.subnet_id,
    Port.server_id,
    Port.mac,
    Port.ip_address,
    Port.vnic_type,
    Port.device_index,
    Port.phase,
    Port.status,
    Network.name.label("network"),
)


def list_server_rows(
    db: Database,
    caller: Caller,
    filters: ServerFilter,
    *,
    limit: int = 100,
    marker: str | None = None,
) -> tuple[list[dict[str, Any]], str | None]:
    """``list_servers`` as plain rows: each server's columns, ``flavor`` and ``host`` names,
    and ``ports`` (each with its ``network`` name), in device order.

    Two queries of columns and no ORM objects: building and tracking an object for every
    server and port was most of what a listing of 100 servers cost.
    """
    query = _page(
        select(*_ROW_COLUMNS)
        .join(Flavor, Server.flavor_id == Flavor.id)
        .outerjoin(Host, Server.host_id == Host.id),
        caller.require_tenancy(),
        filters,
        marker,
        limit,
    )
    with db.read() as session:
        result = session.execute(query)
        keys = list(result.keys())
        rows = [dict(zip(keys, r, strict=True)) for r in result]
        more = len(rows) > limit
        rows = rows[:limit]
        ports: dict[str, list[dict[str, Any]]] = {r["id"]: [] for r in rows}
        if rows:
            result = session.execute(
                select(*_PORT_COLUMNS)
                .join(Network, Port.network_id == Network.id)
                .where(Port.server_id.in_(list(ports)))
                .order_by(Port.server_id, Port.device_index)
            )
            keys = list(result.keys())
            for r in result:
                port = dict(zip(keys, r, strict=True))
                ports[port["server_id"]].append(port)
    for row in rows:
        row["ports"] = ports[row["id"]]
    last = rows[-1] if more and rows else None
    return rows, (_encode_marker_at(last["created_at"], last["id"]) if last else None)


def get_server(db: Database, caller: Caller, ref: str) -> Server:
    """One server of the caller's tenancy."""
    with db.read() as session:
        return find_server(session, caller.require_tenancy(), ref)


def delete_server(db: Database, queue: WorkQueue, caller: Caller, ref: str) -> Server:
    """Ask for a server to be deleted; the worker removes it and releases its ports."""
    with db.write() as session:
        srv = find_server(session, caller.require_tenancy(), ref)
        _platform_member(db, caller, srv, "delete it (delete or scale the platform instead)")
        move(session, srv, ServerPhase.DELETING, f"deletion requested by {caller.user_name}")
        for port in srv.ports:
            if port.phase != PortPhase.DELETING:
                move(session, port, PortPhase.DELETING, "server deletion requested")
        srv.generation += 1
        queue.enqueue(session, "server", srv.id)
        return srv


def server_events(db: Database, caller: Caller, ref: str, limit: int = 50) -> list[Event]:
    """The latest phase changes of a server, newest last (of a deleted server too, while its
    tombstone is kept)."""
    tenancy_id = caller.require_tenancy()
    with db.read() as session:
        try:
            server_id = find_server(session, tenancy_id, ref).id
        except NotFound:
            gone = find_deleted_server(session, tenancy_id, ref)
            if gone is None:
                raise
            server_id = gone.id
        rows = session.scalars(
            select(Event)
            .where(Event.object_kind == "server", Event.object_id == server_id)
            .order_by(Event.id.desc())
            .limit(limit)
        )
        return list(reversed(list(rows)))


def find_deleted_server(session: Session, tenancy_id: str, ref: str) -> DeletedServer | None:
    """The latest tombstone of a server of the tenancy, by name or id."""
    return session.scalar(
        select(DeletedServer)
        .where(
            DeletedServer.tenancy_id == tenancy_id,
            (DeletedServer.name == ref) | (DeletedServer.id == ref),
        )
        .order_by(DeletedServer.deleted_at.desc())
        .limit(1)
    )


def list_deleted_servers(
    db: Database, caller: Caller, since: datetime, *, limit: int | None = 100
) -> list[DeletedServer]:
    """The tenancy's servers deleted since ``since`` (the retention period), latest first
    (``limit`` None: all of them)."""
    tenancy_id = caller.require_tenancy()
    with db.read() as session:
        return list(
            session.scalars(
                select(DeletedServer)
                .where(DeletedServer.tenancy_id == tenancy_id, DeletedServer.deleted_at >= since)
                .order_by(DeletedServer.deleted_at.desc(), DeletedServer.id)
                .limit(limit)
            )
        )


def purge_tombstones(session: Session, before: datetime) -> int:
    """Forget servers deleted before ``before``, and their events; returns how many."""
    ids = list(session.scalars(select(DeletedServer.id).where(DeletedServer.deleted_at < before)))
    for chunk in (ids[i : i + 500] for i in range(0, len(ids), 500)):
        session.execute(
            delete(Event).where(Event.object_kind == "server", Event.object_id.in_(chunk))
        )
        session.execute(delete(DeletedServer).where(DeletedServer.id.in_(chunk)))
    return len(ids)


def _platform_member(db: Database, caller: Caller, srv: Server, what: str) -> None:
    """A platform's servers are its access list's (and the tenancy's admins'): a member of
    the tenancy who may not use the platform may not get inside its servers either."""
    if srv.platform_id is None or caller.is_admin or caller.role == "admin":
        return
    with db.read() as session:
        allowed = session.scalar(
            select(PlatformAccess.user_id).where(
                PlatformAccess.platform_id == srv.platform_id,
                PlatformAccess.user_id == caller.user_id,
            )
        )
    if allowed is None:
        raise Forbidden(
            f"server '{srv.name}' is part of a platform you are not on the access list of: "
            f"ask its owner to add you to be able to {what}"
        )


def console_log(
    db: Database,
    backend: Backend,
    caller: Caller,
    ref: str,
    tail_bytes: int,
    after: int | None = None,
) -> tuple[Server, str, int]:
    """A server's console log: its tail, or what follows byte ``after``; and the offset to
    ask for next (``log --follow``)."""
    srv = get_server(db, caller, ref)
    _platform_member(db, caller, srv, "read its log")
    text, nxt = backend.console_read(
        srv.id, after=-tail_bytes if after is None else after, limit=tail_bytes
    )
    return srv, text, nxt


def exec_in_server(
    db: Database,
    backend: Backend,
    caller: Caller,
    ref: str,
    argv: list[str],
    *,
    timeout: float,
    stdin: bytes | None,
) -> tuple[RunResult, Server]:
    """Run a command inside an active server and wait for it; the server comes back too
    (its memory limit explains an out-of-memory kill)."""
    srv = get_server(db, caller, ref)
    _platform_member(db, caller, srv, "run commands in it")
    if srv.phase != ServerPhase.ACTIVE:
        raise NotReady(
            f"server '{srv.name}' is {srv.phase}, not ACTIVE; wait for it "
            "('ecliptic server show --wait') and try again"
        )
    try:
        return backend.run(srv.id, argv, timeout=timeout, stdin=stdin), srv
    except NotFoundInBackend:
        raise NotReady(f"server '{srv.name}' is being repaired; try again in a moment") from None


def addresses(srv: Server, ports: list[Port] | None = None) -> dict[str, list[str]]:
    """Addresses of a server by network name."""
    out: dict[str, list[str]] = {}
    for p in ports if ports is not None else srv.ports:
        out.setdefault(p.network.name, []).append(p.ip_address)
    return out
