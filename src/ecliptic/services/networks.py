"""Networks, subnets and ports: address management inside the platform's address pool."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable, Iterable

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ecliptic.errors import Conflict, Forbidden, InvalidInput, NotFound
from ecliptic.phases import NetworkPhase, PortPhase
from ecliptic.services.caller import Caller
from ecliptic.store.db import Database
from ecliptic.store.models import Network, Port, Server, Subnet
from ecliptic.store.transitions import created, move
from ecliptic.store.workqueue import WorkQueue

ADDRESS_POOL = ipaddress.IPv4Network("198.18.0.0/15")
DEFAULT_PREFIX = 24
DEFAULT_NETWORK = "default"
IPAM_LOCK = "ipam"


class InUse(Conflict):
    """The object still has things attached to it."""

    code = "in_use"


class PoolExhausted(Conflict):
    """No free address range or address is left."""

    code = "pool_exhausted"


def find_network(session: Session, tenancy_id: str, ref: str) -> Network:
    """A network of the tenancy, by name or id; other tenancies' networks do not exist."""
    net = session.scalar(
        select(Network).where(
            Network.tenancy_id == tenancy_id, (Network.name == ref) | (Network.id == ref)
        )
    )
    if net is None:
        raise NotFound(f"no network '{ref}' in this tenancy; see 'ecliptic network list'")
    return net


def not_a_platforms(net: Network, what: str, platform_id: str | None = None) -> None:
    """A platform's own network takes only that platform's servers: nobody else may add
    ports, servers or subnets to it, or delete it (delete or scale the platform)."""
    if net.platform_id is not None and net.platform_id != platform_id:
        raise Forbidden(
            f"network '{net.name}' belongs to a platform: only the platform may {what} "
            "(change the platform instead: 'ecliptic platform patch' or 'delete')"
        )


def _free_range(taken: Iterable[ipaddress.IPv4Network], prefix: int) -> ipaddress.IPv4Network:
    used = sorted(taken)
    for candidate in ADDRESS_POOL.subnets(new_prefix=prefix):
        if not any(candidate.overlaps(u) for u in used):
            return candidate
    raise PoolExhausted(
        f"no free /{prefix} is left in {ADDRESS_POOL}; delete unused networks or ask for "
        "a smaller range with --cidr"
    )


UsedRanges = Callable[[], Iterable[str]]
"""Ranges the infrastructure uses outside this instance (``Backend.used_ranges``)."""


def pick_range(
    session: Session, cidr: str | None, used_elsewhere: UsedRanges = tuple
) -> ipaddress.IPv4Network:
    """A free range of the pool: ``cidr`` when given and free, else the first free /24."""
    ours = [ipaddress.IPv4Network(c) for c in session.scalars(select(Subnet.cidr))]
    elsewhere = [ipaddress.IPv4Network(c) for c in used_elsewhere()]
    if cidr is None:
        net_range = _free_range([*ours, *elsewhere], DEFAULT_PREFIX)
    else:
        net_range = ipaddress.IPv4Network(cidr)
        if not net_range.subnet_of(ADDRESS_POOL):
            raise InvalidInput(
                f"{cidr} is outside the address pool {ADDRESS_POOL}; pick a range inside it "
                "or leave --cidr out to get a free one",
                errors=[{"loc": ["body", "cidr"], "msg": f"must be inside {ADDRESS_POOL}"}],
            )
        clash = next((t for t in ours if t.overlaps(net_range)), None)
        if clash is not None:
            raise Conflict(
                f"{cidr} overlaps {clash}, which another network uses; leave --cidr out to "
                "get a free range"
            )
        clash = next((t for t in elsewhere if t.overlaps(net_range)), None)
        if clash is not None:
            raise Conflict(
                f"{cidr} overlaps {clash}, which is already in use on the infrastructure "
                "(outside Ecliptic's networks); leave --cidr out to get a free range"
            )
    return net_range


def _new_subnet(net: Network, name: str, net_range: ipaddress.IPv4Network) -> Subnet:
    """A subnet of ``net`` over ``net_range``, its first address the gateway."""
    gateway = str(next(net_range.hosts()))
    return Subnet(
        tenancy_id=net.tenancy_id,
        network_id=net.id,
        name=name,
        cidr=str(net_range),
        gateway_ip=gateway,
        phase=NetworkPhase.PENDING,
        spec={"cidr": str(net_range), "gateway_ip": gateway},
    )


def add_network(
    session: Session,
    queue: WorkQueue,
    tenancy_id: str,
    name: str,
    cidr: str | None,
    used_elsewhere: UsedRanges = tuple,
) -> Network:
    """Create a network and its subnet inside the caller's transaction (holding the IPAM lock)."""
    net_range = pick_range(session, cidr, used_elsewhere)
    if session.scalar(
        select(Network.id).where(Network.tenancy_id == tenancy_id, Network.name == name)
    ):
        raise Conflict(f"a network named '{name}' exists already in this tenancy")
    net = Network(
        tenancy_id=tenancy_id, name=name, phase=NetworkPhase.PENDING, spec={"cidr": str(net_range)}
    )
    session.add(net)
    session.flush()
    session.add(_new_subnet(net, f"{name}-subnet", net_range))
    created(session, net, "created")
    session.flush()
    session.refresh(net)
    queue.enqueue(session, "network", net.id)
    return net


def create_network(
    db: Database,
    queue: WorkQueue,
    caller: Caller,
    name: str,
    cidr: str | None,
    used_elsewhere: UsedRanges = tuple,
) -> Network:
    """Create a network in the caller's tenancy."""
    tenancy_id = caller.require_tenancy()
    try:
        with db.write(IPAM_LOCK) as session:
            return add_network(session, queue, tenancy_id, name, cidr, used_elsewhere)
    except IntegrityError:
        raise Conflict(f"a network named '{name}' or its range exists already") from None


def default_network(
    session: Session, queue: WorkQueue, tenancy_id: str, used_elsewhere: UsedRanges = tuple
) -> Network:
    """The tenancy's ``default`` network, created on first use."""
    net = session.scalar(
        select(Network).where(Network.tenancy_id == tenancy_id, Network.name == DEFAULT_NETWORK)
    )
    return net or add_network(session, queue, tenancy_id, DEFAULT_NETWORK, None, used_elsewhere)


def list_networks(db: Database, caller: Caller) -> list[Network]:
    """Networks of the caller's tenancy."""
    tenancy_id = caller.require_tenancy()
    with db.read() as session:
        return list(
            session.scalars(
                select(Network).where(Network.tenancy_id == tenancy_id).order_by(Network.name)
            )
        )


def get_network(db: Database, caller: Caller, ref: str) -> Network:
    """One network of the caller's tenancy."""
    with db.read() as session:
        return find_network(session, caller.require_tenancy(), ref)


def delete_network(db: Database, queue: WorkQueue, caller: Caller, ref: str) -> Network:
    """Ask for a network to be deleted; refused while ports are on it."""
    with db.write(IPAM_LOCK) as session:
        net = find_network(session, caller.require_tenancy(), ref)
        not_a_platforms(net, "delete it")
        ports = list(session.scalars(select(Port).where(Port.network_id == net.id)))
        if ports:
            server_ids = {p.server_id for p in ports if p.server_id}
            names = (
                sorted(session.scalars(select(Server.name).where(Server.id.in_(server_ids))))
                if server_ids
                else []
            )
            loose = sum(1 for p in ports if not p.server_id)
            what = []
            if names:
                what.append("servers " + ", ".join(names))
            if loose:
                what.append(f"{loose} unattached port(s)")
            raise InUse(
                f"network '{net.name}' is in use by {' and '.join(what)}; delete them first"
            )
        move(session, net, NetworkPhase.DELETING, "deletion requested")
        for sub in net.subnets:
            move(session, sub, NetworkPhase.DELETING, "network deletion requested")
        queue.enqueue(session, "network", net.id)
        return net


def find_subnet(session: Session, tenancy_id: str, ref: str) -> Subnet:
    """A subnet of the tenancy by name or id."""
    sub = session.scalar(
        select(Subnet).where(
            Subnet.tenancy_id == tenancy_id, (Subnet.name == ref) | (Subnet.id == ref)
        )
    )
    if sub is None:
        raise NotFound(f"no subnet '{ref}' in this tenancy")
    return sub


def list_subnets(db: Database, caller: Caller) -> list[Subnet]:
    """Subnets of the caller's tenancy."""
    with db.read() as session:
        return list(
            session.scalars(
                select(Subnet)
                .where(Subnet.tenancy_id == caller.require_tenancy())
                .order_by(Subnet.name)
            )
        )


def create_subnet(
    db: Database,
    queue: WorkQueue,
    caller: Caller,
    network: str,
    name: str,
    cidr: str | None,
    used_elsewhere: UsedRanges = tuple,
) -> Subnet:
    """Add a range to a network: ports get addresses from it once the earlier ones are full."""
    tenancy_id = caller.require_tenancy()
    try:
        with db.write(IPAM_LOCK) as session:
            net = find_network(session, tenancy_id, network)
            not_a_platforms(net, "add subnets to it")
            if net.phase == NetworkPhase.DELETING:
                raise Conflict(f"network '{net.name}' is being deleted")
            if session.scalar(
                select(Subnet.id).where(Subnet.tenancy_id == tenancy_id, Subnet.name == name)
            ):
                raise Conflict(f"a subnet named '{name}' exists already in this tenancy")
            sub = _new_subnet(net, name, pick_range(session, cidr, used_elsewhere))
            session.add(sub)
            net.generation += 1
            session.flush()
            queue.enqueue(session, "network", net.id)
            return sub
    except IntegrityError:
        raise Conflict(f"a subnet named '{name}' or its range exists already") from None


def delete_subnet(db: Database, queue: WorkQueue, caller: Caller, ref: str) -> None:
    """Remove a subnet; refused while ports hold its addresses, or when it is the network's
    only one (delete the network instead)."""
    with db.write(IPAM_LOCK) as session:
        sub = find_subnet(session, caller.require_tenancy(), ref)
        used = session.scalar(select(func.count()).where(Port.subnet_id == sub.id)) or 0
        if used:
            raise InUse(
                f"subnet '{sub.name}' ({sub.cidr}) holds the addresses of {used} port(s); "
                "delete them (or their servers) first"
            )
        net = sub.network
        if len(net.subnets) == 1:
            raise Conflict(
                f"subnet '{sub.name}' is the only one of network '{net.name}': delete the "
                f"network instead (ecliptic network delete {net.name})"
            )
        session.delete(sub)
        net.generation += 1
        session.flush()
        queue.enqueue(session, "network", net.id)


def new_mac() -> str:
    """A random locally administered unicast MAC (``02:ec:..``)."""
    tail = secrets.token_bytes(4)
    return "02:ec:" + ":".join(f"{b:02x}" for b in tail)


def allocate_port(
    session: Session,
    net: Network,
    *,
    vnic_type: str,
    name: str = "",
    server_id: str | None = None,
    device_index: int = 0,
    auto_delete: bool = False,
) -> Port:
    """Reserve the lowest free address of the network's subnet (caller holds the IPAM lock)."""
    if net.phase == NetworkPhase.DELETING:
        raise Conflict(f"network '{net.name}' is being deleted")
    address = None
    for subnet in sorted(net.subnets, key=lambda sub: (sub.created_at, sub.cidr)):
        rng = ipaddress.IPv4Network(subnet.cidr)
        used = set(session.scalars(select(Port.ip_address).where(Port.subnet_id == subnet.id)))
        used.add(subnet.gateway_ip)
        address = next((str(a) for a in rng.hosts() if str(a) not in used), None)
        if address is not None:
            break
    if address is None:
        ranges = ", ".join(sub.cidr for sub in net.subnets)
        raise PoolExhausted(
            f"network '{net.name}' ({ranges}) has no free address left: add a subnet "
            f"(ecliptic subnet create NAME --network {net.name})"
        )
    macs = set()
    mac = new_mac()
    while mac in macs or session.scalar(select(func.count()).where(Port.mac == mac)):
        macs.add(mac)
        mac = new_mac()
    port = Port(
        tenancy_id=net.tenancy_id,
        network_id=net.id,
        subnet_id=subnet.id,
        server_id=server_id,
        name=name,
        mac=mac,
        ip_address=address,
        vnic_type=vnic_type,
        device_index=device_index,
        phase=PortPhase.DOWN,
        spec={
            "vnic_type": vnic_type,
            "ip_address": address,
            "mac": mac,
            "auto_delete": auto_delete,
        },
    )
    session.add(port)
    session.flush()
    return port


def create_port(
    db: Database, caller: Caller, network: str, name: str | None, vnic_type: str
) -> Port:
    """Reserve a port on a network, to give to a server later."""
    tenancy_id = caller.require_tenancy()
    with db.write(IPAM_LOCK) as session:
        net = find_network(session, tenancy_id, network)
        not_a_platforms(net, "add ports to it")
        if name and session.scalar(
            select(Port.id).where(Port.tenancy_id == tenancy_id, Port.name == name)
        ):
            raise Conflict(f"a port named '{name}' exists already in this tenancy")
        port = allocate_port(session, net, vnic_type=vnic_type, name=name or "")
        session.refresh(port)
        return port


def find_port(session: Session, tenancy_id: str, ref: str) -> Port:
    """A port of the tenancy by name or id."""
    cond = (Port.id == ref) | ((Port.name == ref) & (Port.name != ""))
    port = session.scalar(select(Port).where(Port.tenancy_id == tenancy_id, cond))
    if port is None:
        raise NotFound(f"no port '{ref}' in this tenancy")
    return port


def list_ports(db: Database, caller: Caller) -> list[Port]:
    """Ports of the caller's tenancy."""
    tenancy_id = caller.require_tenancy()
    with db.read() as session:
        return list(
            session.scalars(
                select(Port).where(Port.tenancy_id == tenancy_id).order_by(Port.created_at)
            )
        )


def delete_port(db: Database, caller: Caller, ref: str) -> None:
    """Release an unattached port."""
    with db.write(IPAM_LOCK) as session:
        port = find_port(session, caller.require_tenancy(), ref)
        if port.server_id:
            raise InUse("this port is attached to a server; delete the server first")
        session.delete(port)
