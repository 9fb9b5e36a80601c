"""What every page module uses: its router kind and the tenancy a page acts in."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Request
from fastapi.concurrency import run_in_threadpool

from ecliptic.api.deps import runtime
from ecliptic.runtime import Runtime
from ecliptic.services.caller import Caller
from ecliptic.web.render import PageRoute
from ecliptic.web.session import Visitor, VisitorDep, caller_in

T = TypeVar("T")

TenancyName = Annotated[str, Path(max_length=63, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]


def page_router() -> APIRouter:
    """A router of portal pages (errors as pages, left out of the OpenAPI document)."""
    return APIRouter(route_class=PageRoute, include_in_schema=False)


class Here:
    """A page inside a tenancy: the visitor, acting there, and the runtime."""

    def __init__(self, request: Request, v: Visitor, caller: Caller, rt: Runtime) -> None:
        self.request = request
        self.v = v
        self.caller = caller
        self.rt = rt
        self.tenancy = caller.tenancy_name or ""

    @property
    def base(self) -> str:
        """The tenancy's URL prefix."""
        return f"/t/{self.tenancy}"

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call a (blocking) service off the event loop."""
        return await run_in_threadpool(fn, *args, **kwargs)


async def _here(request: Request, tenancy: TenancyName, v: VisitorDep) -> Here:
    rt = runtime(request)
    caller = await run_in_threadpool(caller_in, rt, v, tenancy)
    return Here(request, v, caller, rt)


HereDep = Annotated[Here, Depends(_here)]
