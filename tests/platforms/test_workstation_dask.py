"""The built-in workstation (terminal, SSH through the jump host, desktop by patch) and Dask
(a computation across the workers from the scheduler's JupyterLab) platforms."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from pathlib import Path

import httpx
from websockets.sync.client import connect

from tests.platforms.conftest import wait_phase
from tests.platforms.test_jupyter_platform import run_cell
from tests.platforms.test_platform_cli import cli
from tests.tunnel.conftest import Served, needs_gateway

pytestmark = needs_gateway


def _front(served: Served, host: str, path: str, bearer: str) -> httpx.Response:
    """A signed-in request through the front, once it routes the service (READY means its
    tunnel is up; the front's routes follow within a moment)."""
    deadline = time.monotonic() + 10
    while (r := served.front(host, path, Authorization=bearer)).status_code in (404, 502, 503):
        assert time.monotonic() < deadline, r.text[:300]
        time.sleep(0.1)
    return r


def _terminal_says(served: Served, host: str, bearer: str, command: str, want: str) -> None:
    """Type ``command`` into the browser terminal through the gateway; see ``want``."""
    _front(served, host, "/", bearer)  # the front routes the service (it follows READY)
    sock = socket.create_connection(("127.0.0.1", served.http_port))
    with connect(
        f"ws://{host}/ws", sock=sock, proxy=None, additional_headers={"Authorization": bearer}
    ) as ws:
        ws.send(json.dumps({"resize": [120, 40]}))
        ws.send(command.encode() + b"\n")
        seen = b""
        deadline = time.monotonic() + 20
        while want.encode() not in seen:
            assert time.monotonic() < deadline, seen.decode(errors="replace")[-2000:]
            frame = ws.recv(timeout=20)
            seen += frame if isinstance(frame, bytes) else frame.encode()


def test_workstation_terminal_ssh_and_desktop(served: Served, tmp_path: Path) -> None:
    api = served.api
    key = tmp_path / "id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    r = api.post(
        "/users/me/ssh-keys",
        json={"name": "laptop", "public_key": key.with_suffix(".pub").read_text()},
    )
    assert r.status_code == 201, r.text
    started = time.monotonic()
    r = api.post("/platforms", json={"name": "ws", "type": "workstation"})
    assert r.status_code == 202, r.text
    body = wait_phase(api, "ws", "READY", timeout=240)
    print(f"workstation READY in {time.monotonic() - started:.1f} s")
    svcs = {s["name"]: s for s in body["services"]}
    assert set(svcs) == {"terminal", "ssh"}, svcs
    bearer = api.headers["Authorization"]
    host = f"{svcs['terminal']['subdomain']}.localhost:{served.http_port}"
    _terminal_says(served, host, bearer, "echo $((6*7))-$(hostname)", "42-ws-ws1")
    # SSH with a stock client through the gateway's jump host, with the registered key.
    config = tmp_path / "ssh_config"
    config.write_text(
        f"""Host gateway
  HostName 127.0.0.1
  Port {svcs["ssh"]["jump_port"]}
  User admin
Host *
  IdentityFile {key}
  IdentitiesOnly yes
  BatchMode yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
"""
    )
    res = subprocess.run(
        ["ssh", "-F", str(config), "-J", "gateway", f"root@{svcs['ssh']['subdomain']}", "hostname"],
        capture_output=True,
        timeout=60,
    )
    assert res.returncode == 0 and res.stdout.decode().strip() == "ws-ws1", res
    # `ecliptic platform ssh` gives the same way in.
    shown = cli(served, "platform", "ssh", "ws", "--print")
    assert shown.returncode == 0, shown.stderr
    jump = f"admin@127.0.0.1:{svcs['ssh']['jump_port']}"
    assert f"-J {jump}" in shown.stdout and f"root@{svcs['ssh']['subdomain']}" in shown.stdout
    # A desktop by patch: the noVNC page answers through the gateway.
    r = api.patch("/platforms/ws", json={"parameters": {"desktop": True}})
    assert r.status_code == 202, r.text
    body = wait_phase(api, "ws", "READY", timeout=120)
    desk = next(s for s in body["services"] if s["name"] == "desktop")
    r = _front(served, f"{desk['subdomain']}.localhost", "/vnc.html", bearer)
    assert r.status_code == 200 and "noVNC" in r.text
    started = time.monotonic()
    api.delete("/platforms/ws")
    while api.get("/platforms/ws").status_code != 404:
        time.sleep(0.1)
    print(f"workstation deleted in {time.monotonic() - started:.1f} s")


def test_dask_computes_across_workers_from_jupyterlab(served: Served) -> None:
    api = served.api
    started = time.monotonic()
    r = api.post(
        "/platforms", json={"name": "dk", "type": "dask", "parameters": {"worker_count": 2}}
    )
    assert r.status_code == 202, r.text
    body = wait_phase(api, "dk", "READY", timeout=300)
    print(f"dask READY in {time.monotonic() - started:.1f} s")
    svcs = {s["name"]: s for s in body["services"]}
    assert svcs["dashboard"]["healthy"] and svcs["lab"]["healthy"], svcs
    bearer = api.headers["Authorization"]
    host = f"{svcs['lab']['subdomain']}.localhost:{served.http_port}"
    code = (
        "from distributed import Client\n"
        "import socket\n"
        "c = Client()\n"
        "total = c.submit(sum, c.map(lambda x: x * x, range(100))).result()\n"
        "(total, sorted(set(c.run(socket.gethostname).values())))"
    )
    assert run_cell(served, host, bearer, code) == "(328350, ['dk-worker1', 'dk-worker2'])"
    r = _front(served, f"{svcs['dashboard']['subdomain']}.localhost", "/status", bearer)
    assert r.status_code == 200 and "Dask" in r.text
    api.delete("/platforms/dk")
