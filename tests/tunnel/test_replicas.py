"""Several gateway replicas on one database, forwarding to each other.

Replica B is ``ecliptic serve`` with its embedded gateway (module-wide, once on SQLite and
once on PostgreSQL); replica A is an ``ecliptic gateway`` started per test on the same
database. Tunnels are stock ``ssh -R`` to A; requests go to B, which must forward them to
A, or answer 503 when A is gone. The pure parts (who is alive, which peers hold what,
which route wins) are tested on plain data.
"""

from __future__ import annotations

import dataclasses
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner
from websockets.sync.client import connect as ws_connect

from ecliptic.cli.main import app
from ecliptic.config import InvalidSetting, load_settings
from ecliptic.secretbox import SecretBox
from ecliptic.services import gateway as registry
from ecliptic.store.db import Database
from ecliptic.store.models import GatewayReplica, Service, TunnelEndpoint, User
from ecliptic.tunnel.front import (
    PEER_TCP_HOST,
    PEER_TCP_PATH,
    FrontConfig,
    InvalidFrontInput,
    Ports,
    Route,
    render_routes,
)
from ecliptic.tunnel.gateway import ReplicaWatch, own_peer_address, peer_routes, plan_routes
from tests.conftest import fresh_pg_database, migrated_sqlite
from tests.tunnel.conftest import (
    Backend,
    Replica,
    Served,
    needs_gateway,
    peer_request,
    serve_with_gateway,
    standalone_replica,
    stop,
)
from tests.tunnel.test_gateway import _jump

STALE_S = 3
"""Peer staleness for the replicas under test (the default is 5 s)."""
BROWSER = {"Accept": "text/html,application/xhtml+xml"}
T = TypeVar("T")


def wait_until(what: str, check: Callable[[], T | None], timeout: float = 15) -> T:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def lower(headers: dict[str, str]) -> dict[str, str]:
    return {k.lower(): v for k, v in headers.items()}


# -- pure parts -------------------------------------------------------------------------

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def beat(replica: str, at: datetime, address: str = "10.0.0.1:8480") -> registry.ReplicaBeat:
    return registry.ReplicaBeat(replica, address, at)


def test_a_replica_is_alive_while_its_heartbeat_moves_on_our_clock() -> None:
    watch = ReplicaWatch(stale_s=5)
    # First sight: judged by the heartbeat's age.
    live = watch.live(
        [beat("fresh", T0 - timedelta(seconds=1)), beat("old", T0 - timedelta(minutes=3))],
        wall=T0,
        mono=100.0,
    )
    assert live == {"fresh"}
    # "fresh" keeps beating, "old" starts again: both alive, whatever the wall clock says.
    live = watch.live(
        [beat("fresh", T0 + timedelta(seconds=1)), beat("old", T0 - timedelta(minutes=2))],
        wall=T0 + timedelta(seconds=2),
        mono=102.0,
    )
    assert live == {"fresh", "old"}
    # A heartbeat that stops moving goes stale after stale_s of our time, even when its
    # clock runs ahead of ours and its timestamp looks recent.
    ahead = T0 + timedelta(hours=1)
    assert watch.live([beat("fresh", ahead)], wall=T0, mono=103.0) == {"fresh"}
    assert watch.live([beat("fresh", ahead)], wall=T0, mono=107.9) == {"fresh"}
    assert watch.live([beat("fresh", ahead)], wall=T0, mono=108.0) == frozenset()
    # Forgotten rows are forgotten; a replica seen again is judged afresh.
    assert watch.live([], wall=T0, mono=109.0) == frozenset()
    assert watch.live([beat("fresh", T0)], wall=T0, mono=110.0) == {"fresh"}


def test_peer_routes_name_live_peers_holding_healthy_tunnels() -> None:
    view = registry.PeerView(
        replicas=(
            beat("me", T0, "10.0.0.1:8480"),
            beat("b", T0, "10.0.0.2:8480"),
            beat("c", T0, "[fd00::3]:8480"),
            beat("stale", T0, "10.0.0.4:8480"),
            beat("my-old-self", T0, "10.0.0.1:8480"),  # restarted here, not yet stale
            beat("bad", T0, "gw5.example:8480"),  # not an ip:port: never rendered
        ),
        held=(
            ("me", "s1"),
            ("b", "s1"),
            ("c", "s1"),
            ("b", "s2"),
            ("stale", "s3"),
            ("my-old-self", "s4"),
            ("bad", "s5"),
            ("gone", "s6"),  # a replica without a row
        ),
    )
    live = frozenset({"me", "b", "c", "my-old-self", "bad"})
    assert peer_routes(view, live, "me", "10.0.0.1:8480") == {
        "s1": ("10.0.0.2:8480", "[fd00::3]:8480"),
        "s2": ("10.0.0.2:8480",),
    }


def _service(sid: str, protocol: str = "http", public: bool = True) -> registry.RoutedService:
    return registry.RoutedService(sid, f"sub-{sid}", public, protocol, None, 10, 60)


def test_local_tunnels_win_then_peers_then_503() -> None:
    services = [
        _service("local"),
        _service("both"),
        _service("remote", protocol="https", public=False),
        _service("none"),
        _service("tcp", protocol="tcp"),
    ]
    local = {"local": [2001], "both": [2003, 2002]}
    peers = {"both": ["10.0.0.2:80"], "remote": ["10.0.0.2:80", "10.0.0.3:80"], "tcp": ["x"]}
    routes = {r.host: r for r in plan_routes(services, local, peers, "gw.test")}
    assert set(routes) == {f"sub-{s}.gw.test" for s in ("local", "both", "remote", "none")}
    assert (routes["sub-local.gw.test"].ports, routes["sub-local.gw.test"].peers) == ((2001,), ())
    assert (routes["sub-both.gw.test"].ports, routes["sub-both.gw.test"].peers) == (
        (2002, 2003),
        (),
    )
    remote = routes["sub-remote.gw.test"]
    assert (remote.ports, remote.peers) == ((), ("10.0.0.2:80", "10.0.0.3:80"))
    assert not remote.public and remote.read_timeout_s == 60
    assert (routes["sub-none.gw.test"].ports, routes["sub-none.gw.test"].peers) == ((), ())


def test_routes_and_front_refuse_unsafe_peer_input(tmp_path: Path) -> None:
    for bad in ("gw.example:80", "10.0.0.1", "10.0.0.1:0", "0.0.0.0:80", "::1:80", "[10.0.0.1]:80"):
        with pytest.raises(InvalidFrontInput, match="peer"):
            Route("a.gw.test", (), public=True, peers=(bad,))
    with pytest.raises(InvalidFrontInput, match="canonical"):
        Route("a.gw.test", (), public=True, peers=("[FD00:0::1]:80",))
    with pytest.raises(InvalidFrontInput, match="local tunnel"):
        Route("a.gw.test", (2000,), public=True, peers=("10.0.0.2:80",))
    with pytest.raises(InvalidFrontInput, match="peer_cert"):
        FrontConfig(state_dir=Path("/srv/x"), peer_port=8482)
    # Without a peer listener a front cannot forward: peers would not take its requests.
    route = Route("a.gw.test", (), public=True, peers=("10.0.0.2:80",))
    with pytest.raises(InvalidFrontInput, match="peer listener"):
        render_routes(FrontConfig(state_dir=Path("/srv/x")), [route], 1, Ports(8480))
    cfg = FrontConfig(
        state_dir=Path("/srv/x"),
        peer_port=8482,
        peer_cert=Path("/srv/x/peer.crt"),
        peer_key=Path("/srv/x/peer.key"),
    )
    text = render_routes(cfg, [route], 1, Ports(8480, None, 8482, 9000, "ab" * 32))
    # The loop guard comes before anything else in the forwarding location, and the hop
    # to the peer is TLS that verifies the peer's certificate.
    location = text.split("location / {", 1)[1]
    assert location.index("if ($ecl_via_peer)") < location.index("proxy_pass https://p_0")
    assert "proxy_ssl_verify on;" in location.split("proxy_pass https://p_0")[0]


def test_peer_settings_are_checked_at_the_edge(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECLIPTIC_GATEWAY_PEER_URL", "http://GW1.Example:8480/")
    assert load_settings(data_dir="/tmp/x").gateway_peer_url == "gw1.example:8480"
    for bad, why in (
        ("0.0.0.0:8480", "not addresses a peer can reach"),
        ("gw1:99999", "host:port"),
        ("https://gw1:8480", "host:port"),
        ("gw1", "host:port"),
    ):
        monkeypatch.setenv("ECLIPTIC_GATEWAY_PEER_URL", bad)
        with pytest.raises(InvalidSetting, match=f"ECLIPTIC_GATEWAY_PEER_URL.*{why}"):
            load_settings(data_dir="/tmp/x")
    monkeypatch.delenv("ECLIPTIC_GATEWAY_PEER_URL")
    monkeypatch.setenv("ECLIPTIC_GATEWAY_PEER_STALE_S", "0.5")
    with pytest.raises(InvalidSetting, match="ECLIPTIC_GATEWAY_PEER_STALE_S"):
        load_settings(data_dir="/tmp/x")
    monkeypatch.delenv("ECLIPTIC_GATEWAY_PEER_STALE_S")
    # The openssh endpoint was retired: asking for it (or anything but tunneld) says so.
    for retired in ("openssh", "dropbear"):
        monkeypatch.setenv("ECLIPTIC_GATEWAY_SSH_SERVER", retired)
        with pytest.raises(
            InvalidSetting, match=f"ECLIPTIC_GATEWAY_SSH_SERVER='{retired}'.*removed.*unset"
        ):
            load_settings(data_dir="/tmp/x")
    monkeypatch.setenv("ECLIPTIC_GATEWAY_SSH_SERVER", "tunneld")
    load_settings(data_dir="/tmp/x")


def test_serve_and_gateway_name_a_bad_setting_instead_of_a_traceback(tmp_path: Path) -> None:
    env = {"ECLIPTIC_GATEWAY_SSH_SERVER": "dropbear", "ECLIPTIC_DATA_DIR": str(tmp_path)}
    for command in (["gateway"], ["serve"]):
        res = CliRunner().invoke(app, command, env=env)
        assert res.exit_code == 1, res.output
        assert "ECLIPTIC_GATEWAY_SSH_SERVER='dropbear'" in res.output
        assert "Traceback" not in res.output


def test_own_peer_address_is_one_peers_can_reach() -> None:
    base = load_settings(data_dir="/tmp/x")
    on = dataclasses.replace(base, gateway_http_host="127.0.0.1", gateway_peer_url=None)
    assert own_peer_address(on, 8480) == "127.0.0.1:8480"
    everywhere = dataclasses.replace(on, gateway_http_host="0.0.0.0")
    address = own_peer_address(everywhere, 8480)
    assert address.endswith(":8480") and not address.startswith("0.0.0.0")
    named = dataclasses.replace(on, gateway_peer_url="localhost:9000")
    assert own_peer_address(named, 8480) in ("127.0.0.1:9000", "[::1]:9000")


# -- two real replicas ------------------------------------------------------------------


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def shared_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The database both replicas use."""
    if request.param == "sqlite":
        return migrated_sqlite(tmp_path_factory.mktemp("replicas-db") / "ecliptic.db")
    return fresh_pg_database(request.getfixturevalue("pg_admin_url"))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, shared_db: str) -> Iterator[Served]:
    """Replica B: ``ecliptic serve`` with its gateway; the requests in these tests go here."""
    tmp = tmp_path_factory.mktemp("replicas")
    with serve_with_gateway(
        tmp, ECLIPTIC_GATEWAY_PEER_STALE_S=str(STALE_S), ECLIPTIC_DATABASE_URL=shared_db
    ) as s:
        yield s


@pytest.fixture
def replica(served: Served, tmp_path: Path, shared_db: str) -> Iterator[Replica]:
    """Replica A: ``ecliptic gateway`` on B's database; the tunnels connect here."""
    with standalone_replica(
        served,
        tmp_path,
        ECLIPTIC_GATEWAY_PEER_STALE_S=str(STALE_S),
        ECLIPTIC_DATABASE_URL=shared_db,
    ) as a:
        yield a


@pytest.fixture
def store(served: Served, shared_db: str) -> Iterator[Database]:
    db = Database(shared_db, secrets=SecretBox.load(served.tmp / "data" / "secret.key"))
    yield db
    db.dispose()


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


def from_address(local: str, port: int, host: str, path: str = "/", **headers: str) -> Any:
    """A request to the front on ``port`` sent from loopback address ``local``."""
    transport = httpx.HTTPTransport(local_address=local)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host, **headers})


def connect_on_a(served: Served, a: Replica, svc: dict[str, Any], port: int) -> None:
    a.ssh_r(served.bind(svc["token"]["token"]), port)


@needs_gateway
def test_b_forwards_to_the_replica_holding_the_tunnel_and_follows_it(
    served: Served, replica: Replica, backends: Callable[[str], Backend]
) -> None:
    alpha, beta = backends("alpha"), backends("beta")
    svc = served.service("hop", public=True)
    host = svc["host"]
    connect_on_a(served, replica, svc, alpha.port)
    wait_until("A serves", lambda: replica.front(host).status_code == 200)
    started = time.monotonic()
    r = served.wait_for(host, lambda r: r.status_code == 200)
    print(f"forwarded by B {time.monotonic() - started:.2f} s after A served")
    assert r.json()["backend"] == "alpha"

    # What the service hears of the client is what B saw, not what the client claims, and
    # a hop secret the client made up is not taken as a peer's (B forwards, it does not
    # refuse).
    forged = {
        "X-Ecliptic-Hop": "f" * 64,
        "X-Forwarded-For": "6.6.6.6",
        "X-Forwarded-Port": "1",
        "X-Forwarded-Host": "evil.example",
        "X-Remote-User": "root",
    }
    r = from_address("127.0.0.2", served.http_port, host, "/via-b", **forged)
    assert r.status_code == 200 and r.json()["backend"] == "alpha"
    seen = lower(alpha.seen[-1]["headers"])
    assert alpha.seen[-1]["path"] == "/via-b"
    assert seen["x-forwarded-for"] == "127.0.0.2" and seen["x-real-ip"] == "127.0.0.2"
    assert seen["x-forwarded-port"] == str(served.http_port)
    assert seen["x-forwarded-host"] == seen["host"] == f"{host}:{served.http_port}"
    assert seen["x-forwarded-proto"] == "http"
    assert "x-ecliptic-peer" not in seen and "x-remote-user" not in seen
    # Straight to A with the same forgeries: A does not take them from a client either.
    r = from_address("127.0.0.2", replica.http_port, host, "/at-a", **forged)
    assert r.status_code == 200
    seen = lower(alpha.seen[-1]["headers"])
    assert seen["x-forwarded-for"] == "127.0.0.2"
    assert seen["x-forwarded-port"] == str(replica.http_port)
    assert "x-ecliptic-peer" not in seen

    # The admin listing names the replica holding the tunnel.
    tunnels = [
        t
        for t in served.api.get("/gateway/tunnels").json()["items"]
        if t["service_id"] == svc["id"]
    ]
    assert [t["gateway_id"] for t in tunnels] == [replica.gateway_id]

    # A tunnel on B itself wins there; A keeps its own.
    second = served.api.post(f"/services/{svc['name']}/tokens").json()["token"]
    on_b = served.ssh_r(served.bind(second), beta.port)

    def answers(front: Callable[[str], httpx.Response]) -> set[object]:
        replies = [front(host) for _ in range(8)]
        return {r.json()["backend"] if r.status_code == 200 else r.status_code for r in replies}

    wait_until("B prefers its own tunnel", lambda: answers(served.front) == {"beta"})
    assert answers(replica.front) == {"alpha"}
    # The tunnel moves: A's client goes away, B's stays; A now forwards to B.
    for client in replica.clients:
        stop(client)
    wait_until("A forwards to B", lambda: answers(replica.front) == {"beta"})
    # And back: B's client goes away, A has no tunnel any more: both answer 503.
    stop(on_b)
    served.wait_for(host, lambda r: r.status_code == 503, timeout=10)
    wait_until("A has nothing", lambda: replica.front(host).status_code == 503)


@needs_gateway
def test_signed_in_service_via_b_still_refuses_strangers(
    served: Served, replica: Replica, store: Database, backends: Callable[[str], Backend]
) -> None:
    backend = backends("private")
    svc = served.service("hop-private")
    host = svc["host"]
    connect_on_a(served, replica, svc, backend.port)
    admin = served.api.headers["Authorization"]
    served.wait_for(host, lambda r: r.status_code == 200, Authorization=admin)
    seen = lower(backend.seen[-1]["headers"])
    assert seen["x-remote-user"] == "admin"
    assert "authorization" not in seen  # Ecliptic's own token stays with the gateways
    reached = len(backend.seen)

    # Browsers are sent to sign in at the portal, API clients get 401.
    r = served.front(host, "/lab?x=1", **BROWSER)
    assert r.status_code == 302
    assert "/_ecliptic/start?next=" in r.headers["location"]  # then on to the portal
    assert served.front(host).status_code == 401
    # Claims of identity and a made-up hop secret change nothing.
    forged = {
        "X-Remote-User": "admin",
        "Cookie": "ecliptic_gw=forged.1.2.3",
        "X-Ecliptic-Hop": "0" * 64,
    }
    assert served.front(host, **forged).status_code == 401
    assert replica.front(host, **forged).status_code == 401

    # A signed-in user not on the access list is refused, on either replica.
    assert served.api.post("/users", json={"name": "eve", "password": "eve-password"}).is_success
    eve = served.api.post(
        "/auth/login", json={"username": "eve", "password": "eve-password"}
    ).json()["secret"]
    assert served.front(host, Authorization=f"Bearer {eve}").status_code == 403
    assert replica.front(host, Authorization=f"Bearer {eve}").status_code == 403

    # Even a genuine peer (the instance's peer certificate, had it leaked) only says "from a
    # peer": A still asks who you are, and B, holding no tunnel, does not forward it again.
    def as_peer(to: Replica | Served, *lines: str) -> bytes:
        head = "".join(f"{line}\r\n" for line in ("GET / HTTP/1.1", f"Host: {host}", *lines))
        return peer_request(to.peer_port, head + "\r\n", state=replica.state)

    assert b" 401 " in as_peer(replica, "X-Remote-User: admin")
    assert b" 403 " in as_peer(replica, f"Authorization: Bearer {eve}")
    assert b" 503 " in as_peer(served, f"Authorization: {admin}")
    assert len(backend.seen) == reached


def _log_lines(replica: Replica, token: str) -> list[str]:
    try:
        text = replica.access_log.read_text()
    except OSError:
        return []
    return [line for line in text.splitlines() if token in line]


@needs_gateway
def test_no_forwarding_loop_when_both_replicas_only_have_peer_routes(
    served: Served, replica: Replica, store: Database
) -> None:
    svc = served.service("hop-loop", public=True)
    host = svc["host"]
    b_address = f"127.0.0.1:{served.peer_port}"
    with store.read() as session:
        b_id = session.scalar(
            select(GatewayReplica.id).where(GatewayReplica.peer_address == b_address)
        )
    assert b_id is not None
    # Each replica believes the other holds a tunnel (as after a store hiccup).
    with store.write() as session:
        for gateway_id in (replica.gateway_id, b_id):
            session.add(
                TunnelEndpoint(
                    id=secrets.token_hex(8),
                    gateway_id=gateway_id,
                    service_id=svc["id"],
                    fingerprint="SHA256:ecl-test",
                    client="127.0.0.1:1",
                    port=9,
                    healthy=True,
                )
            )
    try:

        def forwarded_by_b() -> tuple[str, float, int] | None:
            token = f"/loop-{secrets.token_hex(4)}"
            started = time.monotonic()
            r = served.front(host, token)
            took = time.monotonic() - started
            for _ in range(30):  # A's access log is flushed within a second
                if _log_lines(replica, token):
                    return token, took, r.status_code
                time.sleep(0.1)
            return None

        token, took, status = wait_until("B forwards to A", forwarded_by_b, timeout=30)
        assert status == 503 and took < 5
        # A got it once and answered itself, without forwarding it back ("-": no upstream).
        [line] = _log_lines(replica, token)
        assert '" 503 ' in line and line.endswith('"-" "python-httpx/' + httpx.__version__ + '"')

        # Straight to A: A forwards to B once, B refuses to forward again.
        other = f"/loop-{secrets.token_hex(4)}"
        r = replica.front(host, other)
        assert r.status_code == 503 and "no tunnel" in r.text.lower()
        lines = wait_until("A logs it", lambda: _log_lines(replica, other))
        assert len(lines) == 1 and f'"{b_address}"' in lines[0]
    finally:
        assert served.api.delete(f"/services/{svc['name']}").status_code == 204


@needs_gateway
def test_a_replica_that_stops_or_crashes_is_no_longer_forwarded_to(
    served: Served,
    replica: Replica,
    tmp_path: Path,
    backends: Callable[[str], Backend],
    shared_db: str,
) -> None:
    backend = backends("a")
    svc = served.service("hop-stop", public=True)
    host = svc["host"]
    connect_on_a(served, replica, svc, backend.port)
    served.wait_for(host, lambda r: r.status_code == 200)

    # A stops cleanly: it removes itself first; B answers "no tunnel" within seconds.
    replica.proc.terminate()
    started = time.monotonic()
    r = served.wait_for(host, lambda r: r.status_code == 503, timeout=5)
    print(f"B stopped forwarding {time.monotonic() - started:.2f} s after A was told to stop")
    assert "no tunnel" in r.text.lower()
    replica.proc.wait(30)

    # Another A hangs: its nginx and the tunnel live on, but its heartbeat stops, so B
    # stops forwarding to it once the heartbeat is STALE_S old.
    token = served.api.post(f"/services/{svc['name']}/tokens").json()["token"]
    with standalone_replica(
        served,
        tmp_path,
        ECLIPTIC_GATEWAY_PEER_STALE_S=str(STALE_S),
        ECLIPTIC_DATABASE_URL=shared_db,
    ) as crashing:
        crashing.ssh_r(served.bind(token), backend.port)
        served.wait_for(host, lambda r: r.status_code == 200)
        crashing.hang()
        started = time.monotonic()
        r = served.wait_for(host, lambda r: r.status_code == 503, timeout=STALE_S + 5)
        print(f"B stopped forwarding {time.monotonic() - started:.2f} s after A hung")
        assert "no tunnel" in r.text.lower()
        # A's nginx still answers: B stopped forwarding because the heartbeat went stale,
        # not because A refused connections.
        assert crashing.front(host).status_code in (200, 502)
        # And `service show` no longer counts its tunnel as healthy once the heartbeat is
        # SILENT_REPLICA old, whatever the replica last wrote.
        wait_until(
            "the hung replica's tunnel shown unhealthy",
            lambda: (
                not any(
                    t["healthy"]
                    for t in served.api.get(f"/services/{svc['name']}").json()["tunnels"]
                )
            ),
            timeout=registry.SILENT_REPLICA.total_seconds() + 5,
        )
        crashing.crash()


class _Streams(ThreadingHTTPServer):
    """A service with an event stream (``/events``: one event, then the next once ``go``)."""

    daemon_threads = True

    def __init__(self) -> None:
        self.go = threading.Event()
        streams = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for event, wait in ((b"data: one\n\n", True), (b"data: two\n\n", False)):
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                    self.wfile.flush()
                    if wait:
                        streams.go.wait(10)
                self.wfile.write(b"0\r\n\r\n")

            def log_message(self, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def streams() -> Iterator[_Streams]:
    server = _Streams()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        yield server
    finally:
        server.go.set()
        server.shutdown()
        server.server_close()


@needs_gateway
def test_websockets_and_event_streams_cross_the_hop(
    served: Served, replica: Replica, streams: _Streams, ws_echo: int
) -> None:
    ws_svc = served.service("hop-ws", public=True)
    sse_svc = served.service("hop-sse", public=True)
    connect_on_a(served, replica, ws_svc, ws_echo)
    connect_on_a(served, replica, sse_svc, streams.server_address[1])
    served.wait_for(ws_svc["host"], lambda r: r.status_code not in (502, 503))
    served.wait_for(sse_svc["host"], lambda r: r.status_code == 200)
    streams.go.clear()

    sock = socket.create_connection(("127.0.0.1", served.http_port), timeout=5)
    url = f"ws://{ws_svc['host']}:{served.http_port}/socket"
    with ws_connect(url, sock=sock, proxy=None) as ws:
        for text in ("hello", "again"):
            ws.send(text)
            assert ws.recv(timeout=5) == f"echo: {text}"

    with socket.create_connection(("127.0.0.1", served.http_port), timeout=5) as s:
        s.sendall(
            f"GET /events HTTP/1.1\r\nHost: {sse_svc['host']}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        got = b""
        # The service holds the second event until the first arrived here: a hop that
        # buffered would deliver nothing and this read would time out.
        while b"data: one" not in got:
            got += s.recv(65536)
        assert b"data: two" not in got
        streams.go.set()
        while b"data: two" not in got:
            got += s.recv(65536)
    assert got.startswith(b"HTTP/1.1 200")


def _upgrade(
    port: int,
    grant: str,
    service: str,
    *,
    state: Path | None,
    source: str | None = None,
    plain: bool = False,
) -> bytes:
    """The request a peer's jump host sends a peer listener for a TCP service (over TLS
    with the peer certificate from ``state``); the answer's head."""
    return peer_request(
        port,
        f"GET {PEER_TCP_PATH} HTTP/1.1\r\nHost: {PEER_TCP_HOST}\r\n"
        "Connection: Upgrade\r\nUpgrade: ecliptic-tcp\r\n"
        f"X-Ecliptic-Grant: {grant}\r\nX-Ecliptic-Service: {service}\r\n\r\n",
        state=state,
        source=source,
        plain=plain,
    )


@needs_gateway
def test_jump_host_reaches_a_tcp_service_whose_tunnel_is_on_a_peer(
    served: Served, replica: Replica, store: Database, backends: Callable[[str], Backend]
) -> None:
    node = backends("login-node")
    svc = served.service("hop-login", protocol="tcp")
    connect_on_a(served, replica, svc, node.port)
    key, pub = served.keypair()
    added = served.api.post("/users/me/ssh-keys", json={"name": "hop", "public_key": pub})
    assert added.status_code == 201, added.text

    # B's jump host has no tunnel for it: it goes through A's front and relay.
    out = wait_until(
        "B's jump host reaches the tunnel on A",
        lambda: (
            (r := _jump(served, "admin", key, svc["subdomain"])).stdout.startswith(b"HTTP") and r
        ),
    )
    assert out.stdout.split(b"\r\n")[0].endswith(b"200 OK") and b"login-node" in out.stdout
    assert len(node.seen) == 1
    # Hole 1, as an attacker would try it. The public front has no relay at all.
    sub = svc["subdomain"]
    assert served.api.post("/users", json={"name": "mallory", "password": "m" * 12}).is_success
    with store.read() as session:
        service_id = session.scalars(select(Service.id).where(Service.subdomain == sub)).one()
        admin = session.scalars(select(User.id).where(User.name == "admin")).one()
        mallory = session.scalars(select(User.id).where(User.name == "mallory")).one()
    good = registry.mint_peer_grant(store, admin, service_id)
    assert b" 404 " in _upgrade(replica.http_port, good, sub, state=None, plain=True)
    # The peer listener: nothing without the instance's peer certificate, plain or TLS.
    assert b" 400 " in _upgrade(replica.peer_port, good, sub, state=None, plain=True)
    assert b" 400 " in _upgrade(replica.peer_port, good, sub, state=None)
    # With it, only a grant that is genuine, unexpired, for this service and for a user who
    # may reach it opens the stream.
    mallory = next(
        u["id"] for u in served.api.get("/users").json()["items"] if u["name"] == "mallory"
    )
    forged = good.rsplit(".", 1)[0] + ".AAAAAAAAAAAAAAAAAAAAAAAAAAA"
    for bad in (
        "",
        forged,
        registry.mint_peer_grant(store, admin, service_id, now=time.time() - 60),  # expired
        registry.mint_peer_grant(store, admin, "0" * 32),  # another service
        registry.mint_peer_grant(store, mallory, service_id),  # not on the access list
    ):
        assert b" 403 " in _upgrade(replica.peer_port, bad, sub, state=replica.state), bad
    assert b" 403 " in _upgrade(replica.peer_port, good, "nosuchservice", state=replica.state)
    assert len(node.seen) == 1
    assert b" 101 " in _upgrade(replica.peer_port, good, sub, state=replica.state)
    # ... and only from a live peer's address.
    head = _upgrade(replica.peer_port, good, sub, state=replica.state, source="127.0.0.2")
    assert b" 403 " in head, head
    assert len(node.seen) == 1
