"""Networks, subnets and ports."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ecliptic.api.deps import CallerDep, RuntimeDep
from ecliptic.api.paging import NameFilter, PagingDep, matches, paged
from ecliptic.api.render import network_out, port_out
from ecliptic.api.schemas import (
    NetworkCreate,
    NetworkOut,
    Page,
    PortCreate,
    PortOut,
    SubnetCreate,
    SubnetOut,
)
from ecliptic.services import networks

router = APIRouter(tags=["networks"])


@router.get("/networks", response_model=Page[NetworkOut])
def list_networks(
    caller: CallerDep, rt: RuntimeDep, page: PagingDep, name: NameFilter = None
) -> Page[NetworkOut]:
    """Networks of your tenancy."""
    rows = [n for n in networks.list_networks(rt.db, caller) if matches(n.name, name)]
    return paged(rows, page, lambda n: n.id, network_out)


@router.post("/networks", response_model=NetworkOut, status_code=202)
def create_network(body: NetworkCreate, caller: CallerDep, rt: RuntimeDep) -> NetworkOut:
    """Create a network with one subnet; its range is picked for you unless given."""
    net = networks.create_network(
        rt.db, rt.queue, caller, body.name, body.cidr, rt.backend.used_ranges
    )
    return network_out(net)


@router.get("/networks/{ref}", response_model=NetworkOut)
def get_network(ref: str, caller: CallerDep, rt: RuntimeDep) -> NetworkOut:
    """One network."""
    return network_out(networks.get_network(rt.db, caller, ref))


@router.delete("/networks/{ref}", response_model=NetworkOut, status_code=202)
def delete_network(ref: str, caller: CallerDep, rt: RuntimeDep) -> NetworkOut:
    """Delete a network; refused (409 in_use) while ports are on it."""
    return network_out(networks.delete_network(rt.db, rt.queue, caller, ref))


@router.get("/subnets", response_model=Page[SubnetOut])
def list_subnets(
    caller: CallerDep, rt: RuntimeDep, page: PagingDep, name: NameFilter = None
) -> Page[SubnetOut]:
    """Subnets of your tenancy's networks."""
    rows = [s for s in networks.list_subnets(rt.db, caller) if matches(s.name, name)]
    return paged(rows, page, lambda s: s.id, SubnetOut.model_validate)


@router.post("/subnets", response_model=SubnetOut, status_code=202)
def create_subnet(body: SubnetCreate, caller: CallerDep, rt: RuntimeDep) -> SubnetOut:
    """Add a range to a network; its range is picked for you unless given."""
    sub = networks.create_subnet(
        rt.db, rt.queue, caller, body.network, body.name, body.cidr, rt.backend.used_ranges
    )
    return SubnetOut.model_validate(sub)


@router.delete("/subnets/{ref}", status_code=204, response_class=Response)
def delete_subnet(ref: str, caller: CallerDep, rt: RuntimeDep) -> Response:
    """Remove a subnet; refused while ports hold its addresses or when it is the last one."""
    networks.delete_subnet(rt.db, rt.queue, caller, ref)
    return Response(status_code=204)


@router.get("/ports", response_model=Page[PortOut])
def list_ports(
    caller: CallerDep, rt: RuntimeDep, page: PagingDep, name: NameFilter = None
) -> Page[PortOut]:
    """Ports of your tenancy."""
    rows = [p for p in networks.list_ports(rt.db, caller) if matches(p.name or "", name)]
    return paged(rows, page, lambda p: p.id, port_out)


@router.post("/ports", response_model=PortOut, status_code=201)
def create_port(body: PortCreate, caller: CallerDep, rt: RuntimeDep) -> PortOut:
    """Reserve an address on a network, to give to a server later."""
    return port_out(networks.create_port(rt.db, caller, body.network, body.name, body.vnic_type))


@router.delete("/ports/{ref}", status_code=204)
def delete_port(ref: str, caller: CallerDep, rt: RuntimeDep) -> Response:
    """Release an unattached port."""
    networks.delete_port(rt.db, caller, ref)
    return Response(status_code=204)
