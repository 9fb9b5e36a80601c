"""How much of a fixed pool a week of reservation requests gets to use, Ecliptic vs first-fit.

    python -m bench.utilization [--json] [--seed 11] [--weeks 10] [--load 1.3]

A seeded week of mixed requests arrives over time on 40 hosts in four racks (16 CPU
hosts, 16 hosts with 4 A100, 8 RDMA hosts with 8 H100, both GPU models cut into MIG-style
slices; the inventory lists them rack by rack, kinds mixed, as a database would):
whole hosts (any, CPU-only, A100 or H100), CPU flavor slots (some anti-affinity),
whole-GPU flavor slots and GPU slices. A request asks for an exact start ("now" or up to
36 hours ahead) or, for most, any start within the next 2 to 48 hours. The offered load is
``--load`` times what the pool can hold, so choices matter: small work scattered over
many hosts leaves no whole host for the next host lease, a GPU cut carelessly leaves no
whole GPU, a start rounded to the hour wastes the minutes before it.

The same requests go, in arrival order, through:

(a) Ecliptic: an exact start is a ``fit``; a flexible one takes the first window that
    ``earliest`` finds within the flexibility (best-fit placement, any minute);
(b) the first-fit baseline (Blazar's rules, ``scheduler/baseline.py``): an exact start or
    reject; a flexible one tries start times one hour apart within the window;
(c) the upper bound: requested resource-hours, capped at the pool's capacity-hours;
(d) Ecliptic again with preemptible backfill: every half hour, preemptible jobs (8 vCPUs
    and 32 GiB, plus one whole GPU on GPU hosts; 6 hours each) start wherever
    ``backfill_room`` allows, and ``victims`` stops them when a lease starts (never
    inside their minimum lifetime of one hour, which ``fit`` and ``earliest`` respect).

Units: resource-hours are host-hours, from the request (not from where it lands, so no
scheduler gains by its choice of host): a whole host is 1 per hour, a slot or slice the
largest share it takes of a host of its kind (vCPUs, memory, GPUs or compute units); only
hours inside the week count. ``utilization`` is measured on the placements instead: per
host and minute, the busiest resource's share (whole host: 1), averaged over the pool and
the week; ``utilization_with_backfill`` the same with the preemptible jobs. Waits are
hours from the requested start to the granted one, over accepted requests.

One week is noisy (a single early decision changes all that follows), so ``--weeks``
seeded weeks are run and every figure is the mean per week.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from ecliptic.scheduler.baseline import FirstFit
from ecliptic.scheduler.engine import Engine
from ecliptic.scheduler.model import (
    Amount,
    FlavorRequest,
    GpuSpec,
    HostInfo,
    HostRequest,
    NoFit,
    Placement,
    Preemptible,
    Request,
    SliceRequest,
    Window,
)
from ecliptic.scheduler.resources import UNITS_PER_GPU, profile_units

T0 = datetime(2030, 3, 4, tzinfo=UTC)
WEEK = 7 * 24 * 60
MIG = ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")
MIN_LIFE = timedelta(hours=1)
JOB_MINUTES = 6 * 60
TICK = 30
AFFINITIES: list[Literal["none", "anti-affinity"]] = ["none", "none", "anti-affinity"]

# Reference host of each kind of work: (vCPUs, memory MiB, GPUs).
REF = {"cpu": (64, 256 * 1024, 0), "A100": (64, 512 * 1024, 4), "H100": (96, 1024 * 1024, 8)}


def pool() -> list[HostInfo]:
    """The 40 hosts, four racks of ten, listed rack by rack in a seeded mixed order."""
    rng = random.Random(40)
    hosts: list[HostInfo] = []
    for rack in range(4):
        kinds = ["cpu"] * 4 + ["a100"] * 4 + ["h100"] * 2
        rng.shuffle(kinds)
        for k, kind in enumerate(kinds):
            name = f"r{rack}-n{k:02d}"
            props = {"rack": f"r{rack}"}
            if kind == "cpu":
                hosts.append(HostInfo(name, 64, 256 * 1024, 1000, properties=props))
            elif kind == "a100":
                gpus = (GpuSpec("A100", 4, 80, MIG),)
                hosts.append(HostInfo(name, 64, 512 * 1024, 2000, gpus=gpus, properties=props))
            else:
                gpus = (GpuSpec("H100", 8, 80, MIG),)
                hosts.append(
                    HostInfo(name, 96, 1024 * 1024, 4000, gpus=gpus, rdma=True, properties=props)
                )
    return hosts


@dataclass
class Ask:
    """One request: what, for how long, from when, with how much flexibility."""

    n: int
    arrival: int
    """Minutes after T0."""
    start: int
    """Requested start, minutes after T0."""
    flex: int
    """Minutes of flexibility (0: exact start)."""
    duration: int
    """Minutes."""
    requests: list[Request]
    weight: float
    """Host-equivalents held per hour."""


def _weight(reqs: Sequence[Request]) -> float:
    w = 0.0
    for r in reqs:
        if isinstance(r, HostRequest):
            w += r.max_count
        elif isinstance(r, FlavorRequest):
            ref = REF[r.gpu_model or "cpu"]
            share = max(r.vcpus / ref[0], r.memory_mb / ref[1], r.gpus / ref[2] if ref[2] else 0)
            w += r.count * share
        else:
            ref = REF[r.gpu_model or "A100"]
            w += r.count * profile_units(r.profile) / (UNITS_PER_GPU * ref[2])
    return w


def _in_week(start: int, minutes: int) -> float:
    """Hours of [start, start + minutes) inside the week."""
    return max(0, min(start + minutes, WEEK) - max(start, 0)) / 60


def workload(seed: int, load: float, capacity_hours: float) -> list[Ask]:
    """A week of requests whose host-hours add up to ``load`` times ``capacity_hours``."""
    rng = random.Random(seed)
    asks: list[Ask] = []
    total = 0.0
    while total < load * capacity_hours:
        kind = rng.random()
        reqs: list[Request]
        if kind < 0.30:
            n = rng.choice([1, 1, 2, 2, 3, 4])
            where = rng.choice(
                ["not gpu_model", "not gpu_model", 'gpu_model == "A100"', 'gpu_model == "H100"', ""]
            )
            reqs = [HostRequest("hosts", n, n, where)]
            hours = rng.uniform(4, 48)
        elif kind < 0.55:
            v = rng.choice([4, 8, 16, 32])
            affinity = rng.choice(AFFINITIES)
            reqs = [FlavorRequest("slots", rng.randint(1, 6), v, v * 4096, affinity=affinity)]
            hours = rng.uniform(1, 24)
        elif kind < 0.70:
            model = rng.choice(["A100", "A100", "H100"])
            gpus = rng.choice([1, 2])
            reqs = [FlavorRequest("gpus", rng.randint(1, 2), 8, 65536, gpu_model=model, gpus=gpus)]
            hours = rng.uniform(2, 24)
        else:
            model = rng.choice(["A100", "A100", "H100"])
            reqs = [SliceRequest("slices", rng.randint(1, 7), rng.choice(MIG[:4]), model)]
            hours = rng.uniform(1, 24)
        arrival = int(rng.uniform(0, WEEK - 12 * 60))
        lead = 0 if rng.random() < 0.5 else int(rng.uniform(0, 36 * 60))
        flex = rng.choice([0, 2, 6, 12, 24, 48]) * 60
        minutes = int(hours * 60)
        ask = Ask(0, arrival, arrival + lead, flex, minutes, reqs, _weight(reqs))
        asks.append(ask)
        total += ask.weight * _in_week(ask.start, minutes)
    asks.sort(key=lambda a: a.arrival)
    for i, a in enumerate(asks):
        a.n = i
    return asks


class Scheduler(Protocol):
    """What the simulation needs of Ecliptic and of the baseline."""

    def fit(
        self, lease_id: str | None, requests: Sequence[Request], start: datetime, end: datetime
    ) -> Placement | NoFit: ...

    def earliest(
        self,
        requests: Sequence[Request],
        duration: timedelta,
        not_before: datetime,
        horizon: timedelta,
        alternatives: int = 3,
    ) -> list[Window]: ...

    def book(self, lease_id: str, placement: Placement) -> None: ...


def _at(m: int) -> datetime:
    return T0 + timedelta(minutes=m)


def _minute(t: datetime) -> int:
    return int((t - T0).total_seconds() // 60)


def place(sched: Scheduler, ask: Ask) -> Placement | None:
    """Ask a scheduler for one request; the placement granted, if any."""
    if ask.flex == 0:
        got = sched.fit(
            f"lease-{ask.n}", ask.requests, _at(ask.start), _at(ask.start + ask.duration)
        )
        return got if isinstance(got, Placement) else None
    found = sched.earliest(
        ask.requests,
        timedelta(minutes=ask.duration),
        _at(ask.start),
        timedelta(minutes=ask.flex + ask.duration),
        alternatives=0,
    )
    return found[0].placement if found else None


Use = tuple[str, int, int, int, int, int]
"""(host, start, end, vCPUs, memory MiB, GPU compute units); a whole host holds all."""


@dataclass
class Outcome:
    """What one run granted, and what ran where."""

    accepted_hours: float = 0.0
    accepted: int = 0
    waits: list[float] = field(default_factory=list)
    uses: list[Use] = field(default_factory=list)
    preemptible_hours: float = 0.0
    evictions: int = 0

    def grant(self, ask: Ask, placement: Placement) -> int:
        """Count a granted request; returns its start."""
        start = _minute(placement.start)
        self.accepted += 1
        self.accepted_hours += ask.weight * _in_week(start, ask.duration)
        self.waits.append((start - ask.start) / 60)
        for a in placement.allocations:
            units = sum(u for _, u in a.amount.gpu_units)
            whole = -1 if a.amount.whole_host else 0
            self.uses.append(
                (
                    a.host,
                    start,
                    start + ask.duration,
                    whole or a.amount.vcpus,
                    a.amount.memory_mb,
                    units,
                )
            )
        return start


def utilization(uses: list[Use], hosts: dict[str, HostInfo]) -> float:
    """Pool utilization over the week: per host, the busiest resource's share, minute by minute."""
    per_host: dict[str, list[tuple[int, int, int, int, int]]] = {}
    for host, s, e, vcpus, mem, units in uses:
        s, e = max(0, s), min(WEEK, e)
        if e > s:
            info = hosts[host]
            gpus = sum(g.count for g in info.gpus)
            if vcpus < 0:  # whole host
                vcpus, mem, units = info.vcpus, info.memory_mb, gpus * UNITS_PER_GPU
            per_host.setdefault(host, []).append((s, 1, vcpus, mem, units))
            per_host[host].append((e, -1, vcpus, mem, units))
    busy = 0.0
    for host, events in per_host.items():
        info = hosts[host]
        cap_units = max(1, sum(g.count for g in info.gpus) * UNITS_PER_GPU)
        events.sort(key=lambda ev: ev[0])
        level = [0, 0, 0]
        last = 0
        for t, sign, vcpus, mem, units in events:
            share = max(level[0] / info.vcpus, level[1] / info.memory_mb, level[2] / cap_units)
            busy += min(1.0, share) * (t - last)
            last = t
            level[0] += sign * vcpus
            level[1] += sign * mem
            level[2] += sign * units
    return busy / (len(hosts) * WEEK)


def simulate(sched: Scheduler, asks: list[Ask]) -> Outcome:
    """(a) or (b): requests in arrival order, each granted or refused on the spot."""
    out = Outcome()
    for ask in asks:
        placement = place(sched, ask)
        if placement is not None:
            sched.book(f"lease-{ask.n}", placement)
            out.grant(ask, placement)
    return out


@dataclass(order=True)
class _Job:
    """A running preemptible job."""

    ends: int
    server_id: str = field(compare=False)
    host: str = field(compare=False)
    started: int = field(compare=False)
    units: int = field(compare=False)


def simulate_backfill(asks: list[Ask], hosts: dict[str, HostInfo]) -> Outcome:
    """(d): Ecliptic plus preemptible jobs in whatever nobody reserved."""
    engine = Engine(hosts.values(), min_preemptible_lifetime=MIN_LIFE)
    out = Outcome()
    running: dict[str, _Job] = {}
    finishing: list[_Job] = []
    starts: list[tuple[int, str]] = []  # leases not started yet: (start, lease id)
    events = sorted(
        [(a.arrival, 1, a.n) for a in asks] + [(m, 0, -1) for m in range(0, WEEK, TICK)]
    )
    seq = 0

    def stop(job: _Job, now: int) -> None:
        gpus = 1 if job.units else 0
        out.preemptible_hours += (now - job.started) / 60
        out.uses.append((job.host, job.started, now, 8, 32768, gpus * UNITS_PER_GPU))
        engine.remove_preemptible(job.server_id)
        del running[job.server_id]

    def advance(now: int) -> None:
        """Finish jobs and start leases (stopping their victims) in time order up to now."""
        while True:
            next_end = finishing[0].ends if finishing else WEEK + 1
            next_start = starts[0][0] if starts else WEEK + 1
            if min(next_end, next_start) > now:
                return
            if next_start <= next_end:
                when, lid = heapq.heappop(starts)
                placement = engine.booking(lid)
                if placement is not None:
                    for sid in engine.victims(placement, _at(when)):
                        out.evictions += 1
                        stop(running[sid], when)
            else:
                job = heapq.heappop(finishing)
                if job.server_id in running:
                    stop(job, job.ends)

    for now, kind, n in events:
        advance(now)
        if kind == 1:
            ask = asks[n]
            placement = place(engine, ask)
            if placement is not None:
                lid = f"lease-{ask.n}"
                engine.book(lid, placement)
                heapq.heappush(starts, (out.grant(ask, placement), lid))
                advance(now)
            continue
        for host in hosts.values():
            model = host.gpus[0].model if host.gpus else ""
            while True:
                room = engine.backfill_room(host.name, _at(now))
                if room.vcpus < 8 or room.memory_mb < 32768:
                    break
                if model and dict(room.gpus).get(model, 0) < 1:
                    break
                seq += 1
                sid = f"pre-{seq}"
                amount = Amount(vcpus=8, memory_mb=32768, gpus=((model, 1),) if model else ())
                engine.add_preemptible(Preemptible(sid, host.name, amount, _at(now)))
                job = _Job(now + JOB_MINUTES, sid, host.name, now, UNITS_PER_GPU if model else 0)
                running[sid] = job
                heapq.heappush(finishing, job)
    advance(WEEK)
    for job in list(running.values()):
        stop(job, WEEK)
    return out


def run(seed: int, weeks: int, load: float) -> dict[str, float | int]:
    """Every run over ``weeks`` seeded weeks; returns the means per week."""
    hosts = {h.name: h for h in pool()}
    capacity = len(hosts) * WEEK / 60
    sums: dict[str, float] = {}
    waits: dict[str, list[float]] = {"ours": [], "theirs": []}
    for week in range(weeks):
        asks = workload(seed + week, load, capacity)
        ours = simulate(Engine(hosts.values(), min_preemptible_lifetime=MIN_LIFE), asks)
        theirs = simulate(FirstFit(hosts.values()), asks)
        backfill = simulate_backfill(asks, hosts)
        requested = sum(a.weight * _in_week(a.start, a.duration) for a in asks)
        waits["ours"] += ours.waits
        waits["theirs"] += theirs.waits
        figures = {
            "requests": len(asks),
            "requested_hours": requested,
            "accepted_hours": ours.accepted_hours,
            "baseline_accepted_hours": theirs.accepted_hours,
            "upper_bound_hours": min(requested, capacity),
            "accepted": ours.accepted,
            "baseline_accepted": theirs.accepted,
            "utilization": utilization(ours.uses, hosts),
            "baseline_utilization": utilization(theirs.uses, hosts),
            "accepted_hours_with_backfill": backfill.accepted_hours,
            "preemptible_job_hours": backfill.preemptible_hours,
            "preemptible_evictions": backfill.evictions,
            "utilization_with_backfill": utilization(backfill.uses, hosts),
            "weeks_ecliptic_ahead": float(ours.accepted_hours > theirs.accepted_hours),
        }
        for k, v in figures.items():
            sums[k] = sums.get(k, 0.0) + v
    out: dict[str, float | int] = {"weeks": weeks, "hosts": len(hosts), "capacity_hours": capacity}
    for k, v in sums.items():
        out[k] = round(v / weeks, 3 if "utilization" in k else 1)
    out["weeks_ecliptic_ahead"] = int(sums["weeks_ecliptic_ahead"])
    out["mean_wait_h"] = round(sum(waits["ours"]) / max(1, len(waits["ours"])), 2)
    out["baseline_mean_wait_h"] = round(sum(waits["theirs"]) / max(1, len(waits["theirs"])), 2)
    return out


def main() -> None:
    """Command line entry."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    p.add_argument("--seed", type=int, default=11, help="seed of the first week")
    p.add_argument("--weeks", type=int, default=10, help="seeded weeks to average over")
    p.add_argument("--load", type=float, default=1.3, help="offered load / pool capacity")
    a = p.parse_args()
    figures = run(a.seed, a.weeks, a.load)
    if a.json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:>30}: {v}")


if __name__ == "__main__":
    main()
