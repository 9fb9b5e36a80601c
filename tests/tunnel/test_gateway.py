"""The whole gateway as users meet it: ``ecliptic serve``, stock ``ssh -R``, HTTP by name."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect as ws_connect

from ecliptic.tunnel.fence import TUNNEL_HOST
from ecliptic.tunnel.front import PEER_TCP_HOST, PEER_TCP_PATH
from tests.tunnel.conftest import (
    Backend,
    Served,
    needs_gateway,
    peer_request,
    serve_with_gateway,
    ssh_reverse,
)
from tests.tunnel.test_endpoint import _all_pids, _proc_stat, in_sessions
from tests.waiting import wait_until

pytestmark = needs_gateway

BROWSER = {"Accept": "text/html,application/xhtml+xml"}


def test_public_service_by_name_and_its_error_pages(
    served: Served, backends: Callable[[str], Backend]
) -> None:
    backend = backends("alpha")
    svc = served.service("web", public=True)
    host = svc["host"]

    unknown = served.front("nosuchservice.localhost")
    assert unknown.status_code == 404 and "no such service" in unknown.text.lower()
    waiting = served.wait_for(host, lambda r: r.status_code == 503)
    assert "no tunnel" in waiting.text.lower()

    key = served.bind(svc["token"]["token"])
    started = time.monotonic()
    served.ssh_r(key, backend.port)
    r = served.wait_for(host, lambda r: r.status_code == 200)
    first = time.monotonic() - started
    assert r.json()["backend"] == "alpha"
    headers = {k.lower(): v for k, v in r.json()["headers"].items()}
    assert headers["x-forwarded-host"].split(":")[0] == host
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert "x-remote-user" not in headers
    print(f"tunnel connected -> first request served in {first:.3f} s")

    # Host spellings: port, case and a trailing dot reach the same service.
    assert served.front(f"{host.upper()}.:{served.http_port}").status_code == 200
    # The API lists the live tunnel.
    tunnels = served.api.get(f"/services/{svc['name']}").json()["tunnels"]
    assert len(tunnels) == 1 and tunnels[0]["healthy"]


def test_signed_in_service_refuses_strangers_and_strips_credentials(
    served: Served, backends: Callable[[str], Backend]
) -> None:
    backend = backends("private")
    svc = served.service("private", liveness_path="/health")
    host = svc["host"]
    served.ssh_r(served.bind(svc["token"]["token"]), backend.port)
    bearer = {"Authorization": served.api.headers["Authorization"]}
    served.wait_for(host, lambda r: r.status_code == 200, **bearer)
    reached = len(backend.seen)

    # Browsers are sent to sign in; API clients get 401; neither reaches the backend.
    r = served.front(host, "/lab?x=1", **BROWSER)
    assert r.status_code == 302
    # First to the service's own /_ecliptic/start (which remembers this browser), then on
    # to the portal's sign-in.
    start = r.headers["location"]
    assert start.startswith(f"http://{host}:{served.http_port}/_ecliptic/start?next=")
    r = served.front(host, start.split(str(served.http_port), 1)[1], **BROWSER)
    assert r.status_code == 303 and r.headers["set-cookie"].startswith("ecliptic_gw_state=")
    assert r.headers["location"].startswith(served.url + "/gateway/authorize?")
    assert served.front(host).status_code == 401
    forged = {"X-Remote-User": "admin", "Cookie": "ecliptic_gw=forged.1.2.3"}
    assert served.front(host, **forged).status_code == 401

    # A signed-in user not on the access list is refused.
    assert served.api.post("/users", json={"name": "eve", "password": "eve-password"}).is_success
    eve = served.api.post(
        "/auth/login", json={"username": "eve", "password": "eve-password"}
    ).json()["secret"]
    assert served.front(host, Authorization=f"Bearer {eve}").status_code == 403
    assert len(backend.seen) == reached

    # The owner gets through, as themselves, without the gateway's credential.
    r = served.front(host, "/who", Cookie="theirs=1", **bearer)
    assert r.status_code == 200
    seen = {k.lower(): v for k, v in backend.seen[-1]["headers"].items()}
    assert seen["x-remote-user"] == "admin"
    assert "authorization" not in seen
    assert seen["cookie"] == "theirs=1"

    # Granting and revoking access take effect within 5 s (access lists name members).
    member = {"user": "eve", "role": "member"}
    assert served.api.put("/tenancies/default/members", json=member).is_success
    granted = served.api.patch(f"/services/{svc['id']}", json={"access": ["admin", "eve"]})
    assert granted.is_success, granted.text
    served.wait_for(host, lambda r: r.status_code == 200, timeout=5, Authorization=f"Bearer {eve}")
    served.api.patch(f"/services/{svc['id']}", json={"access": ["admin"]})
    served.wait_for(host, lambda r: r.status_code == 403, timeout=5, Authorization=f"Bearer {eve}")


def test_several_clients_balance_and_a_failing_one_leaves_routing(
    served: Served, backends: Callable[[str], Backend]
) -> None:
    a, b = backends("a"), backends("b")
    svc = served.service("pair", public=True, liveness_path="/health", liveness_period_s=1)
    host = svc["host"]
    second = served.api.post(f"/services/{svc['name']}/tokens").json()["token"]
    served.ssh_r(served.bind(svc["token"]["token"]), a.port)
    served.ssh_r(served.bind(second), b.port)

    def answered_by() -> set[str]:
        return {served.front(host).json()["backend"] for _ in range(12)}

    deadline = time.monotonic() + 15
    while answered_by() != {"a", "b"}:
        assert time.monotonic() < deadline, "both tunnels never served"
        time.sleep(0.2)

    b.health = 500
    deadline = time.monotonic() + 10
    while answered_by() != {"a"}:
        assert time.monotonic() < deadline, "the failing tunnel stayed in routing"
        time.sleep(0.2)
    b.health = 200
    deadline = time.monotonic() + 10
    while answered_by() != {"a", "b"}:
        assert time.monotonic() < deadline, "the recovered tunnel never came back"
        time.sleep(0.2)


def test_revoked_key_is_cut_and_cannot_reconnect(
    served: Served, backends: Callable[[str], Backend]
) -> None:
    backend = backends("r")
    svc = served.service("revoke", public=True)
    host = svc["host"]
    client = served.ssh_r(served.bind(svc["token"]["token"]), backend.port)
    served.wait_for(host, lambda r: r.status_code == 200)
    key_id = served.api.get(f"/services/{svc['name']}").json()["keys"][0]["id"]
    assert served.api.delete(f"/services/{svc['name']}/keys/{key_id}").status_code == 204
    client.wait(10)
    served.wait_for(host, lambda r: r.status_code == 503, timeout=5)


def test_a_key_serves_only_its_own_subdomain(
    served: Served, backends: Callable[[str], Backend]
) -> None:
    mine, theirs = backends("mine"), backends("theirs")
    a = served.service("a", public=True)
    b = served.service("b", public=True)
    served.ssh_r(served.bind(a["token"]["token"]), mine.port)
    served.wait_for(a["host"], lambda r: r.status_code == 200)
    # b has no tunnel: a's key does not make a's backend answer for b.
    assert served.front(b["host"]).status_code == 503
    served.ssh_r(served.bind(b["token"]["token"]), theirs.port)
    served.wait_for(b["host"], lambda r: r.status_code == 200)
    assert {served.front(a["host"]).json()["backend"] for _ in range(6)} == {"mine"}
    assert {served.front(b["host"]).json()["backend"] for _ in range(6)} == {"theirs"}


def _descendants(root: int) -> dict[int, int]:
    """Every live process below ``root``: pid -> its session id."""
    stats = {pid: st for pid in _all_pids() if (st := _proc_stat(pid)) and st[1] != "Z"}
    found: dict[int, int] = {}
    frontier = {root}
    while frontier:
        frontier = {pid for pid, st in stats.items() if st[2] in frontier and pid not in found}
        found.update({pid: stats[pid][3] for pid in frontier})
    return found


def _refuses(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def test_stopping_serve_cuts_tunnels(served: Served, backends: Callable[[str], Backend]) -> None:
    backend = backends("s")
    svc = served.service("stopping", public=True)
    client = served.ssh_r(served.bind(svc["token"]["token"]), backend.port)
    served.wait_for(svc["host"], lambda r: r.status_code == 200)
    children = _descendants(served.proc.pid)
    # A short-lived child (a health probe, say) may end between the listing and its stat.
    names = {stat[0] for pid in children if (stat := _proc_stat(pid)) is not None}
    assert {"nginx"} <= names and names & {"sshd", "ecliptic-tunnel"}, names
    # SIGTERM to serve alone (not its process group): serve itself must stop what it started.
    served.proc.send_signal(signal.SIGTERM)
    try:
        assert served.proc.wait(20) == 0, (served.tmp / "serve.log").read_text()
        assert client.wait(15) == 255  # the tunnel was cut
        wait_until(lambda: not in_sessions(set(children.values())), 10, "serve's children to end")
    finally:  # what serve left behind is not left to the next test
        for pid in in_sessions(set(children.values())):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    for port in (served.http_port, served.ssh_port, served.jump_port):
        assert _refuses(port), f"port {port} still answers after serve stopped"
    log = (served.tmp / "serve.log").read_text()
    assert "Traceback" not in log and "ERROR" not in log, log


def _jump(
    served: Served, user: str, key: object, target: str
) -> subprocess.CompletedProcess[bytes]:
    """``ssh -W`` through the jump host: the same direct-tcpip channel ``ssh -J`` opens."""
    return subprocess.run(
        [
            "ssh", "-i", str(key), "-p", str(served.jump_port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
            "-W", f"{target}:22", f"{user}@127.0.0.1",
        ],
        input=b"GET /login-node HTTP/1.0\r\n\r\n",
        capture_output=True,
        timeout=20,
    )  # fmt: skip


def test_tcp_service_through_the_jump_host_per_user(
    served: Served, backends: Callable[[str], Backend]
) -> None:
    node = backends("login-node")
    svc = served.service("login", protocol="tcp")
    served.ssh_r(served.bind(svc["token"]["token"]), node.port)
    key, pub = served.keypair()
    r = served.api.post("/users/me/ssh-keys", json={"name": "laptop", "public_key": pub})
    assert r.status_code == 201, r.text

    deadline = time.monotonic() + 15
    while True:
        out = _jump(served, "admin", key, svc["subdomain"])
        if b"login-node" in out.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert b"200" in out.stdout.split(b"\r\n")[0] and b"login-node" in out.stdout
    # The full name works too.
    assert b"login-node" in _jump(served, "admin", key, svc["host"]).stdout

    # Someone else with a registered key but not on the access list is refused.
    assert served.api.post("/users", json={"name": "mallory", "password": "m-password"}).is_success
    token = served.api.post(
        "/auth/login", json={"username": "mallory", "password": "m-password"}
    ).json()["secret"]
    mkey, mpub = served.keypair()
    added = httpx.post(
        f"{served.url}/api/v1/users/me/ssh-keys",
        json={"name": "m", "public_key": mpub},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert added.status_code == 201, added.text
    refused = _jump(served, "mallory", mkey, svc["subdomain"])
    assert b"login-node" not in refused.stdout and refused.returncode != 0
    # A key registered to one user does not sign in as another.
    assert b"login-node" not in _jump(served, "admin", mkey, svc["subdomain"]).stdout
    assert len(node.seen) == 2


def test_a_reconnecting_client_replaces_its_stale_tunnel(
    served: Served, backends: Callable[[str], Backend]
) -> None:
    backend = backends("b")
    svc = served.service("flaky", public=True)
    host = svc["host"]
    key = served.bind(svc["token"]["token"])
    old = served.ssh_r(key, backend.port)
    served.wait_for(host, lambda r: r.status_code == 200)
    (stale,) = [t["id"] for t in served.api.get(f"/services/{svc['name']}").json()["tunnels"]]
    # The old client's network "dies": it stops answering, without closing anything.
    os.kill(old.pid, signal.SIGSTOP)
    try:
        served.ssh_r(key, backend.port)
        deadline = time.monotonic() + 10
        while True:
            ids = [t["id"] for t in served.api.get(f"/services/{svc['name']}").json()["tunnels"]]
            if len(ids) == 1 and ids != [stale]:
                break
            assert time.monotonic() < deadline, f"the stale tunnel was never cut: {ids}"
            time.sleep(0.2)
        assert all(served.front(host).status_code == 200 for _ in range(10))
    finally:
        os.kill(old.pid, signal.SIGCONT)


def test_bound_keys_log_in_at_once_after_a_restart(
    tmp_path: Path, backends: Callable[[str], Backend]
) -> None:
    """Hole 11: after a restart, authorized_keys stayed empty until a service or key
    changed in the store (the first sync ran before the endpoint was up, and the next one
    saw nothing new)."""
    backend = backends("again")
    with serve_with_gateway(tmp_path) as first:
        svc = first.service("again", public=True)
        key = first.bind(svc["token"]["token"])
    with serve_with_gateway(tmp_path) as second:
        client = second.ssh_r(key, backend.port)
        second.wait_for(svc["host"], lambda r: r.status_code == 200, timeout=10)
        assert client.poll() is None


def test_a_lone_replica_has_no_peer_relay(
    served: Served, backends: Callable[[str], Backend]
) -> None:
    """Hole 1: with the hop marker (a static HMAC of the gateway secret), anyone reached any
    TCP service through the public front without signing in, even with no peers at all.
    Now the public front has no relay, and peers meet only on the peer listener (mutual
    TLS), where a lone replica has no relay either."""
    node = backends("login")
    svc = served.service("login", protocol="tcp")
    served.ssh_r(served.bind(svc["token"]["token"]), node.port)
    wait_until(
        lambda: served.api.get(f"/services/{svc['name']}").json()["tunnels"], 15, "the tunnel"
    )
    upgrade = (
        f"GET {PEER_TCP_PATH} HTTP/1.1\r\nHost: {PEER_TCP_HOST}\r\n"
        "Connection: Upgrade\r\nUpgrade: ecliptic-tcp\r\n"
        f"X-Ecliptic-Peer: {'a' * 64}\r\nX-Ecliptic-Service: {svc['subdomain']}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", served.http_port), timeout=5) as s:
        s.sendall(upgrade.encode())
        head = s.recv(4096).split(b"\r\n", 1)[0]
    assert b" 404 " in head, head
    # The peer listener: plain HTTP and TLS without the peer certificate get nowhere; with
    # the certificate (a replica) there is still no relay while there are no peers.
    assert b" 400 " in peer_request(served.peer_port, upgrade, state=None, plain=True)
    assert b" 400 " in peer_request(served.peer_port, upgrade, state=None)
    assert b" 404 " in peer_request(served.peer_port, upgrade, state=served.state)
    assert not node.seen


def test_nginx_does_not_outlive_a_killed_serve(tmp_path: Path) -> None:
    """Issue 12: after ``kill -9`` of ``ecliptic serve`` its nginx stayed behind, answering
    502 until the next start."""
    with serve_with_gateway(tmp_path) as s:
        children = _descendants(s.proc.pid)
        nginx = [pid for pid in children if (_proc_stat(pid) or ("",))[0] == "nginx"]
        assert nginx, children
        s.proc.kill()  # serve alone, not its process group
        s.proc.wait(10)

        def alive() -> list[int]:
            return [p for p in nginx if (st := _proc_stat(p)) is not None and st[1] != "Z"]

        wait_until(lambda: not alive(), 10, "nginx to end with serve")
        assert _refuses(s.http_port)


def test_access_change_ends_open_websockets(served: Served, ws_echo: int) -> None:
    """Hole 4: removing a user from the access list left their open WebSocket working. Now
    it ends within the revocation target (5 s); others' stay up, and so do public ones."""
    private = served.service("ws-private")
    public = served.service("ws-public", public=True)
    served.ssh_r(served.bind(private["token"]["token"]), ws_echo)
    served.ssh_r(served.bind(public["token"]["token"]), ws_echo)
    admin = served.api.headers["Authorization"]
    served.wait_for(private["host"], lambda r: r.status_code not in (502, 503), Authorization=admin)
    served.wait_for(public["host"], lambda r: r.status_code not in (502, 503))
    assert served.api.post("/users", json={"name": "bob", "password": "bob-password"}).is_success
    member = {"user": "bob", "role": "member"}
    assert served.api.put("/tenancies/default/members", json=member).is_success
    bob = served.api.post(
        "/auth/login", json={"username": "bob", "password": "bob-password"}
    ).json()["secret"]
    patched = served.api.patch(f"/services/{private['id']}", json={"access": ["admin", "bob"]})
    assert patched.is_success, patched.text

    def ws(svc: dict[str, object], token: str | None) -> Any:
        sock = socket.create_connection(("127.0.0.1", served.http_port), timeout=5)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        url = f"ws://{svc['host']}:{served.http_port}/socket"
        return ws_connect(url, sock=sock, proxy=None, additional_headers=headers)

    def works(conn: Any) -> bool:
        conn.send("ping")
        return bool(conn.recv(timeout=5) == "echo: ping")

    wait_until(
        lambda: (
            served.front(str(private["host"]), Authorization=f"Bearer {bob}").status_code
            not in (403,)
        ),
        10,
        "bob's access",
    )
    with (
        ws(private, bob) as bobs,
        ws(private, admin.split(" ", 1)[1]) as admins,
        ws(public, None) as anyones,
    ):
        assert works(bobs) and works(admins) and works(anyones)
        taken = time.monotonic()
        assert served.api.patch(f"/services/{private['id']}", json={"access": ["admin"]}).is_success
        with pytest.raises(ConnectionClosed):
            while time.monotonic() - taken < 10:
                works(bobs)
                time.sleep(0.2)
        took = time.monotonic() - taken
        assert took <= 5, f"bob's WebSocket outlived his access by {took:.1f} s"
        assert works(admins) and works(anyones)

    # And bob cannot open a new one (once the front's 2 s auth cache has let go).
    def refused() -> bool:
        try:
            with ws(private, bob):
                pass
        except InvalidStatus as exc:
            return exc.response.status_code == 403
        return False

    wait_until(refused, 5, "bob refused a new WebSocket")


_RAW_GET = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) as s:
        s.sendall(b"GET / HTTP/1.1\\r\\nHost: x\\r\\nX-Remote-User: admin\\r\\n\\r\\n")
        print(s.recv(200).split(b"\\r\\n")[0].decode() or "closed")
except OSError as exc:
    print(type(exc).__name__)
"""


def _raw_get(address: str, port: int, account: str) -> str:
    """What a local process of ``account`` gets from a plain GET to ``address:port``."""
    done = subprocess.run(
        ["runuser", "-u", account, "--", "/usr/bin/python3", "-c", _RAW_GET, address, str(port)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return (done.stdout + done.stderr).strip()


def test_other_local_accounts_cannot_reach_tunnels_or_the_relay(
    served: Served, backends: Callable[[str], Backend]
) -> None:
    """The attack's retest: any account on the gateway's host could connect to a tunnel's
    loopback port (reaching a private service without signing in) or to the gateway's
    relay (with an identity header of its choosing). They listen on a fenced loopback
    address now: only the gateway (root) and nginx's workers get in."""
    backend = backends("fenced")
    svc = served.service("fenced")
    served.ssh_r(served.bind(svc["token"]["token"]), backend.port)
    admin = served.api.headers["Authorization"]
    served.wait_for(svc["host"], lambda r: r.status_code == 200, Authorization=admin)
    routes = (served.state / "front" / "routes.conf").read_text()
    tunnels = re.findall(r"server (127\.[0-9.]+):([0-9]+) max_fails", routes)
    relays = re.findall(r"if \(\$ecl_relayed\) \{\s+proxy_pass http://([0-9.]+):([0-9]+);", routes)
    assert tunnels and relays, routes
    seen = len(backend.seen)
    for address, port in tunnels + relays:
        assert address == TUNNEL_HOST
        for account in ("nobody", "tunnel"):
            got = _raw_get(address, int(port), account)
            assert got in ("ConnectionRefusedError", "ConnectionResetError"), (account, port, got)
    assert len(backend.seen) == seen, backend.seen[seen:]
    # The gateway itself still gets in (it probes tunnels), and so do requests through
    # nginx, signed in.
    address, port = tunnels[0]
    assert _raw_get(address, int(port), "root").startswith("HTTP/1.1 200")
    assert served.front(svc["host"], Authorization=admin).status_code == 200


class _Streaming(ThreadingHTTPServer):
    """A service whose requests last as long as the client likes: ``GET /events`` sends an
    event every 0.1 s; ``POST /upload`` takes a body (chunked, or of a declared length) and
    counts the bytes that reached it by kind (``received``); ``headers`` are what every
    request arrived with."""

    daemon_threads = True

    def __init__(self) -> None:
        self.received = {"chunked": 0, "declared": 0}
        self.headers: list[dict[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                if self.path != "/events":
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                with contextlib.suppress(OSError):
                    for n in range(600):
                        event = b"data: %d\n\n" % n
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                        self.wfile.flush()
                        time.sleep(0.1)

            def do_POST(self) -> None:
                server.headers.append({k.lower(): v for k, v in self.headers.items()})
                with contextlib.suppress(OSError, ValueError):
                    if self.headers.get("Transfer-Encoding") == "chunked":
                        while size := int(self.rfile.readline().strip() or b"0", 16):
                            server.received["chunked"] += len(self.rfile.read(size + 2)) - 2
                        self.rfile.readline()
                    else:
                        left = int(self.headers["Content-Length"])
                        while left > 0 and (got := len(self.rfile.read1(min(left, 65536)))):
                            server.received["declared"] += got
                            left -= got
                    self.send_response(200)
                    self.send_header("Content-Length", "0")
                    self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


def _ended(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the gateway ended this connection (read returns nothing or fails),
    reading what arrives meanwhile; None if it was still open after ``limit``."""
    started = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - started < limit:
        try:
            if not sock.recv(65536):
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    return None


def test_event_streams_and_streamed_uploads_end_with_access_and_credentials(
    served: Served,
) -> None:
    """The retest of hole 4: event streams and uploads of unknown length outlived access
    removal and sign-out (only WebSockets were re-checked). Now every long-lived request
    goes through the gateway's relay with the credential that let it in: deleting that
    token ends its streams alone, and removing the user from the access list ends the
    rest, each within the revocation target (5 s)."""
    backend = _Streaming()
    threading.Thread(target=backend.serve_forever, args=(0.05,), daemon=True).start()
    try:
        svc = served.service("streams")
        served.ssh_r(served.bind(svc["token"]["token"]), backend.server_address[1])
        admin = served.api.headers["Authorization"]
        served.wait_for(svc["host"], lambda r: r.status_code == 200, Authorization=admin)
        assert served.api.post("/users", json={"name": "bob", "password": "bob-pass-1"}).is_success
        member = {"user": "bob", "role": "member"}
        assert served.api.put("/tenancies/default/members", json=member).is_success
        assert served.api.patch(
            f"/services/{svc['id']}", json={"access": ["admin", "bob"]}
        ).is_success
        login = {"username": "bob", "password": "bob-pass-1"}
        kept, dropped = (served.api.post("/auth/login", json=login).json() for _ in range(2))

        def stream(token: str) -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", served.http_port), timeout=5)
            sock.sendall(
                f"GET /events HTTP/1.1\r\nHost: {svc['host']}\r\n"
                f"Authorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode()
            )
            assert sock.recv(65536).startswith(b"HTTP/1.1 200"), "the stream did not start"
            return sock

        def upload(token: str, framing: str) -> socket.socket:
            sock = socket.create_connection(("127.0.0.1", served.http_port), timeout=5)
            sock.sendall(
                f"POST /upload HTTP/1.1\r\nHost: {svc['host']}\r\n"
                f"Authorization: Bearer {token}\r\n{framing}\r\n\r\n".encode()
            )
            return sock

        wait_until(
            lambda: (
                served.front(svc["host"], Authorization=f"Bearer {kept['secret']}").status_code
                == 200
            ),
            10,
            "bob's access",
        )
        kept_stream, dropped_stream = stream(kept["secret"]), stream(dropped["secret"])
        # Uploads of unknown length, and of a declared length sent slowly (nginx bounds only
        # the pause between two reads).
        chunked = upload(kept["secret"], "Transfer-Encoding: chunked")
        declared = upload(kept["secret"], "Content-Length: 100000000")
        stop_sending = threading.Event()

        def send_slowly() -> None:
            with contextlib.suppress(OSError):
                while not stop_sending.wait(0.1):
                    chunked.sendall(b"5\r\nhello\r\n")
                    declared.sendall(b"hello")

        sender = threading.Thread(target=send_slowly, daemon=True)
        sender.start()
        try:
            wait_until(
                lambda: all(backend.received.values()), 5, "both uploads to reach the service"
            )
            # Signing out ends what that sign-in opened, and nothing else.
            bob = {"Authorization": f"Bearer {dropped['secret']}"}
            assert served.api.delete(f"/tokens/{dropped['id']}", headers=bob).is_success
            took = _ended(dropped_stream, 10)
            assert took is not None and took <= 5, f"the stream outlived its token: {took}"
            assert _ended(kept_stream, 1) is None, "another token's stream was ended"
            # Off the access list: the other stream and the upload end too.
            assert served.api.patch(f"/services/{svc['id']}", json={"access": ["admin"]}).is_success
            took = _ended(kept_stream, 10)
            assert took is not None and took <= 5, f"the stream outlived access: {took}"
            received = dict(backend.received)
            time.sleep(1.5)
            assert backend.received == received, "an upload still reaches the service"
            # The relay's own header (which credential let a request in) stays with it.
            assert backend.headers and not [
                h for h in backend.headers if "x-ecliptic-credential" in h
            ]
        finally:
            stop_sending.set()
            for sock in (kept_stream, dropped_stream, chunked, declared):
                sock.close()
    finally:
        backend.shutdown()
        backend.server_close()


def test_tunnels_per_tenancy_and_per_user_are_bounded(
    tmp_path: Path, backends: Callable[[str], Backend]
) -> None:
    """Hole 8: a tenancy's tunnels are bounded (``ECLIPTIC_GATEWAY_MAX_TUNNELS``); one more
    is cut at once, and the service's events say why. The retest: one member could use up
    the whole tenancy's allowance and nobody could tell who: the owner of services is
    bounded too (``ECLIPTIC_GATEWAY_MAX_TUNNELS_PER_USER``) and a refusal names who holds
    the tunnels."""
    backend = backends("limited")
    env = {"ECLIPTIC_GATEWAY_MAX_TUNNELS": "3", "ECLIPTIC_GATEWAY_MAX_TUNNELS_PER_USER": "2"}
    with serve_with_gateway(tmp_path, **env) as s:

        def tunnels(name: str, api: httpx.Client = s.api) -> int:
            return len(api.get(f"/services/{name}").json()["tunnels"])

        def events(name: str, api: httpx.Client = s.api) -> list[str]:
            return [e["reason"] for e in api.get(f"/services/{name}/events").json()["items"]]

        svc = s.service("limited", public=True)
        key = s.bind(svc["token"]["token"])
        first, second = s.ssh_r(key, backend.port), s.ssh_r(key, backend.port)
        wait_until(lambda: tunnels("limited") == 2, 15, "two tunnels")
        third = s.ssh_r(key, backend.port)
        assert third.wait(15) == 255  # cut by the gateway: admin's own allowance
        assert first.poll() is None and second.poll() is None
        assert tunnels("limited") == 2
        assert any(
            "services of admin have 2" in e and "MAX_TUNNELS_PER_USER=2" in e
            for e in events("limited")
        ), events("limited")

        # Another member still gets hers, up to the tenancy's limit, which names holders.
        assert s.api.post("/users", json={"name": "bea", "password": "bea-pass-12"}).is_success
        member = {"user": "bea", "role": "member"}
        assert s.api.put("/tenancies/default/members", json=member).is_success
        login = {"username": "bea", "password": "bea-pass-12"}
        token = s.api.post("/auth/login", json=login).json()["secret"]
        with httpx.Client(
            base_url=str(s.api.base_url), headers={"Authorization": f"Bearer {token}"}
        ) as bea:
            mine = bea.post("/services", json={"name": "beas", "public": True})
            assert mine.status_code == 201, mine.text
            key = s.bind(mine.json()["token"]["token"])
            s.ssh_r(key, backend.port)
            wait_until(lambda: tunnels("beas", bea) == 1, 15, "bea's tunnel")
            fourth = s.ssh_r(key, backend.port)
            assert fourth.wait(15) == 255
            assert any(
                "tenancy has 3 tunnels connected (by owner: admin 2, bea 1)" in e
                and "ECLIPTIC_GATEWAY_MAX_TUNNELS=3" in e
                for e in events("beas", bea)
            ), events("beas", bea)
        s.wait_for(svc["host"], lambda r: r.status_code == 200)


def test_service_health_is_what_the_front_answers(
    tmp_path: Path, backends: Callable[[str], Backend]
) -> None:
    """Issue 12: ``service show`` kept saying "1 healthy of 1" while the front answered
    503. Now a front that hangs makes the tunnels count as unhealthy until it answers
    again, and a front that dies is started again."""
    backend = backends("watched")
    with serve_with_gateway(tmp_path) as s:
        svc = s.service("watched", public=True)
        s.ssh_r(s.bind(svc["token"]["token"]), backend.port)
        s.wait_for(svc["host"], lambda r: r.status_code == 200)

        def healthy() -> list[bool]:
            return [t["healthy"] for t in s.api.get(f"/services/{svc['name']}").json()["tunnels"]]

        wait_until(lambda: healthy() == [True], 10, "one healthy tunnel")

        def nginx() -> list[int]:
            return [p for p in _descendants(s.proc.pid) if (_proc_stat(p) or ("",))[0] == "nginx"]

        hung = nginx()
        assert hung
        for pid in hung:
            os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: healthy() == [False], 10, "the tunnel shown unhealthy")
        finally:
            for pid in hung:
                os.kill(pid, signal.SIGCONT)
        wait_until(lambda: healthy() == [True], 10, "healthy again")

        for pid in nginx():
            os.kill(pid, signal.SIGKILL)

        def serves() -> bool:
            try:
                return s.front(svc["host"]).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(serves, 15, "the front started again")
        assert set(nginx()).isdisjoint(hung)
        wait_until(lambda: healthy() == [True], 10, "healthy after the restart")


def test_a_key_logs_in_as_soon_as_it_is_bound(
    served: Served, backends: Callable[[str], Backend]
) -> None:
    """Hole 11, the retest: associate, then at once a stock ``ssh -R`` (the docs' own
    example) got "Permission denied" 6 times in 11: the key reached the SSH endpoint only
    at the gateway's next poll. Now the answer comes after the endpoint has the key."""
    backend = backends("prompt")
    svc = served.service("prompt", public=True)
    clients = []
    for _ in range(6):
        token = served.api.post(f"/services/{svc['name']}/tokens").json()["token"]
        key, pub = served.keypair()
        r = httpx.post(
            f"{served.url}/api/v1/tunnels/associate", json={"token": token, "public_key": pub}
        )
        assert r.status_code == 200, r.text
        clients.append(ssh_reverse(served.ssh_port, key, backend.port))  # no pause
    served.clients.extend(clients)
    wait_until(
        lambda: len(served.api.get(f"/services/{svc['name']}").json()["tunnels"]) == 6,
        10,
        "six tunnels",
    )
    assert [c.poll() for c in clients] == [None] * 6
