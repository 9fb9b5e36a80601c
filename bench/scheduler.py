"""Reservation engine speed at cloud scale: 10,000 hosts, 100,000 reservations over 90 days.

    python -m bench.scheduler [--json] [--hosts 10000] [--reservations 100000] [--seed 7]
                              [--repeat 3] [--database-url URL]

Builds a seeded inventory (CPU hosts, A100 and H100 hosts with MIG slices, L40S hosts,
half of them with RDMA, in racks of 40) and a 90-day book of whole-host leases, flavor
slots and GPU slices that is valid by construction, then measures, in memory:

- ``earliest_p95_ms``: ``Engine.earliest`` for 8 hosts matching a filter (a rack, a GPU
  model with RDMA, a driver version...), 2 to 72 hours, from a random day, 30-day horizon,
  3 alternatives; ``baseline_earliest_p95_ms`` is the Blazar-style first-fit for the same
  queries (one-hour steps), ``earliest_speedup`` the ratio of the two;
- ``fit_book_p95_ms``: ``fit`` then ``book`` of a mix of new leases, in memory;
- ``create_p95_ms``: creating a lease through the services on SQLite (or the database
  given) holding the same book, including the transaction commit (credits charged,
  allocations written);
- ``follow_ms``: p95 of the time from a lease's commit in one process until the engine of
  another process on the same database holds it (its follower thread: PostgreSQL
  LISTEN/NOTIFY, or a look at the SQLite files every 20 ms), with no rebuild;
- ``calendar_ms``: a 30-day hourly calendar of every resource class (worst of 3), once the
  calendar index exists; ``calendar_first_ms`` is the first one after a rebuild, which also
  builds that index (it is then kept up to date by every booking);
- ``rebuild_s``: building the engine from the SQLite database holding the book (what a
  restart costs); ``engine_rebuild_s`` is ``Engine.rebuild`` from plain lists;
- ``rss_mb``: peak resident memory of the whole process (generator and baseline included).

Every timed figure is measured ``--repeat`` times (consecutive parts of its samples, or
passes over the same queries): the figure is the median, and ``<figure>_spread`` the
minimum, median and maximum, so one noisy stretch can neither hide nor fake a result.
``load`` is the machine's load average before and after.

After each bulk build the collector runs and the heap is frozen, outside the timings, as
``ecliptic serve`` does at start; ``gc_full_ms`` is what one full collection costs with this
engine alive, the pause a process that does not freeze would see now and then.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import random
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

import psutil

from bench.harness import chunks, percentile, spread
from bench.store_scale import measure as measure_store
from ecliptic.scheduler.baseline import FirstFit
from ecliptic.scheduler.engine import Engine
from ecliptic.scheduler.filters import compile_filter, host_properties
from ecliptic.scheduler.model import (
    Allocation,
    Amount,
    FlavorRequest,
    GpuSpec,
    HostInfo,
    HostRequest,
    NoFit,
    Placement,
    Request,
    SliceRequest,
)
from ecliptic.scheduler.resources import HostShape, SlotDemand, place_slots, whole_host_amount
from ecliptic.scheduler.timeline import Timeline

T0 = datetime(2030, 1, 1, tzinfo=UTC)
DAY = 24 * 60
HORIZON_DAYS = 90
MIG = ("1g.10gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb")

# Filters the generated leases and the measured queries use (rack filters are added per rack).
HOST_FILTERS = [
    'gpu_model == "A100" and rdma',
    'gpu_model == "H100" and driver >= "550"',
    "gpu_count >= 8",
    'gpu_model == "L40S"',
    'not gpu_model and cpu_model == "genoa"',
    "not gpu_model and vcpus >= 128",
    'not gpu_model and rdma and rack in ["r005", "r006", "r007", "r008"]',
]


def inventory(n: int, rng: random.Random) -> list[HostInfo]:
    """``n`` hosts: 50% CPU, 30% A100, 15% H100, 5% L40S, in racks of 40."""
    hosts = []
    for i in range(n):
        frac = i / n
        rack = f"r{i // 40:03d}"
        props: dict[str, str | int | float | bool] = {"rack": rack, "credit_rate": 1.0}
        rdma = rng.random() < 0.5
        if frac < 0.5:
            big = rng.random() < 0.4
            props["cpu_model"] = rng.choice(["icelake", "genoa"])
            hosts.append(
                HostInfo(
                    f"cpu-{i:05d}",
                    128 if big else 64,
                    (512 if big else 256) * 1024,
                    2000 if big else 1000,
                    rdma=rdma,
                    properties=props,
                )
            )
            continue
        if frac < 0.8:
            gpus = GpuSpec("A100", rng.choice([4, 8]), 80, MIG)
            props["driver"] = rng.choice(["525.85.12", "535.104.05", "550.54.14"])
        elif frac < 0.95:
            gpus = GpuSpec("H100", 8, 80, MIG)
            props["driver"] = rng.choice(["535.104.05", "550.54.14", "550.90.07"])
            rdma = True
        else:
            gpus = GpuSpec("L40S", 4, 48)
            props["driver"] = "550.54.14"
        hosts.append(
            HostInfo(
                f"gpu-{i:05d}", 96, 1024 * 1024, 4000, gpus=(gpus,), rdma=rdma, properties=props
            )
        )
    return hosts


def _duration(rng: random.Random, lo_h: float, hi_h: float) -> int:
    """Minutes, log-uniform between ``lo_h`` and ``hi_h`` hours, on a 5-minute grid."""
    m = 60 * math.exp(rng.uniform(math.log(lo_h), math.log(hi_h)))
    return max(5, int(m) // 5 * 5)


@dataclass
class Book:
    """The generated bookings, valid by construction."""

    bookings: dict[str, Placement]
    attempts: int


def generate(hosts: list[HostInfo], n: int, rng: random.Random) -> Book:
    """``n`` leases over 90 days: 40% whole hosts, 35% flavor slots, 25% GPU slices."""
    shapes = [HostShape(h) for h in hosts]
    tls = [Timeline(s.zero) for s in shapes]
    props = [host_properties(h) for h in hosts]
    racks: dict[str, list[int]] = {}
    for i, info in enumerate(hosts):
        racks.setdefault(str(info.properties["rack"]), []).append(i)
    groups = [[i for i in range(len(hosts)) if compile_filter(f)(props[i])] for f in HOST_FILTERS]
    cpu_ids = [i for i, info in enumerate(hosts) if not info.gpus]
    by_model: dict[str, list[int]] = {}
    for i, info in enumerate(hosts):
        for g in info.gpus:
            by_model.setdefault(g.model, []).append(i)
    # Shared work concentrates on part of each kind of host, as best-fit would.
    shared = {
        "cpu": cpu_ids[: len(cpu_ids) // 3],
        "A100": by_model.get("A100", [])[: len(by_model.get("A100", [])) // 3],
        "H100": by_model.get("H100", [])[: len(by_model.get("H100", [])) // 3],
        "L40S": by_model.get("L40S", []),
    }
    bookings: dict[str, Placement] = {}
    attempts = 0
    rack_names = sorted(racks)
    while len(bookings) < n:
        attempts += 1
        lid = f"lease-{len(bookings):06d}"
        kind = rng.random()
        if kind < 0.40:
            d = _duration(rng, 1, 14 * 24)
            s = rng.randrange(0, HORIZON_DAYS * DAY - d)
            count = rng.choice([1, 1, 1, 2, 2, 4, 8])
            if rng.random() < 0.5:
                cands = list(racks[rng.choice(rack_names)])
            else:
                cands = list(groups[rng.randrange(len(groups))])
            rng.shuffle(cands)
            free = [h for h in cands[:200] if tls[h].is_free(s, s + d)][:count]
            if len(free) < count:
                continue
            allocs = []
            for h in free:
                tls[h].add(s, s + d, shapes[h].whole)
                allocs.append(
                    Allocation("hosts", hosts[h].name, whole_host_amount(hosts[h], shapes[h]))
                )
        else:
            d = _duration(rng, 1, 7 * 24)
            s = rng.randrange(0, HORIZON_DAYS * DAY - d)
            if kind < 0.60:
                demand, count, pool = (
                    SlotDemand(rng.choice([2, 4, 8, 16, 32]), rng.choice([4, 8, 16]) * 1024),
                    rng.randint(1, 4),
                    shared["cpu"],
                )
            elif kind < 0.75:
                model = rng.choice(["A100", "A100", "H100", "L40S"])
                demand = SlotDemand(8, 65536, 0, model, rng.choice([1, 1, 2, 4]))
                count, pool = rng.randint(1, 2), shared[model]
            else:
                model = rng.choice(["A100", "H100"])
                demand = SlotDemand(gpu_model=model, profile=rng.choice(MIG[:4]))
                count, pool = rng.randint(1, 7), shared[model]
            allocs = []
            for h in rng.sample(pool, 6):
                peak = tls[h].peak(s, s + d)
                room = [c - p for c, p in zip(shapes[h].cap, peak, strict=True)]
                got = place_slots(shapes[h], room, demand, count)
                if got.slots == count:
                    tls[h].add(s, s + d, got.vector)
                    slices: tuple[tuple[str, int], ...] = ()
                    if demand.profile:
                        slices = ((f"{demand.gpu_model}:{demand.profile}", count),)
                    amount = Amount(
                        vcpus=got.vector[1],
                        memory_mb=got.vector[2],
                        gpus=got.gpus,
                        slices=slices,
                        gpu_units=got.gpu_units,
                    )
                    allocs.append(Allocation("slots", hosts[h].name, amount, slots=count))
                    break
            if not allocs:
                continue
        bookings[lid] = Placement(
            T0 + timedelta(minutes=s), T0 + timedelta(minutes=s + d), tuple(allocs)
        )
    return Book(bookings, attempts)


def _timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t0) * 1000, out


def new_lease(rng: random.Random, racks: list[str]) -> list[Request]:
    """One lease request of the measured create mix."""
    kind = rng.random()
    if kind < 0.4:
        text = rng.choice([*HOST_FILTERS, f'rack == "{rng.choice(racks)}"'])
        n = rng.choice([1, 2, 4, 8])
        return [HostRequest("hosts", n, n, text)]
    if kind < 0.65:
        return [
            FlavorRequest(
                "slots",
                rng.randint(1, 8),
                rng.choice([2, 4, 8, 16]),
                8192,
                affinity=rng.choice(["none", "none", "anti-affinity"]),
            )
        ]
    if kind < 0.8:
        return [FlavorRequest("gpu", rng.randint(1, 4), 8, 65536, gpu_model="A100", gpus=1)]
    return [SliceRequest("slices", rng.randint(1, 7), rng.choice(MIG[:4]), "A100")]


Query = tuple[list[Request], timedelta, datetime]


def baseline_earliest(
    hosts: list[HostInfo], bookings: dict[str, Placement], queries: list[Query]
) -> list[float]:
    """Milliseconds the first-fit baseline takes for each ``earliest`` query."""
    baseline = FirstFit(hosts)
    for lid, p in bookings.items():
        baseline.book(lid, p)
    return [
        _timed(partial(baseline.earliest, reqs, dur, nb, timedelta(days=30)))[0]
        for reqs, dur, nb in queries
    ]


def run(
    n_hosts: int, n_res: int, seed: int, repeat: int = 3, database_url: str | None = None
) -> dict[str, object]:
    """Every measurement; returns the figures."""
    load_before = os.getloadavg()
    rng = random.Random(seed)
    hosts = inventory(n_hosts, rng)
    t0 = time.perf_counter()
    book = generate(hosts, n_res, rng)
    gen_s = time.perf_counter() - t0
    gc.collect()
    gc.freeze()  # the generated book lives on: keep the collector off it, as the server does

    t0 = time.perf_counter()
    engine = Engine.rebuild(hosts, book.bookings)
    rebuild_s = time.perf_counter() - t0
    gc_full_ms, _ = _timed(gc.collect)
    gc.freeze()

    racks = sorted({str(h.properties["rack"]) for h in hosts})
    qrng = random.Random(seed + 1)
    queries: list[Query] = []
    for _ in range(200):
        text = qrng.choice([*HOST_FILTERS, f'rack == "{qrng.choice(racks)}"'])
        queries.append(
            (
                [HostRequest("hosts", 8, 8, text)],
                timedelta(minutes=_duration(qrng, 2, 72)),
                T0 + timedelta(minutes=qrng.randrange(0, 60 * DAY)),
            )
        )
    ours: list[float] = []
    waits: list[float] = []
    passes: list[float] = []
    for k in range(repeat):
        this_pass = []
        for reqs, dur, nb in queries:
            ms, found = _timed(partial(engine.earliest, reqs, dur, nb, timedelta(days=30)))
            this_pass.append(ms)
            if k == 0 and isinstance(found, list) and found:
                waits.append((found[0].start - nb).total_seconds() / 3600)
        passes.append(percentile(this_pass, 95))
        ours += this_pass if k == 0 else []

    n_base = min(len(queries), 60)
    theirs = baseline_earliest(hosts, book.bookings, queries[:n_base])
    gc.collect()

    crng = random.Random(seed + 2)
    creates: list[float] = []
    refused = 0
    for i in range(1000):
        reqs = new_lease(crng, racks)
        d = _duration(crng, 1, 72)
        s = T0 + timedelta(minutes=crng.randrange(0, 80 * DAY))
        t1 = time.perf_counter()
        got = engine.fit(f"new-{i}", reqs, s, s + timedelta(minutes=d))
        if isinstance(got, NoFit):
            refused += 1
        else:
            engine.book(f"new-{i}", got)
        creates.append((time.perf_counter() - t1) * 1000)

    first_ms, _ = _timed(
        lambda: engine.calendar(T0 + timedelta(days=9), T0 + timedelta(days=39), timedelta(hours=1))
    )
    gc.collect()
    gc.freeze()
    calendars = []
    for k in range(3):
        start = T0 + timedelta(days=10 + k)
        ms, rows = _timed(
            partial(engine.calendar, start, start + timedelta(days=30), timedelta(hours=1))
        )
        calendars.append(ms)
    rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rss_engine = psutil.Process().memory_info().rss / 2**20
    # The store's share: the same book in SQLite, rebuilt from it, and leases created
    # through the services with their commit (credits charged, allocations written).
    engine = Engine([])  # drop the big engine before the store part
    gc.unfreeze()
    gc.collect()
    srng = random.Random(seed + 3)
    bodies = []
    for _ in range(100 * repeat + 30 * repeat):
        start = T0 + timedelta(minutes=srng.randrange(0, 80 * DAY))
        kind = srng.random()
        if kind < 0.5:
            res = {
                "kind": "host",
                "count": srng.randint(1, 4),
                "where": f'rack == "{srng.choice(racks)}"',
            }
        elif kind < 0.8:
            res = {"kind": "flavor", "vcpus": 8, "memory_mb": 32768, "count": srng.randint(1, 8)}
        else:
            res = {"kind": "gpu_slice", "profile": "1g.10gb", "count": srng.randint(1, 7)}
        bodies.append(
            {"start": start, "duration": f"{_duration(srng, 1, 72)}m", "reservations": [res]}
        )
    store = measure_store(
        hosts,
        book.bookings,
        bodies[: 100 * repeat],
        T0,
        follow_requests=bodies[100 * repeat :],
        repeat=repeat,
        database_url=database_url,
    )
    fit_book = [percentile(part, 95) for part in chunks(creates, repeat)]
    ours_same = percentile(ours[:n_base], 95)
    base_p95 = percentile(theirs, 95)
    return {
        "hosts": n_hosts,
        "reservations": len(book.bookings),
        "earliest_p95_ms": spread(passes)[1],
        "earliest_p95_ms_spread": spread(passes),
        "earliest_p50_ms": round(percentile(ours, 50), 2),
        "earliest_max_ms": round(max(ours), 1),
        "baseline_earliest_p95_ms": round(base_p95, 1),
        "earliest_speedup": round(base_p95 / max(ours_same, 1e-9), 1),
        "earliest_mean_wait_h": round(sum(waits) / max(1, len(waits)), 1),
        "earliest_found": len(waits),
        "create_p95_ms": store["create_p95_ms"],
        "create_p95_ms_spread": store["create_p95_ms_spread"],
        "create_p50_ms": store["create_p50_ms"],
        "create_refused_store": store["create_refused_store"],
        "follow_ms": store["follow_ms"],
        "follow_ms_spread": store["follow_ms_spread"],
        "follow_p50_ms": store["follow_p50_ms"],
        "fit_book_p95_ms": spread(fit_book)[1],
        "fit_book_p95_ms_spread": spread(fit_book),
        "fit_book_p50_ms": round(percentile(creates, 50), 2),
        "create_refused": refused,
        "calendar_ms": round(max(calendars), 1),
        "calendar_ms_spread": spread(calendars, 1),
        "calendar_first_ms": round(first_ms, 1),
        "calendar_rows": len(rows) if isinstance(rows, list) else 0,
        "rebuild_s": store["rebuild_s"],
        "engine_rebuild_s": round(rebuild_s, 2),
        "gc_full_ms": round(gc_full_ms, 0),
        "generate_s": round(gen_s, 1),
        "rss_mb": round(rss_peak, 0),
        "rss_engine_mb": round(rss_engine, 0),
        "rss_with_store_peak_mb": round(
            resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0
        ),
        "store": "postgresql" if database_url else "sqlite",
        "repeat": repeat,
        "load": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "machine": f"{platform.node()} {psutil.cpu_count()} cpu {platform.machine()}",
    }


def main() -> None:
    """Command line entry."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    p.add_argument("--hosts", type=int, default=10_000)
    p.add_argument("--reservations", type=int, default=100_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--repeat", type=int, default=3, help="repetitions of each timed figure")
    p.add_argument(
        "--database-url",
        help="an empty PostgreSQL database for the store part (default: a new SQLite file)",
    )
    a = p.parse_args()
    figures = run(a.hosts, a.reservations, a.seed, a.repeat, a.database_url)
    if a.json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:>26}: {v}")


if __name__ == "__main__":
    main()
