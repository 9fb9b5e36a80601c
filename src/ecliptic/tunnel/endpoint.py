"""The SSH tunnel endpoint's contract, shared by the gateway and ``tunneld``: its settings,
the tunnels it reports, and the helpers both sides use.

Platforms open reverse tunnels with a stock client (``ssh -N -R 0:localhost:<port>``); the
endpoint (``tunneld``: ``ecliptic-tunneld``, one unprivileged Go process) authenticates them
by public key and reports each tunnel that is up (``TunnelConn``) and down. An earlier second
implementation, a stock ``sshd -i`` per connection, was retired: it needed about 1.8 MiB per
idle tunnel (3.5 GB for 2,000, against tunneld's 300 MB) and retried hundreds of connections
under load; see docs/gateway.md.
"""

from __future__ import annotations

import base64
import logging
import re
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ecliptic import hostkeys
from ecliptic.errors import EclipticError, InvalidInput
from ecliptic.services.sshkeys import fingerprint_of_blob, parse_public_key

log = logging.getLogger(__name__)

LOGIN_GRACE_S = 20
"""Seconds a connection has to authenticate before it is closed."""
_USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")


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
    """Where and how the SSH tunnel endpoint listens, and its limits."""

    state_dir: Path
    """Root-owned directory (not under /tmp) for the endpoint's files."""
    host_key: Path
    """Private ed25519 host key; generated when missing."""
    bind_host: str = "127.0.0.1"
    """Address the endpoint listens on."""
    tunnel_host: str = "127.0.0.1"
    """Loopback address (IPv4) of the tunnels' listeners (the gateway gives
    ``fence.TUNNEL_HOST``, which only it and nginx's workers may connect to)."""
    port: int = 2222
    """TCP port; 0 picks a free one (the real one is the endpoint's ``port`` after start)."""
    user: str = "tunnel"
    """The only account clients may log in as (must exist, unlocked, shell nologin)."""
    keepalive_interval_s: int = 4
    """Seconds of silence after which a client is asked for a keepalive reply (as sshd's
    ClientAliveInterval); tunneld asks after about 2 x interval, as sshd does."""
    keepalive_count: int = 2
    """Unanswered keepalives in a row that end a connection (at least 1)."""
    max_connections: int = 5000
    """Connections at once; more are closed at accept."""
    max_unauthenticated_per_ip: int = 50
    """Connections from one IP not yet logged in; more are reset at accept."""
    forward_timeout_s: float = 30.0
    """An authenticated connection that has not opened its forward by then is ended."""


@dataclass(frozen=True)
class TunnelConn:
    """A tunnel that is up: an authenticated connection with its forwarded loopback port."""

    id: str
    """Random hex, unique per connection."""
    pid: int
    """Pid of the process serving it (ecliptic-tunneld)."""
    fingerprint: str
    """``SHA256:...`` of the key that logged in."""
    client: str
    """``ip:port`` of the peer (``[ip]:port`` for IPv6)."""
    port: int
    """Loopback port (on ``EndpointConfig.tunnel_host``) the endpoint listens on for this
    tunnel."""
    connected_at: float
    """``time.time()`` when the TCP connection was accepted."""


def fingerprint(public_key_line: str) -> str:
    """OpenSSH's ``SHA256:...`` fingerprint of a public key line ``<type> <base64> [comment]``."""
    return parse_public_key(public_key_line).fingerprint


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
