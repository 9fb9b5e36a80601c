"""Kill the serving process with SIGKILL in the middle of creating and of deleting servers.

After a restart the end state must be right (every server ACTIVE with its address, or
gone) and nothing may leak: no namespace, link or owner record of the instance. Every
test runs on SQLite and on PostgreSQL (the ``database_url`` fixture).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import _free_port
from tests.waiting import wait_until

PASSWORD = "test-admin-password"


class Instance:
    """An ``ecliptic serve`` process on a data dir that outlives it."""

    def __init__(self, data_dir: Path, database_url: str) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.token: str | None = None

    def start(self, crash_at: str = "") -> None:
        env = dict(
            os.environ,
            ECLIPTIC_DATA_DIR=str(self.data_dir),
            ECLIPTIC_PORT=str(self.port),
            ECLIPTIC_ADMIN_PASSWORD=PASSWORD,
            ECLIPTIC_CRASH_AT=crash_at,
            ECLIPTIC_GATEWAY="off",  # these tests are about the API and workers
            ECLIPTIC_DATABASE_URL=self.database_url,
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ecliptic.cli.main", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.data_dir / "log", "ab"),  # noqa: SIM115
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise AssertionError("serve did not start: " + (self.data_dir / "log").read_text())
        r = httpx.post(
            f"{self.url}/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
        )
        self.token = r.json()["secret"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        return httpx.request(
            method,
            f"{self.url}/api/v1{path}",
            json=body,
            timeout=30,
            headers={"Authorization": f"Bearer {self.token}"},
        )

    def wait_killed(self, timeout: float = 30) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def wait_for(self, predicate: Any, what: str, timeout: float = 30) -> Any:
        return wait_until(predicate, timeout, what, interval=0.05)

    def servers(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/servers").json()["items"])

    def deletions_recorded(self, names: set[str]) -> set[str]:
        """Which of ``names`` the database holds a deletion of (DELETING, or gone)."""
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as con:
                rows = con.execute(text("SELECT name, phase FROM server")).all()
        finally:
            engine.dispose()
        left = {str(name) for name, phase in rows if phase != "DELETING"}
        return names - left

    def instance_id(self) -> str:
        engine = create_engine(self.database_url)
        try:
            with engine.connect() as con:
                value = con.execute(text("SELECT value FROM meta WHERE key='instance_id'")).scalar()
        finally:
            engine.dispose()
        assert value, f"no instance id in {self.database_url}: serve used another database"
        return str(value)


def owned_resources(instance_id: str) -> list[str]:
    """Names of local-cloud resources whose owner record names this instance."""
    owners = Path(os.environ["ECLIPTIC_OWNERS_DIR"])
    names = []
    for rec in owners.iterdir() if owners.exists() else []:
        try:
            if json.loads(rec.read_text()).get("instance") == instance_id:
                names.append(rec.name)
        except (OSError, ValueError):
            continue
    return names


def existing(names: list[str]) -> list[str]:
    netns = subprocess.run(["ip", "-o", "netns", "list"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    have = {line.split()[0] for line in netns.splitlines() if line.strip()}
    have |= {ln.split(":")[1].strip().split("@")[0] for ln in links.splitlines() if ":" in ln}
    return [n for n in names if n in have]


@pytest.fixture
def instance(tmp_path: Path, database_url: str) -> Iterator[Instance]:
    inst = Instance(tmp_path, database_url)
    yield inst
    # Whatever happened, leave nothing behind: restart cleanly and delete everything.
    inst.stop()
    try:
        inst.start()
        for s in inst.servers():
            inst.call("DELETE", f"/servers/{s['id']}")
        inst.wait_for(lambda: inst.servers() == [], "servers gone", 60)
        for n in inst.call("GET", "/networks").json()["items"]:
            inst.call("DELETE", f"/networks/{n['id']}")
        inst.wait_for(lambda: inst.call("GET", "/networks").json()["items"] == [], "networks gone")
    finally:
        inst.stop()


def _check_all_active(inst: Instance, names: set[str], maybe: set[str] | None = None) -> None:
    """Every accepted server is ACTIVE; ``maybe`` ones (request in flight at the crash) may
    exist or not, but if they exist they are ACTIVE too."""

    def ready() -> bool:
        ss = inst.servers()
        have = {s["name"] for s in ss}
        return names <= have <= names | (maybe or set()) and all(s["phase"] == "ACTIVE" for s in ss)

    inst.wait_for(ready, "every server ACTIVE", 60)
    for s in inst.servers():
        out = inst.call(
            "POST",
            f"/servers/{s['name']}/exec",
            {"argv": ["ip", "-4", "-o", "addr", "show", "eth0"]},
        ).json()
        assert s["addresses"]["default"][0] + "/" in out["stdout"], out
    expected_ns = {f"ecl-{s['id'][:10]}" for s in inst.servers()}
    mine = [n for n in existing(owned_resources(inst.instance_id())) if n.startswith("ecl-")]
    assert set(mine) == expected_ns


@pytest.mark.parametrize(
    "crash_at",
    [
        "local.server.after_netns",
        "local.server.after_ports",
        "local.server.before_boot",
        "reconcile.server.after_backend",
        "local.network.after_bridge",
    ],
)
def test_sigkill_while_creating_converges(instance: Instance, crash_at: str) -> None:
    instance.start(crash_at=crash_at)
    names: set[str] = set()
    in_flight: set[str] = set()
    for n in ("a", "b", "c"):
        try:
            r = instance.call("POST", "/servers", {"name": n, "flavor": "m1.tiny"})
        except httpx.TransportError:
            # The worker reached the crash point and took the process down, perhaps after
            # this request committed but before it was answered.
            in_flight.add(n)
            break
        assert r.status_code == 202, r.text
        names.add(n)
    assert names
    assert instance.wait_killed() == -signal.SIGKILL
    instance.start()
    _check_all_active(instance, names, in_flight)


@pytest.mark.parametrize(
    "crash_at", ["local.server.delete.after_kill", "reconcile.server.after_backend_delete"]
)
def test_sigkill_while_deleting_converges(instance: Instance, crash_at: str) -> None:
    instance.start()
    for n in ("a", "b", "c"):
        instance.call("POST", "/servers", {"name": n, "flavor": "m1.tiny"})
    _check_all_active(instance, {"a", "b", "c"})
    iid = instance.instance_id()
    instance.stop()
    instance.start(crash_at=crash_at)
    asked, in_flight = [], []
    for s in instance.servers():
        try:
            if instance.call("DELETE", f"/servers/{s['name']}").status_code == 202:
                asked.append(s["name"])
        except httpx.TransportError:
            # The worker can reach the crash point before the first answer is sent: that
            # deletion may or may not have been recorded; either way it must converge.
            in_flight.append(s["name"])
            break
    assert asked or in_flight
    assert instance.wait_killed() == -signal.SIGKILL
    # What the dead process recorded: a deletion it answered, or the one whose answer the
    # crash cut off (a worker only deletes what was committed, so when the crash hit the
    # first DELETE, that deletion was recorded).
    recorded = instance.deletions_recorded({"a", "b", "c"})
    assert recorded, "the crash came from a worker deleting a server, so one was recorded"
    assert set(asked) <= recorded, (asked, recorded)
    if not asked:
        assert set(in_flight) <= recorded, (in_flight, recorded)
    instance.start()
    # Every recorded deletion finishes without being asked again.
    instance.wait_for(
        lambda: not {s["name"] for s in instance.servers()} & recorded, "deletions to finish"
    )
    assert not {s["name"] for s in instance.servers()} & recorded
    for s in instance.servers():
        instance.call("DELETE", f"/servers/{s['name']}")
    instance.wait_for(lambda: instance.servers() == [], "servers gone")
    for n in instance.call("GET", "/networks").json()["items"]:
        instance.call("DELETE", f"/networks/{n['name']}")
    instance.wait_for(
        lambda: instance.call("GET", "/networks").json()["items"] == [], "networks gone"
    )
    assert existing(owned_resources(iid)) == []
    assert owned_resources(iid) == []


def test_sigkill_at_random_moments(instance: Instance) -> None:
    import random

    rng = random.Random(20261121)
    names: set[str] = set()
    for round_ in range(3):
        instance.start()
        batch = {f"r{round_}-{i}" for i in range(6)}
        for n in sorted(batch):
            instance.call("POST", "/servers", {"name": n, "flavor": "m1.tiny"})
        names |= batch
        victims = sorted(names)[:2]
        for v in victims:
            instance.call("DELETE", f"/servers/{v}")
        names -= set(victims)
        time.sleep(rng.uniform(0.0, 0.3))
        assert instance.proc is not None
        instance.proc.kill()
        instance.proc.wait()
    instance.start()
    _check_all_active(instance, names)


def _inits(data_dir: Path) -> dict[str, int]:
    """Server id -> pid of its init, for the inits alive now."""
    out = {}
    for f in (data_dir / "local" / "servers").glob("*/init.pid"):
        pid, start = (int(x) for x in f.read_text().split())
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[19]) == start:
            out[f.parent.name] = pid
    return out


def test_sigkill_of_serve_and_of_inits_in_a_twenty_server_create(instance: Instance) -> None:
    """Mid-way through 20 creates, kill -9 two servers' inits and ``ecliptic serve``: on
    restart every server is ACTIVE with a running init, and after deletion nothing is left
    (namespaces, links, owner records, inits; mounts never reach the host's table)."""
    instance.start()
    names = {f"t{i:02d}" for i in range(20)}
    for n in sorted(names):
        assert (
            instance.call("POST", "/servers", {"name": n, "flavor": "m1.tiny"}).status_code == 202
        )
    instance.wait_for(lambda: len(_inits(instance.data_dir)) >= 4, "a few servers booted")
    killed = list(_inits(instance.data_dir).values())[:2]
    for pid in killed:
        os.kill(pid, signal.SIGKILL)
    assert instance.proc is not None
    instance.proc.kill()
    instance.proc.wait()
    iid = instance.instance_id()
    instance.start()
    _check_all_active(instance, names)
    inits = _inits(instance.data_dir)
    assert {s["id"] for s in instance.servers()} == set(inits)
    assert not set(killed) & set(inits.values())
    for n in names:
        instance.call("DELETE", f"/servers/{n}")
    instance.wait_for(lambda: instance.servers() == [], "servers gone", 60)
    for net in instance.call("GET", "/networks").json()["items"]:
        instance.call("DELETE", f"/networks/{net['name']}")
    instance.wait_for(
        lambda: instance.call("GET", "/networks").json()["items"] == [], "networks gone"
    )
    assert existing(owned_resources(iid)) == [] and owned_resources(iid) == []
    assert _inits(instance.data_dir) == {}
    for pid in inits.values():
        assert (
            not Path(f"/proc/{pid}").exists()
            or "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()
        )
