"""The benchmark kinds end to end, through the REST API on the local cloud: Open MPI ping-pong
over the bridge, a direct port and host networking, fio on a server's disk, the RDMA kinds
refused on a machine without RDMA, and a batch script timed on a real Slurm platform."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.platforms.conftest import wait_phase
from tests.platforms.test_benchmarks import leftovers, wait_run, wait_set
from tests.tunnel.conftest import Served, needs_gateway

pytestmark = needs_gateway


def run(api: httpx.Client, body: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
    """Submit one benchmark and return it once it is over."""
    r = api.post("/benchmarks", json=body)
    assert r.status_code == 202, r.text
    return wait_run(api, body["name"], "SUCCEEDED", "FAILED", timeout=timeout)


def test_mpi_pingpong_over_bridge_direct_and_host(served: Served) -> None:
    api = served.api
    r = api.post(
        "/benchmark-sets",
        json={
            "name": "mpi-wiring",
            "template": {"kind": "mpi_pingpong", "mpi_pingpong": {"max_log": 20}},
            "permutations": {"product": {"network": ["bridge", "direct", "host"]}},
        },
    )
    assert r.status_code == 202, r.text
    body = wait_set(api, "mpi-wiring", timeout=600)
    runs = api.get("/benchmarks", params={"set": "mpi-wiring"}).json()["items"]
    assert body["phase"] == "SUCCEEDED", [(x["name"], x["phase_reason"]) for x in runs]
    by_network = {x["permutation"]["network"]: x for x in runs}
    for network, x in by_network.items():
        res = x["result"]
        assert res["headline"] == "latency_min_us", res
        assert [row["bytes"] for row in res["series"]] == [0] + [1 << e for e in range(21)]
        # one-way TCP latency between namespaces on one machine: microseconds, not 0, not
        # seconds; bandwidth of MB/s at least (hundreds to thousands when the machine is idle)
        assert 1 < res["metrics"]["latency_min_us"] < 20_000, (network, res["metrics"])
        assert res["metrics"]["bandwidth_peak_mbs"] > 5, (network, res["metrics"])
        assert res["higher_is_better"]["latency_min_us"] is False
        assert x["environment"]["tools"]["mpirun"].startswith("mpirun (Open MPI) 4."), x
        raw = api.get(f"/benchmarks/{x['name']}/output").text
        assert "# Benchmarking PingPong" in raw and "MPI_Finalize" in raw, raw
    host = by_network["host"]["environment"]["servers"]
    assert len(host) == 1 and host[0]["interface"] == "lo", host
    two = by_network["direct"]["environment"]["servers"]
    assert len(two) == 2 and all(s["address"] != "127.0.0.1" for s in two), two
    events = [
        e["reason"]
        for e in api.get(f"/benchmarks/{by_network['bridge']['name']}/events").json()["items"]
    ]
    assert any("starting sshd in server 1" in e for e in events), events
    assert leftovers(api, "mpi-wiring") == []


def test_fio_measures_a_servers_disk(served: Served) -> None:
    api = served.api
    body = run(
        api,
        {
            "name": "disk1",
            "kind": "fio",
            "fio": {"rw": "randrw", "bs": "4k", "runtime": 2, "size": "64m", "ioengine": "psync"},
        },
    )
    assert body["phase"] == "SUCCEEDED", body["phase_reason"]
    m = body["result"]["metrics"]
    assert body["result"]["headline"] == "bandwidth_mbs"
    assert m["read_bw_mbs"] > 0.1 and m["write_bw_mbs"] > 0.1, m
    assert m["bandwidth_mbs"] == m["read_bw_mbs"] + m["write_bw_mbs"]
    assert m["read_iops"] > 10 and 0 < m["read_lat_us"] < 1_000_000, m
    assert body["environment"]["tools"]["fio"].startswith("fio-3"), body["environment"]
    assert body["servers"] == ["disk1-0"]
    raw = api.get("/benchmarks/disk1/output").text
    assert raw.startswith("note: both iodepth >= 1 and synchronous I/O engine"), raw[:200]
    assert leftovers(api, "disk1") == []


def test_rdma_kinds_are_refused_without_rdma_hardware(served: Served) -> None:
    api = served.api
    for name, kind in (("rdma-bw1", "rdma_bandwidth"), ("rdma-lat1", "rdma_latency")):
        body = run(api, {"name": name, "kind": kind, "network": "direct", kind: {"mode": "read"}})
        assert body["phase"] == "FAILED", body
        address = body["environment"]["servers"][0]["address"]
        assert body["phase_reason"] == (
            f"{kind} needs an RDMA device; server 0 ({address})"
            " sees none in /sys/class/infiniband (its host has no RDMA hardware, or none is"
            " passed to the server)"
        ), body["phase_reason"]
        assert body["result"] is None
        assert leftovers(api, name) == []
    r = api.post(
        "/benchmarks", json={"kind": "rdma_bandwidth", "rdma_bandwidth": {"extra_args": ["-p 1"]}}
    )
    assert r.status_code == 422 and "allowed: --bidirectional" in r.text, r.text


SCALING = """\
#!/bin/bash
#SBATCH --job-name=scaling
# Each node reports in, then a fixed amount of work per node.
srun hostname | sort
srun sleep 1
"""


def test_slurm_job_times_a_script_on_a_slurm_platform(served: Served) -> None:
    api = served.api
    r = api.post(
        "/platforms", json={"name": "bk-hpc", "type": "slurm", "parameters": {"compute_count": 2}}
    )
    assert r.status_code == 202, r.text
    try:
        wait_phase(api, "bk-hpc", "READY", timeout=300)
        deadline = time.monotonic() + 60  # slurmd registers a moment after READY
        while True:
            out = api.post(
                "/servers/bk-hpc-login1/exec", json={"argv": ["sinfo", "-h", "-N", "-o", "%t"]}
            ).json()["stdout"]
            if out.split() == ["idle", "idle"]:
                break
            assert time.monotonic() < deadline, out
            time.sleep(0.5)
        body = run(
            api,
            {
                "name": "scale1",
                "kind": "slurm_job",
                "platform": "bk-hpc",
                "slurm_job": {"script": SCALING, "nodes": [1, 2], "time_limit_min": 2},
            },
            timeout=400,
        )
        assert body["phase"] == "SUCCEEDED", body["phase_reason"]
        res = body["result"]
        assert res["headline"] == "wall_s" and res["series_x"] == "nodes"
        assert [row["nodes"] for row in res["series"]] == [1, 2]
        for row in res["series"]:  # srun sleep 1, and srun's start-up: seconds, no more
            assert 1.0 <= row["wall_s"] < 30, res
            assert row["turnaround_s"] >= row["wall_s"], res
        assert res["metrics"]["wall_s"] == res["series"][1]["wall_s"]
        assert body["environment"]["tools"]["sbatch"].startswith("slurm"), body["environment"]
        assert body["environment"]["servers"][0]["server"] == "bk-hpc-login1"
        raw = api.get("/benchmarks/scale1/output").text
        assert "bk-hpc-compute1\nbk-hpc-compute2\n" in raw, raw
        # More nodes than the platform has: refused at once, not queued for ever.
        t0 = time.monotonic()
        body = run(
            api,
            {
                "name": "scale2",
                "kind": "slurm_job",
                "platform": "bk-hpc",
                "slurm_job": {"script": SCALING, "nodes": [3]},
            },
        )
        assert body["phase"] == "FAILED", body
        assert "cannot run the script on 3 node(s)" in body["phase_reason"], body["phase_reason"]
        assert time.monotonic() - t0 < 60
        # The platform's servers are the platform's: a run leaves them, and its files go.
        names = sorted(s["name"] for s in api.get("/platforms/bk-hpc").json()["servers"])
        assert names == [
            "bk-hpc-compute1",
            "bk-hpc-compute2",
            "bk-hpc-controller1",
            "bk-hpc-login1",
        ]
        files = api.post(
            "/servers/bk-hpc-login1/exec",
            json={"argv": ["sh", "-c", "ls /tmp | grep ecliptic-slurm-job || true"]},
        ).json()["stdout"]
        assert files == "", files
    finally:
        api.delete("/platforms/bk-hpc")
        deadline = time.monotonic() + 120
        while api.get("/platforms/bk-hpc").status_code != 404:
            assert time.monotonic() < deadline, "bk-hpc was not deleted"
            time.sleep(0.2)
