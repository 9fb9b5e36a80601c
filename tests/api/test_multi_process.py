"""Two real ``ecliptic serve`` processes on one PostgreSQL database, booking at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import _free_port, fresh_pg_database

PASSWORD = "test-admin-password"


class Serve:
    """One ``ecliptic serve`` process (gateway off, API and workers) on a shared database."""

    def __init__(self, data_dir: Path, database_url: str) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.http: httpx.Client | None = None

    @property
    def log(self) -> Path:
        return self.data_dir / "log"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        env = dict(
            os.environ,
            ECLIPTIC_DATA_DIR=str(self.data_dir),
            ECLIPTIC_DATABASE_URL=self.database_url,
            ECLIPTIC_PORT=str(self.port),
            ECLIPTIC_ADMIN_PASSWORD=PASSWORD,
            ECLIPTIC_GATEWAY="off",
            ECLIPTIC_WORKERS="1",
            ECLIPTIC_LOG_LEVEL="INFO",
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ecliptic.cli.main", "serve"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"),  # noqa: SIM115
        )
        url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.05)
        else:
            raise AssertionError("serve did not start: " + self.log.read_text())
        token = httpx.post(
            f"{url}/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
        ).json()["secret"]
        self.http = httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )

    def post(self, path: str, body: Any) -> httpx.Response:
        assert self.http is not None
        return self.http.post(path, json=body)

    def stop(self) -> None:
        if self.http is not None:
            self.http.close()
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _lease(name: str, host: str, start: datetime) -> dict[str, Any]:
    return {
        "name": name,
        "start": start.isoformat(),
        "duration": "20h",
        "reservations": [{"kind": "host", "name": "h", "count": 1, "where": f'name == "{host}"'}],
    }


def test_two_serve_processes_on_one_postgres_book_without_double_booking(
    pg_admin_url: str, tmp_path: Path
) -> None:
    url = fresh_pg_database(pg_admin_url, migrated=False)  # both processes migrate at once
    a, b = Serve(tmp_path / "a", url), Serve(tmp_path / "b", url)
    try:
        a.start()
        b.start()
        assert a.http is not None
        hosts = sorted(
            h["name"] for h in a.http.get("/hosts").json()["items"] if h["name"].startswith("cpu")
        )
        assert len(hosts) >= 2
        day0 = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=1)
        won = {"a": 0, "b": 0}
        with ThreadPoolExecutor(2) as pool:
            for d in range(3):
                for host in hosts[:3]:
                    start = day0 + timedelta(days=d)
                    # Both processes ask for the same host and window at the same moment.
                    futures = {
                        who: pool.submit(
                            p.post, "/leases", _lease(f"{who}-{host}-{d}", host, start)
                        )
                        for who, p in (("a", a), ("b", b))
                    }
                    codes = {who: f.result().status_code for who, f in futures.items()}
                    assert sorted(codes.values()) == [201, 409], codes
                    winner = next(w for w, c in codes.items() if c == 201)
                    won[winner] += 1
                    # The other process knows at once: its engine followed the log.
                    loser = b if winner == "a" else a
                    probe = {k: v for k, v in _lease("probe", host, start).items() if k != "name"}
                    fit = loser.post("/availability/fit", probe)
                    assert fit.status_code == 200 and fit.json()["fits"] is False, fit.text
        assert sum(won.values()) == 3 * min(3, len(hosts))
    finally:
        a.stop()
        b.stop()
    # Each engine was built once from the tables at start, then only followed the log.
    for p in (a, b):
        built = [ln for ln in p.log.read_text().splitlines() if "booking engine built" in ln]
        assert len(built) == 1, built
