"""The tunnel SSH endpoint in one process: ``ecliptic-tunneld``, supervised from here.

``ecliptic-tunneld`` (the Go module in ``tunneld/``, built by ``make`` on upstream
golang.org/x/crypto/ssh) terminates every tunnel connection in one unprivileged process: an
idle tunnel costs it about 50 KiB. Its contract (``tunnel/endpoint.py``): a stock
``ssh -N -R 0:localhost:PORT tunnel@gateway`` with a key the registrar bound is a tunnel;
nothing else is served.

This side owns everything privileged: it binds the listening socket (so the daemon needs no
capability, and runs as the ``tunnel`` account), reads the host key and hands it over on
stdin, and restarts the daemon if it dies. The daemon speaks JSON lines: configuration and
commands on its stdin, ``ready``/``up``/``down`` events on its stdout, log lines on its
stderr. When this process goes away, the daemon reads end-of-file and ends every tunnel, so
a crash leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import pwd
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ecliptic.procs import find_program
from ecliptic.tunnel.endpoint import (
    LOGIN_GRACE_S,
    EndpointConfig,
    EndpointError,
    TunnelConn,
    ensure_host_key,
    listen_tcp,
    notify,
    parse_keys,
    validate_endpoint_config,
)

log = logging.getLogger(__name__)

TUNNELD = "ecliptic-tunneld"
"""The daemon's file name: next to the Python interpreter of the venv, or on PATH."""
READY_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 5.0
RESTART_DELAY_S = 0.5
_STDERR_LIMIT = 1 << 16


def _daemon_env() -> dict[str, str]:
    # One P: the daemon's goroutines hand packets to each other, and on one thread that is
    # a switch in user space instead of a futex wake-up between threads (+70% bulk
    # throughput measured here). ECLIPTIC_TUNNELD_CPU_PROFILE=<file> writes a Go CPU profile
    # (pprof) until the daemon stops; the file must be writable by the tunnel account.
    env = {"PATH": "/usr/bin:/bin", "LANG": "C", "GOMAXPROCS": "1"}
    profile = os.environ.get("ECLIPTIC_TUNNELD_CPU_PROFILE")
    if profile:
        env["ECLIPTIC_TUNNELD_CPU_PROFILE"] = profile
    return env


def find_tunneld(path: str | None = None) -> str | None:
    """The daemon to run: ``path`` when given, else the venv's, else one on PATH."""
    return find_program(TUNNELD, path)


STAGE_DIR = Path("/run/ecliptic/bin")
"""Where a root instance installs the daemon it runs as the tunnel account (root-owned)."""


def stage_tunneld(exe: str, stage_dir: Path = STAGE_DIR) -> str:
    """A root-owned copy of ``exe`` that any account can run, named by its content.

    The daemon runs as the unprivileged tunnel account, which cannot enter a checkout in a
    private (0700) folder such as root's home; so a root instance runs a copy installed in a
    root-owned, world-traversable folder instead. The name carries the binary's hash, so a
    rebuilt binary is a new file and several instances never replace each other's copy.
    """
    digest = hashlib.sha256(Path(exe).read_bytes()).hexdigest()[:16]
    target = stage_dir / f"{TUNNELD}-{digest}"
    if target.exists():
        st = target.stat()
        if st.st_uid == 0 and st.st_mode & 0o7777 == 0o755:
            return str(target)
    for folder in reversed([stage_dir, *stage_dir.parents]):
        if not folder.exists():
            folder.mkdir(mode=0o755)
        st = folder.stat()
        if st.st_uid != 0 or st.st_mode & 0o022 or not st.st_mode & 0o001:
            raise EndpointError(
                f"cannot install {TUNNELD} under {stage_dir}: {folder} must be owned by root, "
                "not writable by others, and enterable by every account (chmod 755)"
            )
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(exe, tmp)
        os.chown(tmp, 0, 0)
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return str(target)


def check_prerequisites(user: str, *, tunneld_path: str | None = None) -> list[str]:
    """What keeps this endpoint from running here, as sentences that say what to fix."""
    problems: list[str] = []
    if find_tunneld(tunneld_path) is None:
        where = tunneld_path or f"{Path(sys.executable).parent / TUNNELD} (or on PATH)"
        problems.append(
            f"{where} is missing: build it with `make setup` (installs the pinned Go "
            "toolchain and builds tunneld/)"
        )
    if os.geteuid() == 0:
        try:
            account = pwd.getpwnam(user)
        except KeyError:
            problems.append(
                f"user {user!r} does not exist: run scripts/setup-system.sh, or: useradd "
                f"--system --no-create-home --shell /usr/sbin/nologin {user}"
            )
        else:
            if account.pw_uid == 0:
                problems.append(f"user {user!r} is root: tunnels need an unprivileged account")
    return problems


class TunneldEndpoint:
    """Runs ``ecliptic-tunneld`` and reports tunnels up and down. Every method runs on the
    event loop thread that called ``start``."""

    def __init__(
        self,
        config: EndpointConfig,
        *,
        on_up: Callable[[TunnelConn], None],
        on_down: Callable[[TunnelConn], None],
        tunneld_path: str | None = None,
    ) -> None:
        validate_endpoint_config(config)
        self.config = config
        self._on_up = on_up
        self._on_down = on_down
        self._tunneld_path = tunneld_path
        self._host_key = Path(os.path.abspath(config.host_key))
        self._host_key_line: str | None = None
        self._authorized: dict[str, str] = {}
        self._sock: socket.socket | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._up: dict[str, TunnelConn] = {}
        self._closing = False
        self._supervisor: asyncio.Task[None] | None = None
        self._started = 0.0
        self._last_log = ""

    # --- life cycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen, then start the daemon; returns once it accepts connections."""
        if self._sock is not None:
            raise RuntimeError("the tunnel endpoint is already started")
        problems = check_prerequisites(self.config.user, tunneld_path=self._tunneld_path)
        if problems:
            raise EndpointError("cannot start the SSH tunnel endpoint: " + "; ".join(problems))
        self._host_key_line = await asyncio.to_thread(ensure_host_key, self._host_key)
        self._sock = listen_tcp(self.config.bind_host, self.config.port)
        self._closing = False
        try:
            await self._spawn()
        except BaseException:
            self._sock.close()
            self._sock = None
            raise
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())
        log.info(
            "SSH tunnel endpoint (ecliptic-tunneld pid %d) listening on %s port %d",
            self._pid,
            self.config.bind_host,
            self.port,
        )

    async def stop(self) -> None:
        """End every tunnel and the daemon (end of stdin; SIGKILL after 5 s)."""
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        await self._end_process()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

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
            raise RuntimeError("no host key yet: start the endpoint first")
        return self._host_key_line

    def set_authorized_keys(self, public_keys: Iterable[str]) -> None:
        """Admit exactly these keys from the next login on (live tunnels are not touched)."""
        self._authorized = parse_keys(public_keys)
        self._send({"cmd": "keys", "keys": list(self._authorized.values())})

    def connections(self) -> list[TunnelConn]:
        """The tunnels that are up."""
        return list(self._up.values())

    def kill(self, conn_id: str) -> bool:
        """End one tunnel; False when there is no such tunnel up."""
        if conn_id not in self._up:
            return False
        self._send({"cmd": "kill", "id": conn_id, "why": "killed on request"})
        return True

    def kill_fingerprint(self, fingerprint: str) -> int:
        """End every connection that logged in with this key; returns how many were up."""
        self._send({"cmd": "kill_key", "fp": fingerprint, "why": f"key {fingerprint} revoked"})
        return sum(1 for t in self._up.values() if t.fingerprint == fingerprint)

    # --- the daemon -------------------------------------------------------------------------

    @property
    def _pid(self) -> int:
        return self._proc.pid if self._proc is not None else 0

    async def _spawn(self) -> None:
        assert self._sock is not None
        exe = find_tunneld(self._tunneld_path)
        if exe is None:
            raise EndpointError(f"{TUNNELD} is missing: build it with `make setup`")
        account: dict[str, Any] = {}
        if os.geteuid() == 0:
            exe = await asyncio.to_thread(stage_tunneld, exe)
            pw = pwd.getpwnam(self.config.user)
            account = {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}
        fd = self._sock.fileno()
        proc = await asyncio.create_subprocess_exec(
            exe,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            pass_fds=[fd],
            start_new_session=True,
            env=_daemon_env(),
            cwd="/",
            limit=_STDERR_LIMIT,
            **account,
        )
        self._proc = proc
        self._started = time.monotonic()
        c = self.config
        self._send(
            {
                "host_key": self._host_key.read_text(),
                "user": c.user,
                # sshd's effective cadence for the same setting (see EndpointConfig). Asking
                # no sooner also matters for reconnects: a keepalive sent into a cut network
                # sits in TCP's exponential backoff, and requests queue behind it after the
                # network returns, while clients (ServerAliveInterval) keep their own pace.
                "keepalive_interval_s": 2 * c.keepalive_interval_s,
                "keepalive_count": c.keepalive_count,
                "login_grace_s": LOGIN_GRACE_S,
                "forward_timeout_s": c.forward_timeout_s,
                "max_connections": c.max_connections,
                "max_unauthenticated_per_ip": c.max_unauthenticated_per_ip,
                "keys": list(self._authorized.values()),
                "listen_fd": fd,
                "tunnel_host": c.tunnel_host,
            }
        )
        assert proc.stdout is not None and proc.stderr is not None
        stderr_task = asyncio.get_running_loop().create_task(self._read_log(proc.stderr))
        try:
            first = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
        except TimeoutError:
            first = b""
        if not first.startswith(b'{"ev":"ready"'):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stderr_task, 1.0)
            raise EndpointError(
                f"{TUNNELD} did not start (exit status {proc.returncode}): "
                f"{self._last_log or 'no output'}"
            )
        loop = asyncio.get_running_loop()
        self._tasks = [stderr_task, loop.create_task(self._read_events(proc.stdout))]

    async def _read_log(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            text = line.decode("utf-8", "replace").rstrip()
            self._last_log = text
            level = logging.WARNING if text.startswith(("refused", TUNNELD)) else logging.DEBUG
            log.log(level, "tunneld: %s", text)

    async def _read_events(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            try:
                self._on_event(json.loads(line))
            except Exception:
                log.exception("tunnel endpoint: bad event from %s: %.200r", TUNNELD, line)

    def _on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("ev")
        if kind == "up":
            tunnel = TunnelConn(
                id=str(event["id"]),
                pid=self._pid,
                fingerprint=str(event["fp"]),
                client=str(event["client"]),
                port=int(event["port"]),
                connected_at=float(event["at"]),
            )
            if tunnel.fingerprint not in self._authorized:  # revoked while the event was queued
                self._send({"cmd": "kill", "id": tunnel.id, "why": "key revoked"})
                return
            self._up[tunnel.id] = tunnel
            log.info(
                "tunnel %s up: key %s from %s on 127.0.0.1:%d",
                tunnel.id,
                tunnel.fingerprint,
                tunnel.client,
                tunnel.port,
            )
            notify(self._on_up, tunnel, "on_up")
        elif kind == "down":
            gone = self._up.pop(str(event["id"]), None)
            if gone is not None:
                log.info(
                    "tunnel %s down: key %s, 127.0.0.1:%d: %s",
                    gone.id,
                    gone.fingerprint,
                    gone.port,
                    event.get("why", ""),
                )
                notify(self._on_down, gone, "on_down")

    def _send(self, message: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None or proc.stdin.is_closing():
            return
        proc.stdin.write(json.dumps(message).encode() + b"\n")

    async def _supervise(self) -> None:
        """Restart the daemon if it dies; its tunnels are down and their clients reconnect."""
        while not self._closing:
            proc = self._proc
            if proc is None:
                return
            rc = await proc.wait()
            if self._closing:
                return
            log.error(
                "%s (pid %d) exited with status %s: %s; restarting it",
                TUNNELD,
                proc.pid,
                rc,
                self._last_log,
            )
            await self._drain_tasks()
            self._all_down()
            if time.monotonic() - self._started < 5.0:
                await asyncio.sleep(RESTART_DELAY_S)
            while not self._closing:
                try:
                    await self._spawn()
                    break
                except EndpointError as exc:
                    log.error("cannot restart the tunnel endpoint: %s", exc.message)
                    await asyncio.sleep(5.0)

    async def _end_process(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            log.error("%s (pid %d) did not stop in time; killing it", TUNNELD, proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        await self._drain_tasks()
        self._all_down()
        self._proc = None

    async def _drain_tasks(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, 2.0)

    def _all_down(self) -> None:
        for tunnel in list(self._up.values()):
            del self._up[tunnel.id]
            notify(self._on_down, tunnel, "on_down")
