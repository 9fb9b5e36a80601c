"""A tenancy's resources: its servers (console log, events, delete), its credits and
ledger, and the images servers boot from."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import Query
from fastapi.responses import HTMLResponse, Response

from ecliptic.api.render import server_out
from ecliptic.errors import EclipticError
from ecliptic.services import credits, images, leases, platforms, servers
from ecliptic.web.pages.common import Here, HereDep, page_router
from ecliptic.web.render import page, redirect
from ecliptic.web.session import form_of

router = page_router()
LOG_TAIL_BYTES = 64 * 1024
"""How much of a console log a page shows (its end)."""
LEDGER_PAGE = 50
SERVER_PAGE = 100
Marker = Annotated[str, Query(max_length=200)]


def _names(here: Here) -> tuple[dict[str, str], dict[str, str]]:
    """Lease and platform names of the tenancy, by id."""
    rt, c = here.rt, here.caller
    lease_names = {x.id: x.name for x in leases.list_leases(rt.booking, c, include_ended=True)}
    plat_names = {p.id: p.name for p in platforms.list_platforms(rt.db, c)}
    return lease_names, plat_names


@router.get("/t/{tenancy}/servers")
async def servers_page(
    here: HereDep,
    marker: Marker = "",
    done: Annotated[str, Query(max_length=16)] = "",
    name: Annotated[str, Query(max_length=63)] = "",
) -> HTMLResponse:
    """The tenancy's servers, oldest first, a page at a time."""
    rows, nxt = await here.run(
        servers.list_servers,
        here.rt.db,
        here.caller,
        servers.ServerFilter(),
        limit=SERVER_PAGE,
        marker=marker or None,
    )
    lease_names, plat_names = await here.run(_names, here)
    items = [
        {
            "out": server_out(s),
            "lease": lease_names.get(s.lease_id or "", s.lease_id or ""),
            "platform": plat_names.get(s.platform_id or "", s.platform_id or ""),
        }
        for s in rows
    ]
    flash = f"Server {name} is being deleted." if done == "deleted" and name else ""
    return page(
        here.request,
        "resources/servers.html",
        here.v,
        tenancy=here.tenancy,
        title="Servers",
        servers=items,
        next=nxt,
        first=not marker,
        flash=flash,
    )


def _log(here: Here, name: str) -> tuple[str, str]:
    """A server's console log (its tail), or why it cannot be shown."""
    try:
        _, text, _ = servers.console_log(
            here.rt.db, here.rt.backend, here.caller, name, LOG_TAIL_BYTES
        )
    except EclipticError as exc:
        return "", exc.message
    return text, ""


@router.get("/t/{tenancy}/servers/{name}")
async def server_page(here: HereDep, name: str) -> HTMLResponse:
    """One server: its facts, console log, events, and delete."""
    rt, c = here.rt, here.caller
    srv = await here.run(servers.get_server, rt.db, c, name)
    out = server_out(srv)
    events = await here.run(servers.server_events, rt.db, c, name)
    text, problem = await here.run(_log, here, name)
    lease_names, plat_names = await here.run(_names, here)
    return page(
        here.request,
        "resources/server.html",
        here.v,
        tenancy=here.tenancy,
        title=f"Server {out.name}",
        s=out,
        lease=lease_names.get(out.lease_id or "", out.lease_id or ""),
        platform=plat_names.get(srv.platform_id or "", srv.platform_id or ""),
        events=events,
        log=text,
        log_problem=problem,
    )


@router.get("/t/{tenancy}/servers/{name}/log")
async def server_log(here: HereDep, name: str) -> Response:
    """The console log alone (for htmx to refresh it in place); a plain browser goes to
    the server's page."""
    srv = await here.run(servers.get_server, here.rt.db, here.caller, name)
    if here.request.headers.get("hx-request") != "true":
        return redirect(f"{here.base}/servers/{name}#log")
    text, problem = await here.run(_log, here, name)
    return page(
        here.request,
        "resources/log.html",
        here.v,
        tenancy=here.tenancy,
        s=server_out(srv),
        log=text,
        log_problem=problem,
    )


@router.post("/t/{tenancy}/servers/{name}/delete")
async def delete_server(here: HereDep, name: str) -> Response:
    """Delete a server (refused for a platform's server unless on its access list)."""
    await form_of(here.request, here.v)
    srv = await here.run(servers.delete_server, here.rt.db, here.rt.queue, here.caller, name)
    return redirect(f"{here.base}/servers?" + urlencode({"done": "deleted", "name": srv.name}))


def _ledger(here: Here, before: int | None) -> dict[str, Any]:
    rt, c = here.rt, here.caller
    balances = credits.list_balances(rt.db, c)
    rows = credits.list_ledger(rt.db, c, LEDGER_PAGE, before=before)
    lease_names = {x.id: x.name for x in leases.list_leases(rt.booking, c, include_ended=True)}
    ids = {e.server_id for e in rows if e.server_id}
    server_names: dict[str, str] = {}
    if ids:
        live, _ = servers.list_servers(rt.db, c, servers.ServerFilter(), limit=1000)
        server_names.update({s.id: s.name for s in live if s.id in ids})
        since = rt.clock.now() - rt.booking.deleted_server_retention
        gone = servers.list_deleted_servers(rt.db, c, since, limit=None)
        server_names.update({s.id: s.name for s in gone if s.id in ids})
    return {
        "balances": balances,
        "allocation_names": {b.allocation_id: b.name for b in balances},
        "ledger": rows,
        "lease_names": lease_names,
        "server_names": server_names,
        "older": rows[-1].id if len(rows) == LEDGER_PAGE else None,
    }


@router.get("/t/{tenancy}/credits")
async def credits_page(
    here: HereDep, before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None
) -> HTMLResponse:
    """Balances per allocation and the ledger, newest first, a page at a time."""
    values = await here.run(_ledger, here, before)
    return page(
        here.request,
        "resources/credits.html",
        here.v,
        tenancy=here.tenancy,
        title="Credits",
        before=before,
        **values,
    )


@router.get("/t/{tenancy}/images")
async def images_page(here: HereDep) -> HTMLResponse:
    """Images servers boot from: what is in them, their size and build status."""
    rows = await here.run(images.list_images, here.rt.backend, here.rt.image_builds)
    return page(
        here.request,
        "resources/images.html",
        here.v,
        tenancy=here.tenancy,
        title="Images",
        images=sorted(rows, key=lambda i: i.name),
    )
