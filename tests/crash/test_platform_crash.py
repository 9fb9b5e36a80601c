"""Kill the serving process with SIGKILL while a platform is configured, scaled and
deleted: after a restart it converges (READY with its steps' work done, or gone) and
nothing of it leaks."""

from __future__ import annotations

import pytest

from tests.crash.test_crash_safety import Instance, existing, owned_resources


def _phase(i: Instance, name: str) -> str:
    r = i.call("GET", f"/platforms/{name}")
    return str(r.json()["phase"]) if r.status_code == 200 else "GONE"


@pytest.mark.parametrize("when", ["configuring", "scaling"])
def test_sigkill_while_configuring_and_scaling_converges(inst: Instance, when: str) -> None:
    crash_at = "reconcile.platform.before_step_recorded"
    configuring = when == "configuring"
    inst.start(crash_at=crash_at if configuring else "")
    r = inst.call("POST", "/platforms", {"name": "cr", "type": "web", "parameters": {"workers": 1}})
    assert r.status_code == 202, r.text
    if configuring:
        assert inst.wait_killed() == -9
        inst.start()
    inst.wait_for(lambda: _phase(inst, "cr") == "READY", "READY after the restart", 90)
    if not configuring:
        inst.stop()
        inst.start(crash_at=crash_at)
        r = inst.call("PATCH", "/platforms/cr", {"parameters": {"workers": 3}})
        assert r.status_code == 202, r.text
        assert inst.wait_killed() == -9
        inst.start()
        inst.wait_for(lambda: _phase(inst, "cr") == "READY", "READY after scaling", 90)
    body = inst.call("GET", "/platforms/cr").json()
    want = 2 if configuring else 4
    assert len(body["servers"]) == want, body
    page = inst.call(
        "POST", "/servers/cr-web1/exec", {"argv": ["cat", "/srv/www/index.html"]}
    ).json()["stdout"]
    for s in body["servers"]:
        if s["role"] == "worker":
            assert f"worker {s['name']} {s['address']}" in page, page


def test_sigkill_while_deleting_converges(inst: Instance) -> None:
    inst.start()
    r = inst.call("POST", "/platforms", {"name": "cd", "type": "web", "parameters": {"workers": 2}})
    assert r.status_code == 202, r.text
    inst.wait_for(lambda: _phase(inst, "cd") == "READY", "READY", 90)
    inst.stop()
    inst.start(crash_at="reconcile.platform.after_servers_deleted")
    inst.call("DELETE", "/platforms/cd")
    assert inst.wait_killed() == -9
    inst.start()
    inst.wait_for(lambda: _phase(inst, "cd") == "GONE", "platform gone after the restart", 90)
    assert inst.servers() == []
    assert inst.call("GET", "/networks").json()["items"] == [] or all(
        not n["name"].startswith("cd-") for n in inst.call("GET", "/networks").json()["items"]
    )
    leaked = [n for n in existing(owned_resources(inst.instance_id())) if n.startswith("ecl-")]
    assert leaked == [], leaked
