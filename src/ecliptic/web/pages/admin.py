"""The operator's pages: hosts and their state, the bare-metal-or-hypervisor pool, tenancies
and members, credit allocations, preemptible capacity, and how reservations are used.
Administrators only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, Response

from ecliptic.api.deps import runtime
from ecliptic.api.schemas import CreditAllocate, MembershipSet, TenancyCreate
from ecliptic.errors import Conflict, Forbidden, InvalidInput, NotFound
from ecliptic.runtime import Runtime
from ecliptic.services import catalogue, credits, efficiency, identity, leases, pool, preemptible
from ecliptic.services.booking import minute
from ecliptic.services.caller import Caller
from ecliptic.web import calendar as drawing
from ecliptic.web.forms import errors_of, parse
from ecliptic.web.pages.common import page_router
from ecliptic.web.render import page, redirect
from ecliptic.web.session import Visitor, VisitorDep, form_of, one

router = page_router()
HOST_STATES = ("up", "down", "maintenance")
GRANT_ROWS = 5
"""Resource-class rows of the grant form."""
MAX_REPORT_LINES = 20
Line = Annotated[list[str], Query(max_length=MAX_REPORT_LINES)]
Short = Annotated[str, Query(max_length=63)]


class Operator:
    """An administrator on an operator's page: the visitor, as a caller, and the runtime."""

    def __init__(self, request: Request, v: Visitor) -> None:
        if not v.is_admin:
            raise Forbidden(
                "this page is for the cloud's administrators; ask one if you need something "
                "changed here, or go back to your tenancy's pages"
            )
        self.request = request
        self.v = v
        self.rt: Runtime = runtime(request)
        self.caller = Caller(v.user_id, v.user_name, v.is_admin)

    def page(self, template: str, title: str, status: int = 200, **values: Any) -> HTMLResponse:
        """An operator's page."""
        return page(self.request, template, self.v, title=title, status=status, **values)

    async def form(self) -> dict[str, list[str]]:
        """The posted form (refused unless from this session's pages on this site)."""
        return await form_of(self.request, self.v)


# ---------------------------------------------------------------------------- hosts


def _hosts(op: Operator) -> list[dict[str, Any]]:
    out = []
    for h, u in catalogue.list_hosts(op.rt.db, op.caller):
        out.append(
            {
                "name": h.name,
                "state": h.state,
                "state_reason": h.state_reason,
                "source": h.source,
                "node_id": h.node_id,
                "role": h.pool.phase if h.pool else "",
                "vcpus": h.vcpus,
                "used_vcpus": u.used_vcpus,
                "memory_gib": h.memory_mb / 1024,
                "used_memory_gib": u.used_memory_mb / 1024,
                "gpus": [{**g, "used": u.used_gpus.get(g.get("model", ""), 0)} for g in h.gpus],
                "nics": h.nics,
                "servers": u.servers,
                "schedulable": u.schedulable,
                "properties": h.properties,
            }
        )
    return out


POOL_DONE = {
    "hypervisor": "Host {host} is to be a hypervisor, and held so until given back to the policy.",
    "baremetal": "Host {host} is to be bare metal, and held so until given back to the policy.",
    "auto": "Host {host} is the policy's again: bookings, idle time and spares decide its role.",
    "drain": "Host {host} is draining: no new VMs, its servers move to other hypervisors.",
}
"""What the hosts page says after a pool action (``done``)."""
CONVERT_TO = ("hypervisor", "baremetal", "auto")


def _pool(op: Operator) -> list[pool.PoolRow] | None:
    """The pool's table, or None when this instance has no Ironic (so no pool)."""
    if op.rt.ctx.ironic is None:
        return None
    return pool.pool_status(op.rt.booking, op.caller, op.rt.pool_policy())


@router.get("/admin/hosts")
async def hosts_page(
    request: Request,
    v: VisitorDep,
    host: Short = "",
    state: Short = "",
    done: Short = "",
    line: Line = [],  # noqa: B006 (FastAPI copies query defaults)
) -> HTMLResponse:
    """Every host: capacity and use, GPUs, NICs, state, source and pool role; changing the
    state; the pool's hosts with converting and draining."""
    op = Operator(request, v)
    rows = await run_in_threadpool(_hosts, op)
    pool_rows = await run_in_threadpool(_pool, op)
    flash = f"Host {host} is now {state}." if host and state in HOST_STATES else ""
    if host and done in POOL_DONE:
        flash = POOL_DONE[done].format(host=host)
    return op.page(
        "admin/hosts.html",
        "Hosts",
        hosts=rows,
        states=HOST_STATES,
        flash=flash,
        state_changed=bool(host and state in HOST_STATES),
        report=line,
        pool=pool_rows,
        convert_to=CONVERT_TO,
    )


@router.post("/admin/hosts/{name}/state")
async def host_state(request: Request, v: VisitorDep, name: str) -> Response:
    """Mark a host up, down or in maintenance; leases on it are healed."""
    op = Operator(request, v)
    form = await op.form()
    state = one(form, "state")
    if state not in HOST_STATES:
        raise InvalidInput(
            f"'{state}' is not a host state: choose up, down or maintenance",
            errors=[{"field": "state", "msg": "choose up, down or maintenance"}],
        )
    report = await run_in_threadpool(
        leases.set_host_state, op.rt.booking, op.rt.queue, op.caller, name, state
    )
    lines = [("line", x) for x in report[:MAX_REPORT_LINES]]
    query = [("host", name), ("state", state), *lines]
    return redirect("/admin/hosts?" + urlencode(query))


@router.post("/admin/hosts/{name}/convert")
async def host_convert(request: Request, v: VisitorDep, name: str) -> Response:
    """Convert a pool host to a hypervisor or bare metal (held so), or give it back to the
    policy; a conversion that would break a booking is refused with the reason."""
    op = Operator(request, v)
    form = await op.form()
    to = one(form, "to")
    if to not in CONVERT_TO:
        raise InvalidInput(
            f"'{to}' is not a role: choose hypervisor, baremetal or auto",
            errors=[{"field": "to", "msg": "choose hypervisor, baremetal or auto"}],
        )
    policy = op.rt.pool_policy()
    await run_in_threadpool(pool.convert, op.rt.booking, op.rt.queue, op.caller, name, to, policy)
    return redirect("/admin/hosts?" + urlencode({"host": name, "done": to}))


@router.post("/admin/hosts/{name}/drain")
async def host_drain(request: Request, v: VisitorDep, name: str) -> Response:
    """Drain a hypervisor of the pool: no new VMs, its servers moved to other hypervisors."""
    op = Operator(request, v)
    await op.form()
    policy = op.rt.pool_policy()
    await run_in_threadpool(pool.drain, op.rt.booking, op.rt.queue, op.caller, name, policy)
    return redirect("/admin/hosts?" + urlencode({"host": name, "done": "drain"}))


# ---------------------------------------------------------------------------- tenancies


def _tenancies(op: Operator) -> list[dict[str, Any]]:
    return [
        {
            "name": t.name,
            "description": t.description,
            "members": len(identity.list_members(op.rt.db, op.caller, t.name)),
            "created_at": t.created_at,
        }
        for t in identity.list_tenancies(op.rt.db, op.caller)
    ]


async def _tenancies_page(
    op: Operator,
    *,
    status: int = 200,
    q: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    message: str = "",
    flash: str = "",
) -> HTMLResponse:
    return op.page(
        "admin/tenancies.html",
        "Tenancies",
        status=status,
        tenancies=await run_in_threadpool(_tenancies, op),
        q=q or {"name": "", "description": ""},
        errors=errors or {},
        message=message,
        flash=flash,
    )


@router.get("/admin/tenancies")
async def tenancies_page(request: Request, v: VisitorDep, created: Short = "") -> HTMLResponse:
    """Every tenancy with its member count, and creating one."""
    op = Operator(request, v)
    flash = f"Tenancy {created} created: add its members." if created else ""
    return await _tenancies_page(op, flash=flash)


@router.post("/admin/tenancies")
async def create_tenancy(request: Request, v: VisitorDep) -> Response:
    """Create a tenancy."""
    op = Operator(request, v)
    form = await op.form()
    q = {"name": one(form, "name"), "description": one(form, "description")}
    try:
        body = parse(TenancyCreate, q)
        t = await run_in_threadpool(
            identity.create_tenancy, op.rt.db, op.caller, body.name, body.description
        )
    except InvalidInput as exc:
        return await _tenancies_page(
            op, status=422, q=q, errors=errors_of(exc), message="Check the fields marked below."
        )
    except Conflict as exc:
        return await _tenancies_page(
            op, status=409, q=q, errors={"name": exc.message}, message=exc.message
        )
    return redirect("/admin/tenancies?" + urlencode({"created": t.name}))


def _members(op: Operator, name: str) -> dict[str, Any]:
    with op.rt.db.read() as session:
        tenancy = identity.find_tenancy(session, name)
        session.expunge(tenancy)
    members = identity.list_members(op.rt.db, op.caller, tenancy.name)
    return {
        "t": tenancy,
        "members": sorted(
            ({"user": m.user.name, "role": m.role} for m in members), key=lambda m: m["user"]
        ),
        "users": sorted(u.name for u in identity.list_users(op.rt.db, op.caller)),
    }


async def _tenancy_page(
    op: Operator,
    name: str,
    *,
    status: int = 200,
    q: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    message: str = "",
    flash: str = "",
) -> HTMLResponse:
    values = await run_in_threadpool(_members, op, name)
    return op.page(
        "admin/tenancy.html",
        f"Tenancy {values['t'].name}",
        status=status,
        q=q or {"user": "", "role": "member"},
        errors=errors or {},
        message=message,
        flash=flash,
        **values,
    )


DONE = {
    "added": "{user} is now a {role} of this tenancy.",
    "changed": "{user} is now a {role} of this tenancy.",
    "removed": "{user} was removed from this tenancy and its access lists.",
}


@router.get("/admin/tenancies/{name}")
async def tenancy_page(
    request: Request,
    v: VisitorDep,
    name: str,
    done: Short = "",
    user: Short = "",
    role: Short = "",
) -> HTMLResponse:
    """A tenancy's members with their roles; adding, changing and removing them."""
    op = Operator(request, v)
    flash = DONE[done].format(user=user, role=role) if done in DONE and user else ""
    return await _tenancy_page(op, name, flash=flash)


def _after(name: str, done: str, user: str, role: str = "") -> Response:
    return redirect(
        f"/admin/tenancies/{name}?" + urlencode({"done": done, "user": user, "role": role})
    )


@router.post("/admin/tenancies/{name}/members")
async def set_member(request: Request, v: VisitorDep, name: str) -> Response:
    """Add a user to the tenancy, or change their role."""
    op = Operator(request, v)
    form = await op.form()
    q = {"user": one(form, "user"), "role": one(form, "role", "member")}
    done = "changed" if one(form, "change") else "added"
    try:
        body = parse(MembershipSet, q)
        await run_in_threadpool(
            identity.set_membership, op.rt.db, op.caller, name, body.user, body.role
        )
    except InvalidInput as exc:
        return await _tenancy_page(
            op, name, status=422, q=q, errors=errors_of(exc), message="Check the fields below."
        )
    except NotFound as exc:
        if "user" not in exc.message:
            raise
        return await _tenancy_page(
            op,
            name,
            status=404,
            q=q,
            errors={"user": f"{exc.message}: give the name of an existing user"},
            message=exc.message,
        )
    return _after(name, done, body.user, body.role)


@router.post("/admin/tenancies/{name}/members/{user}/remove")
async def remove_member(request: Request, v: VisitorDep, name: str, user: str) -> Response:
    """Remove a user from the tenancy."""
    op = Operator(request, v)
    await op.form()
    await run_in_threadpool(identity.remove_membership, op.rt.db, op.caller, name, user)
    return _after(name, "removed", user)


# ---------------------------------------------------------------------------- credits


def _allocations(op: Operator) -> tuple[list[str], list[dict[str, Any]]]:
    tenancies = identity.list_tenancies(op.rt.db, op.caller)
    rows: list[dict[str, Any]] = []
    with op.rt.db.read() as session:
        for t in tenancies:
            rows += [{"tenancy": t.name, "b": b} for b in credits.balances(session, t.id)]
    return [t.name for t in tenancies], rows


def _blank_grant() -> dict[str, Any]:
    return {
        "tenancy": "",
        "name": "",
        "start": "",
        "end": "",
        "rows": [{"rc": "", "hours": ""} for _ in range(GRANT_ROWS)],
    }


async def _credits_page(
    op: Operator,
    *,
    status: int = 200,
    q: dict[str, Any] | None = None,
    errors: dict[str, str] | None = None,
    message: str = "",
    flash: str = "",
) -> HTMLResponse:
    names, rows = await run_in_threadpool(_allocations, op)
    return op.page(
        "admin/credits.html",
        "Allocations",
        status=status,
        tenancies=names,
        allocations=rows,
        classes=sorted({r["b"].resource_class for r in rows} | {"vcpu"}),
        q=q or _blank_grant(),
        errors=errors or {},
        message=message,
        flash=flash,
    )


@router.get("/admin/credits")
async def credits_page(
    request: Request, v: VisitorDep, granted: Short = "", to: Short = ""
) -> HTMLResponse:
    """Every tenancy's allocations, and granting one."""
    op = Operator(request, v)
    flash = f"Allocation {granted} granted to {to}." if granted and to else ""
    return await _credits_page(op, flash=flash)


def _moment(text: str, default: str | None) -> datetime | str | None:
    """A ``datetime-local`` field read as UTC (left as text when not one: the model says
    what is wrong)."""
    if not text:
        return default
    if text == "now":
        return text
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        return text
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@router.post("/admin/credits")
async def grant(request: Request, v: VisitorDep) -> Response:
    """Grant resource-hours to a tenancy for a window."""
    op = Operator(request, v)
    form = await op.form()
    q = _blank_grant()
    q.update({k: one(form, k) for k in ("tenancy", "name", "start", "end")})
    q["rows"] = [
        {"rc": one(form, f"rc_{i}"), "hours": one(form, f"hours_{i}")} for i in range(GRANT_ROWS)
    ]
    hours: dict[str, Any] = {r["rc"]: r["hours"] for r in q["rows"] if r["rc"] or r["hours"]}
    data = {
        "tenancy": q["tenancy"],
        "name": q["name"],
        "hours": hours,
        "start": _moment(q["start"], "now"),
        "end": _moment(q["end"], None),
    }
    try:
        body = parse(CreditAllocate, {k: val for k, val in data.items() if val is not None})
        start = minute(op.rt.clock.now()) if body.start == "now" else body.start
        await run_in_threadpool(
            credits.allocate,
            op.rt.db,
            op.caller,
            body.tenancy,
            body.name,
            {rc: Decimal(str(h)) for rc, h in body.hours.items()},
            start,
            body.end,
        )
    except InvalidInput as exc:
        errors = errors_of(exc)
        for key in [k for k in errors if k.startswith("hours.")]:
            errors.setdefault("hours", f"{key.split('.')[1]}: {errors[key]}")
        return await _credits_page(
            op, status=422, q=q, errors=errors, message=exc.message or "Check the fields below."
        )
    except (Conflict, NotFound) as exc:
        field = "tenancy" if isinstance(exc, NotFound) else "name"
        return await _credits_page(
            op, status=exc.status, q=q, errors={field: exc.message}, message=exc.message
        )
    return redirect("/admin/credits?" + urlencode({"granted": body.name, "to": body.tenancy}))


# ---------------------------------------------------------------------------- preemptible


@router.get("/admin/preemptible")
async def preemptible_page(request: Request, v: VisitorDep) -> HTMLResponse:
    """The preemptible settings and the preemptible servers running now."""
    op = Operator(request, v)
    rows = await run_in_threadpool(preemptible.running, op.rt.booking, op.caller)
    s = op.rt.settings
    settings = [
        (
            "Minimum lifetime",
            f"{int(s.preemptible_min_lifetime.total_seconds() // 60)} min",
            "ECLIPTIC_PREEMPTIBLE_MIN_LIFETIME_MINUTES",
            "No lease may evict a preemptible server younger than this.",
        ),
        (
            "Grace",
            f"{int(s.preemptible_grace.total_seconds())} s",
            "ECLIPTIC_PREEMPTIBLE_GRACE_SECONDS",
            "Between the stop signal and deletion of a preempted server.",
        ),
        (
            "Platforms on preemptible capacity",
            "on" if s.platform_preemptible else "off",
            "ECLIPTIC_PLATFORM_PREEMPTIBLE",
            "Whether platforms may backfill what nobody reserved.",
        ),
    ]
    return op.page("admin/preemptible.html", "Preemptible", settings=settings, servers=rows)


# ---------------------------------------------------------------------------- efficiency


@router.get("/admin/efficiency")
async def efficiency_page(
    request: Request, v: VisitorDep, days: Annotated[int, Query(ge=1, le=366)] = 30
) -> HTMLResponse:
    """Per tenancy: host-hours reserved against host-hours used by the leases' servers."""
    op = Operator(request, v)
    end = op.rt.clock.now()
    start = end - timedelta(days=days)
    rows = await run_in_threadpool(efficiency.tenancy_efficiency, op.rt.db, op.caller, start, end)
    svg = (
        drawing.bars(
            f"Reserved and used host-hours per tenancy, last {days} days",
            [(r.tenancy, r.reserved_hours, r.used_hours) for r in rows],
            first="reserved",
            second="used",
            unit="host-hours",
        )
        if rows
        else None
    )
    retention = op.rt.booking.deleted_server_retention
    return op.page(
        "admin/efficiency.html",
        "Efficiency",
        rows=rows,
        svg=svg,
        days=days,
        start=start,
        end=end,
        retention=retention,
    )
