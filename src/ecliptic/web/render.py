"""Pages: Jinja2 templates (autoescaped), the layout's context, and errors as pages."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from importlib import resources
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from ecliptic.api.problems import PAGE_HEADERS
from ecliptic.errors import EclipticError, TooManyAttempts
from ecliptic.web.session import SignInFirst, Visitor, login_url

TEMPLATES = resources.files("ecliptic.web") / "templates"


def _when(t: datetime | None) -> str:
    if t is None:
        return "—"
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _span(seconds: float) -> str:
    s = int(abs(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400 * 2:
        h, m = divmod(s // 60, 60)
        return f"{h} h {m} min" if m else f"{h} h"
    d, rest = divmod(s, 86400)
    return f"{d} d {rest // 3600} h" if rest >= 3600 else f"{d} d"


def _relative(t: datetime | None, now: datetime | None = None) -> str:
    if t is None:
        return ""
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    delta = (t - (now or datetime.now(UTC))).total_seconds()
    return f"in {_span(delta)}" if delta >= 0 else f"{_span(delta)} ago"


def _hours(value: object) -> str:
    try:
        d = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return str(value)
    q = d.quantize(Decimal("0.01"))
    text = f"{q:,.2f}".rstrip("0").rstrip(".")
    return text or "0"


def _duration(td: timedelta | int | float) -> str:
    return _span(td.total_seconds() if isinstance(td, timedelta) else float(td))


PHASE_TONES = {
    "ACTIVE": "ok",
    "READY": "ok",
    "RUNNING": "ok",
    "SUCCEEDED": "ok",
    "up": "ok",
    "PENDING": "wait",
    "CREATING": "wait",
    "CONFIGURING": "wait",
    "UPDATING": "wait",
    "BUILDING": "wait",
    "STARTING": "wait",
    "DELETING": "wait",
    "PROVISIONING": "wait",
    "CLEANING": "wait",
    "BAREMETAL": "ok",
    "HYPERVISOR": "ok",
    "TO_HYPERVISOR": "wait",
    "TO_BAREMETAL": "wait",
    "DRAINING": "wait",
    "DEGRADED": "warn",
    "maintenance": "warn",
    "FAILED": "bad",
    "ERROR": "bad",
    "down": "bad",
    "ENDED": "off",
    "DELETED": "off",
}


def _phase(value: str) -> Markup:
    tone = PHASE_TONES.get(value, "off")
    return Markup('<span class="badge {}">{}</span>').format(tone, value)


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        when=_when, relative=_relative, hours=_hours, duration=_duration, phase=_phase
    )
    return env


ENV = _env()


def page(
    request: Request,
    template: str,
    v: Visitor | None,
    *,
    tenancy: str | None = None,
    status: int = 200,
    title: str = "",
    **values: Any,
) -> HTMLResponse:
    """A full page (or, for an htmx request of a fragment template, just that)."""
    html = ENV.get_template(template).render(
        request=request,
        v=v,
        tenancy=tenancy,
        title=title,
        path=request.url.path,
        now=datetime.now(UTC),
        **values,
    )
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def redirect(url: str) -> RedirectResponse:
    """After a POST: see the result (303)."""
    return RedirectResponse(url, status_code=303)


def error_page(request: Request, exc: EclipticError) -> Response:
    """An error as a page that says what happened and what to do."""
    if isinstance(exc, SignInFirst):
        return redirect(login_url(exc.next_uri))
    v = getattr(request.state, "visitor", None)
    response = page(
        request,
        "error.html",
        v,
        tenancy=request.path_params.get("tenancy"),
        status=exc.status,
        title=exc.title,
        error=exc,
    )
    if isinstance(exc, TooManyAttempts):
        response.headers["Retry-After"] = str(exc.retry_after_s)
    return response


class PageRoute(APIRoute):
    """A route whose Ecliptic errors become pages, not problem documents. Like any web page
    it ignores query parameters it does not know (forms name fields per parameter)."""

    any_query = True

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except EclipticError as exc:
                return error_page(request, exc)

        return route
