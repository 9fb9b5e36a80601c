"""``rdma_bandwidth`` and ``rdma_latency``: perftest's ``ib_{read,write,send}_{bw,lat}``.

Server 1 runs the tool as the server, server 0 as the client that reports. Both connect with
rdma_cm (``-R``) to the address of server 1 on the measured network, skip the CPU frequency
check (``-F``), and sweep every size from 2 bytes to 8 MiB (``-a``) unless one ``size`` is
given. Bandwidth is reported in Gbit/s (``--report_gbits``); output in MB/sec (2^20 bytes/s,
perftest's unit without that flag) is converted. A ``duration`` runs one size for that many
seconds (``-D``) instead of ``iterations`` exchanges; perftest then prints averages only.

Both kinds need an RDMA device in each server: without one they are refused as Unsupported
before anything starts. The parsers skip the lines perftest interleaves with its tables (its
header block, ``Conflicting CPU frequency values detected`` warnings) and read the table
between its heading and the dashed line that closes it; a table that is not closed was cut
short.

``rdma_bandwidth``'s headline is ``bandwidth_gbps``, the highest average bandwidth over the
sizes; ``rdma_latency``'s is ``latency_us``, the lowest average latency over the sizes
(``t_avg``; ``t_typical`` for perftest versions that print no average).
"""

from __future__ import annotations

import re
import time
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ecliptic.perf.errors import ParseError, RunFailed, Unsupported
from ecliptic.perf.kinds import registry
from ecliptic.perf.kinds.base import NETWORKS, NetworkMode, Params, Result, Target

PORT = 18515
SERVER = "perftest-server"
READY_TIMEOUT_S = 15.0
MAX_EXTRA_ARGS = 16
MB_TO_GBITS = (1 << 20) * 8 / 1e9
"""perftest's MB/sec is 2^20 bytes per second; its Gb/sec 10^9 bits per second."""

EXTRA_ARGS: dict[str, re.Pattern[str]] = {
    name: re.compile(pattern)
    for name, pattern in {
        "--tclass": r"--tclass=\d{1,3}",
        "--tos": r"--tos=\d{1,3}",
        "--mtu": r"--mtu=(256|512|1024|2048|4096)",
        "--tx-depth": r"--tx-depth=\d{1,5}",
        "--rx-depth": r"--rx-depth=\d{1,5}",
        "--gid-index": r"--gid-index=\d{1,3}",
        "--ib-dev": r"--ib-dev=[A-Za-z0-9_.-]{1,32}",
        "--ib-port": r"--ib-port=\d{1,2}",
        "--sl": r"--sl=\d{1,2}",
        "--inline_size": r"--inline_size=\d{1,4}",
        "--cq-mod": r"--cq-mod=\d{1,4}",
        "--post_list": r"--post_list=\d{1,4}",
        "--connection": r"--connection=(RC|UC|UD|XRC|DC|SRD)",
        "--use_hugepages": r"--use_hugepages",
        "--odp": r"--odp",
        "--bidirectional": r"--bidirectional",
    }.items()
}
"""perftest options a spec may add (``--name=value`` form), and the values each may take:
tuning, not where the test connects or what the output looks like."""

_DASHES = re.compile(r"^\s*-{20,}\s*$")
_NUMBER = r"(\d+(?:\.\d+)?)"
_BW_HEADER = re.compile(
    r"^\s*#bytes\s+#iterations\s+BW peak\[(?P<u1>Gb|MB)/sec\]\s+"
    r"BW average\[(?P<u2>Gb|MB)/sec\]\s+MsgRate\[Mpps\]"
)
_LAT_COLUMNS = {
    "t_min[usec]": "latency_min_us",
    "t_max[usec]": "latency_max_us",
    "t_typical[usec]": "latency_typical_us",
    "t_avg[usec]": "latency_avg_us",
    "t_stdev[usec]": "latency_stdev_us",
    "99% percentile[usec]": "latency_p99_us",
    "99.9% percentile[usec]": "latency_p999_us",
    "tps average": "tps",
}
_LAT_HEADER = re.compile(r"^\s*#bytes\s+#iterations\s+(t_\w+\[usec\]|tps average)")
_LAT_TOKEN = re.compile(r"t_\w+\[usec\]|99(?:\.9)?% percentile\[usec\]|tps average")


class RdmaParams(Params):
    """What both RDMA kinds share."""

    mode: Literal["read", "write", "send"] = "write"
    """The RDMA operation: ``ib_read_*``, ``ib_write_*`` or ``ib_send_*``."""
    iterations: Annotated[int, Field(ge=5, le=1_000_000)] = 1000
    """Exchanges per size (``-n``; perftest needs at least 5)."""
    size: Annotated[int | None, Field(ge=1, le=1 << 30)] = None
    """One message size in bytes (``-s``); none: every size from 2 bytes to 8 MiB (``-a``)."""
    duration: Annotated[int | None, Field(ge=1, le=3600)] = None
    """Run one size for this many seconds (``-D``) instead of ``iterations`` exchanges."""
    extra_args: Annotated[list[str], Field(max_length=MAX_EXTRA_ARGS)] = []
    """More perftest options, from an allow-list (``--tclass=96``, ``--mtu=4096`` ...)."""

    @field_validator("size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> Any:
        from ecliptic.perf.spec import parse_size

        return parse_size(v) if isinstance(v, str) else v

    @field_validator("extra_args")
    @classmethod
    def _allowed(cls, v: list[str]) -> list[str]:
        for arg in v:
            pattern = EXTRA_ARGS.get(arg.split("=", 1)[0])
            if pattern is None:
                raise ValueError(
                    f"{arg!r} is not an option Ecliptic passes to perftest; allowed: "
                    f"{', '.join(sorted(EXTRA_ARGS))}"
                )
            if not pattern.fullmatch(arg):
                raise ValueError(f"{arg!r} does not have the form {pattern.pattern}")
        return v

    @model_validator(mode="after")
    def _one_size_for_duration(self) -> RdmaParams:
        if self.duration is not None and self.size is None:
            raise ValueError("a duration runs one message size: give 'size' too")
        return self


class RdmaBandwidthParams(RdmaParams):
    """How ``ib_*_bw`` is run."""

    qps: Annotated[int, Field(ge=1, le=1024)] = 1
    """Queue pairs (``-q``)."""


class RdmaLatencyParams(RdmaParams):
    """How ``ib_*_lat`` is run."""


class _Perftest:
    """What the bandwidth and latency kinds share: running a perftest pair."""

    name: ClassVar[str]
    suffix: ClassVar[str]
    networks: ClassVar[tuple[NetworkMode, ...]] = NETWORKS
    needs_platform: ClassVar[bool] = False
    tools: ClassVar[tuple[tuple[str, ...], ...]] = (("ib_write_bw", "--version"),)

    def servers(self, params: Any, network: NetworkMode) -> int:
        return 1 if network == "host" else 2

    def program(self, p: RdmaParams) -> str:
        """The perftest program (``ib_write_bw``)."""
        return f"ib_{p.mode}_{self.suffix}"

    def options(self, p: RdmaParams) -> list[str]:
        """Options both ends are given."""
        argv = ["-R", "-F", "-p", str(PORT)]
        argv += ["-s", str(p.size)] if p.size is not None else ["-a"]
        argv += ["-D", str(p.duration)] if p.duration is not None else ["-n", str(p.iterations)]
        return argv + list(p.extra_args)

    def check_devices(self, target: Target) -> None:
        """Unsupported unless every server sees an RDMA device."""
        for i in range(target.count):
            if not target.rdma_devices(i):
                raise Unsupported(
                    f"{self.name} needs an RDMA device; server {i} ({target.address(i)}) sees "
                    "none in /sys/class/infiniband (its host has no RDMA hardware, or none is "
                    "passed to the server)"
                )

    def timeout(self, p: RdmaParams) -> float:
        """A bound on the client: the duration, or a generous time per exchange and size."""
        if p.duration is not None:
            return p.duration + 60.0
        sizes = 1 if p.size is not None else 23
        return 60.0 + sizes * p.iterations * 0.01

    def execute(self, params: Any, target: Target) -> str:
        p: RdmaParams = params
        self.check_devices(target)
        argv = [self.program(p), *self.options(p)]
        peer = target.address(1)
        target.start(1, SERVER, argv)
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while "Waiting for client" not in target.log(1, SERVER):
                if time.monotonic() > deadline:
                    raise RunFailed(
                        f"{self.name}: {argv[0]} in server 1 did not start listening within "
                        f"{READY_TIMEOUT_S:.0f} s; it printed: {target.log(1, SERVER)[-500:]!r}"
                    )
                time.sleep(0.05)
            target.progress(f"{self.name}: {argv[0]} to {peer}")
            limit = self.timeout(p)
            done = target.run(0, [*argv, peer], timeout=limit)
        finally:
            target.stop(1, SERVER)
        if done.timed_out:
            raise RunFailed(f"{self.name}: {argv[0]} did not finish within {limit:.0f} s")
        if done.exit_code != 0:
            why = (done.stderr.strip() or done.stdout.strip())[-800:]
            raise RunFailed(f"{self.name}: {argv[0]} exited with {done.exit_code}: {why}")
        return done.stdout

    # ------------------------------------------------------------------ reading

    def table(
        self, raw: str, header: re.Pattern[str], what: str
    ) -> tuple[int, list[tuple[int, str]]]:
        """The heading's index and the rows (index, line) of perftest's result table."""
        lines = raw.splitlines()
        if not raw.strip():
            raise ParseError(self.name, "the output is empty")
        at = next((i for i, ln in enumerate(lines) if header.match(ln)), None)
        if at is None:
            first = next((i for i, ln in enumerate(lines) if ln.strip()), 0)
            raise ParseError(
                self.name,
                f"no {what} table ('#bytes #iterations ...'): not perftest's ib_*_"
                f"{self.suffix} output",
                line_no=first + 1,
                line=lines[first],
            )
        rows: list[tuple[int, str]] = []
        for i in range(at + 1, len(lines)):
            line = lines[i]
            if _DASHES.match(line):
                if not rows:
                    raise ParseError(
                        self.name, "the table has no rows", line_no=i + 1, line=lines[at]
                    )
                return at, rows
            if line.lstrip()[:1].isdigit():
                rows.append((i, line))
            # anything else (perftest's warnings, blank lines) is not part of the table
        last = len(lines) - 1
        raise ParseError(
            self.name,
            "the table is not closed by perftest's dashed line: the run was cut short",
            line_no=last + 1,
            line=lines[last],
        )

    def numbers(self, line_no: int, line: str, count: int) -> list[float]:
        """The first ``count`` numbers of a row; ParseError naming it otherwise."""
        values = line.split()
        try:
            out = [float(v) for v in values[:count]]
        except ValueError:
            out = []
        if len(out) < count:
            raise ParseError(
                self.name,
                f"a row of the table is not {count} numbers",
                line_no=line_no + 1,
                line=line,
            )
        return out


class RdmaBandwidth(_Perftest):
    """``ib_{read,write,send}_bw`` from server 0 to server 1."""

    name: ClassVar[str] = "rdma_bandwidth"
    title: ClassVar[str] = "RDMA bandwidth by message size (perftest ib_*_bw)"
    params: ClassVar[type[Params]] = RdmaBandwidthParams
    suffix: ClassVar[str] = "bw"

    def options(self, p: RdmaParams) -> list[str]:
        assert isinstance(p, RdmaBandwidthParams)
        return [*super().options(p), "--report_gbits", "-q", str(p.qps)]

    def parse(self, raw: str, params: Any) -> Result:
        at, rows = self.table(raw, _BW_HEADER, "bandwidth")
        m = _BW_HEADER.match(raw.splitlines()[at])
        assert m is not None
        factor = 1.0 if m.group("u2") == "Gb" else MB_TO_GBITS
        series = []
        for i, line in rows:
            size, iters, peak, avg, rate = self.numbers(i, line, 5)
            series.append(
                {
                    "bytes": size,
                    "iterations": iters,
                    "bw_peak_gbps": peak * factor,
                    "bw_avg_gbps": avg * factor,
                    "msg_rate_mpps": rate,
                }
            )
        best = max(series, key=lambda r: r["bw_avg_gbps"])
        if best["bw_avg_gbps"] <= 0:
            i, line = rows[0]
            raise ParseError(self.name, "every average bandwidth is 0", line_no=i + 1, line=line)
        metrics = {
            "bandwidth_gbps": best["bw_avg_gbps"],
            "bandwidth_bytes": best["bytes"],
            "msg_rate_max_mpps": max(r["msg_rate_mpps"] for r in series),
        }
        return Result(
            headline="bandwidth_gbps",
            metrics=metrics,
            units={
                "bandwidth_gbps": "Gbit/s",
                "bandwidth_bytes": "B",
                "msg_rate_max_mpps": "Mpps",
                "bytes": "B",
                "iterations": "",
                "bw_peak_gbps": "Gbit/s",
                "bw_avg_gbps": "Gbit/s",
                "msg_rate_mpps": "Mpps",
            },
            series_x="bytes" if len(series) > 1 else None,
            series=series,
            summary=f"{best['bw_avg_gbps']:.2f} Gbit/s (average, at {best['bytes']:.0f} B)",
        )


class RdmaLatency(_Perftest):
    """``ib_{read,write,send}_lat`` between server 0 and server 1."""

    name: ClassVar[str] = "rdma_latency"
    title: ClassVar[str] = "RDMA latency by message size (perftest ib_*_lat)"
    params: ClassVar[type[Params]] = RdmaLatencyParams
    suffix: ClassVar[str] = "lat"

    def parse(self, raw: str, params: Any) -> Result:
        at, rows = self.table(raw, _LAT_HEADER, "latency")
        heading = raw.splitlines()[at]
        columns = [_LAT_COLUMNS[t] for t in _LAT_TOKEN.findall(heading)]
        series = []
        for i, line in rows:
            values = self.numbers(i, line, 2 + len(columns))
            series.append(
                {"bytes": values[0], "iterations": values[1]}
                | dict(zip(columns, values[2:], strict=True))
            )
        key = "latency_avg_us" if "latency_avg_us" in columns else "latency_typical_us"
        if key not in columns:
            raise ParseError(
                self.name, "the table has neither t_avg nor t_typical", line_no=at + 1, line=heading
            )
        best = min(series, key=lambda r: r[key])
        if best[key] <= 0:
            raise ParseError(
                self.name,
                f"a latency of 0 ({key})",
                line_no=rows[series.index(best)][0] + 1,
                line=rows[series.index(best)][1],
            )
        metrics = {"latency_us": best[key], "latency_bytes": best["bytes"]}
        units = {"latency_us": "us", "latency_bytes": "B", "bytes": "B", "iterations": ""}
        better = {"latency_us": False}
        for extra in ("latency_min_us", "latency_p99_us"):
            if extra in columns:
                metrics[extra] = min(r[extra] for r in series)
                better[extra] = False
        units |= {c: ("tps" if c == "tps" else "us") for c in columns}
        units |= {m: "us" for m in ("latency_min_us", "latency_p99_us") if m in metrics}
        return Result(
            headline="latency_us",
            metrics=metrics,
            units=units,
            higher_is_better=better,
            series_x="bytes" if len(series) > 1 else None,
            series=series,
            summary=f"{best[key]:.2f} us (lowest {key[8:-3]} latency, at {best['bytes']:.0f} B)",
        )


registry.register(RdmaBandwidth())
registry.register(RdmaLatency())
