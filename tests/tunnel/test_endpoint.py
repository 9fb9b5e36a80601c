"""The SSH tunnel endpoint (``ecliptic-tunneld``) against a real stock OpenSSH client, on
loopback.

Every endpoint runs on its own event loop thread, with its own root-owned state directory
under /run; every ssh client runs in its own session. Fixtures stop all of them by pid and
check that no process of the endpoint outlived it, even when a test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import queue
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest

from ecliptic.errors import InvalidInput
from ecliptic.tunnel import tunneld
from ecliptic.tunnel.endpoint import EndpointConfig, TunnelConn, fingerprint
from ecliptic.tunnel.tunneld import TunneldEndpoint
from tests.ports import free_port
from tests.prerequisites import needs, require
from tests.waiting import wait_until

pytestmark = needs(
    shutil.which("ssh") is not None, "the OpenSSH client (apt-get install openssh-client)"
)
T = TypeVar("T")


# --- processes ----------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str, int, int] | None:
    """(comm, state, ppid, session id) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = text[text.index("(") + 1 : text.rindex(")")]
    rest = text[text.rindex(")") + 2 :].split()
    return comm, rest[0], int(rest[1]), int(rest[3])


def _all_pids() -> list[int]:
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]


def in_sessions(sids: set[int]) -> list[int]:
    """Pids of running processes in any of these sessions.

    Zombies are left out: sshd's monitor may exit before its child is reaped, and the orphan
    is then init's to reap (this VM's init does so lazily).
    """
    return [
        pid for pid in _all_pids() if (st := _proc_stat(pid)) and st[3] in sids and st[1] != "Z"
    ]


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """End a process we started (by its pid), even a stopped one."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGCONT)
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(3)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(3)


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- the endpoint on its own loop thread ----------------------------------------------------


class Gateway:
    """The endpoint on its own event loop thread; its up/down callbacks feed a queue."""

    def __init__(self, config: EndpointConfig, *, failing_callbacks: bool = False) -> None:
        self.config = config
        self.events: queue.Queue[tuple[str, TunnelConn, float]] = queue.Queue()
        self.sids: set[int] = set()
        self.failing_callbacks = failing_callbacks
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="ecl-sshd-loop")
        self.thread.start()
        self.endpoint = TunneldEndpoint(config, on_up=self._up, on_down=self._down)

    def _up(self, conn: TunnelConn) -> None:
        self.events.put(("up", conn, time.monotonic()))
        if self.failing_callbacks:
            raise RuntimeError("on_up blew up")

    def _down(self, conn: TunnelConn) -> None:
        self.events.put(("down", conn, time.monotonic()))
        if self.failing_callbacks:
            raise RuntimeError("on_down blew up")

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run a coroutine on the endpoint's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Call an endpoint method on its loop thread."""

        async def run() -> T:
            return fn(*args)

        return self.run(run())

    def start(self) -> Gateway:
        self.run(self.endpoint.start())
        return self

    @property
    def port(self) -> int:
        return self.call(lambda: self.endpoint.port)

    def wait(self, kind: str, timeout: float = 10.0) -> tuple[TunnelConn, float]:
        """The next event, which must be ``kind``; returns the tunnel and when it came."""
        try:
            got, conn, at = self.events.get(timeout=timeout)
        except queue.Empty:
            pytest.fail(f"no tunnel {kind} event within {timeout} s")
        assert got == kind, f"expected a tunnel {kind} event, got {got} for {conn}"
        self.sids.add(conn.pid)
        return conn, at

    def assert_quiet(self, seconds: float = 0.0) -> None:
        """No up or down event happened (waiting up to ``seconds`` for one)."""
        try:
            got, conn, _ = self.events.get(timeout=seconds) if seconds else self.events.get_nowait()
        except queue.Empty:
            return
        pytest.fail(f"unexpected tunnel {got} event: {conn}")

    def close(self) -> None:
        """Stop the endpoint and its loop thread."""
        try:
            if self.loop.is_running():
                self.run(self.endpoint.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def make_gateway() -> Iterator[Callable[..., Gateway]]:
    """Start endpoints (state dir /run/ecl-gw-<hex>); afterwards stop them and check for leaks."""
    require(tunneld.find_tunneld() is not None, "a built ecliptic-tunneld (make setup)")
    made: list[tuple[Gateway, Path]] = []

    def make(
        keys: list[str] | None = None, *, failing_callbacks: bool = False, **overrides: Any
    ) -> Gateway:
        state = Path(f"/run/ecl-gw-{secrets.token_hex(4)}")
        settings: dict[str, Any] = {
            "state_dir": state,
            "host_key": state / "host_ed25519",
            "port": 0,
            **overrides,
        }
        gw = Gateway(EndpointConfig(**settings), failing_callbacks=failing_callbacks)
        made.append((gw, Path(settings["state_dir"])))
        gw.start()
        if keys is not None:
            gw.call(gw.endpoint.set_authorized_keys, keys)
        return gw

    try:
        yield make
    finally:
        leaked: list[int] = []
        for gw, state in made:
            try:
                gw.close()
            finally:
                for pid in in_sessions(gw.sids):
                    leaked.append(pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                shutil.rmtree(state, ignore_errors=True)
        assert not leaked, f"endpoint processes outlived their endpoint: {leaked}"


# --- keys, backend, clients -----------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """Client key pairs: alpha and beta get bound in tests, evil never."""

    dir: Path

    def private(self, name: str) -> Path:
        return self.dir / name

    def public(self, name: str) -> str:
        return (self.dir / f"{name}.pub").read_text().strip()

    def fp(self, name: str) -> str:
        return fingerprint(self.public(name))


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """ed25519 key pairs alpha, beta, evil, and probe/victim.pub: alpha's public half only."""
    d = tmp_path_factory.mktemp("ecl-sshd-keys")
    for name in ("alpha", "beta", "evil"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test", "-f", d / name],
            check=True,
        )
    (d / "probe").mkdir()
    victim = d / "probe" / "victim.pub"
    victim.write_text((d / "alpha.pub").read_text())
    victim.chmod(0o600)
    return Keys(d)


class Backend(ThreadingHTTPServer):
    """A tiny HTTP/1.1 keep-alive server on an ephemeral loopback port that counts requests."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _BackendHandler)
        self.hits = 0
        self.lock = threading.Lock()

    @property
    def port(self) -> int:
        return int(self.server_address[1])


class _BackendHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Backend

    def do_GET(self) -> None:
        with self.server.lock:
            self.server.hits += 1
        # /16k: big enough that without TCP_NODELAY on the endpoint ~1 in 6 requests stalls
        body = b"x" * 16384 if self.path == "/16k" else b"backend-ok\n"
        head = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nContent-Type: text/plain\r\n\r\n"
        self.wfile.write(head.encode() + body)  # one write: no Nagle stall on the backend side

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def backend() -> Iterator[Backend]:
    """The service behind the tunnel."""
    server = Backend()
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="ecl-sshd-backend"
    )
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def http_get(port: int, timeout: float = 5.0) -> str:
    """GET / on 127.0.0.1:port; the response body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()


KNOWN_HOSTS_OFF = ("-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null")


def ssh_argv(
    port: int,
    identities: list[Path],
    *args: str,
    known_hosts: tuple[str, ...] = KNOWN_HOSTS_OFF,
    user: str = "tunnel",
    command: tuple[str, ...] = (),
) -> list[str]:
    """A stock ssh command line against the endpoint (no user config, no agent)."""
    argv = ["ssh", "-F", "/dev/null", "-p", str(port), *known_hosts]
    argv += ["-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes"]
    argv += ["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "ConnectTimeout=5"]
    for identity in identities:
        argv += ["-i", str(identity)]
    return [*argv, *args, f"{user}@127.0.0.1", *command]


@dataclass
class Client:
    """A long-running ssh client in its own session, its stdout+stderr in a file."""

    proc: subprocess.Popen[bytes]
    log: Path
    started: float

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait(self, timeout: float = 10.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"ssh still running after {timeout} s: {self.output()}")


@dataclass
class Clients:
    """Starts ssh clients; the fixture ends every one of them by pid."""

    dir: Path
    started: list[Client] = field(default_factory=list)

    def start(self, argv: list[str]) -> Client:
        log = self.dir / f"ssh-{len(self.started)}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a SIGSTOPped client must not get SIGHUP+SIGCONT
            )
        client = Client(proc, log, time.monotonic())
        self.started.append(client)
        return client

    def run(self, argv: list[str], timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
        """Run a short ssh command to completion."""
        return subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            start_new_session=True,
        )


@pytest.fixture
def clients(tmp_path: Path) -> Iterator[Clients]:
    """ssh clients, all stopped at the end."""
    made = Clients(tmp_path)
    try:
        yield made
    finally:
        for client in made.started:
            stop_process(client.proc)


def forward(backend: Backend) -> tuple[str, ...]:
    """``-N -R 0:localhost:<backend>``: the one thing a tunnel client may do."""
    return ("-N", "-R", f"0:localhost:{backend.port}")


# --- the tunnel life cycle ------------------------------------------------------------------


def test_bound_key_brings_a_tunnel_up_that_carries_http_and_goes_down_with_the_client(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    gw = make_gateway([keys.public("alpha")])
    client = clients.start(ssh_argv(gw.port, [keys.private("alpha")], *forward(backend)))

    up, _ = gw.wait("up")
    assert up.fingerprint == keys.fp("alpha")
    assert up.client.startswith("127.0.0.1:")
    assert up.pid > 0 and 1024 <= up.port <= 65535
    told = f"Allocated port {up.port} for remote forward"
    wait_until(lambda: told in client.output(), 5, "the client to be told its port")
    assert http_get(up.port) == "backend-ok\n"
    assert backend.hits == 1
    assert gw.call(gw.endpoint.connections) == [up]

    client.proc.terminate()
    down, _ = gw.wait("down")
    assert down == up
    assert gw.call(gw.endpoint.connections) == []
    assert not listening(up.port)


def test_window_is_given_back_in_halves_not_per_response(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    """Small responses cost the client no extra packet each: the endpoint gives a channel's
    window back in batches, as sshd does (x/crypto since v0.17 defers the adjustment until
    three packets' worth or half the window is consumed; v0.4 sent one after every read)."""
    gw = make_gateway([keys.public("alpha")])
    client = clients.start(ssh_argv(gw.port, [keys.private("alpha")], "-vv", *forward(backend)))
    up, _ = gw.wait("up")
    conn = http.client.HTTPConnection("127.0.0.1", up.port, timeout=5)
    try:
        for _ in range(40):  # one channel: the front's keep-alive connection
            conn.request("GET", "/16k")
            assert len(conn.getresponse().read()) == 16384
    finally:
        conn.close()
    assert backend.hits == 40
    adjusts = client.output().count("rcvd adjust")  # sshd: about one per 100 KiB; tunneld: none
    assert adjusts <= 8, f"{adjusts} window adjustments for 40 responses of 16 KiB"


def test_unknown_key_is_refused(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    gw = make_gateway([keys.public("alpha")])
    result = clients.run(ssh_argv(gw.port, [keys.private("evil")], *forward(backend)))
    assert result.returncode == 255
    assert "Permission denied (publickey)" in result.stderr
    gw.assert_quiet()


@pytest.mark.parametrize(
    ("options", "command", "success_marker"),
    [
        (("-tt",), (), "This account is currently not available"),
        ((), ("id",), "uid="),
        (("-T",), ("echo PWNED",), "PWNED"),
        (("-s",), ("sftp",), "sftp"),
        (("-A",), ("echo SOCK=$SSH_AUTH_SOCK",), "SOCK="),
        (("-X",), ("echo DISPLAY=$DISPLAY",), "DISPLAY="),
        (("-w", "any", "-N"), (), "tun"),
        (("-N", "-R", "/run/ecl-gw-x.sock:localhost:80"), (), "sock"),
        (("-W", "127.0.0.1:{backend}"), (), "backend-ok"),
    ],
    ids=["shell", "exec", "exec-notty", "sftp", "agent", "x11", "tun", "unix-listener", "stdio"],
)
def test_forbidden_session_or_forward_does_not_succeed(
    make_gateway: Callable[..., Gateway],
    keys: Keys,
    clients: Clients,
    backend: Backend,
    options: tuple[str, ...],
    command: tuple[str, ...],
    success_marker: str,
) -> None:
    gw = make_gateway([keys.public("alpha")])
    options = tuple(a.replace("{backend}", str(backend.port)) for a in options)
    result = clients.run(ssh_argv(gw.port, [keys.private("alpha")], *options, command=command))
    assert result.returncode == 255, result
    assert success_marker not in result.stdout, result.stdout
    assert backend.hits == 0
    gw.assert_quiet()


def test_other_users_and_passwords_are_refused(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    gw = make_gateway([keys.public("alpha")])
    as_root = clients.run(
        ssh_argv(gw.port, [keys.private("alpha")], *forward(backend), user="root")
    )
    assert as_root.returncode == 255 and "Permission denied" in as_root.stderr
    by_password = clients.run(
        ssh_argv(gw.port, [], "-o", "PubkeyAuthentication=no", *forward(backend))
    )
    assert by_password.returncode == 255 and "Permission denied" in by_password.stderr
    gw.assert_quiet()


def _socks5_connect(proxy_port: int, target_port: int) -> bytes:
    """Ask a SOCKS5 proxy for 127.0.0.1:target_port and send a GET; what came back."""
    with socket.create_connection(("127.0.0.1", proxy_port), timeout=5) as s:
        s.sendall(b"\x05\x01\x00")
        if s.recv(2) != b"\x05\x00":
            return b""
        s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") + target_port.to_bytes(2))
        try:
            reply = s.recv(10)
            if len(reply) < 2 or reply[1] != 0:
                return b""
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return s.recv(4096)
        except OSError:
            return b""


def _raw_get(port: int) -> bytes:
    """Send a GET to 127.0.0.1:port; whatever came back (b"" when the connection dropped)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        try:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            return s.recv(4096)
        except OSError:
            return b""


@pytest.mark.parametrize("kind", ["-L", "-D"])
def test_local_and_dynamic_forwards_carry_nothing(
    make_gateway: Callable[..., Gateway],
    keys: Keys,
    clients: Clients,
    backend: Backend,
    kind: str,
) -> None:
    gw = make_gateway([keys.public("alpha")])
    local = free_port()
    spec = f"{local}:127.0.0.1:{backend.port}" if kind == "-L" else str(local)
    client = clients.start(ssh_argv(gw.port, [keys.private("alpha")], "-N", kind, spec))
    wait_until(lambda: listening(local), 10, f"ssh {kind} to listen on {local}")

    got = _raw_get(local) if kind == "-L" else _socks5_connect(local, backend.port)
    assert b"backend-ok" not in got
    assert backend.hits == 0
    assert "administratively prohibited" in client.output()
    gw.assert_quiet()


# --- which key is believed --------------------------------------------------------------------


@pytest.mark.parametrize("attacker_bound", [True, False])
def test_a_key_offered_but_not_held_is_never_the_tunnel_key(
    make_gateway: Callable[..., Gateway],
    keys: Keys,
    clients: Clients,
    backend: Backend,
    attacker_bound: bool,
) -> None:
    attacker = "beta" if attacker_bound else "evil"
    gw = make_gateway([keys.public("alpha"), keys.public("beta")])
    victim = keys.dir / "probe" / "victim.pub"
    argv = ssh_argv(gw.port, [victim, keys.private(attacker)], "-v", *forward(backend))
    client = clients.start(argv)

    if attacker_bound:
        up, _ = gw.wait("up")
        assert up.fingerprint == keys.fp("beta") != keys.fp("alpha")
    else:
        assert client.wait() == 255
        gw.assert_quiet()
    # The probe worked: sshd did say it would accept the victim's key.
    assert f"Server accepts key: {victim}" in client.output()


def test_a_fixed_listen_port_ends_the_connection(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    gw = make_gateway([keys.public("alpha")])
    squat = free_port()
    client = clients.start(
        ssh_argv(gw.port, [keys.private("alpha")], "-N", "-R", f"{squat}:localhost:{backend.port}")
    )
    assert client.wait() == 255
    gw.assert_quiet()
    assert not listening(squat)


def test_only_the_first_forward_of_a_connection_is_the_tunnel(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    gw = make_gateway([keys.public("alpha")])
    argv = ssh_argv(gw.port, [keys.private("alpha")], *forward(backend))
    argv[-1:-1] = ["-R", f"0:127.0.0.1:{backend.port}"]  # ssh drops a duplicate -R
    client = clients.start(argv)
    up, _ = gw.wait("up")
    # A second forward is refused outright (and, with ExitOnForwardFailure, ends it).
    assert client.wait() == 255
    assert "remote port forwarding failed" in client.output()
    assert gw.wait("down")[0] == up


# --- revocation, keepalive, deadlines, limits -----------------------------------------------


def test_revoked_key_loses_its_tunnel_and_cannot_reconnect(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    gw = make_gateway([keys.public("alpha"), keys.public("beta")])
    client = clients.start(ssh_argv(gw.port, [keys.private("alpha")], *forward(backend)))
    up, _ = gw.wait("up")

    gw.call(gw.endpoint.set_authorized_keys, [keys.public("beta")])
    assert gw.call(gw.endpoint.kill_fingerprint, keys.fp("alpha")) == 1
    down, _ = gw.wait("down")
    assert down.id == up.id
    assert client.wait() == 255
    assert gw.call(gw.endpoint.connections) == []
    assert not listening(up.port)

    again = clients.run(ssh_argv(gw.port, [keys.private("alpha")], *forward(backend)))
    assert again.returncode == 255 and "Permission denied" in again.stderr
    gw.assert_quiet()


def test_kill_ends_one_connection(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    gw = make_gateway([keys.public("alpha")])
    first = clients.start(ssh_argv(gw.port, [keys.private("alpha")], *forward(backend)))
    one, _ = gw.wait("up")
    second = clients.start(ssh_argv(gw.port, [keys.private("alpha")], *forward(backend)))
    two, _ = gw.wait("up")

    assert gw.call(gw.endpoint.kill, one.id) is True
    assert gw.wait("down")[0] == one
    assert first.wait() == 255
    assert second.proc.poll() is None
    assert gw.call(gw.endpoint.connections) == [two]
    assert gw.call(gw.endpoint.kill, "no-such-id") is False


def _frozen_client_dropped_after(
    gw: Gateway, keys: Keys, clients: Clients, backend: Backend
) -> float:
    """Freeze (SIGSTOP) a client with a tunnel up; seconds until the endpoint drops it."""
    client = clients.start(ssh_argv(gw.port, [keys.private("alpha")], *forward(backend)))
    up, _ = gw.wait("up")
    assert http_get(up.port) == "backend-ok\n"
    os.kill(client.proc.pid, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        down, at = gw.wait("down", timeout=60)
    finally:
        os.kill(client.proc.pid, signal.SIGCONT)
    assert down.id == up.id
    return at - frozen_at


def test_frozen_client_is_dropped_by_keepalive(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    gw = make_gateway([keys.public("alpha")], keepalive_interval_s=1, keepalive_count=1)
    took = _frozen_client_dropped_after(gw, keys, clients, backend)
    assert took <= 10, f"dropped after {took:.1f} s at interval 1 s, count 1"


@pytest.mark.slow
def test_frozen_client_is_dropped_by_keepalive_at_the_shipped_settings(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    """With the settings a gateway ships with, a frozen client's tunnel goes within 30 s
    (so a dead platform leaves the routing table soon), but not in the first seconds of
    silence (a slow, live client keeps its tunnel)."""
    shipped = EndpointConfig(state_dir=Path("/nonexistent"), host_key=Path("/nonexistent"))
    gw = make_gateway([keys.public("alpha")])
    assert (gw.config.keepalive_interval_s, gw.config.keepalive_count) == (
        shipped.keepalive_interval_s,
        shipped.keepalive_count,
    )
    took = _frozen_client_dropped_after(gw, keys, clients, backend)
    assert 12 <= took <= 30, f"dropped after {took:.1f} s at the shipped settings"


def test_endpoint_asks_for_keepalives_only_when_the_client_is_silent(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    """A client that keeps its own pace (ServerAliveInterval) gets no keepalives; a quiet one
    does. Sending nothing to a talking client keeps the send queue empty, so after a network
    cut requests do not wait behind a keepalive stuck in TCP's retransmission backoff."""
    gw = make_gateway([keys.public("alpha")], keepalive_interval_s=1, keepalive_count=1)
    chatty = clients.start(
        ssh_argv(
            gw.port, [keys.private("alpha")], "-vvv", "-o", "ServerAliveInterval=1",
            *forward(backend),
        )
    )  # fmt: skip
    quiet = clients.start(ssh_argv(gw.port, [keys.private("alpha")], "-vvv", *forward(backend)))
    gw.wait("up")
    gw.wait("up")
    # The endpoint asks after ~2 s of silence and gives up on a request unanswered for as
    # long again: the quiet client is asked several times and, answering, stays.
    asked = "client_input_global_request: rtype keepalive@openssh.com"
    wait_until(lambda: quiet.output().count(asked) >= 3, 15, "the quiet client asked 3 times")
    assert asked not in chatty.output()
    assert chatty.proc.poll() is None and quiet.proc.poll() is None
    gw.assert_quiet()


def test_authenticated_connection_without_forward_is_ended(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients
) -> None:
    gw = make_gateway([keys.public("alpha")], forward_timeout_s=1)
    client = clients.start(ssh_argv(gw.port, [keys.private("alpha")], "-N"))
    assert client.wait(timeout=8) == 255
    gw.assert_quiet()


def _greeting(port: int, held: list[socket.socket]) -> bytes:
    """Connect to the endpoint and read its first bytes (b"" when it reset the connection).

    The socket stays open (in ``held``) so its sshd keeps counting against the limits.
    """
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except ConnectionResetError:  # the reset can beat connect()'s own completion check
        return b""
    held.append(s)
    try:
        return s.recv(64)
    except ConnectionResetError:
        return b""


def _admits(port: int) -> bool:
    """Whether the endpoint greets a new connection (which is closed again at once)."""
    held: list[socket.socket] = []
    try:
        return _greeting(port, held) != b""
    finally:
        for s in held:
            s.close()


def test_unauthenticated_connections_per_address_are_capped_at_accept(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    gw = make_gateway([keys.public("alpha")], max_unauthenticated_per_ip=2)
    held: list[socket.socket] = []
    try:
        greetings = [_greeting(gw.port, held) for _ in range(3)]
    finally:
        for s in held:
            s.close()
    assert greetings[0].startswith(b"SSH-2.0-") and greetings[1].startswith(b"SSH-2.0-")
    assert greetings[2] == b""  # reset at accept

    wait_until(lambda: _admits(gw.port), 5, "the endpoint to admit again")
    clients.start(ssh_argv(gw.port, [keys.private("alpha")], *forward(backend)))
    gw.wait("up")


def test_connections_beyond_max_connections_are_closed_at_accept(
    make_gateway: Callable[..., Gateway],
) -> None:
    gw = make_gateway([], max_connections=1)
    held: list[socket.socket] = []
    try:
        assert _greeting(gw.port, held).startswith(b"SSH-2.0-")
        assert _greeting(gw.port, held) == b""
    finally:
        for s in held:
            s.close()


# --- host key, ciphers, files ---------------------------------------------------------------


def test_host_key_line_pins_the_endpoint(
    make_gateway: Callable[..., Gateway],
    keys: Keys,
    clients: Clients,
    backend: Backend,
    tmp_path: Path,
) -> None:
    gw = make_gateway([keys.public("alpha")])
    line = gw.call(lambda: gw.endpoint.host_key_line)
    assert line.startswith("ssh-ed25519 AAAA") and len(line.split()) == 2
    assert (gw.config.host_key.stat().st_mode & 0o777) == 0o600

    pinned = tmp_path / "known_hosts"
    pinned.write_text(f"[127.0.0.1]:{gw.port} {line}\n")
    strict = ("-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={pinned}")
    clients.start(ssh_argv(gw.port, [keys.private("alpha")], *forward(backend), known_hosts=strict))
    gw.wait("up")

    wrong = tmp_path / "wrong_hosts"
    wrong.write_text(f"[127.0.0.1]:{gw.port} {keys.public('beta')}\n")
    strict_wrong = ("-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={wrong}")
    refused = clients.run(
        ssh_argv(gw.port, [keys.private("alpha")], *forward(backend), known_hosts=strict_wrong)
    )
    assert refused.returncode == 255 and "Host key verification failed" in refused.stderr


def test_only_aes_gcm_is_offered(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients
) -> None:
    gw = make_gateway([keys.public("alpha")])
    chacha = clients.run(
        ssh_argv(gw.port, [keys.private("alpha")], "-c", "chacha20-poly1305@openssh.com", "-N")
    )
    assert chacha.returncode == 255 and "no matching cipher" in chacha.stderr
    stock = clients.run(ssh_argv(gw.port, [keys.private("alpha")], "-v", command=("true",)))
    assert "kex: server->client cipher: aes128-gcm@openssh.com" in stock.stderr


def test_stop_ends_live_tunnels_and_keeps_the_state_dir(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    gw = make_gateway([keys.public("alpha")])
    client = clients.start(ssh_argv(gw.port, [keys.private("alpha")], *forward(backend)))
    up, _ = gw.wait("up")
    gw.run(gw.endpoint.stop())
    assert gw.wait("down")[0] == up
    assert client.wait() == 255
    assert not listening(up.port)
    assert gw.config.state_dir.is_dir()


def test_failing_callbacks_do_not_break_the_endpoint(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    gw = make_gateway([keys.public("alpha")], failing_callbacks=True)
    first = clients.start(ssh_argv(gw.port, [keys.private("alpha")], *forward(backend)))
    up, _ = gw.wait("up")
    assert http_get(up.port) == "backend-ok\n"
    first.proc.terminate()
    gw.wait("down")
    clients.start(ssh_argv(gw.port, [keys.private("alpha")], *forward(backend)))
    again, _ = gw.wait("up")
    assert gw.call(gw.endpoint.connections) == [again]


# --- speed (recorded, and the Nagle stall ruled out) ----------------------------------------


def test_time_to_up_and_request_latency_through_the_tunnel(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    gw = make_gateway([keys.public("alpha")])
    client = clients.start(ssh_argv(gw.port, [keys.private("alpha")], *forward(backend)))
    up, at = gw.wait("up")

    conn = http.client.HTTPConnection("127.0.0.1", up.port, timeout=5)
    times = []
    try:
        for _ in range(200):
            t0 = time.perf_counter()
            conn.request("GET", "/16k")
            body = conn.getresponse().read()
            times.append(time.perf_counter() - t0)
            assert len(body) == 16384
    finally:
        conn.close()
    cuts = statistics.quantiles(times, n=100)
    p50, p99 = statistics.median(times), cuts[98]
    print(
        f"\nssh start -> on_up {1000 * (at - client.started):.0f} ms; 200 keep-alive 16 KiB GETs "
        f"p50 {1000 * p50:.2f} ms p99 {1000 * p99:.2f} ms max {1000 * max(times):.2f} ms"
    )
    assert p99 < 0.020  # a 40 ms Nagle/delayed-ACK stall would show here


# --- pure parts -----------------------------------------------------------------------------


def test_fingerprint_matches_ssh_keygen(tmp_path: Path) -> None:
    for kind, bits in (("ed25519", []), ("ecdsa", ["-b", "256"]), ("rsa", ["-b", "2048"])):
        path = tmp_path / kind
        subprocess.run(
            ["ssh-keygen", "-q", "-t", kind, *bits, "-N", "", "-C", "x y", "-f", path], check=True
        )
        listed = subprocess.run(
            ["ssh-keygen", "-l", "-E", "sha256", "-f", f"{path}.pub"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[1]
        assert fingerprint((tmp_path / f"{kind}.pub").read_text()) == listed
    with pytest.raises(InvalidInput):
        fingerprint("ssh-ed25519 not-base64!")


def test_prerequisites_name_what_to_fix(tmp_path: Path) -> None:
    assert tunneld.check_prerequisites("tunnel") == []
    no_user = tunneld.check_prerequisites("ecl-no-such-user")
    assert len(no_user) == 1 and "does not exist" in no_user[0]
    unbuilt = tunneld.check_prerequisites("tunnel", tunneld_path=str(tmp_path / "none"))
    assert len(unbuilt) == 1 and "make setup" in unbuilt[0]


def test_a_crashed_tunneld_is_restarted_and_its_clients_come_back(
    make_gateway: Callable[..., Gateway], keys: Keys, clients: Clients, backend: Backend
) -> None:
    gw = make_gateway([keys.public("alpha")])
    port = gw.port
    client = clients.start(ssh_argv(port, [keys.private("alpha")], *forward(backend)))
    up, _ = gw.wait("up")
    os.kill(up.pid, signal.SIGKILL)  # our own child, by pid

    assert gw.wait("down")[0] == up
    assert client.wait() == 255
    assert not listening(up.port)
    clients.start(ssh_argv(port, [keys.private("alpha")], *forward(backend)))
    again, _ = gw.wait("up", timeout=10)
    assert again.pid != up.pid and gw.port == port
    assert http_get(again.port) == "backend-ok\n"
    gw.sids.add(up.pid)


def test_tunneld_ends_every_tunnel_when_its_supervisor_goes_away(
    keys: Keys, clients: Clients, backend: Backend, tmp_path: Path
) -> None:
    """The daemon reads end-of-file on stdin when the process that started it dies."""
    exe = tunneld.find_tunneld()
    require(exe is not None, "a built ecliptic-tunneld (make setup)")
    assert exe is not None
    host_key = tmp_path / "host"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", host_key], check=True)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    config = {
        "host_key": host_key.read_text(),
        "user": "tunnel",
        "keepalive_interval_s": 4,
        "keepalive_count": 2,
        "login_grace_s": 20,
        "forward_timeout_s": 30,
        "max_connections": 10,
        "max_unauthenticated_per_ip": 10,
        "keys": [keys.public("alpha")],
        "listen_fd": listener.fileno(),
    }
    daemon = subprocess.Popen(
        [exe],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        pass_fds=[listener.fileno()],
        start_new_session=True,
    )
    listener.close()
    try:
        assert daemon.stdin is not None and daemon.stdout is not None
        daemon.stdin.write(json.dumps(config).encode() + b"\n")
        daemon.stdin.flush()
        assert json.loads(daemon.stdout.readline()) == {"ev": "ready"}
        client = clients.start(ssh_argv(port, [keys.private("alpha")], *forward(backend)))
        up = json.loads(daemon.stdout.readline())
        assert up["ev"] == "up" and up["fp"] == keys.fp("alpha")
        assert http_get(up["port"]) == "backend-ok\n"

        daemon.stdin.close()  # what the kernel does when the supervisor dies
        assert daemon.wait(5) == 0
        assert client.wait() == 255
        assert not listening(up["port"]) and not listening(port)
    finally:
        stop_process(daemon)


def test_tunneld_refuses_a_configuration_it_does_not_know(tmp_path: Path) -> None:
    exe = tunneld.find_tunneld()
    require(exe is not None, "a built ecliptic-tunneld (make setup)")
    assert exe is not None
    bad = subprocess.run(
        [exe], input='{"user": "tunnel", "colour": "blue"}\n', capture_output=True, text=True
    )
    assert bad.returncode == 2 and 'unknown field "colour"' in bad.stderr
