"""Images through the API, and servers that boot from them and come back when killed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from ecliptic.backends.local import LocalBackend
from ecliptic.runtime import Runtime
from tests.api.conftest import Api, login

RECIPE = """\
name: tiny
version: "7"
description: a test image
files:
  - path: /etc/ecl-tiny
    content: "tiny-file\\n"
commands:
  - echo step-ran
"""


@pytest.fixture
def with_recipes(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Runtime:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "tiny.yaml").write_text(RECIPE)
    monkeypatch.setenv("ECLIPTIC_IMAGE_RECIPES", str(recipes))
    rt: Runtime = request.getfixturevalue("runtime")
    return rt


def _user(client: TestClient, admin: Api, name: str) -> Api:
    r = admin.post("/users", {"name": name, "password": f"{name}-password"})
    assert r.status_code == 201, r.text
    return Api(client, login(client, name, f"{name}-password"))


def test_images_build_boot_and_refuse_deletion_in_use(
    with_recipes: Runtime, client: TestClient, admin: Api
) -> None:
    names = {i["name"]: i for i in admin.get("/images").json()["items"]}
    assert [i["name"] for i in admin.get("/images", params={"name": "tin"}).json()["items"]] == [
        "tiny"
    ]
    assert {"base", "slurm", "jupyter", "dask", "perf", "tiny"} <= set(names)
    assert names["tiny"]["status"] == "not built" and names["tiny"]["parent"] == "base"
    # An image that does not exist is refused with the list of those that do.
    r = admin.post("/servers", {"name": "x", "flavor": "m1.tiny", "image": "nope"})
    assert r.status_code == 422 and "ecliptic image list" in r.json()["detail"]
    assert "tiny" in r.json()["detail"]
    r = admin.post("/servers", {"name": "x", "flavor": "m1.tiny", "image": "Bad Name"})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "image"
    # Only administrators build and delete.
    bea = _user(client, admin, "bea")
    assert bea.post("/images/tiny/build").status_code == 403
    assert bea.delete("/images/tiny").status_code == 403
    r = admin.post("/images/tiny/build")
    assert r.status_code == 202 and r.json()["status"] == "building", r.text
    deadline = time.monotonic() + 60
    while (img := admin.get("/images/tiny").json())["status"] != "built":
        assert img["status"] == "building" and time.monotonic() < deadline, img
        time.sleep(0.1)
    log = admin.get("/images/tiny/log").json()["log"]
    assert "step-ran" in log and "$ file /etc/ecl-tiny" in log, log
    assert bea.get("/images/tiny").json()["status"] == "built"  # anyone may look
    assert admin.post("/images/tiny/build").status_code == 200  # a cache hit: at once
    # A server boots from it.
    r = admin.post("/servers", {"name": "t1", "flavor": "m1.tiny", "image": "tiny"})
    assert r.status_code == 202 and r.json()["image"] == "tiny", r.text
    srv = admin.wait("t1")
    assert srv["status"]["image"] == "tiny@7"
    out = admin.post("/servers/t1/exec", {"argv": ["cat", "/etc/ecl-tiny"]}).json()
    assert out["stdout"] == "tiny-file\n", out
    # In use: refused, naming the server.
    r = admin.delete("/images/tiny")
    assert r.status_code == 409 and "t1" in r.json()["detail"], r.text
    assert admin.delete("/servers/t1").status_code == 202
    admin.wait("t1", phase="GONE")
    assert admin.delete("/images/tiny").status_code == 204
    assert admin.get("/images/tiny").json()["status"] == "not built"
    assert admin.get("/images/nope").status_code == 404


def test_a_server_whose_init_is_killed_comes_back(runtime: Runtime, admin: Api) -> None:
    assert admin.post("/servers", {"name": "k1", "flavor": "m1.tiny"}).status_code == 202
    srv = admin.wait("k1")
    assert srv["status"]["image"] == "base@1"
    r = admin.post("/servers/k1/exec", {"argv": ["sh", "-c", "echo on-disk > /root/f"]})
    assert r.json()["exit_code"] == 0
    backend = runtime.backend
    assert isinstance(backend, LocalBackend)
    init = backend._init(srv["id"])
    assert init is not None
    os.kill(init.pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while True:
        again = backend._init(srv["id"])
        if again is not None and again.pid != init.pid and admin.wait("k1")["phase"] == "ACTIVE":
            break
        assert time.monotonic() < deadline, "the server was not booted again"
        time.sleep(0.1)
    events = admin.get("/servers/k1/events").json()["items"]
    assert any(e["reason"] == "repairing" for e in events), events
    out = admin.post("/servers/k1/exec", {"argv": ["cat", "/root/f"]}).json()
    assert out["stdout"] == "on-disk\n", out
    assert "init exited" in admin.get("/servers/k1/log").json()["log"]
