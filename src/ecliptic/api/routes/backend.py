"""What the backend really holds, and garbage collection (administrators)."""

from __future__ import annotations

from fastapi import APIRouter

from ecliptic.api.deps import CallerDep, RuntimeDep
from ecliptic.api.schemas import BackendResource, BackendStatus, GcResult
from ecliptic.reconcile import adoption

router = APIRouter(tags=["backend"])


@router.get("/backend/status", response_model=BackendStatus)
def status(caller: CallerDep, rt: RuntimeDep) -> BackendStatus:
    """Every resource the backend holds for this instance; unknown ones are orphans."""
    caller.require_admin("inspect the backend")
    observed = adoption.observe(rt.ctx)
    resources = [
        BackendResource(
            kind=r.kind,
            name=r.name,
            object_id=r.object_id,
            detail=r.detail,
            known=r.object_id is not None,
        )
        for r in observed.resources
    ]
    return BackendStatus(
        backend=rt.backend.name,
        resources=resources,
        orphans=sum(1 for r in resources if not r.known),
    )


@router.post("/backend/gc", response_model=GcResult)
def gc(caller: CallerDep, rt: RuntimeDep) -> GcResult:
    """Remove what belongs to this instance but to no known object."""
    caller.require_admin("collect backend garbage")
    report = adoption.collect_garbage(rt.ctx)
    return GcResult(
        removed=[
            BackendResource(
                kind=r.kind, name=r.name, object_id=r.object_id, detail=r.detail, known=False
            )
            for r in report.removed
        ]
    )
