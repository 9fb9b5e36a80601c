"""Blazar's ExternalServiceFilter contract, so a real Blazar can enforce Ecliptic credits.

Configure Blazar with ``external_service_base_endpoint = <ecliptic>/api/v1/blazar/`` and
``external_service_token = <an Ecliptic token of an administrator>`` (sent as
``X-Auth-Token``). The Blazar project id must be the id or the name of an Ecliptic
tenancy. Answers: 204 allowed, 403 with ``{"message": ...}`` denied (Blazar shows that
message to the user, unlike coral-credits' ``error`` field).

What a lease costs is ``services/blazar.py``'s to say.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ecliptic.api.deps import runtime
from ecliptic.errors import Forbidden, Unauthenticated
from ecliptic.services import blazar
from ecliptic.services.auth import authenticate


class BlazarContext(BaseModel):
    """Who asks, as Blazar says it."""

    model_config = ConfigDict(extra="allow")
    project_id: Annotated[str, Field(max_length=255)]
    user_id: Annotated[str, Field(max_length=255)] = ""


class BlazarLease(BaseModel):
    """A lease as Blazar sends it (extra fields kept, not trusted)."""

    model_config = ConfigDict(extra="allow")
    id: Annotated[str, Field(max_length=255)] | None = None
    name: Annotated[str, Field(max_length=255)]
    start_date: datetime
    end_date: datetime
    reservations: Annotated[list[dict[str, Any]], Field(max_length=64)] = []
    resource_requests: dict[str, float] | None = None


class CheckCreate(BaseModel):
    """check-create body."""

    model_config = ConfigDict(extra="allow")
    context: BlazarContext
    lease: BlazarLease


class CheckUpdate(BaseModel):
    """check-update body."""

    model_config = ConfigDict(extra="allow")
    context: BlazarContext
    current_lease: BlazarLease
    lease: BlazarLease


def _lease(wire: BlazarLease) -> blazar.BlazarLease:
    return blazar.BlazarLease(
        name=wire.name,
        start_date=wire.start_date,
        end_date=wire.end_date,
        id=wire.id,
        reservations=tuple(wire.reservations),
        resource_requests=wire.resource_requests,
    )


def _authorise(
    request: Request, x_auth_token: Annotated[str | None, Header(max_length=4096)] = None
) -> None:
    """Only an administrator's token may drive the enforcement endpoints; checked before the
    body is read, so a stranger learns nothing from validation errors."""
    rt = runtime(request)
    token = x_auth_token
    bearer = request.headers.get("authorization", "")
    secret = token or (bearer[7:] if bearer.lower().startswith("bearer ") else "")
    if not secret:
        raise Unauthenticated("send an Ecliptic administrator token as X-Auth-Token")
    user = authenticate(rt.db, secret)
    if not user.is_admin:
        raise Forbidden("the Blazar enforcement endpoints need an administrator's token")


def _deny(message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=403)


def _settle(
    request: Request,
    project: str,
    lease: blazar.BlazarLease,
    key_from: blazar.BlazarLease,
    end: datetime | None,
    note: str,
) -> Response:
    """Charge the project for the lease: 204 allowed, 403 with Blazar's message refused."""
    refusal = blazar.settle(runtime(request).db, project, lease, key_from, end, note)
    return _deny(refusal) if refusal else Response(status_code=204)


# Only an administrator's token drives these endpoints, checked before any body is read.
router = APIRouter(prefix="/blazar", tags=["blazar"], dependencies=[Depends(_authorise)])


@router.post("/check-create", status_code=204, response_model=None)
def check_create(
    body: CheckCreate,
    request: Request,
) -> Response:
    """Allow a new Blazar lease if the project's credits cover it (and charge them)."""
    lease = _lease(body.lease)
    note = f"Blazar lease '{body.lease.name}' created"
    return _settle(request, body.context.project_id, lease, lease, None, note)


@router.post("/check-update", status_code=204, response_model=None)
def check_update(
    body: CheckUpdate,
    request: Request,
) -> Response:
    """Allow a changed Blazar lease if credits cover the difference (charge or refund it)."""
    new = _lease(body.lease.model_copy(update={"id": body.lease.id or body.current_lease.id}))
    note = f"Blazar lease '{body.lease.name}' updated"
    return _settle(request, body.context.project_id, new, _lease(body.current_lease), None, note)


@router.post("/on-end", status_code=204, response_model=None)
def on_end(
    body: CheckCreate,
    request: Request,
) -> Response:
    """A Blazar lease ended: refund the unused part."""
    lease = _lease(body.lease)
    end = blazar.ended_at(lease, runtime(request).clock.now())
    note = f"Blazar lease '{body.lease.name}' ended"
    return _settle(request, body.context.project_id, lease, lease, end, note)
