"""Errors as ``application/problem+json`` (RFC 9457) with a stable ``code``."""

from __future__ import annotations

import html
import logging
import secrets
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.exc import IntegrityError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ecliptic.backends.base import BackendError
from ecliptic.errors import EclipticError, InvalidInput, TooManyAttempts

log = logging.getLogger("ecliptic.api")
PROBLEM = "application/problem+json"

PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'"
    ),
}
"""Every HTML page of Ecliptic: never cached, never framed by another site, scripts and
styles from Ecliptic only. (No ``form-action``: browsers apply it to the redirects after a
form too, and signing in for a service ends on the service's own subdomain.)"""


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    errors: list[dict[str, Any]] | None = None,
    *,
    retry_after_s: int | None = None,
) -> JSONResponse:
    """A problem document response."""
    body: dict[str, Any] = {
        "type": f"https://ecliptic.dev/problems/{code}",
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if retry_after_s is not None:
        headers["Retry-After"] = str(retry_after_s)
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def error_page(status: int, title: str, detail: str) -> HTMLResponse:
    """An error as a small page, for browsers on the portal's addresses."""
    return HTMLResponse(
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)} · Ecliptic</title>"
        '<link rel="stylesheet" href="/static/portal.css"></head><body>'
        '<header class="top"><a class="brand" href="/">Ecliptic</a></header>'
        f'<main id="main" class="login"><section class="card"><h1>{html.escape(title)}</h1>'
        f"<p>{html.escape(detail[:1].upper() + detail[1:])}</p>"
        '<p><a href="/">Back to the dashboard</a></p></section></main></body></html>',
        status_code=status,
        headers=PAGE_HEADERS,
    )


def _wants_page(request: Request) -> bool:
    """A browser asking for a page (not the API, not a program)."""
    return not request.url.path.startswith("/api/") and "text/html" in request.headers.get(
        "accept", ""
    )


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    parts = [str(p) for p in loc if p not in ("body",)]
    return ".".join(parts) or "body"


class CatchAll:
    """Turns an unexpected exception into a 500 problem document (with a request id, logged
    with its traceback) instead of a text/plain answer and a dropped connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception:
            request_id = secrets.token_hex(6)
            log.exception(
                "unexpected error in %s %s (request %s)",
                scope.get("method"),
                scope.get("path"),
                request_id,
            )
            if started:
                raise
            detail = (
                f"something went wrong on our side (request {request_id}); it is logged: "
                "report the request id to the operators"
            )
            response: Response
            if str(scope.get("path", "")).startswith("/api/"):
                response = problem(500, "internal_error", "Internal error", detail)
            else:  # a page of the portal: a page, not a problem document
                response = error_page(500, "Internal error", detail + ".")
            await response(scope, receive, send)


def _query_names(dependant: Any) -> frozenset[str]:
    names = {getattr(q, "alias", None) or q.name for q in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return frozenset(names)


async def no_unknown_query(request: Request) -> None:
    """Refuse query parameters the route does not take (a typo would be ignored silently)."""
    if not request.query_params:
        return
    route = request.scope.get("route")
    dependant = getattr(route, "dependant", None)
    if dependant is None or getattr(route, "any_query", False):
        return
    # Worked out once per route and kept on it (a route lives as long as its app).
    known: frozenset[str] | None = getattr(route, "_ecliptic_query_names", None)
    if known is None:
        known = _query_names(dependant)
        route._ecliptic_query_names = known  # type: ignore[union-attr]
    unknown = sorted(set(request.query_params) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "none"
        raise InvalidInput(
            f"unknown query parameter {', '.join(repr(u) for u in unknown)}: this endpoint "
            f"takes {takes}",
            errors=[{"loc": ["query", u], "msg": "unknown query parameter"} for u in unknown],
        )


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""
    app.add_middleware(CatchAll)

    @app.exception_handler(EclipticError)
    async def _ecliptic(_: Request, exc: EclipticError) -> JSONResponse:
        errors = [{**e, "field": e.get("field") or _field(e.get("loc", ()))} for e in exc.errors]
        retry = exc.retry_after_s if isinstance(exc, TooManyAttempts) else None
        return problem(exc.status, exc.code, exc.title, exc.message, errors, retry_after_s=retry)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = []
        for e in exc.errors():
            msg = str(e.get("msg", "invalid"))
            msg = msg.removeprefix("Value error, ")
            if e.get("type") == "extra_forbidden":
                msg = "unknown field; check its spelling against the API document at /docs"
            errors.append(
                {"loc": list(e.get("loc", ())), "field": _field(e.get("loc", ())), "msg": msg}
            )
        detail = "; ".join(f"{x['field']}: {x['msg']}" for x in errors)
        if _wants_page(request):
            return error_page(422, "Invalid input", detail)
        return problem(422, "invalid_input", "Invalid input", detail, errors)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> Response:
        codes = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated"}
        code = codes.get(exc.status_code, "http_error")
        if _wants_page(request) and exc.status_code >= 400:
            detail = {404: "there is no page here: check the address"}.get(
                exc.status_code, str(exc.detail)
            )
            return error_page(exc.status_code, str(exc.detail), detail)
        return problem(exc.status_code, code, str(exc.detail), str(exc.detail))

    @app.exception_handler(IntegrityError)
    async def _integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        log.info("integrity error: %s", exc.orig)
        return problem(
            409,
            "conflict",
            "Conflict",
            "the request collides with an existing object (a name or address in use)",
        )

    @app.exception_handler(BackendError)
    async def _backend(_: Request, exc: BackendError) -> JSONResponse:
        status = 404 if exc.code == "not_found" else 502
        return problem(status, exc.code, "Backend error", str(exc))
