"""Platforms: the list, and a platform's page (phase and live timeline, services through the
gateway, usage, access list, patch, retry, delete, a failed step's output)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Header, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from markdown_it import MarkdownIt
from markupsafe import Markup

from ecliptic.api.routes.platforms import image_names, platform_out
from ecliptic.api.schemas import PlatformAccessSet, PlatformPatch
from ecliptic.errors import InvalidInput, NotFound, TooManyAttempts, Unauthenticated
from ecliptic.services import leases, platforms
from ecliptic.store.models import Event, Platform
from ecliptic.web.forms import parse
from ecliptic.web.pages.catalogue import body_from, choices_for, members
from ecliptic.web.pages.common import Here, HereDep, page_router
from ecliptic.web.render import page, redirect
from ecliptic.web.session import caller_in, form_of, load_visitor

router = page_router()
MAX_STREAMS = 8
"""Timelines one browser session may follow at once (each asks the store every second)."""
STREAM_S = 300.0
"""An event stream ends after this long; the browser's EventSource reconnects (resuming
from the last event it saw), so no connection is held forever."""
TICK_S = 1.0
_md = MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table")


def usage_html(text: str) -> Markup:
    """A type's usage text (Markdown, raw HTML off) as HTML."""
    return Markup(_md.render(text))


def _event(e: Event) -> dict[str, Any]:
    moved = e.from_phase != e.to_phase
    message = (f"{e.from_phase or 'new'} → {e.to_phase}: " if moved else "") + e.reason
    warning = e.to_phase in ("FAILED", "DEGRADED") or "warning" in e.reason.lower()
    return {
        "id": e.id,
        "at": f"{e.at:%H:%M:%S}",
        "message": message,
        "kind": "warning" if warning else "info",
    }


def _events_after(here: Here, name: str, after: int) -> tuple[str, list[dict[str, Any]]]:
    rows = platforms.platform_events(here.rt.db, here.caller, name)
    with here.rt.db.read() as session:
        row = platforms.find_platform(session, here.caller.require_tenancy(), name)
        phase = row.phase
    return phase, [_event(e) for e in rows if e.id > after]


def _still(here: Here) -> Here:
    """The same page's visitor and caller, looked up again (the session may have ended)."""
    v = load_visitor(here.rt, here.v.token)
    return Here(here.request, v, caller_in(here.rt, v, here.tenancy), here.rt)


@router.get("/t/{tenancy}/platforms")
async def list_page(
    here: HereDep, deleting: Annotated[str, Query(max_length=63)] = ""
) -> HTMLResponse:
    """The tenancy's platforms."""
    rows = await here.run(platforms.list_platforms, here.rt.db, here.caller)
    in_leases = await here.run(leases.list_leases, here.rt.booking, here.caller)
    lease_names = {x.id: x.name for x in in_leases}
    flash = f"Platform {deleting} is being deleted." if deleting else ""
    return page(
        here.request,
        "platforms/list.html",
        here.v,
        tenancy=here.tenancy,
        title="Platforms",
        platforms=rows,
        lease_names=lease_names,
        flash=flash,
    )


def _load(here: Here, name: str) -> tuple[Platform, Any, list[Event], list[str]]:
    row = platforms.get_platform(here.rt.db, here.caller, name)
    out = platform_out(here.rt, row, here.caller)
    events = platforms.platform_events(here.rt.db, here.caller, name)
    return row, out, events, members(here)


@router.get("/t/{tenancy}/platforms/{name}")
async def platform_page(
    here: HereDep,
    name: str,
    delete: Annotated[bool, Query()] = False,
    done: Annotated[str, Query(max_length=16)] = "",
) -> HTMLResponse:
    """One platform, live while it builds."""
    row, out, events, people = await here.run(_load, here, name)
    ptype = platforms.type_of(row)
    mutable = [p for p in ptype.parameters if not (p.immutable or p.hidden or p.kind == "lease")]
    flash = {
        "patched": "Change saved: the platform is updating.",
        "access": "Access list saved.",
        "retry": "Retrying from the failed step.",
        "deleting": "Deleting.",
    }.get(done, "")
    return page(
        here.request,
        "platforms/show.html",
        here.v,
        tenancy=here.tenancy,
        title=f"Platform {row.name}",
        p=out,
        row=row,
        ptype=ptype,
        events=[_event(e) for e in events],
        members=people,
        mutable=mutable,
        usage=usage_html(out.usage),
        confirm_delete=delete,
        flash=flash,
        choices=await here.run(choices_for, here, ptype),
        gateway_host=here.rt.settings.gateway_ssh_public
        or (here.request.url.hostname or "GATEWAY"),
    )


@router.get("/t/{tenancy}/platforms/{name}/events.json")
async def events_json(
    here: HereDep, name: str, after: Annotated[int, Query(ge=0)] = 0
) -> JSONResponse:
    """The timeline after event ``after`` and the phase (the page's polling fallback)."""
    phase, events = await here.run(_events_after, here, name, after)
    return JSONResponse({"phase": phase, "events": events}, headers={"Cache-Control": "no-store"})


@router.get("/t/{tenancy}/platforms/{name}/events/stream")
async def events_stream(
    here: HereDep,
    name: str,
    last_event_id: Annotated[str, Header(max_length=20)] = "",
) -> StreamingResponse:
    """The timeline as server-sent events: new events as they happen, and the phase."""
    after = int(last_event_id) if last_event_id.isdigit() else 0
    phase, first = await here.run(_events_after, here, name, after)
    open_streams: dict[str, int] = here.rt.__dict__.setdefault("_portal_streams", {})
    if open_streams.get(here.v.token, 0) >= MAX_STREAMS:
        raise TooManyAttempts(
            f"this browser follows {MAX_STREAMS} timelines already: close a platform's page",
            retry_after_s=int(STREAM_S),
        )

    async def stream() -> AsyncIterator[str]:
        nonlocal after
        open_streams[here.v.token] = open_streams.get(here.v.token, 0) + 1
        try:
            seen_phase = ""
            batch, current = first, phase
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STREAM_S
            yield "retry: 2000\n\n"
            while True:
                for ev in batch:
                    after = max(after, int(ev["id"]))
                    yield f"id: {ev['id']}\nevent: event\ndata: {json.dumps(ev)}\n\n"
                if current != seen_phase:
                    seen_phase = current
                    yield f"event: phase\ndata: {json.dumps({'phase': current})}\n\n"
                if loop.time() > deadline or await here.request.is_disconnected():
                    return
                await asyncio.sleep(TICK_S)
                try:
                    # Asked again each time: signed out, disabled or no longer a member,
                    # the stream ends at once.
                    now = await here.run(_still, here)
                    current, batch = await here.run(_events_after, now, name, after)
                except (NotFound, Unauthenticated):
                    yield f"event: phase\ndata: {json.dumps({'phase': 'DELETED'})}\n\n"
                    return
        finally:
            left = open_streams.get(here.v.token, 1) - 1
            if left > 0:
                open_streams[here.v.token] = left
            else:
                open_streams.pop(here.v.token, None)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.post("/t/{tenancy}/platforms/{name}/patch")
async def patch(here: HereDep, name: str) -> Response:
    """Change mutable parameters (e.g. the number of nodes)."""
    form = await form_of(here.request, here.v)
    row = await here.run(platforms.get_platform, here.rt.db, here.caller, name)
    body = parse(PlatformPatch, body_from(platforms.type_of(row), form, patch=True))
    await here.run(
        platforms.patch_platform,
        here.rt.booking,
        here.rt.queue,
        here.caller,
        name,
        dict(body.parameters),
        image_names(here.rt),
        here.rt.backend.used_ranges,
    )
    return redirect(f"{here.base}/platforms/{name}?done=patched")


@router.post("/t/{tenancy}/platforms/{name}/access")
async def access(here: HereDep, name: str) -> Response:
    """Who may use the platform: members of the tenancy (the form's ticked boxes, or the
    list with one name added or taken away)."""
    form = await form_of(here.request, here.v)
    row = await here.run(platforms.get_platform, here.rt.db, here.caller, name)
    now = (await here.run(platform_out, here.rt, row, here.caller)).access
    users: list[str]
    if "users" in form or "users.shown" in form:
        users = [u for u in form.get("users", []) if u]
    else:
        users = list(now)
        add = (form.get("add") or [""])[0].strip()
        remove = (form.get("remove") or [""])[0].strip()
        if add and add not in users:
            users.append(add)
        if remove:
            users = [u for u in users if u != remove]
    body = parse(PlatformAccessSet, {"users": users})
    await here.run(
        platforms.set_access, here.rt.db, here.rt.queue, here.caller, name, list(body.users)
    )
    return redirect(f"{here.base}/platforms/{name}?done=access#access")


@router.post("/t/{tenancy}/platforms/{name}/retry")
async def retry(here: HereDep, name: str) -> Response:
    """Resume a failed platform from the step that failed."""
    await form_of(here.request, here.v)
    await here.run(platforms.retry_platform, here.rt.db, here.rt.queue, here.caller, name)
    return redirect(f"{here.base}/platforms/{name}?done=retry")


@router.post("/t/{tenancy}/platforms/{name}/delete")
async def delete(here: HereDep, name: str) -> Response:
    """Delete the platform: its services, servers and networks go (its lease stays)."""
    form = await form_of(here.request, here.v)
    if (form.get("confirm") or [""])[0].strip() != name:
        raise InvalidInput(f"type the platform's name ({name}) to confirm that it is to go")
    await here.run(platforms.delete_platform, here.rt.db, here.rt.queue, here.caller, name)
    return redirect(f"{here.base}/platforms?deleting={name}")
