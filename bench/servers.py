"""Server lifecycle speed: create to ACTIVE, delete, 600 at once, listing, idle memory,
and a cached image build.

    python -m bench.servers [--json] [--samples 30] [--total 600] [--runs 3]

Servers are sandboxes booted from the ``base`` image (built once, before the timing).
``server_idle_kib`` is what the machine's available memory dropped by per idle server while
``--total`` of them came up (``MemAvailable``, less the growth of ``ecliptic serve`` itself):
the namespaces, mounts, cgroups, interfaces and the server's init. ``image_cached_build_s``
is ``POST /images/base/build`` on a built image (a cache hit), as a client sees it.

Runs a real ``ecliptic serve`` in the default ``make run`` configuration (SQLite, local
cloud, 2 workers, the tunnel gateway on; only its ports are moved to free ones) on a
fresh data dir and talks to it over HTTP like any client. Latencies are as a client sees
them (poll every 2 ms). The whole run is repeated ``--runs`` times, each on a new
instance: every figure is the median of the runs, and ``spread`` gives the minimum,
median and maximum of each, so one noisy run can neither hide nor fake a result.
``load`` is the machine's load average before and after, since the figures depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil

from bench.harness import Served, free_port, percentile, serve


def wait_phase(http: httpx.Client, name: str, phase: str, timeout: float = 60) -> None:
    """Poll until the server reaches ``phase``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = http.get(f"/servers/{name}")
        if r.status_code == 200 and r.json()["phase"] == phase:
            return
        if r.status_code == 200 and r.json()["phase"] == "ERROR":
            raise RuntimeError(f"{name} went to ERROR: {r.json()['phase_reason']}")
        time.sleep(0.002)
    raise TimeoutError(f"{name} not {phase} after {timeout}s")


def wait_gone(http: httpx.Client, name: str, timeout: float = 60) -> None:
    """Poll until the server is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http.get(f"/servers/{name}").status_code == 404:
            return
        time.sleep(0.002)
    raise TimeoutError(f"{name} still there after {timeout}s")


def create(http: httpx.Client, name: str) -> None:
    """Ask for one m1.tiny server on the bench's network."""
    r = http.post(
        "/servers", json={"name": name, "flavor": "m1.tiny", "networks": [{"network": "bench"}]}
    )
    r.raise_for_status()


def mem_available_kib() -> int:
    """``MemAvailable`` of /proc/meminfo."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def default_config() -> dict[str, str]:
    """``make run``'s configuration: the gateway on, on free ports (others may run one)."""
    return {
        "ECLIPTIC_GATEWAY": "on",
        "ECLIPTIC_GATEWAY_HTTP_PORT": str(free_port()),
        "ECLIPTIC_GATEWAY_SSH_PORT": str(free_port()),
        "ECLIPTIC_GATEWAY_JUMP_PORT": str(free_port()),
        "ECLIPTIC_GATEWAY_PEER_PORT": str(free_port()),
        # Room for --total servers in one tenancy.
        "ECLIPTIC_QUOTA_SERVERS": "5000",
        "ECLIPTIC_QUOTA_VCPUS": "100000",
        "ECLIPTIC_QUOTA_MEMORY_MB": "100000000",
    }


def run(samples: int, total: int) -> dict[str, float]:
    """One run of every measurement on a fresh instance; returns the figures."""
    with serve(extra_env=default_config()) as s:
        time.sleep(2)
        serve_proc = psutil.Process(s.proc.pid)
        rss = serve_proc.memory_info().rss / 2**20
        # A network with room for every server (a /24 holds 253).
        s.http.post(
            "/networks", json={"name": "bench", "cidr": "198.19.192.0/21"}
        ).raise_for_status()
        create(s.http, "warm")
        wait_phase(s.http, "warm", "ACTIVE")
        cached = []
        for _ in range(5):
            t0 = time.perf_counter()
            r = s.http.post("/images/base/build")
            r.raise_for_status()
            assert r.json()["status"] == "built", r.text
            cached.append(time.perf_counter() - t0)
        creates = []
        for i in range(samples):
            t0 = time.perf_counter()
            create(s.http, f"c{i}")
            wait_phase(s.http, f"c{i}", "ACTIVE")
            creates.append((time.perf_counter() - t0) * 1000)
        rest = [f"b{i}" for i in range(total - samples - 1)]
        time.sleep(1)
        avail_before, rss_before = mem_available_kib(), serve_proc.memory_info().rss // 1024
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: create(s.http, n), rest))
        for n in rest:
            wait_phase(s.http, n, "ACTIVE", timeout=600)
        up = _count_active(s)
        time.sleep(2)
        grown = serve_proc.memory_info().rss // 1024 - rss_before
        idle_kib = (avail_before - mem_available_kib() - grown) / max(1, len(rest))
        lists = []
        for _ in range(300):
            t0 = time.perf_counter()
            r = s.http.get("/servers", params={"limit": 100})
            lists.append((time.perf_counter() - t0) * 1000)
            assert r.status_code == 200 and len(r.json()["items"]) == 100
        deletes = []
        for i in range(samples):
            t0 = time.perf_counter()
            s.http.delete(f"/servers/c{i}").raise_for_status()
            wait_gone(s.http, f"c{i}")
            deletes.append((time.perf_counter() - t0) * 1000)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: s.http.delete(f"/servers/{n}"), [*rest, "warm"]))
        for n in [*rest, "warm"]:
            wait_gone(s.http, n, timeout=600)
        for net in s.http.get("/networks").json()["items"]:
            s.http.delete(f"/networks/{net['id']}").raise_for_status()
        deadline = time.monotonic() + 30
        while s.http.get("/networks").json()["items"] and time.monotonic() < deadline:
            time.sleep(0.05)
    return {
        "create_p50_ms": round(percentile(creates, 50), 1),
        "create_p95_ms": round(percentile(creates, 95), 1),
        "delete_p50_ms": round(percentile(deletes, 50), 1),
        "delete_p95_ms": round(percentile(deletes, 95), 1),
        "servers_up": up,
        "list_p50_ms": round(percentile(lists, 50), 2),
        "list_p99_ms": round(percentile(lists, 99), 2),
        "serve_idle_rss_mb": round(rss, 1),
        "server_idle_kib": round(idle_kib),
        "image_cached_build_s": round(statistics.median(cached), 4),
    }


def repeated(runs: int, samples: int, total: int) -> dict[str, object]:
    """``runs`` runs: the median of each figure, and the spread of each (min, median, max)."""
    load_before = os.getloadavg()
    results = [run(samples, total) for _ in range(runs)]
    figures: dict[str, object] = {}
    spread: dict[str, list[float]] = {}
    for key in results[0]:
        values = sorted(r[key] for r in results)
        figures[key] = round(statistics.median(values), 4)
        spread[key] = [values[0], round(statistics.median(values), 4), values[-1]]
    figures["runs"] = runs
    figures["spread"] = spread
    figures["load"] = {
        "before": [round(x, 2) for x in load_before],
        "after": [round(x, 2) for x in os.getloadavg()],
    }
    figures["machine"] = f"{platform.node()} {psutil.cpu_count()} cpu {platform.machine()}"
    return figures


def _count_active(s: Served) -> int:
    items: list[dict[str, object]] = []
    marker = None
    while True:
        params: dict[str, str | int] = {"limit": 1000}
        if marker:
            params["marker"] = marker
        page = s.http.get("/servers", params=params).json()
        items += page["items"]
        marker = page["next"]
        if not marker:
            break
    active = {str(i["id"]) for i in items if i["phase"] == "ACTIVE"}
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    present = {line.split()[0] for line in netns.splitlines() if line.startswith("ecl-")}
    return sum(1 for sid in active if f"ecl-{sid[:10]}" in present)


def main() -> None:
    """Command line entry."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    p.add_argument("--samples", type=int, default=30, help="timed creates and deletes")
    p.add_argument("--total", type=int, default=600, help="servers up at once")
    p.add_argument("--runs", type=int, default=3, help="repetitions, each on a new instance")
    a = p.parse_args()
    figures = repeated(a.runs, a.samples, a.total)
    if a.json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:>20}: {v}")


if __name__ == "__main__":
    main()
