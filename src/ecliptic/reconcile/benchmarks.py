"""The benchmark reconciler: place a run's servers, run its tool, keep the figures, clean up.

PENDING → PROVISIONING (servers and network placed, in one transaction, when it is the run's
turn) → RUNNING (every server ACTIVE: the tool runs in a thread of its own, so a worker is
never held for the length of a measurement) → CLEANING (outcome and figures stored; what
the run made is deleted) → SUCCEEDED or FAILED.

Crash safety: a run found RUNNING with no thread of this process measuring it (``ecliptic
serve`` was killed mid-run, or restarted) is failed as interrupted and cleaned up; its
servers' ids are in its status since the transaction that made them, so nothing leaks.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from ecliptic import faults
from ecliptic.backends.base import Backend, BackendError, ServiceSpec
from ecliptic.errors import EclipticError
from ecliptic.perf.errors import ParseError, RunFailed, Unsupported
from ecliptic.perf.kinds import registry
from ecliptic.perf.kinds.base import Completed, NetworkMode, Result
from ecliptic.perf.spec import BenchmarkSpec
from ecliptic.phases import BenchmarkPhase, ServerPhase
from ecliptic.procs import pid_exists
from ecliptic.reconcile import teardown
from ecliptic.reconcile.base import Context, Outcome, reconciler
from ecliptic.services import benchmarks as svc
from ecliptic.services.caller import acting_for
from ecliptic.store.models import Benchmark, Network, Port, Server
from ecliptic.store.transitions import move, note
from ecliptic.store.types import utcnow

log = logging.getLogger(__name__)

KIND = svc.KIND
WAIT_POLL_S = 0.05
TURN_POLL_S = 2.0
"""How often the run that is next up looks whether the one measuring is done."""
QUEUED_POLL_S = 300.0
"""How often the other waiting runs look (a safety net: each is woken when it is next up).
Every look takes the placement lock, so a thousand runs looking every TURN_POLL_S would
hold up every tenancy's servers and networks."""
AFTER_S = 10.0
"""What a command gets once its run is over (cancelled, or past its ``timeout_s``): long
enough to remove what the kind left behind, not to measure."""
MARK = "ECLIPTIC_BENCHMARK"
"""An environment variable every process of a run is started with (``MARK=<run id>``): how
what it left in a platform's servers is found and stopped when the run is over."""
CLEAN_POLL_S = 0.05
TOOL_POLL_S = 0.5
MAX_RAW = 4 << 20
"""Raw output kept per run (its end is kept when longer)."""
STOP_GRACE_S = 0.0
"""A run's own servers are disposable once it is over: no grace before SIGKILL."""

_RUNNING: dict[str, threading.Thread] = {}
_RUNNING_LOCK = threading.Lock()


@reconciler(KIND)
def reconcile_benchmark(ctx: Context, benchmark_id: str) -> Outcome:
    """Move a run one step towards its end."""
    with ctx.db.read() as session:
        row = session.get(Benchmark, benchmark_id)
        if row is None:
            return Outcome()
        phase = row.phase
    if phase == BenchmarkPhase.PENDING:
        return _pending(ctx, benchmark_id)
    if phase == BenchmarkPhase.PROVISIONING:
        return _provisioning(ctx, benchmark_id)
    if phase == BenchmarkPhase.RUNNING:
        return _running(ctx, benchmark_id)
    if phase == BenchmarkPhase.CLEANING:
        return _cleaning(ctx, benchmark_id)
    return Outcome()


def _pending(ctx: Context, benchmark_id: str) -> Outcome:
    with ctx.db.read() as session:
        row = session.get(Benchmark, benchmark_id)
        if row is None or row.phase != BenchmarkPhase.PENDING:
            return Outcome()
        if not svc.my_turn(session, row):  # looked at without the placement lock
            soon = svc.next_up(session) == benchmark_id
            return Outcome(requeue_after=TURN_POLL_S if soon else QUEUED_POLL_S)
        caller = acting_for(session, row.tenancy_id, row.created_by, "benchmark")
    try:
        started = svc.provision(
            ctx.booking, ctx.queue, caller, benchmark_id, ctx.backend.used_ranges
        )
    except EclipticError as e:  # no capacity, no quota, a platform gone: nothing was made
        with ctx.db.write() as session:
            row = session.get(Benchmark, benchmark_id)
            if row is not None and row.phase == BenchmarkPhase.PENDING:
                row.finished_at = utcnow()
                move(session, row, BenchmarkPhase.FAILED, f"cannot place it: {e.message}")
                svc.set_finished(session, ctx.queue, row)
        return Outcome()
    if not started:  # another run got there first
        return Outcome(requeue_after=TURN_POLL_S)
    faults.point("reconcile.benchmark.provisioned")
    return Outcome(requeue_after=WAIT_POLL_S)


def _fail_to_clean(session: Any, ctx: Context, row: Benchmark, why: str) -> None:
    row.status = {**row.status, "outcome": BenchmarkPhase.FAILED, "outcome_reason": why}
    row.finished_at = utcnow()
    move(session, row, BenchmarkPhase.CLEANING, why)
    ctx.queue.enqueue(session, KIND, row.id)


def _provisioning(ctx: Context, benchmark_id: str) -> Outcome:
    with ctx.db.write() as session:
        row = session.get(Benchmark, benchmark_id)
        if row is None or row.phase != BenchmarkPhase.PROVISIONING:
            return Outcome()
        spec = BenchmarkSpec.model_validate(row.spec)
        servers = _servers(session, row)
        problem = _not_ready(session, row, spec, servers)
        if problem is not None:
            waited = (utcnow() - (svc.since(row, "provisioning_since") or utcnow())).total_seconds()
            if problem.startswith("!") or waited > spec.timeout_s:
                why = problem.lstrip("!")
                if not problem.startswith("!"):
                    why = f"not ready after {spec.timeout_s:g} s (timeout_s): {why}"
                _fail_to_clean(session, ctx, row, why)
                return Outcome()
            row.phase_reason = problem
            return Outcome(requeue_after=WAIT_POLL_S)
        row.started_at = utcnow()
        row.status = {**row.status, "runner": {"pid": os.getpid()}}
        move(session, row, BenchmarkPhase.RUNNING, f"running {spec.kind}")
    _start_thread(ctx, benchmark_id)
    return Outcome(requeue_after=min(spec.timeout_s, 30.0) + 0.01)  # to watch the timeout


def _servers(session: Any, row: Benchmark) -> list[Server]:
    """The run's servers in index order (a platform's: login first, then by name)."""
    plat = svc.platform_of(session, row)
    if plat is not None:
        rows = list(session.scalars(select(Server).where(Server.platform_id == plat.id)))
        order = {"login": 0, "controller": 1}
        return sorted(
            rows,
            key=lambda s: (
                order.get(str((s.spec or {}).get("platform", {}).get("role")), 2),
                s.name,
            ),
        )
    ids = (row.status or {}).get("servers", [])
    found = {s.id: s for s in session.scalars(select(Server).where(Server.id.in_(ids)))}
    return [found[i] for i in ids if i in found]


def _not_ready(
    session: Any, row: Benchmark, spec: BenchmarkSpec, servers: list[Server]
) -> str | None:
    """Why the run cannot start yet (``!``: and never will), None when it can."""
    if spec.platform is not None:
        plat = svc.platform_of(session, row)
        if plat is None:
            return f"!platform '{spec.platform}' is gone"
        if not servers:
            return f"!platform '{spec.platform}' has no servers"
        need = 2 if spec.network != "host" else 1
        if spec.kind != "slurm_job" and len(servers) < need:
            return f"!platform '{spec.platform}' has {len(servers)} server(s); {need} needed"
    else:
        want = len((row.status or {}).get("servers", []))
        if len(servers) < want:
            return "!a server of the run was deleted"
    for srv in servers:
        if srv.phase == ServerPhase.ERROR:
            return f"!server {srv.name} failed: {srv.phase_reason}"
        if srv.phase == ServerPhase.DELETING:
            return f"!server {srv.name} is being deleted"
        if srv.phase != ServerPhase.ACTIVE:
            return f"waiting for server {srv.name} ({srv.phase})"
    return None


# ------------------------------------------------------------------------------ the run


def _start_thread(ctx: Context, benchmark_id: str) -> None:
    with _RUNNING_LOCK:
        if benchmark_id in _RUNNING and _RUNNING[benchmark_id].is_alive():
            return
        t = threading.Thread(
            target=_measure, args=(ctx, benchmark_id), name=f"ecliptic-bench-{benchmark_id[:8]}"
        )
        t.daemon = True
        _RUNNING[benchmark_id] = t
        t.start()


def _running(ctx: Context, benchmark_id: str) -> Outcome:
    """A RUNNING run looked at by a worker: fine while its thread measures; interrupted when
    no thread measures it (the process that ran it died)."""
    with _RUNNING_LOCK:
        t = _RUNNING.get(benchmark_id)
        measuring = t is not None and t.is_alive()
    with ctx.db.write() as session:
        row = session.get(Benchmark, benchmark_id)
        if row is None or row.phase != BenchmarkPhase.RUNNING:
            return Outcome()
        spec = BenchmarkSpec.model_validate(row.spec)
        left = spec.timeout_s - (utcnow() - (row.started_at or utcnow())).total_seconds()
        if left <= 0:  # its servers go, which ends the tool; the thread's outcome is dropped
            _fail_to_clean(session, ctx, row, f"timed out after {spec.timeout_s:g} s (timeout_s)")
            return Outcome()
        if measuring:
            return Outcome(requeue_after=min(left, 30.0) + 0.01)
        runner = (row.status or {}).get("runner", {})
        pid = runner.get("pid")
        if pid not in (None, os.getpid()) and pid_exists(pid):
            return Outcome(requeue_after=min(left, 5.0) + 0.01)  # another process measures it
        _fail_to_clean(
            session,
            ctx,
            row,
            "interrupted: the process running it stopped mid-run (was 'ecliptic serve' "
            "restarted?); its servers are removed; submit it again",
        )
    return Outcome()


class BackendTarget:
    """A run's servers as a kind sees them, over the backend."""

    def __init__(
        self,
        backend: Backend,
        network: NetworkMode,
        servers: list[tuple[str, str, str, str]],
        progress: Callable[[str], None],
        *,
        mark: str = "",
        deadline: float = float("inf"),
        over: Callable[[], bool] = lambda: False,
    ) -> None:
        """``servers``: (id, name, address, interface) in index order; ``mark``: the run's
        id, in the environment of everything started (:data:`MARK`); ``deadline``: the
        ``time.monotonic()`` the run must end by; ``over``: whether it was cancelled."""
        self.backend = backend
        self.network = network
        self.servers = servers
        self.count = len(servers)
        self._progress = progress
        self._started: dict[tuple[int, str], str] = {}
        self._env = {MARK: mark} if mark else {}
        self.deadline = deadline
        self._over = over

    def ended(self) -> str | None:
        """Why the run may start nothing more (cancelled, out of time), None while it may."""
        if self._over():
            return "cancelled"
        if time.monotonic() >= self.deadline:
            return "out of time"
        return None

    def _pick(self, index: int) -> tuple[str, str, str, str]:
        if self.network == "host":
            index = 0
        if not 0 <= index < len(self.servers):
            raise RunFailed(f"the run has {len(self.servers)} server(s); server {index} asked for")
        return self.servers[index]

    def address(self, index: int) -> str:
        return "127.0.0.1" if self.network == "host" else self._pick(index)[2]

    def interface(self, index: int) -> str:
        return "lo" if self.network == "host" else self._pick(index)[3]

    def run(
        self, index: int, argv: list[str], *, timeout: float, stdin: bytes | None = None
    ) -> Completed:
        sid = self._pick(index)[0]
        # Once the run is over a command only gets the time to tidy up (the kinds' finally
        # blocks remove files and stop what they started).
        left = AFTER_S if self.ended() else max(self.deadline - time.monotonic(), AFTER_S)
        r = self.backend.run(sid, argv, timeout=min(timeout, left), stdin=stdin, env=self._env)
        return Completed(
            exit_code=r.exit_code,
            stdout=r.stdout.decode(errors="replace"),
            stderr=r.stderr.decode(errors="replace"),
            duration_s=r.duration_s,
            timed_out=r.timed_out,
        )

    def start(self, index: int, name: str, argv: list[str]) -> None:
        sid = self._pick(index)[0]
        why = self.ended()
        if why is not None:
            raise RunFailed(f"the run is over ({why}): {argv[0]} is not started")
        mark = self.backend.console_read(sid, after=-1, limit=1)[1]
        self._started[(index, name)] = str(mark)
        spec = ServiceSpec(name=name, argv=tuple(argv), env=tuple(self._env.items()))
        st = self.backend.start_service(sid, spec)
        faults.point("reconcile.benchmark.tool_started")
        if not st.running:
            raise RunFailed(
                f"{argv[0]} did not start in {self._pick(index)[1]}: {self.log(index, name)[-500:]}"
            )

    def stop(self, index: int, name: str) -> None:
        self.backend.stop_service(self._pick(index)[0], name)

    def log(self, index: int, name: str) -> str:
        sid = self._pick(index)[0]
        after = int(self._started.get((index, name), "0"))
        text, _ = self.backend.console_read(sid, after=after, limit=1 << 20)
        return text

    def rdma_devices(self, index: int) -> list[str]:
        r = self.run(index, ["ls", "-1", "/sys/class/infiniband"], timeout=10)
        return [line for line in r.stdout.split() if line] if r.exit_code == 0 else []

    def progress(self, message: str) -> None:
        self._progress(message)


def _target(ctx: Context, benchmark_id: str) -> tuple[BenchmarkSpec, BackendTarget, dict[str, Any]]:
    with ctx.db.read() as session:
        row = session.get(Benchmark, benchmark_id)
        assert row is not None
        spec = BenchmarkSpec.model_validate(row.spec)
        began = svc.since(row, "provisioning_since") or row.started_at or utcnow()
        deadline = time.monotonic() + spec.timeout_s - (utcnow() - began).total_seconds()
        servers = _servers(session, row)
        plat = svc.platform_of(session, row)
        fabric = f"{plat.name}-fabric" if plat else None
        entries = []
        hosts = []
        for srv in servers:
            ports = list(session.scalars(select(Port).where(Port.server_id == srv.id)))
            nets = {
                n.id: n.name
                for n in session.scalars(
                    select(Network).where(Network.id.in_([p.network_id for p in ports]))
                )
            }
            if spec.network == "direct":
                cands = [p for p in ports if p.vnic_type == "direct"]
                if fabric:
                    cands = [p for p in cands if nets.get(p.network_id) == fabric] or cands
            else:
                cands = [p for p in ports if p.vnic_type != "direct"]
            port = min(cands, key=lambda p: p.device_index, default=None)
            if port is None and spec.network != "host":
                raise Unsupported(
                    f"server {srv.name} has no {'direct' if spec.network == 'direct' else 'normal'}"
                    f" port to measure the {spec.network} network on"
                )
            if spec.network == "host" or port is None:
                ifname, address = "lo", "127.0.0.1"
            else:
                ifname, address = str((port.status or {}).get("ifname", "")), port.ip_address
            entries.append((srv.id, srv.name, address, ifname))
            hosts.append(
                {
                    "server": srv.name,
                    "id": srv.id,
                    "host": srv.host.name if srv.host else None,
                    "flavor": srv.flavor.name,
                    "vcpus": srv.flavor.vcpus,
                    "interface": ifname,
                    "address": address,
                }
            )

    if spec.network == "host":  # both ends in the first server
        entries, hosts = entries[:1], hosts[:1]

    def progress(message: str) -> None:
        with ctx.db.write() as session:
            row = session.get(Benchmark, benchmark_id)
            if row is not None and row.phase == BenchmarkPhase.RUNNING:
                note(session, row, message)

    def over() -> bool:
        with ctx.db.read() as session:
            row = session.get(Benchmark, benchmark_id)
            return row is None or row.phase != BenchmarkPhase.RUNNING

    target = BackendTarget(
        ctx.backend,
        spec.network,
        entries,
        progress,
        mark=benchmark_id,
        deadline=deadline,
        over=over,
    )
    return spec, target, {"servers": hosts}


def _environment(target: BackendTarget, tools: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    env: dict[str, Any] = {}
    for key, argv in (("kernel", ["uname", "-srm"]), ("hostname", ["hostname"])):
        try:
            r = target.run(0, argv, timeout=10)
            env[key] = r.stdout.strip()
        except BackendError as e:
            env[key] = f"unknown ({e})"
    versions = {}
    for tool in tools:
        try:
            r = target.run(0, list(tool), timeout=10)
            text = (r.stdout or r.stderr).strip().splitlines()
            versions[tool[0]] = text[0][:200] if text else f"exit {r.exit_code}"
        except BackendError as e:
            versions[tool[0]] = f"unknown ({e})"
    env["tools"] = versions
    return env


def _measure(ctx: Context, benchmark_id: str) -> None:
    """The run's thread: shape links, run the tool, read its output, record the outcome."""
    raw = ""
    result: Result | None = None
    env: dict[str, Any] = {}
    outcome, why = BenchmarkPhase.FAILED, "did not run"
    shaped: list[tuple[str, str]] = []
    target: BackendTarget | None = None
    timeout_s = 0.0
    try:
        spec, target, env = _target(ctx, benchmark_id)
        timeout_s = spec.timeout_s
        kind = registry.find(spec.kind)
        env |= _environment(target, kind.tools)
        env["network"] = spec.network
        if spec.shaping is not None:
            _remember_shaping(ctx, benchmark_id, target)
            for sid, _name, _, ifname in target.servers:
                ctx.backend.shape(
                    sid, ifname, spec.shaping.rate, spec.shaping.burst, spec.shaping.latency_ms
                )
                shaped.append((sid, ifname))
            env["shaping"] = spec.shaping.model_dump()
        params = spec.kind_params()
        raw = kind.execute(params, target)
        result = kind.parse(raw, params)
        outcome, why = BenchmarkPhase.SUCCEEDED, result.summary or "done"
    except ParseError as e:
        why = e.message
    except EclipticError as e:  # RunFailed, Unsupported, a refusal of the services
        why = e.message
    except BackendError as e:
        why = f"the servers failed: {e}"
    except Exception as e:  # a bug: the run fails with it and is cleaned up
        log.exception("benchmark %s: unexpected error", benchmark_id)
        why = f"internal error: {type(e).__name__}: {e}"
    finally:
        if (
            outcome != BenchmarkPhase.SUCCEEDED
            and target is not None
            and time.monotonic() >= target.deadline
        ):
            why = f"timed out: the run took longer than its timeout_s ({timeout_s:g} s); {why}"
        for sid, ifname in shaped:
            try:
                ctx.backend.shape(sid, ifname, None)
            except BackendError as e:
                log.warning("benchmark %s: unshaping %s: %s", benchmark_id, sid, e)
        try:
            _record(ctx, benchmark_id, outcome, why, raw, result, env)
        except Exception as e:  # the outcome could not be written: fail it plainly
            log.exception("benchmark %s: recording the outcome", benchmark_id)
            _record(ctx, benchmark_id, BenchmarkPhase.FAILED, f"internal error: {e}", "", None, {})
        finally:
            with _RUNNING_LOCK:
                _RUNNING.pop(benchmark_id, None)


def _remember_shaping(ctx: Context, benchmark_id: str, target: BackendTarget) -> None:
    """Record the links about to be shaped, so that cleaning unshapes them even when this
    process dies mid-run (a platform's links would otherwise stay slow)."""
    with ctx.db.write() as session:
        row = session.get(Benchmark, benchmark_id)
        if row is not None:
            links = [[sid, ifname] for sid, _, _, ifname in target.servers]
            row.status = {**row.status, "shaped": links}


def _record(
    ctx: Context,
    benchmark_id: str,
    outcome: str,
    why: str,
    raw: str,
    result: Result | None,
    env: dict[str, Any],
) -> None:
    with ctx.db.write() as session:
        row = session.get(Benchmark, benchmark_id)
        if row is None or row.phase != BenchmarkPhase.RUNNING:
            return  # cancelled meanwhile: its cleaning is under way
        if len(raw) > MAX_RAW:
            raw = f"[first {len(raw) - MAX_RAW} characters left out]\n" + raw[-MAX_RAW:]
        row.raw_output = raw
        row.result = result.model_dump(mode="json") if result is not None else None
        row.environment = env
        row.finished_at = utcnow()
        row.status = {**row.status, "outcome": outcome, "outcome_reason": why}
        move(session, row, BenchmarkPhase.CLEANING, why)
        ctx.queue.enqueue(session, KIND, benchmark_id)


# ------------------------------------------------------------------------------ cleaning


_STOP_MARKED = (
    'for d in /proc/[0-9]*; do if tr "\\0" "\\n" < "$d/environ" 2>/dev/null | grep -qxF "$1"; '
    'then kill -KILL "${d#/proc/}" 2>/dev/null; fi; done; true'
)
"""Kill every process whose environment holds ``$1`` (``MARK=<run id>``)."""


def _tidy_platform(ctx: Context, benchmark_id: str) -> None:
    """Once, for a run on a platform (whose servers outlive it): stop every process the run
    started in them (a cancelled tool, a server or sshd left by a process that died mid-run,
    a batch job's script) and take off the shaping it put on their links."""
    with ctx.db.read() as session:
        row = session.get(Benchmark, benchmark_id)
        if row is None or (row.status or {}).get("tidied") or svc.platform_of(session, row) is None:
            return
        ids = [s.id for s in _servers(session, row) if s.phase == ServerPhase.ACTIVE]
        shaped = [(sid, ifname) for sid, ifname in (row.status or {}).get("shaped", [])]
    for sid in ids:
        try:
            ctx.backend.run(
                sid, ["/bin/sh", "-c", _STOP_MARKED, "sh", f"{MARK}={benchmark_id}"], timeout=30
            )
        except BackendError as e:
            log.warning("benchmark %s: stopping its processes in %s: %s", benchmark_id, sid, e)
    for sid, ifname in shaped:
        if sid in ids:
            try:
                ctx.backend.shape(sid, ifname, None)
            except BackendError as e:
                log.warning("benchmark %s: unshaping %s: %s", benchmark_id, sid, e)
    with ctx.db.write() as session:
        row = session.get(Benchmark, benchmark_id)
        if row is not None:
            row.status = {**row.status, "tidied": True}


def _cleaning(ctx: Context, benchmark_id: str) -> Outcome:
    """Delete what the run made (never a platform's servers), then settle its phase."""
    with ctx.db.write() as session:
        row = session.get(Benchmark, benchmark_id)
        if row is None or row.phase != BenchmarkPhase.CLEANING:
            return Outcome()
        ids = (row.status or {}).get("servers", [])
        servers = list(session.scalars(select(Server).where(Server.id.in_(ids)))) if ids else []
        going = teardown.servers_going(
            ctx, session, servers, f"benchmark '{row.name}' is over", STOP_GRACE_S
        )
        if servers:
            row.phase_reason = f"removing {len(servers)} server(s)"
    if going:
        teardown.delete_now(ctx, going, STOP_GRACE_S, f"benchmark {benchmark_id}")
        return Outcome(requeue_after=CLEAN_POLL_S)
    _tidy_platform(ctx, benchmark_id)
    with _RUNNING_LOCK:
        thread = _RUNNING.get(benchmark_id)
    if thread is not None and thread.is_alive():
        # The tool still runs (a cancelled run on a platform, whose servers stay): the
        # next run must not measure alongside it. It was stopped; its thread ends soon.
        with ctx.db.write() as session:
            row = session.get(Benchmark, benchmark_id)
            if row is not None and row.phase == BenchmarkPhase.CLEANING:
                row.phase_reason = "waiting for the tool to stop"
        return Outcome(requeue_after=TOOL_POLL_S)
    with ctx.db.write() as session:
        row = session.get(Benchmark, benchmark_id)
        if row is None or row.phase != BenchmarkPhase.CLEANING:
            return Outcome()
        net_ids = (row.status or {}).get("networks", [])
        nets = (
            list(session.scalars(select(Network).where(Network.id.in_(net_ids)))) if net_ids else []
        )
        teardown.networks_going(ctx, session, nets, f"benchmark '{row.name}' is over")
        if nets:
            row.phase_reason = f"removing {len(nets)} network(s)"
            return Outcome(requeue_after=CLEAN_POLL_S)
        group_name = (row.status or {}).get("group")
        if group_name:
            teardown.drop_group(ctx, session, row.tenancy_id, group_name)
        outcome = (row.status or {}).get("outcome", BenchmarkPhase.FAILED)
        why = (row.status or {}).get("outcome_reason", "")
        row.finished_at = row.finished_at or utcnow()
        move(session, row, outcome, why)
        svc.set_finished(session, ctx.queue, row)
    return Outcome()
