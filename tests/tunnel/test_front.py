"""The gateway's HTTP front: a real nginx, small Python backends standing in for tunnels.

One front serves the whole module (plain HTTP and TLS, 2 s client timeouts, 1 s auth cache);
each test installs its own routing table with ``apply`` + ``flush``. Backends are threaded
HTTP servers on loopback ports; the auth app is a fake speaking the gateway's auth contract.
Raw sockets are used wherever the exact bytes on the wire matter.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect as ws_connect

from ecliptic.tunnel.front import (
    WORKER_USER,
    Front,
    FrontConfig,
    FrontError,
    InvalidFrontInput,
    Route,
    worker_account_problem,
)
from tests.ports import free_port
from tests.prerequisites import needs
from tests.waiting import wait_until

pytestmark = needs(
    os.geteuid() == 0 and Path("/usr/sbin/nginx").exists() and worker_account_problem() is None,
    "root, nginx and the ecliptic-web account: the front runs nginx as root with workers as "
    "ecliptic-web (scripts/setup-system.sh)",
)

AUTH_CACHE_S = 1
LOGIN_URL = "http://portal.localhost/gateway/authorize?host=x"


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def nginx_family(master: int) -> list[int]:
    """The master and its children (workers, cache manager/loader)."""
    out = [master]
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{master}/task"):
            out += [
                int(p) for p in Path(f"/proc/{master}/task/{task}/children").read_text().split()
            ]
    return out


# -- fake services --------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients the front cut off (timeouts, refused requests) are expected here


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    def send_json(self, status: int, payload: Any, **headers: str) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name.replace("_", "-"), value)
        self.end_headers()
        self.wfile.write(body)

    def read_body(self, on_bytes: Callable[[int], None] = lambda n: None) -> int:
        """Read the request body (Content-Length or chunked); returns its size."""
        total = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return total
                left = size
                while left:
                    got = len(self.rfile.read(min(left, 65536)))
                    if not got:
                        return total
                    left -= got
                    total += got
                    on_bytes(got)
                self.rfile.readline()
        left = int(self.headers.get("Content-Length") or 0)
        while left:
            chunk = self.rfile.read1(min(left, 65536))
            if not chunk:
                break
            left -= len(chunk)
            total += len(chunk)
            on_bytes(len(chunk))
        return total


@dataclass
class Backend:
    """A service behind a tunnel: echoes what reached it, counts requests and connections."""

    name: str
    tls: ssl.SSLContext | None = None
    port: int = 0
    requests: int = 0
    connections: int = 0
    received: int = 0
    sni: list[str | None] = field(default_factory=list)
    go: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    def start(self) -> Backend:
        backend = self

        class Handler(_Quiet):
            def setup(self) -> None:
                backend.connections += 1
                super().setup()

            def do_GET(self) -> None:
                backend.requests += 1
                if self.path == "/sse":
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for event, wait in ((b"data: one\n\n", True), (b"data: two\n\n", False)):
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                        self.wfile.flush()
                        if wait:
                            backend.go.wait(10)
                    self.wfile.write(b"0\r\n\r\n")
                    return
                if self.path == "/slow":
                    time.sleep(3)
                if self.path.startswith("/status/"):
                    code = int(self.path.rsplit("/", 1)[1])
                    self.send_json(code, {"backend": backend.name, "status": code})
                    return
                if self.path == "/cookie":
                    # A service trying to set cookies on its siblings and the parent domain.
                    self.send_json(
                        200,
                        {"backend": backend.name},
                        Set_Cookie="ecliptic_gw_state=planted; Domain=localhost; Path=/",
                    )
                    return
                if self.path == "/accel":
                    # nginx would follow these from a trusted upstream; services are not.
                    self.send_json(
                        200,
                        {"backend": backend.name},
                        X_Accel_Redirect="/_ecliptic/pages/503.html",
                        X_Accel_Buffering="yes",
                    )
                    return
                if self.path == "/upload":

                    def count(n: int) -> None:
                        backend.received += n

                    self.send_json(200, {"bytes": self.read_body(count)})
                    return
                size = self.read_body()
                self.send_json(
                    200,
                    {
                        "backend": backend.name,
                        "method": self.command,
                        "path": self.path,
                        "headers": list(self.headers.items()),
                        "body": size,
                    },
                )

            do_POST = do_PUT = do_DELETE = do_GET

        self.server = _Server(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            ctx = self.tls

            def note_sni(sock: Any, name: str | None, _ctx: Any) -> None:
                backend.sni.append(name)

            ctx.sni_callback = note_sni
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class FakeAuth:
    """Ecliptic's auth app as the front sees it: ``/gateway/auth`` and ``/_ecliptic/*``.

    A credential is the ``ecl`` cookie or a bearer token; ``grants`` maps it to a status
    (200 with the user's name, 403), anything else is 401 (with a login URL for browsers).
    """

    grants: dict[str, tuple[int, str]] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    login_url: str = LOGIN_URL
    port: int = 0
    server: ThreadingHTTPServer | None = None

    def reset(self) -> None:
        self.grants.clear()
        self.calls.clear()
        self.login_url = LOGIN_URL

    def auth_calls(self) -> list[dict[str, Any]]:
        return [c for c in self.calls if c["path"] == "/gateway/auth"]

    def start(self) -> FakeAuth:
        app = self

        class Handler(_Quiet):
            def do_GET(self) -> None:
                body = self.read_body()
                headers = dict(self.headers.items())
                app.calls.append(
                    {"path": self.path, "method": self.command, "headers": headers, "body": body}
                )
                if not self.path.startswith("/gateway/auth"):
                    self.send_json(200, {"auth_app": self.path, "headers": headers})
                    return
                cookies = [c.strip() for c in headers.get("Cookie", "").split(";") if c.strip()]
                session = next((c[4:] for c in cookies if c.startswith("ecl=")), None)
                bearer = headers.get("Authorization", "")
                ours = bearer[7:] if bearer.startswith("Bearer ") else None
                credential = session or ours
                status, user = app.grants.get(credential or "", (401, ""))
                if status == 200:
                    self.send_json(
                        200,
                        {},
                        X_Remote_User=user,
                        X_Remote_Email=f"{user}@example.org",
                        X_Forward_Cookie="; ".join(c for c in cookies if not c.startswith("ecl=")),
                        X_Forward_Authorization="" if ours and not session else bearer,
                    )
                elif status == 401 and "text/html" in headers.get("X-Ecliptic-Accept", ""):
                    self.send_json(401, {}, X_Ecliptic_Login=app.login_url)
                else:
                    self.send_json(status, {})

            do_POST = do_GET

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


# -- fixtures -------------------------------------------------------------------------


@dataclass
class Env:
    front: Front
    auth: FakeAuth
    root: Path
    ca: Path
    cert: Path
    key: Path

    @property
    def port(self) -> int:
        return self.front.http_port

    def serve(self, *routes: Route) -> None:
        self.front.apply(routes)
        self.front.flush()

    def get(
        self,
        host: str,
        path: str = "/",
        *,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        **hdrs: str,
    ) -> tuple[int, dict[str, str], bytes]:
        """One request on a fresh connection; header names use ``_`` for ``-``."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        return _exchange(conn, host, path, method, body, {**(headers or {}), **hdrs})

    def get_tls(self, host: str, path: str = "/", **hdrs: str) -> tuple[int, dict[str, str], bytes]:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        port = self.front.tls_port
        assert port is not None
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.sock = ctx.wrap_socket(raw, server_hostname=host)
        return _exchange(conn, host, path, "GET", None, hdrs)

    def echo(self, host: str, path: str = "/", **hdrs: str) -> dict[str, Any]:
        status, _, body = self.get(host, path, headers=hdrs)
        assert status == 200, body[:300]
        return dict(json.loads(body))


def _exchange(
    conn: http.client.HTTPConnection,
    host: str,
    path: str,
    method: str,
    body: bytes | None,
    hdrs: dict[str, str],
) -> tuple[int, dict[str, str], bytes]:
    headers = {"Host": host, **{k.replace("_", "-"): v for k, v in hdrs.items()}}
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def raw_exchange(port: int, data: bytes, timeout: float = 3.0) -> bytes:
    """Send bytes, return everything the front answers until it closes or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        with contextlib.suppress(TimeoutError, ConnectionResetError):
            while chunk := s.recv(65536):
                out += chunk
        return out


def statuses(answer: bytes) -> list[int]:
    """Status codes of the responses in ``answer`` (bodies here never contain a status line)."""
    return [int(code) for code in re.findall(rb"HTTP/1\.[01] (\d{3})", answer)]


def header_values(echo: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in echo["headers"] if k.lower() == name.lower()]


def self_signed(root: Path, domain: str) -> tuple[Path, Path]:
    """A throwaway wildcard certificate for ``*.domain`` (and its key) under ``root``."""
    cert, key = root / "cert.pem", root / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-subj", f"/CN=*.{domain}",
         "-addext", f"subjectAltName=DNS:*.{domain},DNS:{domain}",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


@pytest.fixture(scope="module")
def env() -> Iterator[Env]:
    # Workers run as ecliptic-web and must reach the state dir: pytest's tmp_path is under a 0700
    # directory, so the front gets a world-searchable folder of its own.
    root = Path(tempfile.mkdtemp(prefix="ecl-front-test-"))
    os.chmod(root, 0o755)
    auth = FakeAuth().start()
    front: Front | None = None
    try:
        cert, key = self_signed(root, "test.localhost")
        front = Front(
            FrontConfig(
                state_dir=root / "state",
                http_port=0,
                tls_port=0,
                tls_cert=cert,
                tls_key=key,
                auth_upstream=f"127.0.0.1:{auth.port}",
                header_timeout_s=2,
                body_timeout_s=2,
                auth_cache_s=AUTH_CACHE_S,
                stop_grace_s=1,
            )
        )
        front.start()
        yield Env(front, auth, root, cert, cert, key)
    finally:
        pid = front.pid if front is not None else None
        family = nginx_family(pid) if pid else []
        try:
            if front is not None:
                front.stop()
        finally:
            auth.stop()
            shutil.rmtree(root, ignore_errors=True)
        assert not [p for p in family if alive(p)], "nginx processes outlived stop()"


@pytest.fixture(autouse=True)
def _fresh_auth(env: Env) -> None:
    env.auth.reset()


@pytest.fixture
def servers() -> Iterator[Callable[..., Backend]]:
    started: list[Backend] = []

    def make(name: str, tls: ssl.SSLContext | None = None) -> Backend:
        b = Backend(name, tls=tls).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.go.set()
        b.stop()


# -- routing and pages ----------------------------------------------------------------


def test_routes_by_host_and_explains_failures_with_pages(
    env: Env, servers: Callable[..., Backend]
) -> None:
    a = servers("a")
    dead = free_port()
    env.serve(
        Route("app.localhost", (a.port,), public=True),
        Route("starting.localhost", (), public=True),
        Route("broken.localhost", (dead,), public=True),
    )
    assert env.echo("app.localhost")["backend"] == "a"

    status, headers, body = env.get("nosuch.localhost")
    assert status == 404
    assert headers["content-type"].startswith("text/html")
    assert b"No such service" in body and b"nosuch.localhost" in body

    status, _, body = env.get("starting.localhost")
    assert status == 503
    assert b"No tunnel is connected for this service, it may be starting" in body
    assert b"starting.localhost" in body

    status, _, body = env.get("broken.localhost")
    assert status == 502
    assert b"The service is not answering" in body and b"broken.localhost" in body
    assert b"nginx" not in body.lower()

    # A service's own errors are its business: they pass unchanged.
    for code in (401, 403, 404, 500, 502, 503):
        status, _, body = env.get("app.localhost", f"/status/{code}")
        assert (status, json.loads(body)) == (code, {"backend": "a", "status": code})
    # nginx control headers from a service are ignored (no internal redirects).
    status, _, body = env.get("app.localhost", "/accel")
    assert (status, json.loads(body)) == (200, {"backend": "a"})
    # A service cannot set cookies for its siblings or the parent domain (planting a
    # sign-in state or a session there): the Domain it names becomes its own host.
    status, headers, _ = env.get("app.localhost", "/cookie")
    cookie = {k.lower(): v for k, v in headers.items()}["set-cookie"]
    assert status == 200 and "Domain=app.localhost" in cookie, cookie


def test_host_in_pages_is_escaped(env: Env) -> None:
    env.serve()
    answer = raw_exchange(
        env.port, b'GET / HTTP/1.1\r\nHost: x<script>"a\r\nConnection: close\r\n\r\n'
    )
    assert statuses(answer) == [404]
    assert b"<script>" not in answer
    assert b"&lt;script&gt;" in answer


def test_slow_service_times_out_with_504(env: Env, servers: Callable[..., Backend]) -> None:
    a = servers("a")
    env.serve(Route("slow.localhost", (a.port,), public=True, read_timeout_s=1))
    status, _, body = env.get("slow.localhost", "/slow")
    assert status == 504
    assert b"took too long" in body and b"slow.localhost" in body


def test_balances_over_tunnels_keeps_upstream_connections_and_skips_dead_ones(
    env: Env, servers: Callable[..., Backend]
) -> None:
    a, b = servers("a"), servers("b")
    env.serve(
        Route("lb.localhost", (a.port, b.port), public=True),
        Route("retry.localhost", (free_port(), a.port), public=True),
    )
    # One client connection is one worker, whose round robin alternates.
    conn = http.client.HTTPConnection("127.0.0.1", env.port, timeout=10)
    seen = []
    for _ in range(6):
        conn.request("GET", "/", headers={"Host": "lb.localhost"})
        seen.append(json.loads(conn.getresponse().read())["backend"])
    conn.close()
    assert sorted(seen) == ["a"] * 3 + ["b"] * 3
    # HTTP/1.1 with keepalive to upstreams: three requests, one connection each.
    assert (a.requests, b.requests) == (3, 3)
    assert a.connections == 1 and b.connections == 1

    # A dead tunnel port is retried on the next one: no request fails.
    assert [env.get("retry.localhost")[0] for _ in range(6)] == [200] * 6


# -- headers --------------------------------------------------------------------------


def test_forwarding_headers_are_set_by_the_front_only(
    env: Env, servers: Callable[..., Backend]
) -> None:
    a = servers("a")
    env.serve(Route("pub.localhost", (a.port,), public=True))
    echo = env.echo(
        "pub.localhost",
        "/p?q=1",
        X_Forwarded_For="6.6.6.6",
        X_Forwarded_Proto="https",
        X_Forwarded_Host="evil.example",
        X_Forwarded_Port="1",
        X_Forwarded_Server="evil",
        X_Forwarded_Prefix="/evil",
        Forwarded="for=6.6.6.6",
        X_Real_IP="6.6.6.6",
        X_Remote_User="root",
        X_Remote_Email="root@evil",
        Cookie="theirs=1; more=2",
        Authorization="Basic dTpw",
        X_Ecliptic_Host="other.localhost",
        X_Ecliptic_Uri="/forged",
    )
    assert echo["path"] == "/p?q=1"
    one = {name: header_values(echo, name) for name in (
        "X-Forwarded-For", "X-Real-IP", "X-Forwarded-Proto", "X-Forwarded-Host",
        "X-Forwarded-Port", "Host", "Cookie", "Authorization", "X-Ecliptic-Host",
    )}  # fmt: skip
    assert one == {
        "X-Forwarded-For": ["127.0.0.1"],
        "X-Real-IP": ["127.0.0.1"],
        "X-Forwarded-Proto": ["http"],
        "X-Forwarded-Host": [f"pub.localhost:{env.port}"],
        "X-Forwarded-Port": [str(env.port)],
        "Host": [f"pub.localhost:{env.port}"],
        "Cookie": ["theirs=1; more=2"],
        "Authorization": ["Basic dTpw"],
        "X-Ecliptic-Host": ["pub.localhost"],
    }
    for name in ("X-Remote-User", "X-Remote-Email", "X-Forwarded-Server", "X-Forwarded-Prefix",
                 "Forwarded", "Connection", "Upgrade", "X-Ecliptic-Uri"):  # fmt: skip
        assert header_values(echo, name) == [], name


def test_ecliptic_credentials_never_reach_a_public_service(
    env: Env, servers: Callable[..., Backend]
) -> None:
    """Hole 3: the user's API token and the gateway's and portal's cookies were forwarded."""
    a = servers("a")
    env.serve(Route("pub.localhost", (a.port,), public=True))
    for cookie, kept in (
        ("theirs=1; ecliptic_gw=forged; more=2", "theirs=1; more=2"),
        ("ecliptic_gw=g; theirs=1", "theirs=1"),
        ("theirs=1; ecliptic_session=s", "theirs=1"),
        ("ecliptic_session=s; ecliptic_gw=g; theirs=1; more=2", "theirs=1; more=2"),
    ):
        echo = env.echo("pub.localhost", Cookie=cookie, Authorization="Bearer ecl_secret")
        assert header_values(echo, "Authorization") == [], cookie
        assert header_values(echo, "Cookie") == [kept], (cookie, echo["headers"])
        assert "ecl_secret" not in json.dumps(echo) and "ecliptic_" not in json.dumps(echo)
    # Any case, and any whitespace the API itself accepts (a tab too: the attack's retest).
    for value in ("bearer  ECL_x", "Bearer \tecl_x", "Bearer\tecl_x"):
        echo = env.echo("pub.localhost", Authorization=value)
        assert header_values(echo, "Authorization") == [], value
    echo = env.echo("pub.localhost", Authorization="Bearer theirs")  # the service's own
    assert header_values(echo, "Authorization") == ["Bearer theirs"]


def test_host_tricks_route_and_authorise_on_the_same_host(
    env: Env, servers: Callable[..., Backend]
) -> None:
    pub, priv = servers("pub"), servers("priv")
    env.serve(
        Route("pub.localhost", (pub.port,), public=True),
        Route("priv.localhost", (priv.port,), public=False),
    )
    # Case, a trailing dot and any port are the same host.
    for host in ("PUB.LocalHost", "pub.localhost.", "pub.localhost:1234", "PUB.LOCALHOST.:9"):
        assert env.echo(host)["backend"] == "pub", host

    # An absolute URI in the request line wins over the Host header (RFC 9112): routing,
    # the Host the service sees and the host the auth app is asked about all follow it.
    answer = raw_exchange(
        env.port,
        b"GET http://priv.localhost/x HTTP/1.1\r\nHost: pub.localhost\r\nConnection: close\r\n\r\n",
    )
    assert statuses(answer) == [401]
    assert pub.requests == 4 and priv.requests == 0
    [call] = env.auth.auth_calls()
    assert call["headers"]["X-Ecliptic-Host"] == "priv.localhost"

    answer = raw_exchange(
        env.port,
        b"GET http://pub.localhost/y HTTP/1.1\r\nHost: priv.localhost\r\nConnection: close\r\n\r\n",
    )
    assert statuses(answer) == [200]
    echo = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert echo["backend"] == "pub" and echo["path"] == "/y"
    assert header_values(echo, "Host") == [f"pub.localhost:{env.port}"]
    assert len(env.auth.auth_calls()) == 1


# -- request smuggling and limits -----------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "expected"),
    [
        (
            b"POST / HTTP/1.1\r\nHost: pub.localhost\r\nContent-Length: 3\r\n"
            b"Content-Length: 40\r\n\r\nabc",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: pub.localhost\r\nContent-Length: 46\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n"
            b"Host: pub.localhost\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: pub.localhost\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Length: 5\r\n\r\n0\r\n\r\n",
            400,
        ),
        (
            b"POST / HTTP/1.1\r\nHost: pub.localhost\r\nTransfer-Encoding: gzip, chunked\r\n"
            b"\r\n0\r\n\r\n",
            501,
        ),
        (
            b"POST / HTTP/1.0\r\nHost: pub.localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n",
            400,
        ),
    ],
    ids=["duplicate-content-length", "cl-then-te", "te-then-cl", "te-not-chunked", "te-http10"],
)
def test_ambiguous_bodies_are_refused_before_any_backend(
    env: Env, servers: Callable[..., Backend], request_bytes: bytes, expected: int
) -> None:
    counter = servers("counter")
    env.serve(Route("pub.localhost", (counter.port,), public=True))
    assert statuses(raw_exchange(env.port, request_bytes)) == [expected]
    assert counter.requests == 0

    # The counter counts: two pipelined requests are two requests.
    two = b"GET /1 HTTP/1.1\r\nHost: pub.localhost\r\n\r\n"
    two += b"GET /2 HTTP/1.1\r\nHost: pub.localhost\r\nConnection: close\r\n\r\n"
    assert statuses(raw_exchange(env.port, two)) == [200, 200]
    assert counter.requests == 2


def test_oversized_headers_answer_431(env: Env, servers: Callable[..., Backend]) -> None:
    a = servers("a")
    env.serve(Route("pub.localhost", (a.port,), public=True))
    for host in ("pub.localhost", "nosuch.localhost"):
        status, _, body = env.get(host, X_Big="a" * 20_000)
        assert status == 431, host
        assert b"Request headers too large" in body
    # Many headers, each fitting a 16k buffer, together larger than 4 of them.
    many = {f"X_Big_{i}": "b" * 15_000 for i in range(6)}
    status, _, _ = env.get("pub.localhost", headers=many)
    assert status == 431
    # Just under the limit passes.
    assert env.get("pub.localhost", X_Big="a" * 15_000)[0] == 200
    assert a.requests == 1


def test_slow_clients_are_cut_off(env: Env, servers: Callable[..., Backend]) -> None:
    sink = servers("sink")
    env.serve(Route("pub.localhost", (sink.port,), public=True))
    # Headers never finished: closed after header_timeout_s (2 s), no request reaches a backend.
    with socket.create_connection(("127.0.0.1", env.port), timeout=8) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: pub.localhost\r\nX-Slow: 1\r\n")
        start = time.monotonic()
        assert s.recv(65536) == b""
        assert time.monotonic() - start < 6
    # A body that stalls: closed after body_timeout_s (2 s); the service never gets it all.
    with socket.create_connection(("127.0.0.1", env.port), timeout=8) as s:
        s.sendall(b"PUT /upload HTTP/1.1\r\nHost: pub.localhost\r\nContent-Length: 1000\r\n\r\n")
        s.sendall(b"x" * 10)
        start = time.monotonic()
        answer = b""
        with contextlib.suppress(ConnectionResetError):
            while chunk := s.recv(65536):
                answer += chunk
        assert time.monotonic() - start < 6
    assert b"200 OK" not in answer
    assert sink.requests <= 1 and sink.received <= 10


# -- streaming ------------------------------------------------------------------------


def test_large_upload_streams_to_the_service(env: Env, servers: Callable[..., Backend]) -> None:
    sink = servers("sink")
    env.serve(Route("pub.localhost", (sink.port,), public=True))
    size = 24 << 20  # far above nginx's default 1 MB limit
    with socket.create_connection(("127.0.0.1", env.port), timeout=10) as s:
        s.sendall(
            b"PUT /upload HTTP/1.1\r\nHost: pub.localhost\r\nConnection: close\r\n"
            b"Content-Length: %d\r\n\r\n" % size
        )
        s.sendall(b"x" * (size // 2))
        # The service is reading while the client has not finished: nothing buffers it all.
        deadline = time.monotonic() + 5
        while sink.received == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert 0 < sink.received <= size // 2
        s.sendall(b"x" * (size - size // 2))
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert statuses(answer) == [200]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1]) == {"bytes": size}

    # Chunked uploads stream too.
    conn = http.client.HTTPConnection("127.0.0.1", env.port, timeout=10)
    conn.request(
        "PUT",
        "/upload",
        body=(b"y" * 65536 for _ in range(48)),
        headers={"Host": "pub.localhost"},
        encode_chunked=True,
    )
    assert json.loads(conn.getresponse().read()) == {"bytes": 48 * 65536}
    conn.close()


def test_server_sent_events_are_not_buffered(env: Env, servers: Callable[..., Backend]) -> None:
    events = servers("events")
    env.serve(Route("pub.localhost", (events.port,), public=True))
    with socket.create_connection(("127.0.0.1", env.port), timeout=5) as s:
        s.sendall(b"GET /sse HTTP/1.1\r\nHost: pub.localhost\r\nAccept: text/event-stream\r\n\r\n")
        got = b""
        # The service holds the second event until the test saw the first one: a buffering
        # front would deliver nothing and this read would time out.
        while b"data: one" not in got:
            got += s.recv(65536)
        assert b"data: two" not in got
        events.go.set()
        while b"data: two" not in got:
            got += s.recv(65536)
    assert got.startswith(b"HTTP/1.1 200")


def test_websockets_pass_and_survive_a_reload(env: Env, ws_echo: int) -> None:
    env.serve(Route("ws.localhost", (ws_echo,), public=True))
    sock = socket.create_connection(("127.0.0.1", env.port), timeout=5)
    with ws_connect(f"ws://ws.localhost:{env.port}/socket", sock=sock, proxy=None) as ws:
        ws.send("hello")
        assert ws.recv(timeout=5) == "echo: hello"
        env.serve(
            Route("ws.localhost", (ws_echo,), public=True),
            Route("other.localhost", (), public=True),
        )
        # The old worker keeps the open socket (worker_shutdown_timeout) after the reload.
        ws.send("again")
        assert ws.recv(timeout=5) == "echo: again"


# -- authorisation --------------------------------------------------------------------


def test_private_route_forwards_what_the_auth_app_says(
    env: Env, servers: Callable[..., Backend]
) -> None:
    a = servers("a")
    env.serve(Route("priv.localhost", (a.port,), public=False))
    env.auth.grants["s1"] = (200, "alice")
    echo = env.echo(
        "priv.localhost",
        "/doc?x=1",
        Cookie="ecl=s1; app=7",
        Authorization="Basic dTpw",
        X_Remote_User="root",
        Accept="text/html",
    )
    assert header_values(echo, "X-Remote-User") == ["alice"]
    assert header_values(echo, "X-Remote-Email") == ["alice@example.org"]
    assert header_values(echo, "Cookie") == ["app=7"]  # the gateway's cookie never leaves
    assert header_values(echo, "Authorization") == ["Basic dTpw"]

    [call] = env.auth.auth_calls()
    assert call["method"] == "GET" and call["body"] == 0
    h = call["headers"]
    assert h["Cookie"] == "ecl=s1; app=7"
    assert h["Authorization"] == "Basic dTpw"
    assert h["X-Ecliptic-Host"] == "priv.localhost"
    assert h["X-Ecliptic-Uri"] == "/doc?x=1"
    assert h["X-Ecliptic-Scheme"] == "http"
    assert h["X-Ecliptic-Accept"] == "text/html"
    assert "X-Remote-User" not in h and "Content-Length" not in h

    # Ecliptic's own bearer token is consumed: no Authorization and no Cookie reach the service.
    env.auth.grants["tok"] = (200, "bob")
    echo = env.echo("priv.localhost", Authorization="Bearer tok")
    assert header_values(echo, "X-Remote-User") == ["bob"]
    assert header_values(echo, "Authorization") == []
    assert header_values(echo, "Cookie") == []

    # A request body goes to the service, never to the auth app.
    status, _, body = env.get(
        "priv.localhost", "/up", method="POST", body=b"z" * 5000, Cookie="ecl=s1"
    )
    assert status == 200 and json.loads(body)["body"] == 5000
    assert env.auth.auth_calls()[-1]["body"] == 0


def test_refusals_sign_in_redirect_401_and_403_pages(
    env: Env, servers: Callable[..., Backend]
) -> None:
    a = servers("a")
    env.serve(
        Route("priv.localhost", (a.port,), public=False),
        Route("privdown.localhost", (), public=False),
    )
    env.auth.grants["eve"] = (403, "eve")

    status, headers, _ = env.get("priv.localhost", "/lab", Accept="text/html,*/*")
    assert status == 302
    assert headers["location"] == LOGIN_URL

    status, _, body = env.get("priv.localhost", "/lab", Accept="application/json")
    assert status == 401
    assert b"Sign-in required" in body and b"priv.localhost" in body

    status, _, body = env.get("priv.localhost", Cookie="ecl=eve")
    assert status == 403
    assert b"You do not have access to this service; ask its owner." in body

    # Without a tunnel, someone who may not see the service learns nothing about its state.
    assert env.get("privdown.localhost")[0] == 401
    assert env.get("privdown.localhost", Cookie="ecl=eve")[0] == 403
    env.auth.grants["s1"] = (200, "alice")
    assert env.get("privdown.localhost", Cookie="ecl=s1")[0] == 503
    assert a.requests == 0


def test_the_auth_cache_is_readable_by_the_workers_account_alone(
    env: Env, servers: Callable[..., Backend]
) -> None:
    """The attack's retest: the auth cache's files hold their raw keys (host, Cookie and
    Authorization: API tokens, session cookies) and were owned by ``nobody``, so any process
    running as ``nobody`` could read them. Workers now run as an account of their own."""
    a = servers("a")
    env.serve(Route("cached.localhost", (a.port,), public=False))
    secret = "ecl_" + secrets.token_hex(16)
    env.auth.grants[secret] = (200, "alice")
    assert env.get("cached.localhost", Authorization=f"Bearer {secret}")[0] == 200
    files = [p for p in (env.root / "state" / "auth-cache").rglob("*") if p.is_file()]
    assert files and any(secret.encode() in p.read_bytes() for p in files)
    workers = nginx_family(env.front.pid or 0)[1:]
    assert workers
    web = pwd.getpwnam(WORKER_USER)
    assert WORKER_USER == "ecliptic-web" and web.pw_uid != 0
    for pid in workers:
        uids = Path(f"/proc/{pid}/status").read_text().split("Uid:")[1].split()[:4]
        assert set(uids) == {str(web.pw_uid)}, (pid, uids)
    for account in ("nobody", "tunnel"):
        for path in files:
            read = subprocess.run(
                ["runuser", "-u", account, "--", "cat", str(path)], capture_output=True
            )
            assert read.returncode != 0 and secret.encode() not in read.stdout, (account, path)


def test_auth_answers_are_cached_briefly_and_401_never(
    env: Env, servers: Callable[..., Backend]
) -> None:
    a = servers("a")
    env.serve(Route("priv.localhost", (a.port,), public=False))
    # Credentials of this test only: other tests' answers may still be cached.
    s1, s2, nobody = (secrets.token_hex(8) for _ in range(3))
    env.auth.grants[s1] = (200, "alice")
    first = env.echo("priv.localhost", "/1", Cookie=f"ecl={s1}")
    again = env.echo("priv.localhost", "/2", Cookie=f"ecl={s1}")
    assert len(env.auth.auth_calls()) == 1
    # A cached answer still carries who the user is.
    assert header_values(first, "X-Remote-User") == header_values(again, "X-Remote-User")
    assert header_values(again, "Cookie") == []

    # Other credentials are other cache entries; refusals to sign in are asked every time.
    env.auth.grants[s2] = (200, "bob")
    assert header_values(env.echo("priv.localhost", Cookie=f"ecl={s2}"), "X-Remote-User") == ["bob"]
    assert env.get("priv.localhost", Cookie=f"ecl={nobody}")[0] == 401
    assert env.get("priv.localhost", Cookie=f"ecl={nobody}")[0] == 401
    assert len(env.auth.auth_calls()) == 4

    # Revocation: after the cache lifetime (1-2 s for 1 s: nginx counts whole seconds) the
    # new answer applies.
    env.auth.grants[s1] = (403, "alice")
    time.sleep(AUTH_CACHE_S + 1.1)
    assert env.get("priv.localhost", Cookie=f"ecl={s1}")[0] == 403


def test_reserved_prefix_goes_to_the_auth_app_without_auth(
    env: Env, servers: Callable[..., Backend]
) -> None:
    a = servers("a")
    env.serve(Route("priv.localhost", (a.port,), public=False))
    status, _, body = env.get(
        "priv.localhost",
        "/_ecliptic/callback?code=abc&next=/x",
        X_Ecliptic_Host="other.localhost",
        X_Ecliptic_Uri="/forged",
        X_Forwarded_For="6.6.6.6",
        X_Remote_User="root",
        Cookie="ecl=old",
    )
    assert status == 200
    seen = json.loads(body)
    assert seen["auth_app"] == "/_ecliptic/callback?code=abc&next=/x"
    h = seen["headers"]
    assert h["X-Ecliptic-Host"] == "priv.localhost"
    assert h["X-Forwarded-For"] == "127.0.0.1"
    assert h["X-Forwarded-Proto"] == "http"
    assert h["Cookie"] == "ecl=old"
    assert "X-Remote-User" not in h and "X-Ecliptic-Uri" not in h
    assert env.auth.auth_calls() == [] and a.requests == 0
    # Error pages are internal: not a way to probe the front.
    assert env.get("priv.localhost", "/_ecliptic/pages/403.html")[0] == 404


# -- TLS ------------------------------------------------------------------------------


def test_tls_terminates_with_the_operators_certificate(
    env: Env, servers: Callable[..., Backend]
) -> None:
    a = servers("a")
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(env.cert, env.key)
    inner = servers("inner-tls", tls=server_ctx)
    env.serve(
        Route("pub.test.localhost", (a.port,), public=True),
        Route("priv.test.localhost", (a.port,), public=False),
        Route("https.test.localhost", (inner.port,), public=True, upstream_tls=True),
    )
    status, headers, body = env.get_tls("pub.test.localhost", "/t")
    assert status == 200
    hsts = {k.lower(): v for k, v in headers.items()}.get("strict-transport-security")
    assert hsts == "max-age=31536000"  # over TLS only (plain HTTP below has none)
    echo = json.loads(body)
    assert header_values(echo, "X-Forwarded-Proto") == ["https"]
    assert header_values(echo, "X-Forwarded-Port") == [str(env.front.tls_port)]

    assert env.get_tls("priv.test.localhost")[0] == 401
    assert env.auth.auth_calls()[-1]["headers"]["X-Ecliptic-Scheme"] == "https"

    status, _, body = env.get_tls("nosuch.test.localhost")
    assert status == 404 and b"nosuch.test.localhost" in body

    # A service that speaks HTTPS itself: TLS to it, with the public host as SNI.
    status, _, body = env.get_tls("https.test.localhost")
    assert status == 200 and json.loads(body)["backend"] == "inner-tls"
    assert inner.sni[-1] == "https.test.localhost"
    # Plain HTTP serves the same routes, without HSTS; error pages over TLS carry it.
    assert env.echo("pub.test.localhost")["backend"] == "a"
    _, plain, _ = env.get("pub.test.localhost")
    assert "strict-transport-security" not in {k.lower() for k in plain}
    _, page, _ = env.get_tls("nosuch.test.localhost")
    assert "strict-transport-security" in {k.lower() for k in page}


# -- reloads --------------------------------------------------------------------------


def test_churn_coalesces_reloads_and_never_fails_a_request(
    env: Env, servers: Callable[..., Backend]
) -> None:
    a = servers("a")
    stable = Route("stable.localhost", (a.port,), public=True)
    env.serve(stable)
    log = env.root / "state" / "logs" / "error.log"
    hups_before = log.read_text().count("(SIGHUP) received")

    failures: list[Any] = []
    done = threading.Event()
    answered = 0

    def hammer() -> None:
        nonlocal answered
        while not done.is_set():
            try:
                status = env.get("stable.localhost")[0]
            except OSError as exc:
                failures.append(exc)
                continue
            answered += 1
            if status != 200:
                failures.append(status)

    client = threading.Thread(target=hammer)
    client.start()
    try:
        start = time.monotonic()
        for i in range(60):
            env.front.apply([stable, Route(f"churn{i}.localhost", (a.port,), public=True)])
            time.sleep(0.01)
        env.front.flush()
        elapsed = time.monotonic() - start
    finally:
        done.set()
        client.join()
    hups = log.read_text().count("(SIGHUP) received") - hups_before
    # 60 tables in about a second: a handful of reloads (at most one per 200 ms), not 60.
    assert 1 <= hups <= elapsed / 0.2 + 2
    assert failures == [] and answered > 10
    # The last table is the live one.
    assert env.echo("churn59.localhost")["backend"] == "a"
    assert env.get("churn58.localhost")[0] == 404

    # The same table again, in any order, is no change and no reload.
    hups = log.read_text().count("(SIGHUP) received")
    for _ in range(5):
        env.front.apply([Route("churn59.localhost", (a.port,), public=True), stable])
    env.front.flush()
    time.sleep(0.3)
    assert log.read_text().count("(SIGHUP) received") == hups


def test_invalid_tables_are_refused_before_nginx_sees_them(env: Env) -> None:
    for bad in ("Upper.localhost", "nodot", "a b.localhost", "x.localhost;", "-x.localhost", ""):
        with pytest.raises(InvalidFrontInput):
            Route(bad, (), public=True)
    with pytest.raises(InvalidFrontInput):
        Route("ok.localhost", (0,), public=True)
    with pytest.raises(InvalidFrontInput):
        Route("ok.localhost", (8000, 8000), public=True)
    with pytest.raises(InvalidFrontInput):
        env.front.apply([Route("ok.localhost", (), True), Route("ok.localhost", (), False)])


# -- lifecycle ------------------------------------------------------------------------


@pytest.fixture
def own_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="ecl-front-test-"))
    os.chmod(root, 0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_stop_ends_every_nginx_process_even_with_open_websockets(
    own_root: Path, ws_echo: int
) -> None:
    front = Front(FrontConfig(state_dir=own_root / "s", http_port=0, stop_grace_s=0.5))
    family: list[int] = []
    try:
        front.start()
        front.apply([Route("ws.localhost", (ws_echo,), public=True)])
        front.flush()
        assert front.pid is not None
        family = nginx_family(front.pid)
        assert len(family) >= 2
        sock = socket.create_connection(("127.0.0.1", front.http_port), timeout=5)
        with ws_connect(f"ws://ws.localhost:{front.http_port}/", sock=sock, proxy=None) as ws:
            ws.send("x")
            assert ws.recv(timeout=5) == "echo: x"
            front.stop()  # QUIT waits for the socket, then TERM ends it
            assert front.pid is None
    finally:
        front.stop()
    assert [p for p in family if alive(p)] == []


def test_old_workers_let_upgraded_connections_go_after_a_bounded_time(
    own_root: Path, ws_echo: int
) -> None:
    """Hole 8: flapping a tunnel while holding a WebSocket left an old nginx worker per
    reload alive for 10 minutes. Old workers now close what they still hold after
    ``worker_shutdown_s`` (60 s by default; 2 s here), and go."""
    config = FrontConfig(state_dir=own_root / "s", http_port=0, stop_grace_s=0.5)
    front = Front(replace(config, worker_shutdown_s=2))
    try:
        front.start()
        front.apply([Route("ws.localhost", (ws_echo,), public=True)])
        front.flush()
        assert front.pid is not None
        before = set(nginx_family(front.pid)) - {front.pid}
        sock = socket.create_connection(("127.0.0.1", front.http_port), timeout=5)
        with ws_connect(f"ws://ws.localhost:{front.http_port}/", sock=sock, proxy=None) as ws:
            ws.send("x")
            assert ws.recv(timeout=5) == "echo: x"
            for i in range(3):  # flapping
                front.apply(
                    [
                        Route("ws.localhost", (ws_echo,), public=True),
                        Route(f"flap{i}.localhost", (), public=True),
                    ]
                )
                front.flush()
            ws.send("still")
            assert ws.recv(timeout=5) == "echo: still"  # a reload does not cut it at once
            wait_until(lambda: not [p for p in before if alive(p)], 10, "old workers to go")
            with pytest.raises(ConnectionClosed):
                ws.send("gone")
                ws.recv(timeout=5)
    finally:
        front.stop()


def test_old_workers_are_bounded_in_number(own_root: Path, ws_echo: int) -> None:
    """The retest of hole 8: opening a new WebSocket after each of many tunnel flaps kept an
    old worker per reload (about 7 MiB each) for the whole shutdown timeout. Old workers are
    now bounded in number: the oldest beyond ``max_old_workers`` end at once, and with
    them their connections; the newest connection stays up."""
    config = FrontConfig(state_dir=own_root / "s", http_port=0, stop_grace_s=0.5)
    front = Front(replace(config, max_old_workers=2))
    opened: list[Any] = []
    stack = contextlib.ExitStack()
    try:
        front.start()
        front.apply([Route("ws.localhost", (ws_echo,), public=True)])
        front.flush()
        assert front.pid is not None
        master = front.pid

        def old_workers() -> list[int]:
            family = nginx_family(master)[1:]
            return [p for p in family if "shutting down" in Path(f"/proc/{p}/cmdline").read_text()]

        for i in range(6):  # flapping, with a fresh WebSocket on each generation's workers
            sock = socket.create_connection(("127.0.0.1", front.http_port), timeout=5)
            url = f"ws://ws.localhost:{front.http_port}/"
            ws = stack.enter_context(ws_connect(url, sock=sock, proxy=None))
            opened.append(ws)
            ws.send("x")
            assert ws.recv(timeout=5) == "echo: x"
            front.apply(
                [
                    Route("ws.localhost", (ws_echo,), public=True),
                    Route(f"flap{i}.localhost", (), public=True),
                ]
            )
            front.flush()
            wait_until(lambda: len(old_workers()) <= 2, 5, "old workers to be bounded")
        # The first connections went with their workers; the last one still works.
        with pytest.raises(ConnectionClosed):
            opened[0].send("gone")
            opened[0].recv(timeout=5)
        opened[-1].send("still")
        assert opened[-1].recv(timeout=5) == "echo: still"
    finally:
        with contextlib.suppress(Exception):
            stack.close()
        front.stop()


def test_restart_on_the_same_state_dir_replaces_a_leftover_master(own_root: Path) -> None:
    config = FrontConfig(state_dir=own_root / "s", http_port=free_port(), stop_grace_s=0.5)
    crashed, fresh = Front(config), Front(config)
    try:
        crashed.start()  # stands for a front whose Ecliptic process died without stopping it
        old = crashed.pid
        assert old is not None
        fresh.start()
        assert fresh.pid is not None and fresh.pid != old and not alive(old)
        fresh.apply([Route("x.localhost", (), public=True)])
        fresh.flush()
        conn = http.client.HTTPConnection("127.0.0.1", fresh.http_port, timeout=5)
        conn.request("GET", "/", headers={"Host": "x.localhost"})
        assert conn.getresponse().status == 503
        conn.close()
    finally:
        fresh.stop()
        crashed.stop()


def test_auth_app_down_is_a_500_page_not_an_open_door(own_root: Path, ws_echo: int) -> None:
    config = FrontConfig(
        state_dir=own_root / "s", http_port=0, auth_upstream=f"127.0.0.1:{free_port()}"
    )
    front = Front(config)
    try:
        front.start()
        front.apply([Route("priv.localhost", (ws_echo,), public=False)])
        front.flush()
        conn = http.client.HTTPConnection("127.0.0.1", front.http_port, timeout=5)
        conn.request("GET", "/", headers={"Host": "priv.localhost", "Cookie": "ecl=x"})
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        assert resp.status == 500
        assert b"could not check your access" in body
    finally:
        front.stop()


def test_state_dir_must_be_reachable_by_workers(tmp_path: Path) -> None:
    front = Front(FrontConfig(state_dir=tmp_path / "front", http_port=0))
    try:
        with pytest.raises(FrontError, match="not searchable by others"):
            front.start()
    finally:
        front.stop()
    assert front.pid is None


def test_with_tls_plain_http_is_redirected_and_cookies_are_host_prefixed(
    own_root: Path, servers: Callable[..., Backend]
) -> None:
    """Issue 12: with TLS on, plain HTTP redirects to HTTPS (308, same host and path), and
    Ecliptic's cookies, __Host- prefixed, are still taken out of what a public service
    gets."""
    cert, key = self_signed(own_root, "localhost")
    with pytest.raises(InvalidFrontInput, match="tls_port"):
        FrontConfig(state_dir=own_root / "x", redirect_http=True)
    front = Front(
        FrontConfig(
            state_dir=own_root / "s",
            http_port=0,
            tls_port=0,
            tls_cert=cert,
            tls_key=key,
            redirect_http=True,
            auth_upstream=f"127.0.0.1:{free_port()}",
        )
    )
    backend = servers("pub")
    try:
        front.start()
        front.apply([Route("pub.localhost", (backend.port,), public=True)])
        front.flush()
        conn = http.client.HTTPConnection("127.0.0.1", front.http_port, timeout=5)
        conn.request("GET", "/lab/tree?x=1", headers={"Host": "pub.localhost"})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        assert resp.status == 308
        assert resp.getheader("Location") == f"https://pub.localhost:{front.tls_port}/lab/tree?x=1"
        assert backend.requests == 0
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", front.tls_port, timeout=5, context=context)
        cookies = (
            "ecliptic_gw=decoy; __Host-ecliptic_gw=a.b.c; keep=1; __Host-ecliptic_session=ecl_x;"
            " ecliptic_gw=d; ecliptic_gw_state=s"
        )
        conn.request("GET", "/", headers={"Host": "pub.localhost", "Cookie": cookies})
        resp = conn.getresponse()
        echo = json.loads(resp.read())
        conn.close()
        assert resp.status == 200
        assert header_values(echo, "Cookie") == ["keep=1"]
    finally:
        front.stop()


def test_a_front_whose_master_was_killed_alone_starts_again(
    own_root: Path, servers: Callable[..., Backend]
) -> None:
    """The attack's retest: killing the nginx master alone left its workers holding the
    ports, and every start after it failed with "Address already in use"."""
    backend = servers("after")
    front = Front(
        FrontConfig(state_dir=own_root / "s", http_port=0, auth_upstream=f"127.0.0.1:{free_port()}")
    )
    try:
        front.start()
        front.apply([Route("after.localhost", (backend.port,), public=True)])
        front.flush()
        master = front.pid
        assert master is not None
        workers = [p for p in nginx_family(master) if p != master]
        assert workers
        os.kill(master, signal.SIGKILL)
        wait_until(lambda: front.pid is None, 5, "the master to be gone")
        assert any(alive(p) for p in workers)  # the orphans still hold the port
        front.start()
        conn = http.client.HTTPConnection("127.0.0.1", front.http_port, timeout=5)
        conn.request("GET", "/", headers={"Host": "after.localhost"})
        assert conn.getresponse().status == 200
        conn.close()
        assert not any(alive(p) for p in workers)
    finally:
        front.stop()
