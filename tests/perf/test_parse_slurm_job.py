"""Reading slurm_job's output (a real run on a Slurm platform), and the batch file that times
a script (run here with bash, as the batch host would); truncated, empty and foreign output
is refused, naming the line."""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ecliptic.perf.errors import ParseError
from ecliptic.perf.kinds.slurm_job import SlurmJob, SlurmJobParams, wrap

DATA = Path(__file__).parent / "data"
KIND = SlurmJob()
SCRIPT = "#!/bin/bash\nsrun hostname | sort\nsleep 2\n"
TWO = SlurmJobParams(script=SCRIPT, nodes=[1, 2])


def fixture(name: str) -> str:
    """A fixture's text without its provenance lines (``#fixture: ...``)."""
    text = (DATA / name).read_text()
    return "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("#fixture:"))


def test_a_real_run_on_one_and_two_nodes() -> None:
    r = KIND.parse(fixture("slurm_job_local.txt"), TWO)
    assert r.series_x == "nodes"
    assert r.series == [
        {"nodes": 1, "wall_s": 2.049049331, "turnaround_s": 10.037},
        {"nodes": 2, "wall_s": 2.096834597, "turnaround_s": 10.039},
    ]
    assert r.headline == "wall_s"
    assert r.metrics["wall_s"] == 2.096834597  # at the largest node count
    assert r.metrics["nodes"] == 2
    assert r.metrics["speedup"] == pytest.approx(2.049049331 / 2.096834597)
    assert r.higher_is_better["wall_s"] is False
    assert r.units["wall_s"] == "s"
    assert r.summary == "wall time 2.05 s on 1, 2.10 s on 2 node(s)"


def test_node_counts_given_out_of_order_are_drawn_in_order() -> None:
    raw = fixture("slurm_job_local.txt")
    first, second = raw.split("=== ")[1:]
    r = KIND.parse("=== " + second + "=== " + first, SlurmJobParams(script=SCRIPT, nodes=[2, 1]))
    assert [row["nodes"] for row in r.series] == [1, 2]
    assert r.metrics["wall_s"] == 2.096834597


def test_empty_output() -> None:
    with pytest.raises(ParseError, match="^slurm_job: .*empty"):
        KIND.parse("\n", TWO)


@pytest.mark.parametrize("foreign", ["fio_randread_libaio_direct.json", "mpi_pingpong_host.txt"])
def test_another_tools_output_is_not_read(foreign: str) -> None:
    raw = fixture(foreign)
    with pytest.raises(ParseError, match="not this kind's output") as e:
        KIND.parse(raw, TWO)
    assert e.value.line_no == 1 and e.value.line == raw.splitlines()[0]


def test_a_job_without_its_timing_line() -> None:
    raw = fixture("slurm_job_local.txt")
    lines = raw.splitlines(keepends=True)
    no_first = "".join(ln for ln in lines if ln != "ecliptic: wall_ns=2049049331 exit=0\n")
    with pytest.raises(ParseError, match="on 1 node.*no timing line") as e:
        KIND.parse(no_first, TWO)
    assert e.value.line_no == 1 and e.value.line.startswith("=== ecliptic slurm_job: nodes=1")
    cut = raw[: raw.rindex("ecliptic: wall_ns=")]
    with pytest.raises(ParseError, match="on 2 node.*cut short") as e:
        KIND.parse(cut, TWO)
    assert e.value.line == "done on 2 node(s)"


def test_a_missing_node_count() -> None:
    raw = fixture("slurm_job_local.txt")
    one = raw[: raw.index("=== ecliptic slurm_job: nodes=2")]
    with pytest.raises(ParseError, match="no run for 2 node") as e:
        KIND.parse(one, TWO)
    assert e.value.line == "ecliptic: wall_ns=2049049331 exit=0"


def test_a_failed_job_is_not_a_time() -> None:
    raw = fixture("slurm_job_local.txt").replace("wall_ns=2096834597 exit=0", "wall_ns=5 exit=1")
    with pytest.raises(ParseError, match="on 2 node.*exited with 1"):
        KIND.parse(raw, TWO)


def test_a_zero_time_is_refused() -> None:
    raw = fixture("slurm_job_local.txt").replace("wall_ns=2049049331", "wall_ns=0")
    with pytest.raises(ParseError, match="0 ns") as e:
        KIND.parse(raw, TWO)
    assert e.value.line_no == 4


def test_the_last_timing_line_of_a_job_counts() -> None:
    # A script that prints a line like the wrapper's does not change its time: the
    # wrapper's own line comes last.
    raw = fixture("slurm_job_local.txt").replace(
        "done on 1 node(s)\n", "done on 1 node(s)\necliptic: wall_ns=1 exit=0\n"
    )
    assert KIND.parse(raw, TWO).series[0]["wall_s"] == 2.049049331


def run_batch(tmp_path: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The batch file for ``script``, run with bash as slurmd would on the batch host."""
    batch = tmp_path / "batch.sh"
    batch.write_text(wrap(script, "ECLIPTIC_SCRIPT_TEST"))
    env = {"PATH": os.environ["PATH"], "TMPDIR": str(tmp_path)}
    return subprocess.run(
        ["bash", str(batch), *args], capture_output=True, text=True, env=env, timeout=30
    )


def test_the_batch_file_keeps_the_sbatch_lines_and_runs_the_script_unchanged(
    tmp_path: Path,
) -> None:
    script = (
        "#!/usr/bin/env python3\n"
        "#SBATCH --job-name=py\n"
        "#SBATCH --exclusive\n"
        "import sys\n"
        "print('args', sys.argv[1:])\n"
        "print('$HOME `date` \\'EOF\\'')\n"
        "sys.exit(3)\n"
    )
    batch = wrap(script, "ECLIPTIC_SCRIPT_TEST")
    assert batch.splitlines()[:3] == ["#!/bin/bash", "#SBATCH --job-name=py", "#SBATCH --exclusive"]
    done = run_batch(tmp_path, script, "a b", "c")
    assert done.returncode == 3, done.stderr
    out = done.stdout.splitlines()
    assert out[0] == "args ['a b', 'c']"
    assert out[1] == "$HOME `date` 'EOF'"  # the script's text is not expanded by the wrapper
    assert out[2].startswith("ecliptic: wall_ns=") and out[2].endswith(" exit=3")
    assert list(tmp_path.glob("ecliptic-job.*")) == []  # the script's copy is removed


def test_the_batch_file_times_the_script(tmp_path: Path) -> None:
    done = run_batch(tmp_path, "#!/bin/sh\nsleep 0.3\necho slept\n")
    assert done.returncode == 0, done.stderr
    raw = "=== ecliptic slurm_job: nodes=1 job=7 exit=0 turnaround_s=1.0\n" + done.stdout
    r = KIND.parse(raw, SlurmJobParams(script=SCRIPT, nodes=[1]))
    assert 0.3 <= r.metrics["wall_s"] < 5
    assert "speedup" not in r.metrics


def test_parameters() -> None:
    with pytest.raises(ValidationError, match="must start with '#!'"):
        SlurmJobParams(script="srun hostname\n", nodes=[1])
    with pytest.raises(ValidationError, match="each node count once"):
        SlurmJobParams(script=SCRIPT, nodes=[2, 2])
    with pytest.raises(ValidationError, match="less than or equal to 64"):
        SlurmJobParams(script=SCRIPT, nodes=[65])
    with pytest.raises(ValidationError, match="at most 65536"):
        SlurmJobParams(script="#!/bin/sh\n" + "#" * 65536, nodes=[1])
    argv = KIND.command(
        SlurmJobParams(script=SCRIPT, nodes=[4], ntasks_per_node=2, time_limit_min=5),
        4,
        "/tmp/b.sh",
        "/tmp/o.out",
        "ecliptic-slurm-job-x",
    )
    assert argv[:5] == ["sbatch", "--wait", "--parsable", "-N", "4"]
    assert argv[-3:] == ["--ntasks-per-node", "2", "/tmp/b.sh"]
    assert "--time" in argv and argv[argv.index("--time") + 1] == "5"


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=10_000))
def test_any_prefix_of_a_real_output_is_refused_or_read_whole(at: int) -> None:
    raw = fixture("slurm_job_local.txt")
    whole = KIND.parse(raw, TWO)
    with contextlib.suppress(ParseError):
        assert KIND.parse(raw[: min(at, len(raw))], TWO) == whole


@settings(max_examples=300, deadline=None)
@given(
    st.text(
        alphabet=st.sampled_from(list("=ecliptsurmjob:nodesxwall_ns 0123456789.\n")), max_size=300
    )
)
def test_garbage_is_refused_never_read_as_zero(raw: str) -> None:
    try:
        r = KIND.parse(raw, SlurmJobParams(script=SCRIPT, nodes=[1]))
    except ParseError as e:
        assert str(e).startswith("slurm_job: cannot read the output")
        return
    assert r.metrics["wall_s"] > 0
