"""Sign-in, the signed-in user, and their tokens."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response

from ecliptic.api.deps import CallerDep, RuntimeDep
from ecliptic.api.paging import PagingDep, paged
from ecliptic.api.schemas import LoginRequest, Page, TokenCreate, TokenOut, WhoAmI
from ecliptic.services import auth, identity

router = APIRouter(tags=["auth"])


@router.post("/auth/login", response_model=TokenOut, status_code=201)
def login(body: LoginRequest, rt: RuntimeDep, request: Request) -> TokenOut:
    """Exchange a user name and password for a bearer token (shown once). Failed attempts
    are limited (429 with ``Retry-After``: 5 per address and account in 5 minutes)."""
    t = auth.login(
        rt.db,
        body.username,
        body.password,
        token_name=body.token_name,
        ttl=timedelta(hours=body.ttl_hours),
        throttle=rt.login_throttle,
        address=request.client.host if request.client else "",
    )
    return TokenOut(
        id=t.id, name=t.name, secret=t.secret, prefix=t.secret[:10], expires_at=t.expires_at
    )


@router.get("/auth/whoami", response_model=WhoAmI)
def whoami(caller: CallerDep, rt: RuntimeDep) -> WhoAmI:
    """Who the token belongs to, and the tenancy requests act in."""
    tenancies = [t.name for t in identity.my_tenancies(rt.db, caller)]
    return WhoAmI(
        user=caller.user_name,
        user_id=caller.user_id,
        is_admin=caller.is_admin,
        tenancy=caller.tenancy_name,
        role=caller.role,
        tenancies=tenancies,
    )


@router.get("/tokens", response_model=Page[TokenOut])
def list_tokens(caller: CallerDep, rt: RuntimeDep, page: PagingDep) -> Page[TokenOut]:
    """Your tokens (never their secrets)."""
    rows = identity.list_tokens(rt.db, caller)
    return paged(rows, page, lambda t: t.id, TokenOut.model_validate)


@router.post("/tokens", response_model=TokenOut, status_code=201)
def create_token(body: TokenCreate, caller: CallerDep, rt: RuntimeDep) -> TokenOut:
    """A new token for yourself; its secret is in this response only."""
    ttl = timedelta(hours=body.ttl_hours) if body.ttl_hours else None
    t = identity.create_token(rt.db, caller, body.name, ttl)
    return TokenOut(
        id=t.id, name=t.name, secret=t.secret, prefix=t.secret[:10], expires_at=t.expires_at
    )


@router.delete("/tokens/{token_id}", status_code=204)
def revoke_token(token_id: str, caller: CallerDep, rt: RuntimeDep) -> Response:
    """Revoke one of your tokens."""
    identity.revoke_token(rt.db, caller, token_id)
    return Response(status_code=204)
