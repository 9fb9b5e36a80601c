"""Blazar's ExternalServiceFilter contract, so a real Blazar can enforce Ecliptic credits.

Configure Blazar with ``external_service_base_endpoint = <ecliptic>/api/v1/blazar/`` and
``external_service_token = <an Ecliptic token of an administrator>`` (sent as
``X-Auth-Token``). The Blazar project id must be the id or the name of an Ecliptic
tenancy. Answers: 204 allowed, 403 with ``{"message": ...}`` denied (Blazar shows that
message to the user, unlike coral-credits' ``error`` field).

Costs: ``physical:host`` reservations are charged as ``host:<type>`` host-hours per
allocated host (type from the host's ``host_type``/``node_type`` capability, else the
Ecliptic host of that name, else ``blazar``); instance reservations as ``vcpu`` hours
(``vcpus x amount``); ``resource_requests`` (StackHPC's Blazar) map ``VCPU`` to ``vcpu``
and ``CUSTOM_GPU_<MODEL>`` to ``gpu:<MODEL>``. Create has no lease id in Blazar, so the
charge is keyed by project, name and start and re-keyed to the lease id when it appears.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from ecliptic.api.deps import runtime
from ecliptic.errors import Forbidden, Unauthenticated
from ecliptic.services import credits
from ecliptic.services.auth import authenticate
from ecliptic.services.booking import host_info
from ecliptic.services.pricing import duration_hours, host_type
from ecliptic.store.models import Host, Meta, Tenancy

router = APIRouter(prefix="/blazar", tags=["blazar"])


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


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


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


def _tenancy(session: Session, project_id: str) -> Tenancy | None:
    return session.scalar(
        select(Tenancy).where((Tenancy.id == project_id) | (Tenancy.name == project_id))
    )


def blazar_cost(session: Session, lease: BlazarLease) -> dict[str, Decimal]:
    """Resource-hours a Blazar lease holds."""
    start, end = _utc(lease.start_date), _utc(lease.end_date)
    h = duration_hours(start, end)
    cost: dict[str, Decimal] = defaultdict(Decimal)
    if lease.resource_requests:
        for rc, amount in lease.resource_requests.items():
            if rc == "VCPU":
                cost["vcpu"] += h * Decimal(str(amount))
            elif rc.startswith("CUSTOM_GPU_"):
                cost[f"gpu:{rc.removeprefix('CUSTOM_GPU_')}"] += h * Decimal(str(amount))
        return dict(cost)
    hosts = {x.name: x for x in session.scalars(select(Host))}
    for r in lease.reservations:
        rtype = str(r.get("resource_type", ""))
        if rtype == "physical:host":
            allocs = r.get("allocations") or []
            count = len(allocs) or int(str(r.get("min", 1)))
            for i in range(count):
                a = allocs[i] if i < len(allocs) else {}
                kind = a.get("host_type") or a.get("node_type")
                name = a.get("hypervisor_hostname")
                if not kind and name in hosts:
                    kind = host_type(host_info(hosts[name]))
                cost[f"host:{kind or 'blazar'}"] += h
        elif rtype in ("virtual:instance", "flavor:instance"):
            cost["vcpu"] += h * int(r.get("vcpus", 0) or 0) * int(r.get("amount", 1) or 1)
    return {k: v for k, v in cost.items() if v}


def _key(project: str, lease: BlazarLease) -> str:
    raw = f"blazar:{project}:{lease.name}:{_utc(lease.start_date).isoformat()}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _ledger_id(session: Session, project: str, lease: BlazarLease) -> str:
    if lease.id:
        row = session.get(Meta, f"blazar:{lease.id}")
        if row is not None:
            return row.value
        key = _key(project, lease)
        session.add(Meta(key=f"blazar:{lease.id}", value=key))
        return key
    return _key(project, lease)


def _deny(message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=403)


def _settle(
    request: Request,
    project: str,
    lease: BlazarLease,
    key_from: BlazarLease,
    end: datetime | None,
    note: str,
) -> Response:
    rt = runtime(request)
    try:
        with rt.db.write(credits.CREDITS_LOCK) as session:
            t = _tenancy(session, project)
            if t is None:
                return _deny(f"project {project} has no Ecliptic tenancy, so no credit")
            start = _utc(lease.start_date)
            stop = max(start, _utc(end or lease.end_date))
            lease_for_cost = lease.model_copy(update={"end_date": stop})
            credits.settle(
                session,
                t.id,
                _ledger_id(session, project, key_from),
                blazar_cost(session, lease_for_cost),
                start,
                stop,
                note=note,
            )
    except credits.InsufficientCredits as exc:
        return _deny(exc.message)
    return Response(status_code=204)


@router.post(
    "/check-create",
    status_code=204,
    response_model=None,
    dependencies=[Depends(_authorise)],
)
def check_create(
    body: CheckCreate,
    request: Request,
) -> Response:
    """Allow a new Blazar lease if the project's credits cover it (and charge them)."""
    return _settle(
        request,
        body.context.project_id,
        body.lease,
        body.lease,
        None,
        f"Blazar lease '{body.lease.name}' created",
    )


@router.post(
    "/check-update",
    status_code=204,
    response_model=None,
    dependencies=[Depends(_authorise)],
)
def check_update(
    body: CheckUpdate,
    request: Request,
) -> Response:
    """Allow a changed Blazar lease if credits cover the difference (charge or refund it)."""
    new = body.lease.model_copy(update={"id": body.lease.id or body.current_lease.id})
    return _settle(
        request,
        body.context.project_id,
        new,
        body.current_lease,
        None,
        f"Blazar lease '{body.lease.name}' updated",
    )


@router.post(
    "/on-end",
    status_code=204,
    response_model=None,
    dependencies=[Depends(_authorise)],
)
def on_end(
    body: CheckCreate,
    request: Request,
) -> Response:
    """A Blazar lease ended: refund the unused part."""
    now = runtime(request).clock.now()
    end = min(_utc(body.lease.end_date), max(_utc(body.lease.start_date), now))
    return _settle(
        request,
        body.context.project_id,
        body.lease,
        body.lease,
        end,
        f"Blazar lease '{body.lease.name}' ended",
    )
