"""The store side of the scheduler benchmark: bookings in a database, rebuild, create, follow.

``measure(hosts, bookings, ...)`` writes the scenario's hosts and bookings into a fresh
database (SQLite by default, or the PostgreSQL database given; bulk inserts), then
measures what a running instance pays on top of the pure engine: rebuilding the engine
from the database at start, creating a lease through the services layer including its
transaction commit (credits charged, allocations written), and how long a lease booked
by one process takes to reach another process's engine (a second ``Database`` and
``Booking`` with its follower thread, as a second ``ecliptic serve`` would have).
"""

from __future__ import annotations

import random
import tempfile
import time
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from bench.harness import chunks, percentile, spread
from ecliptic.api.schemas import LeaseCreate
from ecliptic.clock import ManualClock
from ecliptic.phases import LeasePhase
from ecliptic.scheduler.model import HostInfo, Placement
from ecliptic.services import credits, leases
from ecliptic.services.booking import Booking, amount_to_json, build_engine
from ecliptic.services.caller import Caller
from ecliptic.services.catalogue import seed_flavors
from ecliptic.services.identity import create_tenancy
from ecliptic.store.db import Database
from ecliptic.store.migrate import upgrade
from ecliptic.store.models import Host, Lease, LeaseAllocation
from ecliptic.store.types import new_id
from ecliptic.store.workqueue import WorkQueue


def _host_row(h: HostInfo) -> dict[str, Any]:
    return {
        "id": new_id(),
        "name": h.name,
        "vcpus": h.vcpus,
        "memory_mb": h.memory_mb,
        "disk_gb": h.disk_gb,
        "state": "up" if h.up else "down",
        "gpus": [
            {
                "model": g.model,
                "count": g.count,
                "memory_gb": g.memory_gb,
                "mig_profiles": list(g.mig_profiles),
            }
            for g in h.gpus
        ],
        "nics": [{"name": "ib0", "speed_gbps": 100, "rdma": True, "sriov_vfs": 8}]
        if h.rdma
        else [],
        "properties": dict(h.properties),
    }


def measure(
    hosts: list[HostInfo],
    bookings: Mapping[str, Placement],
    requests: list[dict[str, Any]],
    now: Any,
    *,
    follow_requests: list[dict[str, Any]],
    repeat: int = 3,
    database_url: str | None = None,
) -> dict[str, Any]:
    """Rebuild seconds, create-with-commit p95 (ms) and follow p95 (ms), each with its
    spread over ``repeat`` consecutive parts of the requests."""
    tmp = Path(tempfile.mkdtemp(prefix="ecl-bench-db-"))
    url = database_url or f"sqlite:///{tmp / 'bench.db'}"
    db = Database(url)
    upgrade(db)
    clock = ManualClock(now)
    root = Caller("root", "root", True)
    tenancy = create_tenancy(db, root, "bench")
    with db.write() as s:
        seed_flavors(s)
        s.execute(insert(Host), [_host_row(h) for h in hosts])
        lease_rows, alloc_rows = [], []
        for i, (lid, p) in enumerate(bookings.items()):
            lease_rows.append(
                {
                    "id": lid[:32].ljust(32, "0") if len(lid) != 32 else lid,
                    "tenancy_id": tenancy.id,
                    "name": f"b{i}",
                    "start_at": p.start,
                    "end_at": p.end,
                    "grace_s": 600,
                    "phase": LeasePhase.PENDING,
                    "phase_reason": "",
                    "generation": 1,
                    "spec": {},
                    "status": {},
                }
            )
            for a in p.allocations:
                alloc_rows.append(
                    {
                        "lease_id": lease_rows[-1]["id"],
                        "reservation": a.key,
                        "host": a.host,
                        "amount": amount_to_json(a.amount),
                        "slots": a.slots,
                    }
                )
        for chunk in range(0, len(lease_rows), 20_000):
            s.execute(insert(Lease), lease_rows[chunk : chunk + 20_000])
        for chunk in range(0, len(alloc_rows), 20_000):
            s.execute(insert(LeaseAllocation), alloc_rows[chunk : chunk + 20_000])
        for rc in (
            "host:cpu",
            "host:A100",
            "host:H100",
            "host:L40S",
            "vcpu",
            "gpu:A100",
            "slice:1g.10gb",
        ):
            credits.grant(
                s, tenancy.id, "bench", rc, Decimal(10**8), now, now + timedelta(days=400)
            )
    t0 = time.perf_counter()
    with db.read() as s:
        build_engine(s, timedelta(hours=1))
    rebuild_s = time.perf_counter() - t0
    booking = Booking(db, clock, min_preemptible_lifetime=timedelta(hours=1))
    booking.freeze_gc = True  # as ``ecliptic serve`` does
    with booking.reading():
        pass  # the first use builds the engine; creates below pay only their own work
    caller = Caller("root", "root", True, tenancy.id, "bench", "admin")
    queue = WorkQueue(db, clock)
    times = []
    refused = 0
    for i, req in enumerate(requests):
        body = LeaseCreate.model_validate({**req, "name": f"new{i}"})
        t0 = time.perf_counter()
        try:
            leases.create_lease(booking, queue, caller, body)
        except leases.LeaseNoCapacity:
            refused += 1
        times.append((time.perf_counter() - t0) * 1000)
    delays = _follow(db, url, booking, queue, caller, follow_requests, now)
    db.dispose()
    creates = [percentile(part, 95) for part in chunks(times, repeat)]
    follows = [percentile(part, 95) for part in chunks(delays, repeat)]
    return {
        "rebuild_s": round(rebuild_s, 2),
        "create_p95_ms": spread(creates)[1],
        "create_p95_ms_spread": spread(creates),
        "create_p50_ms": round(percentile(times, 50), 2),
        "create_refused_store": refused,
        "follow_ms": spread(follows)[1],
        "follow_ms_spread": spread(follows),
        "follow_p50_ms": round(percentile(delays, 50), 2),
        "follow_rebuilds": booking.rebuilds - 1,
    }


def _follow(
    db: Database,
    url: str,
    booking: Booking,
    queue: WorkQueue,
    caller: Caller,
    requests: list[dict[str, Any]],
    now: Any,
) -> list[float]:
    """Milliseconds from a lease's commit in one process until another's engine holds it."""
    other_db = Database(url)
    other = Booking(other_db, ManualClock(now), min_preemptible_lifetime=timedelta(hours=1))
    with other.reading():
        pass  # built once, as at the start of a second process
    other.follow()
    rng = random.Random(1)
    delays: list[float] = []
    try:
        for i, req in enumerate(requests):
            time.sleep(rng.uniform(0, 0.03))  # not in step with the follower's poll
            body = LeaseCreate.model_validate({**req, "name": f"follow{i}"})
            try:
                lease = leases.create_lease(booking, queue, caller, body)
            except leases.LeaseNoCapacity:
                continue
            t0 = time.perf_counter()  # create_lease returns right after its commit
            while other.engine.booking(lease.id) is None:
                if time.perf_counter() - t0 > 30:
                    raise RuntimeError("the other engine never saw a booking")
                time.sleep(0.0002)
            delays.append((time.perf_counter() - t0) * 1000)
        if other.rebuilds != 1:
            raise RuntimeError(f"the follower rebuilt {other.rebuilds - 1} times")
    finally:
        other.stop()
        other_db.dispose()
    return delays
