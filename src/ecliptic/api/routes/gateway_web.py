"""Browser pages of the sign-in flow, and the answers the gateway's front asks for.

- ``/login``: the plain sign-in page (the portal will restyle it). It sets the portal's
  session cookie on the API's host.
- ``/gateway/authorize``: after sign-in, checks the user may reach the service and sends
  the browser back to the service's subdomain with a single-use code.
- ``/_ecliptic/callback`` and ``/_ecliptic/logout``: served on every service subdomain (the
  front proxies ``/_ecliptic/`` here); the callback turns the code into a host-only cookie.
- ``/gateway/auth``: nginx's ``auth_request`` for signed-in services: 200 with who the user
  is, 401 with where to sign in, or 403.

None of these are part of the JSON API, so they are left out of the OpenAPI document.
"""

from __future__ import annotations

import html
from datetime import timedelta
from importlib import resources
from string import Template
from typing import Annotated
from urllib.parse import parse_qs, urlencode

from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse

from ecliptic import credentials
from ecliptic.api.deps import RuntimeDep
from ecliptic.api.problems import PAGE_HEADERS
from ecliptic.errors import (
    EclipticError,
    InvalidInput,
    TooLarge,
    TooManyAttempts,
    Unauthenticated,
)
from ecliptic.runtime import Runtime
from ecliptic.services import gateway
from ecliptic.services.auth import authenticate, login, revoke_browser_token, token_id
from ecliptic.store.models import User

router = APIRouter(include_in_schema=False)
PORTAL_COOKIE = credentials.PORTAL_COOKIE


def portal_cookie(request: Request) -> str:
    """The portal cookie's name on this connection (``__Host-`` prefixed over HTTPS)."""
    return credentials.cookie_name(PORTAL_COOKIE, request.url.scheme == "https")


_TEMPLATES = resources.files("ecliptic.api") / "templates"
SIGN_IN_FORM_BYTES = 8 * 1024
"""Sign-in and sign-out forms hold a few short fields: a larger body is refused unread."""


async def read_form(request: Request, *, limit: int, max_fields: int) -> dict[str, list[str]]:
    """A posted urlencoded form, read no further than ``limit`` bytes (``TooLarge``) and with
    at most ``max_fields`` fields (``InvalidInput``)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"this form is too large (over {limit // 1024} KiB)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise TooLarge(f"this form is too large (over {limit // 1024} KiB)")
    try:
        return parse_qs(
            body.decode(errors="replace"), keep_blank_values=True, max_num_fields=max_fields
        )
    except ValueError:
        raise InvalidInput(f"this form has too many fields (at most {max_fields})") from None


def _page(name: str, status: int = 200, **values: str) -> HTMLResponse:
    text = Template((_TEMPLATES / name).read_text()).safe_substitute(values)
    return HTMLResponse(text, status_code=status, headers=PAGE_HEADERS)


def message_page(status: int, title: str, message: str, action: str = "") -> HTMLResponse:
    """A small HTML page that says what happened (``action`` is trusted HTML)."""
    return _page(
        "message.html",
        status,
        title=html.escape(title),
        message=html.escape(message),
        action=action,
    )


def gateway_auth(rt: Runtime) -> gateway.GatewayAuth:
    cached: gateway.GatewayAuth | None = getattr(rt, "_gateway_auth", None)
    if cached is None:
        s = rt.settings
        cached = gateway.GatewayAuth(
            rt.db,
            domain=s.gateway_domain,
            front_url=s.gateway_front_url,
            portal_url=s.public_url,
            session_ttl=s.gateway_session_ttl,
        )
        rt._gateway_auth = cached  # type: ignore[attr-defined]
    return cached


def _portal_user(rt: Runtime, request: Request) -> User | None:
    token = request.cookies.get(portal_cookie(request))
    if not token:
        return None
    try:
        return authenticate(rt.db, token)
    except Unauthenticated:
        return None


def _purpose(next_uri: str) -> str:
    if next_uri.startswith("/gateway/authorize"):
        return "Sign in to open the service you asked for."
    return "Reserve capacity, launch platforms and reach them, all in one place."


def _single_sign_on(rt: Runtime, target: str) -> str:
    """The single sign-on button (and an "or"), when the operator configured a provider."""
    from ecliptic.web.oidc import login_button  # the portal's sign-in imports this module

    button = login_button(rt.settings.oidc, target)
    return f'{button}<p class="or">or with your Ecliptic account</p>' if button else ""


@router.get("/login")
def login_page(rt: RuntimeDep, next: str = "/") -> HTMLResponse:
    """The sign-in form."""
    target = gateway.safe_next(next)
    return _page(
        "login.html",
        purpose=_purpose(target),
        next=html.escape(target),
        error="",
        oidc=_single_sign_on(rt, target),
    )


@router.post("/login")
async def login_submit(request: Request, rt: RuntimeDep) -> Response:
    """Check the password, set the portal's session cookie, go on to ``next``."""
    refused = _cross_origin(request)
    if refused is not None:
        return refused
    try:
        form = await read_form(request, limit=SIGN_IN_FORM_BYTES, max_fields=10)
    except EclipticError as exc:
        return message_page(exc.status, exc.title, exc.message)
    username = (form.get("username") or [""])[0]
    password = (form.get("password") or [""])[0]
    target = gateway.safe_next((form.get("next") or ["/"])[0])
    ttl = rt.settings.gateway_session_ttl
    try:
        # argon2 and the store take milliseconds: off the event loop, which also answers
        # every request of the gateway's auth checks.
        issued = await run_in_threadpool(
            login,
            rt.db,
            username,
            password,
            token_name="browser sign-in",
            ttl=ttl,
            throttle=rt.login_throttle,
            address=request.client.host if request.client else "",
        )
    except EclipticError as exc:
        page = _page(
            "login.html",
            exc.status,
            purpose=_purpose(target),
            next=html.escape(target),
            error=f'<p class="form-error" role="alert">{html.escape(exc.message)}</p>',
            oidc=_single_sign_on(rt, target),
        )
        if isinstance(exc, TooManyAttempts):
            page.headers["Retry-After"] = str(exc.retry_after_s)
        return page
    response = RedirectResponse(target, status_code=303)
    set_portal_cookie(response, request, issued.secret, ttl)
    return response


def set_portal_cookie(response: Response, request: Request, secret: str, ttl: timedelta) -> None:
    """Sign the browser in: the portal's session cookie (HttpOnly, SameSite=Lax, and over
    HTTPS ``__Host-`` and Secure) for as long as its token lives."""
    response.set_cookie(
        portal_cookie(request),
        secret,
        max_age=int(ttl.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def same_origin(request: Request) -> bool:
    """Whether a form was posted from this site: its Origin (``null`` is not), or, without
    one, Sec-Fetch-Site."""
    origin = request.headers.get("origin")
    scheme = request.url.scheme  # uvicorn takes X-Forwarded-Proto from trusted proxies
    own = f"{scheme}://{request.headers.get('host', '')}"
    if origin is not None:
        return origin != "null" and origin.rstrip("/") == own
    return request.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def _cross_origin(request: Request) -> Response | None:
    """A form posted from another site (sign-in or sign-out CSRF) is refused."""
    if same_origin(request):
        return None
    return message_page(
        403, "Refused", "This form was sent from another site; open this page and send it here."
    )


def _logout_form(action: str, token: str, next_uri: str, label: str) -> str:
    return (
        f'<form method="post" action="{html.escape(action)}">'
        f'<input type="hidden" name="csrf" value="{html.escape(token)}">'
        f'<input type="hidden" name="next" value="{html.escape(next_uri)}">'
        f'<button type="submit">{html.escape(label)}</button></form>'
    )


@router.get("/logout")
def portal_logout_page(request: Request, rt: RuntimeDep, next: str = "/login") -> Response:
    """Asks before signing out: signing out is a POST with this page's token."""
    token = request.cookies.get(portal_cookie(request), "")
    if not token:
        return RedirectResponse(_after_logout(next), status_code=303)
    form = _logout_form(
        "/logout", gateway_auth(rt).csrf_token("portal", token), gateway.safe_next(next), "Sign out"
    )
    return message_page(
        200, "Sign out", "Sign out of Ecliptic, and of every service you opened with it?", form
    )


@router.post("/logout")
async def portal_logout(request: Request, rt: RuntimeDep) -> Response:
    """Sign the browser out of the portal: its token is revoked, and with it every service
    session it opened."""
    refused = _cross_origin(request)
    if refused is not None:
        return refused
    try:
        form = await read_form(request, limit=SIGN_IN_FORM_BYTES, max_fields=10)
    except EclipticError as exc:
        return message_page(exc.status, exc.title, exc.message)
    token = request.cookies.get(portal_cookie(request), "")
    csrf = (form.get("csrf") or [""])[0]
    if token and not gateway_auth(rt).check_csrf("portal", token, csrf):
        return message_page(403, "Refused", "This sign-out form is not from this page.")
    if token:
        await run_in_threadpool(revoke_browser_token, rt.db, token)
    response = RedirectResponse(_after_logout((form.get("next") or ["/login"])[0]), 303)
    response.delete_cookie(
        portal_cookie(request), secure=request.url.scheme == "https", httponly=True
    )
    return response


def _after_logout(next_uri: str) -> str:
    target = gateway.safe_next(next_uri)
    if not target.startswith("/login"):
        target = "/login?" + urlencode({"next": target})
    return target


@router.get("/gateway/authorize")
def authorize(
    request: Request,
    rt: RuntimeDep,
    host: str,
    next: str = "/",
    scheme: str = "http",
    state: str = "",
) -> Response:
    """Send a signed-in browser back to the service with a single-use code, which only the
    browser that started sign-in there (``state``) can redeem."""
    again = "/gateway/authorize?" + urlencode(
        {"host": host, "next": next, "scheme": scheme, "state": state}
    )
    user = _portal_user(rt, request)
    if user is None:
        return RedirectResponse("/login?" + urlencode({"next": again}), status_code=303)
    token = request.cookies.get(portal_cookie(request), "")
    try:
        target = gateway_auth(rt).authorize(
            user, host, next, scheme, state=state, portal_token_id=token_id(rt.db, token)
        )
    except EclipticError as exc:
        form = _logout_form(
            "/logout",
            gateway_auth(rt).csrf_token("portal", token),
            again,
            "Sign in as someone else",
        )
        return message_page(exc.status, "You cannot open this service", exc.message, form)
    return RedirectResponse(target, status_code=303)


@router.get("/gateway/auth")
def decide(
    rt: RuntimeDep,
    x_ecliptic_host: Annotated[str, Header()] = "",
    x_ecliptic_uri: Annotated[str, Header()] = "/",
    x_ecliptic_scheme: Annotated[str, Header()] = "http",
    x_ecliptic_accept: Annotated[str, Header()] = "",
    cookie: Annotated[str, Header()] = "",
    authorization: Annotated[str, Header()] = "",
) -> Response:
    """nginx ``auth_request``: may this request reach the service at ``X-Ecliptic-Host``?"""
    d = gateway_auth(rt).decide(
        host=x_ecliptic_host,
        uri=x_ecliptic_uri,
        scheme=x_ecliptic_scheme,
        cookie=cookie,
        authorization=authorization,
        browser="text/html" in x_ecliptic_accept,
    )
    headers = {"Cache-Control": "no-store"}
    if d.status == 200:
        headers.update(
            {
                "X-Remote-User": d.user,
                "X-Remote-Email": d.email,
                "X-Forward-Cookie": d.forward_cookie,
                "X-Forward-Authorization": d.forward_authorization,
                "X-Ecliptic-Credential": d.credential,
            }
        )
    elif d.login_url:
        headers["X-Ecliptic-Login"] = d.login_url
    return Response(status_code=d.status, headers=headers)


def _service_host(request: Request, x_ecliptic_host: str) -> str:
    return (x_ecliptic_host or request.headers.get("host", "")).lower().rstrip(".")


@router.get("/_ecliptic/start")
def start(
    request: Request,
    rt: RuntimeDep,
    next: str = "/",
    x_ecliptic_host: Annotated[str, Header()] = "",
    x_forwarded_proto: Annotated[str, Header()] = "",
) -> Response:
    """On the service's subdomain: remember this browser (a state cookie on this host only),
    then go and sign in at the portal."""
    host = _service_host(request, x_ecliptic_host)
    scheme = x_forwarded_proto or request.url.scheme
    state, url = gateway_auth(rt).begin(host, next, scheme)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        credentials.cookie_name(credentials.STATE_COOKIE, scheme == "https"),
        state,
        max_age=int(gateway.CODE_TTL.total_seconds()) + 600,
        httponly=True,
        samesite="lax",
        secure=scheme == "https",
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get("/_ecliptic/callback")
def callback(
    request: Request,
    rt: RuntimeDep,
    code: str = "",
    next: str = "/",
    x_ecliptic_host: Annotated[str, Header()] = "",
    x_forwarded_proto: Annotated[str, Header()] = "",
) -> Response:
    """On the service's subdomain: redeem the code (in the browser that started sign-in
    here), set the host-only session cookie."""
    host = _service_host(request, x_ecliptic_host)
    https = (x_forwarded_proto or request.url.scheme) == "https"
    state = request.cookies.get(credentials.cookie_name(credentials.STATE_COOKIE, https), "")
    try:
        value = gateway_auth(rt).exchange(code, host, state)
    except EclipticError as exc:
        return message_page(exc.status, "Sign-in link not valid", exc.message)
    response = RedirectResponse(gateway.safe_next(next), status_code=303)
    ttl: timedelta = rt.settings.gateway_session_ttl
    # No Domain attribute: the cookie stays on this one subdomain.
    response.set_cookie(
        credentials.cookie_name(gateway.COOKIE_NAME, https),
        value,
        max_age=int(ttl.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=https,
    )
    response.delete_cookie(
        credentials.cookie_name(credentials.STATE_COOKIE, https), secure=https, httponly=True
    )
    response.headers["Cache-Control"] = "no-store"
    return response


def _session_cookie(request: Request, x_forwarded_proto: str) -> tuple[str, bool]:
    """The gateway session cookie's name on this connection, and whether it is HTTPS."""
    https = (x_forwarded_proto or request.url.scheme) == "https"
    return credentials.cookie_name(gateway.COOKIE_NAME, https), https


@router.get("/_ecliptic/logout")
def logout_page(
    request: Request,
    rt: RuntimeDep,
    x_ecliptic_host: Annotated[str, Header()] = "",
    x_forwarded_proto: Annotated[str, Header()] = "",
) -> Response:
    """On the service's subdomain: asks before signing out (a POST with this page's token)."""
    name, _ = _session_cookie(request, x_forwarded_proto)
    value = request.cookies.get(name, "")
    if not value:
        return message_page(200, "Signed out", "You are not signed in to this service.")
    token = gateway_auth(rt).csrf_token("service", value)
    form = _logout_form("/_ecliptic/logout", token, "/", "Sign out")
    return message_page(200, "Sign out", "Sign out of this service?", form)


@router.post("/_ecliptic/logout")
async def logout(
    request: Request,
    rt: RuntimeDep,
    x_ecliptic_host: Annotated[str, Header()] = "",
    x_forwarded_proto: Annotated[str, Header()] = "",
) -> Response:
    """On the service's subdomain: end this browser's session here, at once."""
    refused = _cross_origin(request)
    if refused is not None:
        return refused
    try:
        form = await read_form(request, limit=SIGN_IN_FORM_BYTES, max_fields=10)
    except EclipticError as exc:
        return message_page(exc.status, exc.title, exc.message)
    name, https = _session_cookie(request, x_forwarded_proto)
    value = request.cookies.get(name, "")
    if value and not gateway_auth(rt).check_csrf("service", value, (form.get("csrf") or [""])[0]):
        return message_page(403, "Refused", "This sign-out form is not from this page.")
    if value:
        await run_in_threadpool(
            gateway_auth(rt).end_session, value, _service_host(request, x_ecliptic_host)
        )
    response = message_page(200, "Signed out", "You are signed out of this service.")
    response.delete_cookie(name, secure=https, httponly=True)
    return response
