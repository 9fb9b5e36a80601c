"""Flavors and hosts."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict

from ecliptic.api.deps import CallerDep, RuntimeDep
from ecliptic.api.paging import NameFilter, PagingDep, matches, paged
from ecliptic.api.render import host_out
from ecliptic.api.schemas import FlavorCreate, FlavorOut, HostOut, Page
from ecliptic.services import catalogue, leases

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


@router.patch("/hosts/{name}", response_model=HostOut)
def patch_host(name: str, body: HostPatch, caller: CallerDep, rt: RuntimeDep) -> HostOut:
    """Mark a host up, down or in maintenance (administrators)."""
    leases.set_host_state(rt.booking, rt.queue, caller, name, body.state)
    return next(host_out(h, u) for h, u in catalogue.list_hosts(rt.db, caller) if h.name == name)
