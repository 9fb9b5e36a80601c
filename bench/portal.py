"""Portal page speed with a populated store: 50 tenancies, 1,000 leases, 1,000 platforms.

    python -m bench.portal [--json] [--samples 40]

Runs a real ``ecliptic serve`` (SQLite, local cloud, gateway off) on a fresh data dir.
Tenancies, their members and credit allocations, and the 1,000 leases (20 per tenancy,
one flavor slot each, spread over the next 60 days) are made through the REST API, as
users would; the 1,000 platforms (20 per tenancy, workstation type, READY) are written into
the store directly, since building them is not what is measured. A member of one tenancy
(and an administrator for the operator pages) then signs in through the sign-in form and
asks each page ``--samples`` times over loopback with its session cookie. The time is the
whole request as the client sees it (an upper bound of the server's time); p95 per page.

Output (``--json``): one line with ``page_p95_ms_max`` (the slowest page's p95),
``dashboard_p95_ms``, ``pages`` (how many pages were measured) and ``per_page``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from bench.harness import PASSWORD, percentile, serve
from ecliptic.phases import PlatformPhase
from ecliptic.platforms.types import Catalogue
from ecliptic.store.models import Platform, PlatformAccess, Tenancy, User

TENANCIES = 50
PER_TENANCY = 20
USER_PASSWORD = "bench-portal-password"


def seed(url: str, http: httpx.Client, data_dir: Path) -> None:
    """Tenancies, members, credits and leases through the API; platforms in the store."""
    start = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=1)
    for t in range(TENANCIES):
        name = f"lab{t:02d}"
        assert http.post("/tenancies", json={"name": name}).status_code == 201
        r = http.post("/users", json={"name": f"user{t:02d}", "password": USER_PASSWORD})
        assert r.status_code == 201, r.text
        r = http.put(f"/tenancies/{name}/members", json={"user": f"user{t:02d}", "role": "member"})
        assert r.status_code == 200, r.text
        r = http.post(
            "/credits/allocations",
            json={
                "tenancy": name,
                "name": "grant",
                "hours": {"vcpu": 1e6},
                "end": (start + timedelta(days=90)).isoformat(),
            },
        )
        assert r.status_code == 201, r.text
        for i in range(PER_TENANCY):
            at = start + timedelta(minutes=(t * PER_TENANCY + i) * 24 * 60 * 60 // 1000)
            r = http.post(
                "/leases",
                json={
                    "name": f"lease{i:02d}",
                    "start": at.isoformat(),
                    "duration": "1d",
                    "reservations": [{"kind": "flavor", "flavor": "m1.small", "count": 1}],
                },
                headers={"X-Ecliptic-Tenancy": name},
            )
            assert r.status_code == 201, r.text
    ptype = Catalogue().get("workstation")
    assert ptype is not None
    engine = create_engine(f"sqlite:///{data_dir / 'ecliptic.db'}", connect_args={"timeout": 30})
    with Session(engine) as session, session.begin():
        for t in range(TENANCIES):
            tenancy = session.scalar(select(Tenancy).where(Tenancy.name == f"lab{t:02d}"))
            user = session.scalar(select(User).where(User.name == f"user{t:02d}"))
            assert tenancy is not None and user is not None
            for i in range(PER_TENANCY):
                row = Platform(
                    tenancy_id=tenancy.id,
                    name=f"ws{i:02d}",
                    type_name="workstation",
                    type_version=ptype.type.version,
                    created_by=user.id,
                    phase=PlatformPhase.READY,
                    phase_reason="ready",
                    spec={
                        "type": ptype.type.model_dump(mode="json"),
                        "source": ptype.source,
                        "parameters": {"lease": None, "size": "m1.small", "desktop": False},
                        "preemptible": False,
                    },
                    status={},
                )
                row.access = [PlatformAccess(user_id=user.id)]
                session.add(row)
    engine.dispose()


def browser(url: str, user: str, password: str) -> httpx.Client:
    """A client signed in through the sign-in form (the portal's session cookie)."""
    c = httpx.Client(base_url=url, timeout=60)
    r = c.post(
        "/login",
        data={"username": user, "password": password, "next": "/"},
        headers={"Origin": url},
    )
    assert r.status_code == 303, r.text
    return c


def measure(c: httpx.Client, path: str, samples: int) -> float:
    """p95 of ``samples`` GETs of ``path`` (ms), after one warm-up."""
    r = c.get(path)
    assert r.status_code == 200, (path, r.status_code, r.text[:300])
    times = []
    for _ in range(samples):
        t0 = time.perf_counter()
        r = c.get(path)
        times.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200, path
    return percentile(times, 0.95)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--samples", type=int, default=40)
    args = ap.parse_args()
    with serve(workers=1) as s:
        t0 = time.monotonic()
        seed(s.url, s.http, s.data_dir)
        seeded_s = time.monotonic() - t0
        member = browser(s.url, "user07", USER_PASSWORD)
        admin = browser(s.url, "admin", PASSWORD)
        t = "/t/lab07"
        member_pages = [
            f"{t}/",
            f"{t}/catalogue",
            f"{t}/catalogue/workstation",
            f"{t}/platforms",
            f"{t}/platforms/ws05",
            f"{t}/leases",
            f"{t}/leases/lease05",
            f"{t}/leases/find?kind=flavor&count=1&flavor=m1.small&duration=4h",
            f"{t}/calendar",
            f"{t}/servers",
            f"{t}/credits",
            f"{t}/images",
        ]
        admin_pages = [
            "/admin/hosts",
            "/admin/tenancies",
            "/admin/tenancies/lab07",
            "/admin/credits",
            "/admin/preemptible",
            "/admin/efficiency",
        ]
        per_page = {p: round(measure(member, p, args.samples), 1) for p in member_pages}
        per_page |= {p: round(measure(admin, p, args.samples), 1) for p in admin_pages}
    out = {
        "page_p95_ms_max": max(per_page.values()),
        "dashboard_p95_ms": per_page[f"{t}/"],
        "pages": len(per_page),
        "per_page": per_page,
        "seeded": {
            "tenancies": TENANCIES,
            "leases": TENANCIES * PER_TENANCY,
            "platforms": TENANCIES * PER_TENANCY,
            "seconds": round(seeded_s, 1),
        },
        "machine": f"{host_platform.machine()}, {os.cpu_count()} CPUs, {host_platform.release()}",
    }
    if args.json:
        print(json.dumps(out))
    else:
        for p, ms in sorted(per_page.items(), key=lambda kv: -kv[1]):
            print(f"{ms:8.1f} ms  {p}")
        print(f"slowest p95 {out['page_p95_ms_max']} ms, dashboard {out['dashboard_p95_ms']} ms")


if __name__ == "__main__":
    main()
