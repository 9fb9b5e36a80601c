"""``slurm_job``: the wall time of a batch script on a Slurm platform, by node count.

The kind runs on an existing platform (``platform: NAME``): the Target's server 0 is its
``login`` server (else its first). For each node count, in the order given, the script is
submitted once with ``sbatch --wait --parsable -N <n>`` (and ``--ntasks-per-node``, ``--time``)
and waited for. A node count Slurm can never give (more than the partition has) fails the
run at once (``sbatch --test-only``) instead of queueing for ever; whatever job of the run is
still queued or running when it ends is cancelled.

The script is not changed, but wrapped: the submitted file carries the script's own
``#SBATCH`` lines (so they still apply), writes the script unchanged to a file on the batch
host, runs it with its own interpreter (``#!``), and times it with ``date +%s%N``
(nanoseconds, where ``sacct``'s elapsed time is whole seconds and needs accounting, which a
platform may not have). The timing line ``ecliptic: wall_ns=N exit=E`` ends the job's output,
which is read back on the login server (``--output`` to a file under /tmp: on a platform
without a shared filesystem its epilog copies the file there; the kind waits for it). So
``wall_s`` is the script's run time on the batch host, without the time the job waited in the
queue; the whole ``sbatch --wait`` round trip is kept as ``turnaround_s``.

The raw output is one section per node count: a line ``=== ecliptic slurm_job: nodes=N
job=ID exit=E turnaround_s=T`` and the job's output. The headline is ``wall_s`` at the largest
node count (lower is better); ``speedup`` is the wall time at the smallest node count divided
by that at the largest.
"""

from __future__ import annotations

import re
import secrets
import shlex
import time
from typing import Annotated, Any, ClassVar

from pydantic import Field, field_validator

from ecliptic.perf.errors import ParseError, RunFailed
from ecliptic.perf.kinds import registry
from ecliptic.perf.kinds.base import NetworkMode, Params, Result, Target

MAX_SCRIPT = 64 * 1024
OUTPUT_WAIT_S = 60.0
SECTION = re.compile(
    r"^=== ecliptic slurm_job: nodes=(\d+) job=(\S+) exit=(-?\d+) turnaround_s=(\d+(?:\.\d+)?)$"
)
MARKER = re.compile(r"^ecliptic: wall_ns=(\d+) exit=(-?\d+)$")


class SlurmJobParams(Params):
    """What is timed, and on how many nodes."""

    script: Annotated[str, Field(min_length=3, max_length=MAX_SCRIPT)]
    """The batch script, starting with ``#!`` (its ``#SBATCH`` lines apply)."""
    nodes: Annotated[list[Annotated[int, Field(ge=1, le=64)]], Field(min_length=1, max_length=16)]
    """Node counts, each run once, in this order (``[1, 2, 4]``)."""
    ntasks_per_node: Annotated[int | None, Field(ge=1, le=1024)] = None
    """Tasks per node (``--ntasks-per-node``); none: Slurm's default (one)."""
    time_limit_min: Annotated[int, Field(ge=1, le=24 * 60)] = 10
    """Each job's time limit in minutes (``--time``)."""

    @field_validator("script")
    @classmethod
    def _script(cls, v: str) -> str:
        if not v.startswith("#!"):
            raise ValueError("the script must start with '#!' and an interpreter (#!/bin/bash)")
        if "\x00" in v:
            raise ValueError("the script must not contain NUL characters")
        return v

    @field_validator("nodes")
    @classmethod
    def _distinct(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("each node count once: a count is run once per benchmark")
        return v


def wrap(script: str, delimiter: str) -> str:
    """The batch file that runs ``script`` unchanged and prints its wall time last."""
    lines = script.splitlines()
    header = []
    for line in lines[1:]:  # sbatch reads #SBATCH lines until the first command
        if line.strip() and not line.lstrip().startswith("#"):
            break
        header.append(line)
    body = script if script.endswith("\n") else script + "\n"
    return (
        "#!/bin/bash\n"
        + "".join(f"{h}\n" for h in header)
        + "# Ecliptic slurm_job: the script above is run unchanged from a file, and timed.\n"
        + '__ecl_script=$(mktemp "${TMPDIR:-/tmp}/ecliptic-job.XXXXXX")\n'
        + f"cat > \"$__ecl_script\" <<'{delimiter}'\n"
        + body
        + f"{delimiter}\n"
        + 'chmod 0700 "$__ecl_script"\n'
        + "__ecl_t0=$(date +%s%N)\n"
        + '"$__ecl_script" "$@"\n'
        + "__ecl_rc=$?\n"
        + "__ecl_t1=$(date +%s%N)\n"
        + 'rm -f "$__ecl_script"\n'
        + 'echo "ecliptic: wall_ns=$((__ecl_t1 - __ecl_t0)) exit=$__ecl_rc"\n'
        + "exit $__ecl_rc\n"
    )


class SlurmJob:
    """A batch script timed on a Slurm platform, once per node count."""

    name: ClassVar[str] = "slurm_job"
    title: ClassVar[str] = "Batch job wall time by node count (Slurm)"
    params: ClassVar[type[Params]] = SlurmJobParams
    networks: ClassVar[tuple[NetworkMode, ...]] = ("bridge",)
    """The platform's own network, as it is (the kind makes no servers or ports)."""
    needs_platform: ClassVar[bool] = True
    tools: ClassVar[tuple[tuple[str, ...], ...]] = (("sbatch", "--version"),)

    def servers(self, params: Any, network: NetworkMode) -> int:
        return 0

    def command(
        self, p: SlurmJobParams, nodes: int, batch: str, output: str, job_name: str
    ) -> list[str]:
        """The sbatch command line for one node count."""
        argv = ["sbatch", "--wait", "--parsable", "-N", str(nodes)]
        argv += ["--time", str(p.time_limit_min), "--job-name", job_name]
        argv += ["--output", output, "--chdir", "/tmp"]
        if p.ntasks_per_node is not None:
            argv += ["--ntasks-per-node", str(p.ntasks_per_node)]
        return [*argv, batch]

    def _feasible(self, target: Target, argv: list[str], nodes: int) -> None:
        """RunFailed now if Slurm can never run the job (more nodes than the partition has):
        sbatch would queue it and wait for ever."""
        options = [a for a in argv[1:] if a not in ("--wait", "--parsable")]
        test = ["sbatch", "--test-only", *options]
        done = target.run(0, test, timeout=60)
        if done.exit_code != 0:
            why = (done.stderr.strip() or done.stdout.strip())[-500:]
            raise RunFailed(f"slurm_job: Slurm cannot run the script on {nodes} node(s): {why}")

    def _output(self, target: Target, path: str, job: str) -> str:
        """The job's output file on the login server, once its timing line is there."""
        deadline = time.monotonic() + OUTPUT_WAIT_S
        while True:
            done = target.run(0, ["cat", path], timeout=30)
            text = done.stdout if done.exit_code == 0 else ""
            if any(MARKER.match(ln) for ln in text.splitlines()):
                return text
            if time.monotonic() > deadline:
                raise RunFailed(
                    f"slurm_job: job {job}'s output ({path}) did not reach the login server "
                    f"with its timing line within {OUTPUT_WAIT_S:.0f} s; it holds: "
                    f"{text[-500:]!r}"
                )
            time.sleep(0.5)

    def execute(self, params: Any, target: Target) -> str:
        p: SlurmJobParams = params
        token = secrets.token_hex(6)
        base = f"/tmp/ecliptic-slurm-job-{token}"
        delimiter = f"ECLIPTIC_SCRIPT_{token.upper()}"
        while delimiter in p.script:
            delimiter += "_"
        batch = f"{base}.sh"
        job_name = f"ecliptic-slurm-job-{token}"
        sections = []
        outputs = [batch]
        try:
            wrote = target.run(
                0,
                ["/bin/sh", "-ec", f"umask 077; cat > {shlex.quote(batch)}"],
                timeout=30,
                stdin=wrap(p.script, delimiter).encode(),
            )
            if wrote.exit_code != 0:
                raise RunFailed(f"slurm_job: cannot write the batch file: {wrote.stderr[-300:]}")
            for n in p.nodes:
                output = f"{base}-{n}.out"
                outputs.append(output)
                target.progress(f"slurm_job: {n} node(s)")
                argv = self.command(p, n, batch, output, job_name)
                self._feasible(target, argv, n)
                limit = p.time_limit_min * 60 + 300.0
                done = target.run(0, argv, timeout=limit)
                if done.timed_out:
                    raise RunFailed(f"slurm_job: sbatch --wait on {n} node(s) took over {limit} s")
                job = done.stdout.strip().split(";")[0]
                if not job.isdigit():
                    raise RunFailed(
                        f"slurm_job: sbatch -N {n} was refused ({done.exit_code}): "
                        f"{(done.stderr.strip() or done.stdout.strip())[-500:]}"
                    )
                text = self._output(target, output, job)
                if done.exit_code != 0:
                    raise RunFailed(
                        f"slurm_job: job {job} on {n} node(s) exited with {done.exit_code}; "
                        f"its output ends: {text[-800:]}"
                    )
                sections.append(
                    f"=== ecliptic slurm_job: nodes={n} job={job} exit={done.exit_code} "
                    f"turnaround_s={done.duration_s:.3f}\n{text}"
                    + ("" if text.endswith("\n") else "\n")
                )
        finally:
            # A job still queued or running (sbatch timed out, the run was cancelled) goes too.
            target.run(0, ["scancel", "--name", job_name], timeout=30)
            # slurmd may still write a job's output file just after sbatch --wait returns
            # (seen under load): remove the files until they stay gone for a second.
            files = " ".join(shlex.quote(f) for f in outputs)
            target.run(
                0,
                [
                    "/bin/sh",
                    "-c",
                    f"for i in 1 2 3 4 5 6 7 8 9 10; do rm -f {files}; sleep 0.5; "
                    f"ls {files} >/dev/null 2>&1 || {{ sleep 1; rm -f {files}; exit 0; }}; done",
                ],
                timeout=30,
            )
        return "".join(sections)

    def parse(self, raw: str, params: Any) -> Result:
        p: SlurmJobParams = params
        if not raw.strip():
            raise ParseError(self.name, "the output is empty")
        lines = raw.splitlines()
        runs: list[dict[str, float]] = []
        current: dict[str, float] | None = None
        opened = 0
        for i, line in enumerate(lines):
            head = SECTION.match(line)
            if head:
                if current is not None and "wall_s" not in current:
                    raise ParseError(
                        self.name,
                        f"the job on {current['nodes']:.0f} node(s) has no timing line",
                        line_no=opened + 1,
                        line=lines[opened],
                    )
                current = {"nodes": float(head.group(1)), "turnaround_s": float(head.group(4))}
                runs.append(current)
                opened = i
                continue
            mark = MARKER.match(line)
            if mark and current is not None:  # the wrapper's line is the section's last one
                if int(mark.group(1)) <= 0:
                    why = "a wall time of 0 ns cannot be measured"
                    raise ParseError(self.name, why, line_no=i + 1, line=line)
                current["wall_s"] = int(mark.group(1)) / 1e9
                current["exit"] = float(mark.group(2))
        if not runs:
            first = next((i for i, ln in enumerate(lines) if ln.strip()), 0)
            raise ParseError(
                self.name,
                "no '=== ecliptic slurm_job: nodes=N ...' section: not this kind's output",
                line_no=first + 1,
                line=lines[first],
            )
        if "wall_s" not in runs[-1]:
            raise ParseError(
                self.name,
                f"the job on {runs[-1]['nodes']:.0f} node(s) has no timing line: the output "
                "was cut short",
                line_no=len(lines),
                line=lines[-1],
            )
        done = [int(r["nodes"]) for r in runs]
        missing = [n for n in p.nodes if n not in done]
        if missing:
            raise ParseError(
                self.name,
                f"no run for {', '.join(map(str, missing))} node(s): the output stops after "
                f"{done[-1]} node(s)",
                line_no=len(lines),
                line=lines[-1],
            )
        for r in runs:
            if r["exit"] != 0:
                raise ParseError(
                    self.name, f"the job on {r['nodes']:.0f} node(s) exited with {r['exit']:.0f}"
                )
        series = [
            {"nodes": r["nodes"], "wall_s": r["wall_s"], "turnaround_s": r["turnaround_s"]}
            for r in sorted(runs, key=lambda r: r["nodes"])
        ]
        largest, smallest = series[-1], series[0]
        metrics = {
            "wall_s": largest["wall_s"],
            "nodes": largest["nodes"],
            "turnaround_s": largest["turnaround_s"],
        }
        if len(series) > 1 and largest["wall_s"] > 0:
            metrics["speedup"] = smallest["wall_s"] / largest["wall_s"]
        summary = ", ".join(f"{r['wall_s']:.2f} s on {r['nodes']:.0f}" for r in series)
        return Result(
            headline="wall_s",
            metrics=metrics,
            units={
                "wall_s": "s",
                "nodes": "",
                "turnaround_s": "s",
                "speedup": "x",
            },
            higher_is_better={"wall_s": False, "turnaround_s": False},
            series_x="nodes",
            series=series,
            summary=f"wall time {summary} node(s)",
        )


registry.register(SlurmJob())
