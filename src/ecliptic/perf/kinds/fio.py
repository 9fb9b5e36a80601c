"""``fio``: throughput, IOPS and latency of a server's disk, read from ``fio --output-format=json``.

One server runs one fio job (``numjobs`` clones, reported together: ``--group_reporting``)
for ``runtime`` seconds (``--time_based``) on a file of ``size`` bytes under ``/var/tmp``,
which is removed afterwards. ``/var/tmp`` is on the server's root filesystem: on the local
cloud the overlayfs whose upper layer is on the host's disk, so that disk is what is measured
(``/tmp`` would be memory). O_DIRECT (``direct: 1``, the default) works there: overlayfs
passes it to the upper filesystem (ext4 here), so the page cache does not flatter the figures;
``direct: 0`` measures buffered I/O, and reads of a file that fits in memory then come from the
cache.

Figures are per direction (``read_*``, ``write_*``): bandwidth in MB/s (10^6 bytes/s; fio
prints KiB/s), IOPS, mean completion latency in microseconds. The headline ``bandwidth_mbs``
is the bandwidth of the direction measured (read for ``read``/``randread``, write for
``write``/``randwrite``, both summed for ``readwrite``/``randrw``).
"""

from __future__ import annotations

import json
import secrets
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ecliptic.perf.errors import ParseError, RunFailed
from ecliptic.perf.kinds import registry
from ecliptic.perf.kinds.base import NETWORKS, NetworkMode, Params, Result, Target

DIRECTORY = "/var/tmp"
RW = Literal["read", "write", "randread", "randwrite", "readwrite", "randrw"]
_READS = {"read", "randread", "readwrite", "randrw", "rw"}
_WRITES = {"write", "randwrite", "readwrite", "randrw", "rw"}
LAYOUT_MBS = 20.0
"""The slowest rate at which fio is assumed to lay out its file (for the timeout)."""


def _size(v: Any) -> Any:
    from ecliptic.perf.spec import parse_size

    return parse_size(v) if isinstance(v, str) else v


class FioParams(Params):
    """How fio is run."""

    rw: RW = "randread"
    """The I/O pattern (fio's ``rw``)."""
    bs: Annotated[int, Field(ge=512, le=64 << 20)] = 4096
    """Block size in bytes (``"4k"``, ``"1m"`` are accepted)."""
    iodepth: Annotated[int, Field(ge=1, le=1024)] = 16
    """I/Os in flight per job (with ``psync`` fio caps it at 1)."""
    size: Annotated[int, Field(ge=1 << 20, le=64 << 30)] = 256 << 20
    """Size of the file the job works on, in bytes (``"256m"``, ``"4g"``)."""
    runtime: Annotated[int, Field(ge=1, le=3600)] = 10
    """Seconds of I/O (``--time_based``: the file is gone over again until then)."""
    numjobs: Annotated[int, Field(ge=1, le=64)] = 1
    """Jobs running the same workload at once on the same file."""
    direct: Literal[0, 1] = 1
    """1: O_DIRECT, past the page cache; 0: buffered I/O."""
    ioengine: Literal["libaio", "psync"] = "libaio"
    """``libaio`` (Linux native asynchronous I/O) or ``psync`` (pread/pwrite)."""
    rwmixread: Annotated[int, Field(ge=0, le=100)] = 50
    """Percent of reads in ``readwrite``/``randrw``."""

    @field_validator("bs", "size", mode="before")
    @classmethod
    def _sizes(cls, v: Any) -> Any:
        return _size(v)

    @model_validator(mode="after")
    def _fits(self) -> FioParams:
        if self.bs > self.size:
            raise ValueError(f"bs ({self.bs}) is larger than size ({self.size})")
        return self


class Fio:
    """fio on server 0's disk."""

    name: ClassVar[str] = "fio"
    title: ClassVar[str] = "Disk throughput, IOPS and latency (fio)"
    params: ClassVar[type[Params]] = FioParams
    networks: ClassVar[tuple[NetworkMode, ...]] = NETWORKS
    needs_platform: ClassVar[bool] = False
    tools: ClassVar[tuple[tuple[str, ...], ...]] = (("fio", "--version"),)

    def servers(self, params: Any, network: NetworkMode) -> int:
        return 1

    def command(self, p: FioParams, path: str) -> list[str]:
        """fio's command line (the same a person would type)."""
        argv = ["fio", "--name=ecliptic", f"--filename={path}", "--output-format=json"]
        argv += ["--group_reporting", "--time_based", f"--runtime={p.runtime}"]
        argv += [f"--rw={p.rw}", f"--bs={p.bs}", f"--iodepth={p.iodepth}", f"--size={p.size}"]
        argv += [f"--numjobs={p.numjobs}", f"--direct={p.direct}", f"--ioengine={p.ioengine}"]
        if p.rw in ("readwrite", "randrw"):
            argv.append(f"--rwmixread={p.rwmixread}")
        return argv

    def timeout(self, p: FioParams) -> float:
        """The run, laying out the file at :data:`LAYOUT_MBS` at worst, and a minute."""
        return p.runtime + p.size / (LAYOUT_MBS * 1e6) + 60

    def execute(self, params: Any, target: Target) -> str:
        p: FioParams = params
        path = f"{DIRECTORY}/ecliptic-fio-{secrets.token_hex(6)}"
        target.progress(f"fio {p.rw} bs={p.bs} iodepth={p.iodepth} for {p.runtime} s on {path}")
        limit = self.timeout(p)
        try:
            done = target.run(0, self.command(p, path), timeout=limit)
        finally:
            target.run(0, ["rm", "-f", path], timeout=60)
        if done.timed_out:
            raise RunFailed(f"fio did not finish within {limit:.0f} s")
        if done.exit_code != 0:
            why = (done.stderr.strip() or done.stdout.strip())[-800:]
            raise RunFailed(f"fio exited with {done.exit_code}: {why}")
        return done.stdout

    def parse(self, raw: str, params: Any) -> Result:
        p: FioParams = params
        if not raw.strip():
            raise ParseError(self.name, "the output is empty")
        lines = raw.splitlines(keepends=True)
        # fio may print notes ("note: both iodepth >= 1 and synchronous I/O engine ...")
        # before its JSON document: it starts at the first line that opens an object.
        offset, first = 0, None
        for i, line in enumerate(lines):
            if line.lstrip().startswith("{"):
                first = i
                break
            offset += len(line)
        if first is None:
            at = next((i for i, ln in enumerate(lines) if ln.strip()), 0)
            raise ParseError(
                self.name,
                "no JSON document: not fio's --output-format=json output",
                line_no=at + 1,
                line=lines[at].rstrip("\n"),
            )
        start = offset + len(lines[first]) - len(lines[first].lstrip())
        try:
            doc, _ = json.JSONDecoder().raw_decode(raw, start)
        except json.JSONDecodeError as e:
            all_lines = raw.splitlines()
            line = all_lines[e.lineno - 1] if 0 < e.lineno <= len(all_lines) else ""
            raise ParseError(
                self.name,
                f"fio's JSON is not whole ({e.msg}): the run was cut short",
                line_no=e.lineno,
                line=line,
            ) from None
        if not isinstance(doc, dict) or not isinstance(doc.get("jobs"), list):
            raise ParseError(
                self.name,
                "the JSON document has no 'jobs' list: not fio's output",
                line_no=first + 1,
                line=lines[first].rstrip("\n"),
            )
        if not doc["jobs"]:
            raise ParseError(
                self.name, "fio reported no job", line_no=first + 1, line=lines[first].rstrip("\n")
            )
        job = doc["jobs"][0]
        if not isinstance(job, dict):
            raise ParseError(self.name, "a job is not an object", line_no=first + 1)
        if job.get("error"):
            raise ParseError(self.name, f"fio's job failed with error {job['error']}")
        options = job.get("job options")
        if not isinstance(options, dict):
            options = {}
        rw = str(options.get("rw", p.rw))
        directions = [d for d, kinds in (("read", _READS), ("write", _WRITES)) if rw in kinds]
        if not directions:
            raise ParseError(self.name, f"fio ran rw={rw}, which Ecliptic does not read")
        metrics: dict[str, float] = {}
        units: dict[str, str] = {}
        better: dict[str, bool] = {}
        for d in directions:
            section = job.get(d)
            try:
                if not isinstance(section, dict):
                    raise KeyError(d)
                io_bytes = float(section["io_bytes"])
                bw_bytes = section.get("bw_bytes")
                bps = float(bw_bytes) if bw_bytes is not None else float(section["bw"]) * 1024
                iops = float(section["iops"])
                lat_ns = float(section["lat_ns"]["mean"])
            except (KeyError, TypeError, ValueError) as e:
                raise ParseError(
                    self.name, f"the job's '{d}' section has no {e}: the output is not whole"
                ) from None
            if io_bytes <= 0 or bps <= 0:
                raise ParseError(
                    self.name, f"fio did no {d} I/O (io_bytes {io_bytes:.0f}) although rw={rw}"
                )
            metrics[f"{d}_bw_mbs"] = bps / 1e6
            metrics[f"{d}_iops"] = iops
            metrics[f"{d}_lat_us"] = lat_ns / 1000
            units |= {f"{d}_bw_mbs": "MB/s", f"{d}_iops": "IO/s", f"{d}_lat_us": "us"}
            better[f"{d}_lat_us"] = False
        metrics["bandwidth_mbs"] = sum(metrics[f"{d}_bw_mbs"] for d in directions)
        metrics["iops"] = sum(metrics[f"{d}_iops"] for d in directions)
        units |= {"bandwidth_mbs": "MB/s", "iops": "IO/s"}
        summary = ", ".join(
            f"{d} {metrics[f'{d}_bw_mbs']:.1f} MB/s, {metrics[f'{d}_iops']:.0f} IOPS, "
            f"{metrics[f'{d}_lat_us']:.1f} us"
            for d in directions
        )
        return Result(
            headline="bandwidth_mbs",
            metrics=metrics,
            units=units,
            higher_is_better=better,
            summary=f"{rw}: {summary}",
        )


registry.register(Fio())
