"""``LocalBackend``: a research cloud on one Linux machine, servers as network namespaces.

Model
-----
* **Server** = network namespace ``ecl-<sid>`` (``lo`` up), plus cgroup v1 groups
  ``{cpu,memory}/ecliptic/ecl-<sid>`` for the flavor's limits, plus a state directory
  ``<state_dir>/servers/<id>/`` (``console.log``, ``server.json``, ``services/<name>.pid``).
  Processes are started with ``nsenter --net=/run/netns/ecl-<sid> -- unshare --uts --
  /bin/sh -c '<join cgroups>; hostname "$0"; exec "$@"'`` so each gets the server's network,
  its own hostname, the limits, and still sees ``/sys/fs/cgroup`` (``ip netns exec`` hides it).
* **Network** = Linux bridge ``eclb-<nid>`` holding each subnet's gateway address; nothing
  is routed or NATed: namespaces only ever get connected routes, never a default route.
* **Normal port** = veth pair, host end ``eclv-<pid>`` on the bridge, peer created directly
  inside the namespace as ``eth<index>``.
* **Direct port** (SR-IOV stand-in) = macvlan (mode bridge) child of the network's emulated
  physical function, a veth pair ``eclp-<nid>`` (PF) / ``eclq-<nid>`` (peer, a bridge port).
  Frames from a macvlan leave through the PF, cross the veth into the bridge and reach normal
  ports and the host's gateway address; frames for a macvlan's MAC come back the same way.
  So normal-port servers, direct-port servers and the gateway address share one L2 segment
  and ping each other (checked by the tests). Macvlan children talk to each other inside the
  PF (bridge mode) without touching the bridge.

  Deviation from a "create ``eclm-<pid>`` in the root namespace, move it, rename it" recipe:
  the macvlan is created *directly in the namespace* (RTM_NEWLINK with IFLA_NET_NS_FD and the
  final name). Moving a device between namespaces costs 14-25 ms here (synchronize_net),
  direct creation 0.5 ms, and no half-moved device can be left behind by a crash. A stray
  ``eclm-<pid>`` in the root namespace (older code, manual tests) is still recognised and
  deleted; the port's owner record is filed under that name.

Ownership
---------
Several instances share the machine. Before any namespace or link is created, an owner
record ``<owners_dir>/<name>`` names the instance; the backend never modifies a resource
without a record of its own instance, and removes the record after the resource.

Crash safety
------------
Every step inspects and converges (existing-but-wrong links are deleted and rebuilt, missing
ones made, addresses synced), so re-running ``ensure_*``/``delete_*`` after a SIGKILL at any
point finishes the job. Deletion of a server's interfaces is one RTM_DELLINK by interface
group (one RCU grace period, ~16 ms, however many ports).

Concurrency
-----------
Thread-safe: per-server and per-network locks; a fresh netlink socket per call (cheap: the
namespaced ones are made by a helper thread with ``setns``, no fork).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import ipaddress
import json
import logging
import os
import re
import select
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from ecliptic import faults
from ecliptic.backends.base import (
    BackendError,
    FirewallSpec,
    GcReport,
    HostRecord,
    ImageInfo,
    InterfaceStatus,
    NetworkSpec,
    NetworkStatus,
    NotFoundInBackend,
    ObservedResource,
    ObservedState,
    PortSpec,
    RunResult,
    ServerSpec,
    ServerStatus,
    ServiceSpec,
    ServiceStatus,
)
from ecliptic.backends.local import (
    cgroups,
    console,
    firewall,
    images,
    inventory,
    links,
    netns,
    processes,
    sandbox,
)
from ecliptic.backends.local.names import (
    BRIDGE_PREFIX,
    DEFAULT_OWNERS_DIR,
    MACVLAN_PREFIX,
    PF_PREFIX,
    VETH_PREFIX,
    OwnerRecord,
    OwnerRegistry,
    OwnershipError,
    bridge_name,
    inner_ifname,
    netns_name,
    pf_name,
    pf_peer_name,
    port_resource_name,
    short_id,
)
from ecliptic.files import write_atomic
from ecliptic.nft import NftError

_HOSTNAME_RE = re.compile(
    r"^(?=.{1,64}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_SERVICE_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_PORT_PREFIXES = (VETH_PREFIX, MACVLAN_PREFIX)

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

SERVICE_STOP_GRACE_S = 3.0
GC_CLOCK_MARGIN_S = 2.0
"""Owner records this much older than the known-ids read still count as written after it."""
SERVICE_START_WAIT_S = 2.0
STOPPED_MARKER = "stopped.json"
"""In a server's state dir while it is stopped for a move: the host it was stopped on."""


class _KeyedLocks:
    """One re-entrant lock per resource name."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[str, threading.RLock] = {}

    def __call__(self, key: str) -> threading.RLock:
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.RLock()
            return lock


def _backend_errors(fn: Callable[P, R]) -> Callable[P, R]:
    """Turn OS and netlink errors escaping a public method into retryable BackendErrors."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        except BackendError:
            raise
        except (OSError, NetlinkError) as e:
            raise BackendError(f"local backend: {fn.__name__} failed: {e}") from e

    return wrapper


def _bad(message: str) -> BackendError:
    return BackendError(message, retryable=False)


def _bridge_mac(network_id: str) -> str:
    """A fixed, locally administered MAC for a bridge (so it never changes with its ports)."""
    h = short_id(network_id)
    return "02:ec:" + ":".join(h[i : i + 2] for i in range(0, 8, 2))


class LocalBackend:
    """The local cloud: servers as network namespaces, networks as bridges, on this machine."""

    name = "local"

    def __init__(
        self,
        instance_id: str,
        state_dir: Path,
        *,
        owners_dir: Path = DEFAULT_OWNERS_DIR,
        inventory_path: Path | None = None,
        cgroup_root: Path = cgroups.DEFAULT_ROOT,
        delete_grace_s: float = 0.5,
        stale_record_grace_s: float = 30.0,
        image_dir: Path | None = None,
        image_recipes: tuple[Path, ...] = (),
        sandbox_binary: str | None = None,
        host_ports: tuple[int, ...] = (),
    ) -> None:
        self.instance_id = instance_id
        self.state_dir = Path(state_dir)
        self.image_store = images.ImageStore(
            Path(image_dir) if image_dir else self.state_dir / "images",
            recipe_dirs=image_recipes,
            binary=self._sandbox_binary,
        )
        self._sandbox_path = sandbox_binary
        self._inits: dict[str, tuple[sandbox.Init, int]] = {}
        self._inits_lock = threading.Lock()
        self._agent_binds: list[tuple[Path, str]] | None = None
        self.host_ports = host_ports
        """TCP ports of the host servers may reach (the API, the gateway's SSH endpoint)."""
        self._firewall_lock = threading.Lock()
        self.owners = OwnerRegistry(Path(owners_dir), instance_id)
        self.cgroups = cgroups.CgroupManager(Path(cgroup_root))
        self.inventory_path = inventory_path
        self.delete_grace_s = delete_grace_s
        self.stale_record_grace_s = stale_record_grace_s
        self._locks = _KeyedLocks()

    # ------------------------------------------------------------------ helpers

    @contextlib.contextmanager
    def _root(self) -> Iterator[Any]:
        ipr = IPRoute()
        try:
            yield ipr
        finally:
            ipr.close()

    @contextlib.contextmanager
    def _ns(self, name: str) -> Iterator[Any]:
        ipr = netns.iproute(name)
        try:
            yield ipr
        finally:
            ipr.close()

    def _sandbox_binary(self) -> str:
        found = sandbox.find_binary(self._sandbox_path)
        if found is None:
            raise _bad(
                f"the sandbox helper {sandbox.BINARY} is missing (not beside"
                f" {os.path.dirname(sys.executable)} nor on PATH): run `make setup`"
            )
        return found

    def _agent(self) -> list[tuple[Path, str]]:
        if self._agent_binds is None:
            self._agent_binds = sandbox.agent_binds(self.state_dir / "agent")
        return self._agent_binds

    def _server_dir(self, server_id: str) -> Path:
        short_id(server_id)  # validates: hex and dashes only
        return self.state_dir / "servers" / server_id

    def _console(self, server_id: str) -> Path:
        return self._server_dir(server_id) / "console.log"

    def _hostname(self, server_id: str) -> str:
        try:
            meta = json.loads((self._server_dir(server_id) / "server.json").read_text())
            name = meta.get("name")
            if isinstance(name, str) and _HOSTNAME_RE.match(name):
                return name
        except (OSError, ValueError):
            pass
        return netns_name(server_id)

    def _owned_ns(self, server_id: str) -> tuple[str, int]:
        """Namespace name and inode of a server of ours; NotFoundInBackend otherwise."""
        ns = netns_name(server_id)
        ino = netns.inode(ns)
        if ino is None or not self.owners.is_mine(ns):
            raise NotFoundInBackend(f"server {server_id} does not exist (no namespace {ns})")
        return ns, ino

    def _check_not_foreign(self, names: list[str], present: dict[str, bool]) -> None:
        """Refuse when one of ``names`` is another instance's, or exists with no record."""
        for name in names:
            rec = self.owners.read(name)
            if rec is not None and rec.instance != self.instance_id:
                raise OwnershipError(
                    f"{name} belongs to another Ecliptic instance ({rec.instance!r})"
                )
            if rec is None and present.get(name):
                raise OwnershipError(f"{name} exists but has no owner record; not touching it")

    # ------------------------------------------------------------------ networks

    @_backend_errors
    def ensure_network(self, spec: NetworkSpec) -> NetworkStatus:
        """Create or repair the bridge (and PF, if any) of a network."""
        br = bridge_name(spec.id)
        if not 68 <= spec.mtu <= 65535:
            raise _bad(f"network {spec.id}: mtu {spec.mtu} out of range")
        wanted: list[links.IpIface] = []
        for sub in spec.subnets:
            try:
                net = ipaddress.ip_network(sub.cidr, strict=True)
                gw = ipaddress.ip_address(sub.gateway_ip)
            except ValueError as e:
                raise _bad(f"network {spec.id}: subnet {sub.id}: {e}") from e
            if gw not in net:
                raise _bad(f"network {spec.id}: gateway {gw} not in {net}")
            wanted.append(ipaddress.ip_interface(f"{gw}/{net.prefixlen}"))
        with self._locks(br), self._root() as root:
            existing = links.get(root, br)
            self.owners.claim(
                br,
                OwnerRecord(self.instance_id, "network", spec.id),
                exists_unowned=existing is not None,
            )
            msg, _ = links.ensure_bridge(root, br, mac=_bridge_mac(spec.id), mtu=spec.mtu)
            faults.point("local.network.after_bridge")
            links.sync_addresses(root, msg["index"], wanted)
            if self.owners.is_mine(pf_name(spec.id)):
                self._ensure_pf(root, spec.id, msg["index"], spec.mtu)
        self._sync_firewall()
        return NetworkStatus(backend_ref=br, ready=True)

    @_backend_errors
    def apply_firewall(self, spec: FirewallSpec) -> None:
        """Every port's security groups (and port security), applied in one transaction."""
        self._sync_firewall(spec)

    def _sync_firewall(self, spec: FirewallSpec | None = None, *, force: bool = False) -> None:
        """The instance's nftables tables, for the bridges it owns now (see ``firewall``).

        The last applied spec is kept in the state folder (``firewall.json``, under a file
        lock): a process that has not applied one itself (a restart, another worker process
        of the instance) rebuilds the tables with it instead of emptying them, and an apply
        that would change nothing makes no ``nft`` call.
        """
        state = self.state_dir / "firewall.json"
        state.parent.mkdir(parents=True, exist_ok=True)
        with self._firewall_lock, open(state.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            applied: dict[str, Any] = {}
            try:
                applied = json.loads(state.read_text())
                last = firewall.loads(applied["spec"])
            except (OSError, ValueError, KeyError, TypeError):
                applied, last = {}, FirewallSpec()
            bridges = sorted(
                name
                for name, rec in self.owners.mine((BRIDGE_PREFIX,)).items()
                if rec.kind == "network"
            )
            security = spec if spec is not None else last
            wanted = {
                "bridges": bridges,
                "host_ports": sorted(self.host_ports),
                "spec": firewall.dumps(security),
            }
            if not force and wanted == applied:
                return
            try:
                firewall.apply(self.instance_id, bridges, self.host_ports, security)
            except NftError as e:
                with contextlib.suppress(OSError):
                    write_atomic(state, json.dumps({**wanted, "bridges": None}))
                raise BackendError(f"local backend: the network boundary failed: {e}") from e
            write_atomic(state, json.dumps(wanted))

    def _ensure_pf(self, root: Any, network_id: str, bridge_index: int, mtu: int) -> int:
        pf, peer = pf_name(network_id), pf_peer_name(network_id)
        with self._locks(bridge_name(network_id)):
            for name in (pf, peer):
                self.owners.claim(
                    name,
                    OwnerRecord(self.instance_id, "network", network_id),
                    exists_unowned=links.get(root, name) is not None,
                )
            index, _ = links.ensure_pf(root, pf, peer, bridge_index=bridge_index, mtu=mtu)
            return index

    @_backend_errors
    def delete_network(self, network_id: str) -> None:
        """Delete the PF pair and the bridge of a network; no error if gone."""
        br, pf, peer = bridge_name(network_id), pf_name(network_id), pf_peer_name(network_id)
        with self._locks(br), self._root() as root:
            present = {n: links.get(root, n) is not None for n in (br, pf, peer)}
            self._check_not_foreign([br, pf, peer], present)
            for name in (pf, peer, br):  # deleting the PF also removes its macvlan children
                if present[name] and self.owners.is_mine(name):
                    links.delete(root, name)
            for name in (pf, peer, br):
                self.owners.release(name)
        self._sync_firewall()

    # ------------------------------------------------------------------ servers

    def _validate_server(self, spec: ServerSpec) -> None:
        if not _HOSTNAME_RE.match(spec.name):
            raise _bad(f"server {spec.id}: name {spec.name!r} is not a valid hostname")
        if spec.vcpus < 1 or spec.memory_mb < 1:
            raise _bad(f"server {spec.id}: vcpus and memory_mb must be positive")
        seen: set[int] = set()
        for p in spec.ports:
            short_id(p.id)
            short_id(p.network_id)
            if not 0 <= p.index <= 99 or p.index in seen:
                raise _bad(f"server {spec.id}: port {p.id}: index {p.index} invalid or repeated")
            seen.add(p.index)
            if p.vnic_type not in ("normal", "direct"):
                raise _bad(f"port {p.id}: vnic_type {p.vnic_type!r} unknown")
            if not _MAC_RE.match(p.mac.lower()) or int(p.mac[:2], 16) & 1:
                raise _bad(f"port {p.id}: mac {p.mac!r} is not a unicast MAC address")
            try:
                links.parse_ifaces(p.addresses)
            except ValueError as e:
                raise _bad(f"port {p.id}: {e}") from e

    @_backend_errors
    def ensure_server(self, spec: ServerSpec) -> ServerStatus:
        """Create or repair a server's namespace, interfaces and limits."""
        self._validate_server(spec)
        ns = netns_name(spec.id)
        with self._locks(ns):
            self.owners.claim(
                ns,
                OwnerRecord(self.instance_id, "server", spec.id),
                exists_unowned=netns.path(ns).exists(),
            )
            sdir = self._server_dir(spec.id)
            (sdir / "services").mkdir(parents=True, exist_ok=True)
            log = sdir / "console.log"
            meta = json.dumps(
                {"id": spec.id, "name": spec.name, "host": spec.host, "kind": spec.kind},
                sort_keys=True,
            )
            meta_path = sdir / "server.json"
            with contextlib.suppress(FileNotFoundError):
                old_meta = meta_path.read_text()
                if old_meta != meta:
                    self._note_host_change(log, old_meta, spec.host)
            if not meta_path.exists() or meta_path.read_text() != meta:
                write_atomic(meta_path, meta)
            created = netns.create(ns)
            if created:
                console.append(log, f"network namespace {ns} created on host {spec.host}")
            faults.point("local.server.after_netns")
            with self._root() as root, self._ns(ns) as nsr:
                links.loopback_up(nsr)
                nsfd = netns.open_fd(ns)
                try:
                    for port in sorted(spec.ports, key=lambda p: p.index):
                        self._ensure_port(root, nsr, nsfd, spec, port, log)
                finally:
                    os.close(nsfd)
                self._remove_extras(root, nsr, spec, log)
                faults.point("local.server.after_ports")
                limits = self.cgroups.ensure(ns, vcpus=spec.vcpus, memory_mb=spec.memory_mb)
                if limits.changed or created:
                    if limits.applied:
                        console.append(
                            log,
                            f"limits applied: {spec.vcpus} vCPU (cfs_quota_us="
                            f"{spec.vcpus * cgroups.CFS_PERIOD_US}), {spec.memory_mb} MiB memory",
                        )
                    else:
                        console.append(log, f"limits NOT applied: {limits.note}")
                interfaces = self._interfaces(nsr, spec)
            image = self._ensure_sandbox(spec, ns, log)
        return ServerStatus(
            backend_ref=ns,
            host=spec.host,
            interfaces=interfaces,
            limits_applied=limits.applied,
            limits_note=limits.note,
            image=image,
        )

    @staticmethod
    def _note_host_change(log: Path, old_meta: str, host: str) -> None:
        """A console line when a server's host changes (a move)."""
        try:
            before = json.loads(old_meta).get("host")
        except ValueError:
            return
        if isinstance(before, str) and before != host:
            console.append(log, f"host changed from {before} to {host}")

    @_backend_errors
    def stop_server(self, server_id: str, *, grace_s: float | None = None) -> None:
        """Stop a server's processes (SIGTERM, ``grace_s``, SIGKILL) so it can be moved.

        Its disk, namespace, interfaces, addresses, limits and owner records are kept:
        ``ensure_server`` (with its new host) boots it again over the same disk. No error if
        it is already stopped, its init died, or it does not exist.
        """
        ns = netns_name(server_id)
        with self._locks(ns):
            self._check_not_foreign([ns], {ns: netns.path(ns).exists()})
            if not self.owners.is_mine(ns):
                return
            self._unwatch(server_id)  # its init's exit is expected now, not a failure
            sdir = self._server_dir(server_id)
            log = sdir / "console.log"
            host = self._meta(server_id).get("host", "?")
            started = time.monotonic()
            grace = self.delete_grace_s if grace_s is None else grace_s
            ino = netns.inode(ns)
            killed = self._kill_server_processes(
                ns, ino, grace, sandbox.read_init(sdir / "init.pid")
            )
            faults.point("local.server.stop.after_kill")
            if ino is not None:
                # Off the network while stopped: its namespace would still answer pings and
                # refuse connections at once, as no stopped machine does.
                with self._ns(ns) as nsr:
                    links.down_all_but_lo(nsr)
            with contextlib.suppress(FileNotFoundError):
                (sdir / "init.pid").unlink()
            marker = sdir / STOPPED_MARKER
            if killed or not marker.exists():
                write_atomic(marker, json.dumps({"host": host}))
                console.append(
                    log,
                    f"stopped to move from host {host} ({len(killed)} process(es) stopped in"
                    f" {(time.monotonic() - started) * 1000:.0f} ms; disk and ports kept)",
                )

    def _meta(self, server_id: str) -> dict[str, Any]:
        """The server's ``server.json`` (empty when missing or unreadable)."""
        try:
            meta = json.loads((self._server_dir(server_id) / "server.json").read_text())
        except (OSError, ValueError):
            return {}
        return meta if isinstance(meta, dict) else {}

    # ------------------------------------------------------------------ sandboxes

    def _init(self, server_id: str) -> sandbox.Init | None:
        """The server's init if it runs (in the server's network namespace), else None."""
        init = sandbox.read_init(self._server_dir(server_id) / "init.pid")
        if not sandbox.alive(init):
            return None
        assert init is not None
        ino = netns.inode(netns_name(server_id))
        return init if ino is not None and processes.net_inode(init.pid) == ino else None

    def _watch(self, server_id: str, init: sandbox.Init) -> None:
        """Keep a pidfd on the init, so its death is noticed (``down_servers``)."""
        with self._inits_lock:
            old = self._inits.get(server_id)
            if old is not None and old[0] == init:
                return
            try:
                fd = os.pidfd_open(init.pid)
            except OSError:
                return
            if not sandbox.alive(init):
                os.close(fd)
                return
            if old is not None:
                os.close(old[1])
            self._inits[server_id] = (init, fd)

    def _unwatch(self, server_id: str) -> None:
        with self._inits_lock:
            old = self._inits.pop(server_id, None)
        if old is not None:
            os.close(old[1])

    def down_servers(self, timeout: float) -> list[str]:
        """Servers whose init exited since it was last seen (kill -9, a crash)."""
        with self._inits_lock:
            watched = dict(self._inits)
        if not watched:
            time.sleep(timeout)
            return []
        poller = select.poll()
        by_fd = {fd: (sid, init) for sid, (init, fd) in watched.items()}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        try:
            ready = poller.poll(max(0.0, timeout) * 1000)
        except OSError:
            return []
        down = []
        for fd, _ in ready:
            sid, init = by_fd[fd]
            with self._inits_lock:
                current = self._inits.get(sid)
                # Same init and fd: a server stopped and booted again meanwhile (a move) may
                # have been given the closed fd's number for its new init's pidfd.
                if current == (init, fd) and not sandbox.alive(init):
                    del self._inits[sid]
                    os.close(fd)
                    down.append(sid)
        for sid in down:
            console.append(self._console(sid), "init exited: the server is down")
        return sorted(down)

    def _image_layers(self, spec: ServerSpec, sdir: Path, log: Path) -> tuple[str, list[Path]]:
        """The layers the server boots from: those it booted from before (its disk was made
        on them), else its image's current build (built now if it is not yet)."""
        record = sdir / "sandbox.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            data = json.loads(record.read_text())
            lower = [Path(p) for p in data["lower"]]
            if all(p.is_dir() for p in lower):
                return str(data["label"]), lower
        if self.image_store.record(spec.image).status != "built":
            console.append(log, f"image {spec.image} is not built yet: building it")
        digest, lower = self.image_store.ensure(
            spec.image, progress=lambda m: console.append(log, m)
        )
        recipe = self.image_store.recipe(spec.image)
        label = f"{spec.image}@{recipe.version}"
        write_atomic(
            record,
            json.dumps(
                {
                    "image": spec.image,
                    "hash": digest,
                    "label": label,
                    "lower": [str(p) for p in lower],
                },
                sort_keys=True,
            ),
        )
        return label, lower

    def _first_files(self, spec: ServerSpec, upper: Path) -> None:
        """The server's own /etc/hostname and /etc/hosts, written into its disk once."""
        etc = upper / "etc"
        etc.mkdir(parents=True, exist_ok=True)
        if not (etc / "hostname").exists():
            write_atomic(etc / "hostname", f"{spec.name}\n")
        if not (etc / "hosts").exists():
            lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
            short = spec.name.split(".")[0]
            for port in sorted(spec.ports, key=lambda p: p.index):
                for addr in port.addresses:
                    ip = addr.split("/")[0]
                    lines.append(f"{ip}\t{spec.name}" + (f" {short}" if short != spec.name else ""))
                    break
            write_atomic(etc / "hosts", "\n".join(lines) + "\n")

    def _ensure_sandbox(self, spec: ServerSpec, ns: str, log: Path) -> str:
        """Boot the server's init unless it runs; returns the image it booted from."""
        sdir = self._server_dir(spec.id)
        label, lower = self._image_layers(spec, sdir, log)
        init = self._init(spec.id)
        if init is not None:
            self._watch(spec.id, init)
            return label
        stale = sandbox.read_init(sdir / "init.pid")
        if stale is not None:
            console.append(log, f"init (pid {stale.pid}) is gone: booting again")
        disk = sdir / "disk"
        if not (disk / "upper").exists():
            # Only into a disk made here, now: once the server has run, its files are its
            # own (a tenant's /etc may be a symlink to anywhere on the host).
            (disk / "upper").mkdir(parents=True)
            self._first_files(spec, disk / "upper")
        faults.point("local.server.before_boot")
        started = time.monotonic()
        try:
            init = sandbox.boot(
                self._sandbox_binary(),
                hostname=spec.name,
                lower=lower,
                upper=disk / "upper",
                work=disk / "work",
                root=sdir / "root",
                console=log,
                net=netns.path(ns),
                cgroup_procs=self.cgroups.procs_files(ns),
                grace_s=max(1.0, self.delete_grace_s),
                ro_binds=self._agent(),
            )
        except sandbox.SandboxError as e:
            raise BackendError(f"server {spec.id}: cannot boot: {e}") from e
        sandbox.record_init(sdir / "init.pid", init)
        self._watch(spec.id, init)
        console.append(
            log,
            f"booted from image {label} in {(time.monotonic() - started) * 1000:.0f} ms"
            f" (init pid {init.pid})",
        )
        marker = sdir / STOPPED_MARKER
        if marker.exists():
            console.append(log, f"started on host {spec.host} (its disk and ports kept)")
            with contextlib.suppress(FileNotFoundError):
                marker.unlink()
        return label

    def _ensure_port(
        self, root: Any, nsr: Any, nsfd: int, spec: ServerSpec, port: PortSpec, log: Path
    ) -> None:
        br = bridge_name(port.network_id)
        bridge = links.get(root, br)
        if bridge is None or not self.owners.is_mine(br):
            raise BackendError(
                f"port {port.id}: network {port.network_id} is not ready (no bridge {br});"
                " ensure_network first"
            )
        mtu = int(bridge.get("mtu") or 1500)
        inner = inner_ifname(port.index)
        rname = port_resource_name(port.id, port.vnic_type)
        record = OwnerRecord(
            self.instance_id,
            "port",
            port.id,
            server_id=spec.id,
            network_id=port.network_id,
            vnic_type=port.vnic_type,
            index=port.index,
        )
        mac = port.mac.lower()
        existing = links.get(root, rname)
        self.owners.claim(rname, record, exists_unowned=existing is not None)
        if port.vnic_type == "normal":
            msg, rebuilt = links.ensure_veth_port(
                root,
                nsr,
                nsfd,
                host=rname,
                inner=inner,
                mac=mac,
                mtu=mtu,
                bridge_index=bridge["index"],
            )
        else:
            if existing is not None:  # a macvlan left in the root namespace
                links.delete(root, rname)
                console.append(log, f"removed stray {rname} from the host namespace")
            pf_index = self._ensure_pf(root, port.network_id, bridge["index"], mtu)
            try:
                msg, rebuilt = links.ensure_macvlan_port(
                    root, nsr, nsfd, inner=inner, mac=mac, mtu=mtu, pf_index=pf_index
                )
            except NetlinkError as e:
                if e.code == errno.EADDRINUSE:
                    raise _bad(
                        f"port {port.id}: mac {mac} is already used by another direct port"
                        f" of network {port.network_id}"
                    ) from e
                raise
        readdressed = links.sync_addresses(nsr, msg["index"], links.parse_ifaces(port.addresses))
        if rebuilt or readdressed:
            console.append(
                log,
                f"{inner}: {port.vnic_type} port {port.id} mac {mac} on {br}"
                f" addresses {' '.join(port.addresses) or '(none)'}"
                f" ({'created' if rebuilt else 'addresses updated'})",
            )

    def _remove_extras(self, root: Any, nsr: Any, spec: ServerSpec, log: Path) -> None:
        """Remove interfaces and port records the spec no longer has."""
        expected = {inner_ifname(p.index) for p in spec.ports} | {"lo"}
        for name, msg in links.names(nsr).items():
            if name not in expected:
                links.delete_index(nsr, msg["index"])
                console.append(log, f"{name}: removed (not in the server's ports)")
        wanted = {port_resource_name(p.id, p.vnic_type) for p in spec.ports}
        for name, rec in self.owners.mine(_PORT_PREFIXES).items():
            if rec.kind == "port" and rec.server_id == spec.id and name not in wanted:
                links.delete(root, name)
                self.owners.release(name)

    def _interfaces(self, nsr: Any, spec: ServerSpec) -> tuple[InterfaceStatus, ...]:
        out = []
        for port in sorted(spec.ports, key=lambda p: p.index):
            inner = inner_ifname(port.index)
            msg = links.get(nsr, inner)
            if msg is None:
                continue
            out.append(
                InterfaceStatus(
                    port_id=port.id,
                    ifname=inner,
                    mac=str(msg.get("address")),
                    addresses=tuple(str(a) for a in links.addresses(nsr, msg["index"])),
                    vnic_type=port.vnic_type,
                )
            )
        return tuple(out)

    def server_exists(self, server_id: str) -> bool:
        """True when the server's namespace exists, is ours, and its init runs."""
        ns = netns_name(server_id)
        return netns.exists(ns) and self.owners.is_mine(ns) and self._init(server_id) is not None

    def _kill_server_processes(
        self, ns: str, ino: int | None, grace: float, init: sandbox.Init | None = None
    ) -> list[int]:
        """Stop every process in the server's namespace or cgroups; returns the pids signalled.

        Its processes get SIGTERM and ``grace`` seconds, once each; its init is left to the
        end (its own SIGTERM handling would signal them a second time and cut the grace to
        its own), then its exit takes whatever is left of the server with it.
        """

        def ours(pid: int) -> bool:
            return (ino is not None and processes.net_inode(pid) == ino) or self.cgroups.contains(
                ns, pid
            )

        killed: list[int] = []
        for _ in range(3):  # again, in case something forked while we were killing
            pids = set(self.cgroups.pids(ns))
            if ino is not None:
                pids.update(processes.pids_by_netns([ino])[ino])
            pids.discard(os.getpid())
            if init is not None:
                pids.discard(init.pid)
            if not pids:
                break
            killed += processes.terminate(pids, verify=ours, grace=grace, kill_wait=grace)
        if init is not None and sandbox.alive(init):
            killed += processes.terminate(
                [init.pid],
                verify=lambda p: processes.start_time(p) == init.start,
                grace=grace,
                kill_wait=grace,
            )
        return killed

    @_backend_errors
    def delete_server(self, server_id: str, *, grace_s: float | None = None) -> None:
        """Kill a server's processes, delete its namespace, ports, cgroups and state."""
        ns = netns_name(server_id)
        with self._locks(ns):
            ns_present = netns.path(ns).exists()
            self._check_not_foreign([ns], {ns: ns_present})
            ours = self.owners.is_mine(ns)
            log = self._console(server_id)
            self._unwatch(server_id)  # its init's exit is expected now, not a failure
            if ours:
                console.append(log, f"deleting server {server_id}")
                ino = netns.inode(ns)
                grace = self.delete_grace_s if grace_s is None else grace_s
                self._kill_server_processes(
                    ns, ino, grace, sandbox.read_init(self._server_dir(server_id) / "init.pid")
                )
                faults.point("local.server.delete.after_kill")
                if ino is not None:
                    with self._ns(ns) as nsr:
                        links.delete_all_but_lo(nsr)
                netns.remove(ns)
            port_records = {
                n: r
                for n, r in self.owners.mine(_PORT_PREFIXES).items()
                if r.kind == "port" and r.server_id == server_id
            }
            if port_records:
                with self._root() as root:
                    for name in port_records:
                        links.delete(root, name)
                        self.owners.release(name)
            if ours:
                failures = self.cgroups.remove(ns)
                if failures:
                    raise BackendError(
                        f"server {server_id}: cannot remove cgroups: {'; '.join(failures)}"
                    )
            shutil.rmtree(self._server_dir(server_id), ignore_errors=True)
            self.owners.release(ns)

    # ------------------------------------------------------------------ processes

    @_backend_errors
    def run(
        self,
        server_id: str,
        argv: list[str],
        *,
        timeout: float = 60.0,
        stdin: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> RunResult:
        """Run a command inside a server (own session; process group killed on timeout)."""
        if not argv:
            raise _bad("run: empty command")
        ns, _ = self._owned_ns(server_id)
        init = self._running_init(server_id)
        hostname = self._hostname(server_id)
        cmd = sandbox.enter_argv(
            self._sandbox_binary(), init, argv, cgroup_procs=self.cgroups.procs_files(ns)
        )
        kills = self.cgroups.oom_kills(ns)
        result = processes.run_command(
            cmd, env=processes.clean_env(hostname, env or {}), timeout=timeout, stdin=stdin, cwd="/"
        )
        if result.exit_code == sandbox.ENTER_FAILED and not self._init(server_id):
            raise BackendError(f"server {server_id} is down (its init exited); it is restarted")
        if result.exit_code < 0 and not result.timed_out and self.cgroups.oom_kills(ns) > kills:
            result = replace(result, oom_killed=True)
        return result

    def _running_init(self, server_id: str) -> sandbox.Init:
        init = self._init(server_id)
        if init is None:
            raise BackendError(
                f"server {server_id} is down (its init is not running); it is being restarted"
            )
        return init

    def _pidfile(self, server_id: str, name: str) -> Path:
        if not _SERVICE_RE.match(name):
            raise _bad(f"service name {name!r} must match {_SERVICE_RE.pattern}")
        return self._server_dir(server_id) / "services" / f"{name}.pid"

    @_backend_errors
    def start_service(self, server_id: str, svc: ServiceSpec) -> ServiceStatus:
        """Start a service detached inside a server, unless it already runs."""
        pidfile = self._pidfile(server_id, svc.name)
        if not svc.argv:
            raise _bad(f"service {svc.name}: empty argv")
        ns = netns_name(server_id)
        with self._locks(ns):
            ns, ino = self._owned_ns(server_id)
            pid = processes.live_pid(pidfile, ino)
            if pid is not None:
                return ServiceStatus(name=svc.name, pid=pid, running=True)
            init = self._running_init(server_id)
            hostname = self._hostname(server_id)
            pidfile.parent.mkdir(parents=True, exist_ok=True)
            log = self._console(server_id)
            cmd = sandbox.enter_argv(
                self._sandbox_binary(),
                init,
                svc.argv,
                cgroup_procs=self.cgroups.procs_files(ns),
                cwd=svc.cwd or "/",
                detach=True,
                output=log,
            )
            console.append(log, f"service {svc.name} starting: {shlex.join(svc.argv)}")
            try:
                proc = subprocess.run(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    capture_output=True,
                    env=processes.clean_env(hostname, svc.env),
                    cwd="/",
                    timeout=SERVICE_START_WAIT_S * 5,
                    close_fds=True,
                )
                pid = int(proc.stdout.split()[0]) if proc.returncode == 0 else None
            except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as e:
                raise _bad(f"service {svc.name}: cannot start: {e}") from e
            if pid is None:
                why = proc.stderr.decode(errors="replace").strip()
                console.append(log, f"service {svc.name} did not start: {why}")
                raise _bad(f"service {svc.name}: cannot start: {why}")
            processes.write_pidfile(pidfile, pid)
            running = processes.net_inode(pid) == ino
            if not running:
                console.append(log, f"service {svc.name} exited at once")
            return ServiceStatus(name=svc.name, pid=pid if running else None, running=running)

    @_backend_errors
    def stop_service(self, server_id: str, name: str) -> None:
        """SIGTERM a service, SIGKILL it after 3 s; no error if it is not running."""
        pidfile = self._pidfile(server_id, name)
        ns = netns_name(server_id)
        with self._locks(ns):
            ino = netns.inode(ns)
            pid = processes.live_pid(pidfile, ino)
            if pid is not None:
                processes.terminate(
                    [pid],
                    verify=lambda p: processes.net_inode(p) == ino,
                    grace=SERVICE_STOP_GRACE_S,
                )
                console.append(self._console(server_id), f"service {name} stopped (pid {pid})")
            with contextlib.suppress(FileNotFoundError):
                pidfile.unlink()

    @_backend_errors
    def services(self, server_id: str) -> list[ServiceStatus]:
        """Services of a server with their observed state."""
        sdir = self._server_dir(server_id) / "services"
        ino = netns.inode(netns_name(server_id))
        out = []
        try:
            files = sorted(sdir.glob("*.pid"))
        except OSError:
            return []
        for f in files:
            pid = processes.live_pid(f, ino)
            out.append(ServiceStatus(name=f.stem, pid=pid, running=pid is not None))
        return out

    @_backend_errors
    def shape(
        self,
        server_id: str,
        ifname: str,
        rate_bps: int | None,
        burst_bytes: int = 131072,
        latency_ms: float = 50.0,
    ) -> None:
        """A tbf qdisc at the root of a server's interface (replaced), or none."""
        ns, _ = self._owned_ns(server_id)
        with self._ns(ns) as nsr:
            found = nsr.link_lookup(ifname=ifname)
            if not found:
                raise _bad(f"server {server_id} has no interface {ifname!r}")
            index = found[0]
            if rate_bps is None:
                with contextlib.suppress(NetlinkError):  # no qdisc of ours: nothing to remove
                    nsr.tc("del", index=index, handle="1:", root=True)
                return
            nsr.tc(
                "replace",
                kind="tbf",
                index=index,
                handle="1:",
                rate=rate_bps // 8,
                burst=burst_bytes,
                latency=int(latency_ms * 1000),
            )

    def console_log(self, server_id: str, *, tail_bytes: int = 65536) -> str:
        """The last ``tail_bytes`` of the server's console log."""
        return console.tail(self._console(server_id), tail_bytes)

    def console_read(self, server_id: str, *, after: int, limit: int) -> tuple[str, int]:
        """The console log from byte ``after`` (negative: from the end), and the next offset."""
        return console.read(self._console(server_id), after, limit)

    # ------------------------------------------------------------------ inventory

    @_backend_errors
    def used_ranges(self) -> list[str]:
        """IPv4 ranges on this machine's interfaces, except on this instance's own bridges.

        Other instances (a dev server beside the tests, say) share the host's routing
        table: a subnet that exists twice on two bridges breaks both.
        """
        mine = set(self.owners.mine((BRIDGE_PREFIX,)))
        out: set[str] = set()
        with self._root() as ipr:
            names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
            for addr in ipr.get_addr(family=socket.AF_INET):
                if names.get(addr["index"]) in mine:
                    continue
                ip = addr.get_attr("IFA_ADDRESS")
                net = ipaddress.IPv4Network(f"{ip}/{addr['prefixlen']}", strict=False)
                out.add(str(net))
        return sorted(out)

    def inventory(self) -> list[HostRecord]:
        """Hosts from the inventory YAML."""
        return inventory.load(self.inventory_path)

    # ------------------------------------------------------------------ images

    @staticmethod
    def _info(r: images.ImageRecord) -> ImageInfo:
        return ImageInfo(
            name=r.name,
            version=r.version,
            description=r.description,
            status=r.status,
            parent=r.parent,
            hash=r.hash,
            size_bytes=r.size_bytes,
            built_at=r.built_at,
            build_seconds=r.build_seconds,
            detail=r.detail,
            source=r.recipe_path,
        )

    def images(self) -> list[ImageInfo]:
        """Every image with a recipe, built or not."""
        return [self._info(r) for r in self.image_store.records()]

    def image(self, name: str) -> ImageInfo:
        """One image."""
        return self._info(self.image_store.record(name))

    def image_log(self, name: str) -> str:
        """The log of the image's current, last failed or last build."""
        path = self.image_store.log_path(name)
        return console.tail(path, 1 << 20) if path else ""

    def build_image(self, name: str, progress: Callable[[str], None] | None = None) -> ImageInfo:
        """Build ``name`` and its parents unless up to date (a cache hit costs milliseconds)."""
        self.image_store.ensure(name, progress)
        return self._info(self.image_store.record(name))

    def _layers_in_use(self) -> set[str]:
        used: set[str] = set()
        for f in (self.state_dir / "servers").glob("*/sandbox.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                used.update(str(p) for p in json.loads(f.read_text())["lower"])
        return used

    def delete_image(self, name: str) -> list[str]:
        """Remove the built layers of ``name`` that no server of this instance boots from."""
        self.image_store.recipe(name)
        return self.image_store.delete(name, in_use=self._layers_in_use())

    # ------------------------------------------------------------------ observe / gc

    def _scan(
        self, known_servers: set[str], known_networks: set[str]
    ) -> list[tuple[ObservedResource, OwnerRecord, bool]]:
        """Everything of ours that exists: (resource with its object id, record, object known)."""
        records = self.owners.mine()
        with self._root() as root:
            root_links = links.names(root)
        inodes = {name: netns.inode(name) for name, rec in records.items() if rec.kind == "server"}
        procs = processes.pids_by_netns(i for i in inodes.values() if i is not None)
        direct_by_server: dict[str, list[tuple[str, OwnerRecord]]] = {}
        out: list[tuple[ObservedResource, OwnerRecord, bool]] = []
        for name, rec in sorted(records.items()):
            if rec.kind == "server":
                ino = inodes[name]
                if ino is None:
                    continue
                known = rec.object_id in known_servers
                out.append(
                    (
                        ObservedResource("server", name, rec.object_id, f"netns inode {ino}"),
                        rec,
                        known,
                    )
                )
                for pid in sorted(procs.get(ino, [])):
                    out.append(
                        (
                            ObservedResource(
                                "process",
                                f"{processes.comm(pid)}/{pid}",
                                rec.object_id,
                                processes.describe(pid),
                            ),
                            rec,
                            known,
                        )
                    )
            elif rec.kind == "network":
                msg = root_links.get(name)
                if msg is None:
                    continue
                if name.startswith(BRIDGE_PREFIX):
                    detail = "bridge"
                elif name.startswith(PF_PREFIX):
                    detail = "emulated SR-IOV PF"
                else:
                    detail = "PF peer on the bridge"
                out.append(
                    (
                        ObservedResource("network", name, rec.object_id, detail),
                        rec,
                        rec.object_id in known_networks,
                    )
                )
            elif rec.kind == "port":
                known = rec.server_id in known_servers
                if name in root_links:
                    detail = f"{links.kind(root_links[name])} of server {rec.server_id}"
                    out.append((ObservedResource("port", name, rec.object_id, detail), rec, known))
                elif rec.vnic_type == "direct" and rec.server_id and rec.index is not None:
                    direct_by_server.setdefault(rec.server_id, []).append((name, rec))
        for server_id, ports in direct_by_server.items():
            ns = netns_name(server_id)
            if not netns.exists(ns) or not self.owners.is_mine(ns):
                continue
            with contextlib.suppress(OSError), self._ns(ns) as nsr:
                inside = links.names(nsr)
                for name, rec in ports:
                    assert rec.index is not None
                    msg = inside.get(inner_ifname(rec.index))
                    if msg is not None and links.kind(msg) == "macvlan":
                        detail = f"macvlan {inner_ifname(rec.index)} in {ns}"
                        out.append(
                            (
                                ObservedResource("port", name, rec.object_id, detail),
                                rec,
                                server_id in known_servers,
                            )
                        )
        return out

    @_backend_errors
    def observe(self, known_servers: set[str], known_networks: set[str]) -> ObservedState:
        """Resources of this instance; ``object_id`` set only for known objects."""
        return ObservedState(
            resources=tuple(
                ObservedResource(r.kind, r.name, r.object_id if known else None, r.detail)
                for r, _, known in self._scan(known_servers, known_networks)
            )
        )

    @_backend_errors
    def collect_garbage(
        self, known_servers: set[str], known_networks: set[str], *, read_at: float | None = None
    ) -> GcReport:
        """Delete what this instance owns but no known object does, and stale owner records.

        Owner records written since ``read_at`` (less a margin: file times come from the
        kernel's coarse clock) count as known: the object they were made for may have been
        committed after the known ids were read.
        """
        records = self.owners.mine()
        if read_at is not None:
            since = time.time() - read_at + GC_CLOCK_MARGIN_S
            young = [r for name, r in records.items() if self.owners.age(name) < since]
            known_servers = known_servers | {r.object_id for r in young if r.kind == "server"}
            known_servers |= {r.server_id for r in young if r.kind == "port" and r.server_id}
            known_networks = known_networks | {r.object_id for r in young if r.kind == "network"}
        scanned = self._scan(known_servers, known_networks)
        removed: list[ObservedResource] = []
        servers = {r.object_id for r in records.values() if r.kind == "server"} - known_servers
        for server_id in sorted(servers):
            try:
                self.delete_server(server_id)
            except BackendError as e:
                log.warning("gc: cannot delete server %s: %s", server_id, e)
                continue
            removed += [
                r
                for r, rec, _ in scanned
                if (rec.kind == "server" and rec.object_id == server_id)
                or (rec.kind == "port" and rec.server_id == server_id)
            ]
        networks = {r.object_id for r in records.values() if r.kind == "network"} - known_networks
        for network_id in sorted(networks):
            try:
                self.delete_network(network_id)
            except BackendError as e:
                log.warning("gc: cannot delete network %s: %s", network_id, e)
                continue
            removed += [
                r for r, rec, _ in scanned if rec.kind == "network" and rec.object_id == network_id
            ]
        removed += self._gc_ports_and_stale(known_servers)
        removed += self._gc_state_dirs(known_servers)
        self._sync_firewall(force=True)
        return GcReport(removed=tuple(removed))

    def _gc_ports_and_stale(self, known_servers: set[str]) -> list[ObservedResource]:
        """Stray port links of unknown servers; records of ours whose resource is gone."""
        removed: list[ObservedResource] = []
        records = self.owners.mine()
        with self._root() as root:
            root_links = links.names(root)
            for name, rec in records.items():
                if rec.kind == "port" and rec.server_id not in known_servers:
                    if name in root_links:
                        links.delete(root, name)
                        removed.append(
                            ObservedResource("port", name, rec.object_id, "stray port link")
                        )
                    self.owners.release(name)
                    continue
                if self.owners.age(name) < self.stale_record_grace_s:
                    continue
                if rec.kind == "server":
                    with self._locks(name):
                        if not netns.path(name).exists() and not self.cgroups.existing_dirs(name):
                            self.owners.release(name)
                elif rec.kind == "network":
                    with self._locks(bridge_name(rec.object_id)):
                        if links.get(root, name) is None:
                            self.owners.release(name)
                elif rec.kind == "port" and rec.server_id:
                    with self._locks(netns_name(rec.server_id)):
                        ns_there = netns.exists(netns_name(rec.server_id))
                        if links.get(root, name) is None and not (
                            rec.vnic_type == "direct" and ns_there
                        ):
                            self.owners.release(name)
        return removed

    def _gc_state_dirs(self, known_servers: set[str]) -> list[ObservedResource]:
        """State directories of servers that are neither known nor owned any more."""
        removed: list[ObservedResource] = []
        base = self.state_dir / "servers"
        try:
            entries = sorted(base.iterdir())
        except FileNotFoundError:
            return removed
        for d in entries:
            sid = d.name
            if sid in known_servers or not d.is_dir():
                continue
            try:
                ns = netns_name(sid)
            except BackendError:
                continue
            with self._locks(ns):
                try:
                    orphan = self.owners.read(ns) is None
                except OwnershipError:
                    continue
                if orphan:
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(
                        ObservedResource("server", f"state:{sid}", sid, "state directory")
                    )
        return removed
