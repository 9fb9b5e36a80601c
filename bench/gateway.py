"""Tunnel gateway data plane: Ecliptic's gateway against Zenith's (sshd + nginx), on loopback.

    python -m bench.gateway [--json] [--quick] [--idle-tunnels 2000] [--anchor-gcm] [--keep]
                            [--only throughput,rps,latency,first,reconnect,idle]

One backend nginx serves a 1 KiB file and a 100 MiB file; three paths lead to it:

* direct: a front nginx proxying straight to the backend (upstream keepalive): the ceiling.
* anchor: Zenith's data path, set up here: a daemon OpenSSH ``sshd`` (Debian defaults), a stock
  client holding a pty session open with a remote forward, and a front nginx with upstream
  keepalive 32 to the forwarded port. Zenith's client runs ``ssh -tt -R 0:... <command>``;
  the ``tunnel`` account's shell is nologin, so here the pty session runs sshd's built-in
  sftp server (``-tt -s ... sftp``), which idles like Zenith's command. The pty is what
  matters: sshd sets TCP_NODELAY for pty sessions only. The client negotiates its default
  cipher, chacha20-poly1305; ``--anchor-gcm`` adds the same path with AES-GCM (the only
  cipher Ecliptic's endpoint offers) as ``anchor_gcm``.
* ecliptic: ``ecliptic serve`` with its gateway on; a service with one stock
  ``ssh -N -R 0:127.0.0.1:<backend>`` client; requests carry the service's Host.

All fronts and the backend run ``worker_processes auto`` like the gateway's nginx. Every path
shares the 2 cores with the load generators, backend and clients, so figures are relative:
the paths run back to back, their order alternating between rounds, and medians are compared.

Figures (JSON keys; ``direct_*`` and ``anchor_*`` are the same measure on those paths):
  throughput_mbps        100 MiB download, Mbit/s (10^6 bit/s), median of 5 curls per path
  rps                    1 KiB, ``wrk -t2 -c32 -d10s``, median of 3 rounds
  proxy_us_per_req       CPU of the path's own processes (front nginx, sshd; for ecliptic every
                         process of ``ecliptic serve``) per request during the rps runs
  p99_at_2000_ms         open-loop 2,000 req/s over 32 keep-alive connections (``bench.loadgen``,
                         counts queueing from the due time): 30 s per path, pooled over 2 s
                         slices that alternate between paths
  first_request_s        fresh key associated -> stock ssh started -> first 200 through the
                         gateway, median of 3 services; ``first_stable_s``: the first 200
                         after which nothing else answered for 1 s
  reconnect_s            ``ecliptic tunnel connect`` in a network namespace: veth cut for ~5 s
                         (or until the gateway drops the tunnel), back up -> first 200 through
                         the gateway; ``reconnect_after_drop_s``: a cut long enough that both
                         ends give the connection up, so a new ssh must connect
  idle_rss_mb            PSS (not RSS: shared pages split between sharers) summed over
                         ``ecliptic serve``, its sshd processes and its nginx, with
                         ``idle_tunnels`` idle stock-ssh tunnels; the clients are not counted

Needs root (sshd, nginx, network namespaces), OpenSSH client and server, nginx, wrk and curl;
uses the system account ``tunnel``. Every process it starts is stopped by PID, and the run
directories and the namespace are removed on exit (``--keep`` keeps the directories and logs).
"""

from __future__ import annotations

import argparse
import atexit
import concurrent.futures
import contextlib
import http.client
import json
import math
import os
import platform
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import asyncssh
import httpx
import psutil

from bench.harness import Served, free_port, percentile, serve
from bench.loadgen import run_open_loop

PARTS = ("throughput", "rps", "latency", "first", "reconnect", "idle")
PATHS = ("direct", "anchor", "ecliptic")
SMALL = "/1k"
LARGE = "/100m"
LARGE_BYTES = 100 * 2**20
TUNNEL_USER = "tunnel"
SSH_OPTS = [
    "-o", "IdentitiesOnly=yes",
    "-o", "BatchMode=yes",
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "GlobalKnownHostsFile=/dev/null",
    "-o", "ExitOnForwardFailure=yes",
]  # fmt: skip
GCM = "aes128-gcm@openssh.com"
"""The cipher Ecliptic's endpoint offers, for the ``--anchor-gcm`` comparison."""
NETNS_SUBNET = ("198.18.250.1", "198.18.250.2", 30)
"""Host and namespace ends of the veth used by the reconnect test (RFC 2544 benchmark range)."""
NS_BACKEND_PORT = 8080
LATENCY_KEYS = {
    "p99_ms": "p99_at_2000_ms",
    "p50_ms": "p50_at_2000_ms",
    "p999_ms": "p999_at_2000_ms",
    "errors": "open_loop_errors",
    "queued": "open_loop_queued",
    "p99_slices": "p99_at_2000_slices_ms",
}
"""Open-loop figure -> JSON key."""
_ALLOCATED = re.compile(r"Allocated port (\d+) for remote forward")
_CIPHER = re.compile(r"kex: server->client cipher: (\S+)")


@dataclass(frozen=True)
class Settings:
    """How long and how often each measure runs."""

    downloads: int = 5
    """100 MiB downloads per path."""
    rps_rounds: int = 3
    """Alternating wrk rounds."""
    rps_seconds: int = 10
    """Length of one wrk run."""
    latency_slices: int = 15
    """Open-loop slices per path, alternating between paths."""
    latency_slice_s: float = 2.0
    """Measured length of one slice (after 0.5 s of warm-up)."""
    rate: float = 2000.0
    """Open-loop request rate."""
    first_samples: int = 3
    """Services whose first request is timed."""
    reconnect_cycles: int = 3
    """Network cuts in the reconnect test."""
    outage_s: float = 5.0
    """Longest the link stays down (less when the gateway drops the tunnel earlier)."""
    idle_tunnels: int = 2000
    """Idle tunnels for the memory measure."""
    tunnels_per_service: int = 20
    """Idle tunnels bound to one service (keys are bound through extra tokens)."""
    connect_parallel: int = 32
    """Idle clients connecting at once (the gateway refuses > 50 pending per IP)."""


QUICK = Settings(
    downloads=3,
    rps_rounds=1,
    rps_seconds=3,
    latency_slices=3,
    latency_slice_s=1.0,
    reconnect_cycles=1,
    idle_tunnels=200,
)


# -- processes -------------------------------------------------------------------------------

_STARTED: dict[int, subprocess.Popen[bytes]] = {}


def spawn(
    argv: list[str],
    *,
    log: Path | None = None,
    stdin: int | IO[bytes] | None = subprocess.DEVNULL,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start a child in its own session, stdout+stderr to ``log``; remembered for cleanup."""
    out = open(log, "ab") if log else None  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.DEVNULL if log else None,
            stderr=out if out else subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    finally:
        if out:
            out.close()
    _STARTED[proc.pid] = proc
    return proc


def stop(procs: list[subprocess.Popen[bytes]], sig: int = signal.SIGTERM, wait: float = 10) -> None:
    """Signal each process by PID, wait for all, SIGKILL the ones still there."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(sig)
    deadline = time.monotonic() + wait
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            p.wait(5)
        _STARTED.pop(p.pid, None)


def stop_tree(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a daemon we started and every descendant it had (by their PIDs)."""
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    stop([proc], sig)
    for k in kids:
        with contextlib.suppress(psutil.NoSuchProcess):
            k.terminate()
    _gone, alive = psutil.wait_procs(kids, timeout=5)
    for k in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            k.kill()


@atexit.register
def _stop_leftovers() -> None:
    stop(list(reversed(_STARTED.values())), wait=5)


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 10) -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")
        time.sleep(0.02)


def wait_for(what: str, check: Callable[[], bool], timeout: float, every: float = 0.01) -> float:
    """Poll ``check`` until true; returns the seconds it took."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError(f"{what}: not after {timeout} s")
        time.sleep(every)
    return time.monotonic() - t0


def run(argv: list[str], **kw: Any) -> str:
    """Run a command to completion and return stdout; raise with stderr on failure."""
    r = subprocess.run(argv, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout


# -- memory and CPU ----------------------------------------------------------------------------


def pss_kb(pid: int) -> int:
    """Proportional set size of a process in KiB (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0
    m = re.search(r"^Pss:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def tree(pid: int) -> list[psutil.Process]:
    """A process and all its descendants."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def cpu_seconds(procs: list[psutil.Process]) -> float:
    """User + system CPU seconds of the processes (and their reaped children)."""
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            t = p.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
    return total


# -- nginx -------------------------------------------------------------------------------------


@dataclass
class Nginx:
    """One nginx master started here, with its config dir."""

    proc: subprocess.Popen[bytes]
    port: int
    root: Path

    def procs(self) -> list[psutil.Process]:
        """Master and workers."""
        return tree(self.proc.pid)


def start_nginx(root: Path, port: int, servers: str, *, netns: str | None = None) -> Nginx:
    """An nginx (2 workers, like the gateway's ``auto`` here) with ``servers`` in http {}."""
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    tmp = root / "tmp"
    tmp.mkdir(exist_ok=True)
    shutil.chown(tmp, "nobody", "nogroup")
    conf = root / "nginx.conf"
    conf.write_text(
        f"""daemon off;
master_process on;
worker_processes auto;
worker_rlimit_nofile 16384;
user nobody nogroup;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    default_type application/octet-stream;
    server_tokens off;
    sendfile on;
    tcp_nodelay on;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{servers}
}}
"""
    )
    argv = ["/usr/sbin/nginx", "-p", f"{root}/", "-e", f"{root}/error.log", "-c", str(conf)]
    run([*argv, "-t", "-q"])
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    proc = spawn(argv, log=root / "stderr.log")
    if netns is None:
        wait_port(port)
    else:
        probe = ["ip", "netns", "exec", netns, "curl", "-sf", "-o", "/dev/null"]
        probe.append(f"http://127.0.0.1:{port}{SMALL}")
        wait_for(f"nginx in {netns}", lambda: subprocess.run(probe).returncode == 0, 10, 0.05)
    return Nginx(proc, port, root)


def backend_servers(port: int, www: Path, listen: str = "127.0.0.1") -> str:
    """The backend: static files, no log."""
    return f"""    access_log off;
    server {{
        listen {listen}:{port};
        root {www};
    }}"""


def front_servers(port: int, upstream_port: int, logs: Path) -> str:
    """A front like the gateway's for one route: HTTP/1.1, upstream keepalive 32, no buffering."""
    return f"""    access_log {logs}/access.log combined buffer=32k flush=1s;
    upstream up {{
        server 127.0.0.1:{upstream_port};
        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port} default_server;
        location / {{
            proxy_pass http://up;
            proxy_http_version 1.1;
            proxy_set_header Host $host;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_buffering off;
            proxy_request_buffering off;
        }}
    }}"""


def make_www(www: Path) -> None:
    """The 1 KiB and 100 MiB files, readable by nginx's workers."""
    www.mkdir(parents=True, exist_ok=True)
    os.chmod(www, 0o755)
    (www / SMALL[1:]).write_bytes(b"x" * 1023 + b"\n")
    with open(www / LARGE[1:], "wb") as f:
        for _ in range(LARGE_BYTES // 2**20):
            f.write(os.urandom(2**20))
    for name in (SMALL[1:], LARGE[1:]):
        os.chmod(www / name, 0o644)


# -- keys and ssh clients ----------------------------------------------------------------------


def new_key(path: Path) -> str:
    """Write a fresh ed25519 private key (0600) at ``path``; returns the public key line."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    path.write_bytes(key.export_private_key())
    os.chmod(path, 0o600)
    return key.export_public_key().decode().strip()


def ssh_tunnel(
    key: Path, port: int, backend: int, log: Path, *, verbose: bool = False
) -> subprocess.Popen[bytes]:
    """A stock ``ssh -N -R 0:127.0.0.1:<backend>`` to ``tunnel@127.0.0.1:<port>``."""
    argv = ["ssh", "-N", "-R", f"0:127.0.0.1:{backend}", "-p", str(port), "-i", str(key)]
    argv += SSH_OPTS + (["-v"] if verbose else []) + [f"{TUNNEL_USER}@127.0.0.1"]
    return spawn(argv, log=log)


def log_text(path: Path) -> str:
    """A client's log so far ('' when missing)."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def allocated_port(log: Path) -> int | None:
    """The remote port a client's log says was allocated."""
    m = _ALLOCATED.search(log_text(log))
    return int(m.group(1)) if m else None


def cipher_of(log: Path) -> str:
    """The cipher a verbose client's log says was negotiated."""
    m = _CIPHER.search(log_text(log))
    return m.group(1) if m else "?"


# -- the paths ---------------------------------------------------------------------------------


@dataclass
class DataPath:
    """One way to the backend: where to send requests and which processes do the work."""

    name: str
    port: int
    host: str
    procs: Callable[[], list[psutil.Process]]
    cipher: str = "-"

    def url(self, path: str) -> str:
        """URL of ``path`` through this route."""
        return f"http://127.0.0.1:{self.port}{path}"


@dataclass
class Anchor:
    """Zenith's data path: daemon sshd, ``ssh -tt`` client with a forward, nginx front."""

    sshd: subprocess.Popen[bytes]
    client: subprocess.Popen[bytes]
    front: Nginx
    tunnel_port: int
    cipher: str

    def procs(self) -> list[psutil.Process]:
        """The front and the sshd processes (listener and this connection's)."""
        return self.front.procs() + tree(self.sshd.pid)

    def close(self) -> None:
        """Stop client, sshd and front by PID."""
        if self.client.stdin:
            with contextlib.suppress(OSError):
                self.client.stdin.close()
        stop([self.client])
        stop_tree(self.sshd)
        stop([self.front.proc], signal.SIGQUIT)


def start_anchor(
    rundir: Path, work: Path, backend: int, name: str = "anchor", cipher: str | None = None
) -> Anchor:
    """sshd with Debian's defaults on a free port, the stock client, and its front.

    ``cipher``: make the client ask for this one instead of its default (chacha20-poly1305).
    """
    d = rundir / f"{name}-sshd"
    d.mkdir(mode=0o755)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host_key")])
    key = work / f"{name}_key"
    pub = new_key(key)
    (d / "authorized_keys").write_text(pub + "\n")
    os.chmod(d / "authorized_keys", 0o644)
    port = free_port()
    (d / "sshd_config").write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
AddressFamily inet
HostKey {d}/host_key
PidFile {d}/sshd.pid
LogLevel DEBUG1
AllowUsers {TUNNEL_USER}
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes yes
AuthorizedKeysFile {d}/authorized_keys
AllowTcpForwarding remote
X11Forwarding no
PermitTTY yes
Subsystem sftp internal-sftp
ClientAliveInterval 10
ClientAliveCountMax 3
"""
    )
    run(["/usr/sbin/sshd", "-t", "-f", f"{d}/sshd_config"])
    sshd = spawn(["/usr/sbin/sshd", "-D", "-E", f"{d}/sshd.log", "-f", f"{d}/sshd_config"])
    wait_port(port)
    log = work / f"{name}-client.log"
    argv = ["ssh", "-tt", "-s", "-R", f"0:127.0.0.1:{backend}", "-p", str(port), "-i", str(key)]
    argv += ["-c", cipher] if cipher else []
    argv += [*SSH_OPTS, "-v", f"{TUNNEL_USER}@127.0.0.1", "sftp"]
    client = spawn(argv, log=log, stdin=subprocess.PIPE)
    wait_for(
        "anchor tunnel", lambda: allocated_port(log) is not None or client.poll() is not None, 15
    )
    tport = allocated_port(log)
    if tport is None:
        raise RuntimeError("anchor client failed:\n" + log_text(log)[-2000:])
    fport = free_port()
    front_dir = work / f"{name}-front"
    front = start_nginx(front_dir, fport, front_servers(fport, tport, front_dir))
    return Anchor(sshd, client, front, tport, cipher_of(log))


@dataclass
class Gateway:
    """A running ``ecliptic serve`` with its gateway, as the benchmark sees it."""

    served: Served
    http_port: int
    ssh_port: int
    state_dir: Path
    work: Path

    def create_service(self, name: str) -> tuple[str, str]:
        """A public service; returns its Host and its first association token."""
        r = self.served.http.post("/services", json={"name": name, "public": True})
        if r.status_code != 201:
            raise RuntimeError(f"POST /services: {r.status_code} {r.text}")
        body = r.json()
        return str(body["host"]), str(body["token"]["token"])

    def more_tokens(self, name: str, count: int) -> list[str]:
        """Extra association tokens for a service."""
        out = []
        for _ in range(count):
            r = self.served.http.post(f"/services/{name}/tokens", json={})
            r.raise_for_status()
            out.append(str(r.json()["token"]))
        return out

    def associate(self, token: str, public_key: str) -> int:
        """Bind a key with a token; returns the SSH port clients are told to use."""
        r = httpx.post(
            f"{self.served.url}/api/v1/tunnels/associate",
            json={"token": token, "public_key": public_key},
            timeout=30,
        )
        if r.status_code != 200:
            raise RuntimeError(f"associate: {r.status_code} {r.text}")
        return int(r.json()["ssh"]["port"])

    def tunnels(self, name: str) -> list[dict[str, Any]]:
        """Live tunnels of a service, as the API lists them."""
        r = self.served.http.get(f"/services/{name}")
        r.raise_for_status()
        return list(r.json()["tunnels"])

    def get(self, host: str, path: str = SMALL, timeout: float = 2.0) -> int:
        """Status of one request through the gateway (0 when it failed)."""
        return http_status(self.http_port, host, path, timeout)

    def procs(self) -> list[psutil.Process]:
        """``ecliptic serve`` and everything it started (tunneld or sshd per tunnel, nginx)."""
        return tree(self.served.proc.pid)

    def memory(self) -> dict[str, float | int]:
        """PSS in MB of the serve process, its SSH endpoint (tunneld, or sshd processes) and its
        nginx."""
        kinds: dict[str, list[int]] = {
            "serve": [],
            "tunneld": [],
            "sshd": [],
            "nginx": [],
            "other": [],
        }
        for p in self.procs():
            try:
                name = p.name()
            except psutil.NoSuchProcess:
                continue
            known = {"sshd": "sshd", "nginx": "nginx", "ecliptic-tunne": "tunneld"}
            kind = "serve" if p.pid == self.served.proc.pid else known.get(name[:14], "other")
            kinds[kind].append(pss_kb(p.pid))
        out: dict[str, float | int] = {}
        for kind, values in kinds.items():
            out[f"{kind}_mb"] = round(sum(values) / 1024, 1)
            out[f"{kind}_procs"] = len(values)
        out["total_mb"] = round(sum(sum(v) for v in kinds.values()) / 1024, 1)
        return out


@contextlib.contextmanager
def gateway(
    rundir: Path, work: Path, tag: str, ssh_host: str = "127.0.0.1", public_host: str | None = None
) -> Iterator[Gateway]:
    """``ecliptic serve`` with the gateway on, on free ports, state under ``rundir``.

    ``public_host``: the SSH host the API tells clients (default: the host they asked).
    """
    http_port, ssh_port, jump_port = free_port(), free_port(), free_port()
    state = rundir / f"gw-{tag}"
    env = {
        "ECLIPTIC_GATEWAY": "on",
        "ECLIPTIC_GATEWAY_HTTP_PORT": str(http_port),
        "ECLIPTIC_GATEWAY_SSH_PORT": str(ssh_port),
        "ECLIPTIC_GATEWAY_JUMP_PORT": str(jump_port),
        "ECLIPTIC_GATEWAY_PEER_PORT": str(free_port()),
        "ECLIPTIC_GATEWAY_SSH_HOST": ssh_host,
        "ECLIPTIC_GATEWAY_STATE_DIR": str(state),
        "ECLIPTIC_LOG_LEVEL": "INFO",  # tunnels up and down, and why, in serve-<tag>.log
        # The benchmark's one tenancy holds thousands of idle tunnels and many services.
        "ECLIPTIC_GATEWAY_MAX_SERVICES": "100000",
        "ECLIPTIC_GATEWAY_MAX_KEYS": "10000",
        "ECLIPTIC_GATEWAY_MAX_TUNNELS": "100000",
        "ECLIPTIC_GATEWAY_MAX_TUNNELS_PER_USER": "100000",
    }
    if public_host:
        env["ECLIPTIC_GATEWAY_SSH_PUBLIC"] = f"{public_host}:{ssh_port}"
    with serve(extra_env=env) as s:
        _STARTED[s.proc.pid] = s.proc
        try:
            wait_port(http_port, timeout=30)
            yield Gateway(s, http_port, ssh_port, state, work)
        finally:
            _STARTED.pop(s.proc.pid, None)
            with contextlib.suppress(OSError):  # serve's data dir goes with serve()
                shutil.copy(s.data_dir / "serve.log", work / f"serve-{tag}.log")


def http_status(port: int, host: str, path: str = SMALL, timeout: float = 2.0) -> int:
    """Status of one request on a fresh connection (0 when it failed)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (OSError, http.client.HTTPException):
        return 0
    finally:
        conn.close()


@dataclass
class EclipticTunnel:
    """The data-plane service of the gateway and its one stock client."""

    host: str
    client: subprocess.Popen[bytes]
    cipher: str


def start_ecliptic_tunnel(gw: Gateway, backend: int) -> EclipticTunnel:
    """Service ``bench``, a fresh key, and ``ssh -N -R`` to the gateway; waits for a 200."""
    host, token = gw.create_service("bench")
    key = gw.work / "bench_key"
    port = gw.associate(token, new_key(key))
    log = gw.work / "bench-client.log"
    client = connect_until_routed(gw, host, key, port, backend, log, verbose=True)[0]
    return EclipticTunnel(host, client, cipher_of(log))


def connect_until_routed(
    gw: Gateway,
    host: str,
    key: Path,
    port: int,
    backend: int,
    log: Path,
    *,
    verbose: bool = False,
    timeout: float = 30,
    settle: float = 1.0,
) -> tuple[subprocess.Popen[bytes], dict[str, float]]:
    """Start a stock client (again if it exits) until requests through the gateway stay 200.

    Polls with a new connection every 5 ms. Returns the client and, from the first start:
    ``up_s`` (forward allocated), ``first_request_s`` (first 200), ``stable_s`` (first 200
    after which nothing else answered for ``settle`` seconds), ``flaps`` (non-200 answers
    after the first 200) and ``attempts`` (ssh starts).
    """
    t0 = time.monotonic()
    client = ssh_tunnel(key, port, backend, log, verbose=verbose)
    attempts, flaps = 1, 0
    up_s = first = stable = math.nan
    while True:
        now = time.monotonic() - t0
        if math.isnan(up_s) and allocated_port(log) is not None:
            up_s = now
        ok = gw.get(host, timeout=1.0) == 200
        done = time.monotonic() - t0
        if ok and math.isnan(first):
            first = done
        if ok and math.isnan(stable):
            stable = done
        if not ok and not math.isnan(first):
            flaps += 1
            stable = math.nan
        if not math.isnan(stable) and done - stable >= settle:
            timings = {"up_s": up_s, "first_request_s": first, "stable_s": stable}
            return client, {**timings, "flaps": flaps, "attempts": attempts}
        if now > timeout:
            stop([client])
            raise TimeoutError(
                f"no steady 200 from {host} after {timeout} s; client log:\n"
                + log_text(log)[-1500:]
            )
        if client.poll() is not None:
            _STARTED.pop(client.pid, None)
            attempts += 1
            client = ssh_tunnel(key, port, backend, log, verbose=verbose)
        time.sleep(0.005)


# -- measures ----------------------------------------------------------------------------------


def download(p: DataPath) -> tuple[int, float]:
    """One 100 MiB download through a path: (status, Mbit/s)."""
    out = run(
        ["curl", "-s", "-o", "/dev/null", "-H", f"Host: {p.host}",
         "-w", "%{http_code} %{size_download} %{speed_download}", p.url(LARGE)],
        timeout=120,
    )  # fmt: skip
    code, size, speed = out.split()
    if code == "200" and int(float(size)) != LARGE_BYTES:
        raise RuntimeError(f"{p.name}: download ended after {size} bytes")
    return int(code), float(speed) * 8 / 1e6


def measure_throughput(paths: list[DataPath], count: int) -> dict[str, dict[str, Any]]:
    """Median 100 MiB download speed per path, in Mbit/s, and failed downloads (retried)."""
    speeds: dict[str, list[float]] = {p.name: [] for p in paths}
    failed = dict.fromkeys(speeds, 0)
    for i in range(count + 1):
        for p in paths if i % 2 else list(reversed(paths)):
            while True:
                code, mbps = download(p)
                if code == 200:
                    break
                failed[p.name] += 1
                if failed[p.name] > 5:
                    raise RuntimeError(f"{p.name}: downloads keep answering {code}")
                time.sleep(0.2)
            if i:  # the first round warms caches and connections
                speeds[p.name].append(mbps)
    return {
        name: {"mbps": round(statistics.median(v), 0), "failed": failed[name]}
        for name, v in speeds.items()
    }


@dataclass
class WrkRun:
    """One wrk run's figures."""

    rps: float
    p99_ms: float
    errors: int
    cpu_us_per_req: float


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        return math.nan
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def wrk(p: DataPath, seconds: int) -> WrkRun:
    """``wrk -t2 -c32`` on the 1 KiB file through a path, with the path's CPU per request."""
    procs = p.procs()
    cpu0 = cpu_seconds(procs)
    out = run(
        ["wrk", "-t2", "-c32", f"-d{seconds}s", "--latency", "-H", f"Host: {p.host}", p.url(SMALL)],
        timeout=seconds + 60,
    )
    cpu = cpu_seconds(procs) - cpu0
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if not m or not total:
        raise RuntimeError(f"wrk output not understood:\n{out}")
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    requests = int(total.group(1))
    return WrkRun(
        rps=float(m.group(1)),
        p99_ms=_ms(p99.group(1)) if p99 else math.nan,
        errors=errors,
        cpu_us_per_req=cpu / requests * 1e6 if requests else math.nan,
    )


def rounds_order(paths: list[DataPath], r: int) -> list[DataPath]:
    """Direct first, then the others, their order reversed every other round."""
    head = [p for p in paths if p.name == "direct"]
    rest = [p for p in paths if p.name != "direct"]
    return head + (rest if r % 2 == 0 else list(reversed(rest)))


def measure_rps(paths: list[DataPath], rounds: int, seconds: int) -> dict[str, dict[str, Any]]:
    """Median wrk figures per path over alternating rounds."""
    runs: dict[str, list[WrkRun]] = {p.name: [] for p in paths}
    for p in paths:  # warm-up: connections, upstream keepalive pools, channels
        wrk(p, 1)
    for r in range(rounds):
        for p in rounds_order(paths, r):
            runs[p.name].append(wrk(p, seconds))
    return {
        name: {
            "rps": round(statistics.median(x.rps for x in v), 0),
            "wrk_p99_ms": round(statistics.median(x.p99_ms for x in v), 2),
            "proxy_us_per_req": round(statistics.median(x.cpu_us_per_req for x in v), 1),
            "wrk_errors": sum(x.errors for x in v),
            "rps_runs": [round(x.rps) for x in v],
        }
        for name, v in runs.items()
    }


def measure_latency(
    paths: list[DataPath], slices: int, slice_s: float, rate: float
) -> dict[str, dict[str, Any]]:
    """Open-loop latency at ``rate``, pooled over short slices that alternate between paths.

    Background noise on a shared machine comes in bursts of a few seconds; interleaving short
    slices spreads it over every path instead of spoiling one path's whole run.
    """
    pooled: dict[str, list[float]] = {p.name: [] for p in paths}
    per_slice: dict[str, list[float]] = {p.name: [] for p in paths}
    errors = dict.fromkeys(pooled, 0)
    queued = dict.fromkeys(pooled, 0)
    for r in range(slices):
        for p in rounds_order(paths, r):
            res = run_open_loop(p.url(SMALL), rate=rate, duration=slice_s, host=p.host, warmup=0.5)
            pooled[p.name] += res.latencies_ms
            per_slice[p.name].append(round(percentile(res.latencies_ms, 99), 2))
            errors[p.name] += res.errors
            queued[p.name] += res.queued
    return {
        name: {
            "p50_ms": round(percentile(lat, 50), 3),
            "p99_ms": round(percentile(lat, 99), 3),
            "p999_ms": round(percentile(lat, 99.9), 3),
            "errors": errors[name],
            "queued": queued[name],
            "p99_slices": sorted(per_slice[name]),
        }
        for name, lat in pooled.items()
    }


def measure_first(gw: Gateway, backend: int, samples: int) -> dict[str, Any]:
    """Fresh service and key each time: ssh started -> first 200 through the gateway."""
    results = []
    for i in range(samples):
        host, token = gw.create_service(f"first{i}")
        key = gw.work / f"first{i}_key"
        port = gw.associate(token, new_key(key))
        log = gw.work / f"first{i}.log"
        client, t = connect_until_routed(gw, host, key, port, backend, log)
        stop([client])
        results.append(t)
    return {
        "first_request_s": round(statistics.median(t["first_request_s"] for t in results), 3),
        "first_tunnel_up_s": round(statistics.median(t["up_s"] for t in results), 3),
        "first_stable_s": round(statistics.median(t["stable_s"] for t in results), 3),
        "first_request_runs_s": [round(t["first_request_s"], 3) for t in results],
        "first_stable_runs_s": [round(t["stable_s"], 3) for t in results],
        "first_flaps": [int(t["flaps"]) for t in results],
        "first_ssh_attempts": [int(t["attempts"]) for t in results],
    }


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _connect_all(
    clients: dict[int, subprocess.Popen[bytes]],
    keys: list[Path],
    ports: list[int],
    backend: int,
    parallel: int,
) -> int:
    """Start one stock client per key, ``parallel`` connecting at once; returns the retries."""
    pending: set[int] = set()
    retries = dict.fromkeys(range(len(keys)), 0)
    todo = list(range(len(keys)))
    deadline = time.monotonic() + max(120.0, len(keys) * 0.2)

    def log(i: int) -> Path:
        return keys[i].with_suffix(".log")

    while todo or pending:
        while todo and len(pending) < parallel:
            i = todo.pop(0)
            clients[i] = ssh_tunnel(keys[i], ports[i], backend, log(i))
            pending.add(i)
        for i in list(pending):
            if allocated_port(log(i)) is not None:
                pending.discard(i)
            elif clients[i].poll() is not None:
                pending.discard(i)
                _STARTED.pop(clients[i].pid, None)
                retries[i] += 1
                if retries[i] > 5:
                    raise RuntimeError(f"idle client {i} keeps failing:\n{log_text(log(i))}")
                todo.append(i)
        if time.monotonic() > deadline:
            raise TimeoutError(f"idle: {len(pending) + len(todo)} clients not up")
        time.sleep(0.01)
    return sum(retries.values())


def measure_idle(
    gw: Gateway, backend: int, cfg: Settings, say: Callable[[str], None]
) -> dict[str, Any]:
    """N idle stock clients; PSS of the gateway with them, minus without, per tunnel."""
    n, per = cfg.idle_tunnels, cfg.tunnels_per_service
    d = gw.work / "idle"
    d.mkdir()
    services = [f"idle{i}" for i in range(math.ceil(n / per))]
    tokens: list[tuple[str, str]] = []  # (service, token)
    hosts: dict[str, str] = {}
    t0 = time.monotonic()
    for s in services:
        host, token = gw.create_service(s)
        hosts[s] = host
        want = min(per, n - len(tokens))
        tokens += [(s, t) for t in [token, *gw.more_tokens(s, want - 1)]]
    keys = [d / f"k{i}" for i in range(n)]

    def bind(i: int) -> int:
        return gw.associate(tokens[i][1], new_key(keys[i]))

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        ports = list(pool.map(bind, range(n)))
    say(f"idle: {len(services)} services, {n} keys bound in {time.monotonic() - t0:.1f} s")
    time.sleep(2)  # the gateway reads bound keys every second
    base = gw.memory()

    clients: dict[int, subprocess.Popen[bytes]] = {}
    try:
        t0 = time.monotonic()
        retries = _connect_all(clients, keys, ports, backend, cfg.connect_parallel)
        fig_retries = retries
        connect_s = time.monotonic() - t0
        say(f"idle: {n} forwards allocated in {connect_s:.1f} s ({retries} retries)")

        def listed() -> int:
            return sum(len(gw.tunnels(s)) for s in services)

        try:
            wait_for("idle tunnels listed by the API", lambda: listed() >= n, 120, 0.5)
        except TimeoutError:
            alive = sum(c.poll() is None for c in clients.values())
            raise TimeoutError(
                f"the API lists {listed()} of {n} idle tunnels after 120 s "
                f"({alive} clients still running)"
            ) from None
        ok = [gw.get(hosts[s]) == 200 for s in services[:5]]
        time.sleep(3)  # let allocations and buffers settle
        with_n = gw.memory()
        clients_pss = sum(pss_kb(p.pid) for p in clients.values()) / 1024
    finally:
        stop(list(clients.values()), wait=30)
    per_tunnel = (float(with_n["total_mb"]) - float(base["total_mb"])) / n
    return {
        "idle_tunnels": n,
        "idle_rss_mb": with_n["total_mb"],
        "idle_pss_mb_per_tunnel": round(per_tunnel, 3),
        "idle_pss_mb_at_2000_est": round(float(base["total_mb"]) + per_tunnel * 2000, 0),
        "idle_base_pss_mb": base["total_mb"],
        "idle_breakdown_mb": {
            k: with_n[k] for k in ("serve_mb", "tunneld_mb", "sshd_mb", "nginx_mb", "other_mb")
        },
        "idle_sshd_procs": with_n["sshd_procs"],
        "idle_connect_s": round(connect_s, 1),
        "idle_connect_retries": fig_retries,
        "idle_routed_ok": all(ok),
        "idle_clients_pss_mb": round(clients_pss, 0),
    }


# -- reconnect ---------------------------------------------------------------------------------


class Relay:
    """A TCP relay from an address on the veth to a loopback port (the API for the namespace)."""

    def __init__(self, listen: tuple[str, int], target: tuple[str, int]) -> None:
        self.target = target
        self.sock = socket.create_server(listen)
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                a, _ = self.sock.accept()
            except OSError:
                return
            try:
                b = socket.create_connection(self.target)
            except OSError:
                a.close()
                continue
            self.conns += [a, b]
            for x, y in ((a, b), (b, a)):
                threading.Thread(target=self._pump, args=(x, y), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        """Stop accepting and close every relayed connection."""
        self.sock.close()
        for c in self.conns:
            with contextlib.suppress(OSError):
                c.close()


@contextlib.contextmanager
def netns(tag: str) -> Iterator[tuple[str, str]]:
    """A namespace ``ecl-bench-<tag>`` linked to the host by a veth; yields (netns, host veth)."""
    name, host_if, ns_if = f"ecl-bench-{tag}", f"eclb{tag[:6]}h", f"eclb{tag[:6]}n"
    h, n, bits = NETNS_SUBNET
    run(["ip", "netns", "add", name])
    try:
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name])
        run(["ip", "addr", "add", f"{h}/{bits}", "dev", host_if])
        run(["ip", "link", "set", host_if, "up"])
        for argv in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", f"{n}/{bits}", "dev", ns_if],
            ["ip", "link", "set", ns_if, "up"],
        ):
            run(["ip", "netns", "exec", name, *argv])
        yield name, host_if
    finally:
        with contextlib.suppress(RuntimeError):
            run(["ip", "link", "del", host_if])
        run(["ip", "netns", "del", name])


def first_200_after(gw: Gateway, host: str, t_from: float, timeout: float = 30) -> float:
    """Seconds from ``t_from`` until a request started after it answers 200 (new try / 50 ms)."""
    done = threading.Event()
    first: list[float] = []
    lock = threading.Lock()

    def probe() -> None:
        if gw.get(host, timeout=10) == 200:
            with lock:
                first.append(time.monotonic())
            done.set()

    with concurrent.futures.ThreadPoolExecutor(256) as pool:
        while not done.wait(0.05):
            if time.monotonic() - t_from > timeout:
                raise TimeoutError(f"no 200 from {host} {timeout} s after the link came back")
            pool.submit(probe)
    return min(first) - t_from


def measure_reconnect(
    rundir: Path, work: Path, tag: str, cfg: Settings, say: Callable[[str], None]
) -> dict[str, Any]:
    """``ecliptic tunnel connect`` in a namespace; cut the veth, restore it, time the first 200."""
    h, _, _ = NETNS_SUBNET
    with contextlib.ExitStack() as stack:
        ns, host_if = stack.enter_context(netns(tag))
        www = work / "www"
        nsb = start_nginx(
            work / "ns-backend", NS_BACKEND_PORT, backend_servers(NS_BACKEND_PORT, www), netns=ns
        )
        stack.callback(stop, [nsb.proc], signal.SIGQUIT)
        gw = stack.enter_context(gateway(rundir, work, "rc", ssh_host=h, public_host=h))
        api_port = int(gw.served.url.rsplit(":", 1)[1])
        relay = Relay((h, api_port), ("127.0.0.1", api_port))
        stack.callback(relay.close)
        host, token = gw.create_service("reconnect")
        state = work / "rc-state"
        log = work / "rc-client.log"
        client = spawn(
            [
                "ip", "netns", "exec", ns, sys.executable, "-m", "ecliptic.cli.main",
                "tunnel", "connect", "--token", token,
                "--to", f"http://127.0.0.1:{NS_BACKEND_PORT}",
                "--api", f"http://{h}:{api_port}", "--state-dir", str(state),
            ],
            log=log,
        )  # fmt: skip
        stack.callback(stop, [client])
        t0 = time.monotonic()
        wait_for(
            "first 200 through the namespaced client",
            lambda: gw.get(host, timeout=1) == 200 or client.poll() is not None,
            60,
            0.01,
        )
        if client.poll() is not None:
            raise RuntimeError("tunnel connect exited:\n" + log_text(log)[-2000:])
        client_first = time.monotonic() - t0
        say(f"reconnect: client up, first 200 after {client_first:.2f} s")

        def cycle(max_outage: float) -> dict[str, Any]:
            time.sleep(11)  # past the client's 10 s "stable" mark: backoff starts from scratch
            run(["ip", "link", "set", host_if, "down"])
            t_cut = time.monotonic()
            dropped = False
            while time.monotonic() - t_cut < max_outage:
                if not gw.tunnels("reconnect"):
                    dropped = True
                    break
                time.sleep(0.1)
            outage = time.monotonic() - t_cut
            run(["ip", "link", "set", host_if, "up"])
            took = first_200_after(gw, host, time.monotonic())
            return {"reconnect_s": round(took, 3), "outage_s": round(outage, 2), "dropped": dropped}

        cycles = []
        for c in range(cfg.reconnect_cycles):
            cycles.append(cycle(cfg.outage_s))
            say(f"reconnect: cut {c}: {cycles[-1]}")
        # Long enough for both ends to give the old connection up: a new ssh must connect.
        long = cycle(60.0)
        say(f"reconnect: cut until the gateway dropped the tunnel: {long}")
        client_lines = [
            line
            for line in log_text(log).splitlines()
            if "reconnect" in line or "connected" in line
        ]
    return {
        "reconnect_s": round(statistics.median(x["reconnect_s"] for x in cycles), 3),
        "reconnect_runs": cycles,
        "reconnect_after_drop_s": long["reconnect_s"],
        "reconnect_after_drop_outage_s": long["outage_s"],
        "client_first_request_s": round(client_first, 3),
        "reconnect_client_log": client_lines[-8:],
    }


# -- run and report ----------------------------------------------------------------------------


@contextlib.contextmanager
def scratch(tag: str, keep: bool, say: Callable[[str], None]) -> Iterator[tuple[Path, Path]]:
    """A work dir under /tmp and a root-owned run dir for sshd and the gateway's state."""
    work = Path(tempfile.mkdtemp(prefix="ecl-bench-gw-"))
    rundir = Path(f"/run/ecl-bench-{tag}")
    try:
        os.chmod(work, 0o755)  # nginx workers (nobody) read the files below
        rundir.mkdir(mode=0o755)
        os.chmod(rundir, 0o755)
        yield work, rundir
    finally:
        if keep:
            say(f"kept {work} and {rundir}")
        else:
            shutil.rmtree(work, ignore_errors=True)
            shutil.rmtree(rundir, ignore_errors=True)


def run_all(
    parts: set[str],
    cfg: Settings,
    say: Callable[[str], None],
    *,
    keep: bool = False,
    anchor_gcm: bool = False,
) -> dict[str, Any]:
    """Set up the paths, run the selected measures, tear everything down."""
    if os.geteuid() != 0:
        raise SystemExit("bench.gateway needs root (sshd, nginx workers, network namespaces)")
    tools = ("wrk", "curl", "ssh", "ssh-keygen")
    if any(shutil.which(t) is None for t in tools):
        # The bench brings what it needs, as `make bench` does (Debian packages, by name).
        setup = Path(__file__).resolve().parent.parent / "scripts" / "setup-system.sh"
        say(f"installing what the benchmark needs: {setup} bench")
        subprocess.run([str(setup), "bench"], check=False)
    for tool in tools:
        if shutil.which(tool) is None:
            raise SystemExit(
                f"bench.gateway needs {tool}: scripts/setup-system.sh bench installs it"
            )
    _raise_nofile()
    tag = secrets.token_hex(4)
    load0 = round(os.getloadavg()[0], 2)
    fig: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        work, rundir = stack.enter_context(scratch(tag, keep, say))
        make_www(work / "www")
        data_plane = parts & {"throughput", "rps", "latency"}
        needs_gateway = parts & {"throughput", "rps", "latency", "first", "idle"}
        bport = free_port()
        backend = start_nginx(work / "backend", bport, backend_servers(bport, work / "www"))
        stack.callback(stop, [backend.proc], signal.SIGQUIT)
        paths: list[DataPath] = []
        host = "bench0.localhost"
        if data_plane:
            dport = free_port()
            direct = start_nginx(
                work / "direct", dport, front_servers(dport, bport, work / "direct")
            )
            stack.callback(stop, [direct.proc], signal.SIGQUIT)
            paths.append(DataPath("direct", dport, host, direct.procs))
            for name, cipher in [("anchor", None)] + [("anchor_gcm", GCM)] * anchor_gcm:
                anchor = start_anchor(rundir, work, bport, name, cipher)
                stack.callback(anchor.close)
                paths.append(DataPath(name, anchor.front.port, host, anchor.procs, anchor.cipher))
                say(f"{name} up: sshd + ssh -tt, port {anchor.tunnel_port}, {anchor.cipher}")
        if needs_gateway:
            gw = stack.enter_context(gateway(rundir, work, "main"))
            say(f"ecliptic serve up: gateway http {gw.http_port}, ssh {gw.ssh_port}")
            if data_plane:
                tun = start_ecliptic_tunnel(gw, bport)
                for p in paths:
                    p.host = tun.host  # same request bytes on every path
                paths.append(DataPath("ecliptic", gw.http_port, tun.host, gw.procs, tun.cipher))
                fig["ciphers"] = {p.name: p.cipher for p in paths}
                say(f"ecliptic tunnel up ({tun.cipher}) for {tun.host}")
                if "throughput" in parts:
                    t = measure_throughput(paths, cfg.downloads)
                    fig.update(_keyed("throughput_mbps", {n: v["mbps"] for n, v in t.items()}))
                    fig.update(_keyed("download_errors", {n: v["failed"] for n, v in t.items()}))
                    say(f"throughput: {t}")
                if "rps" in parts:
                    r = measure_rps(paths, cfg.rps_rounds, cfg.rps_seconds)
                    for key in ("rps", "proxy_us_per_req", "wrk_p99_ms", "wrk_errors", "rps_runs"):
                        fig.update(_keyed(key, {n: v[key] for n, v in r.items()}))
                    say(f"rps: { {n: v['rps'] for n, v in r.items()} }")
                if "latency" in parts:
                    lat = measure_latency(paths, cfg.latency_slices, cfg.latency_slice_s, cfg.rate)
                    for key, name in LATENCY_KEYS.items():
                        fig.update(_keyed(name, {n: v[key] for n, v in lat.items()}))
                    say(f"latency: { {n: v['p99_ms'] for n, v in lat.items()} }")
                stop([tun.client])
            if "first" in parts:
                fig.update(measure_first(gw, bport, cfg.first_samples))
                say(f"first request: {fig['first_request_runs_s']}")
            if "idle" in parts:
                fig.update(measure_idle(gw, bport, cfg, say))
    if "reconnect" in parts:
        with scratch(f"{tag}-rc", keep, say) as (work, rundir):
            make_www(work / "www")
            fig.update(measure_reconnect(rundir, work, tag, cfg, say))
    fig["machine"] = f"{platform.node()} {psutil.cpu_count()} cpu {platform.machine()}"
    fig["loadavg_1m_start_end"] = [load0, round(os.getloadavg()[0], 2)]
    return fig


def _keyed(key: str, per_path: dict[str, Any]) -> dict[str, Any]:
    """{"direct": x, "anchor": y, "ecliptic": z} -> direct_key, anchor_key, key."""
    return {(key if n == "ecliptic" else f"{n}_{key}"): v for n, v in per_path.items()}


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}" if abs(v) < 1 else f"{v:.2f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def table(fig: dict[str, Any]) -> str:
    """Human-readable results with ratios to the anchor and whether each target is met."""
    gcm = any(k.startswith("anchor_gcm_") for k in fig)
    cols = ["direct", "anchor", *(["anchor_gcm"] * gcm), "ecliptic"]
    rows: list[list[str]] = [["measure", *cols, "ecl/anchor", "target", "met"]]

    def ratio_row(label: str, key: str, higher_better: bool, target: str) -> None:
        if key not in fig:
            return
        ours, anchor = fig.get(key), fig.get(f"anchor_{key}")
        ratio = ours / anchor if ours is not None and anchor else math.nan
        met = ""
        if target:
            met = "yes" if (ratio >= 1.0 if higher_better else ratio <= 1.0) else "NO"
        values = [_fmt(fig.get(key if c == "ecliptic" else f"{c}_{key}")) for c in cols]
        rows.append([label, *values, f"{ratio:.2f}x", target, met])

    def abs_row(
        label: str, key: str, limit: float | None, target: str, applies: bool = True
    ) -> None:
        if key not in fig:
            return
        v = fig[key]
        met = "" if limit is None else ("yes" if v <= limit else "NO") if applies else "n/a"
        rows.append([label, *[""] * (len(cols) - 1), _fmt(v), "", target, met])

    ratio_row("100 MiB download, Mbit/s", "throughput_mbps", True, ">= 1.0x anchor")
    ratio_row("1 KiB req/s, wrk -c32", "rps", True, ">= 1.0x anchor")
    ratio_row("  proxy CPU us/req", "proxy_us_per_req", False, "")
    ratio_row("  wrk p99 ms (closed loop)", "wrk_p99_ms", False, "")
    ratio_row("p99 ms at 2,000 req/s", "p99_at_2000_ms", False, "<= anchor")
    ratio_row("  p50 ms at 2,000 req/s", "p50_at_2000_ms", False, "")
    ratio_row("  p99.9 ms at 2,000 req/s", "p999_at_2000_ms", False, "")
    abs_row("first request after ssh start, s", "first_request_s", 1.0, "<= 1 s")
    abs_row("  of which tunnel up, s", "first_tunnel_up_s", None, "")
    abs_row("  200 from then on (1 s without other), s", "first_stable_s", None, "")
    abs_row("reconnect after network returns, s", "reconnect_s", 2.0, "<= 2 s")
    abs_row("  same, after the gateway dropped it, s", "reconnect_after_drop_s", 2.0, "<= 2 s")
    n = fig.get("idle_tunnels")
    abs_row(f"gateway PSS, {n} idle tunnels, MB", "idle_rss_mb", 500, "<= 500 MB @ 2000",
            applies=n == 2000)  # fmt: skip
    abs_row("  PSS per idle tunnel, MB", "idle_pss_mb_per_tunnel", None, "")
    abs_row("  PSS for 2000, estimated, MB", "idle_pss_mb_at_2000_est", 500, "<= 500 MB")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def line(r: list[str]) -> str:
        cells = [r[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        return "  ".join(cells)

    lines = [line(r) for r in rows]
    notes = []
    if "ciphers" in fig:
        notes.append("ciphers: " + ", ".join(f"{k} {v}" for k, v in fig["ciphers"].items()))
    if "idle_breakdown_mb" in fig:
        notes.append(
            f"idle PSS by process kind (MB): {fig['idle_breakdown_mb']}; "
            f"without tunnels {fig['idle_base_pss_mb']} MB; clients' own PSS "
            f"{fig['idle_clients_pss_mb']} MB (not counted)"
        )
    if "reconnect_runs" in fig:
        notes.append(
            f"reconnect: cuts of <= {fig['reconnect_runs'][0]['outage_s']:.0f} s: "
            f"{[x['reconnect_s'] for x in fig['reconnect_runs']]} s; a cut of "
            f"{fig['reconnect_after_drop_outage_s']:.0f} s (until the gateway dropped the tunnel): "
            f"{fig['reconnect_after_drop_s']} s"
        )
    return "\n".join([*lines, "", *notes])


def main() -> None:
    """Command line entry."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line")
    p.add_argument("--quick", action="store_true", help="short runs, 200 idle tunnels")
    p.add_argument("--only", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)}")
    p.add_argument("--idle-tunnels", type=int, help="idle tunnels for the memory measure")
    p.add_argument("--keep", action="store_true", help="keep work dirs and logs (debugging)")
    p.add_argument(
        "--anchor-gcm",
        action="store_true",
        help="also run the anchor with the client asking for AES-GCM, the gateway's only "
        "cipher (anchor_gcm_* figures)",
    )
    a = p.parse_args()
    parts = {x.strip() for x in a.only.split(",") if x.strip()}
    if parts - set(PARTS):
        p.error(f"--only: unknown {', '.join(sorted(parts - set(PARTS)))}")
    cfg = QUICK if a.quick else Settings()
    if a.idle_tunnels:
        cfg = Settings(**{**cfg.__dict__, "idle_tunnels": a.idle_tunnels})

    def say(msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    fig = run_all(parts, cfg, say, keep=a.keep, anchor_gcm=a.anchor_gcm)
    if a.json:
        print(table(fig), file=sys.stderr)  # stdout stays one JSON line
        print(json.dumps(fig))
    else:
        print(table(fig))


if __name__ == "__main__":
    main()
