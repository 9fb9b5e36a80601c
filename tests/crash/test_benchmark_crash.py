"""Kill the serving process with SIGKILL while a benchmark's servers are being made and
while its tool runs: after a restart the run either goes on and succeeds, or fails as
interrupted; either way every server, network and process it made is gone."""

from __future__ import annotations

import pytest

from tests.crash.test_crash_safety import Instance, existing, owned_resources


def _run(i: Instance, name: str) -> dict:
    r = i.call("GET", f"/benchmarks/{name}")
    assert r.status_code == 200, r.text
    return dict(r.json())


@pytest.mark.parametrize(
    ("crash_at", "outcome"),
    [
        ("reconcile.benchmark.provisioned", "SUCCEEDED"),
        ("reconcile.benchmark.tool_started", "FAILED"),
    ],
)
def test_sigkill_mid_run_converges_and_leaks_nothing(
    inst: Instance, crash_at: str, outcome: str
) -> None:
    inst.start(crash_at=crash_at)
    r = inst.call(
        "POST", "/benchmarks", {"name": "cr", "kind": "iperf3", "iperf3": {"duration": 1}}
    )
    assert r.status_code == 202, r.text
    assert inst.wait_killed(timeout=240) == -9
    inst.start()
    inst.wait_for(lambda: _run(inst, "cr")["phase"] in ("SUCCEEDED", "FAILED"), "the run over", 120)
    body = _run(inst, "cr")
    assert body["phase"] == outcome, body
    if outcome == "FAILED":
        assert "interrupted" in body["phase_reason"], body
    else:
        assert body["result"]["metrics"]["throughput_gbps"] > 0, body
    assert inst.servers() == []
    assert inst.call("GET", "/networks").json()["items"] == []
    groups = inst.call("GET", "/security-groups").json()["items"]
    assert [g["name"] for g in groups if g["name"].startswith("benchmark:")] == []
    leaked = [n for n in existing(owned_resources(inst.instance_id())) if n.startswith("ecl-")]
    assert leaked == [], leaked


HANGING_IPERF3 = """#!/bin/sh
case " $* " in
  *" --version "*) echo "iperf 3.fake"; exit 0 ;;
  *" --server "*) echo "Server listening on 5201"; exec sleep 600 ;;
esac
exec sleep 3600
"""


def _in(i: Instance, server: str, script: str) -> str:
    r = i.call("POST", f"/servers/{server}/exec", {"argv": ["/bin/sh", "-c", script]})
    assert r.status_code == 200, r.text
    return str(r.json()["stdout"])


def test_sigkill_mid_run_on_a_platform_leaves_its_links_and_servers_as_they_were(
    inst: Instance,
) -> None:
    # A platform's servers outlive a run: before the fix, a run killed mid-measurement left
    # their links shaped (here to 1 Mbit/s, possibly to 8 kbit/s) and its tools running.
    i = inst
    i.start()
    r = i.call("POST", "/platforms", {"name": "bp", "type": "web", "parameters": {"workers": 1}})
    assert r.status_code == 202, r.text
    i.wait_for(lambda: i.call("GET", "/platforms/bp").json()["phase"] == "READY", "READY", 90)
    servers = sorted(s["name"] for s in i.call("GET", "/platforms/bp").json()["servers"])
    for n in servers:
        r = i.call(
            "POST",
            f"/servers/{n}/exec",
            {
                "argv": [
                    "/bin/sh",
                    "-c",
                    "cat > /usr/local/bin/iperf3; chmod 0755 /usr/local/bin/iperf3",
                ],
                "stdin": HANGING_IPERF3,
            },
        )
        assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text
    i.stop()
    i.start(crash_at="reconcile.benchmark.tool_started")
    r = i.call(
        "POST",
        "/benchmarks",
        {"name": "bpr", "kind": "iperf3", "platform": "bp", "shaping": {"rate": "1mbit"}},
    )
    assert r.status_code == 202, r.text
    assert i.wait_killed(timeout=120) == -9
    i.start()
    i.wait_for(lambda: _run(i, "bpr")["phase"] == "FAILED", "the run over", 120)
    assert "interrupted" in _run(i, "bpr")["phase_reason"]
    for n in servers:
        links = _in(i, n, "ip link show")
        assert "qdisc tbf" not in links, (n, links)
        procs = _in(i, n, "ps -eo args=")
        assert "sleep 600" not in procs and "sleep 3600" not in procs, (n, procs)
