"""SSH jump host for TCP services behind tunnels: ``ssh -J alice@gateway:2223 k3j9x2``.

A user's OpenSSH client signs in here with a public key, then asks for a ``direct-tcpip``
channel to ``k3j9x2`` port 22 (that is all ``-J`` and ``-W`` do). The channel is spliced to
the loopback port where that service's tunnel ends, as ``resolve`` says.

Threat model: anyone on the internet can reach this port. Only public-key sign-in is
offered; ``authenticate`` decides who the key belongs to and ``resolve`` whether that
principal may reach that service. Nothing else is served: no shell, command, subsystem,
remote forward (``-R``), Unix socket, agent or X11 forwarding. Only AES-GCM is offered
(see ``ENCRYPTION_ALGS``), the cheapest cipher for asyncssh on AES-NI hardware.
An exception escaping an asyncssh callback closes the whole SSH connection with every
channel on it, so every callback here turns failures into a refusal of that one request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import asyncssh

from ecliptic import hostkeys
from ecliptic.tunnel.front import (
    GRANT_HEADER,
    PEER_SERVICE_HEADER,
    PEER_TCP_HOST,
    PEER_TCP_PATH,
    PEER_TCP_UPGRADE,
    PEER_TLS_NAME,
)

log = logging.getLogger(__name__)

ENCRYPTION_ALGS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
"""Ciphers offered. The client's order wins, and OpenSSH lists chacha20, then aes-ctr, then
aes-gcm: offering either of the first two means getting it. Through this host, 500 MB took
1.0-1.1 s with aes128-gcm and 1.5 s with aes128-ctr (+umac); chacha20 costs asyncssh about
twice aes-gcm. Every OpenSSH since 6.2 and PuTTY since 0.76 speak aes-gcm."""
KEEPALIVE_INTERVAL_S = 10
"""Seconds of silence before the server probes a client."""
KEEPALIVE_COUNT_MAX = 3
"""Unanswered probes before a client is dropped."""
LOGIN_TIMEOUT_S = 20
"""Seconds a client has to sign in."""
MAX_UNAUTHENTICATED_PER_IP = 50
"""Connections from one address not yet signed in; more are closed at once (as tunneld
does), so one address cannot hold thousands open for the login grace."""
CONNECT_TIMEOUT_S = 10
"""Seconds to wait for the tunnel's loopback port to accept a connection."""
REVALIDATE_S = 5.0
"""How often every signed-in connection's key is checked again: a user disabled or removed,
or a key revoked, loses open connections within this time (new ones at once)."""
SERVER_VERSION = "EclipticJump"
"""Software name in the SSH banner (no library version to fingerprint)."""
NOT_A_SHELL = "this is a jump host for Ecliptic services: use 'ssh -J USER@GATEWAY:PORT SERVICE'"

T = TypeVar("T")


@dataclass(frozen=True)
class JumpPrincipal:
    """Who signed in to the jump host."""

    user_id: str
    """Stable id of the user the key belongs to."""
    username: str
    """The user's name, for logs and messages."""


@dataclass(frozen=True)
class PeerHop:
    """A TCP service whose tunnels are on other replicas: reach it through their fronts."""

    peers: tuple[str, ...]
    """``ip:port`` of the fronts of the live replicas holding a tunnel, tried in order."""
    service: str
    """The service's subdomain."""
    grant: str
    """The per-hop grant naming the user and the service (``X-Ecliptic-Grant``)."""
    tls: ssl.SSLContext
    """Client context for peers' listeners: the instance's peer certificate both ways."""


class JumpRefused(Exception):
    """A channel the principal may not open; the message is shown to the user."""

    code = "jump_refused"


Authenticate = Callable[[str, str], JumpPrincipal | None]
"""``(ssh user name, "ssh-ed25519 AAAA..." key line)`` -> principal, or None to refuse."""
Resolve = Callable[[JumpPrincipal, str, int], "int | PeerHop"]
"""``(principal, host, port)`` -> port on ``JumpHost``'s ``target_host`` to connect to, or
the peers to go through; raises ``JumpRefused``."""


class JumpHost:
    """An SSH server that only opens ``direct-tcpip`` channels to tunnelled services."""

    def __init__(
        self,
        *,
        bind_host: str,
        port: int,
        host_key: Path,
        authenticate: Authenticate,
        resolve: Resolve,
        revalidate_s: float = REVALIDATE_S,
        target_host: str = "127.0.0.1",
    ) -> None:
        self._revalidate_s = revalidate_s
        self.target_host = target_host
        """Loopback address of the ports ``resolve`` answers (the tunnels')."""
        self._sweeper: asyncio.Task[None] | None = None
        self._bind_host = bind_host
        self._port = port
        self._host_key = host_key
        self._authenticate = authenticate
        self._resolve = resolve
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._connections: set[_JumpConnection] = set()
        self._unauthenticated: dict[str, int] = {}
        self._refused_logged = 0.0

    @property
    def port(self) -> int:
        """The port listened on (the real one once started, also when asked for 0)."""
        return self._port

    async def start(self) -> None:
        """Listen for SSH connections; creates the host key if it does not exist."""
        if self._acceptor is not None:
            return
        key = ensure_host_key(self._host_key)
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="ecl-jump")
        try:
            self._acceptor = await asyncssh.create_server(
                lambda: _JumpConnection(self),
                self._bind_host,
                self._port,
                server_host_keys=[key],
                server_version=SERVER_VERSION,
                encryption_algs=list(ENCRYPTION_ALGS),
                public_key_auth=True,
                password_auth=False,
                kbdint_auth=False,
                host_based_auth=False,
                gss_host=None,  # no GSS, and no getfqdn() DNS lookup at start
                gss_kex=False,
                gss_auth=False,
                allow_pty=False,
                agent_forwarding=False,
                x11_forwarding=False,
                allow_scp=False,
                line_editor=False,
                login_timeout=LOGIN_TIMEOUT_S,
                keepalive_interval=KEEPALIVE_INTERVAL_S,
                keepalive_count_max=KEEPALIVE_COUNT_MAX,
            )
        except BaseException:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
            raise
        self._port = self._acceptor.get_port()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        log.info("jump host listening on %s:%d", self._bind_host, self._port)

    async def stop(self) -> None:
        """Stop listening and close every open connection and its channels."""
        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None:
            acceptor.close()
            await acceptor.wait_closed()
        connections = list(self._connections)
        for c in connections:
            c.close()
        for c in connections:
            await c.wait_closed()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        """Run a blocking callback (it may hit a database) off the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def _sweep(self) -> None:
        """Close connections whose key no longer signs its user in (disabled, removed or
        revoked), every ``revalidate_s``."""
        while True:
            await asyncio.sleep(self._revalidate_s)
            try:
                await self.revalidate()
            except Exception:
                log.exception("jump: revalidating signed-in connections failed")

    async def revalidate(self) -> int:
        """Check every signed-in connection's key again now; returns how many were closed.
        A check that fails (the store is down) keeps the connection: it is tried again."""
        signed: dict[tuple[str, str], list[_JumpConnection]] = {}
        for c in list(self._connections):
            if c.signed_in is not None:
                signed.setdefault(c.signed_in[:2], []).append(c)
        closed = 0
        for (username, line), conns in signed.items():
            try:
                now = await self._call(self._authenticate, username, line)
            except Exception:
                log.warning(
                    "jump: could not check %s's key again; keeping the connection", username
                )
                continue
            for c in conns:
                assert c.signed_in is not None
                if now is None or now.user_id != c.signed_in[2]:
                    log.info("jump: %s may no longer sign in; closing %s", username, c.peer)
                    c.close()
                    closed += 1
                elif not await self._still_reaches(now, c):
                    c.close()
                    closed += 1
        return closed

    async def _still_reaches(self, principal: JumpPrincipal, c: _JumpConnection) -> bool:
        """False when the user may no longer reach a service this connection opened a
        channel to (taken off its access list, or the service is gone)."""
        for host, port in sorted(c.opened):
            try:
                await self._call(self._resolve, principal, host, port)
            except JumpRefused as exc:
                log.info(
                    "jump: %s may no longer reach %s:%d (%s); closing %s",
                    principal.username,
                    host,
                    port,
                    exc,
                    c.peer,
                )
                return False
            except Exception:
                log.warning("jump: could not check %s's access to %s; keeping it", principal, host)
        return True

    def _track(self, conn: _JumpConnection, alive: bool) -> None:
        if alive:
            self._connections.add(conn)
        else:
            self._connections.discard(conn)

    def _admit(self, ip: str) -> bool:
        """Count one more connection from ``ip`` not yet signed in, unless it already has
        ``MAX_UNAUTHENTICATED_PER_IP``."""
        held = self._unauthenticated.get(ip, 0)
        if held >= MAX_UNAUTHENTICATED_PER_IP:
            if time.monotonic() - self._refused_logged >= 10:
                self._refused_logged = time.monotonic()
                log.warning("jump: refusing connections from %s: too many not signed in", ip)
            return False
        self._unauthenticated[ip] = held + 1
        return True

    def _settled(self, ip: str) -> None:
        """One connection from ``ip`` signed in or went away."""
        held = self._unauthenticated.get(ip, 0)
        if held <= 1:
            self._unauthenticated.pop(ip, None)
        else:
            self._unauthenticated[ip] = held - 1


def ensure_host_key(path: Path) -> asyncssh.SSHKey:
    """The ed25519 host key at ``path``, written there (mode 0600) first if missing."""
    hostkeys.ensure_key_file(path)
    return asyncssh.read_private_key(str(path))


def _refuse(reason: str, code: int = asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED) -> Exception:
    return asyncssh.ChannelOpenError(code, reason)


class _JumpConnection(asyncssh.SSHServer):
    """One client's SSH connection: who signed in, and the channels it may open."""

    def __init__(self, host: JumpHost) -> None:
        self._host = host
        self._conn: asyncssh.SSHServerConnection | None = None
        self._peer = "?"
        self._username = ""
        self._known: dict[str, JumpPrincipal | None] = {}
        self._last: JumpPrincipal | None = None
        self._last_key: tuple[str, str] = ("", "")
        self._principal: JumpPrincipal | None = None
        self.signed_in: tuple[str, str, str] | None = None
        """(ssh user name, key line, user id) once signed in: checked again while open."""
        self.opened: set[tuple[str, int]] = set()
        """Services this connection opened channels to: access to each is checked again."""
        self._closed = asyncio.Event()
        self._pending_ip: str | None = None

    # -- life of the connection

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        try:
            self._conn = conn
            peer = conn.get_extra_info("peername") or ("?", 0)
            self._peer = f"{peer[0]}:{peer[1]}"
            self._host._track(self, True)
            if not self._host._admit(str(peer[0])):
                conn.abort()
                return
            self._pending_ip = str(peer[0])
        except Exception:
            log.exception("jump: bookkeeping of a new connection failed")

    def _settle(self) -> None:
        if self._pending_ip is not None:
            self._host._settled(self._pending_ip)
            self._pending_ip = None

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self._settle()
            self._host._track(self, False)
            self._closed.set()
            if self._principal is not None:
                log.info("jump: %s (%s) left", self._principal.username, self._peer)
        except Exception:
            log.exception("jump: bookkeeping of a closed connection failed")

    @property
    def peer(self) -> str:
        """``ip:port`` of the client."""
        return self._peer

    def close(self) -> None:
        """Close this connection (the jump host is stopping, or its user may no longer sign
        in)."""
        if self._conn is not None:
            self._conn.close()
        else:
            self._closed.set()

    async def wait_closed(self) -> None:
        """Wait until the connection is gone."""
        try:
            await asyncio.wait_for(self._closed.wait(), timeout=5)
        except TimeoutError:
            log.warning("jump: connection from %s did not close in time", self._peer)

    # -- sign-in: public keys only

    def begin_auth(self, username: str) -> bool:
        self._username = username
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def kbdint_auth_supported(self) -> bool:
        return False

    def host_based_auth_supported(self) -> bool:
        return False

    async def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        # asyncssh calls this for a key the client merely offers (no signature yet) and
        # again for the signed request, then verifies the signature right away, with no
        # await in between: the principal of the *last* call is the one that signed in.
        # A probe for someone else's public key therefore never binds this connection.
        try:
            line = key.export_public_key("openssh").decode("ascii").strip()
            cache_key = f"{username}\0{line}"
            if cache_key not in self._known:
                self._known[cache_key] = await self._host._call(
                    self._host._authenticate, username, line
                )
            principal = self._known[cache_key]
            self._last = principal
            self._last_key = (username, line)
            return principal is not None
        except Exception:
            log.exception("jump: authenticate() failed for %s from %s", username, self._peer)
            self._last = None
            return False

    def auth_completed(self) -> None:
        try:
            self._settle()
            self._principal = self._last
            if self._principal is not None:
                self.signed_in = (*self._last_key, self._principal.user_id)
                log.info(
                    "jump: %s (user %s) signed in from %s",
                    self._principal.username,
                    self._principal.user_id,
                    self._peer,
                )
        except Exception:
            log.exception("jump: auth_completed failed")

    # -- what may be opened: direct-tcpip only

    def session_requested(self) -> bool:
        raise _refuse(NOT_A_SHELL)

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        return False  # "-R": remote forwarding is refused

    def unix_connection_requested(self, dest_path: str) -> bool:
        raise _refuse("only TCP services can be reached through this jump host")

    def unix_server_requested(self, listen_path: str) -> bool:
        return False

    def connection_requested(
        self, dest_host: str, dest_port: int, orig_host: str, orig_port: int
    ) -> Awaitable[asyncssh.SSHTCPSession[bytes]]:
        # asyncssh awaits what this returns and turns a ChannelOpenError into a refusal
        # of this channel only; _open makes sure nothing else escapes.
        return self._open(dest_host, dest_port)

    async def _open(self, host: str, port: int) -> asyncssh.SSHTCPSession[bytes]:
        principal, conn = self._principal, self._conn
        if principal is None or conn is None or self.signed_in is None:
            raise _refuse("sign in first")
        where = f"{host}:{port}"
        # Every channel checks the key and its user again (disabled, removed, key revoked
        # since sign-in: the connection goes), then the access list (resolve).
        username, line, user_id = self.signed_in
        try:
            now = await self._host._call(self._host._authenticate, username, line)
        except Exception:
            log.exception("jump: authenticate() failed for %s from %s", username, self._peer)
            raise _refuse(
                f"{where}: the gateway could not check your key, try again later",
                asyncssh.OPEN_CONNECT_FAILED,
            ) from None
        if now is None or now.user_id != user_id:
            log.info("jump: %s may no longer sign in; closing %s", username, self._peer)
            conn.close()
            raise _refuse("your key no longer signs you in")
        try:
            local_port = await self._host._call(self._host._resolve, principal, host, port)
        except JumpRefused as exc:
            log.info("jump: %s refused %s: %s", principal.username, where, exc)
            raise _refuse(str(exc) or f"{where} is not available to you") from None
        except Exception:
            log.exception("jump: resolve() failed for %s -> %s", principal.username, where)
            raise _refuse(
                f"{where}: the gateway could not look it up, try again later",
                asyncssh.OPEN_CONNECT_FAILED,
            ) from None
        self.opened.add((host, port))
        if isinstance(local_port, PeerHop):
            return await _via_peer(principal.username, where, local_port)
        if not isinstance(local_port, int) or isinstance(local_port, bool):
            log.error("jump: resolve() returned %r for %s", local_port, where)
            raise _refuse(f"{where}: gateway error", asyncssh.OPEN_CONNECT_FAILED)
        if not 0 < local_port < 65536:
            log.error("jump: resolve() returned port %d for %s", local_port, where)
            raise _refuse(f"{where}: gateway error", asyncssh.OPEN_CONNECT_FAILED)
        try:
            forwarder = await asyncio.wait_for(
                conn.forward_connection(self._host.target_host, local_port), CONNECT_TIMEOUT_S
            )
        except (asyncssh.ChannelOpenError, OSError, TimeoutError) as exc:
            log.info("jump: %s -> %s (port %d): %s", principal.username, where, local_port, exc)
            raise _refuse(
                f"{where} is not answering: its tunnel may be down", asyncssh.OPEN_CONNECT_FAILED
            ) from None
        except Exception:
            log.exception("jump: connecting %s to port %d failed", where, local_port)
            raise _refuse(f"{where}: gateway error", asyncssh.OPEN_CONNECT_FAILED) from None
        log.info("jump: %s opened %s", principal.username, where)
        # asyncssh's own splice (it also serves "-L"); it is a session in all but name
        return cast(asyncssh.SSHTCPSession[bytes], forwarder)


def peer_client_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.3 to a peer's listener: present the instance's peer certificate, and accept
    only that certificate from the other side."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cert)
    context.check_hostname = True
    return context


async def open_peer_stream(
    peer: str,
    service: str,
    grant: str,
    tls: ssl.SSLContext,
    timeout: float = CONNECT_TIMEOUT_S,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A raw stream to ``service`` through the peer listener at ``ip:port``: an HTTP/1.1
    upgrade over mutual TLS with the per-hop grant, answered ``101`` by the peer's relay.
    Raises ``OSError`` (or ``TimeoutError``) when the peer does not take it."""
    host, _, port = peer.rpartition(":")
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            host.strip("[]"), int(port), ssl=tls, server_hostname=PEER_TLS_NAME
        ),
        timeout,
    )
    try:
        writer.write(
            (
                f"GET {PEER_TCP_PATH} HTTP/1.1\r\nHost: {PEER_TCP_HOST}\r\n"
                f"Connection: Upgrade\r\nUpgrade: {PEER_TCP_UPGRADE}\r\n"
                f"{GRANT_HEADER}: {grant}\r\n{PEER_SERVICE_HEADER}: {service}\r\n\r\n"
            ).encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = head.split(b"\r\n", 1)[0].split()
        if len(status) < 2 or status[1] != b"101":
            raise ConnectionRefusedError(f"peer {peer} answered {head[:200]!r}")
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def _via_peer(user: str, where: str, hop: PeerHop) -> asyncssh.SSHTCPSession[bytes]:
    for peer in hop.peers:
        try:
            reader, writer = await open_peer_stream(peer, hop.service, hop.grant, hop.tls)
        except (
            OSError,
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as exc:
            log.info("jump: %s -> %s via peer %s: %s", user, where, peer, exc)
            continue
        log.info("jump: %s opened %s via peer %s", user, where, peer)
        return _StreamRelay(reader, writer)
    raise _refuse(f"{where} is not answering: its tunnel may be down", asyncssh.OPEN_CONNECT_FAILED)


class _StreamRelay(asyncssh.SSHTCPSession[bytes]):
    """Splices a user's ``direct-tcpip`` channel to a stream, with flow control both ways."""

    HIGH_WATER = 1 << 20

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader, self._writer = reader, writer
        self._chan: asyncssh.SSHTCPChannel[bytes] | None = None
        self._pump_task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        self._writable = asyncio.Event()
        self._writable.set()

    def connection_made(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        self._chan = chan
        self._pump_task = asyncio.ensure_future(self._pump(chan))

    async def _pump(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        try:
            while data := await self._reader.read(65536):
                await self._writable.wait()
                chan.write(data)
            chan.write_eof()
        except (OSError, asyncssh.Error):
            pass
        chan.close()  # the peer's stream is over: nothing more can pass either way

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self._writer.write(data)
        chan = self._chan
        if chan is not None and self._writer.transport.get_write_buffer_size() > self.HIGH_WATER:
            chan.pause_reading()
            self._drain_task = asyncio.ensure_future(self._drain(chan))

    async def _drain(self, chan: asyncssh.SSHTCPChannel[bytes]) -> None:
        with contextlib.suppress(OSError):
            await self._writer.drain()
        chan.resume_reading()

    def eof_received(self) -> bool:
        # Not passed on: a front ends an upgraded connection as soon as either side
        # half-closes, which would lose the service's answer. The service ends the stream.
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pump_task is not None:
            self._pump_task.cancel()
        self._writer.close()
