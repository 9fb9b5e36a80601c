"""Security groups: ``/api/v1/security-groups`` and a server's groups."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ecliptic.api.deps import CallerDep, RuntimeDep
from ecliptic.api.paging import NameFilter, PagingDep, matches, paged
from ecliptic.api.schemas import (
    Page,
    SecurityGroupCreate,
    SecurityGroupOut,
    SecurityGroupRuleCreate,
    SecurityGroupRuleOut,
    ServerSecurityGroups,
)
from ecliptic.runtime import Runtime
from ecliptic.services import security_groups as sg
from ecliptic.services.caller import Caller
from ecliptic.store.models import SecurityGroup, SecurityGroupRule

router = APIRouter(tags=["security groups"])


def _names(rt: Runtime, caller: Caller) -> dict[str, str]:
    return {g.id: g.name for g in sg.list_groups(rt.db, caller)}


def _rule(r: SecurityGroupRule, names: dict[str, str]) -> SecurityGroupRuleOut:
    return SecurityGroupRuleOut(
        id=r.id,
        direction=r.direction,
        protocol=r.protocol,
        port_min=r.port_min,
        port_max=r.port_max,
        remote_cidr=r.remote_cidr,
        remote_group=names.get(r.remote_group_id or "", r.remote_group_id),
        description=r.description,
    )


def _out(g: SecurityGroup, names: dict[str, str]) -> SecurityGroupOut:
    return SecurityGroupOut(
        id=g.id,
        name=g.name,
        description=g.description,
        rules=[_rule(r, names) for r in g.rules],
        created_at=g.created_at,
    )


@router.get("/security-groups", response_model=Page[SecurityGroupOut])
def list_groups(
    caller: CallerDep, rt: RuntimeDep, page: PagingDep, name: NameFilter = None
) -> Page[SecurityGroupOut]:
    """The tenancy's security groups by name (``default`` is always there)."""
    groups = sg.list_groups(rt.db, caller)
    names = {g.id: g.name for g in groups}
    rows = [g for g in groups if matches(g.name, name)]
    return paged(rows, page, lambda g: g.name, lambda g: _out(g, names))


@router.post("/security-groups", response_model=SecurityGroupOut, status_code=201)
def create_group(body: SecurityGroupCreate, caller: CallerDep, rt: RuntimeDep) -> SecurityGroupOut:
    """A new group: its ports let nothing in and send nothing until it has rules."""
    g = sg.create_group(rt.db, caller, body.name, body.description)
    return _out(g, _names(rt, caller))


@router.get("/security-groups/{ref}", response_model=SecurityGroupOut)
def get_group(ref: str, caller: CallerDep, rt: RuntimeDep) -> SecurityGroupOut:
    """One group, by name or id."""
    return _out(sg.get_group(rt.db, caller, ref), _names(rt, caller))


@router.delete("/security-groups/{ref}", status_code=204)
def delete_group(ref: str, caller: CallerDep, rt: RuntimeDep) -> Response:
    """Delete a group no port uses (409 naming the servers that do)."""
    sg.delete_group(rt.db, rt.queue, caller, ref)
    return Response(status_code=204)


@router.post("/security-groups/{ref}/rules", response_model=SecurityGroupRuleOut, status_code=201)
def add_rule(
    ref: str, body: SecurityGroupRuleCreate, caller: CallerDep, rt: RuntimeDep
) -> SecurityGroupRuleOut:
    """Add a rule; running servers follow within a second."""
    rule = sg.add_rule(rt.db, rt.queue, caller, ref, body.model_dump())
    return _rule(rule, _names(rt, caller))


@router.delete("/security-groups/{ref}/rules/{rule_id}", status_code=204)
def delete_rule(ref: str, rule_id: str, caller: CallerDep, rt: RuntimeDep) -> Response:
    """Remove a rule; new connections it allowed are refused within a second."""
    sg.delete_rule(rt.db, rt.queue, caller, ref, rule_id)
    return Response(status_code=204)


@router.put("/servers/{ref}/security-groups", response_model=ServerSecurityGroups)
def set_server_groups(
    ref: str, body: ServerSecurityGroups, caller: CallerDep, rt: RuntimeDep
) -> ServerSecurityGroups:
    """Replace the groups of every port of a server."""
    names = sg.set_server_groups(rt.db, rt.queue, caller, ref, list(body.security_groups))
    return ServerSecurityGroups(security_groups=names)
