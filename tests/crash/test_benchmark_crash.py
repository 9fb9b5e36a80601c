"""Kill the serving process with SIGKILL while a benchmark's servers are being made and
while its tool runs: after a restart the run either goes on and succeeds, or fails as
interrupted; either way every server, network and process it made is gone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crash.test_crash_safety import Instance, existing, owned_resources


@pytest.fixture
def inst(tmp_path: Path, sqlite_url: str) -> Iterator[Instance]:
    i = Instance(tmp_path, sqlite_url)
    yield i
    i.stop()
    try:
        i.start()
        for s in i.servers():
            i.call("DELETE", f"/servers/{s['id']}")
        i.wait_for(lambda: i.servers() == [], "servers gone", 60)
        for n in i.call("GET", "/networks").json()["items"]:
            i.call("DELETE", f"/networks/{n['id']}")
        i.wait_for(lambda: i.call("GET", "/networks").json()["items"] == [], "networks gone")
    finally:
        i.stop()


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
