"""Platform types (the catalogue) and platforms."""

from __future__ import annotations

from decimal import Decimal

from fastapi import APIRouter

from ecliptic.api.deps import CallerDep, RuntimeDep
from ecliptic.api.paging import PagingDep, paged
from ecliptic.api.schemas import (
    EventOut,
    Page,
    PlannedServerOut,
    PlatformAccessSet,
    PlatformCreate,
    PlatformOut,
    PlatformPatch,
    PlatformPlanOut,
    PlatformServerOut,
    PlatformServiceOut,
    PlatformTypeCheck,
    PlatformTypeOut,
    PlatformTypeText,
    TypeProblem,
)
from ecliptic.errors import NotFound
from ecliptic.platforms.types import CatalogueEntry, TypeFileError, parse_type
from ecliptic.runtime import Runtime
from ecliptic.services import platforms
from ecliptic.services.caller import Caller
from ecliptic.store.models import Platform

router = APIRouter(tags=["platforms"])


def _type_out(entry: CatalogueEntry) -> PlatformTypeOut:
    t = entry.type
    return PlatformTypeOut(
        name=t.name,
        label=t.label,
        description=t.description,
        logo=t.logo,
        version=t.version,
        source=entry.source,
        parameters=[p.model_dump(mode="json") | {"label": p.title} for p in t.parameters],
        roles=[r.model_dump(mode="json") for r in t.roles],
        services=[s.model_dump(mode="json") for s in t.services],
        steps=[s.name for s in t.steps],
        usage=t.usage,
    )


def image_names(rt: Runtime) -> platforms.ImageNames:
    """The names of the images the backend holds (asked when a platform names one)."""
    return lambda: {i.name for i in rt.backend.images()}


def _url_format(rt: Runtime) -> str | None:
    return rt.ctx.gateway.url_format if rt.ctx.gateway is not None else None


def _services_out(rt: Runtime, v: platforms.PlatformView) -> list[PlatformServiceOut]:
    jump = rt.ctx.gateway.jump_port if rt.ctx.gateway is not None else None
    return [
        PlatformServiceOut(**s.__dict__, jump_port=jump if s.protocol == "tcp" else None)
        for s in v.services
    ]


def platform_out(rt: Runtime, row: Platform, caller: Caller) -> PlatformOut:
    """A platform body (its servers, services and usage text) as ``caller`` may see it."""
    v = platforms.view(rt.db, row, _url_format(rt))
    failed = platforms.failure_for(caller, row)
    return PlatformOut(
        id=row.id,
        name=row.name,
        type=row.type_name,
        type_version=row.type_version,
        lease_id=row.lease_id,
        phase=row.phase,
        phase_reason=row.phase_reason,
        parameters=dict(row.spec["parameters"]),
        servers=[PlatformServerOut(**s.__dict__) for s in v.servers],
        services=_services_out(rt, v),
        access=v.access,
        usage=v.usage,
        failed=failed or None,
        preemptible=bool(row.spec.get("preemptible")),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@router.get("/platform-types", response_model=Page[PlatformTypeOut])
def list_types(caller: CallerDep, rt: RuntimeDep, page: PagingDep) -> Page[PlatformTypeOut]:
    """The catalogue: every platform type on offer, by name."""
    types, _broken = rt.catalogue.scan()
    rows = [types[n] for n in sorted(types)]
    return paged(rows, page, lambda e: e.type.name, _type_out)


@router.get("/platform-types/{name}", response_model=PlatformTypeOut)
def get_type(name: str, caller: CallerDep, rt: RuntimeDep) -> PlatformTypeOut:
    """One platform type: its parameters, roles, services and usage text."""
    entry = rt.catalogue.get(name)
    if entry is None:
        raise NotFound(f"no platform type '{name}'; see 'ecliptic platform-type list'")
    return _type_out(entry)


@router.post("/platform-types/validate", response_model=PlatformTypeCheck)
def validate_type(body: PlatformTypeText, caller: CallerDep) -> PlatformTypeCheck:
    """Check a platform type file: every problem with its line and column (administrators,
    who write the catalogue; ``ecliptic platform-type validate FILE`` checks one offline)."""
    caller.require_admin("check platform types on the server")
    try:
        t = parse_type(body.text, "<text>")
    except TypeFileError as exc:
        return PlatformTypeCheck(
            valid=False,
            problems=[TypeProblem(**p.__dict__) for p in exc.problems],
        )
    return PlatformTypeCheck(valid=True, name=t.name)


@router.get("/platforms", response_model=Page[PlatformOut])
def list_platforms(caller: CallerDep, rt: RuntimeDep, page: PagingDep) -> Page[PlatformOut]:
    """Platforms of your tenancy, by name."""
    rows = platforms.list_platforms(rt.db, caller)
    return paged(rows, page, lambda r: r.name, lambda r: platform_out(rt, r, caller))


@router.post("/platforms", response_model=PlatformOut, status_code=202)
def create_platform(body: PlatformCreate, caller: CallerDep, rt: RuntimeDep) -> PlatformOut:
    """Create a platform: checked and placed now (all its servers, or none), built in the
    background (watch its phase and events)."""
    row = platforms.create_platform(
        rt.booking,
        rt.queue,
        caller,
        rt.catalogue,
        image_names(rt),
        create_input(body),
        rt.backend.used_ranges,
        allow_preemptible=rt.settings.platform_preemptible,
    )
    return platform_out(rt, row, caller)


@router.post("/platform-plans", response_model=PlatformPlanOut)
def plan_platform(body: PlatformCreate, caller: CallerDep, rt: RuntimeDep) -> PlatformPlanOut:
    """What creating this platform would make and cost, checked as a create is (capacity,
    quota, credits) and then undone: nothing is made."""
    plan = platforms.plan_platform(
        rt.booking,
        rt.queue,
        caller,
        rt.catalogue,
        image_names(rt),
        create_input(body),
        rt.backend.used_ranges,
        allow_preemptible=rt.settings.platform_preemptible,
    )
    return plan_out(plan)


def plan_out(plan: platforms.PlatformPlan) -> PlatformPlanOut:
    """A plan's body: its servers, totals and hourly cost by resource class."""
    hourly: dict[str, Decimal] = {}
    for srv in plan.servers:
        for rc, rate in srv.hourly.items():
            hourly[rc] = hourly.get(rc, Decimal(0)) + Decimal(rate)
    return PlatformPlanOut(
        name=plan.name,
        type=plan.type,
        lease=plan.lease,
        parameters=dict(plan.parameters),
        servers=[PlannedServerOut(**s.__dict__) for s in plan.servers],
        vcpus=sum(s.vcpus for s in plan.servers),
        memory_mb=sum(s.memory_mb for s in plan.servers),
        gpus=sum(s.gpus for s in plan.servers),
        hourly={rc: str(v) for rc, v in sorted(hourly.items())},
    )


def create_input(body: PlatformCreate) -> platforms.PlatformCreate:
    """The service's create request from the API's body."""
    return platforms.PlatformCreate(
        name=body.name,
        type=body.type,
        parameters=dict(body.parameters),
        lease=body.lease,
        access=tuple(body.access) if body.access is not None else None,
        preemptible=body.preemptible,
    )


@router.get("/platforms/{ref}", response_model=PlatformOut)
def get_platform(ref: str, caller: CallerDep, rt: RuntimeDep) -> PlatformOut:
    """One platform, by name or id."""
    return platform_out(rt, platforms.get_platform(rt.db, caller, ref), caller)


@router.patch("/platforms/{ref}", response_model=PlatformOut, status_code=202)
def patch_platform(ref: str, body: PlatformPatch, caller: CallerDep, rt: RuntimeDep) -> PlatformOut:
    """Change mutable parameters (e.g. the number of compute nodes)."""
    row = platforms.patch_platform(
        rt.booking,
        rt.queue,
        caller,
        ref,
        dict(body.parameters),
        image_names(rt),
        rt.backend.used_ranges,
    )
    return platform_out(rt, row, caller)


@router.delete("/platforms/{ref}", response_model=PlatformOut, status_code=202)
def delete_platform(ref: str, caller: CallerDep, rt: RuntimeDep) -> PlatformOut:
    """Delete a platform: its services, servers and networks go."""
    return platform_out(rt, platforms.delete_platform(rt.db, rt.queue, caller, ref), caller)


@router.post("/platforms/{ref}/retry", response_model=PlatformOut, status_code=202)
def retry_platform(ref: str, caller: CallerDep, rt: RuntimeDep) -> PlatformOut:
    """Resume a FAILED platform from the step that failed."""
    return platform_out(rt, platforms.retry_platform(rt.db, rt.queue, caller, ref), caller)


@router.put("/platforms/{ref}/access", response_model=PlatformOut)
def set_access(ref: str, body: PlatformAccessSet, caller: CallerDep, rt: RuntimeDep) -> PlatformOut:
    """Who may use the platform's services (members of its tenancy)."""
    row = platforms.set_access(rt.db, rt.queue, caller, ref, list(body.users))
    return platform_out(rt, row, caller)


@router.get("/platforms/{ref}/services", response_model=Page[PlatformServiceOut])
def services(
    ref: str, caller: CallerDep, rt: RuntimeDep, page: PagingDep
) -> Page[PlatformServiceOut]:
    """The platform's services: their URLs through the gateway and whether they answer."""
    row = platforms.get_platform(rt.db, caller, ref)
    v = platforms.view(rt.db, row, _url_format(rt))
    return paged(_services_out(rt, v), page, lambda s: s.name, lambda s: s)


@router.get("/platforms/{ref}/events", response_model=Page[EventOut])
def events(ref: str, caller: CallerDep, rt: RuntimeDep, page: PagingDep) -> Page[EventOut]:
    """The platform's timeline: created, steps (with timings), services up and down,
    scaling, lease warnings, failures."""
    rows = platforms.platform_events(rt.db, caller, ref)
    return paged(rows, page, lambda e: e.id, EventOut.model_validate)
