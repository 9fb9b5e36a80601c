"""Leases, servers inside them, preemptible backfill and credits, end to end on the local cloud.

Time is a manual clock the test moves: lease events fire when it says so, not by sleeping.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import pytest
from fastapi.testclient import TestClient

from ecliptic.api.app import create_app
from ecliptic.backends.base import ServiceSpec
from ecliptic.clock import ManualClock
from ecliptic.config import load_settings
from ecliptic.runtime import Runtime
from tests.api.conftest import SMALL_INVENTORY, Api, _delete_everything, login
from tests.conftest import migrated_sqlite
from tests.waiting import wait_until

T0 = datetime.now(UTC).replace(second=0, microsecond=0)


@pytest.fixture
def clocked(tmp_path: Path) -> Iterator[tuple[Api, ManualClock, Runtime]]:
    inv = tmp_path / "inventory.yaml"
    inv.write_text(SMALL_INVENTORY)
    settings = load_settings(data_dir=tmp_path / "data", inventory_path=inv)
    settings = type(settings)(
        **{
            **settings.__dict__,
            "database_url": migrated_sqlite(tmp_path / "ecl.db"),
            "preemptible_min_lifetime": timedelta(hours=1),
        }
    )
    clock = ManualClock(T0)
    rt = Runtime(settings, clock=clock)
    rt.start()
    try:
        with TestClient(create_app(rt)) as c:
            yield Api(c, login(c, "admin", "test-admin-password")), clock, rt
    finally:
        _delete_everything(rt)
        rt.stop()


def advance(rt: Runtime, clock: ManualClock, delta: timedelta) -> None:
    clock.advance(delta)
    rt.queue.notify()


def wait_for(what: str, check: Any, timeout: float = 20) -> Any:
    return wait_until(check, timeout, what)


def lease_phase(api: Api, name: str) -> str:
    return str(api.get(f"/leases/{name}").json()["phase"])


def test_servers_live_inside_their_lease_and_go_with_it(
    clocked: tuple[Api, ManualClock, Runtime],
) -> None:
    api, clock, rt = clocked
    r = api.post(
        "/leases",
        {
            "name": "work",
            "duration": "2h",
            "grace": "5m",
            "reservations": [{"kind": "flavor", "flavor": "m1.small", "count": 2}],
        },
    )
    assert r.status_code == 201, r.text
    wait_for("lease active", lambda: lease_phase(api, "work") == "ACTIVE")
    for n in ("w1", "w2"):
        r = api.post("/servers", {"name": n, "flavor": "m1.small", "lease": "work"})
        assert r.status_code == 202, r.text
    r = api.post("/servers", {"name": "w3", "flavor": "m1.small", "lease": "work"})
    assert r.status_code == 409 and "all in use" in r.json()["detail"]
    r = api.post("/servers", {"name": "big", "flavor": "m1.large", "lease": "work"})
    assert r.status_code == 422 and "bigger than a slot" in r.json()["detail"]
    r = api.post(
        "/servers", {"name": "x", "flavor": "m1.small", "lease": "work", "reservation": "nope"}
    )
    assert r.status_code == 422 and "no reservation 'nope'" in r.json()["detail"]
    # An update never ends a lease, nor answers 200 for nothing; it counts its servers.
    for change in ({"shorten": "100d"}, {"extend": "0m"}, {"extend": "1h", "shorten": "1h"}):
        r = api.client.patch("/api/v1/leases/work", json=change, headers=api.headers)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    assert (
        "lease end work"
        in api.client.patch(
            "/api/v1/leases/work", json={"shorten": "3h"}, headers=api.headers
        ).json()["detail"]
    )
    r = api.client.patch("/api/v1/leases/work", json={"before_end": "30m"}, headers=api.headers)
    assert r.status_code == 200 and r.json()["servers"] == 2, r.text
    assert lease_phase(api, "work") == "ACTIVE"
    host = api.wait("w1")["host"]
    assert host in {
        a["host"] for a in api.get("/leases/work").json()["reservations"][0]["allocations"]
    }
    # The end comes; servers survive the grace period, then go, and the lease ends.
    advance(rt, clock, timedelta(hours=2))
    wait_for("ending", lambda: lease_phase(api, "work") == "ENDING")
    time.sleep(0.3)
    assert api.get("/servers/w1").status_code == 200
    advance(rt, clock, timedelta(minutes=5))
    api.wait("w1", "GONE")
    api.wait("w2", "GONE")
    wait_for("ended", lambda: lease_phase(api, "work") == "ENDED")
    events = api.get("/servers").json()["items"]
    assert events == []


SAVER = """
import signal, sys, time
def say(what):
    print("saver:", what, flush=True)  # its output is the server's console log
def term(*_):
    say("term")
    time.sleep(1.0)  # saving its work takes a second, well inside the grace
    say("saved")
    sys.exit(0)
signal.signal(signal.SIGTERM, term)
say("started")
while True:
    time.sleep(0.05)
"""


@pytest.fixture
def clocked_grace(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> tuple[Api, ManualClock, Runtime]:
    monkeypatch.setenv("ECLIPTIC_PREEMPTIBLE_GRACE_SECONDS", "4")
    got: tuple[Api, ManualClock, Runtime] = request.getfixturevalue("clocked")
    return got


def test_preemptibles_survive_their_minimum_lifetime_then_make_way(
    clocked_grace: tuple[Api, ManualClock, Runtime], tmp_path: Path
) -> None:
    api, clock, rt = clocked_grace
    assert rt.booking.preemptible_grace == timedelta(seconds=4)
    # cpu-a has 8 vCPUs: two preemptible m1.large (4 vCPU) fill it.
    made = []
    for n in ("p1", "p2", "p3", "p4", "p5", "p6", "p7", "p8", "p9", "p10"):
        r = api.post("/servers", {"name": n, "flavor": "m1.large", "preemptible": True})
        if r.status_code != 202:
            assert r.json()["code"] == "no_capacity"
            break
        made.append(n)
    assert len(made) >= 2
    where: dict[str, str] = {}
    consoles: dict[str, IO[bytes]] = {}

    def said(n: str) -> list[str]:
        """What the saver of ``n`` printed (its console log stays readable through the
        file opened here after the server and its folder are gone)."""
        consoles[n].seek(0)
        lines = consoles[n].read().decode().splitlines()
        return [ln.split()[1] for ln in lines if ln.startswith("saver: ")]

    for n in made:
        srv = api.wait(n)
        where[n] = srv["host"]
        consoles[n] = open(  # noqa: SIM115 (closed below)
            rt.settings.data_dir / "local" / "servers" / srv["id"] / "console.log", "rb"
        )
        # A real process in each server that saves its work when told to stop.
        rt.backend.start_service(srv["id"], ServiceSpec("saver", ("python3", "-c", SAVER)))
    for n in made:
        wait_for(f"{n} started", lambda n=n: said(n) == ["started"])
    victims = sorted(n for n in made if where[n] == "cpu-a")
    assert victims
    body = {
        "name": "cpu",
        "start": "now",
        "duration": "4h",
        "reservations": [{"kind": "host", "count": 1, "where": 'name == "cpu-a"'}],
    }
    r = api.post("/leases", body)
    assert r.status_code == 409, r.text
    # The earliest start is when the youngest of them has had its minimum lifetime.
    earliest = T0 + timedelta(hours=1)
    assert f"stopped early is {earliest:%Y-%m-%d %H:%M} UTC" in r.json()["detail"]
    advance(rt, clock, timedelta(hours=1, minutes=1))
    r = api.post("/leases", body)
    assert r.status_code == 201, r.text
    wait_for("lease active", lambda: lease_phase(api, "cpu") == "ACTIVE", timeout=30)
    for n in made:
        if n in victims:
            assert api.get(f"/servers/{n}").status_code == 404
            # SIGTERM first, then the grace to finish: the work was saved before deletion.
            assert said(n) == ["started", "term", "saved"]
            # The owner still reads why it went (its tombstone keeps its events).
            r = api.get(f"/servers/{n}/events")
            assert r.status_code == 200, r.text
            last = r.json()["items"][-1]
            assert last["to_phase"] == "DELETED"
            assert last["reason"].startswith("preempted: lease 'cpu' starts on host cpu-a")
        else:  # servers on other hosts were left alone
            assert api.get(f"/servers/{n}").json()["phase"] == "ACTIVE"
            assert said(n) == ["started"]
    for f in consoles.values():
        f.close()
    gone = api.get("/deleted-servers").json()["items"]
    assert sorted(g["name"] for g in gone) == victims
    assert all(g["reason"].startswith("preempted: lease 'cpu'") and g["preemptible"] for g in gone)


def test_credits_balance_and_ledger(clocked: tuple[Api, ManualClock, Runtime]) -> None:
    api, _, _ = clocked
    before = {b["resource_class"]: b for b in api.get("/credits").json()["items"]}
    assert "vcpu" in before and before["vcpu"]["allocation"] == "starter"
    r = api.post(
        "/leases",
        {
            "name": "l",
            "start": "now",
            "duration": "10h",
            "reservations": [{"kind": "flavor", "vcpus": 2, "memory_mb": 1024, "count": 3}],
        },
    )
    assert r.status_code == 201, r.text
    assert r.json()["cost"] == {"vcpu": "60"}
    after = {b["resource_class"]: b for b in api.get("/credits").json()["items"]}
    assert float(after["vcpu"]["remaining"]) == float(before["vcpu"]["remaining"]) - 60
    ledger = api.get("/credits/ledger").json()["items"]
    assert ledger[0]["kind"] == "charge" and ledger[0]["hours"] == "-60"
    # A marker past what the database's integers hold is bad input, not a 500 (the fuzzer).
    r = api.get(f"/credits/ledger?marker={2**70}")
    assert r.status_code == 422 and "marker" in r.text, r.text
    r = api.post(
        "/credits/allocations",
        {
            "tenancy": "default",
            "name": "tiny",
            "hours": {"gpu:H100": 5},
            "end": "2030-01-01T00:00:00Z",
        },
    )
    assert r.status_code == 201, r.text
    assert {b["resource_class"] for b in r.json()} == {"gpu:H100"}
    r = api.post(
        "/credits/allocations",
        {
            "tenancy": "default",
            "name": "tiny",
            "hours": {"gpu:H100": 5},
            "end": "2030-01-01T00:00:00Z",
        },
    )
    assert r.status_code == 409


def test_earliest_and_calendar_api(clocked: tuple[Api, ManualClock, Runtime]) -> None:
    api, _, _ = clocked
    r = api.post(
        "/availability/earliest",
        {
            "reservations": [{"kind": "host", "count": 1, "where": 'gpu_model == "A100"'}],
            "duration": "48h",
        },
    )
    assert r.status_code == 200, r.text
    first = r.json()[0]
    assert first["hosts"]["hosts"] == ["gpu-a"]
    r = api.post(
        "/availability/fit",
        {
            "reservations": [{"kind": "host", "count": 1, "where": 'gpu_model == "A100"'}],
            "duration": "48h",
        },
    )
    assert r.status_code == 200 and r.json()["fits"] and r.json()["hosts"]["hosts"] == ["gpu-a"]
    r = api.post(
        "/availability/fit",
        {
            "reservations": [{"kind": "host", "count": 2, "where": 'gpu_model == "A100"'}],
            "duration": "48h",
        },
    )
    assert r.status_code == 200 and not r.json()["fits"] and r.json()["reason"]
    r = api.get("/availability/calendar", params={"days": 2, "bucket": "6h"})
    assert r.status_code == 200
    rows = {row["resource"]: row for row in r.json()}
    assert any(k.startswith("gpu:") for k in rows)
    r = api.post(
        "/availability/earliest",
        {
            "reservations": [{"kind": "host", "count": 1, "where": "gpu_model =="}],
            "duration": "48h",
        },
    )
    assert r.status_code == 422 and "column" in r.json()["detail"]
