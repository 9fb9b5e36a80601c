"""A real ``ecliptic serve`` with its tunnel gateway, stock ssh clients, and small backends."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as ws_serve

from ecliptic.tunnel import tunneld
from tests.ports import free_port
from tests.prerequisites import needs

PASSWORD = "gateway-test-password"
NGINX = Path("/usr/sbin/nginx")

needs_gateway = needs(
    os.geteuid() == 0 and NGINX.exists() and tunneld.find_tunneld() is not None,
    "root, nginx and a built ecliptic-tunneld for the tunnel gateway (make setup)",
)


@dataclass
class Backend:
    """A little HTTP service standing in for a platform's: it records what reached it."""

    name: str
    port: int = 0
    seen: list[dict[str, Any]] = field(default_factory=list)
    health: int = 200
    server: ThreadingHTTPServer | None = None

    def start(self) -> Backend:
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if self.path == "/health":
                    body = b"ok" if backend.health < 500 else b"failing"
                    self._send(backend.health, body)
                    return
                backend.seen.append({"path": self.path, "headers": dict(self.headers.items())})
                payload = {"backend": backend.name, "headers": dict(self.headers.items())}
                self._send(200, json.dumps(payload).encode())

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class Served:
    """``ecliptic serve`` with its gateway: API client and ports."""

    proc: subprocess.Popen[bytes]
    api: httpx.Client
    url: str
    http_port: int
    ssh_port: int
    jump_port: int
    tmp: Path
    peer_port: int
    state: Path
    clients: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def front(self, host: str, path: str = "/", **headers: str) -> httpx.Response:
        """A request to the gateway's front for ``host``."""
        return httpx.get(
            f"http://127.0.0.1:{self.http_port}{path}",
            headers={"Host": host, **headers},
            timeout=10,
            follow_redirects=False,
        )

    def service(self, name: str, **body: Any) -> dict[str, Any]:
        r = self.api.post("/services", json={"name": name, **body})
        assert r.status_code == 201, r.text
        return dict(r.json())

    def keypair(self) -> tuple[Path, str]:
        path = self.tmp / f"key-{secrets.token_hex(4)}"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        return path, path.with_suffix(".pub").read_text().strip()

    def bind(self, token: str, **config: Any) -> Path:
        """A fresh key bound with ``token``; returns the private key path."""
        key, pub = self.keypair()
        r = httpx.post(
            f"{self.url}/api/v1/tunnels/associate",
            json={"token": token, "public_key": pub, **config},
        )
        assert r.status_code == 200, r.text
        time.sleep(0.5)  # replicas poll the store for new keys every 0.2 s
        return key

    def ssh_r(self, key: Path, target_port: int, *extra: str) -> subprocess.Popen[bytes]:
        """A stock OpenSSH reverse tunnel to ``127.0.0.1:target_port``."""
        proc = ssh_reverse(self.ssh_port, key, target_port, *extra)
        self.clients.append(proc)
        return proc

    def wait_for(
        self,
        host: str,
        predicate: Callable[[httpx.Response], bool],
        timeout: float = 15,
        **headers: str,
    ) -> httpx.Response:
        deadline = time.monotonic() + timeout
        while True:
            r = self.front(host, **headers)
            if predicate(r):
                return r
            if time.monotonic() > deadline:
                raise AssertionError(f"{host}: still {r.status_code} {r.text[:200]}")
            time.sleep(0.05)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@contextmanager
def serve_with_gateway(tmp_path: Path, **extra_env: str) -> Iterator[Served]:
    """Run ``ecliptic serve`` with its gateway on free ports until the block ends; stop every
    ssh client it started, then serve (SIGINT), and remove the gateway's state dir."""
    port, http_port, ssh_port, jump_port, peer_port = (free_port() for _ in range(5))
    state = Path("/run") / f"ecl-gw-test-{secrets.token_hex(4)}"
    env = dict(os.environ)
    env.update(
        ECLIPTIC_DATA_DIR=str(tmp_path / "data"),
        ECLIPTIC_PORT=str(port),
        ECLIPTIC_ADMIN_PASSWORD=PASSWORD,
        ECLIPTIC_WORKERS="1",
        ECLIPTIC_LOG_LEVEL="INFO",
        ECLIPTIC_GATEWAY="on",
        ECLIPTIC_GATEWAY_HTTP_PORT=str(http_port),
        ECLIPTIC_GATEWAY_SSH_PORT=str(ssh_port),
        ECLIPTIC_GATEWAY_SSH_HOST="127.0.0.1",
        ECLIPTIC_GATEWAY_JUMP_PORT=str(jump_port),
        ECLIPTIC_GATEWAY_PEER_PORT=str(peer_port),
        ECLIPTIC_GATEWAY_STATE_DIR=str(state),
        ECLIPTIC_OWNERS_DIR=str(tmp_path / "owners"),
    )
    env.pop("ECLIPTIC_DATABASE_URL", None)  # SQLite in the data dir, unless extra_env says
    env.update(extra_env)
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecliptic.cli.main", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    s: Served | None = None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("serve did not start:\n" + (tmp_path / "serve.log").read_text())
            time.sleep(0.05)
        token = httpx.post(
            f"{url}/api/v1/auth/login", json={"username": "admin", "password": PASSWORD}
        ).json()["secret"]
        api = httpx.Client(
            base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30
        )
        s = Served(proc, api, url, http_port, ssh_port, jump_port, tmp_path, peer_port, state)
        yield s
    finally:
        if s is not None:
            for c in s.clients:
                stop(c)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()
        shutil.rmtree(state, ignore_errors=True)
        if os.environ.get("ECLIPTIC_TEST_SHOW_LOG"):
            print((tmp_path / "serve.log").read_text())


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    with serve_with_gateway(tmp_path) as s:
        yield s


@pytest.fixture
def backends() -> Iterator[Callable[[str], Backend]]:
    started: list[Backend] = []

    def make(name: str) -> Backend:
        b = Backend(name).start()
        started.append(b)
        return b

    yield make
    for b in started:
        b.stop()


def ssh_reverse(ssh_port: int, key: Path, target_port: int, *extra: str) -> subprocess.Popen[bytes]:
    """A stock OpenSSH reverse tunnel to ``127.0.0.1:target_port`` via the endpoint on
    ``ssh_port`` (in its own session, so ``stop`` ends it)."""
    return subprocess.Popen(
        [
            "ssh", "-N", "-i", str(key), "-p", str(ssh_port),
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes",
            "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
            *extra,
            "-R", f"0:127.0.0.1:{target_port}", "tunnel@127.0.0.1",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip


@dataclass
class Replica:
    """``ecliptic gateway``: one more replica, sharing a served instance's database."""

    proc: subprocess.Popen[bytes]
    gateway_id: str
    http_port: int
    ssh_port: int
    state: Path
    log: Path
    peer_port: int
    clients: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def access_log(self) -> Path:
        """The replica's nginx access log (flushed within a second)."""
        return self.state / "front" / "logs" / "access.log"

    def front(self, host: str, path: str = "/", **headers: str) -> httpx.Response:
        """A request to this replica's front for ``host``."""
        return httpx.get(
            f"http://127.0.0.1:{self.http_port}{path}",
            headers={"Host": host, **headers},
            timeout=10,
            follow_redirects=False,
        )

    def ssh_r(self, key: Path, target_port: int) -> subprocess.Popen[bytes]:
        """A stock ``ssh -R`` tunnel to this replica."""
        proc = ssh_reverse(self.ssh_port, key, target_port)
        self.clients.append(proc)
        return proc

    def crash(self) -> None:
        """SIGKILL the replica's own process (its nginx ends with it; tunnels may linger)."""
        self.proc.kill()
        self.proc.wait(10)

    def hang(self) -> None:
        """SIGSTOP the replica's own process: its heartbeat stops, its nginx and tunnels
        stay (a hung replica; ``crash`` ends it afterwards)."""
        os.kill(self.proc.pid, signal.SIGSTOP)


def _kill_leftovers(state: Path) -> None:
    """End what a killed replica left running on ``state``: its nginx master (by its pid file)
    and any process started with a path under it; by pid, after checking each one's command."""
    marker = f"{state}/"
    pids: set[int] = set()
    with contextlib.suppress(OSError, ValueError):
        pids.add(int((state / "front" / "nginx.pid").read_text().strip()))
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if marker in Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace"):
                    pids.add(int(entry))
    for pid in pids:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if marker not in cmdline or pid == os.getpid():
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, OSError):
            if marker in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                os.kill(pid, signal.SIGKILL)


@contextmanager
def standalone_replica(served: Served, log_dir: Path, **extra_env: str) -> Iterator[Replica]:
    """Run ``ecliptic gateway`` on ``served``'s database and free ports until the block ends;
    then stop its ssh clients and the replica (SIGTERM), end whatever a crashed one left
    behind, and remove its state dir."""
    http_port, ssh_port, jump_port, peer_port = (free_port() for _ in range(4))
    state = Path("/run") / f"ecl-gw-test-{secrets.token_hex(4)}"
    log_path = log_dir / f"replica-{state.name}.log"
    env = dict(os.environ)
    env.update(
        ECLIPTIC_DATA_DIR=str(served.tmp / "data"),
        ECLIPTIC_PORTAL_URL=served.url,
        ECLIPTIC_LOG_LEVEL="INFO",
        ECLIPTIC_GATEWAY_HTTP_PORT=str(http_port),
        ECLIPTIC_GATEWAY_SSH_PORT=str(ssh_port),
        ECLIPTIC_GATEWAY_SSH_HOST="127.0.0.1",
        ECLIPTIC_GATEWAY_JUMP_PORT=str(jump_port),
        ECLIPTIC_GATEWAY_PEER_PORT=str(peer_port),
        ECLIPTIC_GATEWAY_STATE_DIR=str(state),
    )
    env.pop("ECLIPTIC_DATABASE_URL", None)  # served's SQLite file, unless extra_env says
    env.update(extra_env)
    log = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecliptic.cli.main", "gateway"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    replica: Replica | None = None
    try:
        deadline = time.monotonic() + 60
        while replica is None:
            found = re.search(r"Ecliptic gateway (\w+): services at", log_path.read_text())
            if found:
                replica = Replica(proc, found[1], http_port, ssh_port, state, log_path, peer_port)
            elif proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the replica did not start:\n" + log_path.read_text())
            else:
                time.sleep(0.05)
        yield replica
    finally:
        for c in replica.clients if replica is not None else []:
            stop(c)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        log.close()
        _kill_leftovers(state)
        shutil.rmtree(state, ignore_errors=True)
        if os.environ.get("ECLIPTIC_TEST_SHOW_LOG"):
            print(log_path.read_text())


def peer_request(
    port: int,
    head: str,
    *,
    state: Path | None,
    source: str | None = None,
    plain: bool = False,
) -> bytes:
    """Send ``head`` (an HTTP request head) to a peer listener on ``port`` and return the
    answer's first line. With ``state`` (a replica's state dir), over TLS presenting the
    instance's peer certificate as a replica would; without, over TLS with no certificate;
    ``plain``: no TLS at all."""
    where = (source, 0) if source else None
    raw = socket.create_connection(("127.0.0.1", port), timeout=5, source_address=where)
    try:
        if plain:
            conn: socket.socket = raw
        else:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            if state is not None:
                context.load_cert_chain(state / "peer.crt", state / "peer.key")
            conn = context.wrap_socket(raw, server_hostname="ecliptic-peer.invalid")
        conn.sendall(head.encode())
        got = b""
        while b"\r\n" not in got:
            chunk = conn.recv(4096)
            if not chunk:
                break
            got += chunk
        return got.split(b"\r\n", 1)[0]
    finally:
        raw.close()


@pytest.fixture
def ws_echo() -> Iterator[int]:
    """A WebSocket echo service on loopback (``echo: <message>``); its port."""

    def echo(conn: ServerConnection) -> None:
        with contextlib.suppress(Exception):
            for message in conn:
                conn.send("echo: " + (message if isinstance(message, str) else message.decode()))

    server = ws_serve(echo, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.socket.getsockname()[1])
    finally:
        server.shutdown()
