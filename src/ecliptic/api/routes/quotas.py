"""On-demand quotas: what a tenancy may hold outside leases."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ecliptic.api.deps import AdminDep, CallerDep, RuntimeDep
from ecliptic.api.schemas import QuotaOut, QuotaSet
from ecliptic.services import quotas

router = APIRouter(tags=["quotas"])


def _out(name: str, q: quotas.Quota) -> QuotaOut:
    return QuotaOut(tenancy=name, limits=q.limits, used=q.used, defaults=q.defaults)


@router.get("/quota", response_model=QuotaOut)
def show_quota(
    caller: CallerDep,
    rt: RuntimeDep,
    tenancy: Annotated[str | None, Query(max_length=63)] = None,
) -> QuotaOut:
    """Your tenancy's on-demand quota and use (administrators: any tenancy's)."""
    return _out(*quotas.show(rt.db, caller, tenancy))


@router.put("/tenancies/{ref}/quota", response_model=QuotaOut)
def set_quota(ref: str, body: QuotaSet, caller: AdminDep, rt: RuntimeDep) -> QuotaOut:
    """Set a tenancy's on-demand limits; the fields given change (null: site default)."""
    return _out(*quotas.set_limits(rt.db, caller, ref, body.model_dump(exclude_unset=True)))
