"""One gateway replica: the SSH endpoint, the nginx front and the jump host, driven by the store.

The replica runs an asyncio loop in its own thread. Every ``poll_s`` it reads the services
and bound keys (``services.gateway.gateway_view``); from that it keeps sshd's
authorized_keys current, cuts connections whose key was revoked or whose service was
deleted, and renders the front's routes. Tunnel connections come and go through the
endpoint's callbacks; a liveness probe through each tunnel takes a failing one out of
routing and puts it back when it answers again. What is connected is written to the store
so that ``GET /services/{ref}`` and administrators see it.

Replicas sharing a store forward to each other. Every ``HEARTBEAT_S`` a replica records its
heartbeat and the address of its peer listener (``GatewayReplica``), and reads which live
peers hold a healthy tunnel for which service. A service without a healthy tunnel here is
routed to those peers over mutual TLS (local tunnels always win), and a request that came
from a peer is never forwarded again (see ``front``). A peer whose heartbeat stopped
moving for ``gateway_peer_stale_s`` is no longer forwarded to; one that stops cleanly
removes its rows at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import logging
import os
import random
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ecliptic.config import Settings, parse_peer_url
from ecliptic.files import write_atomic
from ecliptic.services import gateway as registry
from ecliptic.services.sshkeys import user_for_key
from ecliptic.store.db import Database
from ecliptic.store.models import ServiceAccess, TunnelEndpoint
from ecliptic.store.types import new_id, utcnow
from ecliptic.tunnel import tunneld
from ecliptic.tunnel.endpoint import EndpointConfig, TunnelConn
from ecliptic.tunnel.fence import TUNNEL_HOST, Fence, FenceError
from ecliptic.tunnel.fence import prerequisite_problem as fence_problem
from ecliptic.tunnel.front import (
    CREDENTIAL_HEADER,
    GRANT_HEADER,
    PEER_SERVICE_HEADER,
    PEER_TCP_UPGRADE,
    WORKER_USER,
    Front,
    FrontConfig,
    FrontError,
    Route,
    peer_address,
    worker_account_problem,
)
from ecliptic.tunnel.jump import (
    JumpHost,
    JumpPrincipal,
    JumpRefused,
    PeerHop,
    peer_client_context,
)
from ecliptic.tunnel.tunneld import TunneldEndpoint

log = logging.getLogger("ecliptic.gateway")

HEARTBEAT_S = 1.0
"""How often a replica records that it is alive and reads which peers hold which tunnels."""
UPGRADE_RECHECK_S = 1.0
"""How often open upgraded connections (WebSockets) are checked against access: a user
taken off a service's access list loses them within about this long (the target is 5 s)."""
HEAD_LIMIT = 128 * 1024
"""Longest request head the upgrade relay reads (nginx's own limit is 4 x 16 KiB)."""
PRUNE_EVERY_S = 60.0
"""How often a replica looks for replicas that went silent long ago."""
PRUNE_AFTER = timedelta(minutes=10)
"""A replica silent this long (crashed) is removed from the store, with its tunnels."""


class PeerAddressError(Exception):
    """This replica's address for its peers cannot be worked out; the message says what to set."""

    code = "peer_address_invalid"


def own_peer_address(settings: Settings, peer_port: int) -> str:
    """``ip:port`` where peers reach this replica's peer listener.

    ``gateway_peer_url`` when set (a host name is resolved now, once); else the front's
    listen address, or, when it listens on every address (0.0.0.0, ::), this machine's
    primary address, falling back to loopback (peers on this machine only) with a warning.
    """
    if settings.gateway_peer_url:
        try:
            host, port = parse_peer_url(settings.gateway_peer_url)
        except ValueError as exc:
            raise PeerAddressError(f"ECLIPTIC_GATEWAY_PEER_URL: {exc}") from None
        if host.startswith("["):
            found = peer_address(f"{host}:{port}")
        else:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise PeerAddressError(
                    f"ECLIPTIC_GATEWAY_PEER_URL: cannot resolve {host!r} ({exc}); give an IP "
                    "address or a name this machine resolves"
                ) from None
            first = str(infos[0][4][0])
            found = peer_address(f"[{first}]:{port}" if ":" in first else f"{first}:{port}")
        if found is None:
            raise PeerAddressError(
                f"ECLIPTIC_GATEWAY_PEER_URL {settings.gateway_peer_url!r} is not an address "
                "a peer can reach"
            )
        return found
    ip = ipaddress.ip_address(settings.gateway_http_host)
    host = str(ip)
    if ip.is_unspecified:
        primary = _primary_address(ip.version)
        if primary is None:
            host = "::1" if ip.version == 6 else "127.0.0.1"
            log.warning(
                "gateway: no primary address found; peers on other machines cannot forward "
                "here (set ECLIPTIC_GATEWAY_PEER_URL)"
            )
        else:
            host = primary
    found = peer_address(f"[{host}]:{peer_port}" if ":" in host else f"{host}:{peer_port}")
    assert found is not None
    return found


def _primary_address(version: int) -> str | None:
    """The address this machine sends from by default (no packet is sent), if any."""
    family, probe = (
        (socket.AF_INET6, "2001:db8::1") if version == 6 else (socket.AF_INET, "192.0.2.1")
    )
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((probe, 9))
            address = str(s.getsockname()[0])
    except OSError:
        return None
    ip = ipaddress.ip_address(address)
    return None if ip.is_unspecified or ip.is_loopback else address


class ReplicaWatch:
    """Which replicas are alive: those whose heartbeat moved within ``stale_s``.

    Judged on this replica's own clock, from when a heartbeat was seen to change, so that
    machines whose clocks disagree still agree on who is alive; a replica seen for the first
    time is judged by the age of its heartbeat instead.
    """

    def __init__(self, stale_s: float) -> None:
        self.stale_s = stale_s
        self._seen: dict[str, tuple[datetime, float]] = {}

    def live(
        self, beats: Iterable[registry.ReplicaBeat], *, wall: datetime, mono: float
    ) -> frozenset[str]:
        """Ids of the live replicas among ``beats`` (read at ``wall``; ``mono`` is now)."""
        seen: dict[str, tuple[datetime, float]] = {}
        for beat in beats:
            previous = self._seen.get(beat.id)
            if previous is None:
                age = (wall - beat.heartbeat_at).total_seconds()
                since = mono - min(max(age, 0.0), self.stale_s)
            elif previous[0] != beat.heartbeat_at:
                since = mono
            else:
                since = previous[1]
            seen[beat.id] = (beat.heartbeat_at, since)
        self._seen = seen
        return frozenset(i for i, (_, since) in seen.items() if mono - since < self.stale_s)


def peer_routes(
    view: registry.PeerView, live: frozenset[str], me: str, my_address: str
) -> dict[str, tuple[str, ...]]:
    """Per service id, the fronts of the other live replicas holding a healthy tunnel for
    it (sorted; never this replica, by id or address)."""
    addresses: dict[str, str] = {}
    for replica in view.replicas:
        if replica.id == me or replica.id not in live:
            continue
        address = peer_address(replica.peer_address)
        if address is None or address == my_address:
            continue
        addresses[replica.id] = address
    held: dict[str, set[str]] = {}
    for gateway_id, service_id in view.held:
        address = addresses.get(gateway_id)
        if address is not None:
            held.setdefault(service_id, set()).add(address)
    return {service_id: tuple(sorted(peers)) for service_id, peers in held.items()}


def peer_ips(
    view: registry.PeerView, live: frozenset[str], me: str, my_address: str
) -> tuple[str, ...]:
    """The addresses of the other live replicas (sorted): the only clients of this
    replica's TCP relay."""
    ips = set()
    for replica in view.replicas:
        if replica.id == me or replica.id not in live:
            continue
        address = peer_address(replica.peer_address)
        if address is None or address == my_address:
            continue
        ips.add(address.rpartition(":")[0].strip("[]"))
    return tuple(sorted(ips))


def plan_routes(
    services: Iterable[registry.RoutedService],
    local: Mapping[str, Sequence[int]],
    peers: Mapping[str, Sequence[str]],
    domain: str,
) -> list[Route]:
    """The front's routing table: each HTTP(S) service to its healthy tunnels here; without
    any, to the peers holding one; else to nobody (503)."""
    routes = []
    for s in services:
        if s.protocol not in ("http", "https"):
            continue
        ports = tuple(sorted(local.get(s.id, ())))
        routes.append(
            Route(
                host=f"{s.subdomain}.{domain}",
                ports=ports,
                public=s.public,
                read_timeout_s=s.read_timeout_s,
                upstream_tls=s.protocol == "https",
                peers=() if ports else tuple(peers.get(s.id, ())),
            )
        )
    return routes


def default_state_dir(settings: Settings) -> Path:
    """Where a replica keeps sshd's and nginx's files: root-owned, outside /tmp."""
    if settings.gateway_state_dir is not None:
        return settings.gateway_state_dir
    tag = hashlib.sha256(str(Path(settings.data_dir).resolve()).encode()).hexdigest()[:10]
    return Path("/run/ecliptic") / f"gw-{tag}"


def prerequisites(settings: Settings) -> list[str]:
    """What is missing for a gateway to run here (empty: ready)."""
    problems = tunneld.check_prerequisites("tunnel")
    if not os.path.exists("/usr/sbin/nginx"):
        problems.append("nginx is not installed (apt-get install nginx)")
    if (worker := worker_account_problem()) is not None:
        problems.append(worker)
    if (fence := fence_problem()) is not None:
        problems.append(fence)
    return problems


@dataclass
class _Live:
    conn: TunnelConn
    service_id: str
    healthy: bool = True
    probing: bool = False
    last_probe: float = 0.0


@dataclass
class _State:
    view: registry.GatewayView = field(
        default_factory=lambda: registry.GatewayView(services={}, keys={})
    )
    live: dict[str, _Live] = field(default_factory=dict)


class Gateway:
    """A gateway replica. ``start()`` returns once it accepts tunnels and requests."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        auth_upstream: str,
        gateway_id: str | None = None,
        poll_s: float = 0.2,
        state_dir: Path | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.gateway_id = gateway_id or new_id()[:12]
        self.poll_s = poll_s
        self.state_dir = state_dir or default_state_dir(settings)
        self._state = _State()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._ready: Future[None] = Future()
        self._dirty = True
        self._recorded: frozenset[tuple[str, bool]] | None = None
        self._keys_written: frozenset[str] | None = None
        self._endpoint_up = False
        self._version: tuple[object, ...] | None = None
        self._watch = ReplicaWatch(settings.gateway_peer_stale_s)
        self._peers: dict[str, tuple[str, ...]] = {}
        self._relay_from: tuple[str, ...] = ()
        self._next_beat = 0.0
        self._next_prune = 0.0
        self._closing = False
        self.peer_address: str | None = None
        """``ip:port`` peers forward to (known once started)."""
        endpoint_config = EndpointConfig(
            state_dir=self.state_dir / "sshd",
            host_key=self.state_dir / "ssh_host_ed25519_key",
            bind_host=settings.gateway_ssh_host,
            port=settings.gateway_ssh_port,
            tunnel_host=TUNNEL_HOST,
        )
        self.endpoint = TunneldEndpoint(endpoint_config, on_up=self._on_up, on_down=self._on_down)
        # Peers' jump hosts reach this replica's TCP tunnels through the peer listener and
        # this relay; replicas present and accept only the instance's peer certificate.
        self._peer_cert = self.state_dir / "peer.crt"
        self._peer_key = self.state_dir / "peer.key"
        self._peer_tls: ssl.SSLContext | None = None
        # Tunnels and both relays listen on TUNNEL_HOST, fenced off from other local
        # accounts (only this process and nginx's workers get in).
        self._fence = Fence(WORKER_USER)
        self._relay_sock = socket.create_server((TUNNEL_HOST, 0))
        self._relay: asyncio.Server | None = None
        # Upgraded connections (WebSockets) to local tunnels pass through this relay, which
        # ends them when the user's access ends (hole 4).
        self._upgrade_sock = socket.create_server((TUNNEL_HOST, 0))
        self._upgrade_relay: asyncio.Server | None = None
        self._upgraded: dict[
            asyncio.StreamWriter, tuple[tuple[str, str, str], asyncio.StreamWriter]
        ] = {}
        self._next_upgrade_check = 0.0
        self._front_ok = True
        self.front = Front(
            FrontConfig(
                state_dir=self.state_dir / "front",
                listen_host=settings.gateway_http_host,
                http_port=settings.gateway_http_port,
                tls_port=settings.gateway_tls_port,
                redirect_http=settings.gateway_tls_port is not None,
                tls_cert=settings.gateway_tls_cert,
                tls_key=settings.gateway_tls_key,
                auth_upstream=auth_upstream,
                peer_port=settings.gateway_peer_port,
                peer_cert=self._peer_cert,
                peer_key=self._peer_key,
                tcp_relay_port=self._relay_sock.getsockname()[1],
                upgrade_relay_port=self._upgrade_sock.getsockname()[1],
                tunnel_host=TUNNEL_HOST,
            )
        )
        self.jump = JumpHost(
            bind_host=settings.gateway_ssh_host,
            port=settings.gateway_jump_port,
            host_key=self.state_dir / "ssh_host_ed25519_key",
            authenticate=self._jump_authenticate,
            resolve=self._jump_resolve,
            target_host=TUNNEL_HOST,
        )

    # lifecycle -----------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Start sshd endpoint, front and jump host; raise if any cannot start."""
        self._prepare_state_dir()
        try:
            self._fence.up()
        except FenceError as exc:
            raise FenceError(f"cannot fence tunnels off from other local accounts: {exc}") from exc
        self._thread = threading.Thread(target=self._run, name="ecliptic-gateway", daemon=True)
        self._thread.start()
        self._ready.result(timeout)
        log.info(
            "gateway %s: tunnels on %s:%d, HTTP on %s:%d (peers forward to %s), jump host on :%d",
            self.gateway_id,
            self.settings.gateway_ssh_host,
            self.endpoint.port,
            self.settings.gateway_http_host,
            self.front.http_port,
            self.peer_address,
            self.jump.port,
        )

    def sync_now(self, timeout: float = 2.0) -> None:
        """Bring the SSH endpoint's keys (and routes) up to date with the store now, from
        any thread, instead of at the next poll; gives up quietly after ``timeout``."""
        loop = self._loop
        if loop is None or not loop.is_running() or not self._endpoint_up:
            return
        done = asyncio.run_coroutine_threadsafe(self._sync(force=True), loop)
        try:
            done.result(timeout)
        except Exception:
            log.warning("gateway: syncing keys on request failed; the next poll will")

    def stop(self) -> None:
        """Cut every tunnel, stop nginx and sshd, forget what this replica reported."""
        loop, stopping = self._loop, self._stopping
        if loop is not None and stopping is not None:
            # After a failed start the loop has already ended: nothing to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(30)
            if not self._thread.is_alive():
                self._remove_state()
        self._fence.down()
        try:
            registry.forget_replica(self.db, self.gateway_id)
        except Exception:  # the store may be gone at shutdown; peers see it go stale then
            log.debug("could not remove this replica from the store at stop", exc_info=True)

    @property
    def ssh_port(self) -> int:
        """Port of the tunnel SSH endpoint."""
        return self.endpoint.port

    @property
    def http_port(self) -> int:
        """Port of the plain-HTTP front."""
        return self.front.http_port

    @property
    def jump_port(self) -> int:
        """Port of the jump host for TCP services."""
        return self.jump.port

    def tunnels(self) -> list[tuple[TunnelConn, str, bool]]:
        """Connected tunnels: (connection, service id, healthy)."""
        return [(v.conn, v.service_id, v.healthy) for v in list(self._state.live.values())]

    def _prepare_state_dir(self) -> None:
        for d in (self.state_dir.parent, self.state_dir):
            d.mkdir(mode=0o755, exist_ok=True)
            os.chmod(d, 0o755)
        pem, _ = registry.host_key(self.db)
        cert, key = registry.peer_identity(self.db)
        for path, text in (
            (self.state_dir / "ssh_host_ed25519_key", pem),
            (self._peer_cert, cert),
            (self._peer_key, key),
        ):
            if not path.exists() or path.read_text() != text:
                write_atomic(path, text, mode=0o600)
        self._peer_tls = peer_client_context(self._peer_cert, self._peer_key)

    def _remove_state(self) -> None:
        """Remove the files this replica generated (sshd and nginx are stopped by now)."""
        for sub in ("sshd", "front"):
            shutil.rmtree(self.state_dir / sub, ignore_errors=True)
        (self.state_dir / "ssh_host_ed25519_key").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.state_dir.rmdir()  # only when empty: never what someone else put there

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # report start failures to start()
            if not self._ready.done():
                self._ready.set_exception(exc)
            else:
                log.exception("gateway stopped on an error")
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        await self._sync()
        await self.endpoint.start()
        self._endpoint_up = True
        # The first sync could not give the endpoint its keys (it was not up): do it now,
        # whether or not the store changed since.
        await self._sync(force=True)
        self._relay = await asyncio.start_server(self._relay_peer, sock=self._relay_sock)
        self._upgrade_relay = await asyncio.start_server(
            self._relay_upgrade, sock=self._upgrade_sock, limit=HEAD_LIMIT
        )
        try:
            await asyncio.to_thread(self.front.start)
            try:
                await self.jump.start()
                try:
                    await self._sync()
                    self.peer_address = await asyncio.to_thread(
                        own_peer_address, self.settings, self.front.peer_port or 0
                    )
                    await self._beat()
                    self._ready.set_result(None)
                    await self._serve()
                finally:
                    await self._leave()
                    await self.jump.stop()
            finally:
                await asyncio.to_thread(self.front.stop)
        finally:
            self._relay.close()
            self._upgrade_relay.close()
            for client, (_, upstream) in list(self._upgraded.items()):
                client.close()
                upstream.close()
            await self.endpoint.stop()

    async def _serve(self) -> None:
        assert self._stopping is not None
        while not self._stopping.is_set():
            if time.monotonic() >= self._next_beat:
                try:
                    await self._beat()
                except Exception:
                    log.exception("gateway: heartbeat failed; retrying")
                try:
                    await self._check_front()
                except Exception:
                    log.exception("gateway: checking the front failed; retrying")
            try:
                await self._sync()
            except Exception:
                log.exception("gateway: reading the store failed; retrying")
            self._probe_due()
            if self._upgraded and time.monotonic() >= self._next_upgrade_check:
                try:
                    await self._recheck_upgraded()
                except Exception:
                    log.exception("gateway: re-checking upgraded connections failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.poll_s)

    # store -> endpoint and front -----------------------------------------------------

    async def _sync(self, *, force: bool = False) -> None:
        version = await asyncio.to_thread(registry.view_version, self.db)
        if version == self._version and not force and not self._dirty:
            await self._record()
            return
        view = await asyncio.to_thread(registry.gateway_view, self.db)
        self._version = version
        old = self._state.view
        self._state.view = view
        keys = frozenset(line for _, line in view.keys.values())
        if keys != self._keys_written and self._endpoint_up:
            self.endpoint.set_authorized_keys(sorted(keys))
            self._keys_written = keys
        for live in list(self._state.live.values()):
            bound = view.keys.get(live.conn.fingerprint)
            if bound is None or bound[0] != live.service_id:
                log.info("gateway: cutting tunnel %s: key unbound or service gone", live.conn.id)
                self.endpoint.kill(live.conn.id)
        if view.services != old.services:
            self._dirty = True
        self._render()
        await self._record()

    def _render(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        ports: dict[str, list[int]] = {}
        for live in self._state.live.values():
            if live.healthy:
                ports.setdefault(live.service_id, []).append(live.conn.port)
        self.front.apply(
            plan_routes(
                self._state.view.services.values(),
                ports,
                self._peers,
                self.settings.gateway_domain,
            ),
            relay_from=self._relay_from,
        )

    # peers ---------------------------------------------------------------------------

    async def _beat(self) -> None:
        """Record this replica's heartbeat; route to the peers that now hold tunnels."""
        self._next_beat = time.monotonic() + HEARTBEAT_S
        if self._closing or self.peer_address is None:
            return
        existed, view = await asyncio.to_thread(self._beat_store, self.peer_address)
        if not existed:
            self._recorded = None  # first beat, or pruned while silent: record tunnels again
        live = self._watch.live(view.replicas, wall=utcnow(), mono=time.monotonic())
        peers = peer_routes(view, live, self.gateway_id, self.peer_address)
        relay_from = peer_ips(view, live, self.gateway_id, self.peer_address)
        if peers != self._peers or relay_from != self._relay_from:
            self._peers = peers
            self._relay_from = relay_from
            self._dirty = True
            self._render()

    def _beat_store(self, address: str) -> tuple[bool, registry.PeerView]:
        existed = registry.heartbeat(self.db, self.gateway_id, address)
        if time.monotonic() >= self._next_prune:
            self._next_prune = time.monotonic() + PRUNE_EVERY_S
            for gone in registry.prune_replicas(self.db, utcnow() - PRUNE_AFTER):
                log.info("gateway: forgot replica %s (silent for over %s)", gone, PRUNE_AFTER)
        return existed, registry.peer_view(self.db)

    async def _leave(self) -> None:
        """Stop forwarding here first: peers route elsewhere while this replica shuts down."""
        self._closing = True
        try:
            await asyncio.to_thread(registry.forget_replica, self.db, self.gateway_id)
        except Exception:
            log.warning("gateway: could not remove this replica from the store", exc_info=True)

    async def _check_front(self) -> None:
        """Is the front answering? A front that is gone (nginx killed) is started again; one
        that does not answer (hung) makes this replica's tunnels count as unhealthy in the
        store, so ``service show`` says what the front really does and peers stop
        forwarding here, until it answers again."""
        ok = await asyncio.to_thread(self.front.answering)
        if not ok and self.front.pid is None and not self._closing:
            log.error("gateway: the front (nginx) is gone; starting it again")
            try:
                await asyncio.to_thread(self.front.start)
                ok = await asyncio.to_thread(self.front.answering)
            except FrontError as exc:
                log.error("gateway: the front cannot start again: %s", exc)
        if ok != self._front_ok:
            self._front_ok = ok
            log.log(
                logging.INFO if ok else logging.ERROR,
                "gateway: the front is %s",
                "answering again" if ok else "not answering: tunnels here count as unhealthy",
            )
            await self._record()

    async def _record(self) -> None:
        now = frozenset((k, v.healthy and self._front_ok) for k, v in self._state.live.items())
        if now == self._recorded or self._closing:
            return
        self._recorded = now
        rows = [
            TunnelEndpoint(
                id=v.conn.id,
                gateway_id=self.gateway_id,
                service_id=v.service_id,
                fingerprint=v.conn.fingerprint,
                client=v.conn.client,
                port=v.conn.port,
                healthy=v.healthy and self._front_ok,
                connected_at=datetime.fromtimestamp(v.conn.connected_at, UTC),
            )
            for v in self._state.live.values()
        ]
        try:
            await asyncio.to_thread(registry.record_endpoints, self.db, self.gateway_id, rows)
        except Exception:
            self._recorded = None
            log.exception("gateway: could not record tunnels; will retry")

    # endpoint callbacks ----------------------------------------------------------------

    def _on_up(self, conn: TunnelConn) -> None:
        bound = self._state.view.keys.get(conn.fingerprint)
        if bound is None:
            # Bound after our last read? Check the store before refusing.
            self._spawn(self._late_up(conn))
            return
        self._spawn(self._admit(conn, bound[0]))

    async def _late_up(self, conn: TunnelConn) -> None:
        await self._sync(force=True)
        bound = self._state.view.keys.get(conn.fingerprint)
        if bound is None:
            log.warning("gateway: %s logged in with an unbound key; cutting", conn.client)
            self.endpoint.kill(conn.id)
        else:
            await self._admit(conn, bound[0])

    async def _admit(self, conn: TunnelConn, service_id: str) -> None:
        """Route a new tunnel, unless its tenancy already has ``gateway_max_tunnels``
        connected, or its service's owner ``gateway_max_tunnels_per_user`` (here and on
        other replicas): then cut it and say why, and who holds the tunnels, on the
        service's events."""
        service = self._state.view.services.get(service_id)
        if service is not None:
            held = await asyncio.to_thread(
                registry.tunnels_elsewhere, self.db, service.tenancy_id, self.gateway_id
            )
            services = self._state.view.services
            for live in self._state.live.values():
                other = services.get(live.service_id)
                if other is not None and other.tenancy_id == service.tenancy_id:
                    held[other.owner] = held.get(other.owner, 0) + 1
            total, mine = sum(held.values()), held.get(service.owner, 0)
            tenancy_limit = self.settings.gateway_max_tunnels
            user_limit = self.settings.gateway_max_tunnels_per_user
            holders = ", ".join(
                f"{name or '(owner gone)'} {count}"
                for name, count in sorted(held.items(), key=lambda item: (-item[1], item[0]))[:5]
            )
            reason = None
            if total >= tenancy_limit:
                reason = (
                    f"tunnel from {conn.client} refused: the tenancy has {total} tunnels "
                    f"connected (by owner: {holders}), its limit "
                    f"(ECLIPTIC_GATEWAY_MAX_TUNNELS={tenancy_limit})"
                )
            elif mine >= user_limit:
                reason = (
                    f"tunnel from {conn.client} refused: the services of "
                    f"{service.owner or 'this owner'} have {mine} tunnels connected, the limit "
                    f"per user (ECLIPTIC_GATEWAY_MAX_TUNNELS_PER_USER={user_limit})"
                )
            if reason is not None:
                log.warning("gateway: %s", reason)
                self.endpoint.kill(conn.id)
                await asyncio.to_thread(registry.tunnel_refused, self.db, service_id, reason)
                return
        if conn.id in self._state.live or all(c.id != conn.id for c in self.endpoint.connections()):
            return  # went down while being checked
        self._add(conn, service_id)

    def _add(self, conn: TunnelConn, service_id: str) -> None:
        self._state.live[conn.id] = _Live(conn, service_id)
        log.info("gateway: tunnel %s up for service %s on port %d", conn.id, service_id, conn.port)
        self._dirty = True
        self._render()
        self._spawn(self._record())
        service = self._state.view.services.get(service_id)
        if service is None or service.protocol == "tcp":
            return
        # A client that reconnects after its network came back leaves its old connection
        # behind: sshd only notices after its keepalives (about 24 s), and until then the
        # old tunnel swallows requests. Check older tunnels of the same key now and cut
        # those that do not answer at all.
        for other in list(self._state.live.values()):
            if other.conn.fingerprint == conn.fingerprint and other.conn.id != conn.id:
                self._spawn(self._check_stale(other, service))

    async def _check_stale(self, live: _Live, service: registry.RoutedService) -> None:
        answered = await self._answers(live, service, timeout=2.0, any_status=True)
        if not answered and live.conn.id in self._state.live:
            log.info("gateway: cutting tunnel %s: superseded and not answering", live.conn.id)
            self.endpoint.kill(live.conn.id)

    def _on_down(self, conn: TunnelConn) -> None:
        if self._state.live.pop(conn.id, None) is None:
            return
        log.info("gateway: tunnel %s down", conn.id)
        self._dirty = True
        self._render()
        self._spawn(self._record())

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coro)
        task.add_done_callback(_log_failure)

    # liveness --------------------------------------------------------------------------

    def _probe_due(self) -> None:
        now = time.monotonic()
        for live in list(self._state.live.values()):
            service = self._state.view.services.get(live.service_id)
            if service is None or not service.liveness_path or live.probing:
                continue
            if now - live.last_probe < service.liveness_period_s:
                continue
            live.probing = True
            live.last_probe = now
            self._spawn(self._probe(live, service))

    async def _answers(
        self,
        live: _Live,
        service: registry.RoutedService,
        *,
        timeout: float,
        any_status: bool = False,
    ) -> bool:
        """Whether the service answers through this tunnel (see ``probe_http``)."""
        return await probe_http(
            live.conn.port,
            f"{service.subdomain}.{self.settings.gateway_domain}",
            service.liveness_path or "/",
            tls=service.protocol == "https",
            timeout=timeout,
            any_status=any_status,
        )

    async def _probe(self, live: _Live, service: registry.RoutedService) -> None:
        try:
            timeout = min(5.0, max(1.0, service.liveness_period_s * 0.8))
            ok = await self._answers(live, service, timeout=timeout)
        finally:
            live.probing = False
        if ok != live.healthy and live.conn.id in self._state.live:
            live.healthy = ok
            log.info(
                "gateway: tunnel %s %s routing (liveness %s)",
                live.conn.id,
                "back in" if ok else "taken out of",
                "answers" if ok else "failed",
            )
            self._dirty = True
            self._render()
            await self._record()

    # jump host -------------------------------------------------------------------------

    def _jump_authenticate(self, username: str, public_key: str) -> JumpPrincipal | None:
        user = user_for_key(self.db, username, public_key)
        return JumpPrincipal(user.id, user.name) if user else None

    def _jump_resolve(self, principal: JumpPrincipal, host: str, port: int) -> int | PeerHop:
        label = host.lower().rstrip(".")
        if "." in label:
            label = registry.subdomain_of(label, self.settings.gateway_domain) or ""
        service = self._tcp_service(label)
        if service is None:
            raise JumpRefused(f"no TCP service called '{host}'")
        if not service.public:
            with self.db.read() as session:
                allowed = session.scalar(
                    select(ServiceAccess.user_id).where(
                        ServiceAccess.service_id == service.id,
                        ServiceAccess.user_id == principal.user_id,
                    )
                )
            if allowed is None:
                raise JumpRefused(f"{principal.username} may not reach '{host}'")
        ports = self._tcp_ports(service.id)
        if ports:
            return ports[int(time.monotonic() * 1000) % len(ports)]
        peers = self._peers.get(service.id, ())
        if peers:
            grant = registry.mint_peer_grant(self.db, principal.user_id, service.id)
            if self._peer_tls is None:
                raise JumpRefused(f"'{host}': gateway error (no peer identity)")
            return PeerHop(peers, service.subdomain, grant, self._peer_tls)
        raise JumpRefused(f"'{host}' has no tunnel connected right now; try again shortly")

    def _tcp_service(self, subdomain: str) -> registry.RoutedService | None:
        """The TCP service with this subdomain, if there is one."""
        return next(
            (
                s
                for s in self._state.view.services.values()
                if s.subdomain == subdomain and s.protocol == "tcp"
            ),
            None,
        )

    async def _relay_upgrade(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """A long-lived request nginx let through to a service tunnelled here (an upgrade
        such as a WebSocket, an event stream, a streamed upload): pass it to one of the
        service's tunnels and splice the two, remembering who it is for and with which
        credential, so that ``_recheck_upgraded`` can end it when that user's access or
        sign-in ends."""
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            got = await _read_head(reader)
            if got is None:
                return
            head, fields = got
            label = fields.get("host", "").split(".", 1)[0].lower()
            service = next(
                (
                    s
                    for s in self._state.view.services.values()
                    if s.subdomain == label and s.protocol in ("http", "https")
                ),
                None,
            )
            ports = self._tcp_ports(service.id) if service is not None else []
            context: ssl.SSLContext | None = None
            if service is not None and service.protocol == "https":
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            sni = (fields.get("host", "").split(":")[0] or None) if context else None
            upstream = await _open_tunnel(ports, context, sni)
            if service is None or upstream is None:
                writer.write(_plain_response(503, "no tunnel here for this service"))
                return
            up_reader, up_writer = upstream
            up_writer.write(_without_header(head, CREDENTIAL_HEADER))
            # nginx sets X-Remote-User and the credential itself (empty for public services,
            # and never what the client sent).
            held = (
                service.id,
                fields.get("x-remote-user", ""),
                fields.get(CREDENTIAL_HEADER.lower(), ""),
            )
            self._upgraded[writer] = (held, up_writer)
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._upgraded.pop(writer, None)
            if upstream is not None:
                upstream[1].close()
            writer.close()

    async def _recheck_upgraded(self) -> None:
        """End the relayed connections whose user may no longer reach their service (off
        its access list, disabled, signed out, the token deleted, or the service gone or
        made private), within about ``UPGRADE_RECHECK_S``."""
        self._next_upgrade_check = time.monotonic() + UPGRADE_RECHECK_S
        open_now = dict(self._upgraded)
        held = {h for h, _ in open_now.values()}
        allowed = await asyncio.to_thread(registry.still_allowed, self.db, held)
        for client, (h, upstream) in open_now.items():
            if h not in allowed:
                log.info(
                    "gateway: ending %s's relayed connection to service %s: access ended",
                    h[1] or "an anonymous user",
                    h[0],
                )
                client.close()
                upstream.close()

    def _tcp_ports(self, service_id: str) -> list[int]:
        """Loopback ports of this replica's healthy tunnels of a service."""
        return [
            v.conn.port
            for v in list(self._state.live.values())
            if v.service_id == service_id and v.healthy
        ]

    async def _relay_peer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A peer's jump host, through the peer listener (mutual TLS, live peers' addresses
        only), for a TCP service tunnelled here: check its grant (genuine, unexpired, for
        this service) and that the user it names may still reach the service, answer 101
        and splice the stream to one of the service's tunnels."""
        try:
            got = await _read_head(reader)
            if got is None:
                return
            _, fields = got
            if fields.get("upgrade", "").lower() != PEER_TCP_UPGRADE:
                writer.write(_plain_response(400, f"expected Upgrade: {PEER_TCP_UPGRADE}"))
                return
            label = fields.get(PEER_SERVICE_HEADER.lower(), "")
            service = self._tcp_service(label)
            grant = fields.get(GRANT_HEADER.lower(), "")
            user = (
                await asyncio.to_thread(registry.check_peer_grant, self.db, grant, service.id)
                if service is not None and grant
                else None
            )
            if user is None:
                writer.write(_plain_response(403, f"no valid grant for {label!r}"))
                return
            ports = self._tcp_ports(service.id) if service else []
            upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
            upstream = await _open_tunnel(ports)
            if upstream is None:
                writer.write(_plain_response(503, f"no tunnel here for {label!r}"))
                return
            writer.write(
                b"HTTP/1.1 101 Switching Protocols\r\n"
                + f"Connection: upgrade\r\nUpgrade: {PEER_TCP_UPGRADE}\r\n\r\n".encode()
            )
            up_reader, up_writer = upstream
            try:
                await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
            finally:
                up_writer.close()
        finally:
            writer.close()


async def _open_tunnel(
    ports: list[int], context: ssl.SSLContext | None = None, sni: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection to one of these tunnels' loopback ports that takes one, tried in a
    random order so that several tunnels share the load (over TLS with ``context`` for a
    service that speaks HTTPS), or None."""
    for port in random.sample(ports, len(ports)):
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            return await asyncio.wait_for(
                asyncio.open_connection(TUNNEL_HOST, port, ssl=context, server_hostname=sni), 5
            )
    return None


async def _read_head(
    reader: asyncio.StreamReader,
) -> tuple[bytes, dict[str, str]] | None:
    """An HTTP request head from nginx and its header fields (names lowercase), or None."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    fields = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return head, fields


def _without_header(head: bytes, name: str) -> bytes:
    """A request head without the header field ``name`` (the relay's own, not the
    service's business)."""
    prefix = name.lower().encode() + b":"
    lines = head.split(b"\r\n")
    return b"\r\n".join(line for line in lines if not line.lower().startswith(prefix))


def _plain_response(status: int, text: str) -> bytes:
    body = (text + "\n").encode()
    reason = {400: "Bad Request", 403: "Forbidden", 503: "Service Unavailable"}[status]
    return (
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until end-of-file, then pass the end-of-file on (the other way may go on)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def probe_http(
    port: int, host: str, path: str, *, tls: bool, timeout: float, any_status: bool = False
) -> bool:
    """Whether ``GET path`` through the tunnel on ``port`` answers below 500 in time (with
    ``any_status``: answers at all)."""
    context: ssl.SSLContext | None = None
    if tls:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(
                TUNNEL_HOST, port, ssl=context, server_hostname=host if tls else None
            )
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ecliptic-gateway-liveness"
                "\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            status = await reader.readline()
        parts = status.split()
        return len(parts) >= 2 and parts[1].isdigit() and (any_status or int(parts[1]) < 500)
    except (OSError, TimeoutError, ssl.SSLError, ValueError):
        return False
    finally:
        if writer is not None:
            writer.close()


def _log_failure(task: asyncio.Task[object]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("gateway task failed", exc_info=task.exception())
