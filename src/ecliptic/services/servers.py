"""Servers: create (placed best-fit, ports allocated), list, show, delete, log, exec."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, defer, joinedload, raiseload, selectinload

from ecliptic.backends.base import Backend, NotFoundInBackend, RunResult
from ecliptic.errors import Conflict, InvalidInput, NotFound
from ecliptic.phases import PortPhase, ServerPhase
from ecliptic.scheduler.placement import Demand, best_fit
from ecliptic.services.caller import Caller
from ecliptic.services.catalogue import find_flavor, host_usage
from ecliptic.services.networks import (
    IPAM_LOCK,
    UsedRanges,
    allocate_port,
    default_network,
    find_network,
    find_port,
)
from ecliptic.store.db import Database
from ecliptic.store.models import Event, Flavor, Host, Network, Port, Server
from ecliptic.store.transitions import move
from ecliptic.store.workqueue import WorkQueue

PLACEMENT_LOCK = "placement"


class NoCapacity(Conflict):
    """No host has room for the server."""

    code = "no_capacity"


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


def create_server(
    db: Database,
    queue: WorkQueue,
    caller: Caller,
    name: str,
    flavor: str,
    nics: list[NicRequest],
    used_elsewhere: UsedRanges = tuple,
) -> Server:
    """Place a server on a host, allocate its ports and queue it for building."""
    tenancy_id = caller.require_tenancy()
    with db.write(PLACEMENT_LOCK, IPAM_LOCK) as session:
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
        demand = Demand(
            vcpus=fl.vcpus,
            memory_mb=fl.memory_mb,
            disk_gb=fl.disk_gb,
            gpu_model=fl.gpu_model,
            gpus=fl.gpus,
            whole_host=fl.kind == "baremetal",
        )
        host = best_fit(host_usage(session), demand)
        if host is None:
            gpus = f", {fl.gpus}x {fl.gpu_model}" if fl.gpus else ""
            whole = "an empty host with " if fl.kind == "baremetal" else ""
            raise NoCapacity(
                f"no host has room for flavor '{fl.name}' ({whole}{fl.vcpus} vCPU, "
                f"{fl.memory_mb} MiB{gpus}); pick a smaller flavor or delete servers"
            )
        host_row = session.scalar(select(Host).where(Host.name == host.name))
        assert host_row is not None
        srv = Server(
            tenancy_id=tenancy_id,
            name=name,
            flavor_id=fl.id,
            host_id=host_row.id,
            kind=fl.kind,
            vcpus=fl.vcpus if fl.kind == "vm" else host.vcpus,
            memory_mb=fl.memory_mb if fl.kind == "vm" else host.memory_mb,
            disk_gb=fl.disk_gb if fl.kind == "vm" else host.disk_gb,
            gpu_model=fl.gpu_model,
            gpus=fl.gpus if fl.kind == "vm" else host.gpus.get(fl.gpu_model or "", 0),
            phase=ServerPhase.PENDING,
            phase_reason="waiting for a worker",
            created_by=caller.user_id,
            spec={
                "flavor": fl.name,
                "nics": [n.__dict__ for n in nics],
            },
        )
        session.add(srv)
        session.flush()
        _attach_nics(session, queue, srv, nics or [NicRequest()], used_elsewhere)
        session.add(
            Event(
                tenancy_id=tenancy_id,
                object_kind="server",
                object_id=srv.id,
                to_phase=ServerPhase.PENDING,
                reason=f"created on host {host.name}",
            )
        )
        queue.enqueue(session, "server", srv.id)
        session.flush()
        session.refresh(srv)
        return srv


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
    raw = f"{srv.created_at.isoformat()}|{srv.id}"
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


def list_servers(
    db: Database,
    caller: Caller,
    filters: ServerFilter,
    *,
    limit: int = 100,
    marker: str | None = None,
) -> tuple[list[Server], str | None]:
    """One page of the tenancy's servers, oldest first, and the marker of the next page."""
    tenancy_id = caller.require_tenancy()
    query = select(Server).where(Server.tenancy_id == tenancy_id)
    if filters.name:
        query = query.where(Server.name.contains(filters.name, autoescape=True))
    if filters.phase:
        query = query.where(Server.phase == filters.phase.upper())
    if filters.host:
        query = query.join(Host, Server.host_id == Host.id).where(Host.name == filters.host)
    if filters.flavor:
        query = query.join(Flavor, Server.flavor_id == Flavor.id).where(
            Flavor.name == filters.flavor
        )
    if marker:
        at, sid = _decode_marker(marker)
        query = query.where(
            or_(Server.created_at > at, and_(Server.created_at == at, Server.id > sid))
        )
    query = (
        query.order_by(Server.created_at, Server.id)
        .limit(limit + 1)
        .options(
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
    )
    with db.read() as session:
        rows = list(session.scalars(query).unique())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (_encode_marker(rows[-1]) if more and rows else None)


def get_server(db: Database, caller: Caller, ref: str) -> Server:
    """One server of the caller's tenancy."""
    with db.read() as session:
        return find_server(session, caller.require_tenancy(), ref)


def delete_server(db: Database, queue: WorkQueue, caller: Caller, ref: str) -> Server:
    """Ask for a server to be deleted; the worker removes it and releases its ports."""
    with db.write() as session:
        srv = find_server(session, caller.require_tenancy(), ref)
        move(session, srv, ServerPhase.DELETING, f"deletion requested by {caller.user_name}")
        for port in srv.ports:
            if port.phase != PortPhase.DELETING:
                move(session, port, PortPhase.DELETING, "server deletion requested")
        srv.generation += 1
        queue.enqueue(session, "server", srv.id)
        return srv


def server_events(db: Database, caller: Caller, ref: str, limit: int = 50) -> list[Event]:
    """The latest phase changes of a server, newest last."""
    with db.read() as session:
        srv = find_server(session, caller.require_tenancy(), ref)
        rows = session.scalars(
            select(Event)
            .where(Event.object_kind == "server", Event.object_id == srv.id)
            .order_by(Event.id.desc())
            .limit(limit)
        )
        return list(reversed(list(rows)))


def console_log(
    db: Database, backend: Backend, caller: Caller, ref: str, tail_bytes: int
) -> tuple[Server, str]:
    """The tail of a server's console log."""
    srv = get_server(db, caller, ref)
    return srv, backend.console_log(srv.id, tail_bytes=tail_bytes)


def exec_in_server(
    db: Database,
    backend: Backend,
    caller: Caller,
    ref: str,
    argv: list[str],
    *,
    timeout: float,
    stdin: bytes | None,
) -> RunResult:
    """Run a command inside an active server and wait for it."""
    srv = get_server(db, caller, ref)
    if srv.phase != ServerPhase.ACTIVE:
        raise NotReady(
            f"server '{srv.name}' is {srv.phase}, not ACTIVE; wait for it "
            "('ecliptic server show --wait') and try again"
        )
    try:
        return backend.run(srv.id, argv, timeout=timeout, stdin=stdin)
    except NotFoundInBackend:
        raise NotReady(f"server '{srv.name}' is being repaired; try again in a moment") from None


def addresses(srv: Server, ports: list[Port] | None = None) -> dict[str, list[str]]:
    """Addresses of a server by network name."""
    out: dict[str, list[str]] = {}
    for p in ports if ports is not None else srv.ports:
        out.setdefault(p.network.name, []).append(p.ip_address)
    return out
