"""Converge a platform: its servers, its steps, its daemons, its tunnels; or remove it.

Level-triggered: every pass compares what the type asks for with what exists. A step runs
on a server when what it would do there (its files, script, daemons' commands, ``watch``)
differs from what last succeeded there, so adding a node re-runs exactly the steps whose
files name the nodes. Daemons that died are started again; a service without a healthy
tunnel makes the platform DEGRADED until it has one.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ecliptic import faults, hostkeys
from ecliptic.backends.base import BackendError, ServiceSpec
from ecliptic.errors import EclipticError
from ecliptic.phases import LeasePhase, PlatformPhase, PortPhase, ServerPhase
from ecliptic.platforms.templates import TemplateError, evaluate, render
from ecliptic.platforms.types import (
    ARCHIVE_SUFFIXES,
    REQUIREMENT,
    Daemon,
    File,
    PlatformType,
    Step,
)
from ecliptic.reconcile import teardown
from ecliptic.reconcile.base import Context, Outcome, reconciler
from ecliptic.services import platform_tunnels as tunnels
from ecliptic.services import security_groups
from ecliptic.services.caller import Caller, acting_for
from ecliptic.services.gateway import host_key
from ecliptic.services.networks import IPAM_LOCK
from ecliptic.services.platforms import (
    Planned,
    add_servers,
    open_secrets,
    plan,
    seal_secrets,
    type_of,
)
from ecliptic.store.models import (
    DeletedServer,
    Lease,
    Network,
    Platform,
    Server,
    UserSshKey,
)
from ecliptic.store.transitions import move, note, removed

log = logging.getLogger("ecliptic.platforms")
WATCH_S = 5.0
"""How often a built platform is looked at (daemons alive, tunnels healthy)."""
RETRY_S = 1.0
"""When a server of the platform was being restarted, how soon to look again."""
WAIT_S = 0.25
DELETE_POLL_S = 0.1
"""How often a deleting platform looks whether its servers and networks are gone."""
"""How often a platform waiting for its servers or tunnels looks again."""
TUNNEL_WAIT = timedelta(seconds=60)
"""How long a service may take to get its first healthy tunnel before it counts as down."""
STOP_GRACE_S = 0.5
"""Between SIGTERM and SIGKILL for the processes of a deleted platform's servers."""
WHEELS_MAX_BYTES = 256 * 1024 * 1024
"""Most PyPI wheels (bytes) one step fetches for its servers."""
OUTPUT_KEEP = 8192
"""Bytes of a failed step's output kept for the user."""
TUNNEL_DIR = "/etc/ecliptic/tunnels"
GATEWAY_ALIAS = "ecliptic-gateway"


@dataclass(frozen=True)
class Member:
    """One server of the platform as templates and steps see it."""

    id: str
    name: str
    role: str
    index: int
    address: str
    fabric_address: str
    gateway: str
    """The host's address on the server's platform network (the gateway's, from inside)."""
    vcpus: int = 1
    memory_mb: int = 512

    def fact(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "index": self.index,
            "address": self.address,
            "fabric_address": self.fabric_address,
            "gateway": self.gateway,
            "vcpus": self.vcpus,
            "memory_mb": self.memory_mb,
        }


@reconciler("platform")
def reconcile_platform(ctx: Context, platform_id: str) -> Outcome:
    """Build, configure, watch or remove one platform."""
    now = ctx.booking.clock.now()
    with ctx.db.read() as session:
        row = session.get(Platform, platform_id)
        if row is None:
            return Outcome()
        phase = row.phase
        lease = session.get(Lease, row.lease_id) if row.lease_id else None
        lease_gone = row.lease_id is not None and lease is None
    if phase == PlatformPhase.DELETING:
        return _delete(ctx, platform_id)
    if lease_gone or (lease is not None and lease.phase == LeasePhase.ENDED):
        return _to_deleting(ctx, platform_id, "its lease ended")
    if lease is not None and lease.phase in (LeasePhase.ENDING, LeasePhase.ERROR):
        deadline = lease.end_at + timedelta(seconds=lease.grace_s)
        if lease.phase == LeasePhase.ERROR or now >= deadline:
            return _to_deleting(ctx, platform_id, f"lease '{lease.name}' ended")
        _note_once(
            ctx,
            platform_id,
            "lease_ending",
            f"lease '{lease.name}' ended: this platform is deleted at "
            f"{deadline:%Y-%m-%d %H:%M:%S} UTC (the grace period)",
        )
        return Outcome(requeue_after=max(0.2, (deadline - now).total_seconds()))
    if lease is not None and lease.before_end_at is not None and now >= lease.before_end_at:
        _note_once(
            ctx,
            platform_id,
            f"lease_warned:{lease.end_at.isoformat()}",
            f"lease '{lease.name}' ends at {lease.end_at:%Y-%m-%d %H:%M} UTC: this platform is "
            "deleted then; extend the lease to keep it ('ecliptic lease update --extend')",
        )
    if phase == PlatformPhase.FAILED:
        return Outcome()  # until a retry, a patch or a delete
    try:
        return _converge(ctx, platform_id)
    except _Failed as exc:
        _fail(ctx, platform_id, str(exc), exc.detail)
        return Outcome()
    except _Gone as exc:
        return _to_deleting(ctx, platform_id, str(exc))
    except _Retry as exc:
        with ctx.db.write() as session:
            row = session.get(Platform, platform_id)
            if row is not None:
                row.phase_reason = f"retrying: {exc}"
        return Outcome(requeue_after=RETRY_S)


class _Retry(Exception):
    """Something passing got in the way (a server restarting): look again in a moment."""


class _Gone(Exception):
    """A preemptible platform lost a server: it is deleted, saying why."""


class _Failed(Exception):
    """The platform cannot go on until a user acts (retry, patch, delete)."""

    def __init__(self, message: str, detail: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.detail = detail or {}


def _to_deleting(ctx: Context, platform_id: str, why: str) -> Outcome:
    with ctx.db.write() as session:
        row = session.get(Platform, platform_id)
        if row is not None and row.phase != PlatformPhase.DELETING:
            move(session, row, PlatformPhase.DELETING, why)
    return Outcome(requeue_after=0)


def _note_once(ctx: Context, platform_id: str, key: str, text: str) -> None:
    with ctx.db.write() as session:
        row = session.get(Platform, platform_id)
        if row is None:
            return
        noted = list((row.status or {}).get("noted", []))
        if key in noted:
            return
        row.status = {**(row.status or {}), "noted": [*noted, key][-20:]}
        note(session, row, text)


def _set_phase(ctx: Context, platform_id: str, phase: str, why: str) -> None:
    with ctx.db.write() as session:
        row = session.get(Platform, platform_id)
        if row is not None and row.phase not in (PlatformPhase.DELETING, PlatformPhase.FAILED):
            move(session, row, phase, why)


def _event(ctx: Context, platform_id: str, text: str) -> None:
    with ctx.db.write() as session:
        row = session.get(Platform, platform_id)
        if row is not None:
            keep = row.phase_reason
            note(session, row, text)
            row.phase_reason = keep


def _fail(ctx: Context, platform_id: str, why: str, detail: dict[str, Any]) -> None:
    with ctx.db.write() as session:
        row = session.get(Platform, platform_id)
        if row is None or row.phase == PlatformPhase.DELETING:
            return
        row.status = {**(row.status or {}), "failed": detail or {"reason": why}}
        move(session, row, PlatformPhase.FAILED, why)


def _caller(session: Any, row: Platform) -> Caller:
    """The platform's creator, acting in its tenancy (servers made later are theirs too)."""
    return acting_for(session, row.tenancy_id, row.created_by, "platform")


# ------------------------------------------------------------------------------ servers


def _ensure_servers(ctx: Context, platform_id: str) -> tuple[list[Member], list[Member]] | None:
    """The platform's servers, once every wanted one is ACTIVE (None while they build);
    servers no longer wanted come back second, to be drained and removed."""
    with ctx.db.read() as session:
        row = session.get(Platform, platform_id)
        assert row is not None
        ptype = type_of(row)
        wanted = plan(ptype, row.spec["parameters"], row.name)
        have = list(session.scalars(select(Server).where(Server.platform_id == platform_id)))
        preemptible = bool(row.spec.get("preemptible"))
        tenancy_id, since = row.tenancy_id, row.created_at
    names = {s.name for s in have}
    missing = [w for w in wanted if w.name not in names]
    if missing and preemptible:
        # A preemptible platform whose server went (a lease took the room) goes with it:
        # its room is not there to make the server again.
        with ctx.db.read() as session:
            gone = session.scalar(
                select(DeletedServer)
                .where(
                    DeletedServer.tenancy_id == tenancy_id,
                    DeletedServer.name.in_([m.name for m in missing]),
                    DeletedServer.deleted_at >= since,
                )
                .order_by(DeletedServer.deleted_at.desc())
                .limit(1)
            )
            if gone is not None:
                raise _Gone(f"its server {gone.name} went: {gone.reason}")
    if missing:
        _add(ctx, platform_id, missing)
        return None
    wanted_names = {w.name for w in wanted}
    errors = [s for s in have if s.name in wanted_names and s.phase == ServerPhase.ERROR]
    if errors:
        s = errors[0]
        raise _Failed(f"server '{s.name}' is in ERROR: {s.phase_reason}")
    if any(s.phase != ServerPhase.ACTIVE for s in have if s.name in wanted_names):
        return None
    with ctx.db.read() as session:
        # Servers already going (scaled down earlier) are neither members nor drained again.
        members = [_member(session, s) for s in have if s.phase != ServerPhase.DELETING]
    keep = [m for m in members if m.name in wanted_names]
    order = {w.name: i for i, w in enumerate(wanted)}
    keep.sort(key=lambda m: order[m.name])
    return keep, [m for m in members if m.name not in wanted_names]


def _member(session: Any, srv: Server) -> Member:
    meta = srv.spec.get("platform", {})
    normal = [p for p in srv.ports if p.vnic_type != "direct"]
    direct = [p for p in srv.ports if p.vnic_type == "direct"]
    return Member(
        id=srv.id,
        name=srv.name,
        role=str(meta.get("role", "")),
        index=int(meta.get("index", 0)),
        address=normal[0].ip_address if normal else "",
        fabric_address=direct[0].ip_address if direct else "",
        gateway=normal[0].subnet.gateway_ip if normal else "",
        vcpus=srv.vcpus,
        memory_mb=int(srv.memory_mb),
    )


def _add(ctx: Context, platform_id: str, missing: list[Planned]) -> None:
    try:
        with ctx.booking.transaction(IPAM_LOCK) as (session, engine):
            row = session.get(Platform, platform_id)
            if row is None:
                return
            add_servers(
                session,
                engine,
                ctx.booking,
                ctx.queue,
                _caller(session, row),
                row,
                missing,
                ctx.backend.used_ranges,
            )
            note(session, row, f"making server(s) {', '.join(m.name for m in missing)}")
            faults.point("reconcile.platform.adding_servers")
    except EclipticError as exc:
        names = ", ".join(m.name for m in missing)
        raise _Failed(f"cannot place server(s) {names}: {exc}") from None


def _remove(ctx: Context, platform_id: str, leaving: list[Member]) -> None:
    with ctx.db.write() as session:
        for m in leaving:
            srv = session.get(Server, m.id)
            if srv is None or srv.phase == ServerPhase.DELETING:
                continue
            move(session, srv, ServerPhase.DELETING, "removed from its platform (scaled down)")
            for port in srv.ports:
                if port.phase != PortPhase.DELETING:
                    move(session, port, PortPhase.DELETING, "server deletion requested")
            srv.generation += 1
            ctx.queue.enqueue(session, "server", srv.id)
        row = session.get(Platform, platform_id)
        if row is not None:
            note(session, row, f"scaled down: removed {', '.join(m.name for m in leaving)}")
            status = dict(row.status or {})
            done = dict(status.get("done", {}))
            for m in leaving:
                done.pop(m.id, None)
            status["done"] = done
            row.status = status


# ------------------------------------------------------------------------------ context


def _context(
    row: Platform,
    params: Mapping[str, object],
    secrets: Mapping[str, str],
    members: list[Member],
    services: Mapping[str, Mapping[str, str]],
    ssh_keys: list[str],
    leaving: list[Member],
) -> dict[str, Any]:
    roles: dict[str, list[dict[str, Any]]] = {r: [] for r in {m.role for m in members}}
    for m in members:
        roles.setdefault(m.role, []).append(m.fact())
    return {
        "params": dict(params),
        "secrets": {k: v for k, v in secrets.items() if not k.startswith("_")},
        "platform": {
            "name": row.name,
            "id": row.id,
            "ssh_keys": ssh_keys,
            "leaving": [m.fact() for m in leaving],
        },
        "servers": [m.fact() for m in members],
        "roles": roles,
        "services": dict(services),
    }


def _env_name(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.upper())


def _env(ctx_vars: Mapping[str, Any], member: Member) -> dict[str, str]:
    env = {
        "ECLIPTIC_PLATFORM": ctx_vars["platform"]["name"],
        "ECLIPTIC_PLATFORM_ID": ctx_vars["platform"]["id"],
        "ECLIPTIC_SERVER": member.name,
        "ECLIPTIC_ROLE": member.role,
        "ECLIPTIC_INDEX": str(member.index),
        "ECLIPTIC_ADDRESS": member.address,
        "ECLIPTIC_FABRIC_ADDRESS": member.fabric_address,
        "ECLIPTIC_LEAVING": " ".join(m["name"] for m in ctx_vars["platform"]["leaving"]),
    }
    for k, v in ctx_vars["params"].items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        env[f"ECLIPTIC_P_{_env_name(k)}"] = "" if v is None else str(v)
    for k, v in ctx_vars["secrets"].items():
        env[f"ECLIPTIC_SECRET_{_env_name(k)}"] = v
    for role, items in ctx_vars["roles"].items():
        env[f"ECLIPTIC_ROLE_{_env_name(role)}"] = " ".join(i["name"] for i in items)
        env[f"ECLIPTIC_ROLE_{_env_name(role)}_ADDRESSES"] = " ".join(i["address"] for i in items)
    for name, svc in ctx_vars["services"].items():
        env[f"ECLIPTIC_URL_{_env_name(name)}"] = svc.get("url", "")
    return env


# ------------------------------------------------------------------------------ steps


@dataclass(frozen=True)
class Rendered:
    """A step as it will run on one server."""

    files: tuple[tuple[str, bytes, int, str], ...]
    script: str | None
    daemons: tuple[ServiceSpec, ...]
    digest: str
    requirements: tuple[str, ...] = ()
    venv: str = ""


def _render_step(step: Step, ctx_vars: Mapping[str, Any], member: Member) -> Rendered:
    local = {**ctx_vars, "server": member.fact()}
    where = f"step '{step.name}'"
    files = []
    for f in step.files:
        path = render(f.path, local, f"{where}: file path")
        if not path.startswith("/") or "\x00" in path or "/../" in f"{path}/":
            raise TemplateError(f"{where}: file path {path!r} is not an absolute path")
        content = render(f.content, local, f"{where}: file {path}")
        files.append((path, content.encode(), int(f.mode, 8), f.owner))
    daemons = []
    for d in step.daemons:
        argv = tuple(render(a, local, f"{where}: daemon '{d.name}'") for a in d.command)
        env = tuple(
            (k, render(v, local, f"{where}: daemon '{d.name}' env")) for k, v in d.env.items()
        )
        daemons.append(ServiceSpec(name=d.name, argv=argv, env=env, cwd=d.cwd))
    watch = render(step.watch, local, f"{where}: watch") if step.watch else ""
    requirements: tuple[str, ...] = ()
    if step.pip is not None:
        requirements = tuple(render(step.pip.packages, local, f"{where}: pip").split())
        bad = [
            r
            for r in requirements
            if not re.fullmatch(REQUIREMENT, r) or r.lower().endswith(ARCHIVE_SUFFIXES)
        ]
        if bad:
            raise TemplateError(f"{where}: {bad[0]!r} is not a PyPI requirement (name==1.2.3)")
    digest = hashlib.sha256(
        json.dumps(
            [
                [(p, hashlib.sha256(c).hexdigest(), m, o) for p, c, m, o in files],
                step.run,
                [(d.name, d.argv, d.env, d.cwd) for d in daemons],
                watch,
                requirements,
            ]
        ).encode()
    ).hexdigest()[:24]
    venv = step.pip.venv if step.pip is not None else ""
    return Rendered(tuple(files), step.run, tuple(daemons), digest, requirements, venv)


def _tar(files: tuple[tuple[str, bytes, int, str], ...]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dirs: set[str] = set()
        for path, data, mode, owner in files:
            parts = path.strip("/").split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    info = tarfile.TarInfo(d)
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o755
                    tar.addfile(info)
            info = tarfile.TarInfo("/".join(parts))
            info.size = len(data)
            info.mode = mode
            user, _, group = owner.partition(":")
            info.uname, info.gname = user, group or user
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


_UNPACK = (
    # Existing directories keep their owner and mode; files get the ones the type gives.
    "tar -x -f - -C / --no-overwrite-dir --same-owner --same-permissions && "
    'if [ -n "$0" ]; then exec /bin/sh -e -c "$0"; fi'
)


def fetch_wheels(requirements: tuple[str, ...], timeout: float = 600) -> bytes:
    """The wheels of ``requirements`` and their dependencies, fetched from PyPI on the host
    (wheels only: nothing of a package runs here), as a tar stream."""
    for r in requirements:
        if not re.fullmatch(REQUIREMENT, r) or r.lower().endswith(ARCHIVE_SUFFIXES):
            raise _Failed(f"{r!r} is not a PyPI requirement (name==1.2.3)")
    with tempfile.TemporaryDirectory(prefix="ecl-wheels-") as tmp:
        # In an empty folder (a requirement is never a local file) and --isolated (no
        # environment or user configuration): only PyPI's wheels, nothing built here.
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--isolated",
                "--quiet",
                "--disable-pip-version-check",
                "--no-input",
                "--only-binary=:all:",
                "--dest",
                tmp,
                "--",
                *requirements,
            ],
            capture_output=True,
            timeout=timeout,
            check=False,
            cwd=tmp,
        )
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise _Failed(
                f"cannot fetch {' '.join(requirements)} from PyPI: {err[-1] if err else '?'}",
                {"step": "pip", "output": proc.stderr.decode(errors="replace")[-OUTPUT_KEEP:]},
            )
        files = sorted(Path(tmp).iterdir())
        total = sum(f.stat().st_size for f in files)
        if total > WHEELS_MAX_BYTES:
            raise _Failed(
                f"{' '.join(requirements)} come to {total / 1e6:.0f} MB of wheels, more than "
                f"the {WHEELS_MAX_BYTES / 1e6:.0f} MB a platform may install at create: bake "
                "them into an image instead (docs/servers.md)"
            )
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for f in files:
                tar.add(f, arcname=f.name)
        return buf.getvalue()


def _pip_install(
    ctx: Context, member: Member, r: Rendered, wheels: bytes, timeout: float
) -> tuple[bool, str, int]:
    script = (
        "rm -rf /tmp/ecl-wheels && mkdir -p /tmp/ecl-wheels && tar -x -f - -C /tmp/ecl-wheels && "
        '"$0/bin/pip" install --disable-pip-version-check --no-index '
        '--find-links /tmp/ecl-wheels "$@"; rc=$?; rm -rf /tmp/ecl-wheels; exit $rc'
    )
    try:
        res = ctx.backend.run(
            member.id,
            ["/bin/sh", "-c", script, r.venv, *r.requirements],
            timeout=timeout,
            stdin=wheels,
        )
    except BackendError as exc:
        if exc.retryable:
            raise _Retry(f"server {member.name}: {exc}") from None
        return False, str(exc), -1
    out = (res.stdout + res.stderr).decode(errors="replace")
    return res.exit_code == 0, out, res.exit_code


def _run_step(
    ctx: Context,
    member: Member,
    step: Step,
    r: Rendered,
    env: dict[str, str],
    wheels: bytes | None = None,
) -> tuple[bool, str, int, float]:
    """Run one rendered step on one server: (ok, output, exit code, seconds)."""
    start = time.monotonic()
    if wheels is not None and r.requirements:
        ok, out, code = _pip_install(ctx, member, r, wheels, float(step.timeout))
        if not ok:
            return False, out, code, time.monotonic() - start
    if r.files:
        argv = ["/bin/sh", "-c", _UNPACK, r.script or ""]
        stdin: bytes | None = _tar(r.files)
    elif r.script:
        argv, stdin = ["/bin/sh", "-e", "-c", r.script], None
    else:
        return True, "", 0, 0.0
    try:
        res = ctx.backend.run(member.id, argv, timeout=float(step.timeout), stdin=stdin, env=env)
    except BackendError as exc:
        if exc.retryable:  # the server is being restarted: not the step's fault
            raise _Retry(f"server {member.name}: {exc}") from None
        return False, str(exc), -1, time.monotonic() - start
    out = (res.stdout + res.stderr).decode(errors="replace")
    if res.timed_out:
        out += f"\n(timed out after {step.timeout} s)"
    return res.exit_code == 0, out, res.exit_code, res.duration_s


def _steps(ptype: PlatformType, members: list[Member], ctx_vars: Mapping[str, Any]) -> list[Step]:
    """The type's steps that apply, with the platform's own ``hosts`` step first."""
    hosts = "127.0.0.1\tlocalhost\n" + "".join(
        f"{m.address}\t{m.name}\n" for m in members if m.address
    )
    first = Step(
        name="hosts",
        label="Every server knows the others by name",
        roles=tuple(sorted({r.name for r in ptype.roles})),
        files=(File(path="/etc/hosts", content=hosts),),
    )
    out = [first]
    for step in ptype.steps:
        if step.when is None or evaluate(step.when, ctx_vars, f"step '{step.name}': when"):
            out.append(step)
    return out


def _configure(
    ctx: Context,
    platform_id: str,
    steps: list[Step],
    members: list[Member],
    ctx_vars: Mapping[str, Any],
) -> bool:
    """Run every step whose work changed, in order, in parallel over its servers; True if
    something ran. Raises ``_Failed`` with the failing step's output."""
    with ctx.db.read() as session:
        row = session.get(Platform, platform_id)
        assert row is not None
        done: dict[str, dict[str, str]] = {
            k: dict(v) for k, v in (row.status or {}).get("done", {}).items()
        }
    ran = False
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ecliptic-step")
    try:
        for step in steps:
            targets = [m for m in members if m.role in step.roles]
            try:
                work = [(m, _render_step(step, ctx_vars, m)) for m in targets]
            except TemplateError as exc:
                raise _Failed(str(exc), {"step": step.name, "output": str(exc)}) from None
            todo = [(m, r) for m, r in work if done.get(m.id, {}).get(step.name) != r.digest]
            if not todo:
                continue
            if not ran:
                _set_phase(ctx, platform_id, PlatformPhase.CONFIGURING, "configuring")
            ran = True
            started = time.monotonic()
            _event(ctx, platform_id, f"step '{step.name}' started on {_names(todo)}")
            wheels = None
            reqs = sorted({q for _, r in todo for q in r.requirements})
            if reqs:
                t0 = time.monotonic()
                _event(ctx, platform_id, f"step '{step.name}': fetching {' '.join(reqs)}")
                wheels = fetch_wheels(tuple(reqs))
                _event(
                    ctx,
                    platform_id,
                    f"step '{step.name}': fetched {len(wheels) / 1e6:.1f} MB of wheels in "
                    f"{time.monotonic() - t0:.1f} s; installing",
                )
            futures = [
                pool.submit(_run_step, ctx, m, step, r, _env(ctx_vars, m), wheels) for m, r in todo
            ]
            results = [f.result() for f in futures]
            for (m, r), (ok, out, code, _secs) in zip(todo, results, strict=True):
                if not ok:
                    last = next((ln for ln in reversed(out.strip().splitlines()) if ln), "")
                    raise _Failed(
                        f"step '{step.name}' failed on {m.name} (exit {code}): {last[:300]}",
                        {
                            "step": step.name,
                            "server": m.name,
                            "exit_code": code,
                            "output": out[-OUTPUT_KEEP:],
                        },
                    )
                restart = done.get(m.id, {}).get(step.name) is not None
                for d in r.daemons:
                    if restart:
                        ctx.backend.stop_service(m.id, d.name)
                    ctx.backend.start_service(m.id, d)
                done.setdefault(m.id, {})[step.name] = r.digest
            faults.point("reconcile.platform.before_step_recorded")
            _save_done(ctx, platform_id, done)
            _event(
                ctx,
                platform_id,
                f"step '{step.name}' finished on {len(todo)} server(s) in "
                f"{time.monotonic() - started:.2f} s",
            )
    finally:
        pool.shutdown(wait=True)
    return ran


def _names(todo: list[tuple[Member, Rendered]]) -> str:
    names = [m.name for m, _ in todo]
    return ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")


def _save_done(ctx: Context, platform_id: str, done: dict[str, dict[str, str]]) -> None:
    with ctx.db.write() as session:
        row = session.get(Platform, platform_id)
        if row is not None:
            row.status = {**(row.status or {}), "done": done}


def _daemons_alive(
    ctx: Context, steps: list[Step], members: list[Member], ctx_vars: Mapping[str, Any]
) -> list[str]:
    """Start daemons that died (a server that restarted, a crash); what was restarted."""
    restarted = []
    for step in steps:
        if not step.daemons:
            continue
        for m in (m for m in members if m.role in step.roles):
            running = {s.name for s in ctx.backend.services(m.id) if s.running}
            for d in _render_step(step, ctx_vars, m).daemons:
                if d.name not in running:
                    ctx.backend.start_service(m.id, d)
                    restarted.append(f"{d.name} on {m.name}")
    return restarted


# ------------------------------------------------------------------------------ tunnels


def _service_defs(ptype: PlatformType, ctx_vars: Mapping[str, Any]) -> list[Any]:
    return [
        s
        for s in ptype.services
        if s.when is None or evaluate(s.when, ctx_vars, f"service '{s.name}': when")
    ]


def _ensure_tunnels(
    ctx: Context,
    platform_id: str,
    ptype: PlatformType,
    members: list[Member],
    ctx_vars: dict[str, Any],
) -> tuple[Step | None, dict[str, dict[str, str]]]:
    """Gateway services for the platform's services (keys made and bound), and the step that
    starts their ``ssh -R`` clients; with their URLs for templates."""
    defs = _service_defs(ptype, ctx_vars)
    gw = ctx.gateway
    urls: dict[str, dict[str, str]] = {}
    if gw is None:
        return None, {s.name: {"url": "", "subdomain": "", "label": s.label} for s in defs}
    with ctx.db.write() as session:
        row = session.get(Platform, platform_id)
        assert row is not None
        secrets = open_secrets(ctx.db, row)
        changed = False
        made = []
        for s in defs:
            try:
                svc = tunnels.ensure_service(
                    session,
                    row,
                    s.name,
                    public=s.public,
                    protocol=s.protocol,
                    liveness_path=s.liveness_path,
                )
            except ValueError as exc:
                raise _Failed(str(exc)) from None
            key_name = f"_tunnel:{s.name}"
            if key_name not in secrets:
                secrets[key_name] = hostkeys.new_private_key()
                changed = True
            tunnels.bind_key(session, svc, hostkeys.public_line(secrets[key_name]))
            urls[s.name] = {
                "url": gw.url_format.format(svc.subdomain),
                "subdomain": svc.subdomain,
                "label": s.label or s.name,
            }
            made.append(svc.name)
        tunnels.remove_services(session, row.id, keep=set(made))
        if changed:
            kept = {
                k: v
                for k, v in secrets.items()
                if not (k.endswith("_public") and k.removesuffix("_public") in secrets)
            }
            row.secrets = seal_secrets(ctx.db, row.id, kept)
    if not defs:
        return None, urls
    host_line = host_key(ctx.db)[1]
    files = []
    daemons = []
    for s in defs:
        key = secrets[f"_tunnel:{s.name}"]
        files.append(File(path=f"{TUNNEL_DIR}/{s.name}.key", content=key, mode="0600"))
        daemons.append(
            Daemon(
                name=f"tunnel-{s.name}",
                command=(
                    "/bin/bash",
                    "-c",
                    # A stock OpenSSH client, connected once the service listens (its first
                    # liveness check then passes); it exits when its connection dies: again.
                    f"while :; do until (exec 3<>/dev/tcp/127.0.0.1/{s.port}) 2>/dev/null; "
                    "do sleep 0.05; done; "
                    f"{shlex.join(_ssh_argv(s.name, s.port, gw.ssh_port))} "
                    "{{ server.gateway }}; sleep 1; done",
                ),
            )
        )
    files.append(File(path=f"{TUNNEL_DIR}/known_hosts", content=f"{GATEWAY_ALIAS} {host_line}\n"))
    step = Step(
        name="gateway",
        label="Tunnels to the gateway",
        roles=tuple(sorted({s.role for s in defs})),
        files=tuple(files),
        daemons=tuple(daemons),
    )
    return step, urls


def _ssh_argv(name: str, port: int, ssh_port: int) -> list[str]:
    return [
        "ssh", "-N",
        "-R", f"0:127.0.0.1:{port}",
        "-p", str(ssh_port),
        "-i", f"{TUNNEL_DIR}/{name}.key",
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", "ExitOnForwardFailure=yes",
        "-o", "ServerAliveInterval=5",
        "-o", "ServerAliveCountMax=3",
        "-o", f"UserKnownHostsFile={TUNNEL_DIR}/known_hosts",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", f"HostKeyAlias={GATEWAY_ALIAS}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "ConnectTimeout=5",
        "-l", "tunnel",
    ]  # fmt: skip


def _health(ctx: Context, platform_id: str) -> dict[str, bool]:
    with ctx.db.read() as session:
        svcs = tunnels.platform_services(session, platform_id)
        counts = tunnels.healthy_tunnels(session, [s.id for s in svcs])
        return {s.name: counts.get(s.id, 0) > 0 for s in svcs}


# ------------------------------------------------------------------------------ converge


def _converge(ctx: Context, platform_id: str) -> Outcome:
    with ctx.db.write() as session:
        row = session.get(Platform, platform_id)
        if row is None:
            return Outcome()
        if row.phase == PlatformPhase.PENDING:
            move(session, row, PlatformPhase.CREATING, "making its servers")
    got = _ensure_servers(ctx, platform_id)
    if got is None:
        return Outcome(requeue_after=WAIT_S)
    members, leaving = got
    with ctx.db.read() as session:
        row = session.get(Platform, platform_id)
        assert row is not None
        ptype = type_of(row)
        params = dict(row.spec["parameters"])
        secrets = open_secrets(ctx.db, row)
        generation = row.generation
        user_ids = [a.user_id for a in row.access]
        ssh_keys = sorted(
            session.scalars(select(UserSshKey.public_key).where(UserSshKey.user_id.in_(user_ids)))
        )
        since = (row.status or {}).get("configured_at")
    ctx_vars = _context(row, params, secrets, members, {}, ssh_keys, leaving)
    try:
        tunnel_step, urls = _ensure_tunnels(ctx, platform_id, ptype, members, ctx_vars)
        ctx_vars["services"] = urls
        steps = _steps(ptype, members, ctx_vars)
    except TemplateError as exc:
        raise _Failed(str(exc)) from None
    if leaving:
        # Drain first: the steps see the servers that go in ``platform.leaving`` (and
        # ECLIPTIC_LEAVING) and run while they still exist; then they are removed.
        _configure(ctx, platform_id, steps, members + leaving, ctx_vars)
        _remove(ctx, platform_id, leaving)
        ctx_vars = _context(row, params, secrets, members, urls, ssh_keys, [])
        steps = _steps(ptype, members, ctx_vars)
    all_steps = steps + ([tunnel_step] if tunnel_step is not None else [])
    ran = _configure(ctx, platform_id, all_steps, members, ctx_vars)
    restarted = _daemons_alive(ctx, all_steps, members, ctx_vars)
    if restarted:
        _event(ctx, platform_id, f"restarted {', '.join(restarted)}")
    health = _health(ctx, platform_id)
    down = sorted(n for n, ok in health.items() if not ok)
    now = ctx.booking.clock.now()
    with ctx.db.write() as session:
        row = session.get(Platform, platform_id)
        if row is None or row.phase in (PlatformPhase.DELETING, PlatformPhase.FAILED):
            return Outcome(requeue_after=0)
        status = dict(row.status or {})
        before = status.get("health", {})
        for name, ok in health.items():
            if before.get(name) is not None and before.get(name) != ok:
                keep = row.phase_reason
                note(session, row, f"service {name} {'up' if ok else 'down'}")
                row.phase_reason = keep
        status["health"] = health
        if ran or not since:
            status["configured_at"] = now.isoformat()
            since = status["configured_at"]
        row.status = status
        row.observed_generation = generation
        waiting = down and (now - _parse(since)) < TUNNEL_WAIT
        if waiting and row.phase != PlatformPhase.READY:
            if row.phase != PlatformPhase.CONFIGURING:
                move(session, row, PlatformPhase.CONFIGURING, "waiting for its services' tunnels")
            else:
                row.phase_reason = f"waiting for the tunnel of {', '.join(down)}"
            return Outcome(requeue_after=WAIT_S)
        if down:
            move(session, row, PlatformPhase.DEGRADED, f"no healthy tunnel: {', '.join(down)}")
        else:
            move(session, row, PlatformPhase.READY, "ready")
    return Outcome(requeue_after=WATCH_S)


def _parse(text: str) -> Any:
    from datetime import datetime

    return datetime.fromisoformat(text)


# ------------------------------------------------------------------------------ delete


def _delete(ctx: Context, platform_id: str) -> Outcome:
    """Services first (tunnels cut), then servers, then networks, then the row."""
    with ctx.db.write() as session:
        row = session.get(Platform, platform_id)
        if row is None:
            return Outcome()
        tunnels.remove_services(session, platform_id)
        servers = list(session.scalars(select(Server).where(Server.platform_id == platform_id)))
        going = teardown.servers_going(
            ctx, session, servers, f"platform '{row.name}' deleted", STOP_GRACE_S
        )
        if servers:
            row.phase_reason = f"waiting for {len(servers)} server(s) to go"
    if going:
        # A platform's servers are disposable once it is deleted: a short grace.
        teardown.delete_now(ctx, going, STOP_GRACE_S, f"platform {platform_id}")
        faults.point("reconcile.platform.after_servers_deleted")
        return Outcome(requeue_after=DELETE_POLL_S)
    with ctx.db.write() as session:
        row = session.get(Platform, platform_id)
        if row is None:
            return Outcome()
        nets = list(session.scalars(select(Network).where(Network.platform_id == platform_id)))
        teardown.networks_going(ctx, session, nets, f"platform '{row.name}' deleted")
        if nets:
            row.phase_reason = f"waiting for {len(nets)} network(s) to go"
            return Outcome(requeue_after=DELETE_POLL_S)
        teardown.drop_group(
            ctx, session, row.tenancy_id, f"{security_groups.PLATFORM_PREFIX}{row.name}"
        )
        removed(session, row, row.phase_reason or "deleted")
        session.delete(row)
    return Outcome()
