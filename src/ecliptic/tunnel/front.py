"""The HTTP front of the tunnel gateway: an nginx master owned by Ecliptic, routed by host.

``Front`` writes ``nginx.conf`` and its snippets once per start, and ``routes.conf`` from a
table of ``Route``s on every change, then reloads the master with SIGHUP (debounced). Each
route is one ``server`` block, so authorisation, timeouts and the upstream scheme differ per
route; a route with connected tunnels also gets one ``upstream`` of their loopback ports,
spoken to over HTTP/1.1 with keepalive.

Threat model: clients are anyone on the internet and choose every header, the request line
and their pace. nginx parses HTTP and refuses what is ambiguous (duplicate Content-Length,
Content-Length with Transfer-Encoding, oversized headers) and bounds slow clients. Routing,
authorisation and the auth cache all key on nginx's ``$host``, so they cannot disagree about
which service a request is for. Identity headers (``X-Remote-*``, ``X-Forwarded-*``) are set
by the front only, never passed on from the client. Backends are users' own services and may
answer anything: nginx control headers from them (``X-Accel-*``) are ignored. Private routes
ask Ecliptic's auth app on every request through ``auth_request``; its answers are cached for
``FrontConfig.auth_cache_s`` seconds, keyed by host and credentials.

Peer replicas: a route without local tunnels may name other replicas' peer listeners
(``Route.peers``) that hold one. Replicas talk to each other only on the peer listener
(``FrontConfig.peer_port``), never on the public front: TLS 1.3 in both directions with the
instance's peer certificate (``peer_cert``: every replica presents it and accepts only it, so
the traffic between replicas is encrypted and a client without the key cannot even finish the
handshake). The peer listener passes a request on to this front's routes over a loopback
listener with a secret made at each start (``X-Ecliptic-Hop``, never sent across the
network); only a request that came that way is taken as a peer's: its client address, scheme,
host and port come from the ``X-Forwarded-*`` headers the sending replica set, and it is never
forwarded again (503 instead: no loops). It never skips authorisation: both fronts ask their
auth app with the user's own credentials, and identity headers are always the receiver's own.
A peer's jump host reaches a TCP service tunnelled here through the peer listener too, with a
short-lived grant naming the user and the service that the gateway's relay checks against the
service's access list (see ``gateway``).
"""

from __future__ import annotations

import contextlib
import grp
import http.client
import ipaddress
import logging
import os
import pwd
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ecliptic.credentials import API_TOKEN_PREFIX, GATEWAY_COOKIE, PORTAL_COOKIE, STATE_COOKIE
from ecliptic.files import write_atomic

log = logging.getLogger(__name__)

CONTROL_HOST = "ecliptic-control.invalid"
"""Host name of the front's own status server (loopback clients only): it answers
``/generation`` with the number of the routing table its workers serve."""
WORKER_USER = "ecliptic-web"
"""Account nginx workers run as (with its primary group) when Ecliptic is root. An account
of their own (``scripts/setup-system.sh`` creates it): the workers write the auth cache,
whose keys are requests' credentials, and no other process on the host may read it (as
``nobody``, shared with other daemons, any of them could)."""
RELOAD_COALESCE_S = 0.01
"""Wait this long after the first change of a burst before reloading, to batch the burst."""
RELOAD_MIN_INTERVAL_S = 0.2
"""At most one reload per this many seconds (or twice the time the last one took to go
live, if more); changes meanwhile are coalesced."""
RELOAD_LIVE_TIMEOUT_S = 10.0
"""How long the reloader waits for a table to go live before it reports a failed reload."""
RELOAD_RETRY_S = 1.0
"""After a failed attempt to write the routes or signal nginx, retry after this long."""
START_TIMEOUT_S = 10.0
"""How long ``start`` waits for the master to answer."""
STOP_GRACE_S = 5.0
"""``stop`` lets open requests finish this long (SIGQUIT) before it forces nginx (SIGTERM)."""
UPSTREAM_FAIL_TIMEOUT_S = 5
"""A tunnel port that refused a connection is skipped this long (when the route has others)."""
DEFAULT_READ_TIMEOUT_S = 3600
"""Seconds a request may wait for its service unless its route says otherwise."""
UPSTREAM_KEEPALIVE = 32
"""Idle upstream connections kept per worker and route (or group of peers)."""
WORKER_SHUTDOWN_S = 60
"""After a reload, how long the old workers keep the connections they still serve (open
WebSockets, event streams) before closing them. Long enough that a reload does not cut a
session mid-message, short enough that flapping tunnels cannot pile up old workers (8
reloads with a WebSocket open kept 8 workers, 52 MiB, for 10 minutes): clients reconnect
to the new workers, which apply the current routes and access."""
MAX_OLD_WORKERS = 8
"""At most this many old workers (shutting down after a reload, still holding WebSockets
or event streams) at a time: after a reload the oldest beyond it are ended at once. Someone
who flaps a tunnel and opens a new WebSocket after each reload kept one old worker (about
7 MiB) per reload alive for ``WORKER_SHUTDOWN_S``; now they cost at most this many. The
connections of an ended worker close and their clients reconnect to the current workers."""
PEER_TLS_NAME = "ecliptic-peer.invalid"
"""The name in the instance's peer certificate: replicas verify each other by it."""
HOP_HEADER = "X-Ecliptic-Hop"
"""Header carrying the front's per-start secret from its peer listener to its routes, over
loopback only."""
GRANT_HEADER = "X-Ecliptic-Grant"
"""Header carrying a peer's per-hop grant to the TCP relay."""
PEER_TCP_HOST = "ecliptic-peer-tcp.invalid"
"""Host name a peer's jump host asks for to reach a TCP service whose tunnel is here."""
PEER_TCP_PATH = "/_ecliptic_tcp"
"""Path of that request; it upgrades the connection to the service's raw TCP stream."""
PEER_TCP_UPGRADE = "ecliptic-tcp"
"""``Upgrade`` token of that request."""
CREDENTIAL_HEADER = "X-Ecliptic-Credential"
"""Header from the auth app naming the credential that let a request in (a service
session's id or an API token's hash); the front passes it to the gateway's relay only."""
PEER_SERVICE_HEADER = "X-Ecliptic-Service"
"""Header naming the TCP service (its subdomain) in that request."""
PAGES = ("401", "403", "404", "431", "500", "502", "503", "504")
"""Error pages written from ``templates/<status>.html``."""

_LABEL = r"(?!-)[a-z0-9-]{1,63}"
_HOST = re.compile(rf"^{_LABEL}(\.{_LABEL})+$")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9_./@+,=:~-]+$")
_HOST_PORT = re.compile(r"^([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}$")
_WORKER_TITLE = "nginx: worker process"
_OLD_WORKER_TITLE = "nginx: worker process is shutting down"
_PAGES_URI = "/_ecliptic/pages"
_HOST_PLACEHOLDER = "{{ host }}"
# SSI's echo escapes the value as HTML entities by default: the default server shows any Host.
_HOST_SSI = '<!--# echo var="host" default="this address" -->'
# Headers that claim an identity or a hop: the front sets them or sends them empty, so a value
# a client made up never reaches a backend. (nginx cannot strip by pattern; these are the
# ones proxies and frameworks read.)
_STRIPPED_HEADERS = (
    "Forwarded",
    "X-Forwarded-Server",
    "X-Forwarded-Prefix",
    "X-Forwarded-Ssl",
    "X-Forwarded-Scheme",
    "X-Forwarded-Protocol",
    "X-Forwarded-Uri",
    "X-Forwarded-Method",
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Preferred-Username",
    "X-Forwarded-Groups",
    "X-Forwarded-Access-Token",
    "X-Remote-Groups",
    "Remote-User",
    "Remote-Email",
    "X-Ecliptic-Uri",
    "X-Ecliptic-Scheme",
    HOP_HEADER,
    GRANT_HEADER,
    "X-Ecliptic-Peer",
    "X-Ecliptic-Accept",
)
_IGNORED_FROM_BACKENDS = (
    "X-Accel-Redirect X-Accel-Expires X-Accel-Limit-Rate X-Accel-Buffering X-Accel-Charset"
)


class FrontError(Exception):
    """The front could not start, reload or stop; the message says why and where to look."""

    code = "front_failed"


class InvalidFrontInput(FrontError, ValueError):
    """A route or a front setting that cannot be rendered into a safe nginx config."""

    code = "invalid_front_input"


@dataclass(frozen=True)
class Route:
    """One service host and where its requests go."""

    host: str
    """Full lowercase host, e.g. ``k3j9x2.localhost`` (subdomain + "." + base domain)."""
    ports: tuple[int, ...]
    """127.0.0.1 ports of live, healthy tunnels; empty answers 503 "no tunnel connected"."""
    public: bool
    """False: every request is authorised by the auth app (``auth_request``) first."""
    read_timeout_s: int = DEFAULT_READ_TIMEOUT_S
    """Seconds a request may wait for the service (``proxy_read_timeout``/``send_timeout``):
    also how long an idle WebSocket or event stream stays open."""
    upstream_tls: bool = False
    """The service speaks HTTPS behind the tunnel: the front connects with TLS, sending the
    host as SNI and not verifying the service's certificate."""
    peers: tuple[str, ...] = ()
    """``ip:port`` (``[ip]:port`` for IPv6) of other replicas' peer listeners holding a
    tunnel for the service, used when there is none here (``ports`` empty): requests go there
    over mutual TLS. Needs ``FrontConfig.peer_port``."""

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or len(self.host) > 253 or not _HOST.match(self.host):
            raise InvalidFrontInput(
                f"route host {self.host!r} is not a lowercase DNS name such as 'k3j9x2.localhost'"
            )
        for port in self.ports:
            if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
                raise InvalidFrontInput(f"route {self.host}: port {port!r} is not 1-65535")
        if len(set(self.ports)) != len(self.ports):
            raise InvalidFrontInput(f"route {self.host}: ports {self.ports} repeat a port")
        if not isinstance(self.read_timeout_s, int) or self.read_timeout_s < 1:
            raise InvalidFrontInput(f"route {self.host}: read_timeout_s must be at least 1")
        if self.peers and self.ports:
            raise InvalidFrontInput(
                f"route {self.host}: give peers only when there is no local tunnel (ports)"
            )
        for peer in self.peers:
            if not isinstance(peer, str) or peer_address(peer) != peer:
                raise InvalidFrontInput(
                    f"route {self.host}: peer {peer!r} is not 'ip:port' or '[ipv6]:port' "
                    "in canonical form"
                )
        if len(set(self.peers)) != len(self.peers):
            raise InvalidFrontInput(f"route {self.host}: peers {self.peers} repeat a peer")


def peer_address(value: str) -> str | None:
    """``value`` in canonical ``ip:port`` / ``[ipv6]:port`` form, or None if it is no such
    address. Host names are refused: nginx resolves them once, and fails to reload if it
    cannot."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or len(port) > 5 or not 0 < int(port) < 65536:
        return None
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        return None
    if ip.is_unspecified or (ip.version == 6) != bracketed or "%" in host:
        return None
    return f"[{ip}]:{int(port)}" if bracketed else f"{ip}:{int(port)}"


@dataclass(frozen=True)
class FrontConfig:
    """Where the front keeps its files, where it listens and how patient it is."""

    state_dir: Path
    """nginx.conf, generated routes, pid, logs, temp and cache dirs, error pages. Workers run
    as ``WORKER_USER`` when Ecliptic is root, so every parent directory must be searchable by
    others (not under a 0700 directory such as pytest's ``tmp_path``)."""
    listen_host: str = "127.0.0.1"
    """IP address both listeners bind."""
    http_port: int = 8480
    """Plain-HTTP port; 0 picks a free one (tests), see ``Front.http_port``."""
    tls_port: int | None = None
    """TLS port, terminated with ``tls_cert``/``tls_key``; None for no TLS, 0 picks one."""
    tls_cert: Path | None = None
    """PEM certificate chain for the base domain (a wildcard), read by the root master."""
    tls_key: Path | None = None
    """PEM private key of ``tls_cert``."""
    auth_upstream: str = "127.0.0.1:8470"
    """``host:port`` of Ecliptic's auth app: ``/gateway/auth`` and everything under
    ``/_ecliptic/`` on service hosts."""
    header_timeout_s: int = 10
    """Seconds a client has to send the request line and headers."""
    body_timeout_s: int = 60
    """Seconds between two reads of the request body, or two writes of the response."""
    keepalive_timeout_s: int = 75
    """Seconds an idle client connection is kept open."""
    auth_cache_s: int = 2
    """Seconds an auth answer (200 or 403) is reused for the same host and credentials; a
    revoked session or access keeps working at most this long. 0 disables the cache."""
    nginx_path: str = "/usr/sbin/nginx"
    """The nginx binary."""
    stop_grace_s: float = STOP_GRACE_S
    """Seconds ``stop`` lets open requests finish before it forces nginx down."""
    worker_shutdown_s: int = WORKER_SHUTDOWN_S
    """Seconds old workers keep upgraded connections after a reload (see the constant)."""
    max_old_workers: int = MAX_OLD_WORKERS
    """Old workers kept at most after a reload (see the constant)."""
    peer_port: int | None = None
    """Port of the peer listener on ``listen_host``: mutual TLS with ``peer_cert``, for the
    instance's other replicas only (0 picks a free port). None: no peer listener, no request
    is taken as coming from a peer, and routes may not name peers."""
    peer_cert: Path | None = None
    """PEM certificate of the instance's peer identity (the same on every replica): presented
    to peers, and the only certificate accepted from them."""
    peer_key: Path | None = None
    """PEM private key of ``peer_cert``."""
    redirect_http: bool = False
    """With TLS: answer every request for a service on the plain-HTTP port with a permanent
    redirect (308) to the same URL over HTTPS."""
    upgrade_relay_port: int | None = None
    """Loopback port of the gateway's relay for long-lived requests (upgrades such as
    WebSockets, event streams, request bodies of unknown length). With it, such a request
    to a local tunnel goes through the relay, which ends the connection when the user's
    access to the service or their sign-in ends (nginx alone keeps it open)."""
    tunnel_host: str = "127.0.0.1"
    """Loopback address of the routes' ports and of both relays (the gateway's fenced
    address, ``fence.TUNNEL_HOST``)."""
    tcp_relay_port: int | None = None
    """Loopback port of the gateway's relay to local TCP tunnels. With a peer listener and
    peers, their jump hosts reach TCP services here through it (``PEER_TCP_PATH``)."""

    def __post_init__(self) -> None:
        try:
            tunnel_ip = ipaddress.ip_address(self.tunnel_host)
        except ValueError:
            tunnel_ip = None
        if tunnel_ip is None or tunnel_ip.version != 4 or not tunnel_ip.is_loopback:
            raise InvalidFrontInput(
                f"tunnel_host {self.tunnel_host!r}: use an IPv4 loopback address"
            )
        for name in ("state_dir", "tls_cert", "tls_key", "peer_cert", "peer_key"):
            path = getattr(self, name)
            if path is not None and not (path.is_absolute() and _SAFE_PATH.match(str(path))):
                raise InvalidFrontInput(
                    f"{name} {str(path)!r}: use an absolute path made of letters, digits and "
                    "'_./@+,=:~-' only (it is written into nginx.conf)"
                )
        try:
            ipaddress.ip_address(self.listen_host)
        except ValueError:
            raise InvalidFrontInput(
                f"listen_host {self.listen_host!r} is not an IP address"
            ) from None
        for name in ("http_port", "tls_port", "peer_port"):
            port = getattr(self, name)
            if port is not None and not 0 <= port < 65536:
                raise InvalidFrontInput(f"{name} {port} is not 0-65535")
        if self.tls_port is not None and (self.tls_cert is None or self.tls_key is None):
            raise InvalidFrontInput("tls_port needs tls_cert and tls_key")
        upstream = self.auth_upstream
        if not (
            _HOST_PORT.match(upstream)
            or (upstream.startswith("unix:") and _SAFE_PATH.match(upstream[5:]))
        ):
            raise InvalidFrontInput(
                f"auth_upstream {upstream!r} must be 'host:port' or 'unix:/path'"
            )
        for name in ("header_timeout_s", "body_timeout_s", "keepalive_timeout_s"):
            if getattr(self, name) < 1:
                raise InvalidFrontInput(f"{name} must be at least 1 second")
        if self.auth_cache_s < 0:
            raise InvalidFrontInput("auth_cache_s must not be negative")
        if self.redirect_http and self.tls_port is None:
            raise InvalidFrontInput("redirect_http needs tls_port")
        if self.peer_port is not None and (self.peer_cert is None or self.peer_key is None):
            raise InvalidFrontInput("peer_port needs peer_cert and peer_key")


@dataclass(frozen=True)
class Ports:
    """The ports one run of nginx listens on (picked ones included)."""

    http: int
    tls: int | None = None
    peer: int | None = None
    """The peer listener (mutual TLS), when there is one."""
    hop: int | None = None
    """Loopback port where the peer listener hands requests to the routes."""
    hop_secret: str | None = None
    """The secret that marks those requests (made at each start; never leaves the machine)."""


class _Layout:
    """Paths of the files the front writes under ``state_dir``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = root / "nginx.conf"
        self.routes = root / "routes.conf"
        self.route_snippet = root / "route-common.conf"
        self.pages = root / "pages"
        self.empty = root / "empty"
        self.logs = root / "logs"
        self.error_log = self.logs / "error.log"
        self.stderr_log = self.logs / "nginx.stderr"
        self.tmp = root / "tmp"
        self.auth_cache = root / "auth-cache"
        self.pid = root / "nginx.pid"


def _worker_group() -> str:
    """Primary group of ``WORKER_USER``."""
    return grp.getgrgid(pwd.getpwnam(WORKER_USER).pw_gid).gr_name


def worker_account_problem() -> str | None:
    """Why nginx workers cannot run as ``WORKER_USER`` here (None: they can, or Ecliptic is
    not root and workers run as its own user)."""
    if os.geteuid() != 0:
        return None
    try:
        account = pwd.getpwnam(WORKER_USER)
    except KeyError:
        return (
            f"user {WORKER_USER!r} (the gateway's nginx workers) does not exist: run "
            "scripts/setup-system.sh, or: useradd --system --user-group --no-create-home "
            f"--shell /usr/sbin/nologin {WORKER_USER}"
        )
    if account.pw_uid == 0 or account.pw_gid == 0:
        return f"user {WORKER_USER!r} is root or in root's group: it must be unprivileged"
    return None


def _listen_addr(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listens(cfg: FrontConfig, ports: Ports, default: bool) -> list[str]:
    flag = " default_server" if default else ""
    lines = [f"    listen {_listen_addr(cfg.listen_host, ports.http)}{flag};"]
    if ports.tls is not None:
        lines.append(f"    listen {_listen_addr(cfg.listen_host, ports.tls)} ssl{flag};")
    if ports.hop is not None:
        lines.append(f"    listen 127.0.0.1:{ports.hop}{flag};")
    return lines


def _error_pages(pages: str, *, peer_hop: bool) -> list[str]:
    """``error_page`` lines for the errors the front itself answers. On a route that forwards
    to peers, a peer that cannot be reached means no tunnel (503), not a broken service."""
    return [
        f"error_page 494 =431 {pages}/431.html;",
        "error_page 401 $ecl_401;",
        f"error_page 403 {pages}/403.html;",
        f"error_page 500 {pages}/500.html;",
        f"error_page 502 =503 {pages}/503.html;"
        if peer_hop
        else f"error_page 502 {pages}/502.html;",
        f"error_page 503 {pages}/503.html;",
        f"error_page 504 {pages}/504.html;",
    ]


def render_main(cfg: FrontConfig, ports: Ports, *, as_root: bool) -> dict[Path, str]:
    """nginx.conf and the snippet every route's server includes, by path.

    Everything routes share lives at the http level, where route servers and their
    ``location /`` inherit it: a per-route copy costs nginx memory and parse time per route.
    """
    lay = _Layout(cfg.state_dir)
    tmp = lay.tmp
    user = f"user {WORKER_USER} {_worker_group()};\n" if as_root else ""
    tls = ""
    if ports.tls is not None:
        tls = f"""
    ssl_certificate {cfg.tls_cert};
    ssl_certificate_key {cfg.tls_key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:ecl_tls:10m;
    ssl_session_timeout 1h;
"""
    cache = ""
    if cfg.auth_cache_s > 0:
        cache = (
            f"    proxy_cache_path {lay.auth_cache} levels=1:2 keys_zone=ecl_auth_cache:4m "
            f"max_size=64m inactive={max(30, 4 * cfg.auth_cache_s)}s use_temp_path=off;\n"
        )
    declare = "".join(
        f'        set ${name} "";\n'
        for name in (
            "ecl_user",
            "ecl_email",
            "ecl_cookie",
            "ecl_authorization",
            "ecl_login",
            "ecl_credential",
        )
    )
    via_peer = ""
    if ports.hop is not None and ports.hop_secret is not None:
        via_peer = f'        "{ports.hop}:{ports.hop_secret}" 1;\n'
    stripped = "".join(f'    proxy_set_header {name} "";\n' for name in _STRIPPED_HEADERS)
    pages = _PAGES_URI
    error_pages = "".join(f"    {line}\n" for line in _error_pages(pages, peer_hop=False))
    conf = f"""# Written by Ecliptic (tunnel front) on every start; edits are lost.
daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile 16384;
worker_shutdown_timeout {cfg.worker_shutdown_s}s;
{user}pid {lay.pid};
error_log {lay.error_log} notice;

events {{
    worker_connections 4096;
}}

http {{
    types {{ text/html html; }}
    default_type application/octet-stream;
    server_tokens off;
    sendfile on;
    tcp_nodelay on;
    uninitialized_variable_warn off;
    log_format ecliptic '$remote_addr [$time_local] "$host" "$request" $status '
                        '$body_bytes_sent $request_time "$upstream_addr" "$http_user_agent"';
    access_log {lay.logs}/access.log ecliptic buffer=32k flush=1s;
    # Room for thousands of service names (the default search is slow and then gives up).
    server_names_hash_max_size 65536;
    server_names_hash_bucket_size 512;
    # Room for the hop port and secret (70 characters) as a map key.
    map_hash_bucket_size 256;

    client_header_timeout {cfg.header_timeout_s}s;
    client_body_timeout {cfg.body_timeout_s}s;
    send_timeout {cfg.body_timeout_s}s;
    keepalive_timeout {cfg.keepalive_timeout_s}s;
    client_max_body_size 0;
    large_client_header_buffers 4 16k;
    ignore_invalid_headers on;
    underscores_in_headers off;

    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{cache}{tls}
    # Requests that can last as long as the client likes go through the gateway's relay,
    # which ends them when their user's access or sign-in ends: upgrades (WebSockets),
    # event streams, and every request with a body (of unknown length, or of a declared
    # one sent as slowly as the client likes: nginx bounds only the pause between reads).
    map $http_accept $ecl_event_stream {{
        "~*text/event-stream" 1;
        default "";
    }}
    # (A regex never matches a header that is absent: only a length above 0 counts.)
    map $http_content_length $ecl_has_body {{
        "~^0*[1-9]" 1;
        default "";
    }}
    map "$http_upgrade$http_transfer_encoding$ecl_event_stream$ecl_has_body" $ecl_relayed {{
        "" "";
        default 1;
    }}
    # The credential that let such a request in (see the relay), for the relay only. A map
    # is evaluated when the header is built, after auth_request has set $ecl_credential
    # (a "set" would run before it, in the rewrite phase).
    map $ecl_relayed $ecl_relay_credential {{
        1 $ecl_credential;
        default "";
    }}
    # No Connection header unless the client upgrades, so upstream keepalive works.
    map $http_upgrade $ecl_connection {{
        default upgrade;
        "" "";
    }}
    # Host as the client typed it: the port only when it is not the scheme's default.
    map $scheme:$server_port $ecl_port {{
        http:80 "";
        https:443 "";
        default :$server_port;
    }}
    # A 401 becomes a redirect to the sign-in URL the auth app gave (absolute URLs only),
    # else the 401 page.
    map $ecl_login $ecl_401 {{
        default {pages}/401.html;
        "~^https?://" $ecl_login;
    }}
    # A request a peer replica forwarded arrives on the loopback hop port from the peer
    # listener (mutual TLS), with this run's hop secret. Only then are the client's address,
    # scheme, host and port taken from the X-Forwarded-* headers the peer set (it set them
    # itself, as below); anyone else's are ignored. It never skips auth_request.
    map "$server_port:$http_x_ecliptic_hop" $ecl_via_peer {{
        default "";
{via_peer}    }}
    map $ecl_via_peer $ecl_client {{
        1 $http_x_forwarded_for;
        default $remote_addr;
    }}
    map $ecl_via_peer $ecl_scheme {{
        1 $http_x_forwarded_proto;
        default $scheme;
    }}
    map $ecl_via_peer $ecl_fport {{
        1 $http_x_forwarded_port;
        default $server_port;
    }}
    map $ecl_via_peer $ecl_hostport {{
        1 $http_host;
        default $host$ecl_port;
    }}
    # Ecliptic's own credentials never reach a service: API bearer tokens ("Bearer ecl_...")
    # and the gateway's and the portal's cookies are taken out of what public services get
    # (the auth app does the same for signed-in ones).
    map $http_authorization $ecl_public_authorization {{
        default $http_authorization;
        "~*^bearer\\s+{API_TOKEN_PREFIX}" "";
    }}
{_cookie_strip_maps()}
    # With TLS, browsers are told to use it from now on (HSTS); never over plain HTTP.
    map $https $ecl_hsts {{
        on "max-age=31536000";
        default "";
    }}
    add_header Strict-Transport-Security $ecl_hsts always;

    # Pages for the errors the front itself answers (a service's own errors pass unchanged).
{error_pages}
    # How every route's location / talks to its tunnels (and /_ecliptic/ to the auth app).
    proxy_http_version 1.1;
    proxy_buffering off;
    proxy_request_buffering off;
    # Unbuffered proxying reads a response in pieces of this size: the default (one page)
    # costs a syscall pair per 4 KiB and caps one download at about 4 Gbit/s here.
    proxy_buffer_size 64k;
    proxy_buffers 4 64k;
    proxy_busy_buffers_size 128k;
    proxy_connect_timeout 5s;
    proxy_read_timeout {DEFAULT_READ_TIMEOUT_S}s;
    proxy_send_timeout {DEFAULT_READ_TIMEOUT_S}s;
    proxy_next_upstream error timeout;
    proxy_next_upstream_tries 3;
    proxy_next_upstream_timeout 10s;
    proxy_ignore_headers {_IGNORED_FROM_BACKENDS};
    # A service's cookies stay on its own host: a Domain attribute (say the base domain,
    # to plant a sign-in state or session cookie on a sibling service) becomes the host.
    proxy_cookie_domain ~.+ $host;
    # Services that speak HTTPS behind their tunnel: self-signed is fine, SNI is the host.
    proxy_ssl_verify off;
    proxy_ssl_server_name on;
    proxy_ssl_name $host;
    proxy_set_header Host $ecl_hostport;
    proxy_set_header Upgrade $http_upgrade;
    proxy_set_header Connection $ecl_connection;
    proxy_set_header X-Forwarded-For $ecl_client;
    proxy_set_header X-Real-IP $ecl_client;
    proxy_set_header X-Forwarded-Proto $ecl_scheme;
    proxy_set_header X-Forwarded-Host $ecl_hostport;
    proxy_set_header X-Forwarded-Port $ecl_fport;
    proxy_set_header X-Remote-User $ecl_user;
    proxy_set_header X-Remote-Email $ecl_email;
    proxy_set_header Cookie $ecl_cookie;
    proxy_set_header Authorization $ecl_authorization;
    proxy_set_header X-Ecliptic-Host $host;
    # Which credential let a relayed request in (see the relay); nobody else gets it.
    proxy_set_header {CREDENTIAL_HEADER} $ecl_relay_credential;
{stripped}
    upstream ecl_auth {{
        server {cfg.auth_upstream};
        keepalive 16;
    }}

    include {lay.routes};

    # Unknown hosts.
    server {{
{chr(10).join("    " + line for line in _listens(cfg, ports, default=True))}
        server_name _;
        # Declares the variables route servers set, so a table without private routes loads.
{declare}        error_page 404 {pages}/404.html;
        error_page 494 =431 {pages}/431.html;
        location ^~ {pages}/ {{
            internal;
            alias {lay.pages}/;
            ssi on;
            add_header Cache-Control "no-store" always;
            add_header Strict-Transport-Security $ecl_hsts always;
        }}
        location / {{
            return 404;
        }}
    }}
}}
"""
    auth_cache = ""
    if cfg.auth_cache_s > 0:
        auth_cache = f"""    proxy_cache ecl_auth_cache;
    proxy_cache_key "$host|$http_cookie|$http_authorization";
    proxy_cache_valid 200 403 {cfg.auth_cache_s}s;
    proxy_cache_lock on;
    proxy_cache_lock_timeout 5s;
"""
    auth_host = cfg.auth_upstream if not cfg.auth_upstream.startswith("unix:") else "localhost"
    common = f"""# Included in every route's server block; written by Ecliptic on every start.
location ^~ {pages}/ {{
    internal;
    alias {lay.pages}/;
    ssi on;
    add_header Cache-Control "no-store" always;
    add_header Strict-Transport-Security $ecl_hsts always;
}}

# Sign-in callback and sign-out, served by the auth app on every service host, with the
# headers services get (inherited: no per-route copy), credentials passed unchanged.
location ^~ /_ecliptic/ {{
    set $ecl_cookie $http_cookie;
    set $ecl_authorization $http_authorization;
    proxy_pass http://ecl_auth;
}}

# The auth subrequest: credentials and what is asked for, never the body.
location = /_ecliptic_auth {{
    internal;
    proxy_pass http://ecl_auth/gateway/auth;
    proxy_pass_request_body off;
    proxy_pass_request_headers off;
    proxy_set_header Host {auth_host};
    proxy_set_header Connection "";
    proxy_set_header Content-Length "";
    proxy_set_header Cookie $http_cookie;
    proxy_set_header Authorization $http_authorization;
    proxy_set_header X-Ecliptic-Host $host;
    proxy_set_header X-Ecliptic-Uri $request_uri;
    proxy_set_header X-Ecliptic-Scheme $ecl_scheme;
    proxy_set_header X-Ecliptic-Accept $http_accept;
    proxy_set_header X-Forwarded-For $ecl_client;
    proxy_set_header X-Real-IP $ecl_client;
    proxy_connect_timeout 2s;
    proxy_read_timeout 10s;
    proxy_send_timeout 10s;
    proxy_next_upstream off;
    proxy_buffering on;
    # Only proxy_cache_valid decides: not the auth app's cache headers, cookies or Vary.
    proxy_ignore_headers Cache-Control Expires Set-Cookie Vary {_IGNORED_FROM_BACKENDS};
{auth_cache}}}
"""
    return {lay.conf: conf, lay.route_snippet: common}


def render_routes(
    cfg: FrontConfig,
    routes: Sequence[Route],
    generation: int,
    ports: Ports,
    *,
    relay_from: Sequence[str] = (),
) -> str:
    """routes.conf: one upstream and one server per route, the peer listener and the status
    server.

    ``relay_from``: addresses of the live peer replicas; only they may use the TCP relay
    (none: there is no relay at all)."""
    lay = _Layout(cfg.state_dir)
    listens = _listens(cfg, ports, default=False)
    out = [
        f"# Routing table {generation}, written by Ecliptic; edits are lost on the next change.",
    ]
    # Routes forwarded to the same peers share one upstream (and its idle connections).
    groups: dict[tuple[str, ...], str] = {}
    for route in routes:
        if route.peers:  # never with ports (Route refuses both)
            if ports.peer is None:
                raise InvalidFrontInput(
                    f"route {route.host} names peers but the front has no peer listener"
                )
            if route.peers not in groups:
                groups[route.peers] = name = f"p_{len(groups)}"
                out.append(f"upstream {name} {{")
                out += [
                    f"    server {peer} max_fails=1 fail_timeout={UPSTREAM_FAIL_TIMEOUT_S}s;"
                    for peer in route.peers
                ]
                out += [f"    keepalive {UPSTREAM_KEEPALIVE};", "}"]
    for index, route in enumerate(sorted(routes, key=lambda r: r.host)):
        name = f"t_{index}"
        if route.ports:
            out.append(f"upstream {name} {{")
            out += [
                f"    server {cfg.tunnel_host}:{port} max_fails=1 "
                f"fail_timeout={UPSTREAM_FAIL_TIMEOUT_S}s;"
                for port in route.ports
            ]
            out += [f"    keepalive {UPSTREAM_KEEPALIVE};", "}"]
        hop = bool(route.peers)
        out += ["server {", *listens, f"    server_name {route.host};"]
        if cfg.redirect_http and ports.tls is not None:
            # Plain HTTP on the public port only: peers' requests come in on the hop port.
            where = "" if ports.tls == 443 else f":{ports.tls}"
            out += [
                f"    if ($server_port = {ports.http}) {{",
                f"        return 308 https://$host{where}$request_uri;",
                "    }",
            ]
        out += [f"    include {lay.route_snippet};", "    location / {"]
        if hop:
            # What a peer forwarded is never forwarded again: no loops between replicas.
            out += ["        if ($ecl_via_peer) {", "            return 503;", "        }"]
        if route.public and not hop:
            out += [
                '        set $ecl_user "";',
                '        set $ecl_email "";',
                "        set $ecl_cookie $ecl_public_cookie;",
                "        set $ecl_authorization $ecl_public_authorization;",
            ]
        elif route.public:
            # To a peer, unchanged: its front takes Ecliptic's credentials out.
            out += [
                '        set $ecl_user "";',
                '        set $ecl_email "";',
                "        set $ecl_cookie $http_cookie;",
                "        set $ecl_authorization $http_authorization;",
            ]
        elif hop:
            # Refused here already; allowed requests go on with their credentials unchanged,
            # and the peer asks its own auth app and sets who the user is.
            out += [
                "        auth_request /_ecliptic_auth;",
                "        auth_request_set $ecl_login $upstream_http_x_ecliptic_login;",
                '        set $ecl_user "";',
                '        set $ecl_email "";',
                "        set $ecl_cookie $http_cookie;",
                "        set $ecl_authorization $http_authorization;",
            ]
        else:
            out += [
                "        auth_request /_ecliptic_auth;",
                "        auth_request_set $ecl_user $upstream_http_x_remote_user;",
                "        auth_request_set $ecl_email $upstream_http_x_remote_email;",
                "        auth_request_set $ecl_cookie $upstream_http_x_forward_cookie;",
                "        auth_request_set $ecl_authorization"
                " $upstream_http_x_forward_authorization;",
                "        auth_request_set $ecl_login $upstream_http_x_ecliptic_login;",
                "        auth_request_set $ecl_credential $upstream_http_x_ecliptic_credential;",
            ]
        if (route.ports or hop) and route.read_timeout_s != DEFAULT_READ_TIMEOUT_S:
            out += [
                f"        proxy_read_timeout {route.read_timeout_s}s;",
                f"        proxy_send_timeout {route.read_timeout_s}s;",
            ]
        if route.ports:
            scheme = "https" if route.upstream_tls else "http"
            if cfg.upgrade_relay_port:
                # After auth_request (access phase) either way; the relay picks the tunnel.
                out += [
                    "        if ($ecl_relayed) {",
                    f"            proxy_pass http://{cfg.tunnel_host}:{cfg.upgrade_relay_port};",
                    "        }",
                ]
            out.append(f"        proxy_pass {scheme}://{name};")
        elif hop:
            out += [f"        {line}" for line in _error_pages(_PAGES_URI, peer_hop=True)]
            out += [f"        {line}" for line in _peer_client_tls(cfg)]
            out.append(f"        proxy_pass https://{groups[route.peers]};")
        else:
            # try_files runs after auth_request: a private service's state is not shown to
            # someone who may not see it.
            out += [f"        root {lay.empty};", "        try_files /.no-tunnel =503;"]
        out += ["    }", "}"]
    if ports.peer is not None and ports.hop is not None and ports.hop_secret is not None:
        out += _peer_server(cfg, ports.peer, ports.hop, ports.hop_secret, relay_from)
    allow = ["127.0.0.0/8", "::1"]
    listen_ip = ipaddress.ip_address(cfg.listen_host)
    if not (listen_ip.is_unspecified or listen_ip.is_loopback):
        allow.append(cfg.listen_host)  # local probes to a public address come from it
    out += [
        "server {",
        f"    listen {_listen_addr(cfg.listen_host, ports.http)};",
        f"    server_name {CONTROL_HOST};",
        "    access_log off;",
        *[f"    allow {a};" for a in allow],
        "    deny all;",
        "    location = /generation {",
        "        default_type text/plain;",
        f'        return 200 "{generation}\\n";',
        "    }",
        "    location / {",
        "        return 404;",
        "    }",
        "}",
        "",
    ]
    return "\n".join(out)


COOKIE_STRIP_ROUNDS = 3
"""How many cookies of one name (with or without ``__Host-``) are taken out of a request: a
browser sends both variants, and a service can set decoys of the same name on other paths,
which browsers send first."""


def _cookie_strip_maps() -> str:
    """Maps that take Ecliptic's cookies out of ``$http_cookie``, into ``$ecl_public_cookie``
    (nginx has no global replace: one map removes one cookie, so they are chained)."""
    out, source = [], "$http_cookie"
    stages = [
        name
        for name in (GATEWAY_COOKIE, STATE_COOKIE, PORTAL_COOKIE)
        for _ in range(COOKIE_STRIP_ROUNDS)
    ]
    for index, name in enumerate(stages):
        target = "$ecl_public_cookie" if index == len(stages) - 1 else f"$ecl_cookie_{index}"
        out += [
            f"    map {source} {target} {{",
            f"        default {source};",
            f'        "~^(?:__Host-)?{name}=[^;]*(?:;[ ]*)?(?<rest>.*)$" $rest;',
            f'        "~^(?<pre>.*?);[ ]*(?:__Host-)?{name}=[^;]*(?<post>.*)$" $pre$post;',
            "    }",
        ]
        source = target
    return "\n".join(out) + "\n"


def _peer_client_tls(cfg: FrontConfig) -> list[str]:
    """How a route talks to peers' listeners: TLS 1.3, presenting the instance's peer
    certificate and accepting only it from the other side."""
    return [
        f"proxy_ssl_certificate {cfg.peer_cert};",
        f"proxy_ssl_certificate_key {cfg.peer_key};",
        f"proxy_ssl_trusted_certificate {cfg.peer_cert};",
        "proxy_ssl_verify on;",
        "proxy_ssl_verify_depth 1;",
        f"proxy_ssl_name {PEER_TLS_NAME};",
        "proxy_ssl_server_name on;",
        "proxy_ssl_protocols TLSv1.3;",
        "proxy_ssl_session_reuse on;",
    ]


def _peer_server(
    cfg: FrontConfig, peer: int, hop: int, hop_secret: str, relay_from: Sequence[str]
) -> list[str]:
    """The peer listener: mutual TLS with the instance's peer certificate, nothing else on
    its port. Requests go on, unchanged, to this front's routes over the loopback hop port
    with this run's hop secret; the TCP relay (``PEER_TCP_PATH``) exists only while there
    are live peers, and only for their addresses."""
    out = [
        "server {",
        f"    listen {_listen_addr(cfg.listen_host, peer)} ssl default_server;",
        "    server_name _;",
        f"    ssl_certificate {cfg.peer_cert};",
        f"    ssl_certificate_key {cfg.peer_key};",
        f"    ssl_client_certificate {cfg.peer_cert};",
        "    ssl_verify_client on;",
        "    ssl_verify_depth 1;",
        "    ssl_protocols TLSv1.3;",
        '    add_header Strict-Transport-Security "" always;',
    ]
    if cfg.tcp_relay_port and relay_from:
        out += [
            f"    location = {PEER_TCP_PATH} {{",
            *[f"        allow {ip};" for ip in sorted(set(relay_from))],
            "        deny all;",
            f"        proxy_pass http://{cfg.tunnel_host}:{cfg.tcp_relay_port};",
            f"        proxy_set_header Host {PEER_TCP_HOST};",
            "        proxy_set_header Upgrade $http_upgrade;",
            '        proxy_set_header Connection "upgrade";',
            f"        proxy_set_header {GRANT_HEADER} $http_x_ecliptic_grant;",
            f"        proxy_set_header {PEER_SERVICE_HEADER} $http_x_ecliptic_service;",
            "    }",
        ]
    out += [
        "    location / {",
        "        access_log off;  # the route it is handed to logs it",
        f"        proxy_pass http://127.0.0.1:{hop};",
        "        proxy_set_header Host $http_host;",
        "        proxy_set_header Upgrade $http_upgrade;",
        "        proxy_set_header Connection $ecl_connection;",
        "        proxy_set_header X-Forwarded-For $http_x_forwarded_for;",
        "        proxy_set_header X-Forwarded-Proto $http_x_forwarded_proto;",
        "        proxy_set_header X-Forwarded-Host $http_x_forwarded_host;",
        "        proxy_set_header X-Forwarded-Port $http_x_forwarded_port;",
        f"        proxy_set_header {HOP_HEADER} {hop_secret};",
        "    }",
        "}",
    ]
    return out


def render_pages() -> dict[str, str]:
    """Error pages by file name, with the request's host filled in by nginx (SSI)."""
    folder = resources.files("ecliptic.tunnel") / "templates"
    return {
        f"{status}.html": (folder / f"{status}.html")
        .read_text(encoding="utf-8")
        .replace(_HOST_PLACEHOLDER, _HOST_SSI)
        for status in PAGES
    }


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _probe_address(listen_host: str) -> str:
    ip = ipaddress.ip_address(listen_host)
    if ip.is_unspecified:
        return "::1" if ip.version == 6 else "127.0.0.1"
    return listen_host


def _children(pid: int) -> list[int]:
    """Direct children of ``pid`` (nginx workers, cache manager and loader)."""
    out: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tasks:
        with contextlib.suppress(OSError):
            text = Path(f"/proc/{pid}/task/{tid}/children").read_text()
            out += [int(p) for p in text.split()]
    return out


def _title(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _start_tick(pid: int) -> str | None:
    """When a process started (clock ticks since boot): with its pid, who it is."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _running(pid: int) -> bool:
    """Whether the process exists and is not a zombie."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _active_workers(master: int) -> set[int]:
    """Workers of ``master`` that accept connections (not shutting down after a reload)."""
    return {pid for pid in _children(master) if _title(pid) == _WORKER_TITLE}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _wait_pidfd(fd: int, timeout: float) -> bool:
    """True when the process behind ``fd`` exited within ``timeout``."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(0.0, timeout) * 1000))


class Front:
    """The nginx master serving service hosts, and the routing table it serves."""

    def __init__(self, config: FrontConfig) -> None:
        self.config = config
        self._lay = _Layout(config.state_dir)
        self._cond = threading.Condition()
        self._lifecycle = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._ports: Ports | None = None
        self._routes: tuple[Route, ...] = ()
        self._relay_from: tuple[str, ...] = ()
        self._applied = 0  # generation of the last table given to apply()
        self._written = 0  # generation written to routes.conf and signalled to nginx
        self._pending_since: float | None = None
        self._last_reload = 0.0
        self._min_interval = RELOAD_MIN_INTERVAL_S
        self._stale_workers: set[int] = set()
        self._ours: dict[int, str | None] = {}
        """nginx processes of this front's master (pid -> start tick): see ``_remember``."""
        self._reload_error: str | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- properties -------------------------------------------------------------------

    @property
    def http_port(self) -> int:
        """The plain-HTTP port nginx listens on (the picked one when configured as 0)."""
        return self._ports.http if self._ports is not None else self.config.http_port

    @property
    def tls_port(self) -> int | None:
        """The TLS port nginx listens on, None without TLS."""
        return self._ports.tls if self._ports is not None else self.config.tls_port

    @property
    def peer_port(self) -> int | None:
        """The peer listener's port (the picked one when configured as 0), None without."""
        return self._ports.peer if self._ports is not None else self.config.peer_port

    @property
    def pid(self) -> int | None:
        """PID of the nginx master while it runs."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Write the config, check it with ``nginx -t``, start the master, wait until it answers."""
        with self._lifecycle:
            if self.pid is not None:
                raise FrontError("the front is already running")
            cfg = self.config
            if not os.access(cfg.nginx_path, os.X_OK):
                raise FrontError(f"nginx is not installed at {cfg.nginx_path}: set nginx_path")
            as_root = os.geteuid() == 0
            if (problem := worker_account_problem()) is not None:
                raise FrontError(problem)
            self._prepare_dirs(as_root)
            self._end_orphans()
            self._stop_stale_master()
            picked = 0 in (cfg.http_port, cfg.tls_port, cfg.peer_port)
            attempts = 3 if picked or cfg.peer_port is not None else 1
            for attempt in range(attempts):
                ports = Ports(
                    http=cfg.http_port or _free_port(cfg.listen_host),
                    tls=_free_port(cfg.listen_host) if cfg.tls_port == 0 else cfg.tls_port,
                    peer=_free_port(cfg.listen_host) if cfg.peer_port == 0 else cfg.peer_port,
                    hop=_free_port("127.0.0.1") if cfg.peer_port is not None else None,
                    hop_secret=secrets.token_hex(32) if cfg.peer_port is not None else None,
                )
                try:
                    self._launch(ports, as_root)
                    break
                except FrontError as exc:
                    if attempt + 1 == attempts or "Address already in use" not in str(exc):
                        raise
                    log.info("front: picked port taken meanwhile, picking again")
            self._stopping = False
            if self._thread is None or not self._thread.is_alive():
                # (Started again after nginx died, the reloader of the first start goes on.)
                self._thread = threading.Thread(
                    target=self._reloader, name="ecliptic-front-reload", daemon=True
                )
                self._thread.start()

    def stop(self) -> None:
        """Stop nginx by PID: SIGQUIT (graceful), then SIGTERM, then SIGKILL; reap it."""
        with self._lifecycle:
            with self._cond:
                self._stopping = True
                self._cond.notify_all()
            if self._thread is not None:
                self._thread.join()
                self._thread = None
            proc = self._proc
            if proc is None:
                return
            try:
                if proc.poll() is None:
                    self._shutdown(proc)
            finally:
                self._proc = None

    def apply(self, routes: Sequence[Route], *, relay_from: Sequence[str] = ()) -> None:
        """Make ``routes`` the routing table, and ``relay_from`` (the live peer replicas'
        addresses) the only clients of the TCP relay; nginx reloads shortly after (bursts
        coalesce). Applying the table already applied changes nothing and costs no reload.
        """
        relay = tuple(sorted(set(relay_from)))
        for ip in relay:
            ipaddress.ip_address(ip)  # nothing but an address goes into nginx's config
        table = tuple(sorted(routes, key=lambda r: r.host if isinstance(r, Route) else ""))
        for route in table:
            if not isinstance(route, Route):
                raise InvalidFrontInput(f"not a Route: {route!r}")
        hosts = [r.host for r in table]
        dupes = sorted({h for h in hosts if hosts.count(h) > 1})
        if dupes:
            raise InvalidFrontInput(f"several routes for {', '.join(dupes)}: give one per host")
        if CONTROL_HOST in hosts:
            raise InvalidFrontInput(f"{CONTROL_HOST} is the front's own status host")
        if PEER_TCP_HOST in hosts:
            raise InvalidFrontInput(f"{PEER_TCP_HOST} is the front's own relay host")
        if self.config.peer_port is None and any(r.peers for r in table):
            raise InvalidFrontInput("routes name peers but the front has no peer listener")
        with self._cond:
            if table == self._routes and relay == self._relay_from:
                return
            self._routes = table
            self._relay_from = relay
            self._applied += 1
            if self._pending_since is None:
                self._pending_since = time.monotonic()
            self._cond.notify_all()

    def flush(self, timeout: float = 5.0) -> None:
        """Block until nginx serves the last applied table with workers started for it."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._applied
            while self._written < target and not self._stopping:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        while True:
            proc = self._proc
            if proc is None or proc.poll() is not None:
                raise FrontError(
                    "nginx is not running; see "
                    f"{self._lay.error_log}:\n{_tail(self._lay.error_log)}"
                )
            with self._cond:
                written, stale, error = self._written, set(self._stale_workers), self._reload_error
            if written >= target:
                live = self._live_generation()
                if live is not None and live >= target and not (_active_workers(proc.pid) & stale):
                    return
            if time.monotonic() >= deadline:
                why = f" (last reload attempt: {error})" if error else ""
                raise FrontError(
                    f"routing table {target} is not live after {timeout:g} s{why}; see "
                    f"{self._lay.error_log}:\n{_tail(self._lay.error_log)}"
                )
            time.sleep(0.005)

    # -- internals --------------------------------------------------------------------

    def _prepare_dirs(self, as_root: bool) -> None:
        lay = self._lay
        lay.root.mkdir(parents=True, exist_ok=True)
        if as_root:
            for parent in lay.root.resolve().parents:
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    raise FrontError(
                        f"nginx workers run as {WORKER_USER} and cannot reach {lay.root}: "
                        f"{parent} is not searchable by others (mode {mode & 0o777:o}); "
                        "choose a state_dir whose parents are (e.g. under /var/lib)"
                    )
            os.chmod(lay.root, 0o711)
        for path, mode in ((lay.pages, 0o755), (lay.empty, 0o755), (lay.logs, 0o750)):
            path.mkdir(exist_ok=True)
            os.chmod(path, mode)
        # The auth cache starts empty (its answers live seconds), so nothing another worker
        # account wrote before (an install whose workers ran as nobody) is left in it.
        shutil.rmtree(lay.auth_cache, ignore_errors=True)
        private = [lay.tmp, lay.auth_cache]
        private += [lay.tmp / n for n in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")]
        uid = pwd.getpwnam(WORKER_USER).pw_uid if as_root else -1
        gid = pwd.getpwnam(WORKER_USER).pw_gid if as_root else -1
        for path in private:
            path.mkdir(exist_ok=True)
            os.chmod(path, 0o700)
            if as_root:
                os.chown(path, uid, gid)
        for name, text in render_pages().items():
            write_atomic(lay.pages / name, text)

    def _stop_stale_master(self) -> None:
        """A master left running on this state_dir by an Ecliptic that died: stop it."""
        try:
            pid = int(self._lay.pid.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            return
        try:
            # Checked after the pidfd pins the process: a recycled PID is never signalled.
            title = _title(pid)
            if not title.startswith("nginx: master process") or str(self._lay.conf) not in (
                title.split()
            ):
                return
            log.warning("front: stopping nginx master %s left over from a previous run", pid)
            for sig, wait in (
                (signal.SIGQUIT, self.config.stop_grace_s),
                (signal.SIGTERM, 5.0),
                (signal.SIGKILL, 5.0),
            ):
                if sig == signal.SIGKILL:
                    self._kill_children(pid)
                with contextlib.suppress(ProcessLookupError):
                    signal.pidfd_send_signal(fd, sig)
                if _wait_pidfd(fd, wait):
                    return
            raise FrontError(f"nginx master {pid} left over from a previous run does not exit")
        finally:
            os.close(fd)

    def _remember(self) -> None:
        """Note the running master's processes (with their start times), so that workers it
        leaves behind if it is killed can be ended; refreshed at start, after each reload
        and whenever ``answering`` is asked."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        for pid in (proc.pid, *_children(proc.pid)):
            self._ours.setdefault(pid, _start_tick(pid))

    def _end_orphans(self) -> None:
        """End nginx processes of this front whose master is gone (killed on its own, say):
        they still hold the ports, so a new master could not bind them. Called only while
        no master of this front runs: every process recorded by ``_remember`` that still
        runs (same pid, same start time) is one of them."""
        ours, self._ours = self._ours, {}
        orphans = [
            pid
            for pid, tick in ours.items()
            if tick is not None and _start_tick(pid) == tick and _running(pid)
        ]
        for pid in orphans:
            log.warning("front: ending nginx process %s left by a master that is gone", pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_running(p) for p in orphans):
            time.sleep(0.01)

    def _launch(self, ports: Ports, as_root: bool) -> None:
        cfg, lay = self.config, self._lay
        for path, text in render_main(cfg, ports, as_root=as_root).items():
            write_atomic(path, text, mode=0o600)
        with self._cond:
            routes, generation, relay = self._routes, self._applied, self._relay_from
        text = render_routes(cfg, routes, generation, ports, relay_from=relay)
        write_atomic(lay.routes, text, mode=0o600)
        argv = [cfg.nginx_path, "-p", f"{lay.root}/", "-e", str(lay.error_log), "-c", str(lay.conf)]
        check = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise FrontError(f"nginx rejected {lay.conf}:\n{check.stderr.strip()}")
        with open(lay.stderr_log, "ab") as err:
            # nginx ends with the process that started it, even one killed with SIGKILL
            # (else it would answer 502s until the next start adopts it).
            setpriv = shutil.which("setpriv")
            if setpriv is not None:
                argv = [setpriv, "--pdeathsig", "TERM", "--", *argv]
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                start_new_session=True,  # Ctrl-C of the daemon is not a fast nginx shutdown
            )
        self._proc = proc
        self._ports = ports
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                self._proc = None
                raise FrontError(
                    f"nginx exited with status {proc.returncode} while starting:\n"
                    f"{_tail(lay.stderr_log)}"
                )
            live = self._live_generation()
            if live is not None and live >= generation:
                break
            if time.monotonic() >= deadline:
                try:
                    self._shutdown(proc)
                finally:
                    self._proc = None
                raise FrontError(
                    f"nginx did not answer on port {ports.http} within {START_TIMEOUT_S:g} s; "
                    f"see {lay.error_log}:\n{_tail(lay.error_log)}"
                )
            time.sleep(0.01)
        self._remember()
        with self._cond:
            self._written = generation
            self._last_reload = time.monotonic()
            self._stale_workers = set()
            self._reload_error = None
        log.info(
            "front: nginx %s serving http://%s (tls %s)",
            proc.pid,
            _listen_addr(cfg.listen_host, ports.http),
            ports.tls,
        )

    def _shutdown(self, proc: subprocess.Popen[bytes]) -> None:
        for sig, wait in (
            (signal.SIGQUIT, self.config.stop_grace_s),
            (signal.SIGTERM, 5.0),
        ):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                log.warning("front: nginx %s still running after %s", proc.pid, sig.name)
        # Workers outlive a killed master: stop them first, by PID, as children of ours.
        self._kill_children(proc.pid)
        proc.kill()
        proc.wait()

    @staticmethod
    def _kill_children(master: int) -> None:
        for child in _children(master):
            try:
                fd = os.pidfd_open(child)
            except OSError:
                continue
            try:
                if _title(child).startswith("nginx: "):
                    with contextlib.suppress(ProcessLookupError):
                        signal.pidfd_send_signal(fd, signal.SIGKILL)
                    _wait_pidfd(fd, 2.0)
            finally:
                os.close(fd)

    def answering(self) -> bool:
        """Whether nginx runs and answers a request within a second (its status page)."""
        ok = self.pid is not None and self._live_generation() is not None
        self._remember()
        return ok

    def _live_generation(self) -> int | None:
        """The routing-table number a freshly accepted connection is served with."""
        conn = http.client.HTTPConnection(
            _probe_address(self.config.listen_host), self.http_port, timeout=1.0
        )
        try:
            conn.request("GET", "/generation", headers={"Host": CONTROL_HOST})
            resp = conn.getresponse()
            body = resp.read(64)
            return int(body) if resp.status == 200 else None
        except (OSError, ValueError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def _reloader(self) -> None:
        """Write the pending table and SIGHUP nginx, coalescing bursts of ``apply``."""
        while True:
            with self._cond:
                while not self._stopping and self._applied == self._written:
                    self._cond.wait()
                if self._stopping:
                    return
                since = self._pending_since or time.monotonic()
                due = max(since + RELOAD_COALESCE_S, self._last_reload + self._min_interval)
                while not self._stopping and time.monotonic() < due:
                    self._cond.wait(due - time.monotonic())
                if self._stopping:
                    return
                routes, generation = self._routes, self._applied
                self._pending_since = None
            started = time.monotonic()
            try:
                self._reload(routes, generation)
            except Exception as exc:  # the thread must survive a full disk or a dead master
                if str(exc) != self._reload_error:  # once per cause, not once per retry
                    log.exception("front: reload to routing table %s failed", generation)
                with self._cond:
                    self._reload_error = str(exc)
                    self._last_reload = time.monotonic() + RELOAD_RETRY_S
                    if self._pending_since is None:
                        self._pending_since = time.monotonic()
                continue
            with self._cond:
                self._written = max(self._written, generation)
                self._reload_error = None
                self._cond.notify_all()
            # Pace reloads by what they cost: a big table takes nginx a while to load, and a
            # master that does nothing but reload serves nobody.
            live = self._wait_live(generation)
            self._remember()
            self._bound_old_workers()
            took = time.monotonic() - started
            with self._cond:
                self._last_reload = time.monotonic()
                self._min_interval = max(RELOAD_MIN_INTERVAL_S, 2 * took)
                if not live and not self._stopping:
                    self._reload_error = f"routing table {generation} did not go live"
                    log.warning(
                        "front: routing table %s not live after %.1f s; see %s",
                        generation,
                        took,
                        self._lay.error_log,
                    )

    def _bound_old_workers(self) -> None:
        """End the oldest old workers beyond ``max_old_workers``: after a reload has gone
        live, every worker from before it is old, whether or not it has retitled itself
        yet."""
        proc = self._proc
        if proc is None:
            return
        with self._cond:
            stale = set(self._stale_workers)
        old: list[tuple[int, int]] = []
        for pid in _children(proc.pid):
            title, started = _title(pid), _start_tick(pid)
            if started is not None and (
                title == _OLD_WORKER_TITLE or (title == _WORKER_TITLE and pid in stale)
            ):
                old.append((int(started), pid))
        old.sort()
        for tick, pid in old[: max(0, len(old) - self.config.max_old_workers)]:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue  # gone meanwhile
            try:
                # Through the pidfd, and only if it is still that worker: never a new
                # process that took its pid.
                if _start_tick(pid) == str(tick) and _title(pid).startswith(_WORKER_TITLE):
                    signal.pidfd_send_signal(fd, signal.SIGTERM)
                    log.info(
                        "front: ended old worker %d (more than %d old workers)",
                        pid,
                        self.config.max_old_workers,
                    )
            except OSError:
                pass
            finally:
                os.close(fd)

    def _wait_live(self, generation: int) -> bool:
        """Wait until fresh connections are served ``generation`` (or stop, or time out)."""
        deadline = time.monotonic() + RELOAD_LIVE_TIMEOUT_S
        while not self._stopping and time.monotonic() < deadline:
            live = self._live_generation()
            if live is not None and live >= generation:
                return True
            time.sleep(0.005)
        return False

    def _reload(self, routes: tuple[Route, ...], generation: int) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise FrontError("nginx is not running")
        with self._cond:
            relay = self._relay_from
        ports = self._ports
        if ports is None:
            raise FrontError("nginx is not running")
        text = render_routes(self.config, routes, generation, ports, relay_from=relay)
        write_atomic(self._lay.routes, text, mode=0o600)
        workers = _active_workers(proc.pid)
        with self._cond:
            self._stale_workers = {p for p in self._stale_workers if _title(p)} | workers
        proc.send_signal(signal.SIGHUP)
        log.debug("front: routing table %s (%s routes) signalled", generation, len(routes))
