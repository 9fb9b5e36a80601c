"""Benchmarks and benchmark sets: submit, list, read, cancel, compare; the servers a run makes.

A benchmark is accepted as PENDING and run by the ``benchmark`` reconciler
(``reconcile/benchmarks.py``). Runs of one instance measure one at a time, oldest first:
every run shares the same machines, and two at once would measure each other. A set's runs
are all created when the set is, named ``<set>-<NNN>``, and run in order.

Fresh servers for a run are ordinary servers of the tenancy (named ``<run>-0``, ``<run>-1``)
on a network of their own (``<run>-net``) with a security group that lets them reach each
other; all of it is made in one transaction with the run's move to PROVISIONING, and its
ids are kept in the run's status so that cleaning up never depends on names.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ecliptic.errors import Conflict, InvalidInput, NotFound
from ecliptic.perf import plots, stats
from ecliptic.perf.kinds import registry
from ecliptic.perf.kinds.base import Result
from ecliptic.perf.spec import BenchmarkSetSpec, BenchmarkSpec, expand, label
from ecliptic.phases import BenchmarkPhase, PlatformPhase, SetPhase
from ecliptic.services import security_groups as sg
from ecliptic.services.booking import Booking
from ecliptic.services.caller import Caller
from ecliptic.services.catalogue import find_flavor
from ecliptic.services.networks import IPAM_LOCK, UsedRanges, add_network
from ecliptic.services.platforms import find_platform, may_use
from ecliptic.services.servers import NicRequest, add_server
from ecliptic.store.db import Database
from ecliptic.store.models import Benchmark, BenchmarkSet, Event, Flavor, Platform, User
from ecliptic.store.transitions import created, move, timeline
from ecliptic.store.types import utcnow
from ecliptic.store.workqueue import WorkQueue

KIND = "benchmark"
"""Work-queue kind of benchmark runs."""
BUSY = (BenchmarkPhase.PROVISIONING, BenchmarkPhase.RUNNING, BenchmarkPhase.CLEANING)
FINAL = (BenchmarkPhase.SUCCEEDED, BenchmarkPhase.FAILED)
GROUP_PREFIX = "benchmark:"
MAX_SET_RUNS = 500
MAX_UNFINISHED = 1000
"""Runs a tenancy may have waiting or running at once."""
MAX_RUN_NAME = 63 - len("-net-subnet")
"""A run's name leaves room for the names of what it makes (``<run>-0-0``, the longest of
which is its network's subnet, ``<run>-net-subnet``; and ``benchmark:<run>``), which must fit
in 63 characters like every name."""
MAX_SET_NAME = MAX_RUN_NAME - len("-000")
"""Set names leave room for the runs' ``-NNN`` (at most 500 runs: three digits)."""


def _tenancy(caller: Caller) -> str:
    return caller.require_tenancy()


def find_benchmark(session: Session, caller: Caller, ref: str) -> Benchmark:
    """A run of the caller's tenancy by name or id; others' runs do not exist, nor do runs on
    a platform the caller may not use (see :func:`may_see`)."""
    row = session.scalar(
        select(Benchmark).where(
            Benchmark.tenancy_id == _tenancy(caller),
            (Benchmark.name == ref) | (Benchmark.id == ref),
        )
    )
    if row is None or not may_see(session, caller, row):
        raise NotFound(f"no benchmark '{ref}' in this tenancy; see 'ecliptic bench list'")
    return row


def may_see(session: Session, caller: Caller, row: Benchmark) -> bool:
    """Whether the caller may read a run: a run on a platform is for the platform's access
    list (and the tenancy's admins), as its servers' logs are: its raw output, environment,
    events and failure reasons come from inside the platform's servers."""
    name = (row.spec or {}).get("platform")
    if name is None or caller.is_admin or caller.role == "admin":
        return True
    plat = platform_of(session, row) or session.scalar(
        select(Platform).where(Platform.tenancy_id == row.tenancy_id, Platform.name == name)
    )
    if plat is None:  # the platform is gone, and its access list with it
        return row.created_by == caller.user_id
    return may_use(caller, plat)


def find_set(session: Session, tenancy_id: str, ref: str) -> BenchmarkSet:
    """A set of the tenancy by name or id."""
    row = session.scalar(
        select(BenchmarkSet).where(
            BenchmarkSet.tenancy_id == tenancy_id,
            (BenchmarkSet.name == ref) | (BenchmarkSet.id == ref),
        )
    )
    if row is None:
        raise NotFound(f"no benchmark set '{ref}' in this tenancy; see 'ecliptic bench sets'")
    return row


def _check_where(session: Session, caller: Caller, spec: BenchmarkSpec) -> None:
    """Refuse, before anything runs, what cannot run: an unknown flavor, a platform the
    caller may not use or that is not built."""
    if spec.platform is not None:
        plat = find_platform(session, _tenancy(caller), spec.platform)
        if not may_use(caller, plat):
            raise NotFound(f"no platform '{spec.platform}' you may use in this tenancy")
        if plat.phase not in (PlatformPhase.READY, PlatformPhase.DEGRADED):
            raise Conflict(
                f"platform '{plat.name}' is {plat.phase}: benchmarks run on a READY platform"
            )
    else:
        find_flavor(session, spec.flavor)


def _room_for(session: Session, tenancy_id: str, n: int) -> None:
    waiting = session.scalar(
        select(func.count()).where(
            Benchmark.tenancy_id == tenancy_id, Benchmark.phase.not_in(list(FINAL))
        )
    )
    if (waiting or 0) + n > MAX_UNFINISHED:
        raise Conflict(
            f"this tenancy has {waiting} benchmark runs not finished; at most "
            f"{MAX_UNFINISHED} may wait at once: let some finish or cancel them"
        )


def _name_free(session: Session, tenancy_id: str, name: str) -> None:
    """Runs and sets share one name space: ``results``, ``plots`` and ``compare`` take either,
    so one name must never mean both."""
    if session.scalar(
        select(Benchmark.id).where(Benchmark.tenancy_id == tenancy_id, Benchmark.name == name)
    ):
        raise Conflict(f"a benchmark named '{name}' exists already; pick another name")
    if session.scalar(
        select(BenchmarkSet.id).where(
            BenchmarkSet.tenancy_id == tenancy_id, BenchmarkSet.name == name
        )
    ):
        raise Conflict(f"a benchmark set is named '{name}'; pick another name")


def create_benchmark(
    db: Database, queue: WorkQueue, caller: Caller, spec: BenchmarkSpec, name: str | None = None
) -> Benchmark:
    """Accept a run (PENDING); the reconciler runs it when its turn comes."""
    tenancy_id = _tenancy(caller)
    name = name or f"{spec.kind.replace('_', '-')}-{secrets.token_hex(3)}"
    if len(name) > MAX_RUN_NAME:
        raise InvalidInput(
            f"a benchmark's name is at most {MAX_RUN_NAME} characters (its servers, network "
            "and security group are named after it)"
        )
    with db.write() as session:
        _check_where(session, caller, spec)
        _name_free(session, tenancy_id, name)
        _room_for(session, tenancy_id, 1)
        row = _new_run(session, caller, tenancy_id, name, spec)
        queue.enqueue(session, KIND, row.id)
    return row


def _new_run(
    session: Session,
    caller: Caller,
    tenancy_id: str,
    name: str,
    spec: BenchmarkSpec,
    *,
    set_row: BenchmarkSet | None = None,
    permutation: dict[str, Any] | None = None,
    index: int = 0,
    repetition: int = 0,
) -> Benchmark:
    row = Benchmark(
        tenancy_id=tenancy_id,
        name=name,
        kind=spec.kind,
        set_id=set_row.id if set_row else None,
        permutation=permutation or {},
        permutation_index=index,
        repetition=repetition,
        created_by=caller.user_id,
        spec=spec.model_dump(mode="json"),
        status={},
        phase=BenchmarkPhase.PENDING,
    )
    session.add(row)
    session.flush()
    where = f"platform {spec.platform}" if spec.platform else f"fresh {spec.image} servers"
    created(session, row, f"{spec.kind} over the {spec.network} network on {where}: queued")
    return row


def create_set(
    db: Database, queue: WorkQueue, caller: Caller, body: BenchmarkSetSpec
) -> BenchmarkSet:
    """Accept a set: every run it expands to is created now (PENDING), to run in order."""
    tenancy_id = _tenancy(caller)
    if len(body.name) > MAX_SET_NAME:
        raise InvalidInput(f"a set's name is at most {MAX_SET_NAME} characters")
    runs = expand(body)
    total = len(runs) * body.repetitions
    if total > MAX_SET_RUNS:
        raise InvalidInput(
            f"{len(runs)} permutations x {body.repetitions} repetitions = {total} runs; "
            f"at most {MAX_SET_RUNS} per set"
        )
    width = max(3, len(str(total - 1)))
    with db.write() as session:
        if session.scalar(
            select(BenchmarkSet.id).where(
                BenchmarkSet.tenancy_id == tenancy_id, BenchmarkSet.name == body.name
            )
        ):
            raise Conflict(f"a benchmark set named '{body.name}' exists already")
        if session.scalar(
            select(Benchmark.id).where(
                Benchmark.tenancy_id == tenancy_id, Benchmark.name == body.name
            )
        ):
            raise Conflict(f"a benchmark run is named '{body.name}'; pick another name")
        for _, spec in runs:
            _check_where(session, caller, spec)
        _room_for(session, tenancy_id, total)
        set_row = BenchmarkSet(
            tenancy_id=tenancy_id,
            name=body.name,
            spec=body.model_dump(mode="json"),
            phase=SetPhase.RUNNING,
            phase_reason=f"{total} runs queued",
            created_by=caller.user_id,
        )
        session.add(set_row)
        session.flush()
        n = 0
        for rep in range(body.repetitions):
            for i, (perm, spec) in enumerate(runs):
                name = f"{body.name}-{n:0{width}d}"
                _name_free(session, tenancy_id, name)
                row = _new_run(
                    session,
                    caller,
                    tenancy_id,
                    name,
                    spec,
                    set_row=set_row,
                    permutation=perm,
                    index=i,
                    repetition=rep,
                )
                if n == 0:  # the others are woken in turn, as each becomes next up
                    queue.enqueue(session, KIND, row.id)
                n += 1
    return set_row


# ------------------------------------------------------------------------------ reading


def list_benchmarks(
    db: Database, caller: Caller, *, set_ref: str | None = None, kind: str | None = None
) -> list[Benchmark]:
    """Runs of the tenancy, newest first (those of one set, in run order)."""
    tenancy_id = _tenancy(caller)
    with db.read() as session:
        q = select(Benchmark).where(Benchmark.tenancy_id == tenancy_id)
        if set_ref is not None:
            set_row = find_set(session, tenancy_id, set_ref)
            q = q.where(Benchmark.set_id == set_row.id).order_by(Benchmark.name)
        else:
            q = q.order_by(Benchmark.created_at.desc(), Benchmark.name.desc())
        if kind is not None:
            q = q.where(Benchmark.kind == kind)
        return [r for r in session.scalars(q) if may_see(session, caller, r)]


def get_benchmark(db: Database, caller: Caller, ref: str) -> Benchmark:
    """One run."""
    with db.read() as session:
        return find_benchmark(session, caller, ref)


def list_sets(db: Database, caller: Caller) -> list[BenchmarkSet]:
    """Sets of the tenancy, newest first."""
    tenancy_id = _tenancy(caller)
    with db.read() as session:
        return list(
            session.scalars(
                select(BenchmarkSet)
                .where(BenchmarkSet.tenancy_id == tenancy_id)
                .order_by(BenchmarkSet.created_at.desc())
            )
        )


def get_set(db: Database, caller: Caller, ref: str) -> BenchmarkSet:
    """One set."""
    with db.read() as session:
        return find_set(session, _tenancy(caller), ref)


def set_counts(db: Database, set_id: str) -> dict[str, int]:
    """How many of a set's runs are in each phase."""
    with db.read() as session:
        rows = session.execute(
            select(Benchmark.phase, func.count())
            .where(Benchmark.set_id == set_id)
            .group_by(Benchmark.phase)
        ).all()
    return {str(p): int(n) for p, n in rows}


def result_of(row: Benchmark) -> Result | None:
    """A run's figures, when it succeeded."""
    return Result.model_validate(row.result) if row.result else None


def runs_of(db: Database, caller: Caller, ref: str) -> tuple[str, list[Benchmark]]:
    """A set's runs, or one run, by name: what ``compare`` and ``plot`` work on."""
    tenancy_id = _tenancy(caller)
    with db.read() as session:
        set_row = session.scalar(
            select(BenchmarkSet).where(
                BenchmarkSet.tenancy_id == tenancy_id,
                (BenchmarkSet.name == ref) | (BenchmarkSet.id == ref),
            )
        )
        if set_row is not None:
            rows = session.scalars(
                select(Benchmark).where(Benchmark.set_id == set_row.id).order_by(Benchmark.name)
            )
            return set_row.name, list(rows)
        row = find_benchmark(session, caller, ref)
        return row.name, [row]


# ------------------------------------------------------------------------------ cancel


def delete_benchmark(db: Database, queue: WorkQueue, caller: Caller, ref: str) -> Benchmark | None:
    """Remove a finished run (None: it is gone), or cancel one that is not finished (its
    servers go; it ends FAILED, kept, with the reason)."""
    with db.write() as session:
        row = find_benchmark(session, caller, ref)
        if row.phase in FINAL:
            session.delete(row)
            return None
        cancel(session, queue, row, f"cancelled by {caller.user_name}")
        return row


def cancel(session: Session, queue: WorkQueue, row: Benchmark, why: str) -> None:
    """Stop a run where it is: PENDING fails at once, later phases clean up first."""
    if row.phase == BenchmarkPhase.PENDING:
        row.finished_at = utcnow()
        move(session, row, BenchmarkPhase.FAILED, why)
        set_finished(session, queue, row)
    elif row.phase in (BenchmarkPhase.PROVISIONING, BenchmarkPhase.RUNNING):
        row.status = {**row.status, "outcome": BenchmarkPhase.FAILED, "outcome_reason": why}
        move(session, row, BenchmarkPhase.CLEANING, why)
        queue.enqueue(session, KIND, row.id)


def delete_set(db: Database, queue: WorkQueue, caller: Caller, ref: str) -> BenchmarkSet | None:
    """Remove a finished set and its runs (None), or cancel the runs still to come."""
    tenancy_id = _tenancy(caller)
    with db.write() as session:
        set_row = find_set(session, tenancy_id, ref)
        if set_row.phase != SetPhase.RUNNING:
            session.delete(set_row)
            return None
        rows = session.scalars(select(Benchmark).where(Benchmark.set_id == set_row.id))
        for row in rows:
            cancel(session, queue, row, f"set cancelled by {caller.user_name}")
        set_row.phase_reason = f"cancelled by {caller.user_name}"
        return set_row


def set_finished(session: Session, queue: WorkQueue, row: Benchmark) -> None:
    """After a run ended: settle its set when it was the last, and wake the next run."""
    session.flush()
    nxt = next_up(session)
    if nxt is not None:
        queue.enqueue(session, KIND, nxt)
    if row.set_id is None:
        return
    set_row = session.get(BenchmarkSet, row.set_id)
    if set_row is None:
        return
    session.flush()
    phases = list(session.scalars(select(Benchmark.phase).where(Benchmark.set_id == set_row.id)))
    left = sum(1 for p in phases if p not in FINAL)
    failed = sum(1 for p in phases if p == BenchmarkPhase.FAILED)
    if left:
        set_row.phase_reason = f"{len(phases) - left} of {len(phases)} runs done"
        return
    set_row.finished_at = utcnow()
    if failed:
        set_row.phase = SetPhase.FAILED
        set_row.phase_reason = f"{failed} of {len(phases)} runs failed"
    else:
        set_row.phase = SetPhase.SUCCEEDED
        set_row.phase_reason = f"all {len(phases)} runs succeeded"


# ------------------------------------------------------------------------------ running


def next_up(session: Session) -> str | None:
    """The run that measures next: tenancies take turns (the one whose last turn began
    longest ago, or never, goes first), and within a tenancy runs go oldest first; so a
    tenancy's long set delays another tenancy's run by at most one run.

    A turn begins when a run leaves PENDING for PROVISIONING, read from the events, which
    outlive the runs: a run that never got to measure (its servers never came up) still
    took its turn, and deleting finished runs does not make a tenancy new again."""
    firsts = session.execute(
        select(Benchmark.tenancy_id, func.min(Benchmark.created_at))
        .where(Benchmark.phase == BenchmarkPhase.PENDING)
        .group_by(Benchmark.tenancy_id)
    ).all()
    if not firsts:
        return None
    last_start = dict(
        session.execute(
            select(Event.tenancy_id, func.max(Event.at))
            .where(
                Event.object_kind == "benchmark",
                Event.to_phase == BenchmarkPhase.PROVISIONING,
                Event.tenancy_id.in_([t for t, _ in firsts]),
            )
            .group_by(Event.tenancy_id)
        ).all()
    )
    never = datetime.min.replace(tzinfo=UTC)
    tenancy, _ = min(firsts, key=lambda f: (last_start.get(f[0]) or never, f[1], f[0]))
    return session.scalar(
        select(Benchmark.id)
        .where(Benchmark.phase == BenchmarkPhase.PENDING, Benchmark.tenancy_id == tenancy)
        .order_by(Benchmark.created_at, Benchmark.name)
        .limit(1)
    )


def my_turn(session: Session, row: Benchmark) -> bool:
    """Whether ``row`` may start now: nothing else measures, and it is next up."""
    busy = session.scalar(select(func.count()).where(Benchmark.phase.in_(list(BUSY))))
    return not busy and next_up(session) == row.id


def provision(
    booking: Booking,
    queue: WorkQueue,
    caller: Caller,
    benchmark_id: str,
    used_elsewhere: UsedRanges = tuple,
) -> bool:
    """Move a PENDING run to PROVISIONING and place what it runs on, in one transaction.

    Fresh servers: a network, a security group and the servers the kind needs. A platform:
    its servers are recorded. False when it is not the run's turn yet. Errors (no capacity,
    no quota) propagate with nothing made.
    """
    with booking.transaction(IPAM_LOCK) as (session, engine):
        row = session.get(Benchmark, benchmark_id)
        if row is None or row.phase != BenchmarkPhase.PENDING or not my_turn(session, row):
            return False
        spec = BenchmarkSpec.model_validate(row.spec)
        kind = registry.find(spec.kind)
        # Checked again now that it is its turn: since it was queued, its maker may have
        # left the platform's access list, or the platform may be going.
        user = session.get(User, row.created_by) if row.created_by else None
        _check_where(session, replace(caller, is_admin=bool(user and user.is_admin)), spec)
        status: dict[str, Any] = {"provisioning_since": utcnow().isoformat()}
        if spec.platform is not None:
            plat = find_platform(session, row.tenancy_id, spec.platform)
            status["platform_id"] = plat.id
        else:
            count = kind.servers(spec.kind_params(), spec.network)
            flavor = spec.flavor
            if count < kind.servers(spec.kind_params(), "bridge"):
                flavor = both_ends_flavor(session, spec.flavor)
            group = sg.owned_group(
                session, row.tenancy_id, f"{GROUP_PREFIX}{row.name}", f"benchmark {row.name}"
            )
            net = add_network(
                session, queue, row.tenancy_id, f"{row.name}-net", None, used_elsewhere
            )
            vnic = "direct" if spec.network == "direct" else "normal"
            made = []
            for i in range(count):
                srv = add_server(
                    session,
                    engine,
                    booking,
                    queue,
                    caller,
                    f"{row.name}-{i}",
                    flavor,
                    [NicRequest(network=net.name, vnic_type=vnic)],
                    used_elsewhere,
                    lease=spec.lease,
                    image=spec.image,
                    security_groups=[group.name],
                )
                made.append(srv.id)
            status |= {
                "servers": made,
                "networks": [net.id],
                "group": group.name,
                "flavor": flavor,
            }
        row.status = status
        move(
            session,
            row,
            BenchmarkPhase.PROVISIONING,
            _provisioning_reason(spec, kind.name, status.get("flavor", spec.flavor)),
        )
        return True


def both_ends_flavor(session: Session, name: str) -> str:
    """For a run whose two ends share one server (host networking): the smallest flavor
    of the same kind with at least twice ``name``'s vCPUs and memory, so that both ends get
    what they would get on two servers; ``name`` itself when there is none."""
    base = find_flavor(session, name)
    bigger = session.scalars(
        select(Flavor)
        .where(
            Flavor.kind == base.kind,
            Flavor.vcpus >= 2 * base.vcpus,
            Flavor.memory_mb >= 2 * base.memory_mb,
            Flavor.gpus == base.gpus,
            Flavor.reservation_only == base.reservation_only,
        )
        .order_by(Flavor.vcpus, Flavor.memory_mb, Flavor.name)
    ).first()
    return bigger.name if bigger is not None else base.name


def _provisioning_reason(spec: BenchmarkSpec, kind: str, flavor: str) -> str:
    if spec.platform is not None:
        return f"running on platform {spec.platform}"
    n = registry.find(kind).servers(spec.kind_params(), spec.network)
    both = " (both ends in one server: twice the flavor)" if flavor != spec.flavor else ""
    return f"making {n} {flavor} server(s) from image {spec.image}{both}"


def platform_of(session: Session, row: Benchmark) -> Platform | None:
    """The platform a run runs on, if any."""
    pid = (row.status or {}).get("platform_id")
    return session.get(Platform, pid) if pid else None


def since(row: Benchmark, key: str) -> datetime | None:
    """A time recorded in the run's status."""
    value = (row.status or {}).get(key)
    return datetime.fromisoformat(value) if value else None


def benchmark_events(db: Database, caller: Caller, ref: str, limit: int = 500) -> list[Event]:
    """A run's timeline (queued, servers made, progress of the tool, outcome), oldest first."""
    with db.read() as session:
        row = find_benchmark(session, caller, ref)
        return timeline(session, "benchmark", row.id, limit)


# ------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Group:
    """The runs of one permutation (or one lone run), aggregated."""

    label: str
    """``network=direct`` for a set's permutation; the run's name for a lone run."""
    kind: str
    permutation: dict[str, Any]
    runs: list[str]
    """Names of its runs that succeeded."""
    failed: list[str]
    """Names of its runs that failed."""
    aggregate: stats.Aggregate | None
    """None when none of its runs succeeded."""


def groups_of(rows: Sequence[Benchmark]) -> list[Group]:
    """Runs grouped by permutation (a lone run is a group of its own), each aggregated."""
    by: dict[tuple[str, int], list[Benchmark]] = {}
    for r in rows:
        by.setdefault((r.set_id or r.id, r.permutation_index), []).append(r)
    out = []
    for members in by.values():
        first = members[0]
        ok = [m for m in members if m.phase == BenchmarkPhase.SUCCEEDED and m.result]
        agg = (
            stats.aggregate(first.kind, [Result.model_validate(m.result) for m in ok])
            if ok
            else None
        )
        out.append(
            Group(
                label=label(first.permutation) if first.set_id else first.name,
                kind=first.kind,
                permutation=dict(first.permutation),
                runs=[m.name for m in ok],
                failed=[m.name for m in members if m.phase == BenchmarkPhase.FAILED],
                aggregate=agg,
            )
        )
    return out


def against_baseline(
    groups: list[Group], baseline: str | None = None
) -> dict[str, list[stats.Difference]]:
    """Each group's figures compared with the baseline group of its kind (the one labelled
    ``baseline``, else the kind's first group that has figures), by label."""
    out: dict[str, list[stats.Difference]] = {}
    for kind in dict.fromkeys(g.kind for g in groups):
        mine = [g for g in groups if g.kind == kind and g.aggregate is not None]
        base = next((g for g in mine if g.label == baseline), mine[0] if mine else None)
        if baseline is not None and not any(g.label == baseline for g in groups):
            raise NotFound(f"no permutation labelled '{baseline}' with figures")
        for g in mine:
            if base is not None and g is not base:
                assert base.aggregate is not None and g.aggregate is not None
                out[g.label] = stats.compare(base.aggregate, g.aggregate)
    return out


def compare_refs(
    db: Database, caller: Caller, a: str, b: str
) -> list[tuple[Group, Group, list[stats.Difference]]]:
    """Two runs or two sets side by side: groups paired by label (or the only group of
    each), b against a; a pair without figures on both sides is left out."""
    _, rows_a = runs_of(db, caller, a)
    _, rows_b = runs_of(db, caller, b)
    ga, gb = groups_of(rows_a), groups_of(rows_b)
    pairs: list[tuple[Group, Group]]
    if len(ga) == 1 and len(gb) == 1:
        pairs = [(ga[0], gb[0])]
    else:
        by_b = {(g.kind, g.label): g for g in gb}
        pairs = [(g, by_b[(g.kind, g.label)]) for g in ga if (g.kind, g.label) in by_b]
        if not pairs:
            raise InvalidInput(
                f"'{a}' and '{b}' share no permutation to compare: compare two runs, or two "
                "sets made from the same permutations"
            )
    out = []
    for x, y in pairs:
        if x.kind != y.kind:
            raise InvalidInput(
                f"'{x.label}' is {x.kind} and '{y.label}' is {y.kind}: not comparable"
            )
        if x.aggregate is not None and y.aggregate is not None:
            out.append((x, y, stats.compare(x.aggregate, y.aggregate)))
    if not out:
        raise Conflict(f"'{a}' and '{b}' have no figures to compare yet (no run succeeded)")
    return out


def figures_of(groups: list[Group], fmt: plots.Format) -> list[plots.Figure]:
    """The plots of these groups' figures (none while no run succeeded)."""
    entries = [
        plots.Entry(label=g.label, kind=g.kind, permutation=g.permutation, aggregate=g.aggregate)
        for g in groups
        if g.aggregate is not None
    ]
    return plots.figures(entries, fmt) if entries else []


def set_names(db: Database, rows: Sequence[Benchmark]) -> dict[str, str]:
    """Names of the sets these runs belong to, by set id."""
    ids = {r.set_id for r in rows if r.set_id}
    if not ids:
        return {}
    with db.read() as session:
        found = session.execute(
            select(BenchmarkSet.id, BenchmarkSet.name).where(BenchmarkSet.id.in_(ids))
        ).all()
    return {i: n for i, n in found}
