"""Benchmarks, benchmark sets and the kinds there are."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse

from ecliptic.api.deps import CallerDep, RuntimeDep
from ecliptic.api.paging import PagingDep, paged
from ecliptic.api.schemas import (
    AggregateOut,
    BenchmarkCreate,
    BenchmarkOut,
    CompareOut,
    DifferenceOut,
    EventOut,
    GroupOut,
    KindOut,
    Page,
    PairOut,
    ResultsOut,
    SetOut,
    SpreadOut,
)
from ecliptic.errors import NotFound
from ecliptic.perf import stats
from ecliptic.perf.kinds import registry
from ecliptic.perf.spec import BenchmarkSetSpec, BenchmarkSpec
from ecliptic.services import benchmarks, images
from ecliptic.store.models import Benchmark, BenchmarkSet

router = APIRouter(tags=["benchmarks"])


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
    names = benchmarks.set_names(rt.db, rows)
    return paged(rows, page, lambda r: r.id, lambda r: benchmark_out(r, names.get(r.set_id or "")))


@router.get("/benchmarks/{ref}", response_model=BenchmarkOut)
def get_benchmark(ref: str, caller: CallerDep, rt: RuntimeDep) -> BenchmarkOut:
    """One run."""
    row = benchmarks.get_benchmark(rt.db, caller, ref)
    return benchmark_out(row, benchmarks.set_names(rt.db, [row]).get(row.set_id or ""))


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
    for image in {s.image for _, s in _expanded(body) if s.platform is None}:
        images.check_image(rt.backend, image)
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


# ------------------------------------------------------------------------------ results


def _spread(s: stats.Spread) -> SpreadOut:
    pct = s.spread_pct
    return SpreadOut(
        median=s.median,
        min=s.min,
        max=s.max,
        n=s.n,
        spread_pct=None if pct == float("inf") else pct,
    )


def _aggregate(a: stats.Aggregate) -> AggregateOut:
    return AggregateOut(
        kind=a.kind,
        headline=a.headline,
        metrics={k: _spread(v) for k, v in a.metrics.items()},
        units=a.units,
        higher_is_better=a.higher_is_better,
        series_x=a.series_x,
        series=[{k: _spread(v) for k, v in row.items()} for row in a.series],
        summary=a.summary,
    )


def _difference(d: stats.Difference) -> DifferenceOut:
    return DifferenceOut(
        metric=d.metric,
        unit=d.unit,
        x=d.x,
        a=_spread(d.a),
        b=_spread(d.b),
        ratio=d.ratio,
        change_pct=d.change_pct,
        beyond_spread=d.beyond_spread,
        better=d.better,
    )


Baseline = Annotated[
    str | None,
    Query(max_length=200, description="the permutation label to compare the others with"),
]


def _results(rt: Any, caller: Any, ref: str, baseline: str | None) -> ResultsOut:
    name, rows = benchmarks.runs_of(rt.db, caller, ref)
    groups = benchmarks.groups_of(rows)
    diffs = benchmarks.against_baseline(groups, baseline)
    bases: dict[str, str] = {}
    for g in groups:
        if g.aggregate is not None and g.label not in diffs and g.kind not in bases:
            bases[g.kind] = g.label
    return ResultsOut(
        name=name,
        baseline=bases,
        groups=[
            GroupOut(
                label=g.label,
                kind=g.kind,
                permutation=g.permutation,
                runs=g.runs,
                failed=g.failed,
                aggregate=_aggregate(g.aggregate) if g.aggregate else None,
                against_baseline=[_difference(d) for d in diffs.get(g.label, [])],
            )
            for g in groups
        ],
        plots=[f.name for f in benchmarks.figures_of(groups, "svg")],
    )


@router.get("/benchmark-sets/{ref}/results", response_model=ResultsOut)
def set_results(
    ref: str, caller: CallerDep, rt: RuntimeDep, baseline: Baseline = None
) -> ResultsOut:
    """The set's figures per permutation (median, min, max over its repetitions), each
    compared with the baseline permutation: which is faster, by how much, and whether the
    difference is beyond the run-to-run spread."""
    benchmarks.get_set(rt.db, caller, ref)
    return _results(rt, caller, ref, baseline)


@router.get("/benchmarks/{ref}/results", response_model=ResultsOut)
def run_results(ref: str, caller: CallerDep, rt: RuntimeDep) -> ResultsOut:
    """A lone run's figures in the same shape as a set's."""
    benchmarks.get_benchmark(rt.db, caller, ref)
    return _results(rt, caller, ref, None)


@router.get("/benchmark-comparisons", response_model=CompareOut)
def compare(
    caller: CallerDep,
    rt: RuntimeDep,
    a: Annotated[str, Query(min_length=1, max_length=63, description="a run or a set")],
    b: Annotated[str, Query(min_length=1, max_length=63, description="a run or a set")],
) -> CompareOut:
    """Two runs or two sets side by side (sets pair their permutations by label): b against
    a, figure by figure, with the ratio and whether the difference is beyond the spread."""
    pairs = benchmarks.compare_refs(rt.db, caller, a, b)
    return CompareOut(
        a=a,
        b=b,
        pairs=[
            PairOut(a=x.label, b=y.label, kind=x.kind, differences=[_difference(d) for d in ds])
            for x, y, ds in pairs
        ],
    )


def _plot(rt: Any, caller: Any, ref: str, file: str) -> Response:
    stem, _, ext = file.rpartition(".")
    if ext not in ("svg", "png"):
        raise NotFound(f"plots are '{file}.svg' or '.png': ask for NAME.svg or NAME.png")
    _, rows = benchmarks.runs_of(rt.db, caller, ref)
    for f in benchmarks.figures_of(benchmarks.groups_of(rows), "svg" if ext == "svg" else "png"):
        if f.name == stem:
            media = "image/svg+xml" if ext == "svg" else "image/png"
            return Response(f.data, media_type=media, headers={"Cache-Control": "no-store"})
    raise NotFound(f"no plot '{stem}' for '{ref}'; its results list the plots there are")


PLOT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "content": {"image/svg+xml": {}, "image/png": {}},
        "description": "The plot: SVG for NAME.svg, PNG for NAME.png",
    }
}


@router.get("/benchmark-sets/{ref}/plots/{file}", response_class=Response, responses=PLOT_RESPONSES)
def set_plot(ref: str, file: str, caller: CallerDep, rt: RuntimeDep) -> Response:
    """A plot of the set's figures (``NAME.svg`` or ``NAME.png``; names in its results)."""
    benchmarks.get_set(rt.db, caller, ref)
    return _plot(rt, caller, ref, file)


@router.get("/benchmarks/{ref}/plots/{file}", response_class=Response, responses=PLOT_RESPONSES)
def run_plot(ref: str, file: str, caller: CallerDep, rt: RuntimeDep) -> Response:
    """A plot of one run's figures."""
    benchmarks.get_benchmark(rt.db, caller, ref)
    return _plot(rt, caller, ref, file)
