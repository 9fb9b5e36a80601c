"""Servers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import TypeAdapter

from ecliptic.api.deps import CallerDep, RuntimeDep
from ecliptic.api.paging import Paging, PagingDep, paged
from ecliptic.api.render import server_out, server_row_body
from ecliptic.api.schemas import (
    ConsoleLog,
    DeletedServerOut,
    EventOut,
    ExecRequest,
    ExecResult,
    Page,
    ServerCreate,
    ServerOut,
)
from ecliptic.phases import ServerPhase
from ecliptic.services import images, servers

router = APIRouter(tags=["servers"])
_SERVER_PAGE: TypeAdapter[Page[ServerOut]] = TypeAdapter(Page[ServerOut])


@router.get("/servers", response_model=Page[ServerOut])
def list_servers(
    caller: CallerDep,
    rt: RuntimeDep,
    name: Annotated[str | None, Query(max_length=63, description="substring of the name")] = None,
    phase: Annotated[ServerPhase | None, Query()] = None,
    host: Annotated[str | None, Query(max_length=63)] = None,
    flavor: Annotated[str | None, Query(max_length=63)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    marker: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Servers of your tenancy, oldest first, a page at a time."""
    rows, nxt = servers.list_server_rows(
        rt.db,
        caller,
        servers.ServerFilter(name=name, phase=phase, host=host, flavor=flavor),
        limit=limit,
        marker=marker,
    )
    # Validated once here and sent as is (returning the model would validate it again).
    page = _SERVER_PAGE.validate_python({"items": [server_row_body(r) for r in rows], "next": nxt})
    return Response(_SERVER_PAGE.dump_json(page), media_type="application/json")


@router.get("/deleted-servers", response_model=Page[DeletedServerOut])
def deleted_servers(
    caller: CallerDep,
    rt: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    marker: Annotated[str | None, Query(max_length=200)] = None,
) -> Page[DeletedServerOut]:
    """Servers of your tenancy deleted within the retention period, latest first, with the
    reason (``preempted: ...``, ``lease '...' ended``); their events stay readable."""
    since = rt.clock.now() - rt.booking.deleted_server_retention
    rows = servers.list_deleted_servers(rt.db, caller, since, limit=None)
    return paged(rows, Paging(limit, marker), lambda r: r.id, DeletedServerOut.model_validate)


@router.post("/servers", response_model=ServerOut, status_code=202)
def create_server(body: ServerCreate, caller: CallerDep, rt: RuntimeDep) -> ServerOut:
    """Create a server; it is placed now and built in the background (watch its phase)."""
    nics = [servers.NicRequest(n.network, n.port, n.vnic_type) for n in body.networks]
    images.check_image(rt.backend, body.image)
    srv = servers.create_server(
        rt.booking,
        rt.queue,
        caller,
        body.name,
        body.flavor,
        nics,
        rt.backend.used_ranges,
        lease=body.lease,
        reservation=body.reservation,
        preemptible=body.preemptible,
        image=body.image,
        security_groups=list(body.security_groups) if body.security_groups else None,
    )
    return server_out(srv)


@router.get("/servers/{ref}", response_model=ServerOut)
def get_server(ref: str, caller: CallerDep, rt: RuntimeDep) -> ServerOut:
    """One server, by name or id."""
    return server_out(servers.get_server(rt.db, caller, ref))


@router.delete("/servers/{ref}", response_model=ServerOut, status_code=202)
def delete_server(ref: str, caller: CallerDep, rt: RuntimeDep) -> ServerOut:
    """Delete a server; it goes to DELETING and disappears once cleaned up."""
    return server_out(servers.delete_server(rt.db, rt.queue, caller, ref))


@router.get("/servers/{ref}/log", response_model=ConsoleLog)
def console_log(
    ref: str,
    caller: CallerDep,
    rt: RuntimeDep,
    tail_bytes: Annotated[int, Query(ge=1, le=4 * 1024 * 1024)] = 65536,
    after: Annotated[int | None, Query(ge=0, le=2**62)] = None,
) -> ConsoleLog:
    """The tail of the server's console log (boot messages and service output), or, with
    ``after`` (a previous answer's ``next``), what it gained since (at most ``tail_bytes``)."""
    srv, text, nxt = servers.console_log(rt.db, rt.backend, caller, ref, tail_bytes, after)
    return ConsoleLog(server=srv.name, log=text, next=nxt)


@router.get("/servers/{ref}/events", response_model=Page[EventOut])
def events(ref: str, caller: CallerDep, rt: RuntimeDep, page: PagingDep) -> Page[EventOut]:
    """Phase changes of the server and why they happened."""
    rows = servers.server_events(rt.db, caller, ref)
    return paged(rows, page, lambda e: e.id, EventOut.model_validate)


@router.post("/servers/{ref}/exec", response_model=ExecResult)
def exec_command(ref: str, body: ExecRequest, caller: CallerDep, rt: RuntimeDep) -> ExecResult:
    """Run one command inside the server and wait for it."""
    res, srv = servers.exec_in_server(
        rt.db,
        rt.backend,
        caller,
        ref,
        list(body.argv),
        timeout=body.timeout,
        stdin=body.stdin.encode() if body.stdin is not None else None,
    )
    return ExecResult(
        exit_code=res.exit_code,
        stdout=res.stdout.decode(errors="replace"),
        stderr=res.stderr.decode(errors="replace"),
        duration_s=res.duration_s,
        timed_out=res.timed_out,
        oom_killed=res.oom_killed,
        memory_limit_mb=srv.memory_mb,
    )
