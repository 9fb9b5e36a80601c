"""The catalogue: platform types as cards, and a create form made from a type's
parameters, with what it will make and cost shown before confirming."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from ecliptic.api.routes.platforms import create_input, image_names, plan_out
from ecliptic.api.schemas import PlatformCreate
from ecliptic.errors import InvalidInput, NotFound
from ecliptic.platforms.types import CatalogueEntry, Parameter, PlatformType
from ecliptic.services import catalogue, identity, leases, platforms
from ecliptic.web.forms import Checked, check, parse
from ecliptic.web.pages.common import Here, HereDep, page_router
from ecliptic.web.render import page, redirect
from ecliptic.web.session import form_of

router = page_router()
T = TypeVar("T")
MAX_QUERY = 8192


def _entry(here: Here, name: str) -> CatalogueEntry:
    entry = here.rt.catalogue.get(name)
    if entry is None:
        raise NotFound(f"no platform type '{name}' in the catalogue")
    return entry


def typed(p: Parameter, raw: str | None) -> Any:
    """A form field's text as the parameter's kind holds it (None: left empty)."""
    if p.kind == "boolean":
        return raw in ("on", "true", "1", "yes")
    if raw is None or raw.strip() == "":
        return None
    raw = raw.strip()
    try:
        if p.kind == "integer":
            return int(raw)
        if p.kind == "number":
            return float(raw)
    except ValueError:
        what = "a whole number" if p.kind == "integer" else "a number"
        raise InvalidInput(
            f"parameter '{p.name}': must be {what}, not '{raw[:40]}'",
            errors=[
                {
                    "loc": ["parameters", p.name],
                    "field": f"parameters.{p.name}",
                    "msg": f"must be {what}",
                }
            ],
        ) from None
    return raw


def body_from(
    t: PlatformType, form: dict[str, list[str]], *, patch: bool = False
) -> dict[str, Any]:
    """The API's create body from the form's fields (``p.NAME`` per parameter)."""
    params: dict[str, Any] = {}
    for p in t.parameters:
        if p.hidden or (patch and p.immutable):
            continue
        key = f"p.{p.name}"
        if p.kind == "boolean" and f"{key}.shown" in form:
            params[p.name] = typed(p, (form.get(key) or [""])[0])
            continue
        if key not in form:
            continue
        value = typed(p, form[key][0])
        if value is not None:
            params[p.name] = value
    if patch:
        return {"parameters": params}
    body: dict[str, Any] = {
        "name": (form.get("name") or [""])[0].strip(),
        "type": t.name,
        "parameters": params,
    }
    if "access" in form:
        body["access"] = [u for u in form["access"] if u]
    if (form.get("preemptible") or [""])[0] == "on":
        body["preemptible"] = True
    return body


def choices_for(here: Here, t: PlatformType) -> dict[str, list[tuple[str, str]]]:
    """The options of the parameters whose kinds name the tenancy's objects."""
    out: dict[str, list[tuple[str, str]]] = {}
    flavors = catalogue.list_flavors(here.rt.db)
    now = datetime.now(UTC)
    for p in t.parameters:
        if p.kind == "size":
            out[p.name] = [
                (
                    f.name,
                    f"{f.name}: {f.vcpus} vCPU, {f.memory_mb / 1024:g} GiB"
                    + (f", {f.gpus} x {f.gpu_model}" if f.gpus else ""),
                )
                for f in flavors
                if f.vcpus >= p.min_vcpus
                and f.memory_mb >= p.min_memory_mb
                and f.gpus >= p.min_gpus
            ]
        elif p.kind == "lease":
            rows = leases.list_leases(here.rt.booking, here.caller)
            out[p.name] = [
                (x.name, f"{x.name} ({x.phase.lower()}, until {x.end_at:%Y-%m-%d %H:%M} UTC)")
                for x in rows
                if x.end_at > now
            ]
        elif p.kind == "image":
            out[p.name] = [(n, n) for n in sorted(image_names(here.rt)())]
    return out


def members(here: Here) -> list[str]:
    """The user names of the tenancy's members (for access lists)."""
    return sorted(m.user.name for m in identity.list_members(here.rt.db, here.caller, here.tenancy))


async def _place(here: Here, fn: Callable[..., T], body: PlatformCreate) -> T:
    """Create (or plan) a platform as the API does, with this runtime's settings."""
    return await here.run(
        fn,
        here.rt.booking,
        here.rt.queue,
        here.caller,
        here.rt.catalogue,
        image_names(here.rt),
        create_input(body),
        here.rt.backend.used_ranges,
        allow_preemptible=here.rt.settings.platform_preemptible,
    )


@router.get("/t/{tenancy}/catalogue")
async def catalogue_page(here: HereDep) -> HTMLResponse:
    """Every platform type on offer, as cards."""
    types, _broken = here.rt.catalogue.scan()
    return page(
        here.request,
        "catalogue/list.html",
        here.v,
        tenancy=here.tenancy,
        title="Catalogue",
        types=[types[n].type for n in sorted(types)],
    )


@router.get("/t/{tenancy}/catalogue/{name}")
async def create_page(here: HereDep, name: str) -> HTMLResponse:
    """The create form of one type: a field per parameter (the right widget per kind);
    submitted, it shows the plan (servers, hosts, cost) and asks to confirm."""
    request: Request = here.request
    t = _entry(here, name).type
    if len(request.url.query) > MAX_QUERY:
        raise InvalidInput("this form is too large")
    form: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        form.setdefault(k, []).append(v)
    submitted = "name" in form

    async def plan() -> Any:
        result = await _place(
            here, platforms.plan_platform, parse(PlatformCreate, body_from(t, form))
        )
        return plan_out(result)

    got = await check(plan) if submitted else Checked[Any]()
    return page(
        request,
        "catalogue/create.html",
        here.v,
        tenancy=here.tenancy,
        title=f"New {t.label or t.name}",
        t=t,
        form=form,
        submitted=submitted,
        plan=got.value,
        errors=got.errors,
        message=got.message,
        choices=await here.run(choices_for, here, t),
        members=await here.run(members, here),
        preemptible=here.rt.settings.platform_preemptible,
    )


@router.post("/t/{tenancy}/catalogue/{name}")
async def create(here: HereDep, name: str) -> Response:
    """Create the platform (placed now, all of it or nothing; built in the background)."""
    form = await form_of(here.request, here.v)
    t = _entry(here, name).type
    row = await _place(here, platforms.create_platform, parse(PlatformCreate, body_from(t, form)))
    return redirect(f"{here.base}/platforms/{row.name}")
