"""What a benchmark kind is: a parameter model, a runner over a :class:`Target`, a parser.

A kind never asks which backend it runs on. The service hands it a :class:`Target`: the
run's servers (index 0 is the client, or the only server; index 1 the peer), the addresses
to reach them on the measured network, and a way to run commands and background processes
in them. What a kind returns from :meth:`Kind.execute` is the tool's raw output (stored as
it is); :meth:`Kind.parse` turns it into a :class:`Result` or raises
:class:`~ecliptic.perf.errors.ParseError` naming the line. Parsing never gives a silent
zero: a figure that is not in the output is an error, not 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Protocol

from pydantic import BaseModel, ConfigDict

NetworkMode = Literal["bridge", "direct", "host"]
NETWORKS: tuple[NetworkMode, ...] = ("bridge", "direct", "host")


class Params(BaseModel):
    """Base of every kind's parameters: frozen, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Result(BaseModel):
    """What a run measured, in a shape statistics, comparisons and plots share."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    headline: str
    """The key of the metric that answers "how fast" (``throughput_gbps``)."""
    metrics: dict[str, float]
    """Scalar figures by name (``throughput_gbps``, ``retransmits``, ``latency_min_us``)."""
    units: dict[str, str]
    """Unit of each metric and series column (``Gbit/s``, ``us``, ``MB/s``, ``s``)."""
    higher_is_better: dict[str, bool] = {}
    """Per metric: whether a bigger figure is the better one (absent: bigger is better)."""
    series_x: str | None = None
    """The column the series is drawn against (``bytes``, ``nodes``); None: no series."""
    series: list[dict[str, float]] = []
    """Rows of a sweep (``{"bytes": 1024, "latency_us": 3.4, "bandwidth_mbs": 1184.3}``)."""
    summary: str = ""
    """One line for people: ``9.38 Gbit/s, 0 retransmits``."""


@dataclass(frozen=True)
class Completed:
    """A command that ran in a server, and what it printed."""

    exit_code: int
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False


class Target(Protocol):
    """The servers a run measures, as a kind sees them."""

    network: NetworkMode
    """The wiring being measured."""
    count: int
    """How many servers there are (1 in ``host`` mode: both ends run in it)."""

    def address(self, index: int) -> str:
        """Where server ``index`` is reached on the measured network (``127.0.0.1`` in
        ``host`` mode)."""
        ...

    def interface(self, index: int) -> str:
        """The interface of server ``index`` on the measured network (``lo`` in host mode)."""
        ...

    def run(
        self, index: int, argv: list[str], *, timeout: float, stdin: bytes | None = None
    ) -> Completed:
        """Run ``argv`` in server ``index`` and wait for it."""
        ...

    def start(self, index: int, name: str, argv: list[str]) -> None:
        """Start ``argv`` in server ``index`` in the background, as ``name``."""
        ...

    def stop(self, index: int, name: str) -> None:
        """Stop what :meth:`start` started as ``name``; no error if it is gone."""
        ...

    def log(self, index: int, name: str) -> str:
        """What the background process ``name`` printed so far (for error messages)."""
        ...

    def rdma_devices(self, index: int) -> list[str]:
        """RDMA devices server ``index`` sees (``/sys/class/infiniband``)."""
        ...

    def progress(self, message: str) -> None:
        """Tell whoever watches the run what is happening (an event)."""
        ...


class Kind(Protocol):
    """A kind of benchmark: how it is specified, run and read."""

    name: ClassVar[str]
    """The name specs use (``iperf3``)."""
    title: ClassVar[str]
    """What it measures, for people."""
    params: ClassVar[type[Params]]
    """Its parameters."""
    networks: ClassVar[tuple[NetworkMode, ...]]
    """The network modes it can measure."""
    needs_platform: ClassVar[bool]
    """True when it runs on an existing platform only (``slurm_job``)."""
    tools: ClassVar[tuple[tuple[str, ...], ...]]
    """Commands whose output records the tool versions (``("iperf3", "--version")``)."""

    def servers(self, params: Any, network: NetworkMode) -> int:
        """How many fresh servers a run needs."""
        ...

    def execute(self, params: Any, target: Target) -> str:
        """Run the tool; its raw output. RunFailed / Unsupported when it cannot."""
        ...

    def parse(self, raw: str, params: Any) -> Result:
        """The figures in ``raw``; ParseError naming the line otherwise."""
        ...
