"""What the benchmark framework costs, and whether its figures are the tool's own.

    python -m bench.perf_overhead [--json] [--duration 5] [--runs 3]

Runs a real ``ecliptic serve`` (local cloud, fresh data dir), builds the ``perf`` image
first (not timed), does one untimed warm-up run, then:

- ``total_s``: ``POST /benchmarks`` of a 2-server iperf3 run of ``duration_s`` seconds over
  the bridge until it is SUCCEEDED, which is after its servers (and network) were made,
  the tool ran, the figures were stored and the servers and network were removed; polled
  every 20 ms; the median of ``--runs`` runs. Target: ``duration_s + 2``.
- ``permutations``: a set of 12 (3 network modes x 4 stream counts, 1 s each) is run;
  ``leaked`` counts the ``ecl-`` namespaces, links and mounts present after it that were
  not there before it (target 0).
- ``max_deviation_pct``: the same iperf3 command run by hand (``server exec``) between two
  servers made by hand with the same image, flavor and wiring, interleaved with framework
  runs, for the bridge and the direct port; the largest difference between the medians, in
  percent of the hand-run figure (target ≤ 5).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from typing import Any

import httpx

from bench.harness import serve, spread

TARGET_DEVIATION_PCT = 5.0


def _wait(http: httpx.Client, path: str, done: Any, what: str, timeout: float = 900) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        body = http.get(path).json()
        if done(body):
            return body
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {body}")
        time.sleep(0.02)


def build_perf(http: httpx.Client) -> None:
    """Build the perf image (not part of any figure)."""
    http.post("/images/perf/build")
    _wait(
        http,
        "/images/perf",
        lambda b: b["status"] in ("built", "failed"),
        "perf image",
    )


def run(http: httpx.Client, body: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    """Seconds from submitting a run to SUCCEEDED, and the run."""
    t0 = time.monotonic()
    r = http.post("/benchmarks", json=body)
    if r.status_code != 202:
        raise RuntimeError(r.text)
    name = r.json()["name"]
    out = _wait(http, f"/benchmarks/{name}", lambda b: b["phase"] in ("SUCCEEDED", "FAILED"), name)
    took = time.monotonic() - t0
    if out["phase"] != "SUCCEEDED":
        raise RuntimeError(f"{name}: {out['phase_reason']}")
    return took, out


def local_cloud() -> set[str]:
    """``ecl-`` namespaces, links and overlay mounts on this machine."""
    names = set()
    ns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    names |= {f"netns {ln.split()[0]}" for ln in ns.splitlines() if ln.startswith("ecl")}
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    for ln in links.splitlines():
        name = ln.split(":")[1].strip().split("@")[0]
        if name.startswith("ecl"):
            names.add(f"link {name}")
    with open("/proc/self/mounts") as f:
        names |= {f"mount {ln.split()[1]}" for ln in f if "ecl" in ln.split()[1]}
    return names


def by_hand(http: httpx.Client, network: str, duration: int) -> dict[str, Any]:
    """Two servers made by hand like a run's (perf image, m1.small, one port)."""
    vnic = "direct" if network == "direct" else "normal"
    net = f"hand-{network}"
    r = http.post("/networks", json={"name": net})
    if r.status_code != 202:
        raise RuntimeError(r.text)
    names = [f"{net}-0", f"{net}-1"]
    for n in names:
        r = http.post(
            "/servers",
            json={
                "name": n,
                "flavor": "m1.small",
                "image": "perf",
                "networks": [{"network": net, "vnic_type": vnic}],
            },
        )
        if r.status_code != 202:
            raise RuntimeError(r.text)
    for n in names:
        _wait(http, f"/servers/{n}", lambda b: b["phase"] == "ACTIVE", n)
    peer = http.get(f"/servers/{names[1]}").json()
    address = next(iter(peer["addresses"].values()))[0]
    return {"names": names, "address": address, "network": net, "duration": duration}


def hand_run(http: httpx.Client, h: dict[str, Any]) -> float:
    """iperf3 run by hand: the server daemonised in one, the client in the other."""
    srv = ["iperf3", "--server", "--one-off", "--daemon", "--bind", h["address"]]
    r = http.post(f"/servers/{h['names'][1]}/exec", json={"argv": srv, "timeout": 10})
    if r.status_code != 200 or r.json()["exit_code"] != 0:
        raise RuntimeError(r.text)
    time.sleep(0.2)
    cli = ["iperf3", "--client", h["address"], "--json", "--time", str(h["duration"])]
    r = http.post(
        f"/servers/{h['names'][0]}/exec", json={"argv": cli, "timeout": h["duration"] + 30}
    )
    if r.status_code != 200:
        raise RuntimeError(r.text)
    doc = json.loads(r.json()["stdout"])
    return float(doc["end"]["sum_received"]["bits_per_second"]) / 1e9


def remove(http: httpx.Client, h: dict[str, Any]) -> None:
    for n in h["names"]:
        http.delete(f"/servers/{n}")
    for n in h["names"]:
        _wait(http, f"/servers/{n}", lambda b: b.get("phase") is None, f"{n} gone")
    http.delete(f"/networks/{h['network']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--duration", type=int, default=5, help="seconds of traffic per run")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    d = args.duration
    load_before = os.getloadavg()
    with serve() as s:
        http = s.http
        build_perf(http)
        run(http, {"kind": "iperf3", "iperf3": {"duration": 1}})  # warm-up
        totals = [
            run(http, {"kind": "iperf3", "iperf3": {"duration": d}})[0] for _ in range(args.runs)
        ]
        before = local_cloud()
        r = http.post(
            "/benchmark-sets",
            json={
                "name": "twelve",
                "template": {"kind": "iperf3", "iperf3": {"duration": 1}},
                "permutations": {
                    "product": {
                        "network": ["bridge", "direct", "host"],
                        "iperf3.streams": [1, 2, 4, 8],
                    }
                },
            },
        )
        if r.status_code != 202:
            raise RuntimeError(r.text)
        t0 = time.monotonic()
        done = _wait(http, "/benchmark-sets/twelve", lambda b: b["phase"] != "RUNNING", "set")
        set_s = time.monotonic() - t0
        leaked = sorted(local_cloud() - before)
        deviations: dict[str, dict[str, Any]] = {}
        for network in ("bridge", "direct"):
            h = by_hand(http, network, d)
            hand, framework = [], []
            try:
                for _ in range(args.runs):
                    hand.append(hand_run(http, h))
                    _, out = run(
                        http, {"kind": "iperf3", "network": network, "iperf3": {"duration": d}}
                    )
                    framework.append(out["result"]["metrics"]["throughput_gbps"])
            finally:
                remove(http, h)
            mh, mf = statistics.median(hand), statistics.median(framework)
            deviations[network] = {
                "hand_gbps": spread(hand),
                "framework_gbps": spread(framework),
                "deviation_pct": round(abs(mf - mh) / mh * 100, 2),
            }
    result: dict[str, Any] = {
        "duration_s": d,
        "total_s": round(statistics.median(totals), 3),
        "permutations": done["runs"],
        "leaked": len(leaked),
        "max_deviation_pct": max(v["deviation_pct"] for v in deviations.values()),
        "set_phase": done["phase"],
        "set_s": round(set_s, 2),
        "spread": {"total_s": spread(totals)},
        "deviation": deviations,
        "leaked_names": leaked[:20],
        "targets": {"total_s": d + 2, "leaked": 0, "max_deviation_pct": TARGET_DEVIATION_PCT},
        "load": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")


if __name__ == "__main__":
    main()
