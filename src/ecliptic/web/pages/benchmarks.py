"""Benchmarks: the tenancy's sets and lone runs, the YAML form that starts one, a set's or a
run's page (the answer per permutation against the baseline, plots, runs with their
environment, output and timeline, live while not finished), cancel and delete."""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Any

import yaml
from fastapi import Path, Query
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy import select

from ecliptic.api.schemas import BenchmarkCreate
from ecliptic.errors import EclipticError, NotFound
from ecliptic.perf import plots, stats
from ecliptic.perf.kinds import registry
from ecliptic.perf.spec import BenchmarkSetSpec, BenchmarkSpec, expand, label
from ecliptic.phases import BenchmarkPhase, SetPhase
from ecliptic.services import benchmarks, images
from ecliptic.store.models import Benchmark, BenchmarkSet, Event
from ecliptic.web.pages.common import Here, HereDep, page_router
from ecliptic.web.render import page, redirect
from ecliptic.web.session import form_of

router = page_router()

Name = Annotated[str, Path(max_length=63)]
PlotFile = Annotated[str, Path(max_length=120)]

EXAMPLE = """\
# Which wiring is fastest? iperf3 over each network, 3 times each.
name: wiring
template:
  kind: iperf3
  iperf3: {duration: 5, streams: 1}
permutations:
  product:
    network: [bridge, direct, host]
repetitions: 3
"""
"""What the form offers to start from: a set comparing the three wirings."""

MAX_YAML = 64 * 1024
"""The longest spec the form takes (a set of 500 runs is a few lines)."""
OUTPUT_SHOWN = 16 * 1024
"""How much of a run's raw output its page shows (the rest is a link away)."""
OUTPUT_SHOWN_IN_SET = 4 * 1024
"""The same on a set's page, where every run's output is shown."""
RUNS_IN_DETAIL = 50
"""A set page shows each run's environment, output and timeline up to this many runs."""
FINAL = {BenchmarkPhase.SUCCEEDED.value, BenchmarkPhase.FAILED.value}
SET_FINAL = {SetPhase.SUCCEEDED.value, SetPhase.FAILED.value}
FILE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Resource-Policy": "same-origin",
    # A plot or an output opened on its own is a sandboxed document that runs nothing (an
    # SVG shown with <img>, as the pages do, never runs script anyway).
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'; sandbox",
}


# ------------------------------------------------------------------------------ the answer


@dataclass(frozen=True)
class Figure:
    """One metric of a permutation, as the answer shows it."""

    metric: str
    median: str
    range: str
    """``8.9 to 9.4``, or ``(1 run)``."""
    unit: str
    vs: str
    """Against the baseline: ``x1.57 (better)``, ``baseline``, or ``-``."""
    tone: str
    """``better``, ``worse``, ``same`` or ``""``: how the ratio is coloured."""


@dataclass(frozen=True)
class Row:
    """A permutation (or a lone run) in the answer table."""

    label: str
    kind: str
    ok: int
    total: int
    headline: Figure | None
    """None while none of its runs succeeded."""
    figures: list[Figure]
    """Every metric, the headline first."""
    summary: str


@dataclass(frozen=True)
class Answer:
    """What a set or a run found: a row per permutation and, per kind, which is best."""

    rows: list[Row]
    sentences: list[str]
    baseline: dict[str, str]
    """The baseline permutation of each kind."""
    choices: list[str]
    """Labels that can be the baseline (those with figures)."""


def _num(x: float) -> str:
    return stats.fmt(x)


def _vs(d: stats.Difference | None, is_base: bool) -> tuple[str, str]:
    if d is None:
        return ("baseline", "") if is_base else ("-", "")
    if d.ratio is None:
        return "-", ""
    word, tone = {"b": ("better", "better"), "a": ("worse", "worse")}.get(
        d.better or "", ("within the spread", "same")
    )
    return f"x{d.ratio:.2f} ({word})", tone


def _figure(agg: stats.Aggregate, metric: str, diffs: list[stats.Difference], base: bool) -> Figure:
    s = agg.metrics[metric]
    vs, tone = _vs(next((d for d in diffs if d.metric == metric), None), base)
    return Figure(
        metric=metric,
        median=_num(s.median),
        range=f"{_num(s.min)} to {_num(s.max)}" if s.n > 1 else "(1 run)",
        unit=agg.units.get(metric, ""),
        vs=vs,
        tone=tone,
    )


def answer(groups: list[benchmarks.Group], baseline: str | None = None) -> Answer:
    """The answer as ``ecliptic bench show`` gives it: per permutation its headline figure
    (median and range over its repetitions) against the baseline, and per kind which is best
    and whether that is beyond the run-to-run spread."""
    diffs = benchmarks.against_baseline(groups, baseline)
    bases: dict[str, str] = {}
    for g in groups:
        if g.aggregate is not None and g.label not in diffs and g.kind not in bases:
            bases[g.kind] = g.label
    rows = []
    for g in groups:
        a = g.aggregate
        total = len(g.runs) + len(g.failed)
        if a is None:
            rows.append(Row(g.label, g.kind, 0, total, None, [], ""))
            continue
        mine = diffs.get(g.label, [])
        is_base = bases.get(g.kind) == g.label
        names = [a.headline, *(m for m in a.metrics if m != a.headline)]
        figures = [_figure(a, m, mine, is_base) for m in names]
        rows.append(Row(g.label, g.kind, len(g.runs), total, figures[0], figures, a.summary))
    sentences = []
    for kind, base in bases.items():
        mine_g = [g for g in groups if g.kind == kind and g.aggregate is not None]
        if len(mine_g) < 2:
            continue
        agg0 = mine_g[0].aggregate
        assert agg0 is not None
        higher = agg0.better_higher(agg0.headline)

        def head(g: benchmarks.Group) -> float:
            assert g.aggregate is not None
            return g.aggregate.metrics[g.aggregate.headline].median

        best = (max if higher else min)(mine_g, key=head)
        d = next((x for x in diffs.get(best.label, []) if x.metric == agg0.headline), None)
        if d is None or d.ratio is None:
            sentences.append(f"{kind}: {best.label} (the baseline) is the best of {len(mine_g)}")
        else:
            real = (
                "beyond the run-to-run spread"
                if d.beyond_spread
                else "within the spread: not a clear difference"
            )
            sentences.append(f"{kind}: best is {best.label}, x{d.ratio:.2f} of {base} ({real})")
    choices = [g.label for g in groups if g.aggregate is not None]
    return Answer(rows, sentences, bases, choices)


# ------------------------------------------------------------------------------ plots


_FIGURES: OrderedDict[tuple[Any, ...], list[plots.Figure]] = OrderedDict()
_FIGURES_LOCK = threading.Lock()
_FIGURES_KEPT = 32
"""Plots drawn lately, by the runs they were drawn from: a page names its plots and each
<img> then asks for one, and drawing them all takes a good part of a second."""


def figures(rows: list[Benchmark], fmt: plots.Format) -> list[plots.Figure]:
    """The plots of these runs' figures (drawn again only when a run changed)."""
    key = (fmt, tuple((r.id, r.phase, str(r.updated_at)) for r in rows if r.result))
    with _FIGURES_LOCK:
        if key in _FIGURES:
            _FIGURES.move_to_end(key)
            return _FIGURES[key]
    drawn = benchmarks.figures_of(benchmarks.groups_of(rows), fmt)
    with _FIGURES_LOCK:
        _FIGURES[key] = drawn
        while len(_FIGURES) > _FIGURES_KEPT:
            _FIGURES.popitem(last=False)
    return drawn


def _plot(rows: list[Benchmark], file: str, what: str) -> Response:
    stem, _, ext = file.rpartition(".")
    if ext not in ("svg", "png"):
        raise NotFound(f"plots are NAME.svg or NAME.png, not '{file}'")
    for f in figures(rows, "svg" if ext == "svg" else "png"):
        if f.name == stem:
            media = "image/svg+xml" if ext == "svg" else "image/png"
            return Response(f.data, media_type=media, headers=FILE_HEADERS)
    raise NotFound(f"no plot '{stem}' for {what}: its page shows the plots there are")


# ------------------------------------------------------------------------------ runs


@dataclass(frozen=True)
class RunView:
    """A run as its row in a table and its details show it."""

    row: Benchmark
    permutation: str
    summary: str
    servers: list[dict[str, Any]]
    duration_s: float | None
    events: list[dict[str, str]]
    output: str
    """The raw output shown (its start, when long)."""
    output_cut: int
    """How many characters of the output are not shown (0: all are)."""

    @property
    def finished(self) -> bool:
        """Whether the run is over."""
        return self.row.phase in FINAL


def _event(e: Event) -> dict[str, str]:
    moved = e.from_phase != e.to_phase
    text = (f"{e.from_phase or 'new'} → {e.to_phase}: " if moved else "") + e.reason
    return {
        "id": str(e.id),
        "at": f"{e.at:%H:%M:%S}",
        "message": text,
        "kind": "warning" if e.to_phase == BenchmarkPhase.FAILED and moved else "info",
    }


def _events(here: Here, ids: list[str]) -> dict[str, list[dict[str, str]]]:
    """The timelines of these runs (of the caller's tenancy: found by the caller before)."""
    out: dict[str, list[dict[str, str]]] = {i: [] for i in ids}
    if not ids:
        return out
    with here.rt.db.read() as session:
        rows = session.scalars(
            select(Event)
            .where(Event.object_kind == "benchmark", Event.object_id.in_(ids))
            .order_by(Event.id)
        )
        for e in rows:
            out[e.object_id].append(_event(e))
    return {i: evs[-500:] for i, evs in out.items()}


def _run_view(r: Benchmark, events: list[dict[str, str]], shown: int) -> RunView:
    took = None
    if r.started_at and r.finished_at:
        took = (r.finished_at - r.started_at).total_seconds()
    summary = str((r.result or {}).get("summary", "")) or r.phase_reason
    raw = r.raw_output or ""
    return RunView(
        row=r,
        permutation=label(r.permutation) if r.set_id else "",
        summary=summary,
        servers=list((r.environment or {}).get("servers", [])),
        duration_s=took,
        events=events,
        output=raw[:shown],
        output_cut=max(0, len(raw) - shown),
    )


def _runs(here: Here, rows: list[Benchmark], shown: int) -> list[RunView]:
    events = _events(here, [r.id for r in rows])
    return [_run_view(r, events[r.id], shown) for r in rows]


# ------------------------------------------------------------------------------ the list


@dataclass(frozen=True)
class Item:
    """A set or a lone run in the tenancy's list."""

    name: str
    href: str
    is_set: bool
    kinds: list[str]
    phase: str
    progress: str
    summary: str
    created_at: Any


def _list_items(here: Here) -> list[Item]:
    runs = benchmarks.list_benchmarks(here.rt.db, here.caller)
    sets = benchmarks.list_sets(here.rt.db, here.caller)
    by_set: dict[str, list[Benchmark]] = {}
    for r in runs:
        if r.set_id:
            by_set.setdefault(r.set_id, []).append(r)
    items = []
    for s in sets:
        mine = sorted(by_set.get(s.id, []), key=lambda r: r.name)
        done = sum(1 for r in mine if r.phase in FINAL)
        summary = s.phase_reason if s.phase in SET_FINAL else ""
        if any(r.result for r in mine):
            a = answer(benchmarks.groups_of(mine))
            if a.sentences:
                summary = "; ".join(a.sentences)
            elif len(a.rows) == 1 and a.rows[0].summary:
                summary = a.rows[0].summary
        items.append(
            Item(
                name=s.name,
                href=f"{here.base}/benchmarks/sets/{s.name}",
                is_set=True,
                kinds=sorted({r.kind for r in mine}),
                phase=s.phase,
                progress=f"{done} of {len(mine)} runs done" if s.phase not in SET_FINAL else "",
                summary=summary,
                created_at=s.created_at,
            )
        )
    for r in runs:
        if r.set_id is None:
            items.append(
                Item(
                    name=r.name,
                    href=f"{here.base}/benchmarks/{r.name}",
                    is_set=False,
                    kinds=[r.kind],
                    phase=r.phase,
                    progress=r.phase_reason if r.phase not in FINAL else "",
                    summary=str((r.result or {}).get("summary", ""))
                    or (r.phase_reason if r.phase in FINAL else ""),
                    created_at=r.created_at,
                )
            )
    items.sort(key=lambda i: i.created_at, reverse=True)
    return items


async def _list_page(
    here: Here, *, text: str = EXAMPLE, problems: list[str] | None = None, flash: str = ""
) -> HTMLResponse:
    items = await here.run(_list_items, here)
    return page(
        here.request,
        "benchmarks/list.html",
        here.v,
        tenancy=here.tenancy,
        title="Benchmarks",
        status=422 if problems else 200,
        items=items,
        kinds=registry.names(),
        text=text,
        problems=problems or [],
        flash=flash,
    )


@router.get("/t/{tenancy}/benchmarks")
async def list_page(
    here: HereDep, deleted: Annotated[str, Query(max_length=63)] = ""
) -> HTMLResponse:
    """The tenancy's sets and lone runs, newest first, and the form that starts one."""
    return await _list_page(here, flash=f"{deleted} deleted." if deleted else "")


# ------------------------------------------------------------------------------ the form


class SpecRefused(Exception):
    """What is wrong with a submitted spec, said for the form."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _NoAliases(yaml.SafeLoader):
    """YAML without aliases: a few ``*a`` nested can make a short text a huge document."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise yaml.MarkedYAMLError(
                problem="aliases (*name) are not accepted here: write the value out",
                problem_mark=self.peek_event().start_mark,
            )
        return super().compose_node(parent, index)


def _line_of(node: Any, loc: tuple[Any, ...]) -> int | None:
    """The line of the YAML where the value at ``loc`` (a validation error's place) is."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            hit = next((v for k, v in node.value if getattr(k, "value", None) == str(part)), None)
            if hit is None:
                hit = next(
                    (k for k, _ in node.value if getattr(k, "value", None) == str(part)), None
                )
                return hit.start_mark.line + 1 if hit is not None else line
            node = hit
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(node.value):
                return line
            node = node.value[part]
        else:
            return line
        line = node.start_mark.line + 1
    return line


_SECTION_PROBLEM = re.compile(r"^(\w+): ([\w.]+): ")


def _problems(exc: ValidationError, root: Any) -> list[str]:
    out = []
    for e in exc.errors():
        loc = tuple(e.get("loc", ()))
        where = ".".join(str(p) for p in loc)
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            msg = "not a field here: remove it, or check its spelling"
        elif e.get("type") == "string_pattern_mismatch":  # names: of a set, image, lease…
            msg = "use lower-case letters, digits and dashes, starting with a letter"
        line = _line_of(root, loc)
        if not loc:  # a kind's section checked as a whole: "iperf3: duration: ..."
            m = _SECTION_PROBLEM.match(msg)
            if m:
                line = _line_of(root, (m.group(1), *m.group(2).split(".")))
        at = f"line {line}: " if line else ""
        out.append(f"{at}{where}: {msg}" if where else f"{at}{msg}")
    return out


def read_spec(text: str) -> BenchmarkSetSpec | BenchmarkCreate:
    """The form's YAML as a set (it has a ``template``) or one benchmark, validated by the
    API's own models; ``SpecRefused`` saying what to change otherwise."""
    if len(text) > MAX_YAML:
        raise SpecRefused([f"the spec is {len(text)} characters; at most {MAX_YAML} are taken"])
    if not text.strip():
        raise SpecRefused(["the spec is empty: start from the example"])
    loader = _NoAliases(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise SpecRefused([f"{at}{e.problem or e.context or 'not YAML'}"]) from None
    except (yaml.YAMLError, RecursionError) as e:
        raise SpecRefused([f"not YAML that can be read: {e}"]) from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise SpecRefused(
            [
                "expected a mapping: one benchmark (kind: iperf3, network: …) or a set "
                "(name, template, permutations)"
            ]
        )
    model: type[BenchmarkSetSpec] | type[BenchmarkCreate] = (
        BenchmarkSetSpec if "template" in data else BenchmarkCreate
    )
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise SpecRefused(_problems(e, root)) from None


def _start(here: Here, text: str) -> str:
    """Check and submit the form's spec; the page of what was made."""
    body = read_spec(text)
    rt, c = here.rt, here.caller
    try:
        if isinstance(body, BenchmarkSetSpec):
            for image in {s.image for _, s in expand(body) if s.platform is None}:
                images.check_image(rt.backend, image)
            made = benchmarks.create_set(rt.db, rt.queue, c, body)
            return f"{here.base}/benchmarks/sets/{made.name}"
        spec = BenchmarkSpec.model_validate(body.model_dump(exclude={"name"}))
        if spec.platform is None:
            images.check_image(rt.backend, spec.image)
        run = benchmarks.create_benchmark(rt.db, rt.queue, c, spec, body.name)
        return f"{here.base}/benchmarks/{run.name}"
    except EclipticError as e:  # a flavor, image or platform that is not there, a name taken
        raise SpecRefused([e.message]) from None


@router.post("/t/{tenancy}/benchmarks")
async def start(here: HereDep) -> Response:
    """Run the benchmark or set of the form's YAML; its page, or the form with what to change."""
    form = await form_of(here.request, here.v)
    text = (form.get("spec") or [""])[0]
    try:
        url = await here.run(_start, here, text)
    except SpecRefused as e:
        return await _list_page(here, text=text, problems=e.problems)
    return redirect(url)


# ------------------------------------------------------------------------------ a run's files
# Registered before the sets' pages: a run may be called "sets", and its files' names have a
# dot, which no set's name has (so /benchmarks/sets/output.txt is that run's output).


@router.get("/t/{tenancy}/benchmarks/{name}/events.json")
async def run_events(here: HereDep, name: Name) -> JSONResponse:
    """The run's phase and timeline (the page polls it while the run is not over)."""

    def load() -> dict[str, Any]:
        r = benchmarks.get_benchmark(here.rt.db, here.caller, name)
        return {"phase": r.phase, "events": _events(here, [r.id])[r.id]}

    return JSONResponse(await here.run(load), headers={"Cache-Control": "no-store"})


@router.get("/t/{tenancy}/benchmarks/{name}/output.txt")
async def run_output(here: HereDep, name: Name) -> Response:
    """What the run's tool printed, whole, as plain text."""
    r = await here.run(benchmarks.get_benchmark, here.rt.db, here.caller, name)
    return Response(
        r.raw_output or "",
        media_type="text/plain; charset=utf-8",
        headers=FILE_HEADERS,
    )


# ------------------------------------------------------------------------------ a set


def _set_rows(here: Here, name: str) -> tuple[BenchmarkSet, list[Benchmark], int]:
    s = benchmarks.get_set(here.rt.db, here.caller, name)
    rows = benchmarks.list_benchmarks(here.rt.db, here.caller, set_ref=s.id)
    return s, rows, sum(1 for r in rows if r.phase in FINAL)


def _progress(s: BenchmarkSet, rows: list[Benchmark], done: int) -> dict[str, Any]:
    """What the live part of a set's page shows, and the state it was drawn in."""
    return {
        "s": s,
        "done": done,
        "total": len(rows),
        "now_running": next(
            (r for r in rows if r.phase not in FINAL and r.phase != BenchmarkPhase.PENDING), None
        ),
        "seen": f"{s.phase}:{done}",
    }


def _set_view(here: Here, name: str, baseline: str) -> dict[str, Any]:
    s, rows, done = _set_rows(here, name)
    groups = benchmarks.groups_of(rows)
    notice = ""
    try:
        a = answer(groups, baseline or None)
    except NotFound:
        a = answer(groups)
        notice = f"No permutation '{baseline}' has figures: compared with the first instead."
    detailed = len(rows) <= RUNS_IN_DETAIL
    if detailed:
        runs = _runs(here, rows, OUTPUT_SHOWN_IN_SET)
    else:
        runs = [_run_view(r, [], 0) for r in rows]
    return {
        **_progress(s, rows, done),
        "answer": a,
        "plots": [(f.name, f.title) for f in figures(rows, "svg")],
        "runs": runs,
        "detailed": detailed,
        "in_detail": RUNS_IN_DETAIL,
        "notice": notice,
        "chosen": baseline,
    }


@router.get("/t/{tenancy}/benchmarks/sets/{name}")
async def set_page(
    here: HereDep,
    name: Name,
    baseline: Annotated[str, Query(max_length=200)] = "",
    done: Annotated[str, Query(max_length=16)] = "",
) -> HTMLResponse:
    """A set: the answer per permutation, its plots, and its runs; live while it runs."""
    view = await here.run(_set_view, here, name, baseline)
    flash = {
        "cancelled": "Cancelled: the runs still to come fail as cancelled; the servers of the "
        "one running are removed.",
        "run-deleted": "Run deleted.",
    }.get(done, "")
    return page(
        here.request,
        "benchmarks/set.html",
        here.v,
        tenancy=here.tenancy,
        title=f"Benchmark set {view['s'].name}",
        flash=flash or view["notice"],
        **view,
    )


@router.get("/t/{tenancy}/benchmarks/sets/{name}/runs")
async def set_runs(
    here: HereDep, name: Name, seen: Annotated[str, Query(max_length=40)] = ""
) -> Response:
    """The set's runs table alone, for the page to refresh it in place; once a run has
    ended (the answer and the plots change) the whole page is reloaded instead."""
    s, rows, done = await here.run(_set_rows, here, name)
    if here.request.headers.get("hx-request") != "true":
        return redirect(f"{here.base}/benchmarks/sets/{s.name}#runs")
    view = _progress(s, rows, done)
    if view["seen"] != seen:
        return Response(headers={"HX-Refresh": "true", "Cache-Control": "no-store"})
    runs = [_run_view(r, [], 0) for r in rows]
    return page(
        here.request, "benchmarks/set_runs.html", here.v, tenancy=here.tenancy, runs=runs, **view
    )


@router.get("/t/{tenancy}/benchmarks/sets/{name}/plots/{file}")
async def set_plot(here: HereDep, name: Name, file: PlotFile) -> Response:
    """A plot of the set (``NAME.svg`` or ``NAME.png``), for the visitor's session."""

    def load() -> Response:
        s = benchmarks.get_set(here.rt.db, here.caller, name)
        rows = benchmarks.list_benchmarks(here.rt.db, here.caller, set_ref=s.id)
        return _plot(rows, file, f"set '{s.name}'")

    return await here.run(load)


@router.post("/t/{tenancy}/benchmarks/sets/{name}/delete")
async def delete_set(here: HereDep, name: Name) -> Response:
    """Cancel a set that runs (its runs to come fail as cancelled), or delete a finished one
    with its runs and figures."""
    await form_of(here.request, here.v)
    left = await here.run(benchmarks.delete_set, here.rt.db, here.rt.queue, here.caller, name)
    if left is None:
        return redirect(f"{here.base}/benchmarks?deleted={name}")
    return redirect(f"{here.base}/benchmarks/sets/{name}?done=cancelled")


# ------------------------------------------------------------------------------ a run


def _run_page_view(here: Here, name: str) -> dict[str, Any]:
    r = benchmarks.get_benchmark(here.rt.db, here.caller, name)
    view = _runs(here, [r], OUTPUT_SHOWN)[0]
    return {
        "r": view,
        "finished": view.finished,
        "set_name": _set_name(here, r),
        "answer": answer(benchmarks.groups_of([r])),
        "plots": [(f.name, f.title) for f in figures([r], "svg")],
        "env": r.environment or {},
        "spec_yaml": yaml.safe_dump(
            {k: v for k, v in r.spec.items() if v is not None}, sort_keys=False
        ),
    }


@router.get("/t/{tenancy}/benchmarks/{name}")
async def run_page(
    here: HereDep, name: Name, done: Annotated[str, Query(max_length=16)] = ""
) -> HTMLResponse:
    """One run: its figures, plots, environment, raw output and timeline; live until over."""
    view = await here.run(_run_page_view, here, name)
    flash = {"cancelled": "Cancelled: its servers are removed, then it ends as FAILED."}.get(
        done, ""
    )
    return page(
        here.request,
        "benchmarks/run.html",
        here.v,
        tenancy=here.tenancy,
        title=f"Benchmark {view['r'].row.name}",
        flash=flash,
        **view,
    )


@router.get("/t/{tenancy}/benchmarks/{name}/plots/{file}")
async def run_plot(here: HereDep, name: Name, file: PlotFile) -> Response:
    """A plot of one run's figures."""

    def load() -> Response:
        r = benchmarks.get_benchmark(here.rt.db, here.caller, name)
        return _plot([r], file, f"run '{r.name}'")

    return await here.run(load)


@router.post("/t/{tenancy}/benchmarks/{name}/delete")
async def delete_run(here: HereDep, name: Name) -> Response:
    """Cancel a run that is not over, or delete a finished one with its figures."""
    await form_of(here.request, here.v)
    r = await here.run(benchmarks.get_benchmark, here.rt.db, here.caller, name)
    set_name = await here.run(_set_name, here, r)
    left = await here.run(benchmarks.delete_benchmark, here.rt.db, here.rt.queue, here.caller, name)
    if left is not None:
        return redirect(f"{here.base}/benchmarks/{r.name}?done=cancelled")
    if set_name:
        return redirect(f"{here.base}/benchmarks/sets/{set_name}?done=run-deleted")
    return redirect(f"{here.base}/benchmarks?deleted={r.name}")


def _set_name(here: Here, r: Benchmark) -> str | None:
    """The name of the set a run belongs to (None: a lone run)."""
    if not r.set_id:
        return None
    with here.rt.db.read() as session:
        s = session.get(BenchmarkSet, r.set_id)
        return s.name if s else None
