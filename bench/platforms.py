"""Platform speed on the local cloud: create to READY, delete, and scaling Slurm.

    python -m bench.platforms [--json] [--runs 3]

Runs a real ``ecliptic serve`` in ``make run``'s configuration (the gateway on) on a fresh
data dir, builds the images first (not timed: platforms boot from built images), then for
each run creates and deletes a workstation, a Slurm cluster with 4 compute nodes and a
JupyterLab, and scales a Slurm cluster from 2 to 4 compute nodes.

- ``*_ready_s``: ``POST /platforms`` until the platform is READY (its servers built, every
  step done, every service's tunnel up through the gateway), polled every 20 ms.
- ``slurm4_ready_s`` also waits until ``sinfo`` on the login node shows 4 idle nodes.
- ``slurm_scale_s``: ``PATCH compute_count=4`` on a READY 2-node cluster until it is READY
  again and ``sinfo`` shows 4 idle nodes.
- ``delete_max_s``: the slowest ``DELETE`` until the platform is gone (404) of the run.

Every figure is the median of the runs; ``spread`` gives min, median and max.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import httpx

from bench.harness import serve, spread
from bench.servers import default_config

IMAGES = ("slurm", "jupyter", "workstation")
TARGETS = {
    "workstation_ready_s": 3.0,
    "slurm4_ready_s": 10.0,
    "jupyter_ready_s": 15.0,
    "delete_max_s": 3.0,
    "slurm_scale_s": 5.0,
}


def build_images(http: httpx.Client) -> None:
    """Build what the platforms boot from (not part of any figure)."""
    for name in IMAGES:
        http.post(f"/images/{name}/build")
    deadline = time.monotonic() + 900
    while True:
        status = {i["name"]: i["status"] for i in http.get("/images").json()["items"]}
        if all(status.get(n) == "built" for n in IMAGES):
            return
        failed = [n for n in IMAGES if status.get(n) == "failed"]
        if failed or time.monotonic() > deadline:
            raise RuntimeError(f"images not built: {status}")
        time.sleep(0.5)


def ready(http: httpx.Client, name: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        body = http.get(f"/platforms/{name}").json()
        if body["phase"] == "READY":
            return
        if body["phase"] == "FAILED" or time.monotonic() > deadline:
            raise RuntimeError(f"{name}: {body['phase']} {body['phase_reason']}")
        time.sleep(0.02)


def idle_nodes(http: httpx.Client, login: str, n: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    argv = ["sh", "-c", "SLURM_CONF=/etc/slurm/slurm.conf sinfo -h -N -o %t"]
    while True:
        r = http.post(f"/servers/{login}/exec", json={"argv": argv, "timeout": 10})
        if r.status_code == 200 and r.json()["stdout"].split().count("idle") == n:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not {n} idle nodes: {r.text}")
        time.sleep(0.02)


def create(http: httpx.Client, name: str, ptype: str, **params: object) -> float:
    t0 = time.monotonic()
    r = http.post("/platforms", json={"name": name, "type": ptype, "parameters": params})
    if r.status_code != 202:
        raise RuntimeError(r.text)
    ready(http, name)
    return time.monotonic() - t0


def delete(http: httpx.Client, name: str) -> float:
    t0 = time.monotonic()
    http.delete(f"/platforms/{name}")
    while http.get(f"/platforms/{name}").status_code != 404:
        time.sleep(0.02)
    return time.monotonic() - t0


def one_run(http: httpx.Client, i: int) -> dict[str, float]:
    out: dict[str, float] = {}
    deletes = []
    out["workstation_ready_s"] = create(http, f"ws{i}", "workstation")
    deletes.append(delete(http, f"ws{i}"))
    t0 = time.monotonic()
    create(http, f"hpc{i}", "slurm", compute_count=4)
    idle_nodes(http, f"hpc{i}-login1", 4)
    out["slurm4_ready_s"] = time.monotonic() - t0
    deletes.append(delete(http, f"hpc{i}"))
    out["jupyter_ready_s"] = create(http, f"nb{i}", "jupyter")
    deletes.append(delete(http, f"nb{i}"))
    create(http, f"sc{i}", "slurm", compute_count=2)
    idle_nodes(http, f"sc{i}-login1", 2)
    t0 = time.monotonic()
    r = http.patch(f"/platforms/sc{i}", json={"parameters": {"compute_count": 4}})
    if r.status_code != 202:
        raise RuntimeError(r.text)
    ready(http, f"sc{i}")
    idle_nodes(http, f"sc{i}-login1", 4)
    out["slurm_scale_s"] = time.monotonic() - t0
    deletes.append(delete(http, f"sc{i}"))
    out["delete_max_s"] = max(deletes)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    runs = []
    with serve(extra_env=default_config()) as s:
        build_images(s.http)
        for i in range(args.runs):
            runs.append(one_run(s.http, i))
    result: dict[str, object] = {
        k: round(statistics.median(r[k] for r in runs), 3) for k in TARGETS
    }
    result["spread"] = {k: spread([r[k] for r in runs]) for k in TARGETS}
    result["targets"] = TARGETS
    result["met"] = {k: result[k] <= v for k, v in TARGETS.items()}  # type: ignore[operator]
    result["machine"] = f"{platform.node()} {os.cpu_count()} vCPU"
    result["load"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in TARGETS.items():
            print(f"{k:22} {result[k]:8.2f} s   target {v:5.1f} s   spread {result['spread'][k]}")  # type: ignore[index]


if __name__ == "__main__":
    main()
