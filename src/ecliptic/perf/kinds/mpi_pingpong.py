"""``mpi_pingpong``: MPI latency and bandwidth over a sweep of message sizes (Open MPI).

Two ranks pass a message back and forth for every size 0, 1, 2, 4 ... 2^``max_log`` bytes. The
program (``mpi-pingpong``, compiled into the ``perf`` image) prints the table of the Intel MPI
Benchmarks' PingPong (``#bytes #repetitions t[usec] Mbytes/sec``), so :meth:`MpiPingPong.parse`
reads our output and real ``IMB-MPI1 PingPong`` output alike. ``t[usec]`` is half a round trip
(one way), as IMB prints it; ``Mbytes/sec`` is bytes / t[usec] (10^6 bytes/s, as IMB 2018 and
later print it; older IMB printed 2^20).

Across two servers Open MPI needs a remote launcher: for the run, server 1 gets an sshd on
port 2222 with host keys made for the run, and server 0 a key pair made for the run whose
public key alone is written into server 1; host keys are not checked (both ends are the run's
own fresh servers, and nothing of the run outlives it). Traffic is pinned to the measured
interface (``btl_tcp_if_include``/``oob_tcp_if_include``) with the TCP transport only
(``--mca btl self,tcp --mca pml ob1``: neither shared memory nor UCX). In ``host`` mode both
ranks run in the one server and talk TCP over its loopback, so the host's TCP stack is what is
measured. ``transport: rdma`` uses UCX (``--mca pml ucx``) and needs RDMA devices in both
servers; without them the run is refused as Unsupported.

The headline is ``latency_min_us``, the lowest one-way time over the sweep (lower is better):
latency is what a ping-pong measures that a streaming test does not. The peak bandwidth over
the sweep is ``bandwidth_peak_mbs``; the series (``bytes`` against ``latency_us`` and
``bandwidth_mbs``) draws both curves.
"""

from __future__ import annotations

import re
import shlex
import time
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from ecliptic.perf.errors import ParseError, RunFailed, Unsupported
from ecliptic.perf.kinds import registry
from ecliptic.perf.kinds.base import NETWORKS, NetworkMode, Params, Result, Target

SSH_PORT = 2222
SSHD = "mpi-sshd"
PROGRAM = "/usr/local/bin/mpi-pingpong"
WORKDIR = "/run/ecliptic-mpi"
"""Keys and the sshd configuration of one run, in each server (removed afterwards); sshd
refuses keys under a world-writable folder such as /var/tmp."""
READY_TIMEOUT_S = 15.0
VOLUME = 64 << 20
"""Bytes each way per size beyond which ``mpi-pingpong`` does fewer repetitions (its VOLUME)."""
MIN_REPS = 10

_HEADER = re.compile(r"^\s*#bytes\s+#repetitions\s+t\[(?P<time>[^\]]+)\]\s+(?P<bw>\S+)\s*$")
_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+(\d+(?:\.\d+)?)\s+(\d+(?:\.\d+)?)\s*$")
_FINALIZE = "# All processes entering MPI_Finalize"


class MpiPingPongParams(Params):
    """How the ping-pong is run."""

    max_log: Annotated[int, Field(ge=0, le=26)] = 22
    """Message sizes go up to 2^max_log bytes (22: 4 MiB)."""
    repetitions: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Timed round trips per size (fewer for large messages: at most 64 MiB each way per
    size, and at least 10)."""
    transport: Literal["tcp", "rdma"] = "tcp"
    """``tcp`` (Open MPI's TCP transport) or ``rdma`` (UCX; needs RDMA devices)."""


class MpiPingPong:
    """Open MPI ping-pong between server 0 (rank 0) and server 1 (rank 1)."""

    name: ClassVar[str] = "mpi_pingpong"
    title: ClassVar[str] = "MPI latency and bandwidth by message size (Open MPI ping-pong)"
    params: ClassVar[type[Params]] = MpiPingPongParams
    networks: ClassVar[tuple[NetworkMode, ...]] = NETWORKS
    needs_platform: ClassVar[bool] = False
    tools: ClassVar[tuple[tuple[str, ...], ...]] = (("mpirun", "--version"),)

    def servers(self, params: Any, network: NetworkMode) -> int:
        return 1 if network == "host" else 2

    # ------------------------------------------------------------------ running

    def timeout(self, p: MpiPingPongParams) -> float:
        """A generous bound on the run: 100 us and 20 MB/s per message, plus start-up."""
        total = 0.0
        for e in range(-1, p.max_log + 1):
            size = 0 if e < 0 else 1 << e
            reps = p.repetitions if size == 0 else min(p.repetitions, max(VOLUME // size, 1))
            reps = max(reps, min(MIN_REPS, p.repetitions))
            total += 2 * (reps + 2) * (100e-6 + size / 20e6)
        return 120.0 + total

    def command(self, p: MpiPingPongParams, target: Target, key: str | None) -> list[str]:
        """The mpirun command line (run in server 0)."""
        ifaces = ",".join(sorted({target.interface(i) for i in range(max(target.count, 2))}))
        argv = ["mpirun", "--allow-run-as-root", "-np", "2", "--bind-to", "none"]
        if target.count == 1:
            argv += ["--host", "localhost:2"]
        else:
            argv += ["--host", f"{target.address(0)}:1,{target.address(1)}:1"]
        argv += ["--mca", "oob_tcp_if_include", ifaces]
        if p.transport == "tcp":
            argv += ["--mca", "pml", "ob1", "--mca", "osc", "^ucx"]
            argv += ["--mca", "btl", "self,tcp", "--mca", "btl_tcp_if_include", ifaces]
        else:
            argv += ["--mca", "pml", "ucx", "--mca", "osc", "ucx", "--mca", "btl", "^openib"]
            argv += ["-x", "UCX_TLS=self,rc_x,ud_x"]
        if key is not None:
            ssh = [
                f"-p {SSH_PORT}",
                f"-i {key}",
                "-o StrictHostKeyChecking=no",
                "-o UserKnownHostsFile=/dev/null",
                "-o BatchMode=yes",
                "-o LogLevel=ERROR",
            ]
            argv += ["--mca", "plm_rsh_agent", "ssh", "--mca", "plm_rsh_args", " ".join(ssh)]
        argv += [PROGRAM, "-msglog", str(p.max_log), "-iter", str(p.repetitions)]
        return argv

    def _check_rdma(self, target: Target) -> None:
        for i in range(target.count):
            if not target.rdma_devices(i):
                raise Unsupported(
                    f"mpi_pingpong with transport rdma needs an RDMA device; server {i} "
                    f"({target.address(i)}) sees none in /sys/class/infiniband (its host has no "
                    "RDMA hardware, or none is passed to the server): use transport: tcp"
                )

    def _sh(
        self, target: Target, index: int, script: str, what: str, stdin: bytes | None = None
    ) -> str:
        done = target.run(index, ["/bin/sh", "-ec", script], timeout=60, stdin=stdin)
        if done.exit_code != 0:
            raise RunFailed(
                f"mpi_pingpong: {what} in server {index} failed ({done.exit_code}): "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )
        return done.stdout

    def _start_sshd(self, target: Target) -> str:
        """sshd in server 1 that lets server 0's run key in; returns the key's path."""
        d = shlex.quote(WORKDIR)
        keygen = "ssh-keygen -q -t ed25519 -N '' -C ecliptic-mpi -f"
        public = self._sh(
            target,
            0,
            f"rm -rf {d}; mkdir -m 0700 {d}; {keygen} {d}/id_ed25519; cat {d}/id_ed25519.pub",
            "making the run's key pair",
        )
        config = "\n".join(
            [
                f"Port {SSH_PORT}",
                f"ListenAddress {target.address(1)}",
                f"HostKey {WORKDIR}/host_ed25519",
                f"AuthorizedKeysFile {WORKDIR}/authorized_keys",
                "PermitRootLogin prohibit-password",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                "UsePAM no",
                "PidFile none",
                "",
            ]
        )
        self._sh(
            target,
            1,
            f"rm -rf {d}; mkdir -m 0700 {d}; install -d -m 0755 /run/sshd; "
            f"{keygen} {d}/host_ed25519; cat > {d}/sshd_config",
            "preparing sshd",
            stdin=config.encode(),
        )
        self._sh(
            target,
            1,
            f"umask 077; cat > {d}/authorized_keys",
            "authorising the run's key",
            stdin=public.encode(),
        )
        target.start(1, SSHD, ["/usr/sbin/sshd", "-D", "-e", "-f", f"{WORKDIR}/sshd_config"])
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "Server listening on" not in target.log(1, SSHD):
            if time.monotonic() > deadline:
                raise RunFailed(
                    f"mpi_pingpong: sshd in server 1 did not start listening within "
                    f"{READY_TIMEOUT_S:.0f} s; it printed: {target.log(1, SSHD)[-500:]!r}"
                )
            time.sleep(0.05)
        return f"{WORKDIR}/id_ed25519"

    def execute(self, params: Any, target: Target) -> str:
        p: MpiPingPongParams = params
        if p.transport == "rdma":
            self._check_rdma(target)
        two = target.count > 1
        try:
            key = None
            if two:
                target.progress("mpi_pingpong: starting sshd in server 1 (port 2222, run keys)")
                key = self._start_sshd(target)
            where = (
                f"{target.address(0)} <-> {target.address(1)}" if two else "one server (loopback)"
            )
            target.progress(
                f"mpi_pingpong: {p.transport} ping-pong, 0 to {1 << p.max_log} bytes, {where}"
            )
            limit = self.timeout(p)
            done = target.run(0, self.command(p, target, key), timeout=limit)
        finally:
            if two:
                target.stop(1, SSHD)
            for i in range(target.count):
                target.run(i, ["rm", "-rf", WORKDIR], timeout=30)
        if done.timed_out:
            raise RunFailed(f"mpi_pingpong did not finish within {limit:.0f} s")
        if done.exit_code != 0:
            why = (done.stderr.strip() or done.stdout.strip())[-800:]
            raise RunFailed(f"mpirun exited with {done.exit_code}: {why}")
        return done.stdout

    # ------------------------------------------------------------------ reading

    def parse(self, raw: str, params: Any) -> Result:
        p: MpiPingPongParams = params
        lines = raw.splitlines()
        if not raw.strip():
            raise ParseError(self.name, "the output is empty")
        start = 0
        for i, line in enumerate(lines):
            if line.strip().startswith("# Benchmarking PingPong"):
                start = i
                break
        header_at = None
        for i in range(start, len(lines)):
            if _HEADER.match(lines[i]):
                header_at = i
                break
        if header_at is None:
            first = next((i for i, ln in enumerate(lines) if ln.strip()), 0)
            raise ParseError(
                self.name,
                "no PingPong table ('#bytes #repetitions t[usec] Mbytes/sec'): not the "
                "output of mpi-pingpong or IMB-MPI1 PingPong",
                line_no=first + 1,
                line=lines[first],
            )
        m = _HEADER.match(lines[header_at])
        assert m is not None
        if m.group("time") != "usec" or m.group("bw").lower() != "mbytes/sec":
            raise ParseError(
                self.name,
                f"units t[{m.group('time')}] and {m.group('bw')}; expected t[usec] and Mbytes/sec",
                line_no=header_at + 1,
                line=lines[header_at],
            )
        rows: list[dict[str, float]] = []
        end = len(lines)
        for i in range(header_at + 1, len(lines)):
            line = lines[i]
            row = _ROW.match(line)
            if row:
                size, _reps, usec, mbs = row.groups()
                rows.append(
                    {"bytes": float(size), "latency_us": float(usec), "bandwidth_mbs": float(mbs)}
                )
                continue
            if not line.strip() or line.startswith("#"):
                end = i
                break
            raise ParseError(
                self.name,
                "a row of the table is not four numbers (bytes, repetitions, t, bandwidth)",
                line_no=i + 1,
                line=line,
            )
        if not rows:
            raise ParseError(
                self.name,
                "the table has no rows: the run was cut short",
                line_no=header_at + 1,
                line=lines[header_at],
            )
        if end == len(lines) and not raw.endswith("\n"):
            raise ParseError(
                self.name,
                "the last row is not whole (the output stops inside it)",
                line_no=end,
                line=lines[-1],
            )
        finished = any(ln.strip().startswith(_FINALIZE) for ln in lines[end:])
        if not finished and rows[-1]["bytes"] < (1 << p.max_log):
            last = end - 1 if end < len(lines) else len(lines) - 1
            raise ParseError(
                self.name,
                f"the table stops at {rows[-1]['bytes']:.0f} bytes, before "
                f"{1 << p.max_log} bytes, and MPI did not finalize: the run was cut short",
                line_no=last + 1,
                line=lines[last],
            )
        best = min(rows, key=lambda r: r["latency_us"])
        peak = max(rows, key=lambda r: r["bandwidth_mbs"])
        if best["latency_us"] <= 0:
            at = header_at + 1 + rows.index(best)
            raise ParseError(
                self.name,
                "a one-way time of 0.00 us: too short to be measured at this precision",
                line_no=at + 1,
                line=lines[at],
            )
        if peak["bandwidth_mbs"] <= 0:
            raise ParseError(
                self.name,
                "no row shows any bandwidth (every Mbytes/sec is 0)",
                line_no=header_at + 1,
                line=lines[header_at],
            )
        metrics = {
            "latency_min_us": best["latency_us"],
            "bandwidth_peak_mbs": peak["bandwidth_mbs"],
            "bandwidth_peak_bytes": peak["bytes"],
            "max_bytes": rows[-1]["bytes"],
        }
        return Result(
            headline="latency_min_us",
            metrics=metrics,
            units={
                "latency_min_us": "us",
                "bandwidth_peak_mbs": "MB/s",
                "bandwidth_peak_bytes": "B",
                "max_bytes": "B",
                "bytes": "B",
                "latency_us": "us",
                "bandwidth_mbs": "MB/s",
            },
            higher_is_better={"latency_min_us": False},
            series_x="bytes",
            series=rows,
            summary=(
                f"{best['latency_us']:.2f} us one-way latency (at {best['bytes']:.0f} B), "
                f"peak {peak['bandwidth_mbs']:.0f} MB/s (at {peak['bytes']:.0f} B)"
            ),
        )


registry.register(MpiPingPong())
