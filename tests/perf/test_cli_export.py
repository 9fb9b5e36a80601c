"""``ecliptic bench export``: the YAML a user wrote, rendered for a Kubernetes cluster
without any Ecliptic server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml


def export(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ecliptic.cli.main", "bench", "export", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "ECLIPTIC_URL": "http://127.0.0.1:9"},
    )


def test_a_set_becomes_a_benchmark_set_or_jobs(tmp_path: Path) -> None:
    f = tmp_path / "set.yaml"
    f.write_text(
        "name: rdma\ntemplate: {kind: mpi_pingpong, mpi_pingpong: {max_log: 20}}\n"
        "permutations: {product: {network: [bridge, host]}}\nrepetitions: 3\n"
    )
    res = export(str(f), "--as", "kube-perftest")
    assert res.returncode == 0, res.stderr
    (obj,) = list(yaml.safe_load_all(res.stdout))
    assert obj["kind"] == "BenchmarkSet" and obj["spec"]["repetitions"] == 3
    assert obj["spec"]["template"]["kind"] == "MPIPingPong"
    res = export(str(f), "--as", "jobs", "--namespace", "perf")
    assert res.returncode == 0, res.stderr
    objs = list(yaml.safe_load_all(res.stdout))
    jobs = [o for o in objs if o["kind"] == "Job"]
    assert {o["metadata"]["namespace"] for o in objs} == {"perf"}
    assert any(o["metadata"]["name"].startswith("rdma-000") for o in jobs), jobs
    assert any(o["metadata"]["name"].startswith("rdma-001") for o in jobs), jobs
    host = [j for j in jobs if j["metadata"]["name"].startswith("rdma-001")]
    assert all(j["spec"]["template"]["spec"].get("hostNetwork") for j in host), host


def test_what_cannot_be_exported_is_refused_with_the_reason(tmp_path: Path) -> None:
    f = tmp_path / "direct.yaml"
    f.write_text("kind: iperf3\nnetwork: direct\n")
    res = export(str(f))
    assert res.returncode == 1 and "network_name" in res.stderr, res
    res = export(str(f), "--network-name", "default/fabric")
    assert res.returncode == 0 and "k8s.v1.cni.cncf.io/networks" in res.stdout, res
    f.write_text("kind: iperf3\niperf3: {streams: 0}\n")
    res = export(str(f))
    assert res.returncode == 1 and "streams" in res.stderr, res
