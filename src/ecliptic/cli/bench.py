"""``ecliptic bench``: run benchmarks and sets from YAML, and read their answers."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from ecliptic.cli import output
from ecliptic.cli.exitcodes import ExitCode
from ecliptic.cli.session import client, command, emit
from ecliptic.client import BenchmarkOut, ResultsOut, SetOut

app = typer.Typer(
    help="Benchmarks: network and storage measurements as specs, sets of permutations, "
    "figures, comparisons and plots."
)

Ref = Annotated[str, typer.Argument(help="A run or a set (name or id).", show_default=False)]
FINAL = {"SUCCEEDED", "FAILED"}


def _error(message: str) -> None:
    """``error: ...`` on stderr."""
    sys.stderr.write(f"error: {message}\n")


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _printable(value: Any) -> str:
    """Text from a run as safe terminal text: a tool's output, its version line, a failure
    reason and a permutation's values come from the servers or from whoever wrote the spec,
    so escape sequences (which could retitle, rewrite or hide the reader's terminal) are
    shown, not run."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def _rows(rows: Any) -> list[list[Any]]:
    """Table rows with every text made :func:`_printable`."""
    return [[_printable(v) if isinstance(v, str) else v for v in row] for row in rows]


def _fields(pairs: list[tuple[str, Any]]) -> None:
    """``output.fields`` with every value made :func:`_printable`."""
    output.fields([(k, _printable(v) if isinstance(v, str) else v) for k, v in pairs])


def _load(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent):  # a few lines can expand to gigabytes
                at = event.start_mark
                where = f":{at.line + 1}" if at is not None else ""
                _error(
                    f"{path}{where}: anchors and aliases (*name) are not allowed in a "
                    "benchmark: write the value out"
                )
                raise typer.Exit(ExitCode.USAGE)
        data = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as e:
        _error(f"{path}: {e}")
        raise typer.Exit(ExitCode.USAGE) from None
    if not isinstance(data, dict):
        _error(f"{path}: expected a mapping (a benchmark or a set), got {type(data).__name__}")
        raise typer.Exit(ExitCode.USAGE)
    return data


@command(app, "kinds")
def kinds() -> None:
    """The kinds of benchmark and the networks each measures."""
    rows = client().benchmarks.kinds()
    emit(
        rows,
        lambda: output.table(
            ["KIND", "MEASURES", "NETWORKS", "PARAMETERS"],
            [
                [
                    k.name,
                    k.title,
                    ", ".join(k.networks),
                    ", ".join(k.parameters.get("properties", {})),
                ]
                for k in rows
            ],
        ),
    )


@command(app, "run")
def run(
    file: Annotated[str, typer.Argument(help="A YAML file: one benchmark, or a set ('-': stdin).")],
    name: Annotated[
        str | None, typer.Option("--name", help="Name of a lone run (a set has its own).")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Follow the runs, then show the figures.")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait.")] = 3600,
) -> None:
    """Run a benchmark or a benchmark set described in FILE.

    A file with a ``template`` is a set; otherwise it is one benchmark (``kind``,
    ``network``, and the kind's parameters in a section named after it)."""
    spec = _load(file)
    c = client()
    is_set = "template" in spec
    started: SetOut | BenchmarkOut = (
        c.benchmarks.run_set(spec) if is_set else c.benchmarks.run(spec, name)
    )
    ref = started.name
    if not wait:
        emit(
            started,
            lambda: output.say(
                f"{'set' if is_set else 'benchmark'} {ref} queued; "
                f"follow it with 'ecliptic bench show {ref}'"
            ),
        )
        return
    failed = _follow(ref, is_set, timeout)
    res = c.benchmarks.results(ref, is_set=is_set)
    emit(res, lambda: _show_results(res))
    if failed:
        raise typer.Exit(ExitCode.WAIT_FAILED)


def _follow(ref: str, is_set: bool, timeout: float) -> int:
    """Show each run as it ends (and what runs now) until all are over; how many failed."""
    c = client()
    deadline = time.monotonic() + timeout
    reported: set[str] = set()
    failed = 0
    with output.waiting(f"{ref}: queued") as update:
        while True:
            runs = c.benchmarks.list(set=ref) if is_set else [c.benchmarks.get(ref)]
            total = len(runs)
            for r in runs:
                if r.phase in FINAL and r.name not in reported:
                    reported.add(r.name)
                    failed += r.phase == "FAILED"
                    label = ", ".join(f"{k}={v}" for k, v in r.permutation.items())
                    what = r.summary if r.phase == "SUCCEEDED" else f"FAILED: {r.phase_reason}"
                    output.note(_printable(f"{r.name}  {label or r.kind}  {what}"))
            now = [r for r in runs if r.phase not in FINAL and r.phase != "PENDING"]
            if len(reported) == total:
                return failed
            if now:
                r = now[0]
                what = f"{r.name} {r.phase}: {r.phase_reason}"
                update(_printable(f"{ref}: {len(reported)}/{total} done; {what}"))
            else:
                update(f"{ref}: {len(reported)}/{total} done; waiting for its turn")
            if time.monotonic() > deadline:
                _error(f"{ref} did not finish within {timeout:g} s (it goes on)")
                raise typer.Exit(ExitCode.WAIT_FAILED)
            time.sleep(0.3)


def _ratio_text(d: Any) -> str:
    if d.ratio is None:
        return "-"
    word = "better" if d.better == "b" else "worse" if d.better == "a" else "within the spread"
    return f"x{d.ratio:.2f} ({word})"


def _headline(a: Any) -> float:
    return float(a.metrics[a.headline].median)


def _show_results(res: ResultsOut) -> None:
    rows = []
    for g in res.groups:
        a = g.aggregate
        if a is None:
            rows.append([g.label, g.kind, f"0/{len(g.failed)} ok", "-", "-", "-"])
            continue
        h = a.metrics[a.headline]
        unit = a.units.get(a.headline, "")
        head = next((d for d in g.against_baseline if d.metric == a.headline), None)
        rows.append(
            [
                g.label,
                g.kind,
                f"{len(g.runs)}/{len(g.runs) + len(g.failed)} ok",
                f"{a.headline} {h.median:.4g} {unit}",
                f"{h.min:.4g} to {h.max:.4g}" if h.n > 1 else "(1 run)",
                _ratio_text(head)
                if head
                else ("baseline" if res.baseline.get(g.kind) == g.label else "-"),
            ]
        )
    output.table(
        ["PERMUTATION", "KIND", "RUNS", "FIGURE (median)", "RANGE", "VS BASELINE"], _rows(rows)
    )
    for kind, base in res.baseline.items():
        mine = [g for g in res.groups if g.kind == kind and g.aggregate is not None]
        if len(mine) < 2:
            continue
        agg0 = mine[0].aggregate
        assert agg0 is not None
        higher = agg0.higher_is_better.get(agg0.headline, True)
        best = (max if higher else min)(mine, key=lambda g: _headline(g.aggregate))
        d = next((x for x in best.against_baseline if x.metric == agg0.headline), None)
        if d is None:
            output.say(
                _printable(f"{kind}: {best.label} (the baseline) is the best of {len(mine)}")
            )
        else:
            real = (
                "beyond the run-to-run spread"
                if d.beyond_spread
                else "within the spread: not a clear difference"
            )
            output.say(
                _printable(f"{kind}: best is {best.label}, x{d.ratio:.2f} of {base} ({real})")
            )
    if res.plots:
        output.note(_printable(f"plots: {', '.join(res.plots)} (ecliptic bench plot {res.name})"))


@command(app, "list")
def list_runs(
    set_name: Annotated[str | None, typer.Option("--set", help="Only this set's runs.")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="Only runs of this kind.")] = None,
) -> None:
    """Benchmark runs, newest first."""
    rows = client().benchmarks.list(set=set_name, kind=kind)
    emit(
        rows,
        lambda: output.table(
            ["NAME", "KIND", "NETWORK", "PHASE", "RESULT", "CREATED"],
            _rows(
                [
                    r.name,
                    r.kind,
                    r.spec.get("network", ""),
                    r.phase,
                    r.summary or r.phase_reason,
                    output.age(r.created_at),
                ]
                for r in rows
            ),
            empty="no benchmarks yet: 'ecliptic bench run FILE.yaml'",
        ),
    )


@command(app, "sets")
def list_sets() -> None:
    """Benchmark sets, newest first."""
    rows = client().benchmarks.sets()
    emit(
        rows,
        lambda: output.table(
            ["NAME", "PHASE", "RUNS", "PROGRESS", "CREATED"],
            _rows(
                [s.name, s.phase, s.runs, s.phase_reason, output.age(s.created_at)] for s in rows
            ),
            empty="no benchmark sets",
        ),
    )


@command(app, "show")
def show(
    ref: Ref,
    baseline: Annotated[
        str | None, typer.Option("--baseline", help="Permutation to compare the others with.")
    ] = None,
) -> None:
    """A set's figures per permutation against the baseline, or one run in full."""
    c = client()
    obj = c.benchmarks.find(ref)
    if isinstance(obj, SetOut):
        res = c.benchmarks.results(obj.name, is_set=True, baseline=baseline)

        def human_set() -> None:
            _fields([("set", obj.name), ("phase", obj.phase), ("progress", obj.phase_reason)])
            _show_results(res)

        emit(res, human_set)
        return
    r = obj

    def human() -> None:
        env = r.environment
        _fields(
            [
                ("name", r.name),
                ("kind", r.kind),
                ("network", r.spec.get("network")),
                ("phase", r.phase),
                ("reason", r.phase_reason),
                (
                    "servers",
                    ", ".join(
                        f"{s['server']} ({s['interface']} {s['address']}, host {s['host']})"
                        for s in env.get("servers", [])
                    ),
                ),
                ("kernel", env.get("kernel", "")),
                ("tools", ", ".join(f"{v}" for v in env.get("tools", {}).values())),
                ("took", f"{r.duration_s:.1f} s" if r.duration_s is not None else ""),
            ]
        )
        if r.result:
            units = r.result.get("units", {})
            output.table(
                ["METRIC", "VALUE", "UNIT"],
                _rows(
                    [k, f"{v:.6g}", units.get(k, "")]
                    for k, v in r.result.get("metrics", {}).items()
                ),
            )

    emit(r, human)


@command(app, "output")
def show_output(ref: Ref) -> None:
    """What the run's tool printed, as it printed it."""
    sys.stdout.write(_printable(client().benchmarks.output(ref)))


@command(app, "events")
def events(ref: Ref) -> None:
    """A run's timeline."""
    rows = client().benchmarks.events(ref)
    emit(
        rows,
        lambda: output.table(
            ["AT", "PHASE", "REASON"],
            _rows([output.when(e.at), e.to_phase, e.reason] for e in rows),
        ),
    )


@command(app, "compare")
def compare(
    a: Annotated[str, typer.Argument(help="The first run or set (the reference).")],
    b: Annotated[str, typer.Argument(help="The second run or set.")],
) -> None:
    """B against A, figure by figure: the ratio, and whether the difference is beyond the
    spread of their runs (sets pair their permutations by label)."""
    res = client().benchmarks.compare(a, b)

    def human() -> None:
        rows = []
        for p in res.pairs:
            for d in p.differences:
                at = f" @{d.x:g}" if d.x is not None else ""
                rows.append(
                    [
                        p.a if p.a == p.b else f"{p.a} → {p.b}",
                        f"{d.metric}{at}",
                        f"{d.a.median:.4g}",
                        f"{d.b.median:.4g}",
                        d.unit,
                        _ratio_text(d),
                    ]
                )
        output.table(["PAIR", "METRIC", a, b, "UNIT", "B VS A"], _rows(rows))

    emit(res, human)


@command(app, "plot")
def plot(
    ref: Ref,
    out: Annotated[Path, typer.Option("--out", help="Folder to write the plots into.")] = Path("."),
    fmt: Annotated[str, typer.Option("--format", help="svg or png.")] = "svg",
) -> None:
    """Write the plots of a set or a run (latency and bandwidth against message size, throughput
    per wiring, wall time against nodes) into a folder."""
    if fmt not in ("svg", "png"):
        _error("--format is svg or png")
        raise typer.Exit(ExitCode.USAGE)
    c = client()
    is_set = isinstance(c.benchmarks.find(ref), SetOut)
    res = c.benchmarks.results(ref, is_set=is_set)
    if not res.plots:
        _error(f"{ref} has no figures to plot yet")
        raise typer.Exit(ExitCode.CONFLICT)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name in res.plots:
        path = out / f"{res.name}-{name}.{fmt}"
        path.write_bytes(c.benchmarks.plot(ref, name, fmt, is_set=is_set))
        written.append(str(path))
    emit(written, lambda: output.say("\n".join(written)))


@command(app, "delete")
def delete(ref: Ref) -> None:
    """Cancel a run or a set that is not over (what it made is removed), or remove a
    finished one with its figures."""
    c = client()
    obj = c.benchmarks.find(ref)
    if isinstance(obj, SetOut):
        c.benchmarks.delete_set(obj.name)
    else:
        c.benchmarks.delete(obj.name)
    done = "cancelled" if obj.phase not in FINAL else "deleted"
    emit({"name": obj.name, "result": done}, lambda: output.say(f"{obj.name} {done}"))


@command(app, "export")
def export(
    file: Annotated[str, typer.Argument(help="A YAML benchmark or set ('-': stdin).")],
    to: Annotated[
        str,
        typer.Option(
            "--as",
            help="kube-perftest (its operator's objects) or jobs (plain Jobs and a Service).",
        ),
    ] = "jobs",
    namespace: Annotated[
        str, typer.Option("--namespace", help="Kubernetes namespace.")
    ] = "default",
    network_name: Annotated[
        str | None,
        typer.Option("--network-name", help="Multus network of the direct port (namespace/name)."),
    ] = None,
    image: Annotated[
        str | None, typer.Option("--image", help="Image with the tools (for --as jobs).")
    ] = None,
    name: Annotated[str | None, typer.Option("--name", help="Name of the objects.")] = None,
) -> None:
    """Render a benchmark (or a set) as Kubernetes objects, so the same spec runs on a real
    cluster: kube-perftest's kinds (IPerf, MPIPingPong, RDMABandwidth…, or a BenchmarkSet),
    or plain batch/v1 Jobs with the Multus annotation, IPC_LOCK and RDMA device requests.
    Works offline; nothing is sent to Ecliptic."""
    from pydantic import ValidationError

    from ecliptic.perf import kubernetes
    from ecliptic.perf.spec import BenchmarkSetSpec, BenchmarkSpec, expand

    data = _load(file)
    if to not in ("kube-perftest", "jobs"):
        _error("--as is kube-perftest or jobs")
        raise typer.Exit(ExitCode.USAGE)
    try:
        objs: list[dict[str, Any]]
        if "template" in data:
            s = BenchmarkSetSpec.model_validate(data)
            if to == "kube-perftest":
                objs = [kubernetes.set_to_kube_perftest(s, namespace, network_name=network_name)]
            else:
                objs = []
                for i, (_, spec) in enumerate(expand(s)):
                    objs += kubernetes.to_jobs(
                        spec,
                        f"{s.name}-{i:03d}",
                        namespace,
                        network_name=network_name,
                        image=image or kubernetes.DEFAULT_IMAGE,
                    )
        else:
            spec = BenchmarkSpec.model_validate(data)
            obj_name = name or spec.kind.replace("_", "-")
            if to == "kube-perftest":
                objs = [
                    kubernetes.to_kube_perftest(
                        spec, obj_name, namespace, network_name=network_name
                    )
                ]
            else:
                objs = kubernetes.to_jobs(
                    spec,
                    obj_name,
                    namespace,
                    network_name=network_name,
                    image=image or kubernetes.DEFAULT_IMAGE,
                )
    except ValidationError as e:
        _error(f"{file}: {e.errors()[0]['msg']}")
        raise typer.Exit(ExitCode.REFUSED) from None
    except ValueError as e:
        _error(f"{e}")
        raise typer.Exit(ExitCode.REFUSED) from None
    sys.stdout.write(kubernetes.to_yaml(objs))
