"""Benchmarks, benchmark sets and the kinds there are."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse

from ecliptic.api.deps import CallerDep, RuntimeDep
from ecliptic.api.paging import PagingDep, paged
from ecliptic.api.schemas import EventOut, Out, Page
from ecliptic.naming import Name
from ecliptic.perf.kinds import registry
from ecliptic.perf.spec import BenchmarkSetSpec, BenchmarkSpec
from ecliptic.services import benchmarks, images
from ecliptic.store.models import Benchmark, BenchmarkSet

router = APIRouter(tags=["benchmarks"])


class BenchmarkCreate(BenchmarkSpec):
    """Run one benchmark: a spec (``kind``, ``network``, where, the kind's parameters in a
    section named after it) and an optional name."""

    name: Name | None = None


class BenchmarkOut(Out):
    """A benchmark run: what was asked, where it is, and what it measured."""

    id: str
    name: str
    kind: str
    phase: str
    phase_reason: str
    spec: dict[str, Any]
    set: str | None = None
    permutation: dict[str, Any]
    repetition: int
    result: dict[str, Any] | None
    """The figures (``headline``, ``metrics``, ``units``, ``series``…), once it succeeded."""
    summary: str
    environment: dict[str, Any]
    """Kernel, tool versions, and the servers (host, interface, address) it measured."""
    servers: list[str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    """From the start of the tool's run to its end."""


class SetOut(Out):
    """A benchmark set and how far its runs got."""

    id: str
    name: str
    phase: str
    phase_reason: str
    spec: dict[str, Any]
    runs: int
    counts: dict[str, int]
    """Runs per phase."""
    created_at: datetime
    finished_at: datetime | None


class KindOut(Out):
    """A kind of benchmark and the parameters it takes (JSON schema)."""

    name: str
    title: str
    networks: list[str]
    needs_platform: bool
    parameters: dict[str, Any]


def benchmark_out(row: Benchmark, set_name: str | None = None) -> BenchmarkOut:
    """A run as the API shows it."""
    result = row.result or None
    took = None
    if row.started_at and row.finished_at:
        took = round((row.finished_at - row.started_at).total_seconds(), 3)
    return BenchmarkOut(
        id=row.id,
        name=row.name,
        kind=row.kind,
        phase=row.phase,
        phase_reason=row.phase_reason,
        spec=row.spec,
        set=set_name,
        permutation=row.permutation,
        repetition=row.repetition,
        result=result,
        summary=str(result.get("summary", "")) if result else "",
        environment=row.environment or {},
        servers=[s["server"] for s in (row.environment or {}).get("servers", [])],
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_s=took,
    )


def set_out(rt: Any, row: BenchmarkSet) -> SetOut:
    """A set as the API shows it."""
    counts = benchmarks.set_counts(rt.db, row.id)
    return SetOut(
        id=row.id,
        name=row.name,
        phase=row.phase,
        phase_reason=row.phase_reason,
        spec=row.spec,
        runs=sum(counts.values()),
        counts=counts,
        created_at=row.created_at,
        finished_at=row.finished_at,
    )


@router.get("/benchmark-kinds", response_model=Page[KindOut])
def list_kinds(caller: CallerDep, page: PagingDep) -> Page[KindOut]:
    """Kinds of benchmark, with the parameters each takes."""
    rows = [
        KindOut(
            name=k.name,
            title=k.title,
            networks=list(k.networks),
            needs_platform=k.needs_platform,
            parameters=k.params.model_json_schema(),
        )
        for k in registry.all_kinds()
    ]
    return paged(rows, page, lambda k: k.name, lambda k: k)


@router.post("/benchmarks", response_model=BenchmarkOut, status_code=202)
def create_benchmark(body: BenchmarkCreate, caller: CallerDep, rt: RuntimeDep) -> BenchmarkOut:
    """Run a benchmark. It waits for its turn (one measurement at a time), makes its
    servers (or uses the platform's), runs, stores the figures and removes what it made:
    watch its ``phase``."""
    spec = BenchmarkSpec.model_validate(body.model_dump(exclude={"name"}))
    if spec.platform is None:
        images.check_image(rt.backend, spec.image)
    row = benchmarks.create_benchmark(rt.db, rt.queue, caller, spec, body.name)
    return benchmark_out(row)


@router.get("/benchmarks", response_model=Page[BenchmarkOut])
def list_benchmarks(
    caller: CallerDep,
    rt: RuntimeDep,
    page: PagingDep,
    set: Annotated[str | None, Query(max_length=63, description="only this set's runs")] = None,
    kind: Annotated[str | None, Query(max_length=32, description="only runs of this kind")] = None,
) -> Page[BenchmarkOut]:
    """Runs of your tenancy, newest first (a set's in run order)."""
    rows = benchmarks.list_benchmarks(rt.db, caller, set_ref=set, kind=kind)
    return paged(rows, page, lambda r: r.id, lambda r: benchmark_out(r, set))


@router.get("/benchmarks/{ref}", response_model=BenchmarkOut)
def get_benchmark(ref: str, caller: CallerDep, rt: RuntimeDep) -> BenchmarkOut:
    """One run."""
    return benchmark_out(benchmarks.get_benchmark(rt.db, caller, ref))


@router.get("/benchmarks/{ref}/output", response_class=PlainTextResponse)
def benchmark_output(ref: str, caller: CallerDep, rt: RuntimeDep) -> PlainTextResponse:
    """What the tool printed, as it printed it."""
    row = benchmarks.get_benchmark(rt.db, caller, ref)
    return PlainTextResponse(row.raw_output)


@router.get("/benchmarks/{ref}/events", response_model=Page[EventOut])
def benchmark_events(
    ref: str, caller: CallerDep, rt: RuntimeDep, page: PagingDep
) -> Page[EventOut]:
    """The run's timeline."""
    rows = benchmarks.benchmark_events(rt.db, caller, ref)
    return paged(rows, page, lambda e: e.id, EventOut.model_validate)


@router.delete("/benchmarks/{ref}", response_model=BenchmarkOut, status_code=202)
def delete_benchmark(ref: str, caller: CallerDep, rt: RuntimeDep) -> Response | BenchmarkOut:
    """Cancel a run that is not over (202: it fails as cancelled once its servers are gone),
    or remove a finished one and its figures (204)."""
    row = benchmarks.delete_benchmark(rt.db, rt.queue, caller, ref)
    if row is None:
        return Response(status_code=204)
    return benchmark_out(row)


@router.post("/benchmark-sets", response_model=SetOut, status_code=202)
def create_set(body: BenchmarkSetSpec, caller: CallerDep, rt: RuntimeDep) -> SetOut:
    """Run a set: its template over every permutation, each repeated; the runs are made at
    once (``<set>-000``, ``-001``…) and run one after the other."""
    for spec in {s.image for _, s in _expanded(body) if s.platform is None}:
        images.check_image(rt.backend, spec)
    return set_out(rt, benchmarks.create_set(rt.db, rt.queue, caller, body))


def _expanded(body: BenchmarkSetSpec) -> list[tuple[dict[str, Any], BenchmarkSpec]]:
    from ecliptic.perf.spec import expand

    return expand(body)


@router.get("/benchmark-sets", response_model=Page[SetOut])
def list_sets(caller: CallerDep, rt: RuntimeDep, page: PagingDep) -> Page[SetOut]:
    """Sets of your tenancy, newest first."""
    rows = benchmarks.list_sets(rt.db, caller)
    return paged(rows, page, lambda r: r.id, lambda r: set_out(rt, r))


@router.get("/benchmark-sets/{ref}", response_model=SetOut)
def get_set(ref: str, caller: CallerDep, rt: RuntimeDep) -> SetOut:
    """One set."""
    return set_out(rt, benchmarks.get_set(rt.db, caller, ref))


@router.delete("/benchmark-sets/{ref}", response_model=SetOut, status_code=202)
def delete_set(ref: str, caller: CallerDep, rt: RuntimeDep) -> Response | SetOut:
    """Cancel a running set's remaining runs (202), or remove a finished set with its runs
    (204)."""
    row = benchmarks.delete_set(rt.db, rt.queue, caller, ref)
    if row is None:
        return Response(status_code=204)
    return set_out(rt, row)
