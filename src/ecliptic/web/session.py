"""Who is looking at a portal page: the signed-in browser, its form token, its tenancy."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from ecliptic.api.deps import runtime
from ecliptic.api.routes.gateway_web import gateway_auth, portal_cookie, read_form, same_origin
from ecliptic.errors import EclipticError, Unauthenticated
from ecliptic.runtime import Runtime
from ecliptic.services.auth import authenticate, caller_for
from ecliptic.services.caller import Caller
from ecliptic.store.models import Membership, Tenancy, User

MAX_FORM_BYTES = 256 * 1024


class SignInFirst(EclipticError):
    """The page needs a signed-in browser: it is sent to the sign-in page."""

    status = 401
    code = "unauthenticated"
    title = "Sign in first"

    def __init__(self, next_uri: str) -> None:
        super().__init__("sign in to see this page")
        self.next_uri = next_uri


class BadForm(EclipticError):
    """A form that is not from this portal (no or a wrong CSRF token, another site)."""

    status = 403
    code = "forbidden"
    title = "Refused"


@dataclass(frozen=True)
class Visitor:
    """A signed-in browser."""

    user_id: str
    user_name: str
    is_admin: bool
    token: str
    """The portal session's secret (the cookie's value)."""
    csrf: str
    """The token every form of this session carries."""
    tenancies: tuple[tuple[str, str], ...]
    """(name, role) of every tenancy the user belongs to, by name."""


def _csrf(rt: Runtime, token: str) -> str:
    return gateway_auth(rt).csrf_token("portal", token)


def load_visitor(rt: Runtime, token: str) -> Visitor:
    """The visitor a session token belongs to (``Unauthenticated`` when it ended)."""
    user = authenticate(rt.db, token)
    with rt.db.read() as session:
        rows = session.execute(
            select(Tenancy.name, Membership.role)
            .join(Membership, Membership.tenancy_id == Tenancy.id)
            .where(Membership.user_id == user.id)
            .order_by(Tenancy.name)
        ).all()
    return Visitor(
        user.id,
        user.name,
        user.is_admin,
        token,
        _csrf(rt, token),
        tuple((name, role) for name, role in rows),
    )


async def visitor(request: Request) -> Visitor:
    """The signed-in browser, or off to the sign-in page."""
    token = request.cookies.get(portal_cookie(request), "")
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not token:
        raise SignInFirst(here)
    try:
        v = await run_in_threadpool(load_visitor, runtime(request), token)
    except Unauthenticated:
        raise SignInFirst(here) from None
    request.state.visitor = v
    return v


VisitorDep = Annotated[Visitor, Depends(visitor)]


def caller_in(rt: Runtime, v: Visitor, tenancy: str) -> Caller:
    """The visitor acting in ``tenancy`` (a member, or an administrator)."""
    with rt.db.read() as session:
        user = session.get(User, v.user_id)
        if user is None:
            raise Unauthenticated("your account is gone; sign in again")
        session.expunge(user)
    return caller_for(rt.db, user, tenancy)


def login_url(next_uri: str) -> str:
    """The sign-in page that comes back to ``next_uri``."""
    return "/login?" + urlencode({"next": next_uri})


async def form_of(request: Request, v: Visitor) -> dict[str, list[str]]:
    """A posted form's fields, refused unless it comes from a page of this session (its
    CSRF token) on this site."""
    if not same_origin(request):
        raise BadForm("this form was sent from another site; open the page here and send it")
    form = await read_form(request, limit=MAX_FORM_BYTES, max_fields=500)
    token = (form.pop("csrf", None) or [""])[0]
    header = request.headers.get("x-csrf-token", "")
    auth = gateway_auth(runtime(request))
    if not (
        auth.check_csrf("portal", v.token, token) or auth.check_csrf("portal", v.token, header)
    ):
        raise BadForm("this form is not from this session's pages: reload the page and try again")
    return form


def one(form: dict[str, list[str]], key: str, default: str = "") -> str:
    """A form field's single value (stripped)."""
    return (form.get(key) or [default])[0].strip()
