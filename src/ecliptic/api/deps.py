"""Request dependencies: the runtime, and who is calling."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from ecliptic.errors import Unauthenticated
from ecliptic.runtime import Runtime
from ecliptic.services.auth import authenticate, caller_for
from ecliptic.services.caller import Caller


def runtime(request: Request) -> Runtime:
    """The instance serving this request."""
    rt: Runtime = request.app.state.runtime
    return rt


async def _runtime_dependency(request: Request) -> Runtime:
    # Async: FastAPI runs every sync dependency in its thread pool, a hand-off per request
    # that a plain attribute read does not need.
    return runtime(request)


def caller(
    request: Request,
    authorization: Annotated[str | None, Header()] = None,
    x_ecliptic_tenancy: Annotated[str | None, Header(max_length=63)] = None,
) -> Caller:
    """The authenticated caller, in the tenancy named by header (or their only one)."""
    rt = runtime(request)
    if not authorization:
        raise Unauthenticated(
            "sign in first: send 'Authorization: Bearer <token>' ('ecliptic login')"
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("use 'Authorization: Bearer <token>'")
    user = authenticate(rt.db, token.strip())
    return caller_for(rt.db, user, x_ecliptic_tenancy)


RuntimeDep = Annotated[Runtime, Depends(_runtime_dependency)]
CallerDep = Annotated[Caller, Depends(caller)]


def admin(c: CallerDep, request: Request) -> Caller:
    """The caller, refused unless an administrator: checked before the body is validated."""
    c.require_admin(f"call {request.method} {request.url.path}")
    return c


AdminDep = Annotated[Caller, Depends(admin)]
