"""The built-in Slurm platform on the local cloud: munge, slurmctld and slurmd in real
servers, jobs across nodes (Open MPI), scaling by patch, the terminal and status page
through the gateway."""

from __future__ import annotations

import time

from tests.platforms.conftest import events, wait_phase
from tests.tunnel.conftest import Served, needs_gateway

pytestmark = needs_gateway


def _login(served: Served, script: str, timeout: float = 60) -> dict:
    r = served.api.post(
        "/servers/hpc-login1/exec",
        json={
            "argv": ["/bin/sh", "-c", f"export SLURM_CONF=/etc/slurm/slurm.conf; {script}"],
            "timeout": timeout,
        },
    )
    assert r.status_code == 200, r.text
    return dict(r.json())


def _idle(served: Served, n: int, timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = _login(served, "sinfo -h -N -o '%N %t'")["stdout"]
        if sum(1 for ln in out.splitlines() if ln.split()[-1:] == ["idle"]) == n:
            return str(out)
        if time.monotonic() > deadline:
            logs = served.api.get("/servers/hpc-compute1/log").json()["log"][-3000:]
            raise AssertionError(f"not {n} idle nodes: {out}\nhpc-compute1's console:\n{logs}")
        time.sleep(0.3)


def test_slurm_cluster_runs_mpi_jobs_and_scales(served: Served) -> None:
    api = served.api
    started = time.monotonic()
    r = api.post(
        "/platforms", json={"name": "hpc", "type": "slurm", "parameters": {"compute_count": 3}}
    )
    assert r.status_code == 202, r.text
    body = wait_phase(api, "hpc", "READY", timeout=240)
    ready_s = time.monotonic() - started
    roles = sorted(s["role"] for s in body["servers"])
    assert roles == ["compute", "compute", "compute", "controller", "login"], body
    print(f"slurm with 3 compute nodes READY in {ready_s:.1f} s")
    out = _idle(served, 3)
    assert {ln.split()[0] for ln in out.splitlines()} == {
        "hpc-compute1",
        "hpc-compute2",
        "hpc-compute3",
    }
    # srun across every node: each task runs on its own server.
    res = _login(served, "srun -N3 hostname | sort")
    assert res["exit_code"] == 0, res
    assert res["stdout"].split() == ["hpc-compute1", "hpc-compute2", "hpc-compute3"]
    # An Open MPI batch job across the nodes, submitted and read on the login node as a
    # user does (the output file comes back from the batch host when the job ends).
    res = _login(served, "cd /root && sbatch --parsable --wait mpi-hello.sh", 120)
    assert res["exit_code"] == 0, res
    job = res["stdout"].strip().split(";")[0]
    deadline = time.monotonic() + 20
    while (out := _login(served, f"cat /root/slurm-{job}.out"))["exit_code"] != 0:
        assert time.monotonic() < deadline, out
        time.sleep(0.2)
    text = out["stdout"]
    for rank, host in ((0, "hpc-compute1"), (1, "hpc-compute2"), (2, "hpc-compute3")):
        assert f"hello from rank {rank} of 3 on {host}" in text, text
    assert "ping-pong 64 KiB" in text
    # The terminal and the status page answer through the gateway (sign-in first).
    svcs = {s["name"]: s for s in body["services"]}
    assert svcs["terminal"]["healthy"] and svcs["status"]["healthy"], svcs
    # Scale to 4: the new node joins and is idle; the others keep running.
    started = time.monotonic()
    r = api.patch("/platforms/hpc", json={"parameters": {"compute_count": 4}})
    assert r.status_code == 202, r.text
    wait_phase(api, "hpc", "READY", timeout=120)
    _idle(served, 4)
    print(f"scaled 3 -> 4 in {time.monotonic() - started:.1f} s")
    res = _login(served, "srun -N4 hostname | sort")
    assert res["stdout"].split()[-1] == "hpc-compute4", res
    # Down to 2: drained, removed, gone from Slurm.
    r = api.patch("/platforms/hpc", json={"parameters": {"compute_count": 2}})
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 120
    while len(api.get("/platforms/hpc").json()["servers"]) != 4:
        assert time.monotonic() < deadline
        time.sleep(0.3)
    wait_phase(api, "hpc", "READY", timeout=120)
    out = _idle(served, 2)
    assert "hpc-compute3" not in out and "hpc-compute4" not in out
    timeline = events(api, "hpc")
    assert any("step 'drain' finished" in e for e in timeline), timeline
    started = time.monotonic()
    assert api.delete("/platforms/hpc").status_code == 202
    while api.get("/platforms/hpc").status_code != 404:
        assert time.monotonic() - started < 60
        time.sleep(0.1)
    print(f"deleted in {time.monotonic() - started:.1f} s")
