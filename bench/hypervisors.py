"""Bare metal through a real Ironic, and ephemeral hypervisors: Ecliptic's control path.

    python -m bench.hypervisors [--json] [--runs 3]

Starts a real standalone Ironic (``.venv-ironic``, fake hardware: its own cost is only its
control path) with 4 pool nodes and a real ``ecliptic serve`` whose only hosts are those
nodes (a 1 s Ironic sync), then, polling every 20 ms, the median of ``--runs`` runs of:

- ``baremetal_active_s``: ``POST /servers`` of a ``bm.cpu`` server inside a host lease
  until it is ACTIVE (Ironic deployed its node with its config drive, and the machine's
  system runs). Target 2 s.
- ``to_hypervisor_s``: ``POST /hosts/NAME/convert`` to ``hypervisor`` until the pool says
  HYPERVISOR (Ironic deployed the hypervisor image; VMs are scheduled onto it). Target 3 s.
- ``drain20_s``: a hypervisor holding 20 on-demand servers, converted back to bare metal,
  until it is BAREMETAL (every server cold-migrated to the other hypervisor and ACTIVE
  there, the node undeployed and cleaned, Ironic says available). Target 10 s.
- ``ironic_deploy_s``: Ironic's own deploy of a node by hand (openstacksdk, instance info
  and config drive, polled every 20 ms until ``active``) in the same run: the floor.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from tests.ironic_fixtures import IRONIC_BIN, enroll, wait_state
from tests.ironic_server import IronicServer

from bench.harness import serve, spread
from ecliptic.backends.ironic import image_source

POLL_S = 0.02
TARGETS = {"baremetal_active_s": 2.0, "to_hypervisor_s": 3.0, "drain20_s": 10.0}


def _until(what: str, check: Callable[[], Any], timeout: float = 120) -> float:
    t0 = time.perf_counter()
    while True:
        got = check()
        if got:
            return time.perf_counter() - t0
        if time.perf_counter() - t0 > timeout:
            raise RuntimeError(f"{what}: not done after {timeout} s")
        time.sleep(POLL_S)


def _phase(http: httpx.Client, host: str) -> str:
    rows = http.get("/hosts/pool").json()["items"]
    return str(next(r["phase"] for r in rows if r["name"] == host))


def _ok(r: httpx.Response) -> httpx.Response:
    if r.status_code >= 400:
        raise RuntimeError(f"{r.request.method} {r.request.url}: {r.status_code} {r.text}")
    return r


def baremetal_active(http: httpx.Client, run: int) -> float:
    """A bm.cpu server in a 1-host lease, POST to ACTIVE; then deleted (node cleaned)."""
    lease = f"metal-{run}"
    body = {"name": lease, "start": "now", "duration": "1h", "reservations": [{"kind": "host"}]}
    _ok(http.post("/leases", json=body))
    _until("lease active", lambda: http.get(f"/leases/{lease}").json()["phase"] == "ACTIVE")
    name = f"bm-{run}"
    t0 = time.perf_counter()
    _ok(http.post("/servers", json={"name": name, "flavor": "bm.cpu", "lease": lease}))
    _until(
        "bare-metal server ACTIVE", lambda: http.get(f"/servers/{name}").json()["phase"] == "ACTIVE"
    )
    took = time.perf_counter() - t0
    _ok(http.delete(f"/servers/{name}"))
    _until("server gone", lambda: http.get(f"/servers/{name}").status_code == 404)
    _ok(http.post(f"/leases/{lease}/end"))
    return took


def to_hypervisor(http: httpx.Client, host: str) -> float:
    """Convert a bare-metal pool host by hand until it is a hypervisor."""
    t0 = time.perf_counter()
    _ok(http.post(f"/hosts/{host}/convert", json={"to": "hypervisor"}))
    _until("hypervisor", lambda: _phase(http, host) == "HYPERVISOR")
    return time.perf_counter() - t0


def drain20(http: httpx.Client, source: str, target: str, run: int) -> float:
    """20 on-demand servers on ``source``; hand it back; until BAREMETAL and all ACTIVE."""
    names = [f"d{run}-{i:02d}" for i in range(20)]
    for n in names:
        _ok(http.post("/servers", json={"name": n, "flavor": "m1.tiny"}))
    _until(
        "20 servers ACTIVE",
        lambda: all(s["phase"] == "ACTIVE" for s in _servers(http, names)),
        timeout=300,
    )
    assert {s["host"] for s in _servers(http, names)} == {source}, "all on the source"
    to_hypervisor(http, target)
    t0 = time.perf_counter()
    _ok(http.post(f"/hosts/{source}/convert", json={"to": "baremetal"}))
    _until("bare metal again", lambda: _phase(http, source) == "BAREMETAL", timeout=300)
    took = time.perf_counter() - t0
    moved = _servers(http, names)
    assert all(s["phase"] == "ACTIVE" and s["host"] == target for s in moved), moved
    for n in names:
        http.delete(f"/servers/{n}")
    _until("servers gone", lambda: not _servers(http, names), timeout=120)
    return took


def _servers(http: httpx.Client, names: list[str]) -> list[dict[str, Any]]:
    wanted = set(names)
    items = http.get("/servers", params={"limit": 500}).json()["items"]
    return [s for s in items if s["name"] in wanted]


def ironic_deploy(conn: Any, node_id: str) -> float:
    """Ironic's own deploy of a node, by hand, polled every 20 ms (then undeployed)."""
    bm = conn.baremetal
    info = {"image_source": image_source("base"), "image_type": "whole-disk", "root_gb": "10"}
    bm.update_node(node_id, instance_info=info)
    t0 = time.perf_counter()
    bm.set_node_provision_state(node_id, "active", config_drive={"meta_data": {"name": "x"}})
    took = _until(
        "Ironic deploy",
        lambda: (n := bm.get_node(node_id)).provision_state == "active" and not n.reservation,
    )
    took = time.perf_counter() - t0
    bm.set_node_provision_state(node_id, "deleted")
    wait_state(conn, node_id, "available")
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--runs", type=int, default=3, help="runs of each figure (median)")
    args = ap.parse_args()
    if not (IRONIC_BIN / "ironic").exists():
        raise SystemExit(f"no standalone Ironic at {IRONIC_BIN}: run make setup")
    with (
        tempfile.TemporaryDirectory(prefix="ecl-bench-ironic-") as tmp,
        IronicServer(IRONIC_BIN, Path(tmp)) as ironic,
    ):
        conn = ironic.connect()
        pool = [
            enroll(conn, f"hv-{i}", cpus=64, memory_mb=262144, local_gb=1000, resource_class="pool")
            for i in range(1, 4)
        ]
        spare = enroll(conn, "by-hand", cpus=8, memory_mb=16384, resource_class="other")
        inventory = Path(tmp) / "inventory.yaml"
        inventory.write_text("hosts: []\n")
        env = {
            "ECLIPTIC_INVENTORY": str(inventory),
            "ECLIPTIC_IRONIC_URL": ironic.url,
            "ECLIPTIC_IRONIC_SYNC_SECONDS": "1",
            "ECLIPTIC_HYPERVISOR_POOL": 'resource_class == "pool"',
            "ECLIPTIC_POOL_IDLE_SECONDS": "3600",
            "ECLIPTIC_QUOTA_SERVERS": "1000",
            "ECLIPTIC_QUOTA_VCPUS": "100000",
            "ECLIPTIC_QUOTA_MEMORY_MB": "100000000",
        }
        with serve(workers=2, extra_env=env) as inst:
            http = inst.http
            figures: dict[str, list[float]] = {k: [] for k in [*TARGETS, "ironic_deploy_s"]}
            for run in range(args.runs):
                figures["ironic_deploy_s"].append(ironic_deploy(conn, spare))
                figures["baremetal_active_s"].append(baremetal_active(http, run))
                a, b = ("hv-1", "hv-2") if run % 2 == 0 else ("hv-2", "hv-1")
                figures["to_hypervisor_s"].append(to_hypervisor(http, a))
                figures["drain20_s"].append(drain20(http, a, b, run))
                _ok(http.post(f"/hosts/{b}/convert", json={"to": "baremetal"}))
                _until("reset", lambda: _phase(http, b) == "BAREMETAL")  # noqa: B023
                for h in ("hv-1", "hv-2"):
                    _ok(http.post(f"/hosts/{h}/convert", json={"to": "auto"}))
        del pool
        conn.close()
    out: dict[str, Any] = {k: round(statistics.median(v), 3) for k, v in figures.items()}
    out["spread"] = {k: spread(v) for k, v in figures.items()}
    out["targets"] = TARGETS
    out["runs"] = args.runs
    out["machine"] = f"{platform.node()} {os.cpu_count()} CPU, {platform.platform()}"
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        for k in [*TARGETS, "ironic_deploy_s"]:
            target = f" (target {TARGETS[k]} s)" if k in TARGETS else " (the floor)"
            print(f"{k:>20}: {out[k]:.3f} s{target}  runs {out['spread'][k]}")


if __name__ == "__main__":
    main()
