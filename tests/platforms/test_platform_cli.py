"""The platform commands as a user types them: validate a type file, create with --wait
(the steps shown as they happen), show, list, open, ssh, events, delete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.platforms.conftest import TYPES
from tests.tunnel.conftest import Served, needs_gateway

pytestmark = needs_gateway


def cli(
    served: Served | None, *args: str, timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COLUMNS="200", NO_COLOR="1")
    if served is not None:
        env.update(
            ECLIPTIC_URL=served.url,
            ECLIPTIC_TOKEN=served.api.headers["Authorization"].removeprefix("Bearer "),
        )
    return subprocess.run(
        [sys.executable, "-m", "ecliptic.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_validate_points_at_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    text = (TYPES / "web.yaml").read_text().replace("roles: [worker]", "roles: [wroker]")
    bad.write_text(text)
    res = cli(None, "platform-type", "validate", str(bad))
    assert res.returncode == 1
    assert f"{bad}:39:13: steps[1].roles[0]: step 'worker' runs on role 'wroker'" in res.stderr
    assert "did you mean 'worker'" in res.stderr
    res = cli(None, "-o", "json", "platform-type", "validate", str(bad))
    body = json.loads(res.stdout)
    assert body["valid"] is False and body["problems"][0]["line"] == 39
    res = cli(None, "platform-type", "validate", str(TYPES / "web.yaml"))
    assert res.returncode == 0 and "is valid" in res.stdout


def test_create_wait_show_open_ssh_delete(served: Served) -> None:
    res = cli(served, "platform-type", "list")
    assert res.returncode == 0, res.stderr
    for name in ("slurm", "jupyter", "dask", "workstation", "web"):
        assert name in res.stdout
    res = cli(served, "platform-type", "show", "web")
    assert "workers" in res.stdout and "Worker nodes" in res.stdout
    res = cli(served, "platform", "create", "web", "cw", "-p", "workers=2", "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "cw-worker2" in res.stdout and "fits: 3 server(s), 3 vCPU" in res.stdout
    assert "Nothing was made" in res.stdout
    assert cli(served, "platform", "show", "cw").returncode == 3
    assert not [s for s in served.api.get("/servers").json()["items"] if s["name"].startswith("cw")]
    res = cli(
        served, "platform", "create", "web", "cw", "-p", "workers=1", "-p", "extra=true", "--wait"
    )
    assert res.returncode == 0, res.stdout + res.stderr
    # The timeline was shown while it built, then the platform with its services and usage.
    assert "step 'page' finished on 1 server(s)" in res.stderr
    assert "cw-worker1" in res.stdout and "READY" in res.stdout
    assert "Open [the site](http://" in res.stdout
    res = cli(served, "platform", "list")
    assert "cw" in res.stdout and "READY" in res.stdout
    res = cli(served, "platform", "open", "cw", "site")
    assert res.returncode == 0 and res.stdout.strip().startswith("http://")
    res = cli(served, "platform", "open", "cw", "nope")
    assert res.returncode == 3 and "has no web service 'nope'" in res.stderr
    res = cli(served, "platform", "create", "web", "cw2", "-p", "workers=many")
    assert res.returncode == 2 and "workers is a whole number" in res.stderr
    res = cli(served, "platform", "patch", "cw", "-p", "greeting=bye")
    assert res.returncode == 1 and "greeting cannot change after create" in res.stderr
    res = cli(served, "platform", "events", "cw")
    assert "step 'worker' finished" in res.stdout
    res = cli(served, "platform", "delete", "cw", "--yes", "--wait")
    assert res.returncode == 0 and "deleted" in res.stdout, res.stderr
    assert cli(served, "platform", "show", "cw").returncode == 3
