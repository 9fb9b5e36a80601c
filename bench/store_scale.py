"""The store side of the scheduler benchmark: bookings in SQLite, rebuild and create with commit.

``measure(hosts, bookings)`` writes the scenario's hosts and bookings into a fresh SQLite
database (bulk inserts), then measures what a running instance pays on top of the pure
engine: rebuilding the engine from the database at start, and creating a lease through
the services layer including its transaction commit (credits charged, allocations
written).
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Mapping
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import insert

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
) -> dict[str, float]:
    """Rebuild seconds from SQLite and create-with-commit p95 (ms) for ``requests``."""
    tmp = Path(tempfile.mkdtemp(prefix="ecl-bench-db-"))
    db = Database(f"sqlite:///{tmp / 'bench.db'}")
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
    with booking.reading():
        pass  # the first use builds the engine; creates below pay only their own work
    caller = Caller("root", "root", True, tenancy.id, "bench", "admin")
    queue = WorkQueue(db, clock)
    times = []
    for i, req in enumerate(requests):
        body = LeaseCreate.model_validate({**req, "name": f"new{i}"})
        t0 = time.perf_counter()
        with contextlib.suppress(leases.LeaseNoCapacity):
            leases.create_lease(booking, queue, caller, body)
        times.append((time.perf_counter() - t0) * 1000)
    db.dispose()
    times.sort()
    return {
        "rebuild_s": round(rebuild_s, 2),
        "create_p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
        "create_p50_ms": round(times[len(times) // 2], 2),
    }
