"""The benchmarks pages: the tenancy's sets and runs, a set's answer (the table per
permutation and which is best, as the CLI says it), its plots served by the portal, each
run's environment, output and timeline, the YAML form, cancel and delete, and nobody of
another tenancy seeing any of it.

Finished runs are made as the reconciler makes them, without running the tools: rows
submitted through the service layer, then moved PENDING → PROVISIONING → RUNNING → CLEANING
→ SUCCEEDED with the figures that the real kinds parse from real output (tests/perf/data/).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from ecliptic.perf.kinds import registry
from ecliptic.perf.spec import BenchmarkSetSpec, BenchmarkSpec
from ecliptic.phases import BenchmarkPhase
from ecliptic.runtime import Runtime
from ecliptic.services import benchmarks as svc
from ecliptic.services.auth import caller_for
from ecliptic.services.caller import Caller
from ecliptic.store.models import Benchmark, User
from ecliptic.store.transitions import move
from ecliptic.store.types import utcnow
from ecliptic.web.pages.benchmarks import EXAMPLE, OUTPUT_SHOWN
from tests.web.conftest import Browser

DATA = Path(__file__).resolve().parents[1] / "perf" / "data"
MODES = ("bridge", "direct", "host")
T = "/t/physics/benchmarks"


def fixture(name: str) -> str:
    """A recorded output without its provenance lines (``#fixture: ...``)."""
    text = (DATA / name).read_text()
    return "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("#fixture:"))


class Unqueued:
    """The work queue while a test plays the reconciler's part: the rows it makes are never
    handed to the real reconciler (which would make servers and run the tools)."""

    def enqueue(self, session: Session, kind: str, object_id: str, *, delay: float = 0.0) -> None:
        """Nothing: the test moves the row itself."""


def member(rt: Runtime, user: str, tenancy: str) -> Caller:
    """``user`` acting in ``tenancy``, as their pages do."""
    with rt.db.read() as session:
        row = session.scalar(select(User).where(User.name == user))
        assert row is not None
        session.expunge(row)
    return caller_for(rt.db, row, tenancy)


def environment(name: str, kind: str, network: str, servers: int) -> dict[str, Any]:
    """What the reconciler records of where a run ran (``_target`` and ``_environment``)."""
    tool = registry.find(kind).tools[0][0]
    version = {"mpirun": "mpirun (Open MPI) 4.1.4", "fio": "fio-3.33"}.get(tool, f"{tool} 1.0")
    hosts = [
        {
            "server": f"{name}-{i}",
            "id": f"srv{i}",
            "host": "local",
            "interface": "lo" if network == "host" else "eth0",
            "address": "127.0.0.1" if network == "host" else f"198.18.7.{10 + i}",
        }
        for i in range(servers)
    ]
    return {
        "servers": hosts,
        "kernel": "Linux 6.1.0-28-amd64 x86_64",
        "hostname": f"{name}-0",
        "tools": {tool: version},
        "network": network,
    }


def play(
    rt: Runtime,
    run_id: str,
    *,
    to: str,
    raw: str = "",
    why: str = "",
    took_s: float = 12.0,
) -> None:
    """Move a PENDING run on as the reconciler does (``provision``, ``_provisioning``,
    ``_record``, ``_cleaning``): up to RUNNING, or on to SUCCEEDED/FAILED with its output,
    figures (parsed by the real kind) and environment."""
    with rt.db.write() as session:
        row = session.get(Benchmark, run_id)
        assert row is not None and row.phase == BenchmarkPhase.PENDING
        spec = BenchmarkSpec.model_validate(row.spec)
        kind = registry.find(spec.kind)
        count = kind.servers(spec.kind_params(), spec.network)
        move(session, row, BenchmarkPhase.PROVISIONING, f"making {count} server(s)")
        row.started_at = utcnow()
        move(session, row, BenchmarkPhase.RUNNING, f"running {spec.kind}")
        if to == BenchmarkPhase.RUNNING:
            return
        result = kind.parse(raw, spec.kind_params()) if to == BenchmarkPhase.SUCCEEDED else None
        row.raw_output = raw
        row.result = result.model_dump(mode="json") if result is not None else None
        row.environment = environment(row.name, spec.kind, spec.network, count)
        row.finished_at = row.started_at + timedelta(seconds=took_s)
        outcome_why = result.summary if result is not None else why
        move(session, row, BenchmarkPhase.CLEANING, outcome_why)
        move(session, row, to, outcome_why)
        svc.set_finished(session, Unqueued(), row)  # type: ignore[arg-type]


def make_set(rt: Runtime, c: Caller, body: dict[str, Any]) -> list[Benchmark]:
    """A set submitted through the service (its runs PENDING, never queued), in run order."""
    s = svc.create_set(rt.db, Unqueued(), c, BenchmarkSetSpec.model_validate(body))  # type: ignore[arg-type]
    return svc.list_benchmarks(rt.db, c, set_ref=s.id)


def make_run(rt: Runtime, c: Caller, name: str, body: dict[str, Any]) -> Benchmark:
    """A lone run submitted through the service (PENDING, never queued)."""
    spec = BenchmarkSpec.model_validate(body)
    return svc.create_benchmark(rt.db, Unqueued(), c, spec, name)  # type: ignore[arg-type]


def mpi_set(rt: Runtime, c: Caller, name: str) -> None:
    """A finished set: MPI ping-pong over the three wirings, from real runs' output."""
    rows = make_set(
        rt,
        c,
        {
            "name": name,
            "template": {"kind": "mpi_pingpong"},
            "permutations": {"product": {"network": list(MODES)}},
        },
    )
    for row, mode in zip(rows, MODES, strict=True):
        play(rt, row.id, to="SUCCEEDED", raw=fixture(f"mpi_pingpong_{mode}.txt"))


def fio_run(rt: Runtime, c: Caller, name: str) -> None:
    """A finished lone run: fio random reads, from a real run's output."""
    row = make_run(
        rt, c, name, {"kind": "fio", "fio": {"rw": "randread", "bs": "4k", "iodepth": 16}}
    )
    play(rt, row.id, to="SUCCEEDED", raw=fixture("fio_randread_libaio_direct.json"), took_s=4)


FAILED_OUTPUT = (
    "<script>alert('printed inside the server')</script>\n"
    + "".join(f"[rank 1] retrying connection to 198.18.7.11 ({i})\n" for i in range(600))
    + "mpirun noticed that process rank 1 exited on signal 9 (Killed).\n"
)
"""What a failed run printed: long, and with markup that must stay text."""


def delete_everything(rt: Runtime, c: Caller) -> None:
    """Cancel what is not over, then remove every set and run of the caller's tenancy."""
    for _ in range(2):
        for s in svc.list_sets(rt.db, c):
            svc.delete_set(rt.db, Unqueued(), c, s.id)  # type: ignore[arg-type]
        for r in svc.list_benchmarks(rt.db, c):
            if r.set_id is None:
                svc.delete_benchmark(rt.db, Unqueued(), c, r.id)  # type: ignore[arg-type]
        with rt.db.write() as session:  # a cancelled RUNNING run is CLEANING: let it end
            for row in session.scalars(
                select(Benchmark).where(Benchmark.phase == BenchmarkPhase.CLEANING)
            ):
                row.finished_at = utcnow()
                move(session, row, BenchmarkPhase.FAILED, row.phase_reason)
                svc.set_finished(session, Unqueued(), row)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Bench:
    runtime: Runtime
    caller: Caller


@pytest.fixture(scope="module")
def bench(portal_runtime: Runtime, people: dict[str, str]) -> Iterator[Bench]:
    """In physics: the finished set ``wiring-mpi``, the lone run ``disk`` (fio), and the set
    ``going`` still running (one run done, one failed, one measuring, one waiting)."""
    rt = portal_runtime
    c = member(rt, "alice", "physics")
    fio_run(rt, c, "disk")
    mpi_set(rt, c, "wiring-mpi")
    going = make_set(
        rt,
        c,
        {
            "name": "going",
            "template": {"kind": "mpi_pingpong"},
            "permutations": {"product": {"network": ["bridge", "direct"]}},
            "repetitions": 2,
        },
    )
    play(rt, going[0].id, to="SUCCEEDED", raw=fixture("mpi_pingpong_bridge.txt"))
    play(rt, going[1].id, to="FAILED", raw=FAILED_OUTPUT, why="mpirun exited with 137")
    # Measuring now: every other run of the instance waits for its turn behind it.
    play(rt, going[2].id, to="RUNNING")
    yield Bench(rt, c)
    delete_everything(rt, c)


def main_of(html: str) -> str:
    """The page's content (the layout's navigation left out)."""
    return html.split('<main id="main"', 1)[1]


# ------------------------------------------------------------------------------ reading


def test_the_set_page_answers_first_then_plots_then_each_run(alice: Browser, bench: Bench) -> None:
    r = alice.get(f"{T}/sets/wiring-mpi")
    assert r.status_code == 200, r.text
    body = main_of(r.text)
    # The answer, as `ecliptic bench show` gives it: the bridge is the baseline, the direct
    # port's 6.6 us against the bridge's 9.35 us is x0.71, beyond the spread.
    rows = re.findall(r'<tr><th scope="row">([^<]+)</th>(.*?)</tr>', body, re.S)
    assert [label for label, _ in rows] == [f"network={m}" for m in MODES]
    bridge, direct, host = (cells for _, cells in rows)
    assert "latency_min_us" in bridge and "9.35" in bridge and "baseline" in bridge
    assert "6.60" in direct and "x0.71 (better)" in direct
    assert "6.88" in host and "x0.74 (better)" in host
    sentence = (
        "mpi_pingpong: best is network=direct, x0.71 of network=bridge "
        "(beyond the run-to-run spread)"
    )
    assert sentence in body
    # Then the plots, drawn by the portal and shown as images; then the runs.
    latency = f'<img src="{T}/sets/wiring-mpi/plots/mpi_pingpong-latency.svg"'
    assert latency in body
    assert 'alt="MPI ping-pong: latency against message size"' in body
    assert body.index(sentence) < body.index(latency) < body.index('id="runs"')
    for i, mode in enumerate(MODES):
        assert f'href="{T}/wiring-mpi-00{i}"' in body
        assert f"<td>network={mode}</td>" in body
    # Each run's environment, output and timeline.
    assert "Linux 6.1.0-28-amd64 x86_64" in body and "mpirun (Open MPI) 4.1.4" in body
    assert "198.18.7.10" in body and "eth0" in body and "127.0.0.1" in body
    assert "# Ecliptic mpi-pingpong (Intel MPI Benchmarks PingPong format)" in body
    assert "PENDING → PROVISIONING" in body and "CLEANING → SUCCEEDED" in body
    # Finished: nothing on the page polls or reloads.
    assert "hx-trigger" not in body and 'http-equiv="refresh"' not in r.text


def test_another_baseline_is_compared_on_request(alice: Browser, bench: Bench) -> None:
    r = alice.get(f"{T}/sets/wiring-mpi", params={"baseline": "network=direct"})
    body = main_of(r.text)
    assert "x1.42 (worse)" in body  # the bridge, 9.35 us against 6.6 us
    assert "mpi_pingpong: network=direct (the baseline) is the best of 3" in body
    r = alice.get(f"{T}/sets/wiring-mpi", params={"baseline": "network=nowhere"})
    assert r.status_code == 200
    assert "No permutation &#39;network=nowhere&#39; has figures" in r.text


def test_plots_are_svg_and_png_that_run_nothing(alice: Browser, bench: Bench) -> None:
    svg = alice.get(f"{T}/sets/wiring-mpi/plots/mpi_pingpong-latency.svg")
    assert svg.status_code == 200
    assert svg.headers["content-type"] == "image/svg+xml"
    assert svg.headers["x-content-type-options"] == "nosniff"
    csp = svg.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "sandbox" in csp and "script" not in csp
    assert b"<svg" in svg.content and b"network=direct" in svg.content
    png = alice.get(f"{T}/sets/wiring-mpi/plots/mpi_pingpong-bandwidth.png")
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    run_svg = alice.get(f"{T}/disk/plots/fio-bandwidth.svg")
    assert run_svg.status_code == 200 and b"<svg" in run_svg.content
    for bad in ("mpi_pingpong-latency.pdf", "no-such-plot.svg", "mpi_pingpong-latency"):
        r = alice.get(f"{T}/sets/wiring-mpi/plots/{bad}")
        assert r.status_code == 404, (bad, r.status_code)


def test_a_run_page_shows_its_figures_plots_environment_output_and_timeline(
    alice: Browser, bench: Bench
) -> None:
    r = alice.get(f"{T}/disk")
    assert r.status_code == 200, r.text
    body = main_of(r.text)
    assert "randread: read 286.3 MB/s, 69887 IOPS, 228.4 us" in body
    assert "<td>read_iops</td>" in body and "69887" in body
    assert f'<img src="{T}/disk/plots/fio-bandwidth.svg"' in body
    assert "fio-3.33" in body and "Linux 6.1.0-28-amd64 x86_64" in body
    assert "&#34;fio version&#34; : &#34;fio-3.33&#34;" in body  # the raw JSON, escaped
    assert "RUNNING → CLEANING" in body
    assert "took 4 s" in body


def test_a_long_output_is_cut_escaped_and_whole_a_link_away(alice: Browser, bench: Bench) -> None:
    body = main_of(alice.get(f"{T}/going-001").text)
    assert "Failed: mpirun exited with 137" in body
    assert "&lt;script&gt;alert(&#39;printed inside the server&#39;)&lt;/script&gt;" in body
    assert "<script>alert" not in body
    assert "retrying connection to 198.18.7.11 (0)" in body
    assert "exited on signal 9" not in body  # past the part shown
    cut = len(FAILED_OUTPUT) - OUTPUT_SHOWN
    assert f'{cut} more characters: <a href="{T}/going-001/output.txt">' in body
    whole = alice.get(f"{T}/going-001/output.txt")
    assert whole.status_code == 200
    assert whole.headers["content-type"] == "text/plain; charset=utf-8"
    assert whole.headers["x-content-type-options"] == "nosniff"
    assert whole.text == FAILED_OUTPUT
    # On the set's page too (a shorter part of each run's output), escaped.
    set_page = main_of(alice.get(f"{T}/sets/going").text)
    assert "&lt;script&gt;alert" in set_page and "<script>alert" not in set_page
    assert f'<a href="{T}/going-001/output.txt">' in set_page


def test_the_list_shows_sets_and_lone_runs_newest_first(alice: Browser, bench: Bench) -> None:
    body = main_of(alice.get(T).text)
    names = re.findall(rf'<a href="{T}/(?:sets/)?([a-z0-9-]+)">', body)
    assert names[:3] == ["going", "wiring-mpi", "disk"], names
    row = body.split(f'href="{T}/sets/wiring-mpi"', 1)[1].split("</tr>", 1)[0]
    assert "mpi_pingpong" in row and "SUCCEEDED" in row
    assert "best is network=direct, x0.71 of network=bridge" in row
    row = body.split(f'href="{T}/sets/going"', 1)[1].split("</tr>", 1)[0]
    assert "RUNNING" in row and "2 of 4 runs done" in row
    row = body.split(f'href="{T}/disk"', 1)[1].split("</tr>", 1)[0]
    assert "fio" in row and "69887 IOPS" in row


def test_with_nothing_yet_the_list_says_how_to_start(bob: Browser) -> None:
    r = bob.get("/t/chemistry/benchmarks")
    assert r.status_code == 200
    body = main_of(r.text)
    assert "No benchmark yet" in body and "<code>ecliptic bench run FILE.yaml</code>" in body
    assert 'name="spec"' in body and "network: [bridge, direct, host]" in body


def test_a_running_set_refreshes_its_runs_and_reloads_when_one_ends(
    alice: Browser, bench: Bench
) -> None:
    r = alice.get(f"{T}/sets/going")
    body = main_of(r.text)
    assert "2 of 4 runs done; now" in body and f'href="{T}/going-002"' in body
    poll = re.search(r'hx-get="([^"]+)" hx-trigger="every 3s"', body)
    assert poll is not None
    url = poll.group(1).replace("&amp;", "&")
    assert "seen=RUNNING%3A2" in url
    assert '<noscript><meta http-equiv="refresh" content="10"></noscript>' in r.text
    # The same state: the runs table alone, to swap in.
    part = alice.get(url, headers={"HX-Request": "true"})
    assert part.status_code == 200 and "HX-Refresh" not in part.headers
    assert part.text.lstrip().startswith('<div id="runs-live"') and "going-003" in part.text
    assert "<html" not in part.text
    # A run has ended since the page was drawn: the page reloads (the answer changed).
    stale = alice.get(url.replace("RUNNING%3A2", "RUNNING%3A1"), headers={"HX-Request": "true"})
    assert stale.headers.get("HX-Refresh") == "true"
    # A browser without htmx asking for it is sent to the page.
    plain = alice.get(url, follow_redirects=False)
    assert plain.status_code == 303 and plain.headers["location"].endswith("/sets/going#runs")
    # A run that measures polls its timeline (and reloads when its phase changes).
    run = main_of(alice.get(f"{T}/going-002").text)
    assert f'data-poll="{T}/going-002/events.json"' in run
    events = alice.get(f"{T}/going-002/events.json").json()
    assert events["phase"] == "RUNNING"
    assert [e["message"] for e in events["events"]][
        -1
    ] == "PROVISIONING → RUNNING: running mpi_pingpong"


# ------------------------------------------------------------------------------ the form


def spec_errors(html: str) -> str:
    m = re.search(r'<div class="form-error" role="alert" id="spec-error">(.*?)</div>', html, re.S)
    assert m is not None, main_of(html)[:2000]
    return m.group(1)


def runs_of(bench: Bench) -> list[str]:
    return sorted(r.name for r in svc.list_benchmarks(bench.runtime.db, bench.caller))


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "kind: iperf3\nnetwork: [bridge\n",
            "line 3, column 1: expected &#39;,&#39; or &#39;]&#39;",
        ),
        ("- kind: iperf3\n", "expected a mapping: one benchmark"),
        (
            "kind: iperf3\niperf3: {duration: 0}\n",
            "line 2: iperf3: duration: Input should be greater than or equal to 1",
        ),
        (
            "kind: iperf3\nbogus: 1\n",
            "line 2: bogus: not a field here: remove it, or check its spelling",
        ),
        ("kind: iperf4\n", "no benchmark kind &#39;iperf4&#39;; kinds are: fio, iperf3"),
        ("kind: iperf3\nnetwork: wifi\n", "line 2: network: Input should be &#39;bridge&#39;"),
        ("kind: iperf3\nflavor: m9.huge\n", "m9.huge"),
        ("kind: iperf3\nimage: no-such-image\n", "no image called &#39;no-such-image&#39;"),
        (
            "name: bad-perm\ntemplate: {kind: iperf3}\n"
            "permutations:\n  product:\n    iperf3.streams: [1, 0]\n",
            "permutation 1 (iperf3.streams=0)",
        ),
        (
            "name: Bad_Name\ntemplate: {kind: iperf3}\n",
            "line 1: name: use lower-case letters, digits and dashes, starting with a letter",
        ),
        ("a: &x [1, 2]\nb: [*x, *x]\n", "aliases (*name) are not accepted here"),
        ("", "the spec is empty"),
    ],
)
def test_the_form_refuses_a_bad_spec_inline_and_keeps_the_text(
    alice: Browser, bench: Bench, text: str, said: str
) -> None:
    before = runs_of(bench)
    alice.get(T)
    r = alice.post(T, {"spec": text})
    assert r.status_code == 422, r.text[:500]
    assert said in spec_errors(r.text)
    assert 'aria-invalid="true"' in r.text
    kept = re.search(r'<textarea id="spec"[^>]*>(.*?)</textarea>', r.text, re.S)
    assert kept is not None
    assert kept.group(1) == text.replace("&", "&amp;").replace("'", "&#39;")
    assert runs_of(bench) == before


def test_the_form_runs_a_benchmark_then_it_is_cancelled_and_deleted(
    alice: Browser, bench: Bench
) -> None:
    alice.get(T)
    r = alice.post(T, {"spec": "name: web-one\nkind: iperf3\niperf3: {duration: 1}\n"})
    assert r.status_code == 303, r.text[:800]
    assert r.headers["location"] == f"{T}/web-one"
    try:
        page = alice.get(f"{T}/web-one")
        body = main_of(page.text)
        # It waits for its turn: the set 'going' measures now.
        assert 'data-phase="PENDING"' in body
        assert "iperf3 over the bridge network on fresh perf servers: queued" in body
        assert f'data-poll="{T}/web-one/events.json"' in body
        r = alice.post(f"{T}/web-one/delete")
        assert r.status_code == 303 and r.headers["location"] == f"{T}/web-one?done=cancelled"
        body = main_of(alice.get(r.headers["location"]).text)
        assert 'data-phase="FAILED"' in body and "cancelled by alice" in body
        r = alice.post(f"{T}/web-one/delete")
        assert r.status_code == 303 and r.headers["location"] == f"{T}?deleted=web-one"
        assert "web-one deleted." in alice.get(r.headers["location"]).text
        assert alice.get(f"{T}/web-one").status_code == 404
    finally:
        for _ in range(2):
            if "web-one" in runs_of(bench):
                svc.delete_benchmark(bench.runtime.db, bench.runtime.queue, bench.caller, "web-one")


def test_the_example_is_a_set_that_starts_and_is_cancelled_then_deleted(
    alice: Browser, bench: Bench
) -> None:
    page = alice.get(T).text
    kept = re.search(r'<textarea id="spec"[^>]*>(.*?)</textarea>', page, re.S)
    assert kept is not None and len(EXAMPLE.splitlines()) <= 10
    r = alice.post(T, {"spec": EXAMPLE})
    assert r.status_code == 303, r.text[:800]
    assert r.headers["location"] == f"{T}/sets/wiring"
    try:
        body = main_of(alice.get(f"{T}/sets/wiring").text)
        assert "9 runs (3 of each permutation)" in body
        table = body.split('<div id="runs-live"', 1)[1].split("</table>", 1)[0]
        assert table.count("PENDING</span>") == 9
        assert "No figures yet" in body
        r = alice.post(f"{T}/sets/wiring/delete")
        assert r.headers["location"] == f"{T}/sets/wiring?done=cancelled"
        body = main_of(alice.get(r.headers["location"]).text)
        assert 'data-phase="FAILED"' in body and "set cancelled by alice" in body
        r = alice.post(f"{T}/sets/wiring/delete")
        assert r.headers["location"] == f"{T}?deleted=wiring"
        assert alice.get(f"{T}/sets/wiring").status_code == 404
    finally:
        for _ in range(2):
            if any(s.name == "wiring" for s in svc.list_sets(bench.runtime.db, bench.caller)):
                svc.delete_set(bench.runtime.db, bench.runtime.queue, bench.caller, "wiring")


def test_posts_without_the_pages_token_or_from_elsewhere_change_nothing(
    alice: Browser, bob: Browser, bench: Bench
) -> None:
    before = runs_of(bench)
    spec = {"spec": "name: forged\nkind: iperf3\n"}
    alice.get(T)
    bobs = bob.get("/") and bob.csrf  # a real token, of another session
    assert bobs and bobs != alice.csrf
    for path in (T, f"{T}/disk/delete", f"{T}/sets/wiring-mpi/delete", f"{T}/going-002/delete"):
        for refused in (
            alice.post(path, spec, csrf=""),
            alice.post(path, spec, csrf=bobs),
            alice.post(path, spec, origin="https://elsewhere.example"),
        ):
            assert refused.status_code == 403, (path, refused.status_code)
    assert runs_of(bench) == before
    assert alice.get(f"{T}/going-002").text.count('data-phase="RUNNING"') == 1


# ------------------------------------------------------------------------------ isolation


def test_another_tenancy_finds_none_of_it(bob: Browser, bench: Bench) -> None:
    gets = [
        T,
        f"{T}/sets/wiring-mpi",
        f"{T}/sets/going/runs?seen=RUNNING%3A2",
        f"{T}/sets/wiring-mpi/plots/mpi_pingpong-latency.svg",
        f"{T}/sets/wiring-mpi/plots/mpi_pingpong-latency.png",
        f"{T}/disk",
        f"{T}/disk/output.txt",
        f"{T}/disk/events.json",
        f"{T}/disk/plots/fio-bandwidth.svg",
    ]
    for path in gets:
        for where in (path, path.replace("/t/physics/", "/t/chemistry/")):
            if where.endswith("/benchmarks") and "chemistry" in where:
                continue  # bob's own list
            r = bob.get(where, headers={"HX-Request": "true"}, follow_redirects=False)
            assert r.status_code == 404, (where, r.status_code)
            for secret in ("wiring-mpi-00", "disk-", "198.18.7.", "fio-3.33", "<svg"):
                assert secret not in r.text, (where, secret)
    for path in (T, f"{T}/disk/delete", f"{T}/sets/going/delete", f"{T}/going-002/delete"):
        assert bob.post(path, {"spec": EXAMPLE}).status_code == 404, path
    assert "wiring-mpi" not in bob.get("/t/chemistry/benchmarks").text
    assert len(runs_of(bench)) >= 8
    assert svc.get_set(bench.runtime.db, bench.caller, "going").phase == "RUNNING"
