"""What an attack on benchmarks found, each tried again against a real ``ecliptic serve``:
every test asserts the safe behaviour, so it fails while the hole is open. Besides the holes
(a run's tool outliving its timeout or its cancelling, a platform's output read by members
off its access list, escape sequences from a tool reaching the reader's terminal, a spec
nested past Python's stack), what held is kept as regression tests: another tenancy sees
nothing, quota, deleting what a run made mid-run, its security group, cancelling in each
phase, plot names.

A web platform stands in for a platform with tools a tenant chose: its servers get an
``iperf3`` of the tenant's own (a shell script) that prints escape sequences and, when told
to, never ends."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.platforms.conftest import wait_phase
from tests.platforms.test_benchmarks import leftovers, wait_run, wait_set
from tests.platforms.test_platform_cli import cli
from tests.tunnel.conftest import Served, needs_gateway

pytestmark = needs_gateway

PASSWORD = "bench-attack-password-1"
ESC = "\x1b"
FAKE_IPERF3 = """#!/bin/sh
# A tenant's own iperf3: escape sequences in everything it prints; with /tmp/bx-hang there,
# the client never ends.
case " $* " in
  *" --version "*) printf 'iperf 3.fake\\033]0;pwned\\007\\033[2J\\n'; exit 0 ;;
  *" --server "*) echo "Server listening on 5201"; exec sleep 600 ;;
esac
[ -f /tmp/bx-hang ] && exec sleep 3600
printf 'not json\\033]0;pwned\\007\\033[31m red\\n'
"""


def _user(served: Served, name: str, tenancy: str = "default") -> dict[str, str]:
    """Headers of ``name``, a plain member of ``tenancy`` (made now unless there)."""
    api = served.api
    r = api.post("/users", json={"name": name, "password": PASSWORD})
    assert r.status_code in (201, 409), r.text
    r = api.put(f"/tenancies/{tenancy}/members", json={"user": name, "role": "member"})
    assert r.status_code in (200, 201), r.text
    token = api.post("/auth/login", json={"username": name, "password": PASSWORD}).json()
    return {"Authorization": f"Bearer {token['secret']}", "X-Ecliptic-Tenancy": tenancy}


def _exec(api: httpx.Client, server: str, script: str) -> dict[str, Any]:
    r = api.post(f"/servers/{server}/exec", json={"argv": ["/bin/sh", "-c", script], "timeout": 30})
    assert r.status_code == 200, r.text
    return dict(r.json())


def _gone(api: httpx.Client, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while leftovers(api, name):
        assert time.monotonic() < deadline, leftovers(api, name)
        time.sleep(0.2)


@pytest.fixture(autouse=True)
def _nothing_left(served: Served) -> Iterator[None]:
    """Whatever a test leaves running (it failed half-way) is cancelled, and gone, after it."""
    yield
    api = served.api
    left = [
        run["name"]
        for run in api.get("/benchmarks", params={"limit": 1000}).json()["items"]
        if run["name"].startswith("bx") and run["phase"] not in ("SUCCEEDED", "FAILED")
    ]
    for name in left:
        api.delete(f"/benchmarks/{name}")
    for name in left:
        _gone(api, f"{name}-", timeout=120)


@pytest.fixture(scope="module")
def platform(served: Served) -> Iterator[list[str]]:
    """A web platform of two servers (admin alone on its access list) whose ``iperf3`` is
    the tenant's script; its servers' names, the run's server 0 first."""
    api = served.api
    r = api.post("/platforms", json={"name": "bxp", "type": "web", "parameters": {"workers": 1}})
    assert r.status_code == 202, r.text
    body = wait_phase(api, "bxp", "READY", timeout=120)
    names = sorted(s["name"] for s in body["servers"])
    plant = "cat > /usr/local/bin/iperf3 && chmod 0755 /usr/local/bin/iperf3"
    for n in names:
        r = api.post(
            f"/servers/{n}/exec",
            json={"argv": ["/bin/sh", "-c", plant], "stdin": FAKE_IPERF3, "timeout": 30},
        )
        assert r.status_code == 200 and r.json()["exit_code"] == 0, r.text
    yield names
    api.delete("/platforms/bxp")
    deadline = time.monotonic() + 90
    while api.get("/platforms/bxp").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.2)


def _sleepers(api: httpx.Client, server: str) -> list[str]:
    """Processes of the fake tool still running in ``server``."""
    out = _exec(api, server, "ps -eo args= 2>/dev/null || true")["stdout"]
    return [ln for ln in out.splitlines() if ln.startswith("sleep 3600")]


# ------------------------------------------------------------------------------ holes


def test_a_platforms_runs_are_for_its_access_list(served: Served, platform: list[str]) -> None:
    api = served.api
    mallory = _user(served, "bx-mallory")
    r = api.post(
        "/benchmarks",
        json={"name": "bxp-r1", "kind": "iperf3", "platform": "bxp", "iperf3": {"duration": 1}},
    )
    assert r.status_code == 202, r.text
    run = wait_run(api, "bxp-r1", "SUCCEEDED", "FAILED", timeout=120)
    assert ESC in api.get("/benchmarks/bxp-r1/output").text  # what the servers printed
    assert "3.fake" in json.dumps(run["environment"])
    # Mallory is in the tenancy but not on the platform's access list: she may not read
    # its servers' logs, nor may she read them through a benchmark run.
    for path in ("", "/output", "/events", "/results", "/plots/iperf3-throughput.svg"):
        for ref in ("bxp-r1", run["id"]):
            r = api.get(f"/benchmarks/{ref}{path}", headers=mallory)
            assert r.status_code == 404, (path, r.status_code, r.text)
            assert "3.fake" not in r.text and "not json" not in r.text
    r = api.get("/benchmark-comparisons", params={"a": "bxp-r1", "b": "bxp-r1"}, headers=mallory)
    assert r.status_code == 404, r.text
    names = [x["name"] for x in api.get("/benchmarks", headers=mallory).json()["items"]]
    assert "bxp-r1" not in names
    assert api.delete("/benchmarks/bxp-r1", headers=mallory).status_code == 404
    # (held) nor may she run one there, alone or in a set.
    r = api.post("/benchmarks", json={"kind": "iperf3", "platform": "bxp"}, headers=mallory)
    assert r.status_code == 404 and "bxp" in r.text, r.text
    r = api.post(
        "/benchmark-sets",
        json={
            "name": "bx-sneak",
            "template": {"kind": "iperf3"},
            "permutations": {"product": {"platform": ["bxp"]}},
        },
        headers=mallory,
    )
    assert r.status_code == 404, r.text
    # Put on the list, she queues a run; taken off it before its turn, the run does not go.
    assert api.put("/platforms/bxp/access", json={"users": ["admin", "bx-mallory"]}).is_success
    r = api.post(
        "/benchmarks", json={"name": "bxp-hold", "kind": "iperf3", "iperf3": {"duration": 20}}
    )
    assert r.status_code == 202, r.text
    wait_run(api, "bxp-hold", "RUNNING")
    r = api.post(
        "/benchmarks",
        json={"name": "bxp-m1", "kind": "iperf3", "platform": "bxp"},
        headers=mallory,
    )
    assert r.status_code == 202, r.text
    assert api.get("/benchmarks/bxp-m1", headers=mallory).status_code == 200
    assert api.put("/platforms/bxp/access", json={"users": ["admin"]}).is_success
    assert api.delete("/benchmarks/bxp-hold").status_code == 202
    body = wait_run(api, "bxp-m1", "SUCCEEDED", "FAILED", timeout=120)
    assert body["phase"] == "FAILED" and "you may use" in body["phase_reason"], body
    assert body["environment"] == {} and api.get("/benchmarks/bxp-m1/output").text == ""
    _gone(api, "bxp-hold")


def test_the_cli_shows_a_tools_escape_sequences_as_text(
    served: Served, platform: list[str]
) -> None:
    api = served.api
    if api.get("/benchmarks/bxp-cli").status_code == 404:
        r = api.post(
            "/benchmarks",
            json={"name": "bxp-cli", "kind": "iperf3", "platform": "bxp"},
        )
        assert r.status_code == 202, r.text
    wait_run(api, "bxp-cli", "SUCCEEDED", "FAILED", timeout=120)
    for args in (
        ("bench", "output", "bxp-cli"),
        ("bench", "show", "bxp-cli"),
        ("bench", "list"),
        ("bench", "events", "bxp-cli"),
    ):
        res = cli(served, *args)
        assert res.returncode == 0, (args, res.stderr)
        assert ESC not in res.stdout and ESC not in res.stderr, (args, res.stdout)
    out = cli(served, "bench", "output", "bxp-cli").stdout
    assert "not json\\x1b]0;pwned\\x07\\x1b[31m red" in out, out
    assert "iperf 3.fake\\x1b]0;pwned" in cli(served, "bench", "show", "bxp-cli").stdout


def test_cancelling_a_platform_run_stops_its_tool_before_the_next_run(
    served: Served, platform: list[str]
) -> None:
    api = served.api
    _exec(api, platform[0], "touch /tmp/bx-hang")
    try:
        r = api.post("/benchmarks", json={"name": "bxp-hang", "kind": "iperf3", "platform": "bxp"})
        assert r.status_code == 202, r.text
        wait_run(api, "bxp-hang", "RUNNING", timeout=120)
        deadline = time.monotonic() + 30
        while not _sleepers(api, platform[0]):
            assert time.monotonic() < deadline, "the tool never started"
            time.sleep(0.2)
        r = api.post(
            "/benchmarks", json={"name": "bxp-after", "kind": "iperf3", "iperf3": {"duration": 1}}
        )
        assert r.status_code == 202, r.text
        assert api.delete("/benchmarks/bxp-hang").status_code == 202
        body = wait_run(api, "bxp-hang", "FAILED", timeout=60)
        assert "cancelled" in body["phase_reason"], body
        # The platform's servers stay: what the run started in them must not.
        for n in platform:
            assert _sleepers(api, n) == [], n
        after = wait_run(api, "bxp-after", "SUCCEEDED", "FAILED", timeout=120)
        assert after["started_at"] >= body["finished_at"], (after, body)
    finally:
        _exec(api, platform[0], "rm -f /tmp/bx-hang")
    _gone(api, "bxp-after")


def test_a_run_ends_at_its_timeout(served: Served, platform: list[str]) -> None:
    api = served.api
    # Fresh servers: a real iperf3 asked for two minutes, allowed twenty seconds.
    r = api.post(
        "/benchmarks",
        json={"name": "bx-slow", "kind": "iperf3", "timeout_s": 20, "iperf3": {"duration": 120}},
    )
    assert r.status_code == 202, r.text
    body = wait_run(api, "bx-slow", "SUCCEEDED", "FAILED", timeout=75)
    assert body["phase"] == "FAILED" and "timed out" in body["phase_reason"], body
    _gone(api, "bx-slow")
    # A platform: its tool never ends, and it must not be left running when the run ends.
    _exec(api, platform[0], "touch /tmp/bx-hang")
    try:
        r = api.post(
            "/benchmarks",
            json={"name": "bxp-slow", "kind": "iperf3", "platform": "bxp", "timeout_s": 15},
        )
        assert r.status_code == 202, r.text
        body = wait_run(api, "bxp-slow", "SUCCEEDED", "FAILED", timeout=75)
        assert body["phase"] == "FAILED" and "timed out" in body["phase_reason"], body
        for n in platform:
            assert _sleepers(api, n) == [], n
    finally:
        _exec(api, platform[0], "rm -f /tmp/bx-hang")


def test_a_spec_nested_past_reason_is_refused(served: Served) -> None:
    deep: dict[str, Any] = {}
    cur = deep
    for _ in range(600):
        cur["a"] = {}
        cur = cur["a"]
    r = served.api.post(
        "/benchmark-sets", json={"name": "bx-deep", "template": {"kind": "iperf3", "x": deep}}
    )
    assert r.status_code == 422, r.text  # was a 500 (RecursionError)
    assert "nests deeper" in r.json()["detail"], r.text


# ------------------------------------------------------------------------------ held


def test_another_tenancy_sees_nothing_and_its_quota_holds(served: Served) -> None:
    api = served.api
    r = api.post("/tenancies", json={"name": "bx-other"})
    assert r.status_code in (201, 409), r.text
    eve = _user(served, "bx-eve", "bx-other")
    r = api.post(
        "/benchmark-sets",
        json={"name": "bxiso", "template": {"kind": "iperf3", "iperf3": {"duration": 1}}},
    )
    assert r.status_code == 202, r.text
    wait_set(api, "bxiso")
    run = api.get("/benchmarks/bxiso-000").json()
    assert run["phase"] == "SUCCEEDED", run
    set_id = api.get("/benchmark-sets/bxiso").json()["id"]
    paths = [
        f"/benchmarks/{ref}{tail}"
        for ref in ("bxiso-000", run["id"])
        for tail in ("", "/output", "/events", "/results", "/plots/iperf3-throughput.svg")
    ] + [
        f"/benchmark-sets/{ref}{tail}"
        for ref in ("bxiso", set_id)
        for tail in ("", "/results", "/plots/iperf3-throughput.svg")
    ]
    for path in paths:
        r = api.get(path, headers=eve)
        assert r.status_code == 404, (path, r.text)
        assert run["id"] not in r.text.replace(path.split("/")[2], "") and "Gbit" not in r.text
    for a, b in (("bxiso-000", "bxiso-000"), (run["id"], run["id"]), ("bxiso", "bxiso")):
        r = api.get("/benchmark-comparisons", params={"a": a, "b": b}, headers=eve)
        assert r.status_code == 404, r.text
    assert api.get("/benchmarks", params={"set": "bxiso"}, headers=eve).status_code == 404
    assert api.get("/benchmarks", headers=eve).json()["items"] == []
    assert api.get("/benchmark-sets", headers=eve).json()["items"] == []
    for path in ("/benchmarks/bxiso-000", f"/benchmarks/{run['id']}", "/benchmark-sets/bxiso"):
        assert api.delete(path, headers=eve).status_code == 404
    r = api.post("/benchmarks", json={"kind": "iperf3", "platform": "bxp"}, headers=eve)
    assert r.status_code == 404, r.text
    # Her own run of the same name is hers; her quota (one server) cannot hold its two.
    assert api.put("/tenancies/bx-other/quota", json={"servers": 1}).is_success
    r = api.post("/benchmarks", json={"name": "bxiso-000", "kind": "iperf3"}, headers=eve)
    assert r.status_code == 202, r.text
    deadline = time.monotonic() + 60
    while (mine := api.get("/benchmarks/bxiso-000", headers=eve).json())["phase"] != "FAILED":
        assert time.monotonic() < deadline, mine
        time.sleep(0.1)
    assert "cannot place it" in mine["phase_reason"] and "quota" in mine["phase_reason"], mine
    assert api.get("/servers", headers=eve).json()["items"] == []
    assert api.get("/networks", headers=eve).json()["items"] == []
    assert api.get("/benchmarks/bxiso-000").json()["phase"] == "SUCCEEDED"  # admin's is intact


def test_what_a_run_made_deleted_under_it(served: Served) -> None:
    api = served.api
    r = api.post("/benchmarks", json={"name": "bxd", "kind": "iperf3", "iperf3": {"duration": 60}})
    assert r.status_code == 202, r.text
    wait_run(api, "bxd", "RUNNING")
    for method, path, body in (
        ("POST", "/security-groups/benchmark:bxd/rules", {"direction": "ingress"}),
        ("DELETE", "/security-groups/benchmark:bxd", None),
        ("PUT", "/servers/bxd-0/security-groups", {"security_groups": ["benchmark:bxd"]}),
    ):
        r = api.request(method, path, json=body)
        assert r.status_code in (403, 409, 422), (method, path, r.text)
    assert api.delete("/servers/bxd-1").status_code in (202, 204)
    body = wait_run(api, "bxd", "FAILED", timeout=60)
    assert body["phase_reason"], body
    _gone(api, "bxd")


def test_cancelling_in_each_phase_and_a_set_mid_run(served: Served) -> None:
    api = served.api
    r = api.post(
        "/benchmark-sets",
        json={
            "name": "bxc",
            "template": {"kind": "iperf3", "iperf3": {"duration": 30}},
            "repetitions": 3,
        },
    )
    assert r.status_code == 202, r.text
    wait_run(api, "bxc-000", "RUNNING")
    r = api.post("/benchmarks", json={"name": "bxc-p", "kind": "iperf3"})
    assert r.status_code == 202, r.text
    assert api.delete("/benchmarks/bxc-p").status_code == 202  # PENDING: over at once
    assert api.get("/benchmarks/bxc-p").json()["phase"] == "FAILED"
    assert api.delete("/benchmark-sets/bxc").status_code == 202
    body = wait_set(api, "bxc", timeout=60)
    assert body["phase"] == "FAILED", body
    runs = api.get("/benchmarks", params={"set": "bxc"}).json()["items"]
    assert {x["phase"] for x in runs} == {"FAILED"}, runs
    assert all("cancelled" in x["phase_reason"] for x in runs), runs
    _gone(api, "bxc")
    assert api.delete("/benchmark-sets/bxc").status_code == 204
    assert api.get("/benchmarks/bxc-000").status_code == 404
    # Cancelled as soon as it is made: PENDING or PROVISIONING, whichever it reached.
    r = api.post("/benchmarks", json={"name": "bxc-q", "kind": "iperf3"})
    assert r.status_code == 202, r.text
    assert api.delete("/benchmarks/bxc-q").status_code in (202, 204)
    body = wait_run(api, "bxc-q", "FAILED", "SUCCEEDED", timeout=60)
    assert body["phase"] == "FAILED" and "cancelled" in body["phase_reason"], body
    _gone(api, "bxc-q")


def test_plot_names_are_only_plot_names(served: Served) -> None:
    api = served.api
    if api.get("/benchmarks/bxiso-000").status_code != 200:
        pytest.skip("needs the run of test_another_tenancy_sees_nothing_and_its_quota_holds")
    base = "/benchmarks/bxiso-000/plots"
    assert api.get(f"{base}/iperf3-throughput.svg").headers["content-type"] == "image/svg+xml"
    for name in ("..%2F..%2Fetc%2Fpasswd", "iperf3-throughput.html", "%2e%2e.svg", ".svg", "x"):
        r = api.get(f"{base}/{name}")
        assert r.status_code == 404, (name, r.text)
        assert r.headers["content-type"] == "application/problem+json"


def test_a_yaml_bomb_is_refused_by_the_cli(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True)
    )
    spec = tmp_path / "bomb.yaml"
    spec.write_text("name: bomb\ntemplate: {kind: iperf3}\n" + bomb)
    for args in (("bench", "export", str(spec)), ("bench", "run", str(spec))):
        res = cli(None, *args, timeout=60)
        assert res.returncode == 2, (args, res.stderr[-500:])
        assert "anchors and aliases" in res.stderr, res.stderr[-500:]
