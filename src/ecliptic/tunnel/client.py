"""The platform side of a tunnel: bind a key with a one-time token, then keep ``ssh -R`` up.

    with TunnelClient(target=parse_target("http://localhost:8888"), state_dir=d,
                      api_url="http://127.0.0.1:8470", token="...") as tc:
        tc.associate()          # first run: key + POST /tunnels/associate; later: the saved one
        asyncio.run(tc.run())   # until tc.stop() (or, with once=True, until ssh exits)

The token can be used once, so everything the registrar answers is saved in the state
directory with the key it is bound to; later runs with the same directory need no token.
The tunnel itself is a stock ``ssh -N -R 0:HOST:PORT`` child (its own process group,
killed with its parent where ``setpriv`` exists), restarted forever with jittered
exponential backoff. What happens is reported one line per change and kept in
``status.json`` for ``ecliptic tunnel status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import httpx
import platformdirs
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ecliptic.client import DEFAULT_URL, ApiError, Client, normalize_url
from ecliptic.files import write_atomic

ASSOCIATE_PATH = "/tunnels/associate"
"""Registrar endpoint, under ``/api/v1``; takes no credentials but the token in the body."""
KEY_FILE = "id_ed25519"
ASSOCIATION_FILE = "association.json"
KNOWN_HOSTS_FILE = "known_hosts"
STATUS_FILE = "status.json"
LOCK_FILE = "lock"
HOST_KEY_ALIAS = "ecliptic-tunnel-gateway"
"""Name the gateway's pinned key is filed under, whatever host and port it is reached at."""

BACKOFF_BASE_S = 0.25
BACKOFF_FACTOR = 2.0
BACKOFF_CAP_S = 1.5
"""Longest pause between two attempts: a tunnel is back within ~2 s of the network."""
REFUSED_CAP_S = 15.0
"""Longest pause after the gateway refused the key or showed another host key: retrying
every second would only load the gateway (a revoked key would never stop knocking)."""
FRESH_KEY_S = 10.0
"""After binding its key, a client retries a refusal quickly for this long."""
STABLE_AFTER_S = 10.0
"""A connection up this long resets the backoff."""
HEALTH_PERIOD_S = 5.0
"""Seconds between two checks that the target answers."""
HEALTH_TIMEOUT_S = 3.0
STOP_GRACE_S = 3.0
"""Seconds ssh gets to exit after SIGTERM before it is killed."""

Protocol = Literal["http", "https", "tcp"]
_DEFAULT_PORTS = {"http": 80, "https": 443}
_ALLOCATED = re.compile(r"^Allocated port (\d+) for remote forward")
_REFUSED_BY_GATEWAY = (
    "Permission denied",
    "Host key verification failed",
    "REMOTE HOST IDENTIFICATION",
)


class TargetError(ValueError):
    """The ``--to`` URL cannot be forwarded."""

    code = "bad_target"


class StateError(Exception):
    """The state directory cannot be used (another client holds it, another token, ...)."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail


# -- what to forward ----------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """The local service the tunnel leads to."""

    protocol: Protocol
    """How the gateway talks to it: ``http``, ``https`` or raw ``tcp``."""
    host: str
    """Host name or address, as seen from this machine."""
    port: int
    """TCP port."""

    @property
    def url(self) -> str:
        """``scheme://host:port``, as the user wrote it."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.protocol}://{host}:{self.port}"

    @property
    def forward(self) -> str:
        """The ``-R`` argument: any free gateway port, to this host and port."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"0:{host}:{self.port}"


def parse_target(url: str) -> Target:
    """A ``--to`` URL (``http://host:port``, ``https://host:port``, ``tcp://host:port``)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise TargetError(f"'{url}' is not a URL: {exc}") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https", "tcp"):
        raise TargetError(f"'{url}': write http://HOST:PORT, https://HOST:PORT or tcp://HOST:PORT")
    if not parts.hostname:
        raise TargetError(f"'{url}' names no host: write {scheme}://HOST:PORT")
    if parts.username is not None or parts.password is not None:
        raise TargetError(f"'{url}': a user or password cannot be forwarded; remove it")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise TargetError(
            f"'{url}': only a host and port are forwarded, not a path; give the path to "
            "check with --liveness-path"
        )
    if port is None:
        if scheme == "tcp":
            raise TargetError(f"'{url}' has no port: write tcp://HOST:PORT")
        port = _DEFAULT_PORTS[scheme]
    if port == 0:
        raise TargetError(f"'{url}': port 0 cannot be forwarded")
    proto: Protocol = "http" if scheme == "http" else "https" if scheme == "https" else "tcp"
    return Target(protocol=proto, host=parts.hostname, port=port)


# -- what the registrar answers -------------------------------------------------------------

# Values that end up on ssh's command line or in known_hosts: nothing that could be read
# as an option ("-oProxyCommand=...") or a second line.
_SshUser = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}$")]
_SshHost = Annotated[
    str, StringConstraints(pattern=r"^(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|[0-9A-Fa-f:.]{2,45})$")
]
_HostKey = Annotated[
    str,
    StringConstraints(
        pattern=r"^(?:ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521)) [A-Za-z0-9+/]+={0,2}"
        r"(?: [\x20-\x7e]{0,200})?$"
    ),
]


class _Answer(BaseModel):
    # The registrar is ours but newer: fields this client does not know are ignored.
    model_config = ConfigDict(frozen=True, extra="ignore")


class GatewayEndpoint(_Answer):
    """Where the tunnel's ssh connects, and the host key to insist on."""

    host: _SshHost
    """Gateway host name or address."""
    port: int = Field(ge=1, le=65535)
    """Gateway SSH port."""
    user: _SshUser
    """User to sign in as (``tunnel``)."""
    host_key: _HostKey
    """The gateway's public host key, ``ssh-ed25519 AAAA...``: pinned, never learned."""


class Association(_Answer):
    """What the registrar answered: the service this key now serves."""

    service_id: str = Field(min_length=1, max_length=200)
    """Id of the service in Ecliptic."""
    subdomain: str = Field(min_length=1, max_length=253)
    """The subdomain label (``k3j9x2``)."""
    host: str = Field(min_length=1, max_length=253)
    """Full host name users reach (``k3j9x2.localhost``)."""
    url: str = Field(min_length=1, max_length=2000)
    """Public URL of the service."""
    ssh: GatewayEndpoint
    """The gateway's SSH endpoint."""


class SavedAssociation(BaseModel):
    """``association.json``: the registrar's answer, and what it was given for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api: str
    """Registrar the key was bound at."""
    token_sha256: str
    """SHA-256 of the token used, so a directory is never reused for another token."""
    protocol: Protocol
    """Protocol the service was registered with."""
    associated_at: datetime
    """When."""
    association: Association
    """The registrar's answer."""


# -- state of a running client ---------------------------------------------------------------


class TunnelState(StrEnum):
    """Life of the tunnel as the client sees it."""

    CONNECTING = "connecting"  # ssh started, the gateway has not granted the forward yet
    CONNECTED = "connected"  # the gateway allocated the forwarded port
    BACKOFF = "backoff"  # ssh exited; waiting before the next attempt
    STOPPED = "stopped"  # the client ended (stop asked, or once=True and ssh exited)


TUNNEL_MOVES: dict[TunnelState, frozenset[TunnelState]] = {
    TunnelState.CONNECTING: frozenset(
        {TunnelState.CONNECTED, TunnelState.BACKOFF, TunnelState.STOPPED}
    ),
    TunnelState.CONNECTED: frozenset({TunnelState.BACKOFF, TunnelState.STOPPED}),
    TunnelState.BACKOFF: frozenset({TunnelState.CONNECTING, TunnelState.STOPPED}),
    TunnelState.STOPPED: frozenset(),
}


class IllegalMove(Exception):
    """A state change ``TUNNEL_MOVES`` does not allow (a bug)."""

    code = "illegal_transition"


def check_move(current: TunnelState, new: TunnelState) -> None:
    """Refuse a move the table does not allow; staying in a state is always allowed."""
    if new != current and new not in TUNNEL_MOVES[current]:
        raise IllegalMove(f"tunnel cannot go from {current} to {new}")


class TunnelStatus(BaseModel):
    """``status.json``: what the client is doing, for ``ecliptic tunnel status``."""

    model_config = ConfigDict(frozen=True)

    state: TunnelState
    """Where the tunnel is in ``TUNNEL_MOVES``."""
    subdomain: str
    """The service's subdomain label (``k3j9x2``)."""
    url: str
    """Public URL of the service."""
    since: datetime
    """When the tunnel entered ``state``."""
    reconnects: int
    """How many times ssh was started again since the client started."""
    target_ok: bool | None
    """Whether the local target answered its last check (None: not checked yet)."""
    last_error: str | None
    """Why ssh last ended (None: it has not ended yet)."""


def backoff_delay(attempt: int, rand: float, cap: float = BACKOFF_CAP_S) -> float:
    """Full-jitter exponential backoff: ``rand`` (0..1) times min(cap, base * factor^n)."""
    ceiling = min(cap, BACKOFF_BASE_S * BACKOFF_FACTOR ** min(attempt, 32))
    return max(0.0, min(1.0, rand)) * ceiling


def default_state_dir(token: str) -> Path:
    """``~/.local/state/ecliptic/tunnel/<sha256(token)[:12]>`` (honours XDG_STATE_HOME)."""
    return Path(platformdirs.user_state_dir("ecliptic")) / "tunnel" / token_hash(token)[:12]


def token_hash(token: str) -> str:
    """SHA-256 of a token, hex: what is stored instead of the token."""
    return hashlib.sha256(token.encode()).hexdigest()


def read_status(state_dir: Path) -> tuple[TunnelStatus, bool] | None:
    """The saved status of a state directory and whether a client runs on it; None if none."""
    try:
        status = TunnelStatus.model_validate_json((state_dir / STATUS_FILE).read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError) as exc:
        raise StateError("bad_state", f"cannot read {state_dir / STATUS_FILE}: {exc}") from None
    return status, _locked(state_dir / LOCK_FILE)


def _locked(path: Path) -> bool:
    """Whether some process holds the lock file (a client runs on this directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def ssh_command(assoc: Association, target: Target, state_dir: Path, ssh: str = "ssh") -> list[str]:
    """The stock OpenSSH command that keeps one tunnel up."""
    gw = assoc.ssh
    return [
        ssh,
        "-N",
        "-R", target.forward,
        "-p", str(gw.port),
        "-i", str(state_dir / KEY_FILE),
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", "ExitOnForwardFailure=yes",
        "-o", "ServerAliveInterval=2",
        "-o", "ServerAliveCountMax=3",
        "-o", f"UserKnownHostsFile={state_dir / KNOWN_HOSTS_FILE}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", f"HostKeyAlias={HOST_KEY_ALIAS}",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UpdateHostKeys=no",
        "-o", "ConnectTimeout=5",
        f"{gw.user}@{gw.host}",
    ]  # fmt: skip


@dataclass
class _Attempt:
    """What one ssh run told on stderr."""

    up_at: float = 0.0
    """monotonic() when the gateway granted the forward; 0 while it has not."""
    last_line: str = ""
    """Its last line that was not the "Allocated port" notice: why it ended, usually."""


@dataclass(frozen=True)
class RunResult:
    """How ``run`` ended."""

    stopped: bool
    """True when ``stop`` ended it; False when ssh ended on its own (``once=True``)."""
    reason: str
    """Why it ended, for people."""


class TunnelClient:
    """Binds a key with a one-time token once, then keeps an ``ssh -R`` tunnel up."""

    def __init__(
        self,
        *,
        target: Target,
        state_dir: Path,
        api_url: str = DEFAULT_URL,
        token: str | None = None,
        liveness_path: str | None = None,
        liveness_period_s: int | None = None,
        read_timeout_s: int | None = None,
        once: bool = False,
        report: Callable[[str], None] | None = None,
        health_period_s: float = HEALTH_PERIOD_S,
        ssh: str = "ssh",
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.target = target
        self.state_dir = state_dir
        self.api_url = normalize_url(api_url)
        self.token = token
        self.liveness_path = liveness_path
        self.liveness_period_s = liveness_period_s
        self.read_timeout_s = read_timeout_s
        self.once = once
        self._report = report or _print_stderr
        self._health_period = health_period_s
        self._ssh = ssh
        self._rand = rand
        self._lock_fd: int | None = None
        self._saved: SavedAssociation | None = None
        self._stop: asyncio.Event | None = None
        self._stop_asked = False
        self._stop_reason = "stopped"
        self._state = TunnelState.CONNECTING
        self._since = _now()
        self._reconnects = 0
        self._target_ok: bool | None = None
        self._last_error: str | None = None
        self._associated_at = -FRESH_KEY_S

    # -- the state directory

    def __enter__(self) -> TunnelClient:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Create the state directory (0700) and take its lock: one client per directory."""
        if self._lock_fd is not None:
            return
        try:
            self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(self.state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StateError(
                "bad_state", f"cannot use {self.state_dir} as state directory: {exc}"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateError(
                "in_use",
                f"another 'ecliptic tunnel connect' runs with {self.state_dir}; stop it "
                "first, or give another --state-dir",
            ) from None
        self._lock_fd = fd

    def close(self) -> None:
        """Release the state directory."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- association

    def associate(self) -> SavedAssociation:
        """The saved association, or (first run) a new key bound with the token."""
        self.open()
        saved = self._load()
        if saved is None:
            saved = self._associate()
            self._associated_at = time.monotonic()
        else:
            if self.token is not None and token_hash(self.token) != saved.token_sha256:
                raise StateError(
                    "other_token",
                    f"{self.state_dir} holds the tunnel of another token; give another "
                    "--state-dir for this one",
                )
            if saved.protocol != self.target.protocol:
                raise StateError(
                    "other_protocol",
                    f"this tunnel was registered for {saved.protocol}, not "
                    f"{self.target.protocol}: use a {saved.protocol}:// --to, or a new token",
                )
        self._write_known_hosts(saved.association)
        self._saved = saved
        return saved

    def _load(self) -> SavedAssociation | None:
        path = self.state_dir / ASSOCIATION_FILE
        try:
            return SavedAssociation.model_validate_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError) as exc:
            raise StateError(
                "bad_state",
                f"cannot read {path} ({exc}); the token it was made with is used up, so "
                "ask for a new token and use a new --state-dir",
            ) from None

    def _associate(self) -> SavedAssociation:
        if not self.token:
            raise StateError(
                "no_token", f"{self.state_dir} holds no tunnel yet: give the token (--token)"
            )
        public_key = self._ensure_key()
        body: dict[str, object] = {
            "token": self.token,
            "public_key": public_key,
            "protocol": self.target.protocol,
        }
        if self.liveness_path is not None:
            body["liveness_path"] = self.liveness_path
        if self.liveness_period_s is not None:
            body["liveness_period_s"] = self.liveness_period_s
        if self.read_timeout_s is not None:
            body["read_timeout_s"] = self.read_timeout_s
        with Client(self.api_url, timeout=15) as api:
            resp = api.request("POST", ASSOCIATE_PATH, json=body)
        try:
            assoc = Association.model_validate_json(resp.content)
        except ValidationError as exc:
            raise ApiError(
                502, "bad_response", f"{self.api_url} answered an unusable association: {exc}"
            ) from None
        saved = SavedAssociation(
            api=self.api_url,
            token_sha256=token_hash(self.token),
            protocol=self.target.protocol,
            associated_at=_now(),
            association=assoc,
        )
        # The token is used up now: this file is the only record of what it bought.
        write_atomic(
            self.state_dir / ASSOCIATION_FILE, saved.model_dump_json(indent=2) + "\n", mode=0o600
        )
        self._report(f"associated: {assoc.url} now leads to {self.target.url}")
        return saved

    def _ensure_key(self) -> str:
        """The public key line of the state directory's key, generated on first use."""
        key = self.state_dir / KEY_FILE
        pub = self.state_dir / f"{KEY_FILE}.pub"
        if not key.exists():
            _keygen("-q", "-t", "ed25519", "-N", "", "-C", "ecliptic-tunnel", "-f", str(key))
        if not pub.exists():  # interrupted between the two files: derive it again
            write_atomic(pub, _keygen("-y", "-f", str(key)), mode=0o600)
        try:
            return pub.read_text().strip()
        except OSError as exc:
            raise StateError("bad_state", f"cannot read {pub}: {exc}") from None

    def _write_known_hosts(self, assoc: Association) -> None:
        write_atomic(
            self.state_dir / KNOWN_HOSTS_FILE,
            f"{HOST_KEY_ALIAS} {assoc.ssh.host_key}\n",
            mode=0o600,
        )

    # -- running

    def stop(self, reason: str = "stopped") -> None:
        """Ask ``run`` to end: ssh is terminated and the status says ``stopped``."""
        self._stop_reason = reason
        self._stop_asked = True
        if self._stop is not None:
            self._stop.set()

    async def run(self) -> RunResult:
        """Keep the tunnel up until ``stop``; with ``once``, until ssh exits."""
        saved = self._saved or self.associate()
        assoc = saved.association
        if shutil.which(self._ssh) is None:
            raise StateError("no_ssh", f"'{self._ssh}' is not installed (package openssh-client)")
        self._stop = asyncio.Event()
        if self._stop_asked:
            self._stop.set()
        self._state, self._since, self._reconnects = TunnelState.CONNECTING, _now(), 0
        self._save_status()
        health = asyncio.create_task(self._watch_target())
        attempt = 0
        try:
            while not self._stop.is_set():
                error, up_for = await self._run_ssh(assoc)
                if self._stop.is_set():
                    break
                self._last_error = error
                if self.once:
                    self._move(TunnelState.STOPPED)
                    return RunResult(stopped=False, reason=error)
                if up_for >= STABLE_AFTER_S:
                    attempt = 0
                # A key just bound may reach the gateway's replicas a moment after the
                # exchange: a refusal then is retried as quickly as a network error.
                fresh = time.monotonic() - self._associated_at < FRESH_KEY_S
                refused = any(s in error for s in _REFUSED_BY_GATEWAY) and not fresh
                delay = backoff_delay(
                    attempt, self._rand(), REFUSED_CAP_S if refused else BACKOFF_CAP_S
                )
                attempt += 1
                self._move(TunnelState.BACKOFF)
                self._report(f"reconnecting in {delay:.1f} s ({error})")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
                if not self._stop.is_set():
                    self._reconnects += 1
            self._move(TunnelState.STOPPED)
            return RunResult(stopped=True, reason=self._stop_reason)
        finally:
            health.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await health
            if self._state != TunnelState.STOPPED:
                self._move(TunnelState.STOPPED)

    async def _run_ssh(self, assoc: Association) -> tuple[str, float]:
        """Run ssh once; returns why it ended and how long the forward was up."""
        assert self._stop is not None
        self._move(TunnelState.CONNECTING)
        cmd = ssh_command(assoc, self.target, self.state_dir, self._ssh)
        setpriv = shutil.which("setpriv")
        if setpriv is not None:  # ssh dies with this process, even on SIGKILL
            cmd = [setpriv, "--pdeathsig", "TERM", "--", *cmd]
        try:
            proc = await asyncio.create_subprocess_exec(
                *cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                start_new_session=True,  # a Ctrl-C in the terminal is ours to pass on
            )
        except OSError as exc:
            return f"cannot start ssh: {exc}", 0.0
        seen = _Attempt()
        reader = asyncio.create_task(self._read_stderr(proc, assoc, seen))
        exited = asyncio.create_task(proc.wait())
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done():
                await _terminate(proc, exited)
        finally:
            stopping.cancel()
            if not exited.done():  # cancelled from outside: never leave ssh behind
                await _terminate(proc, exited)
            try:
                await asyncio.wait_for(reader, 1.0)
            except (TimeoutError, asyncio.CancelledError):
                reader.cancel()
        up_for = time.monotonic() - seen.up_at if seen.up_at else 0.0
        rc = proc.returncode or 0
        why = f"ssh exited {rc}" if rc >= 0 else f"ssh killed by signal {-rc}"
        return (f"{why}: {seen.last_line}" if seen.last_line else why), up_for

    async def _read_stderr(
        self,
        proc: asyncio.subprocess.Process,
        assoc: Association,
        seen: _Attempt,
    ) -> None:
        assert proc.stderr is not None
        while True:
            raw = await proc.stderr.readline()
            if not raw:
                return
            line = raw.decode(errors="replace").strip()
            if not line:
                continue
            if _ALLOCATED.match(line):
                if not seen.up_at:
                    seen.up_at = time.monotonic()
                    self._last_error = None  # up again: an old failure is not news
                    self._move(TunnelState.CONNECTED)
                    self._report(f"connected to {assoc.ssh.host}:{assoc.ssh.port} as {assoc.host}")
                continue
            seen.last_line = line[:300]

    async def _watch_target(self) -> None:
        while True:
            try:
                ok, why = await check_target(self.target, self.liveness_path)
            except Exception as exc:  # a failed check must not end the watch
                ok, why = False, f"{type(exc).__name__}: {exc}"
            if ok != self._target_ok:
                if not ok:
                    self._report(f"target {self.target.url} is not answering ({why})")
                elif self._target_ok is False:
                    self._report(f"target {self.target.url} is answering again")
                self._target_ok = ok
                self._save_status()
            await asyncio.sleep(self._health_period)

    def _move(self, new: TunnelState) -> None:
        check_move(self._state, new)
        if new != self._state:
            self._state, self._since = new, _now()
        self._save_status()

    def status(self) -> TunnelStatus:
        """What the client is doing now."""
        assoc = self._saved.association if self._saved else None
        return TunnelStatus(
            state=self._state,
            subdomain=assoc.subdomain if assoc else "",
            url=assoc.url if assoc else "",
            since=self._since,
            reconnects=self._reconnects,
            target_ok=self._target_ok,
            last_error=self._last_error,
        )

    def _save_status(self) -> None:
        try:
            write_atomic(
                self.state_dir / STATUS_FILE,
                self.status().model_dump_json(indent=2) + "\n",
                mode=0o600,
            )
        except OSError as exc:  # the tunnel matters more than its status file
            self._report(f"cannot write {self.state_dir / STATUS_FILE}: {exc}")


async def check_target(target: Target, liveness_path: str | None) -> tuple[bool, str]:
    """Whether the target answers here: a TCP connect, or a GET of the liveness path."""
    if liveness_path and target.protocol in ("http", "https"):
        url = target.url + "/" + liveness_path.lstrip("/")
        try:
            # verify=False: a local service's certificate is often self-signed, and this
            # checks that it answers, not who it is; trust_env=False: no proxy for it.
            async with httpx.AsyncClient(
                verify=False, trust_env=False, timeout=HEALTH_TIMEOUT_S
            ) as http:
                resp = await http.get(url)
        except httpx.HTTPError as exc:
            return False, f"GET {liveness_path}: {str(exc) or type(exc).__name__}"
        if 200 <= resp.status_code < 400:
            return True, ""
        return False, f"GET {liveness_path} answered {resp.status_code}"
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(target.host, target.port), HEALTH_TIMEOUT_S
        )
    except TimeoutError:
        return False, "no answer within 3 s"
    except OSError as exc:  # asyncio's messages name the address; the errno is what matters
        return False, os.strerror(exc.errno).lower() if exc.errno else str(exc)
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True, ""


async def _terminate(proc: asyncio.subprocess.Process, exited: asyncio.Task[int]) -> None:
    """Stop ssh by its pid: SIGTERM, again every 0.5 s, SIGKILL after ``STOP_GRACE_S``.

    OpenSSH 9.2's client notes SIGTERM in a flag and then blocks in poll(): a signal that
    lands just before the poll waits for the next packet (seen in about 1 of 4 tries in
    tests). A second SIGTERM interrupts the poll.
    """
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(exited), 0.5)
            return
        except TimeoutError:
            continue
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGKILL)
    await exited


def _keygen(*args: str) -> str:
    """Run ssh-keygen; its stdout."""
    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise StateError("no_ssh", "ssh-keygen is not installed (package openssh-client)")
    res = subprocess.run([keygen, *args], stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if res.returncode != 0:
        raise StateError("keygen_failed", f"ssh-keygen failed: {res.stderr.strip()}")
    return res.stdout


def _now() -> datetime:
    return datetime.now(UTC)


def _print_stderr(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


__all__ = [
    "Association",
    "GatewayEndpoint",
    "IllegalMove",
    "RunResult",
    "SavedAssociation",
    "StateError",
    "Target",
    "TargetError",
    "TunnelClient",
    "TunnelState",
    "TunnelStatus",
    "backoff_delay",
    "check_move",
    "check_target",
    "default_state_dir",
    "parse_target",
    "read_status",
]
