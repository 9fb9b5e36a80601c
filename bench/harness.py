"""Start a throwaway ``ecliptic serve`` for a benchmark, and small statistics helpers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

PASSWORD = "bench-admin-password"


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def chunks(values: list[float], n: int) -> list[list[float]]:
    """``values`` cut into ``n`` consecutive runs of (nearly) equal length."""
    size = max(1, len(values) // n)
    return [values[i * size : (i + 1) * size] for i in range(n) if values[i * size :]]


def spread(values: list[float], digits: int = 2) -> list[float]:
    """Minimum, median and maximum of one figure over repetitions."""
    ordered = sorted(values)
    mid = ordered[len(ordered) // 2]
    if len(ordered) % 2 == 0:
        mid = (ordered[len(ordered) // 2 - 1] + mid) / 2
    return [round(ordered[0], digits), round(mid, digits), round(ordered[-1], digits)]


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Served:
    """A running instance: its process, URL and an authenticated HTTP client."""

    proc: subprocess.Popen[bytes]
    url: str
    http: httpx.Client
    data_dir: Path


@contextmanager
def serve(workers: int = 2, extra_env: dict[str, str] | None = None) -> Iterator[Served]:
    """Run ``ecliptic serve`` on a fresh data dir until the block ends."""
    with tempfile.TemporaryDirectory(prefix="ecl-bench-") as tmp:
        port = free_port()
        env = dict(os.environ)
        env.update(
            ECLIPTIC_DATA_DIR=tmp,
            ECLIPTIC_PORT=str(port),
            ECLIPTIC_ADMIN_PASSWORD=PASSWORD,
            ECLIPTIC_WORKERS=str(workers),
            ECLIPTIC_LOG_LEVEL="WARNING",
            ECLIPTIC_GATEWAY="off",  # benchmarks that need it turn it on (bench.gateway)
        )
        env.pop("ECLIPTIC_DATABASE_URL", None)
        env.update(extra_env or {})
        log = open(Path(tmp) / "serve.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecliptic.cli.main", "serve"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "ecliptic serve did not start:\n" + (Path(tmp) / "serve.log").read_text()
                    )
                time.sleep(0.05)
            token = httpx.post(
                f"{url}/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
            ).json()["secret"]
            http = httpx.Client(
                base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=60
            )
            yield Served(proc, url, http, Path(tmp))
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()
