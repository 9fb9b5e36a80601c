"""``iperf3``: TCP or UDP throughput between two servers, read from ``iperf3 --json``."""

from __future__ import annotations

import json
import time
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, field_validator

from ecliptic.perf.errors import ParseError, RunFailed
from ecliptic.perf.kinds import registry
from ecliptic.perf.kinds.base import NETWORKS, NetworkMode, Params, Result, Target

PORT = 5201
SERVER = "iperf3-server"
READY_TIMEOUT_S = 10.0


class Iperf3Params(Params):
    """How iperf3 is run."""

    protocol: Literal["tcp", "udp"] = "tcp"
    duration: Annotated[int, Field(ge=1, le=600)] = 10
    """Seconds of traffic."""
    streams: Annotated[int, Field(ge=1, le=128)] = 1
    """Parallel streams (``-P``)."""
    direction: Literal["forward", "reverse", "bidir"] = "forward"
    """``forward``: server 0 sends to server 1; ``reverse``: 1 sends to 0 (``-R``);
    ``bidir``: both at once (``--bidir``)."""
    bitrate: Annotated[int | None, Field(ge=1_000, le=400_000_000_000)] = None
    """Target bits per second (``-b``); iperf3's default for UDP is 1 Mbit/s, unlimited for
    TCP."""
    omit: Annotated[int, Field(ge=0, le=60)] = 0
    """Seconds at the start left out of the figures (``-O``: TCP slow start)."""
    length: Annotated[int | None, Field(ge=1, le=1 << 20)] = None
    """Buffer (TCP) or datagram (UDP) size in bytes (``-l``)."""

    @field_validator("bitrate", mode="before")
    @classmethod
    def _rate(cls, v: Any) -> Any:
        from ecliptic.perf.spec import parse_rate

        return parse_rate(v) if isinstance(v, str) else v


class Iperf3:
    """iperf3 between server 0 (client) and server 1 (server)."""

    name: ClassVar[str] = "iperf3"
    title: ClassVar[str] = "TCP/UDP throughput (iperf3)"
    params: ClassVar[type[Params]] = Iperf3Params
    networks: ClassVar[tuple[NetworkMode, ...]] = NETWORKS
    needs_platform: ClassVar[bool] = False
    tools: ClassVar[tuple[tuple[str, ...], ...]] = (("iperf3", "--version"),)

    def servers(self, params: Any, network: NetworkMode) -> int:
        return 1 if network == "host" else 2

    def command(self, p: Iperf3Params, address: str) -> list[str]:
        """The client's command line (the same a person would type)."""
        argv = ["iperf3", "--client", address, "--port", str(PORT), "--json"]
        argv += ["--time", str(p.duration), "--parallel", str(p.streams)]
        if p.protocol == "udp":
            argv.append("--udp")
        if p.direction == "reverse":
            argv.append("--reverse")
        elif p.direction == "bidir":
            argv.append("--bidir")
        if p.bitrate is not None:
            argv += ["--bitrate", str(p.bitrate)]
        if p.omit:
            argv += ["--omit", str(p.omit)]
        if p.length is not None:
            argv += ["--length", str(p.length)]
        return argv

    def execute(self, params: Any, target: Target) -> str:
        p: Iperf3Params = params
        peer = target.address(1)
        target.start(
            1,
            SERVER,
            [
                "iperf3",
                "--server",
                "--one-off",
                "--forceflush",
                "--port",
                str(PORT),
                "--bind",
                peer,
            ],
        )
        try:
            deadline = time.monotonic() + READY_TIMEOUT_S
            while "Server listening" not in target.log(1, SERVER):
                if time.monotonic() > deadline:
                    raise RunFailed(
                        f"iperf3: the server on {peer} did not start listening within "
                        f"{READY_TIMEOUT_S:.0f} s; it printed: {target.log(1, SERVER)[-500:]!r}"
                    )
                time.sleep(0.02)
            target.progress(f"iperf3 {p.protocol} for {p.duration} s to {peer}")
            done = target.run(0, self.command(p, peer), timeout=p.duration + p.omit + 30)
        finally:
            target.stop(1, SERVER)
        if done.timed_out:
            raise RunFailed(f"iperf3 did not finish within {p.duration + p.omit + 30} s")
        if done.exit_code != 0 and not done.stdout.strip():
            raise RunFailed(f"iperf3 exited with {done.exit_code}: {done.stderr.strip()[-500:]}")
        return done.stdout

    def parse(self, raw: str, params: Any) -> Result:
        if not raw.strip():
            raise ParseError(self.name, "the output is empty")
        try:
            doc = json.loads(raw)
        except json.JSONDecodeError as e:
            lines = raw.splitlines()
            line = lines[e.lineno - 1] if 0 < e.lineno <= len(lines) else ""
            raise ParseError(
                self.name, f"not iperf3's --json output ({e.msg})", line_no=e.lineno, line=line
            ) from None
        if not isinstance(doc, dict):
            raise ParseError(self.name, "not iperf3's --json output (not an object)", line_no=1)
        if doc.get("error"):
            raise ParseError(self.name, f"iperf3 reported an error: {doc['error']}")
        end = doc.get("end")
        start = doc.get("start")
        if not isinstance(end, dict) or not isinstance(start, dict) or not end:
            raise ParseError(self.name, "no 'start'/'end' sections: the run was cut short")
        protocol = str(start.get("test_start", {}).get("protocol", "TCP")).upper()
        metrics: dict[str, float] = {}
        units: dict[str, str] = {}
        better: dict[str, bool] = {}
        try:
            if protocol == "UDP":
                s = end["sum"]
                metrics["throughput_gbps"] = s["bits_per_second"] / 1e9
                metrics["jitter_ms"] = float(s["jitter_ms"])
                metrics["lost_percent"] = float(s["lost_percent"])
                metrics["lost_packets"] = float(s["lost_packets"])
                metrics["packets"] = float(s["packets"])
                units |= {"jitter_ms": "ms", "lost_percent": "%", "lost_packets": "", "packets": ""}
                better |= {"jitter_ms": False, "lost_percent": False, "lost_packets": False}
            else:
                received = end["sum_received"]["bits_per_second"]
                if "sum_received_bidir_reverse" in end:
                    received += end["sum_received_bidir_reverse"]["bits_per_second"]
                metrics["throughput_gbps"] = received / 1e9
                metrics["sent_gbps"] = end["sum_sent"]["bits_per_second"] / 1e9
                metrics["retransmits"] = float(end["sum_sent"].get("retransmits", 0))
                units |= {"sent_gbps": "Gbit/s", "retransmits": ""}
                better["retransmits"] = False
            cpu = end.get("cpu_utilization_percent") or {}
            if "host_total" in cpu:
                metrics["cpu_sender_pct"] = float(cpu["host_total"])
                metrics["cpu_receiver_pct"] = float(cpu.get("remote_total", 0.0))
                units |= {"cpu_sender_pct": "%", "cpu_receiver_pct": "%"}
                better |= {"cpu_sender_pct": False, "cpu_receiver_pct": False}
        except (KeyError, TypeError) as e:
            raise ParseError(
                self.name, f"the 'end' section has no {e}: the run was cut short"
            ) from None
        units["throughput_gbps"] = "Gbit/s"
        series = []
        for iv in doc.get("intervals") or []:
            s = iv.get("sum") if isinstance(iv, dict) else None
            if isinstance(s, dict) and "end" in s and "bits_per_second" in s:
                series.append(
                    {"seconds": float(s["end"]), "throughput_gbps": s["bits_per_second"] / 1e9}
                )
        units["seconds"] = "s"
        summary = f"{metrics['throughput_gbps']:.2f} Gbit/s"
        if "retransmits" in metrics:
            summary += f", {metrics['retransmits']:.0f} retransmits"
        if "lost_percent" in metrics:
            summary += (
                f", {metrics['lost_percent']:.2f}% lost, jitter {metrics['jitter_ms']:.3f} ms"
            )
        return Result(
            headline="throughput_gbps",
            metrics=metrics,
            units=units,
            higher_is_better=better,
            series_x="seconds" if series else None,
            series=series,
            summary=summary,
        )


registry.register(Iperf3())
