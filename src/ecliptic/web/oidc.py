"""Signing in to the portal with the operator's OpenID Connect provider (``ECLIPTIC_OIDC_*``).

- ``GET /login/oidc?next=``: starts a sign-in: its state, nonce and PKCE verifier go, sealed
  with the instance's secret key, into a short-lived HttpOnly cookie of this browser, and
  the browser goes to the provider.
- ``GET /login/oidc/callback``: where the provider sends the browser back. The answer must
  match that cookie (so only the browser that started a sign-in can finish it); the code is
  redeemed, the user found or made, and the portal cookie set exactly as ``/login`` sets it.

Failed callbacks are counted per address (each one costs a request to the provider).
"""

from __future__ import annotations

import html
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse

from ecliptic import credentials
from ecliptic.api.deps import RuntimeDep
from ecliptic.api.routes.gateway_web import message_page, set_portal_cookie
from ecliptic.config import OidcSettings
from ecliptic.errors import EclipticError, TooManyAttempts
from ecliptic.runtime import Runtime
from ecliptic.secretbox import SecretBox
from ecliptic.services import gateway
from ecliptic.services.auth import LoginThrottle
from ecliptic.services.oidc import (
    FLOW_TTL,
    NoTenancyYet,
    OidcClient,
    OidcNotConfigured,
    open_flow,
    seal_flow,
    sign_in,
)

router = APIRouter(include_in_schema=False)
FLOW_COOKIE = "ecliptic_oidc"
"""Holds the sealed sign-in flow between ``/login/oidc`` and the callback."""
CALLBACK_PATH = "/login/oidc/callback"


def redirect_uri(rt: Runtime) -> str:
    """The callback's URL to register at the provider (from ``ECLIPTIC_PORTAL_URL``, or the
    API's own URL: never from the request's Host header)."""
    return rt.settings.public_url + CALLBACK_PATH


def login_button(settings: OidcSettings | None, next_uri: str = "/") -> str:
    """The HTML of the sign-in button for the portal's sign-in page ('' when not configured)."""
    if settings is None:
        return ""
    href = "/login/oidc?" + urlencode({"next": gateway.safe_next(next_uri)})
    return f'<a class="button oidc" href="{html.escape(href)}">{html.escape(settings.label)}</a>'


def _client(rt: Runtime) -> OidcClient:
    client: OidcClient | None = getattr(rt, "_oidc_client", None)
    if client is None:
        if rt.settings.oidc is None:
            raise OidcNotConfigured(
                "this Ecliptic has no single sign-on provider: sign in with your Ecliptic user "
                "name and password"
            )
        client = OidcClient(rt.settings.oidc, redirect_uri(rt))
        rt._oidc_client = client  # type: ignore[attr-defined]
    return client


def _throttle(rt: Runtime) -> LoginThrottle:
    throttle: LoginThrottle | None = getattr(rt, "_oidc_throttle", None)
    if throttle is None:
        # Per address only: the "account" is the same for every callback, and nobody may
        # lock everyone out.
        throttle = LoginThrottle(per_pair=20, per_address=20, per_account=1_000_000)
        rt._oidc_throttle = throttle  # type: ignore[attr-defined]
    return throttle


def _box(rt: Runtime) -> SecretBox:
    box = rt.db.secrets
    if box is None:  # the runtime always loads it; a store opened without one cannot
        raise RuntimeError("the instance's secret key is not loaded")
    return box


def _https(request: Request) -> bool:
    return request.url.scheme == "https"


def _failed(exc: EclipticError, next_uri: str) -> HTMLResponse:
    again = "/login/oidc?" + urlencode({"next": next_uri})
    password = "/login?" + urlencode({"next": next_uri})
    actions = f'<p><a href="{html.escape(password)}">Sign in with a password</a></p>'
    if not isinstance(exc, OidcNotConfigured):
        actions = f'<p><a href="{html.escape(again)}">Start again</a></p>' + actions
    page = message_page(exc.status, exc.title, exc.message, actions)
    if isinstance(exc, TooManyAttempts):
        page.headers["Retry-After"] = str(exc.retry_after_s)
    return page


@router.get("/login/oidc")
def oidc_start(request: Request, rt: RuntimeDep, next: str = "/") -> Response:
    """Send the browser to the provider, keeping this sign-in's secrets in a cookie."""
    target = gateway.safe_next(next)
    try:
        flow, url = _client(rt).begin(target)
    except EclipticError as exc:
        return _failed(exc, target)
    https = _https(request)
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        credentials.cookie_name(FLOW_COOKIE, https),
        seal_flow(_box(rt), flow),
        max_age=int(FLOW_TTL.total_seconds()),
        httponly=True,
        samesite="lax",  # the provider sends the browser back with a top-level GET
        secure=https,
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@router.get(CALLBACK_PATH)
def oidc_callback(
    request: Request,
    rt: RuntimeDep,
    code: str = "",
    state: str = "",
    error: str = "",
    error_description: str = "",
    error_uri: str = "",
    iss: str = "",
    session_state: str = "",
    scope: str = "",
    authuser: str = "",
    hd: str = "",
    prompt: str = "",
) -> Response:
    """Finish a sign-in: check the answer, redeem the code, set the portal cookie."""
    # error_uri, session_state (Keycloak), scope, authuser, hd and prompt (Google) are
    # declared so that providers which add them are not refused; they are not used.
    https = _https(request)
    flow_cookie = credentials.cookie_name(FLOW_COOKIE, https)
    address = request.client.host if request.client else ""
    throttle = _throttle(rt)
    next_uri = "/"
    try:
        client = _client(rt)
        at = throttle.attempt(address, "oidc")
        flow = open_flow(_box(rt), request.cookies.get(flow_cookie, ""), state, now=client.clock())
        next_uri = flow.next
        claims = client.finish(
            flow, code=code, error=error, error_description=error_description, iss=iss
        )
        signed = sign_in(rt.db, client.settings, claims, rt.settings.gateway_session_ttl)
        throttle.succeeded(address, "oidc", at)
    except EclipticError as exc:
        page = _failed(exc, next_uri)
        page.delete_cookie(flow_cookie, secure=https, httponly=True)
        return page
    response: Response
    if signed.tenancies or signed.is_admin:
        response = RedirectResponse(gateway.safe_next(next_uri), status_code=303)
    else:
        problem = NoTenancyYet(
            f"you are signed in as '{signed.user_name}', but none of your groups gives you a "
            "tenancy here yet: ask your administrator to add you to one"
        )
        response = message_page(problem.status, problem.title, problem.message)
    set_portal_cookie(response, request, signed.token.secret, rt.settings.gateway_session_ttl)
    response.delete_cookie(flow_cookie, secure=https, httponly=True)
    response.headers["Cache-Control"] = "no-store"
    return response
