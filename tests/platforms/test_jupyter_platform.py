"""The built-in JupyterLab platform: extra PyPI packages fetched on the host and installed
at create, the lab reached through the gateway, a kernel running a cell over WebSockets."""

from __future__ import annotations

import json
import socket
import time
import uuid

import httpx
from websockets.sync.client import connect

from tests.platforms.conftest import events, wait_phase
from tests.tunnel.conftest import Served, needs_gateway

pytestmark = needs_gateway


def run_cell(served: Served, host: str, bearer: str, code: str) -> str:
    """Start a kernel through the gateway, run ``code``, return its result (text/plain)."""
    base = f"http://127.0.0.1:{served.http_port}"
    headers = {"Host": host, "Authorization": bearer}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as web:
        # READY means its tunnel is up; the front's routes follow within a moment.
        deadline = time.monotonic() + 10
        while (r := web.get("/lab")).status_code in (404, 502, 503):
            assert time.monotonic() < deadline, r.text[:500]
            time.sleep(0.1)
        assert r.status_code == 200, r.text[:500]
        xsrf = r.cookies.get("_xsrf") or ""
        r = web.post(
            "/api/kernels",
            json={"name": "python3"},
            headers={"X-XSRFToken": xsrf, "Cookie": f"_xsrf={xsrf}"},
        )
        assert r.status_code == 201, r.text
        kernel = r.json()["id"]
    url = f"ws://{host}/api/kernels/{kernel}/channels"
    msg_id = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msg_id,
            "username": "test",
            "session": uuid.uuid4().hex,
            "msg_type": "execute_request",
            "version": "5.3",
        },
        "parent_header": {},
        "metadata": {},
        "content": {
            "code": code,
            "silent": False,
            "store_history": False,
            "user_expressions": {},
            "allow_stdin": False,
        },
        "channel": "shell",
        "buffers": [],
    }
    sock = socket.create_connection(("127.0.0.1", served.http_port))
    with connect(
        url, sock=sock, proxy=None, additional_headers={"Authorization": bearer}, open_timeout=20
    ) as ws:
        ws.send(json.dumps(request))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            msg = json.loads(ws.recv(timeout=60))
            if msg.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "execute_result":
                return str(msg["content"]["data"]["text/plain"])
            if msg["msg_type"] == "error":
                raise AssertionError(msg["content"])
    raise AssertionError("no result")


def test_jupyter_with_extra_packages_runs_a_cell_through_the_gateway(served: Served) -> None:
    api = served.api
    started = time.monotonic()
    r = api.post(
        "/platforms",
        json={"name": "nb", "type": "jupyter", "parameters": {"packages": "six==1.17.0"}},
    )
    assert r.status_code == 202, r.text
    body = wait_phase(api, "nb", "READY", timeout=300)
    print(f"jupyter READY in {time.monotonic() - started:.1f} s")
    lab = body["services"][0]
    assert lab["name"] == "lab" and lab["healthy"], body
    timeline = events(api, "nb")
    assert any("fetching six==1.17.0" in e for e in timeline), timeline
    assert any("step 'packages' finished" in e for e in timeline), timeline
    host = f"{lab['subdomain']}.localhost:{served.http_port}"
    bearer = api.headers["Authorization"]
    # Strangers are sent to sign in; the owner runs a cell that imports the extra package.
    assert served.front(host, "/api").status_code == 401
    out = run_cell(served, host, bearer, "import six; six.__version__ + ' ' + str(6 * 7)")
    assert out == "'1.17.0 42'"
    # A package name that is really an option is refused at create, not run on the host.
    r = api.post(
        "/platforms",
        json={
            "name": "nb2",
            "type": "jupyter",
            "parameters": {"packages": "--index-url=http://evil/ six"},
        },
    )
    assert r.status_code == 422, r.text
    assert "packages" in r.json()["detail"]
