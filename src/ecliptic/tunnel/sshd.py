"""The SSH tunnel endpoint: one stock ``sshd -i`` per accepted connection, watched through its log.

Platforms open reverse tunnels with a stock client (``ssh -N -R 0:localhost:<port>``). This
module owns the listening TCP socket: it accepts each connection itself (so it can set
``TCP_NODELAY``, which sshd only sets for pty sessions, and refuse floods before any fork) and
hands the socket to a private ``sshd -i`` as stdin/stdout.

Threat model: every client is untrusted until sshd says otherwise. Admission is the
``authorized_keys`` file this endpoint writes (``restrict,port-forwarding,
permitlisten="localhost:*"`` per key); the sshd_config allows nothing but remote forwarding to
loopback. What the endpoint learns about a connection comes from that connection's own sshd
log, and only two records are believed:

* ``Accepted publickey for <user> from <ip> port <port> ssh2: <TYPE> SHA256:...`` names the key
  that *signed*; keys merely offered or probed (a public key is public) are never used.
* the first ``debug1: Allocated listen port N`` gives the loopback port of the tunnel.

sshd's stderr logging lets CR and LF from client-chosen strings (a forward's listen host, a
user name) through unescaped, so a client can write whole fake lines into its log. sshd writes
every message with one ``write()``, so its stderr here is a ``SOCK_SEQPACKET`` socket: one
message is one record, a record must match in full, and a record holding a line break ends the
connection as a forgery attempt.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import logging
import os
import pwd
import re
import secrets
import signal
import socket
import stat
import struct
import subprocess
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from ecliptic import hostkeys
from ecliptic.errors import EclipticError, InvalidInput
from ecliptic.files import write_atomic
from ecliptic.phases import IllegalTransition
from ecliptic.services.sshkeys import fingerprint_of_blob, parse_public_key

log = logging.getLogger(__name__)

KEY_OPTIONS = 'restrict,port-forwarding,permitlisten="localhost:*"'
"""Options written before every authorized key: remote forwards to loopback, nothing else."""
CIPHERS = "aes128-gcm@openssh.com,aes256-gcm@openssh.com"
"""Offered ciphers: AES-GCM only (AES-NI; +38% bulk throughput over chacha20 measured here)."""
LOGIN_GRACE_S = 20
"""sshd's LoginGraceTime: a client that has not authenticated by then is dropped by sshd."""
KILL_GRACE_S = 2.0
"""Seconds between SIGTERM and SIGKILL when a connection is ended."""
SSHD_LOG_LEVEL = "DEBUG1"
"""``Allocated listen port`` is logged at DEBUG1 only."""

_SSHD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"}
_RECORD_MAX = 8192  # sshd formats a message into 1 KiB; anything longer is not sshd's
_RECORDS_PER_WAKEUP = 64
_SAFE_PATH = re.compile(r"/[A-Za-z0-9._/+@-]*")  # no spaces, quotes or sshd %-tokens
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_ACCEPTED = re.compile(
    r"Accepted publickey for (?P<user>\S+) from (?P<ip>\S+) port (?P<port>\d+) ssh2: "
    r"(?P<type>[A-Z0-9-]+) (?P<fp>SHA256:[A-Za-z0-9+/]{43})"
)
_ALLOCATED = re.compile(r"debug1: Allocated listen port (?P<port>\d+)")
_FORWARD_REQUEST = re.compile(
    r"debug1: server_input_global_request: tcpip-forward listen (?P<host>.*) port (?P<port>\d+)"
)


class EndpointError(EclipticError):
    """The tunnel endpoint cannot run on this machine as configured."""

    code = "tunnel_endpoint_unavailable"
    status = 503
    title = "Tunnel endpoint unavailable"


class EndpointConfigError(InvalidInput):
    """An ``EndpointConfig`` value that cannot work."""

    code = "invalid_endpoint_config"


@dataclass(frozen=True)
class EndpointConfig:
    """Where and how the SSH tunnel endpoint listens, and the sshd it runs per connection."""

    state_dir: Path
    """Root-owned directory (not under /tmp) for sshd_config and authorized_keys."""
    host_key: Path
    """Private ed25519 host key; generated when missing."""
    bind_host: str = "127.0.0.1"
    """Address the endpoint listens on."""
    port: int = 2222
    """TCP port; 0 picks a free one (the real one is ``SshEndpoint.port`` after start)."""
    user: str = "tunnel"
    """The only account clients may log in as (must exist, unlocked, shell nologin)."""
    keepalive_interval_s: int = 4
    """sshd ClientAliveInterval. sshd asks a client for a reply only after about 2 x interval
    of silence (it checks whole seconds after an idle poll) and drops a frozen peer after
    ~2 x interval x (count + 1); tunneld is given the same cadence."""
    keepalive_count: int = 2
    """sshd ClientAliveCountMax (at least 1: 0 would disable dropping)."""
    max_connections: int = 5000
    """Connections (each one sshd) at once; more are closed at accept."""
    max_unauthenticated_per_ip: int = 50
    """Connections from one IP not yet up; more are closed at accept, before any fork."""
    sshd_path: str = "/usr/sbin/sshd"
    """The stock OpenSSH server binary."""
    forward_timeout_s: float = 30.0
    """An authenticated connection that has not opened its forward by then is ended."""


@dataclass(frozen=True)
class TunnelConn:
    """A tunnel that is up: an authenticated connection with its forwarded loopback port."""

    id: str
    """Random hex, unique per connection."""
    pid: int
    """Pid of the ``sshd -i`` process serving it."""
    fingerprint: str
    """``SHA256:...`` of the key that logged in."""
    client: str
    """``ip:port`` of the peer (``[ip]:port`` for IPv6)."""
    port: int
    """Loopback port (127.0.0.1) sshd listens on for this tunnel."""
    connected_at: float
    """``time.time()`` when the TCP connection was accepted."""


class ConnPhase(StrEnum):
    """Life of one accepted connection."""

    ACCEPTED = "accepted"  # sshd started, no key accepted yet
    AUTHENTICATED = "authenticated"  # a key signed; no forward yet
    UP = "up"  # forward allocated: routable
    DOWN = "down"  # sshd exited and was reaped


CONN_MOVES: dict[ConnPhase, frozenset[ConnPhase]] = {
    ConnPhase.ACCEPTED: frozenset({ConnPhase.AUTHENTICATED, ConnPhase.DOWN}),
    ConnPhase.AUTHENTICATED: frozenset({ConnPhase.UP, ConnPhase.DOWN}),
    ConnPhase.UP: frozenset({ConnPhase.DOWN}),
    ConnPhase.DOWN: frozenset(),
}

_PENDING = frozenset({ConnPhase.ACCEPTED, ConnPhase.AUTHENTICATED})


def check_conn_move(current: ConnPhase, target: ConnPhase) -> None:
    """Refuse a phase change the connection table does not allow."""
    if target not in CONN_MOVES[current]:
        raise IllegalTransition(f"a tunnel connection cannot go from {current} to {target}")


def fingerprint(public_key_line: str) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key line ``<type> <base64> [comment]``."""
    return parse_public_key(public_key_line).fingerprint


def check_prerequisites(user: str, *, sshd_path: str = "/usr/sbin/sshd") -> list[str]:
    """What keeps the endpoint from running here, as sentences that say what to fix."""
    problems: list[str] = []
    if os.geteuid() != 0:
        problems.append(
            "the tunnel endpoint must run as root (sshd -i needs it for privilege separation "
            "and to read its host key)"
        )
    if not (os.path.isfile(sshd_path) and os.access(sshd_path, os.X_OK)):
        problems.append(
            f"{sshd_path} is missing: install the OpenSSH server (apt-get install openssh-server)"
        )
    create = (
        f"run scripts/setup-system.sh, or: useradd --system --no-create-home "
        f"--shell /usr/sbin/nologin {user} && usermod -p '*' {user}"
    )
    try:
        account = pwd.getpwnam(user)
    except KeyError:
        problems.append(f"user {user!r} does not exist: {create}")
        return problems
    if account.pw_uid == 0:
        problems.append(f"user {user!r} is root: tunnels need an unprivileged account ({create})")
    if not os.access(account.pw_shell, os.X_OK):
        problems.append(
            f"the shell of {user!r} ({account.pw_shell}) is missing, and sshd refuses such "
            f"accounts: usermod -s /usr/sbin/nologin {user}"
        )
    shadow = _shadow_entry(user)
    if shadow is not None:
        if shadow[1].startswith("!"):
            problems.append(
                f"account {user!r} is locked ('!' in /etc/shadow) and sshd refuses locked "
                f"accounts without PAM: usermod -p '*' {user}"
            )
        expire = shadow[7] if len(shadow) > 7 else ""
        if expire.isdigit() and int(expire) <= int(time.time() // 86400):
            problems.append(f"account {user!r} has expired: chage -E -1 {user}")
    return problems


def _shadow_entry(user: str) -> list[str] | None:
    try:
        with open("/etc/shadow", encoding="utf-8", errors="replace") as f:
            for line in f:
                fields = line.rstrip("\n").split(":")
                if fields[0] == user:
                    return fields
    except OSError:
        return None  # not readable (not root): the root check already says so
    return None


def render_sshd_config(config: EndpointConfig) -> str:
    """The sshd_config of every per-connection sshd: remote forwards to loopback, nothing else."""
    state = config.state_dir
    lines = [
        "# Written by ecliptic's tunnel endpoint; rewritten at every start.",
        f"HostKey {config.host_key}",
        "PidFile none",
        # Only 127.0.0.1 listeners: with both families sshd binds ::1 first, and 127.0.0.1:N
        # may then belong to another program while "Allocated listen port N" is logged.
        "AddressFamily inet",
        f"AllowUsers {config.user}",
        "PermitRootLogin no",
        "AuthenticationMethods publickey",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "UsePAM no",
        "StrictModes yes",
        f"AuthorizedKeysFile {state / 'authorized_keys'}",
        "AuthorizedKeysCommand none",
        # No session channel at all: shell, exec, sftp, agent and X11 all fail to open.
        "MaxSessions 0",
        "ForceCommand /usr/sbin/nologin",
        "PermitTTY no",
        "PermitUserRC no",
        # The key option port-forwarding re-enables -L/-D; this keeps remote forwarding only.
        "AllowTcpForwarding remote",
        "PermitOpen none",
        "PermitListen localhost:*",
        "GatewayPorts no",
        "AllowStreamLocalForwarding no",
        "AllowAgentForwarding no",
        "X11Forwarding no",
        "PermitTunnel no",
        f"ClientAliveInterval {config.keepalive_interval_s}",
        f"ClientAliveCountMax {config.keepalive_count}",
        f"LoginGraceTime {LOGIN_GRACE_S}",
        f"Ciphers {CIPHERS}",
        "",
    ]
    return "\n".join(lines)


def parse_keys(public_keys: Iterable[str]) -> dict[str, str]:
    """Fingerprint -> ``<type> <base64>`` of the valid keys; invalid lines skipped with a warning.

    Comments are dropped: nothing a user typed besides the validated key reaches the file.
    """
    if isinstance(public_keys, str):
        raise TypeError("public_keys is an iterable of key lines, not one string")
    kept: dict[str, str] = {}
    for line in public_keys:
        try:
            key = parse_public_key(line)
        except InvalidInput as exc:
            log.warning("tunnel endpoint: skipping public key %.60r: %s", line, exc.message)
            continue
        blob = base64.b64decode(key.blob)
        kept.setdefault(fingerprint_of_blob(blob), f"{key.type} {base64.b64encode(blob).decode()}")
    return kept


def render_authorized_keys(key_lines: Iterable[str]) -> str:
    """The authorized_keys file: each ``<type> <base64>`` behind the tunnel-only options."""
    body = "".join(f"{KEY_OPTIONS} {line}\n" for line in key_lines)
    return "# Written by ecliptic's tunnel endpoint; do not edit.\n" + body


def _insecure_components(path: Path) -> list[str]:
    """Directories on the way to ``path`` that sshd's StrictModes would reject."""
    found = []
    for part in [path, *path.parents]:
        st = os.stat(part)
        if st.st_uid != 0:
            found.append(f"{part} is not owned by root")
        elif st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            found.append(f"{part} is writable by group or others")
    return found


@dataclass(eq=False)
class _Conn:
    """One accepted connection and the ``sshd -i`` serving it (endpoint-private state)."""

    id: str
    ip: str
    peer_port: int
    client: str
    proc: subprocess.Popen[bytes]
    pidfd: int
    log_sock: socket.socket
    connected_at: float
    phase: ConnPhase = ConnPhase.ACCEPTED
    fingerprint: str | None = None
    tunnel: TunnelConn | None = None
    exited: bool = False
    log_closed: bool = False
    reaped: bool = False
    why_ended: str = ""
    timer: asyncio.TimerHandle | None = None
    kill_timer: asyncio.TimerHandle | None = None
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=8))


class SshEndpoint:
    """Accepts SSH connections, runs one sshd per connection, reports tunnels up and down.

    Every method runs on the event loop thread that called ``start``.
    """

    def __init__(
        self,
        config: EndpointConfig,
        *,
        on_up: Callable[[TunnelConn], None],
        on_down: Callable[[TunnelConn], None],
    ) -> None:
        validate_endpoint_config(config)
        self.config = config
        self._on_up = on_up
        self._on_down = on_down
        self._state_dir = Path(os.path.abspath(config.state_dir))
        self._host_key = Path(os.path.abspath(config.host_key))
        self._config_path = self._state_dir / "sshd_config"
        self._keys_path = self._state_dir / "authorized_keys"
        self._pids_dir = self._state_dir / "pids"
        self._sshd_argv = [config.sshd_path, "-i", "-e", "-f", str(self._config_path)]
        self._sshd_argv += ["-o", f"LogLevel={SSHD_LOG_LEVEL}"]
        self._authorized: dict[str, str] = {}
        self._ready = False
        self._closing = False
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accept_task: asyncio.Task[None] | None = None
        self._conns: dict[str, _Conn] = {}
        self._pending_per_ip: dict[str, int] = {}
        self._idle: asyncio.Event | None = None
        self._host_key_line: str | None = None
        self._refused = 0
        self._refused_logged_at = 0.0

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Write sshd_config, the host key and authorized_keys, then listen."""
        if self._sock is not None:
            raise RuntimeError("the tunnel endpoint is already started")
        problems = check_prerequisites(self.config.user, sshd_path=self.config.sshd_path)
        if problems:
            raise EndpointError("cannot start the SSH tunnel endpoint: " + "; ".join(problems))
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._idle.set()
        await asyncio.to_thread(self._prepare_files)
        await asyncio.to_thread(self._end_leftovers)
        self._ready = True
        self._write_authorized_keys()
        self._sock = self._listen()
        self._closing = False
        self._accept_task = self._loop.create_task(self._accept_loop(self._sock))
        log.info("SSH tunnel endpoint listening on %s port %d", self.config.bind_host, self.port)

    async def stop(self) -> None:
        """Stop listening, end every connection (SIGTERM, SIGKILL after 2 s) and reap them."""
        self._closing = True
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accept_task
            self._accept_task = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for conn in list(self._conns.values()):
            self._terminate(conn, "endpoint stopping")
        await self._wait_idle(KILL_GRACE_S + 3.0)
        for conn in list(self._conns.values()):
            self._kill_group(conn)
        await self._wait_idle(3.0)
        for conn in list(self._conns.values()):
            log.error("sshd pid %d (tunnel connection %s) did not exit", conn.proc.pid, conn.id)

    async def _wait_idle(self, timeout: float) -> None:
        if self._idle is None or not self._conns:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)

    # --- public queries and commands --------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port the endpoint listens on."""
        if self._sock is None:
            raise RuntimeError("the tunnel endpoint is not started")
        return int(self._sock.getsockname()[1])

    @property
    def host_key_line(self) -> str:
        """The public host key, ``ssh-ed25519 AAAA...``, for clients' known_hosts."""
        if self._host_key_line is None:
            if not self._host_key.exists():
                raise RuntimeError("no host key yet: start the endpoint first")
            self._host_key_line = hostkeys.public_line(self._host_key.read_text())
        return self._host_key_line

    def set_authorized_keys(self, public_keys: Iterable[str]) -> None:
        """Admit exactly these keys from the next login on (live tunnels are not touched)."""
        self._authorized = parse_keys(public_keys)
        if self._ready:
            self._write_authorized_keys()

    def connections(self) -> list[TunnelConn]:
        """The tunnels that are up."""
        return [c.tunnel for c in self._conns.values() if c.tunnel and c.phase is ConnPhase.UP]

    def kill(self, conn_id: str) -> bool:
        """End one connection (up or not); False when there is no such connection."""
        conn = self._conns.get(conn_id)
        return conn is not None and self._terminate(conn, "killed on request")

    def kill_fingerprint(self, fingerprint: str) -> int:
        """End every connection that logged in with this key; returns how many."""
        matching = [c for c in self._conns.values() if c.fingerprint == fingerprint]
        return sum(self._terminate(c, f"key {fingerprint} revoked") for c in matching)

    # --- files ------------------------------------------------------------------------------

    def _record_pid(self, pid: int) -> None:
        """Note a live ``sshd -i`` (pid and start time), so that a restart after a crash of
        this process can end the connections it left behind."""
        started = _start_time(pid)
        if started is not None:
            (self._pids_dir / str(pid)).write_text(started)

    def _end_leftovers(self) -> None:
        """End the sessions of ``sshd -i`` processes a crashed earlier run left running.

        A pid counts only while its start time matches the record, so a reused pid is never
        signalled. Their clients reconnect and are routed afresh."""
        self._pids_dir.mkdir(mode=0o700, exist_ok=True)
        for record in self._pids_dir.iterdir():
            pid = int(record.name) if record.name.isdigit() else 0
            if pid and _start_time(pid) == record.read_text():
                log.info("ending sshd %d left by an earlier run of this endpoint", pid)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGTERM)  # its own session: monitor and child
            record.unlink(missing_ok=True)

    def _prepare_files(self) -> None:
        for p in (self._state_dir, self._host_key):
            if not _SAFE_PATH.fullmatch(str(p)):
                raise EndpointError(
                    f"{p}: use an absolute path of letters, digits and ._+@/- only "
                    "(sshd_config cannot quote anything else)"
                )
        try:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privsep chroot
            self._state_dir.mkdir(parents=True, exist_ok=True)
            os.chown(self._state_dir, 0, 0)
            os.chmod(self._state_dir, 0o755)  # user tunnel reads authorized_keys
        except OSError as exc:
            raise EndpointError(f"cannot prepare {self._state_dir}: {exc}") from exc
        bad = _insecure_components(self._state_dir)
        if bad:
            raise EndpointError(
                f"sshd (StrictModes) would refuse {self._keys_path}: {'; '.join(bad)}. "
                "Put state_dir under a root-owned directory such as /run or /var/lib"
            )
        self._ensure_host_key()
        effective = replace(self.config, state_dir=self._state_dir, host_key=self._host_key)
        write_atomic(self._config_path, render_sshd_config(effective), mode=0o644, root_owned=True)
        check = subprocess.run(
            [self.config.sshd_path, "-t", "-f", str(self._config_path)],
            capture_output=True,
            text=True,
            env=_SSHD_ENV,
        )
        if check.returncode != 0:
            raise EndpointError(
                f"sshd rejects {self._config_path}: {check.stderr.strip() or check.stdout.strip()}"
            )

    def _ensure_host_key(self) -> None:
        self._host_key_line = ensure_host_key(self._host_key)

    def _write_authorized_keys(self) -> None:
        write_atomic(
            self._keys_path,
            render_authorized_keys(self._authorized.values()),
            mode=0o644,
            root_owned=True,
        )

    # --- accepting --------------------------------------------------------------------------

    def _listen(self) -> socket.socket:
        return listen_tcp(self.config.bind_host, self.config.port)

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sock, addr = await loop.sock_accept(listener)
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("tunnel endpoint cannot accept: %s; pausing 100 ms", exc)
                    await asyncio.sleep(0.1)
                continue
            try:
                self._admit(sock, addr)
            except Exception:
                log.exception("tunnel endpoint: failed to start sshd for %s", addr)
                sock.close()

    def _admit(self, sock: socket.socket, addr: tuple[Any, ...]) -> None:
        ip, peer_port = _normal_ip(addr[0]), int(addr[1])
        if self._closing or len(self._conns) >= self.config.max_connections:
            self._refuse(sock, ip, "too many connections")
            return
        if self._pending_per_ip.get(ip, 0) >= self.config.max_unauthenticated_per_ip:
            self._refuse(sock, ip, "too many unauthenticated connections from this address")
            return
        sock.setblocking(True)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            proc = subprocess.Popen(
                self._sshd_argv,
                stdin=sock.fileno(),
                stdout=sock.fileno(),
                stderr=theirs.fileno(),
                start_new_session=True,
                env=_SSHD_ENV,
            )
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
            sock.close()
        try:
            pidfd = os.pidfd_open(proc.pid)
        except OSError:
            proc.kill()
            proc.wait()
            ours.close()
            raise
        ours.setblocking(False)
        self._record_pid(proc.pid)
        client = f"[{ip}]:{peer_port}" if ":" in ip else f"{ip}:{peer_port}"
        conn = _Conn(
            id=secrets.token_hex(8),
            ip=ip,
            peer_port=peer_port,
            client=client,
            proc=proc,
            pidfd=pidfd,
            log_sock=ours,
            connected_at=time.time(),
        )
        self._conns[conn.id] = conn
        self._pending_per_ip[ip] = self._pending_per_ip.get(ip, 0) + 1
        assert self._loop is not None and self._idle is not None
        self._idle.clear()
        self._loop.add_reader(ours.fileno(), self._on_log, conn)
        self._loop.add_reader(pidfd, self._on_exit, conn)
        conn.timer = self._loop.call_later(
            LOGIN_GRACE_S + 10, self._deadline, conn, ConnPhase.ACCEPTED, "no login in time"
        )

    def _refuse(self, sock: socket.socket, ip: str, why: str) -> None:
        with contextlib.suppress(OSError):  # reset, not FIN: nothing to linger for
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        self._refused += 1
        now = time.monotonic()
        if now - self._refused_logged_at >= 10.0:
            log.warning(
                "tunnel endpoint refused %d connection(s) at accept, latest from %s: %s",
                self._refused,
                ip,
                why,
            )
            self._refused, self._refused_logged_at = 0, now

    # --- watching one sshd ------------------------------------------------------------------

    def _on_log(self, conn: _Conn) -> None:
        for _ in range(_RECORDS_PER_WAKEUP):
            try:
                record = conn.log_sock.recv(_RECORD_MAX)
            except BlockingIOError:
                return
            except OSError:
                record = b""
            if not record:
                self._log_closed(conn)
                return
            try:
                self._on_record(conn, record.decode("utf-8", "replace").removesuffix("\r\n"))
            except Exception:
                log.exception("tunnel connection %s: failed to handle a log record", conn.id)

    def _on_record(self, conn: _Conn, text: str) -> None:
        conn.tail.append(text)
        if conn.why_ended:
            return  # being ended: nothing it logs from now on may bring it up
        if "\n" in text or "\r" in text:
            self._terminate(conn, "line break in a logged client string (log forgery attempt)")
            return
        if conn.phase is ConnPhase.ACCEPTED:
            accepted = _ACCEPTED.fullmatch(text)
            if accepted:
                self._authenticated(conn, accepted)
            return
        if conn.phase is ConnPhase.DOWN:
            return
        request = _FORWARD_REQUEST.fullmatch(text)
        if request and request["port"] != "0":
            self._terminate(conn, f"asked to listen on fixed port {request['port']}")
            return
        if conn.phase is ConnPhase.AUTHENTICATED:
            allocated = _ALLOCATED.fullmatch(text)
            if allocated:
                self._allocated(conn, int(allocated["port"]))

    def _authenticated(self, conn: _Conn, m: re.Match[str]) -> None:
        if m["user"] != self.config.user or (m["ip"], int(m["port"])) != (
            conn.ip,
            conn.peer_port,
        ):
            self._terminate(conn, f"log names another connection: {m.group(0)!r}")
            return
        conn.fingerprint = m["fp"]
        self._move(conn, ConnPhase.AUTHENTICATED, f"key {m['fp']} accepted")
        if m["fp"] not in self._authorized:
            self._terminate(conn, f"key {m['fp']} was revoked while logging in")
            return
        self._restart_timer(
            conn,
            self.config.forward_timeout_s,
            ConnPhase.AUTHENTICATED,
            f"no forward within {self.config.forward_timeout_s:g} s",
        )

    def _allocated(self, conn: _Conn, port: int) -> None:
        assert conn.fingerprint is not None
        if not 0 < port < 65536:
            self._terminate(conn, f"nonsense listen port {port}")
            return
        if conn.fingerprint not in self._authorized:
            self._terminate(conn, f"key {conn.fingerprint} was revoked before the forward")
            return
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        conn.tunnel = TunnelConn(
            id=conn.id,
            pid=conn.proc.pid,
            fingerprint=conn.fingerprint,
            client=conn.client,
            port=port,
            connected_at=conn.connected_at,
        )
        self._move(conn, ConnPhase.UP, f"listening on 127.0.0.1:{port}")
        log.info(
            "tunnel %s up: key %s from %s on 127.0.0.1:%d",
            conn.id,
            conn.fingerprint,
            conn.client,
            port,
        )
        notify(self._on_up, conn.tunnel, "on_up")

    def _on_exit(self, conn: _Conn) -> None:
        assert self._loop is not None
        self._loop.remove_reader(conn.pidfd)
        conn.exited = True
        if conn.log_closed:
            self._finish(conn)
        else:
            # Something in its process group still holds the log open: give it a moment.
            self._restart_timer(conn, KILL_GRACE_S, None, "")

    def _log_closed(self, conn: _Conn) -> None:
        assert self._loop is not None
        if not conn.log_closed:
            conn.log_closed = True
            self._loop.remove_reader(conn.log_sock.fileno())
        if conn.exited:
            self._finish(conn)

    def _deadline(self, conn: _Conn, phase: ConnPhase | None, why: str) -> None:
        conn.timer = None
        if phase is None:  # sshd exited but its log never closed
            self._kill_group(conn)
            self._finish(conn)
        elif conn.phase is phase:
            self._terminate(conn, why)

    def _restart_timer(self, conn: _Conn, delay: float, phase: ConnPhase | None, why: str) -> None:
        assert self._loop is not None
        if conn.timer is not None:
            conn.timer.cancel()
        conn.timer = self._loop.call_later(delay, self._deadline, conn, phase, why)

    def _terminate(self, conn: _Conn, why: str) -> bool:
        if conn.reaped:
            return False
        conn.why_ended = conn.why_ended or why
        log.debug("tunnel connection %s (sshd pid %d): ending: %s", conn.id, conn.proc.pid, why)
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(conn.pidfd, signal.SIGTERM)
        if conn.kill_timer is None and self._loop is not None:
            conn.kill_timer = self._loop.call_later(KILL_GRACE_S, self._kill_group, conn)
        return True

    def _kill_group(self, conn: _Conn) -> None:
        # Safe by pid: sshd is our unreaped child, so its pid (= its process group, thanks to
        # start_new_session) cannot name anything else until _finish reaps it.
        if not conn.reaped:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(conn.proc.pid, signal.SIGKILL)

    def _finish(self, conn: _Conn) -> None:
        if conn.reaped:
            return
        assert self._loop is not None
        for handle in (conn.timer, conn.kill_timer):
            if handle is not None:
                handle.cancel()
        if not conn.exited:
            self._loop.remove_reader(conn.pidfd)
        if not conn.log_closed:
            self._loop.remove_reader(conn.log_sock.fileno())
        rc = conn.proc.wait()
        conn.reaped = True
        os.close(conn.pidfd)
        (self._pids_dir / str(conn.proc.pid)).unlink(missing_ok=True)
        conn.log_sock.close()
        del self._conns[conn.id]
        was_up = conn.phase is ConnPhase.UP
        why = conn.why_ended or f"sshd exited with status {rc}"
        self._move(conn, ConnPhase.DOWN, why)
        if not self._conns and self._idle is not None:
            self._idle.set()
        if was_up and conn.tunnel is not None:
            log.info(
                "tunnel %s down: key %s, 127.0.0.1:%d: %s (last log: %s)",
                conn.id,
                conn.fingerprint,
                conn.tunnel.port,
                why,
                conn.tail[-1] if conn.tail else "",
            )
            notify(self._on_down, conn.tunnel, "on_down")
        else:
            log.debug(
                "tunnel connection %s from %s ended before up: %s; log tail: %s",
                conn.id,
                conn.client,
                why,
                " | ".join(conn.tail),
            )

    def _move(self, conn: _Conn, target: ConnPhase, why: str) -> None:
        check_conn_move(conn.phase, target)
        if conn.phase in _PENDING and target not in _PENDING:
            left = self._pending_per_ip.get(conn.ip, 1) - 1
            if left > 0:
                self._pending_per_ip[conn.ip] = left
            else:
                self._pending_per_ip.pop(conn.ip, None)
        log.debug("tunnel connection %s: %s -> %s: %s", conn.id, conn.phase, target, why)
        conn.phase = target


def notify(callback: Callable[[TunnelConn], None], tunnel: TunnelConn, name: str) -> None:
    """Tell an endpoint's owner about a tunnel; a failing callback is logged, not raised, so
    it cannot break the endpoint."""
    try:
        callback(tunnel)
    except Exception:
        log.exception("tunnel endpoint: %s callback failed for tunnel %s", name, tunnel.id)


def validate_endpoint_config(config: EndpointConfig) -> None:
    """Refuse an ``EndpointConfig`` that cannot work, saying every problem at once."""
    checks = [
        (config.keepalive_interval_s >= 1, "keepalive_interval_s must be at least 1"),
        (config.keepalive_count >= 1, "keepalive_count must be at least 1 (0 never drops)"),
        (config.max_connections >= 1, "max_connections must be at least 1"),
        (config.max_unauthenticated_per_ip >= 1, "max_unauthenticated_per_ip must be at least 1"),
        (0 <= config.port <= 65535, "port must be 0..65535"),
        (config.forward_timeout_s > 0, "forward_timeout_s must be positive"),
        (bool(_USER_NAME.fullmatch(config.user)), f"user {config.user!r} is not a user name"),
    ]
    problems = [message for ok, message in checks if not ok]
    if problems:
        raise EndpointConfigError("; ".join(problems))


def _normal_ip(ip: str) -> str:
    """The address as sshd prints it (IPv4-mapped IPv6 becomes plain IPv4)."""
    if ip.startswith("::ffff:") and "." in ip:
        return ip[len("::ffff:") :]
    return ip.split("%", 1)[0]


def listen_tcp(host: str, port: int) -> socket.socket:
    """A non-blocking listening TCP socket on ``host``:``port`` (0 picks a free port)."""
    family, kind, proto, _, addr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise EndpointError(f"cannot listen on {host} port {port}: {exc}") from exc
    return sock


def ensure_host_key(key: Path) -> str:
    """The ed25519 host key ``key`` (mode 0600), generated when missing; its public line."""
    try:
        return hostkeys.ensure_key_file(key)
    except (OSError, ValueError) as exc:
        raise EndpointError(f"cannot use host key {key}: {exc}") from exc


def _start_time(pid: int) -> str | None:
    """A process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat_line.rsplit(")", 1)[1].split()[19]
