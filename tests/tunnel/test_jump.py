"""The SSH jump host, driven by the stock OpenSSH client (``-W`` and ``-J``).

Behind it: an echo service, and a real sshd standing in for a login node.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import select
import shutil
import socket
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ecliptic.tunnel.jump import (
    MAX_UNAUTHENTICATED_PER_IP,
    JumpHost,
    JumpPrincipal,
    JumpRefused,
)
from tests.prerequisites import require
from tests.tunnel.test_client import MADE, Sshd, free_port, wait_for
from tests.tunnel.test_client import nothing_leaks as nothing_leaks


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(b"echo:" + data)


class EchoServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


@dataclass
class Keys:
    """Key files of the people in these tests."""

    dir: Path

    def path(self, who: str) -> Path:
        return self.dir / who

    def line(self, who: str) -> str:
        return " ".join(Path(f"{self.path(who)}.pub").read_text().split()[:2])


class Jump:
    """A JumpHost in its own event loop thread, and what it was asked."""

    def __init__(
        self, tmp: Path, keys: Keys, services: dict[str, int], revalidate_s: float = 5.0
    ) -> None:
        self.keys = keys
        self.services = services
        self.authenticated: list[tuple[str, str]] = []
        self.store_down = False
        self.denied: set[tuple[str, str]] = set()
        """(user, service) pairs taken off the access list."""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.principals = {
            keys.line("alice"): JumpPrincipal("u-alice", "alice"),
            keys.line("carol"): JumpPrincipal("u-carol", "carol"),
            keys.line("mallory"): JumpPrincipal("u-mallory", "mallory"),
        }
        self.host_key = tmp / "jump" / "hostkey"
        self.host = JumpHost(
            bind_host="127.0.0.1",
            port=0,
            host_key=self.host_key,
            authenticate=self.authenticate,
            resolve=self.resolve,
            revalidate_s=revalidate_s,
        )
        self.call(self.host.start())

    def call(self, coro: Any) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout=15)

    def authenticate(self, username: str, key_line: str) -> JumpPrincipal | None:
        self.authenticated.append((username, key_line))
        if username == "boom" or self.store_down:
            raise RuntimeError("database is down")
        found = self.principals.get(" ".join(key_line.split()[:2]))
        return found if found is not None and found.username == username else None

    def resolve(self, who: JumpPrincipal, host: str, port: int) -> int:
        name = host.removesuffix(".tun.test")
        if name == "whoami":
            raise JumpRefused(f"you are {who.username}")
        if name == "boom":
            raise RuntimeError("database is down")
        if name not in self.services:
            raise JumpRefused(f"no service '{name}'")
        if who.username == "carol" or (who.username, name) in self.denied:
            raise JumpRefused(f"{who.username} may not reach {name}")
        if port != 22:
            raise JumpRefused(f"{name} is reachable on port 22 only")
        return self.services[name]

    def close(self) -> None:
        try:
            self.call(self.host.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    MADE.append(str(tmp_path))  # the leak check looks for processes still using it
    k = Keys(tmp_path / "keys")
    k.dir.mkdir()
    for who in ("alice", "bob", "carol", "mallory"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(k.path(who))], check=True
        )
    return k


@pytest.fixture
def echo() -> Iterator[int]:
    server = EchoServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def jump(tmp_path: Path, keys: Keys, echo: int) -> Iterator[Jump]:
    j = Jump(tmp_path, keys, {"k3j9x2": echo, "down": free_port()})
    try:
        yield j
    finally:
        j.close()


def ssh_argv(port: int, key: Path, *args: str) -> list[str]:
    """The stock client's command line with key ``key``, against the jump host on ``port``."""
    options = ["IdentitiesOnly=yes", "BatchMode=yes", "StrictHostKeyChecking=no"]
    options.append("UserKnownHostsFile=/dev/null")
    argv = ["ssh", "-i", str(key), "-p", str(port)]
    for o in options:
        argv += ["-o", o]
    return [*argv, *args]


def ssh(
    jump: Jump,
    who: str,
    *args: str,
    user: str | None = None,
    command: tuple[str, ...] = (),
    stdin: bytes = b"",
) -> subprocess.CompletedProcess[bytes]:
    """The stock client, signed in to the jump host as ``who`` with ``who``'s key."""
    dest = f"{user or who}@127.0.0.1"
    return subprocess.run(
        ssh_argv(jump.host.port, jump.keys.path(who), *args, dest, *command),
        input=stdin,
        capture_output=True,
        timeout=20,
        env={**os.environ, "HOME": str(jump.host_key.parent)},
    )


def err(res: subprocess.CompletedProcess[bytes]) -> str:
    return res.stderr.decode(errors="replace")


def test_authorised_user_reaches_the_service_over_aes_gcm(jump: Jump) -> None:
    res = ssh(jump, "alice", "-v", "-W", "k3j9x2:22", stdin=b"hello\n")
    assert res.returncode == 0, err(res)
    assert res.stdout == b"echo:hello\n"
    # OpenSSH prefers chacha20, then aes-ctr; neither is offered, so it settles on aes-gcm
    assert re.search(r"cipher: aes128-gcm@openssh.com", err(res))
    # the jump host asked who the key belongs to: user name and the key line
    assert ("alice", jump.keys.line("alice")) in jump.authenticated
    # the host key was created with owner-only permissions
    assert jump.host_key.stat().st_mode & 0o777 == 0o600


def test_unknown_key_or_wrong_user_is_refused(jump: Jump) -> None:
    res = ssh(jump, "bob", "-W", "k3j9x2:22")
    assert res.returncode == 255 and b"Permission denied (publickey)" in res.stderr
    res = ssh(jump, "alice", "-W", "k3j9x2:22", user="carol")  # alice's key, carol's name
    assert res.returncode == 255 and b"Permission denied (publickey)" in res.stderr
    res = ssh(jump, "alice", "-W", "k3j9x2:22", "-o", "PreferredAuthentications=password")
    assert res.returncode == 255 and b"Permission denied (publickey)" in res.stderr
    res = ssh(jump, "alice", "-W", "k3j9x2:22", user="boom")  # authenticate() raised
    assert res.returncode == 255 and b"Permission denied (publickey)" in res.stderr


def test_refusals_show_the_reason_resolve_gave(jump: Jump) -> None:
    res = ssh(jump, "carol", "-W", "k3j9x2:22")
    assert res.returncode == 255
    assert "administratively prohibited: carol may not reach k3j9x2" in err(res)
    res = ssh(jump, "alice", "-W", "nosuch:22")
    assert "administratively prohibited: no service 'nosuch'" in err(res)
    res = ssh(jump, "alice", "-W", "boom:22")
    assert "the gateway could not look it up" in err(res)
    assert "database is down" not in err(res)
    res = ssh(jump, "alice", "-W", "down:22")  # known service, but its tunnel is not up
    assert "down:22 is not answering" in err(res)
    assert str(jump.services["down"]) not in err(res)


def test_a_failed_channel_leaves_the_connection_and_its_other_channels_alone(
    jump: Jump,
) -> None:
    bad, good = free_port(), free_port()
    proc = subprocess.Popen(
        ssh_argv(
            jump.host.port,
            jump.keys.path("alice"),
            "-N",
            "-L",
            f"127.0.0.1:{bad}:boom:22",
            "-L",
            f"127.0.0.1:{good}:k3j9x2:22",
            "alice@127.0.0.1",
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for("the -L listener", lambda: _connects(good))
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", bad), timeout=5) as s:
                assert s.recv(100) == b""  # refused channel: closed at once
        with socket.create_connection(("127.0.0.1", good), timeout=5) as s:
            s.sendall(b"still here\n")
            assert s.recv(100) == b"echo:still here\n"
        assert proc.poll() is None
    finally:
        terminate(proc)


def terminate(proc: subprocess.Popen[bytes]) -> bytes:
    """SIGTERM until ssh exits; returns its stderr.

    OpenSSH 9.2's client sets a flag in its SIGTERM handler and then poll()s: a signal
    that lands just before the poll is noticed only when something else wakes it up
    (here: the server's keepalive, 10 s later). A second SIGTERM interrupts the poll.
    """
    for _ in range(20):
        proc.terminate()
        try:
            _, stderr = proc.communicate(timeout=0.5)
            return stderr or b""
        except subprocess.TimeoutExpired:
            continue
    proc.kill()
    _, stderr = proc.communicate()
    raise AssertionError("ssh ignored SIGTERM")


def _connects(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_shell_exec_sftp_and_remote_forwarding_are_refused(jump: Jump) -> None:
    for args, command in (
        ((), ("id",)),
        (("-tt",), ()),
        (("-s",), ("sftp",)),
        (("-A", "-X"), ("true",)),
    ):
        res = ssh(jump, "alice", *args, command=command)
        assert res.returncode == 255, args
        assert "this is a jump host" in err(res), args
    res = ssh(jump, "alice", "-N", "-o", "ExitOnForwardFailure=yes", "-R", "0:localhost:22")
    assert res.returncode == 255
    assert "remote port forwarding failed" in err(res)
    port = free_port()
    proc = subprocess.Popen(
        ssh_argv(
            jump.host.port,
            jump.keys.path("alice"),
            "-v",
            "-N",
            "-L",
            f"127.0.0.1:{port}:/run/some.sock",
            "alice@127.0.0.1",
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for("the -L listener", lambda: _connects(port))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert s.recv(100) == b""  # the channel was refused
    finally:
        stderr = terminate(proc)
    assert b"only TCP services can be reached" in stderr


def test_probing_someone_elses_key_does_not_sign_in_as_them(jump: Jump, tmp_path: Path) -> None:
    # Public keys are public: mallory offers alice's (without the private half) first,
    # the server says it would accept it, then mallory signs in with her own key.
    probe = tmp_path / "alice-public-only"
    probe.write_text(Path(f"{jump.keys.path('alice')}.pub").read_text())
    probe.chmod(0o600)
    res = ssh(jump, "mallory", "-i", str(probe), "-W", "whoami:22", user="alice")
    assert res.returncode == 255
    assert "you are" not in err(res)  # mallory's key is not alice's user
    res = ssh(jump, "mallory", "-W", "whoami:22")
    assert "you are mallory" in err(res)
    # offering alice's public key first, as user mallory: still mallory
    res = subprocess.run(
        ssh_argv(
            jump.host.port,
            probe,
            "-i",
            str(jump.keys.path("mallory")),
            "-v",
            "-W",
            "whoami:22",
            "mallory@127.0.0.1",
        ),
        capture_output=True,
        timeout=20,
    )
    assert "you are mallory" in err(res)
    assert f"Offering public key: {probe}" in err(res)


def test_ssh_J_logs_in_to_a_real_sshd_behind_the_jump_host(
    jump: Jump, keys: Keys, tmp_path: Path
) -> None:
    require(
        os.geteuid() == 0 and shutil.which("/usr/sbin/sshd") is not None,
        "root and sshd (a real login node)",
    )
    login = Sshd()
    try:
        login.authorize(keys.line("alice"), options="")
        login.start()
        jump.services["login"] = login.port
        config = tmp_path / "ssh_config"
        config.write_text(
            f"""Host gateway
  HostName 127.0.0.1
  Port {jump.host.port}
  User alice
  IdentityFile {keys.path("alice")}
Host *
  IdentityFile {keys.path("alice")}
  IdentitiesOnly yes
  BatchMode yes
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  LogLevel ERROR
"""
        )
        started = time.monotonic()
        res = subprocess.run(
            ["ssh", "-F", str(config), "-J", "gateway", "tunnel@login.tun.test", "true"],
            capture_output=True,
            timeout=30,
        )
        # the login node's account 'tunnel' has no shell: reaching that message means the
        # whole way worked, through the jump host, key exchange and sign-in at the far end
        assert b"This account is currently not available." in res.stdout + res.stderr, res
        assert "Accepted publickey for tunnel" in login.log_text()
        assert time.monotonic() - started < 30
    finally:
        login.cleanup()


def test_stop_closes_open_connections(tmp_path: Path, keys: Keys, echo: int) -> None:
    j = Jump(tmp_path, keys, {"k3j9x2": echo})
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = subprocess.Popen(
            ssh_argv(j.host.port, keys.path("alice"), "-W", "k3j9x2:22", "alice@127.0.0.1"),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(b"ping\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"echo:ping\n"
        j.close()
        assert proc.stdout.read() == b""  # the jump host closed the channel and connection
        proc.wait(timeout=10)
        assert not _connects(j.host.port)
    finally:
        if j.thread.is_alive():
            j.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def test_open_connections_of_a_user_who_may_no_longer_sign_in_are_cut(
    tmp_path: Path, keys: Keys, echo: int
) -> None:
    """A user disabled or removed (or a key revoked) while connected: the check that runs
    every few seconds finds the key no longer signs them in, and closes the connection;
    other users' connections stay."""
    j = Jump(tmp_path, keys, {"k3j9x2": echo}, revalidate_s=0.3)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for who in ("alice", "mallory"):
            p = subprocess.Popen(
                ssh_argv(j.host.port, keys.path(who), "-W", "k3j9x2:22", f"{who}@127.0.0.1"),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
            )
            assert p.stdin is not None and p.stdout is not None
            p.stdin.write(b"ping\n")
            p.stdin.flush()
            assert p.stdout.readline() == b"echo:ping\n"
            procs[who] = p
        checks = len(j.authenticated)
        time.sleep(1.0)
        assert len(j.authenticated) > checks  # checked again while open, and kept
        del j.principals[keys.line("alice")]  # alice is disabled
        cut = time.monotonic()
        alice = procs["alice"]
        assert alice.stdout is not None
        # The jump host closes her connection: the client sees the end and exits.
        assert select.select([alice.stdout], [], [], 5)[0], "alice's connection stayed open"
        assert alice.stdout.read() == b""
        assert time.monotonic() - cut < 3
        alice.wait(timeout=10)
        mallory = procs["mallory"]
        assert mallory.stdin is not None and mallory.stdout is not None
        mallory.stdin.write(b"still\n")
        mallory.stdin.flush()
        assert mallory.stdout.readline() == b"echo:still\n"
        # A check that fails (the store is down) keeps connections: no mass disconnection.
        j.store_down = True
        assert j.call(j.host.revalidate()) == 0
        j.store_down = False
        assert j.call(j.host.revalidate()) == 0
        # The key now signs in someone else: not the user this connection signed in as.
        j.principals[keys.line("mallory")] = JumpPrincipal("u-other", "mallory")
        assert j.call(j.host.revalidate()) == 1
    finally:
        j.close()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()


def _echoing(j: Jump, keys: Keys, who: str, *extra: str) -> subprocess.Popen[bytes]:
    p = subprocess.Popen(
        ssh_argv(j.host.port, keys.path(who), *extra, "-W", "k3j9x2:22", f"{who}@127.0.0.1"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert p.stdin is not None and p.stdout is not None
    p.stdin.write(b"ping\n")
    p.stdin.flush()
    assert p.stdout.readline() == b"echo:ping\n"
    return p


def test_taking_a_user_off_the_access_list_cuts_their_open_connection(
    tmp_path: Path, keys: Keys, echo: int
) -> None:
    j = Jump(tmp_path, keys, {"k3j9x2": echo}, revalidate_s=0.3)
    p = _echoing(j, keys, "alice")
    try:
        j.denied.add(("alice", "k3j9x2"))
        cut = time.monotonic()
        assert p.stdout is not None
        assert select.select([p.stdout], [], [], 5)[0], "the connection stayed open"
        assert p.stdout.read() == b""
        assert time.monotonic() - cut < 3
    finally:
        j.close()
        if p.poll() is None:
            p.kill()
        p.wait()


def test_an_open_connection_cannot_open_new_channels_once_its_key_no_longer_signs_in(
    tmp_path: Path, keys: Keys, echo: int
) -> None:
    """``ssh -M`` keeps a connection; ``ssh -S`` opens channels on it. Once the user is
    disabled (or the key revoked), the next channel is refused at once, without waiting
    for the periodic check."""
    j = Jump(tmp_path, keys, {"k3j9x2": echo}, revalidate_s=3600)
    sock = tmp_path / "cm.sock"
    base = ssh_argv(j.host.port, keys.path("alice"))
    master = subprocess.Popen(
        [*base, "-M", "-S", str(sock), "-N", "alice@127.0.0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert time.monotonic() < deadline and master.poll() is None, "no control master"
            time.sleep(0.05)

        def through_master() -> subprocess.CompletedProcess[bytes]:
            return subprocess.run(
                [*base, "-S", str(sock), "-W", "k3j9x2:22", "alice@127.0.0.1"],
                input=b"hello\n",
                capture_output=True,
                timeout=20,
            )

        assert through_master().stdout == b"echo:hello\n"
        del j.principals[keys.line("alice")]  # disabled, or the key deleted
        res = through_master()
        assert res.stdout == b"" and res.stderr  # refused: nothing reached the service
        master.wait(timeout=10)  # and the jump host closed the connection itself
    finally:
        j.close()
        if master.poll() is None:
            master.kill()
        master.wait()


def test_unauthenticated_connections_per_address_are_capped(jump: Jump) -> None:
    """The attack's retest: 300 raw connections from one address all got the jump host's
    banner and were held for the 20 s login grace (tunneld caps them at 50)."""
    held: list[socket.socket] = []
    banners = 0
    try:
        for _ in range(MAX_UNAUTHENTICATED_PER_IP + 10):
            s = socket.create_connection(("127.0.0.1", jump.host.port), timeout=5)
            held.append(s)
            s.settimeout(2)
            with contextlib.suppress(TimeoutError, ConnectionResetError):
                banners += s.recv(64).startswith(b"SSH-2.0-")
        assert banners == MAX_UNAUTHENTICATED_PER_IP
    finally:
        for s in held:
            s.close()
    # Once they are gone, the address may connect and sign in again.
    wait_for("the held connections to settle", lambda: not jump.host._unauthenticated)
    res = ssh(jump, "alice", "-W", "k3j9x2:22", stdin=b"hello\n")
    assert res.returncode == 0 and res.stdout == b"echo:hello\n", err(res)
