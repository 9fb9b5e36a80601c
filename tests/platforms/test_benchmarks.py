"""Benchmarks on the local cloud, through the REST API: real servers made for each run,
real iperf3 over the bridge, a direct port and host networking, link shaping, sets of
permutations, cancelling, and nothing left behind."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx

from tests.platforms.conftest import wait_phase
from tests.platforms.test_platform_cli import cli
from tests.tunnel.conftest import Served, needs_gateway

pytestmark = needs_gateway


def wait_run(api: httpx.Client, name: str, *phases: str, timeout: float = 300) -> dict[str, Any]:
    """The run once it is in one of ``phases``."""
    deadline = time.monotonic() + timeout
    while True:
        r = api.get(f"/benchmarks/{name}")
        assert r.status_code == 200, r.text
        body = dict(r.json())
        if body["phase"] in phases:
            return body
        assert time.monotonic() < deadline, f"{name} never reached {phases}: {body}"
        if int(time.monotonic() * 10) % 100 == 0:
            print(body["phase"], body["phase_reason"])
        time.sleep(0.1)


def wait_set(api: httpx.Client, name: str, timeout: float = 300) -> dict[str, Any]:
    """The set once every run is over."""
    deadline = time.monotonic() + timeout
    while True:
        body = dict(api.get(f"/benchmark-sets/{name}").json())
        if body["phase"] != "RUNNING":
            return body
        assert time.monotonic() < deadline, f"set {name} never finished: {body}"
        time.sleep(0.2)


def leftovers(api: httpx.Client, prefix: str) -> list[str]:
    """Servers, networks and security groups whose names start with ``prefix``."""
    out = []
    for what, path in (("server", "/servers"), ("network", "/networks")):
        items = api.get(path, params={"limit": 1000}).json()["items"]
        out += [f"{what} {i['name']}" for i in items if i["name"].startswith(prefix)]
    groups = api.get("/security-groups", params={"limit": 1000}).json()["items"]
    out += [f"group {g['name']}" for g in groups if g["name"].startswith(f"benchmark:{prefix}")]
    return out


def test_iperf3_between_two_fresh_servers_and_nothing_left(served: Served) -> None:
    api = served.api
    r = api.post(
        "/benchmarks",
        json={"name": "tcp1", "kind": "iperf3", "network": "bridge", "iperf3": {"duration": 2}},
    )
    assert r.status_code == 202, r.text
    assert r.json()["phase"] == "PENDING"
    body = wait_run(api, "tcp1", "SUCCEEDED", "FAILED")
    assert body["phase"] == "SUCCEEDED", body["phase_reason"]
    res = body["result"]
    assert res["headline"] == "throughput_gbps"
    assert res["metrics"]["throughput_gbps"] > 0.05, res
    assert res["units"]["throughput_gbps"] == "Gbit/s"
    assert "Gbit/s" in body["summary"]
    env = body["environment"]
    assert env["tools"]["iperf3"].startswith("iperf 3"), env
    assert env["kernel"].startswith("Linux"), env
    assert [s["server"] for s in env["servers"]] == ["tcp1-0", "tcp1-1"]
    assert all(s["address"].startswith("198.1") for s in env["servers"]), env
    assert body["duration_s"] >= 2
    raw = api.get("/benchmarks/tcp1/output").text
    assert '"sum_received"' in raw
    reasons = [e["reason"] for e in api.get("/benchmarks/tcp1/events").json()["items"]]
    assert any("making 2" in x for x in reasons), reasons
    assert leftovers(api, "tcp1") == []


def test_a_set_compares_bridge_direct_and_host_and_shaping_slows_a_link(served: Served) -> None:
    api = served.api
    r = api.post(
        "/benchmark-sets",
        json={
            "name": "wiring",
            "template": {"kind": "iperf3", "iperf3": {"duration": 1}},
            "permutations": {
                "product": {"network": ["bridge", "direct", "host"]},
                "explicit": [
                    {"network": "bridge", "shaping": {"rate": "100mbit", "burst": "64kb"}}
                ],
            },
        },
    )
    assert r.status_code == 202, r.text
    assert r.json()["runs"] == 4
    body = wait_set(api, "wiring")
    runs = api.get("/benchmarks", params={"set": "wiring"}).json()["items"]
    assert [x["name"] for x in runs] == ["wiring-000", "wiring-001", "wiring-002", "wiring-003"]
    assert body["phase"] == "SUCCEEDED", [(x["name"], x["phase_reason"]) for x in runs]
    by = {x["name"]: x for x in runs}
    assert by["wiring-001"]["permutation"] == {"network": "direct"}
    assert by["wiring-001"]["set"] == "wiring"
    assert api.get("/benchmarks/wiring-001").json()["set"] == "wiring"
    host = by["wiring-002"]["environment"]["servers"]
    assert len(host) == 1 and host[0]["interface"] == "lo", host
    assert host[0]["flavor"] == "m1.medium", host  # both ends: twice an m1.small
    speeds = {n: x["result"]["metrics"]["throughput_gbps"] for n, x in by.items()}
    assert 0.05 < speeds["wiring-003"] < 0.11, speeds  # 100 Mbit/s, shaped
    assert speeds["wiring-000"] > 3 * speeds["wiring-003"], speeds
    assert leftovers(api, "wiring") == []
    # The answer: each wiring against the first (the bridge), and plots of it.
    res = api.get("/benchmark-sets/wiring/results").json()
    assert res["baseline"] == {"iperf3": "network=bridge"}
    labels = [g["label"] for g in res["groups"]]
    assert labels[:3] == ["network=bridge", "network=direct", "network=host"], labels
    shaped = res["groups"][3]["against_baseline"][0]
    assert shaped["metric"] == "throughput_gbps" and shaped["better"] == "a", shaped
    assert shaped["ratio"] < 0.5 and shaped["beyond_spread"], shaped
    assert res["plots"], res
    svg = api.get(f"/benchmark-sets/wiring/plots/{res['plots'][0]}.svg")
    assert svg.status_code == 200 and svg.headers["content-type"] == "image/svg+xml"
    assert "network=direct" in svg.text
    png = api.get(f"/benchmark-sets/wiring/plots/{res['plots'][0]}.png")
    assert png.content.startswith(b"\x89PNG")
    assert api.get("/benchmark-sets/wiring/plots/nothing.svg").status_code == 404
    cmp = api.get("/benchmark-comparisons", params={"a": "wiring-000", "b": "wiring-003"})
    assert cmp.status_code == 200, cmp.text
    assert cmp.json()["pairs"][0]["differences"][0]["better"] == "a"


def test_cancelling_a_run_removes_its_servers(served: Served) -> None:
    api = served.api
    r = api.post(
        "/benchmarks", json={"name": "long1", "kind": "iperf3", "iperf3": {"duration": 120}}
    )
    assert r.status_code == 202, r.text
    wait_run(api, "long1", "RUNNING")
    t0 = time.monotonic()
    r = api.delete("/benchmarks/long1")
    assert r.status_code == 202, r.text
    body = wait_run(api, "long1", "FAILED", timeout=30)
    assert "cancelled" in body["phase_reason"], body
    assert time.monotonic() - t0 < 20
    assert leftovers(api, "long1") == []
    assert api.delete("/benchmarks/long1").status_code == 204
    assert api.get("/benchmarks/long1").status_code == 404


def test_bad_specs_are_refused_with_what_to_change(served: Served) -> None:
    api = served.api
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"kind": "nope"}, 422, "kinds are"),
        ({"kind": "iperf3", "iperf3": {"duration": 0}}, 422, "duration"),
        ({"kind": "iperf3", "iperf3": {"bogus": 1}}, 422, "bogus"),
        ({"kind": "iperf3", "network": "host", "shaping": {"rate": "1gbit"}}, 422, "host"),
        ({"kind": "iperf3", "shaping": {"rate": "fast"}}, 422, "rate such as"),
        ({"kind": "iperf3", "platform": "nowhere"}, 404, "nowhere"),
        ({"kind": "iperf3", "flavor": "m9.huge"}, 404, "m9.huge"),
        ({"kind": "iperf3", "image": "no-such-image"}, 422, "no-such-image"),
    ]
    for body, status, words in cases:
        r = api.post("/benchmarks", json=body)
        assert r.status_code == status, (body, r.text)
        assert words in r.text, (body, r.text)
    r = api.post(
        "/benchmark-sets",
        json={
            "name": "bad",
            "template": {"kind": "iperf3"},
            "permutations": {"product": {"iperf3.streams": [1, 0]}},
        },
    )
    assert r.status_code == 422, r.text
    assert "permutation 1 (iperf3.streams=0)" in r.text


WIRING = """\
# Which wiring is faster between two servers: TCP throughput and MPI latency.
name: cli-wiring
repetitions: 2
template:
  iperf3: {duration: 1}
  mpi_pingpong: {max_log: 16, repetitions: 200}
permutations:
  product:
    kind: [iperf3, mpi_pingpong]
    network: [bridge, direct, host]
"""


def test_the_cli_runs_a_yaml_set_and_answers_which_wiring_is_faster(
    served: Served, tmp_path: Path
) -> None:
    spec = tmp_path / "wiring.yaml"
    spec.write_text(WIRING)
    res = cli(served, "bench", "run", str(spec), "--wait", timeout=300)
    assert res.returncode == 0, res.stderr + res.stdout
    out = res.stdout
    for label in ("kind=iperf3, network=bridge", "kind=mpi_pingpong, network=host"):
        assert label in out, out
    assert "baseline" in out and "2/2 ok" in out, out
    assert "iperf3: best is kind=iperf3, network=" in out, out
    assert "cli-wiring-011" in res.stderr, res.stderr  # each run reported as it ends
    assert "mpi_pingpong: best is" in out, out
    res = cli(
        served, "bench", "plot", "cli-wiring", "--out", str(tmp_path / "plots"), "--format", "png"
    )
    assert res.returncode == 0, res.stderr
    files = sorted((tmp_path / "plots").iterdir())
    assert files and all(f.read_bytes().startswith(b"\x89PNG") for f in files), files
    res = cli(served, "bench", "show", "cli-wiring-000")
    assert res.returncode == 0 and "throughput_gbps" in res.stdout and "iperf 3" in res.stdout, res
    print(out)
    res = cli(served, "bench", "compare", "cli-wiring-000", "cli-wiring-002")
    assert res.returncode == 0 and "throughput_gbps" in res.stdout, res.stderr
    res = cli(served, "-o", "json", "bench", "list", "--set", "cli-wiring")
    assert [r["name"] for r in json.loads(res.stdout)][:2] == ["cli-wiring-000", "cli-wiring-001"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: iperf3\niperf3: {streams: 0}\n")
    res = cli(served, "bench", "run", str(bad))
    assert res.returncode == 1 and "streams" in res.stderr, res
    res = cli(served, "bench", "delete", "cli-wiring")
    assert res.returncode == 0 and "deleted" in res.stdout, res
    assert cli(served, "bench", "show", "cli-wiring-000").returncode == 3


def test_a_run_on_a_platforms_servers_measures_its_wiring_and_leaves_them(served: Served) -> None:
    api = served.api
    r = api.post("/platforms", json={"name": "pp", "type": "perfpair"})
    assert r.status_code == 202, r.text
    wait_phase(api, "pp", "READY", timeout=120)
    servers = sorted(s["name"] for s in api.get("/platforms/pp").json()["servers"])
    for network, ports in (("bridge", "pp-net"), ("direct", "pp-fabric")):
        r = api.post(
            "/benchmarks",
            json={
                "name": f"on-pp-{network}",
                "kind": "iperf3",
                "network": network,
                "platform": "pp",
                "iperf3": {"duration": 1},
            },
        )
        assert r.status_code == 202, r.text
        body = wait_run(api, f"on-pp-{network}", "SUCCEEDED", "FAILED")
        assert body["phase"] == "SUCCEEDED", body["phase_reason"]
        env = body["environment"]["servers"]
        assert sorted(s["server"] for s in env) == servers, env
        net = api.get(f"/networks/{ports}").json()
        assert all(s["address"] in _addresses_on(api, s["server"], net["name"]) for s in env), env
    # The platform's servers are not the run's: they stay, and so does the platform.
    assert sorted(s["name"] for s in api.get("/platforms/pp").json()["servers"]) == servers
    assert api.get("/platforms/pp").json()["phase"] == "READY"
    r = api.post(
        "/benchmarks",
        json={"name": "on-pp-host", "kind": "iperf3", "platform": "pp", "network": "host"},
    )
    assert r.status_code == 202, r.text
    body = wait_run(api, "on-pp-host", "SUCCEEDED", "FAILED")
    assert body["phase"] == "SUCCEEDED", body["phase_reason"]
    assert [s["interface"] for s in body["environment"]["servers"]] == ["lo"]
    api.delete("/platforms/pp")


def _addresses_on(api: httpx.Client, server: str, network: str) -> list[str]:
    return list(api.get(f"/servers/{server}").json()["addresses"].get(network, []))
