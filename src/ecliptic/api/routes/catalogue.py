"""Flavors and hosts."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict

from ecliptic.api.deps import AdminDep, CallerDep, RuntimeDep
from ecliptic.api.paging import NameFilter, PagingDep, matches, paged
from ecliptic.api.render import host_out
from ecliptic.api.schemas import (
    EventOut,
    FlavorCreate,
    FlavorOut,
    HostConvert,
    HostOut,
    Page,
    PoolHostOut,
)
from ecliptic.errors import NotFound
from ecliptic.runtime import Runtime
from ecliptic.services import catalogue, leases, pool
from ecliptic.services.caller import Caller

router = APIRouter(tags=["catalogue"])


class HostPatch(BaseModel):
    """Change a host's state."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    state: Literal["up", "down", "maintenance"]


@router.get("/flavors", response_model=Page[FlavorOut])
def list_flavors(
    _: CallerDep, rt: RuntimeDep, page: PagingDep, name: NameFilter = None
) -> Page[FlavorOut]:
    """Every flavor, smallest first (``name``: only those whose name contains it)."""
    rows = [f for f in catalogue.list_flavors(rt.db) if matches(f.name, name)]
    return paged(rows, page, lambda f: f.name, FlavorOut.model_validate)


@router.post("/flavors", response_model=FlavorOut, status_code=201)
def create_flavor(body: FlavorCreate, caller: CallerDep, rt: RuntimeDep) -> FlavorOut:
    """Create a flavor (administrators)."""
    return FlavorOut.model_validate(catalogue.create_flavor(rt.db, caller, body.model_dump()))


@router.delete("/flavors/{ref}", status_code=204)
def delete_flavor(ref: str, caller: CallerDep, rt: RuntimeDep) -> Response:
    """Delete an unused flavor (administrators)."""
    catalogue.delete_flavor(rt.db, caller, ref)
    return Response(status_code=204)


@router.get("/hosts", response_model=Page[HostOut])
def list_hosts(
    caller: CallerDep, rt: RuntimeDep, page: PagingDep, name: NameFilter = None
) -> Page[HostOut]:
    """The inventory with what is in use on each host (administrators)."""
    rows = [r for r in catalogue.list_hosts(rt.db, caller) if matches(r[0].name, name)]
    return paged(rows, page, lambda r: r[0].name, lambda r: host_out(*r))


def _host(rt: Runtime, caller: Caller, name: str) -> HostOut:
    """One host with its usage and its place in the pool."""
    for h, u in catalogue.list_hosts(rt.db, caller):
        if h.name == name:
            return host_out(h, u)
    raise NotFound(f"no host '{name}'")


# Declared before /hosts/{name}: "pool" is this list, not a host's name.
@router.get("/hosts/pool", response_model=Page[PoolHostOut])
def list_pool(caller: AdminDep, rt: RuntimeDep, page: PagingDep) -> Page[PoolHostOut]:
    """The bare-metal-or-hypervisor pool: each Ironic host's role, its conversion, and what
    needs it as a hypervisor or as bare metal (administrators; needs an Ironic)."""
    rows = pool.pool_status(rt.booking, caller, rt.pool_policy())
    return paged(rows, page, lambda r: r.name, PoolHostOut.model_validate)


@router.patch("/hosts/{name}", response_model=HostOut)
def patch_host(name: str, body: HostPatch, caller: CallerDep, rt: RuntimeDep) -> HostOut:
    """Mark a host up, down or in maintenance (administrators)."""
    leases.set_host_state(rt.booking, rt.queue, caller, name, body.state)
    return _host(rt, caller, name)


@router.post("/hosts/{name}/convert", response_model=HostOut)
def convert_host(name: str, body: HostConvert, caller: AdminDep, rt: RuntimeDep) -> HostOut:
    """Make a pool host a hypervisor or bare metal and hold it so (the policy keeps the
    choice; bookings still come first), or give it back to the policy with ``auto``
    (administrators; needs an Ironic). A conversion that would break a booking is refused."""
    pool.convert(rt.booking, rt.queue, caller, name, body.to, rt.pool_policy())
    return _host(rt, caller, name)


@router.post("/hosts/{name}/drain", response_model=HostOut)
def drain_host(name: str, caller: AdminDep, rt: RuntimeDep) -> HostOut:
    """Drain a hypervisor: no new VMs go to it and its servers move to other hypervisors;
    it stays a drained hypervisor until converted (administrators; needs an Ironic)."""
    pool.drain(rt.booking, rt.queue, caller, name, rt.pool_policy())
    return _host(rt, caller, name)


@router.get("/hosts/{name}/events", response_model=Page[EventOut])
def host_events(name: str, caller: AdminDep, rt: RuntimeDep, page: PagingDep) -> Page[EventOut]:
    """What happened to a host's role in the pool and why, oldest first (administrators)."""
    rows = pool.host_events(rt.booking, caller, name)
    return paged(rows, page, lambda e: e.id, EventOut.model_validate)
