"""What the benchmark framework costs, and whether its figures are the tool's own.

    python -m bench.perf_overhead [--json] [--duration 5] [--runs 3]

Runs a real ``ecliptic serve`` (local cloud, fresh data dir), builds the ``perf`` image
first (not timed), does one untimed warm-up run, then:

- ``total_s``: ``POST /benchmarks`` of a 2-server iperf3 run of ``duration_s`` seconds over
  the bridge until it is SUCCEEDED, which is after its servers (and network) were made,
  the tool ran, the figures were stored and the servers and network were removed; polled
  every 20 ms; the median of ``--runs`` runs. Target: ``duration_s + 2``.
- ``permutations``: a set of 12 (3 network modes x 4 stream counts, 1 s each) is run;
  ``leaked`` counts what the instance's backend holds after it that it did not hold
  before it (``GET /backend/status``: namespaces, links, sandboxes, mounts), plus what it
  holds that no known object owns (target 0).
- ``max_deviation_pct``: iperf3 run by hand (``server exec``) and by the framework
  (``platform: pair``) between the same two servers (a platform of two perf servers with a
  fabric, ``bench/types/perfpair.yaml``), interleaved, for the bridge and the direct port;
  the largest difference between the medians, in percent of the hand-run figure (target
  5). The framework's runs are polled once a second there, so that the polling takes no
  CPU from the servers being measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import httpx

from bench.harness import serve, spread
from ecliptic.perf.stats import Spread

TARGET_DEVIATION_PCT = 5.0


def _wait(
    http: httpx.Client, path: str, done: Any, what: str, timeout: float = 900, poll: float = 0.02
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        body = http.get(path).json()
        if done(body):
            return body
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: {body}")
        time.sleep(poll)


def build_perf(http: httpx.Client) -> None:
    """Build the perf image (not part of any figure)."""
    http.post("/images/perf/build")
    _wait(
        http,
        "/images/perf",
        lambda b: b["status"] in ("built", "failed"),
        "perf image",
    )


def run(
    http: httpx.Client, body: dict[str, Any], poll: float = 0.02
) -> tuple[float, dict[str, Any]]:
    """Seconds from submitting a run to SUCCEEDED (polled every ``poll`` s), and the run."""
    t0 = time.monotonic()
    r = http.post("/benchmarks", json=body)
    if r.status_code != 202:
        raise RuntimeError(r.text)
    name = r.json()["name"]
    out = _wait(
        http,
        f"/benchmarks/{name}",
        lambda b: b["phase"] in ("SUCCEEDED", "FAILED"),
        name,
        poll=poll,
    )
    took = time.monotonic() - t0
    if out["phase"] != "SUCCEEDED":
        raise RuntimeError(f"{name}: {out['phase_reason']}")
    return took, out


def held(http: httpx.Client) -> tuple[set[str], int]:
    """What this instance's backend really holds (namespaces, links, sandboxes, mounts...),
    and how many of those no known object owns (other processes' resources not counted)."""
    body = http.get("/backend/status").json()
    return {f"{r['kind']} {r['name']}" for r in body["resources"]}, int(body["orphans"])


def pair(http: httpx.Client, network: str, duration: int) -> dict[str, Any]:
    """A platform of two perf servers (``bench/types/perfpair.yaml``): the framework and the
    hand runs measure the very same servers."""
    r = http.post("/platforms", json={"name": "pair", "type": "perfpair"})
    if r.status_code != 202:
        raise RuntimeError(r.text)
    body = _wait(http, "/platforms/pair", lambda b: b["phase"] in ("READY", "FAILED"), "pair")
    if body["phase"] != "READY":
        raise RuntimeError(body["phase_reason"])
    names = sorted(s["name"] for s in body["servers"])
    net = "pair-fabric" if network == "direct" else "pair-net"
    peer = http.get(f"/servers/{names[1]}").json()
    address = peer["addresses"][net][0]
    return {"names": names, "address": address, "duration": duration}


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


def remove_pair(http: httpx.Client) -> None:
    http.delete("/platforms/pair")
    _wait(http, "/platforms/pair", lambda b: b.get("phase") is None, "pair gone")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON line")
    ap.add_argument("--duration", type=int, default=5, help="seconds of traffic per run")
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    d = args.duration
    load_before = os.getloadavg()
    types = Path(__file__).parent / "types"
    with serve(extra_env={"ECLIPTIC_PLATFORM_TYPES": str(types)}) as s:
        http = s.http
        build_perf(http)
        run(http, {"kind": "iperf3", "iperf3": {"duration": 1}})  # warm-up
        totals = [
            run(http, {"kind": "iperf3", "iperf3": {"duration": d}})[0] for _ in range(args.runs)
        ]
        before, _ = held(http)
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
        after, orphans = held(http)
        leaked = sorted(after - before)
        deviations: dict[str, dict[str, Any]] = {}
        for network in ("bridge", "direct"):
            h = pair(http, network, d)
            hand, framework = [], []
            try:
                for i in range(args.runs):
                    # Alternate which goes first, so that neither always follows the other.
                    for who in ("hand", "framework") if i % 2 == 0 else ("framework", "hand"):
                        if who == "hand":
                            hand.append(hand_run(http, h))
                            continue
                        # Polled once a second: a poll every 20 ms would take CPU from the run.
                        _, out = run(
                            http,
                            {
                                "kind": "iperf3",
                                "network": network,
                                "platform": "pair",
                                "iperf3": {"duration": d},
                            },
                            poll=1.0,
                        )
                        framework.append(out["result"]["metrics"]["throughput_gbps"])
            finally:
                remove_pair(http)
            mh, mf = statistics.median(hand), statistics.median(framework)
            a, b = Spread.of(hand), Spread.of(framework)
            deviations[network] = {
                "hand_gbps": spread(hand),
                "framework_gbps": spread(framework),
                "deviation_pct": round(abs(mf - mh) / mh * 100, 2),
                "beyond_spread": not a.overlaps(b),
            }
    result: dict[str, Any] = {
        "duration_s": d,
        "total_s": round(statistics.median(totals), 3),
        "permutations": done["runs"],
        "leaked": len(leaked) + orphans,
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
