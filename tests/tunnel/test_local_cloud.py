"""The issue's acceptance scenario, end to end on the local cloud.

A service runs in a server of the local cloud (a network namespace on a bridge). It is
published through the tunnel gateway twice, from inside the server: with a stock
``ssh -N -R`` and with ``ecliptic tunnel connect``. It is opened by name through the
gateway's front, refused to a user without access, and, once the server's network is cut
and restored, it comes back on its own.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from ecliptic.backends.local.names import veth_name
from tests.tunnel.conftest import Served, needs_gateway, serve_with_gateway

pytestmark = needs_gateway

AGENT = "/opt/ecliptic/bin/ecliptic"
"""Ecliptic's client as every server has it (read-only, from the host)."""
SERVICE_PORT = 8888
OUTAGE_S = 5.0
"""Shortest cut of the server's network."""
OUTAGE_MAX_S = 30.0
"""Longest: the client's ssh gives up on a silent gateway after about 8 s (ServerAlive)."""
COME_BACK_WITHIN_S = 15.0
"""What the test insists on; the issue's target is about 2 s after the network returns."""


@dataclass
class Cloud:
    """``ecliptic serve`` reachable from servers of the local cloud, and what the test made."""

    served: Served
    inside: list[tuple[int, str]] = field(default_factory=list)
    """Processes started in servers: pid and a piece of their command line (checked first)."""

    @property
    def api(self) -> httpx.Client:
        return self.served.api

    def create_server(self, name: str, timeout: float = 60) -> dict[str, Any]:
        """A server of the smallest flavor on the default network, once ACTIVE."""
        smallest = self.api.get("/flavors").json()["items"][0]["name"]
        r = self.api.post("/servers", json={"name": name, "flavor": smallest})
        assert r.status_code == 202, r.text
        deadline = time.monotonic() + timeout
        while True:
            body = self.api.get(f"/servers/{name}").json()
            if body["phase"] == "ACTIVE":
                return dict(body)
            assert body["phase"] not in ("ERROR", "FAILED"), body
            assert time.monotonic() < deadline, f"{name} never became ACTIVE: {body}"
            time.sleep(0.1)

    def exec(
        self, server: str, *argv: str, timeout: float = 20, stdin: str | None = None
    ) -> dict[str, Any]:
        """``server exec``: run a command in the server and wait for it."""
        body: dict[str, Any] = {"argv": list(argv), "timeout": timeout}
        if stdin is not None:
            body["stdin"] = stdin
        r = self.api.post(f"/servers/{server}/exec", json=body)
        assert r.status_code == 200, r.text
        return dict(r.json())

    def start_inside(self, server: str, argv: list[str], log: str) -> int:
        """Start ``argv`` in the server, detached, output to ``log`` (a path in the server);
        returns its pid (in the server's PID namespace)."""
        script = f'setsid "$@" >{shlex.quote(log)} 2>&1 </dev/null & echo $!'
        res = self.exec(server, "sh", "-c", script, "sh", *argv)
        assert res["exit_code"] == 0, res
        pid = int(res["stdout"].strip())
        self.inside.append((server, pid))
        return pid

    def stop_inside(self) -> None:
        """SIGTERM each process started in a server (they go with their server anyway)."""
        for server, pid in reversed(self.inside):
            self.api.post(
                f"/servers/{server}/exec", json={"argv": ["kill", str(pid)], "timeout": 5}
            )
        self.inside.clear()

    def delete_everything(self, timeout: float = 60) -> None:
        """Delete every server, then every network, and wait until they are gone."""
        names = [
            s["name"] for s in self.api.get("/servers", params={"limit": 1000}).json()["items"]
        ]
        for name in names:
            self.api.delete(f"/servers/{name}")
        self._wait_gone("servers", names, timeout)
        nets = [n["name"] for n in self.api.get("/networks").json()["items"]]
        for name in nets:
            self.api.delete(f"/networks/{name}")
        self._wait_gone("networks", nets, timeout)

    def _wait_gone(self, kind: str, names: list[str], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for name in names:
            while self.api.get(f"/{kind}/{name}").status_code != 404:
                assert time.monotonic() < deadline, f"{kind[:-1]} {name} was not deleted"
                time.sleep(0.1)


def _leftovers(owners: Path) -> list[str]:
    """Namespaces and links of ``owners`` records that still exist on the machine."""
    names = {p.name for p in owners.iterdir()} if owners.exists() else set()
    ns = subprocess.run(["ip", "-o", "netns", "list"], capture_output=True, text=True).stdout
    links = json.loads(subprocess.run(["ip", "-j", "link"], capture_output=True, text=True).stdout)
    existing = {line.split()[0] for line in ns.splitlines() if line.strip()}
    existing |= {link["ifname"] for link in links}
    return sorted(names & existing)


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[Cloud]:
    """``ecliptic serve`` with API and tunnel endpoint on every address, so servers reach them
    at their network's gateway address; every server and network is deleted at the end."""
    owners = tmp_path / "owners"
    with serve_with_gateway(
        tmp_path, ECLIPTIC_HOST="0.0.0.0", ECLIPTIC_GATEWAY_SSH_HOST="0.0.0.0"
    ) as served:
        c = Cloud(served)
        try:
            yield c
        finally:
            c.stop_inside()
            if served.proc.poll() is None:
                c.delete_everything()
    leaked = _leftovers(owners)
    assert not leaked, f"the test leaked local-cloud resources: {leaked}"


def _first_200(
    front: str, host: str, headers: dict[str, str], timeout: float, every: float = 0.1
) -> float | None:
    """Seconds until a request for ``host`` is answered 200, trying every ``every`` seconds
    with requests in flight side by side (one stuck in a dead tunnel does not hide the next);
    None after ``timeout``."""
    start = time.monotonic()
    answered: list[float] = []
    done = threading.Event()

    def one() -> None:
        try:
            r = httpx.get(front, headers={"Host": host, **headers}, timeout=3)
        except httpx.HTTPError:
            return
        if r.status_code == 200:
            answered.append(time.monotonic() - start)
            done.set()

    threads = []
    while not done.is_set() and time.monotonic() - start < timeout:
        t = threading.Thread(target=one, daemon=True)
        t.start()
        threads.append(t)
        done.wait(every)
    for t in threads:
        t.join(4)
    return min(answered) if answered else None


def _status(front: str, host: str, headers: dict[str, str], timeout: float) -> int | None:
    """Status of one request for ``host`` through the front; None when it got no answer."""
    try:
        return httpx.get(front, headers={"Host": host, **headers}, timeout=timeout).status_code
    except httpx.HTTPError:
        return None


def _link(name: str, state: str) -> None:
    subprocess.run(["ip", "link", "set", "dev", name, state], check=True)


def test_service_in_a_server_by_name_refused_to_strangers_and_back_after_the_network(
    cloud: Cloud, tmp_path: Path
) -> None:
    served = cloud.served
    srv = cloud.create_server("svc")
    gateway_ip = cloud.api.get("/networks/default").json()["subnets"][0]["gateway_ip"]
    api_inside = f"http://{gateway_ip}:{served.url.rsplit(':', 1)[1]}"

    # A tiny HTTP service in the server, listening on all of the server's addresses.
    made = cloud.exec(
        "svc", "sh", "-c", "mkdir -p /srv/www && echo hello > /srv/www/hello-from-svc.txt"
    )
    assert made["exit_code"] == 0, made
    cloud.start_inside(
        "svc",
        ["python3", "-m", "http.server", str(SERVICE_PORT), "--bind", "0.0.0.0",
         "--directory", "/srv/www"],
        "/tmp/http.log",
    )  # fmt: skip
    deadline = time.monotonic() + 15
    while True:
        probe = cloud.exec("svc", "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                           f"http://127.0.0.1:{SERVICE_PORT}/")  # fmt: skip
        if probe["stdout"] == "200":
            break
        assert time.monotonic() < deadline, f"http.server never answered: {probe}"
        time.sleep(0.2)
    # The server reaches the API at its network's gateway address.
    health = cloud.exec("svc", "curl", "-s", "-m", "5", f"{api_inside}/api/v1/health")
    assert json.loads(health["stdout"])["status"] == "ok", health

    # 1. A stock `ssh -N -R`, run in the server, serves a public service.
    public = served.service("files", public=True)
    key = served.bind(public["token"]["token"])
    copied = cloud.exec("svc", "sh", "-c", "umask 077; cat > /root/tunnel-key",
                        stdin=Path(key).read_text())  # fmt: skip
    assert copied["exit_code"] == 0, copied
    cloud.start_inside(
        "svc",
        ["ssh", "-N", "-R", f"0:127.0.0.1:{SERVICE_PORT}", "-p", str(served.ssh_port),
         "-i", "/root/tunnel-key", "-o", "StrictHostKeyChecking=no",
         "-o", "UserKnownHostsFile=/dev/null",
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "ExitOnForwardFailure=yes",
         f"tunnel@{gateway_ip}"],
        "/tmp/ssh-r.log",
    )  # fmt: skip
    try:
        listing = served.wait_for(public["host"], lambda r: r.status_code == 200)
    except AssertionError as e:
        raise AssertionError(
            f"{e}\nin the server: {cloud.exec('svc', 'sh', '-c', 'tail /tmp/*.log')}"
        ) from None
    assert "Directory listing for /" in listing.text and "hello-from-svc.txt" in listing.text
    assert served.front(public["host"], "/hello-from-svc.txt").text == "hello\n"
    tunnels = served.api.get(f"/services/{public['name']}").json()["tunnels"]
    assert len(tunnels) == 1 and tunnels[0]["client"].startswith(srv["addresses"]["default"][0])

    # 2. `ecliptic tunnel connect` (the client every server has), run in the server, serves a
    # signed-in service.
    private = served.service("lab")
    state_dir = "/root/tunnel-state"
    cloud.start_inside(
        "svc",
        [AGENT, "tunnel", "connect",
         "--token", private["token"]["token"], "--to", f"http://127.0.0.1:{SERVICE_PORT}",
         "--api", api_inside, "--state-dir", state_dir],
        "/tmp/connect.log",
    )  # fmt: skip

    def tunnel_status() -> dict[str, Any]:
        out = cloud.exec("svc", "cat", f"{state_dir}/status.json")
        assert out["exit_code"] == 0, out
        return dict(json.loads(out["stdout"]))

    bearer = {"Authorization": served.api.headers["Authorization"]}
    try:
        r = served.wait_for(private["host"], lambda r: r.status_code == 200, timeout=30, **bearer)
    except AssertionError as e:
        raise AssertionError(
            f"{e}\nin the server: {cloud.exec('svc', 'sh', '-c', 'tail /tmp/*.log')}"
        ) from None
    assert "hello-from-svc.txt" in r.text
    status = tunnel_status()
    assert status["state"] == "connected" and status["subdomain"] == private["subdomain"]

    assert served.front(private["host"]).status_code == 401
    r = served.api.post("/users", json={"name": "eve", "password": "eve-password"})
    assert r.is_success, r.text
    eve = httpx.post(
        f"{served.url}/api/v1/auth/login", json={"username": "eve", "password": "eve-password"}
    ).json()["secret"]
    refused = served.front(private["host"], Authorization=f"Bearer {eve}")
    assert refused.status_code == 403 and "hello-from-svc.txt" not in refused.text

    # 3. Cut the server's network (the host end of its port) for at least OUTAGE_S and until
    # the reconnecting client has seen its tunnel die, then give it back.
    port = srv["ports"][0]
    link = veth_name(port["id"])
    names = {i["ifname"] for i in json.loads(subprocess.run(
        ["ip", "-j", "link"], capture_output=True, text=True, check=True).stdout)}  # fmt: skip
    assert link in names, f"no host link {link} for port {port['id']}"
    front = f"http://127.0.0.1:{served.http_port}/"
    lost: dict[str, Any] | None = None
    _link(link, "down")
    try:
        cut = time.monotonic()
        # Nothing comes through while it is cut (requests hang: short timeouts).
        assert _status(front, public["host"], {}, timeout=1.5) != 200
        assert _status(front, private["host"], bearer, timeout=1.5) != 200
        while time.monotonic() - cut < OUTAGE_MAX_S:
            now = tunnel_status()
            if now["state"] != "connected":
                lost = lost or now
                if time.monotonic() - cut >= OUTAGE_S:
                    break
            time.sleep(0.1)
        outage = time.monotonic() - cut
    finally:
        _link(link, "up")
    assert lost is not None, "tunnel connect did not notice its tunnel was dead"
    back: dict[str, float | None] = {}

    def measure(name: str, host: str, headers: dict[str, str]) -> None:
        back[name] = _first_200(front, host, headers, COME_BACK_WITHIN_S + 5)

    pollers = [
        threading.Thread(target=measure, args=("tunnel connect", private["host"], bearer)),
        threading.Thread(target=measure, args=("ssh -R", public["host"], {})),
    ]
    for t in pollers:
        t.start()
    for t in pollers:
        t.join()
    shown = cloud.exec(
        "svc", AGENT, "--output", "json", "tunnel", "status", "--state-dir", state_dir,
    )  # fmt: skip
    assert shown["exit_code"] == 0, shown
    status = json.loads(shown["stdout"])
    print(
        f"\nnetwork cut for {outage:.1f} s (tunnel connect saw it: {lost['last_error']!r});"
        " answered 200 again after the network came back: "
        + ", ".join(f"{k} {'never' if v is None else f'{v:.2f} s'}" for k, v in back.items())
        + f"; tunnel status: {status['state']}, reconnects={status['reconnects']}"
    )
    for took in back.values():
        assert took is not None and took <= COME_BACK_WITHIN_S, back
    assert status["state"] == "connected" and status["running"] and status["reconnects"] >= 1
    # The gateway lists the new tunnel only, not the one that died with the network.
    deadline = time.monotonic() + 5
    while len(tunnels := served.api.get(f"/services/{private['name']}").json()["tunnels"]) != 1:
        assert time.monotonic() < deadline, f"stale tunnels listed: {tunnels}"
        time.sleep(0.1)
    assert tunnels[0]["healthy"] and tunnels[0]["client"].startswith(srv["addresses"]["default"][0])
