"""The one protocol every infrastructure backend implements (local cloud, OpenStack).

Callers (reconcilers, services) speak only in these frozen data objects. Nothing here
names a namespace, a bridge or a Nova server: those are the backend's business, and
appear only inside the opaque ``backend_ref`` strings a backend hands back.

Every mutating call is idempotent and keyed by the object's id: calling ``ensure_server``
twice, or after a crash half-way through the first call, converges on the same result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

VnicType = Literal["normal", "direct"]
ServerKind = Literal["vm", "baremetal"]


class BackendError(Exception):
    """A backend could not carry out an action; ``code`` is stable, the message says why."""

    code = "backend_error"

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


class NotFoundInBackend(BackendError):
    """The backend holds no such object (for run/exec on a server that is gone)."""

    code = "not_found"

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


@dataclass(frozen=True)
class SubnetSpec:
    """One IPv4 subnet of a network."""

    id: str
    """Subnet id (store primary key)."""
    cidr: str
    """Network in CIDR form, e.g. ``198.18.4.0/24``."""
    gateway_ip: str
    """Address the platform side (host, router) holds on this subnet, e.g. ``198.18.4.1``."""


@dataclass(frozen=True)
class NetworkSpec:
    """A layer-2 network with its subnets, as the user asked for it."""

    id: str
    """Network id (store primary key); the backend names its resources after it."""
    name: str
    """Human name, for logs and descriptions only."""
    subnets: tuple[SubnetSpec, ...]
    """Subnets carried on this network; the gateway address of each is held platform-side."""
    mtu: int = 1500
    """Link MTU."""


@dataclass(frozen=True)
class NetworkStatus:
    """What the backend built for a network."""

    backend_ref: str
    """Opaque backend reference (bridge name, Neutron network id)."""
    ready: bool
    """True when ports can be attached."""


@dataclass(frozen=True)
class PortSpec:
    """One network interface of a server."""

    id: str
    """Port id (store primary key)."""
    network_id: str
    """Network the port is on; ``ensure_network`` has been called for it first."""
    mac: str
    """MAC address, allocated by the store (locally administered)."""
    addresses: tuple[str, ...]
    """Fixed addresses in ``ip/prefixlen`` form."""
    vnic_type: VnicType = "normal"
    """``normal`` (virtual NIC) or ``direct`` (SR-IOV virtual function)."""
    index: int = 0
    """Position on the server: 0 becomes the first interface (``eth0``), and so on."""


@dataclass(frozen=True)
class ServerSpec:
    """A server as the user asked for it, already placed on a host."""

    id: str
    """Server id (store primary key); the backend names its resources after it."""
    name: str
    """Hostname the server's processes see."""
    kind: ServerKind
    """``vm`` or ``baremetal`` (a bare-metal server has its whole host)."""
    host: str
    """Inventory host the server was placed on."""
    vcpus: int
    """Virtual CPUs granted by the flavor."""
    memory_mb: int
    """Memory granted by the flavor, in MiB."""
    ports: tuple[PortSpec, ...] = ()
    """Interfaces, in order."""
    image: str = "base"
    """Name of the image the server boots from (a Glance image's name on OpenStack)."""


@dataclass(frozen=True)
class InterfaceStatus:
    """One interface as observed inside a server."""

    port_id: str
    """The port this interface realises."""
    ifname: str
    """Interface name as the server sees it (``eth0``)."""
    mac: str
    """MAC address."""
    addresses: tuple[str, ...]
    """Addresses configured, ``ip/prefixlen``."""
    vnic_type: VnicType
    """How the interface is attached."""


@dataclass(frozen=True)
class ServerStatus:
    """What the backend built for a server."""

    backend_ref: str
    """Opaque backend reference (namespace name, Nova server id)."""
    host: str
    """Host the server runs on."""
    interfaces: tuple[InterfaceStatus, ...]
    """Interfaces, in port order."""
    limits_applied: bool
    """True when the flavor's CPU and memory limits are enforced."""
    limits_note: str = ""
    """Why limits are not enforced, when they are not; empty otherwise."""
    image: str = ""
    """The image it booted from, with its version (``base@1``)."""


@dataclass(frozen=True)
class RunResult:
    """The outcome of one command run to completion inside a server."""

    exit_code: int
    """Exit status; negative for death by signal (``-9``), 124 when it timed out."""
    stdout: bytes
    """Captured standard output (bounded)."""
    stderr: bytes
    """Captured standard error (bounded)."""
    duration_s: float
    """Wall time."""
    timed_out: bool = False
    """True when the command was killed for exceeding its timeout."""
    oom_killed: bool = False
    """True when the kernel killed it for exceeding the server's memory limit."""


@dataclass(frozen=True)
class ServiceSpec:
    """A long-running process inside a server (a daemon), restarted by nobody but us."""

    name: str
    """Service name, unique per server (``slurmd``); ``[a-z0-9][a-z0-9-]*``."""
    argv: tuple[str, ...]
    """Command and arguments."""
    env: tuple[tuple[str, str], ...] = ()
    """Extra environment variables."""
    cwd: str | None = None
    """Working directory, or the backend's default."""


@dataclass(frozen=True)
class ServiceStatus:
    """A long-running process as observed."""

    name: str
    """Service name."""
    pid: int | None
    """Process id while running."""
    running: bool
    """True while the process is alive."""


@dataclass(frozen=True)
class GpuRecord:
    """GPUs of one model on a host."""

    model: str
    """Model name, e.g. ``A100``."""
    count: int
    """How many of this model."""
    memory_gb: int = 0
    """Memory per GPU."""
    mig_profiles: tuple[str, ...] = ()
    """Slice profiles the GPUs can be partitioned into, e.g. ``1g.10gb``."""


@dataclass(frozen=True)
class NicRecord:
    """A physical NIC of a host."""

    name: str
    """Interface name on the host."""
    speed_gbps: int = 0
    """Line rate."""
    rdma: bool = False
    """True when the NIC is RDMA-capable."""
    sriov_vfs: int = 0
    """Virtual functions it can offer to direct ports."""


@dataclass(frozen=True)
class HostRecord:
    """One hypervisor or bare-metal node of the inventory."""

    name: str
    """Unique host name."""
    vcpus: int
    """Schedulable vCPUs."""
    memory_mb: int
    """Schedulable memory, MiB."""
    disk_gb: int
    """Local disk, GB."""
    gpus: tuple[GpuRecord, ...] = ()
    """GPUs by model."""
    nics: tuple[NicRecord, ...] = ()
    """Physical NICs."""
    properties: tuple[tuple[str, str | int | float | bool], ...] = ()
    """Free-form properties (``rack``, ``cpu_model``, ``credit_rate``), as sorted pairs."""


@dataclass(frozen=True)
class ObservedResource:
    """A piece of real infrastructure the backend found."""

    kind: str
    """Backend-neutral kind: ``server``, ``network``, ``port``, ``process``."""
    name: str
    """Backend name of the resource (for people reading ``status``)."""
    object_id: str | None
    """Store id of the object it belongs to, when it can be told."""
    detail: str = ""
    """Extra information (addresses, pid, command)."""


@dataclass(frozen=True)
class SecurityGroupRuleSpec:
    """One rule of a security group (stateful: replies to allowed traffic come back)."""

    direction: Literal["ingress", "egress"]
    """``ingress``: traffic the group's ports let in; ``egress``: traffic they send."""
    protocol: Literal["any", "tcp", "udp", "icmp"] = "any"
    """IPv4 protocol the rule is for."""
    port_min: int | None = None
    """First TCP/UDP port (destination port), or None for every port."""
    port_max: int | None = None
    """Last TCP/UDP port."""
    remote_cidr: str | None = None
    """Peer addresses (source for ingress, destination for egress), or None..."""
    remote_group_id: str | None = None
    """...or the members of this group (their addresses)."""


@dataclass(frozen=True)
class SecurityGroupSpec:
    """A security group: its rules."""

    id: str
    """Group id."""
    rules: tuple[SecurityGroupRuleSpec, ...] = ()
    """What its ports let in and out; nothing else passes."""


@dataclass(frozen=True)
class FirewallPortSpec:
    """A port and the groups that apply to it."""

    id: str
    """Port id."""
    network_id: str
    """Its network."""
    addresses: tuple[str, ...]
    """Its fixed IPv4 addresses (no prefix length)."""
    groups: tuple[str, ...]
    """Ids of its security groups (empty: nothing in or out, as a Neutron port with port
    security on and no group)."""
    mac: str = ""
    """Its MAC address: the only one it may send from."""
    vnic_type: VnicType = "normal"
    """``direct`` ports (SR-IOV) get no security groups, as in Neutron."""


@dataclass(frozen=True)
class FirewallSpec:
    """Every port's security groups, for the whole instance."""

    ports: tuple[FirewallPortSpec, ...] = ()
    """Every plugged port."""
    groups: tuple[SecurityGroupSpec, ...] = ()
    """Every group a port or a rule names."""


@dataclass(frozen=True)
class ImageInfo:
    """An image servers can boot from."""

    name: str
    """Image name, what ``ServerSpec.image`` names."""
    version: str
    """Version of its recipe (or Glance's)."""
    description: str
    """What is in it."""
    status: str
    """``built``, ``not built``, ``building``, ``outdated`` or ``failed``."""
    parent: str | None = None
    """The image it is built on."""
    hash: str = ""
    """Identity of the build: recipe, parent and host package state."""
    size_bytes: int = 0
    """Size of its own layer."""
    built_at: str | None = None
    """When it was built (ISO 8601)."""
    build_seconds: float | None = None
    """How long its build took."""
    detail: str = ""
    """Why it failed (the log's last lines), or what ``outdated`` means."""
    source: str = ""
    """Where its recipe is."""


class ImageError(BackendError):
    """An image is unknown, cannot be built or deleted."""

    code = "image_error"


@dataclass(frozen=True)
class ObservedState:
    """Everything the backend owns, as it really is now."""

    resources: tuple[ObservedResource, ...] = ()
    """All resources that belong to this Ecliptic instance."""

    def ids(self, kind: str) -> set[str]:
        """Store ids of the observed resources of one kind."""
        return {r.object_id for r in self.resources if r.kind == kind and r.object_id}


@dataclass(frozen=True)
class GcReport:
    """What a garbage collection removed."""

    removed: tuple[ObservedResource, ...] = field(default_factory=tuple)
    """Resources deleted (or processes stopped) because no known object owns them."""


@runtime_checkable
class Backend(Protocol):
    """Infrastructure that servers and networks live on."""

    name: str
    """Backend name: ``local`` or ``openstack``."""

    def ensure_network(self, spec: NetworkSpec) -> NetworkStatus:
        """Create or repair a network so it matches ``spec``."""
        ...

    def delete_network(self, network_id: str) -> None:
        """Remove a network and everything of it; no error if it is already gone."""
        ...

    def ensure_server(self, spec: ServerSpec) -> ServerStatus:
        """Create or repair a server (its ports and limits) so it matches ``spec``."""
        ...

    def delete_server(self, server_id: str, *, grace_s: float | None = None) -> None:
        """Stop a server (SIGTERM, ``grace_s``, SIGKILL) and remove it; no error if gone."""
        ...

    def stop_server(self, server_id: str, *, grace_s: float | None = None) -> None:
        """Stop a server's processes (SIGTERM, ``grace_s``, SIGKILL) to move it (a cold
        migration), keeping its disk, ports, addresses and MACs; ``ensure_server`` with a new
        ``host`` starts it there. No error if it is already stopped, down or gone."""
        ...

    def server_exists(self, server_id: str) -> bool:
        """True when the server is really there (and running: not when stopped)."""
        ...

    def run(
        self,
        server_id: str,
        argv: list[str],
        *,
        timeout: float = 60.0,
        stdin: bytes | None = None,
        env: dict[str, str] | None = None,
    ) -> RunResult:
        """Run one command inside a server and wait for it."""
        ...

    def start_service(self, server_id: str, svc: ServiceSpec) -> ServiceStatus:
        """Start a long-running process in a server, unless it is already running."""
        ...

    def stop_service(self, server_id: str, name: str) -> None:
        """Stop a long-running process; no error if it is not running."""
        ...

    def services(self, server_id: str) -> list[ServiceStatus]:
        """Long-running processes of a server, as observed."""
        ...

    def shape(
        self,
        server_id: str,
        ifname: str,
        rate_bps: int | None,
        burst_bytes: int = 131072,
        latency_ms: float = 50.0,
    ) -> None:
        """Limit what leaves a server's interface to ``rate_bps`` (a token bucket, tc
        ``tbf``), modelling a slower fabric; ``rate_bps`` None removes the limit."""
        ...

    def console_log(self, server_id: str, *, tail_bytes: int = 65536) -> str:
        """The server's console log (boot messages and service output), its last bytes."""
        ...

    def console_read(self, server_id: str, *, after: int, limit: int) -> tuple[str, int]:
        """The console log from byte ``after`` (negative: from the end), at most ``limit``
        bytes, and the offset to read from next (to follow the log)."""
        ...

    def inventory(self) -> list[HostRecord]:
        """Hosts servers can be placed on."""
        ...

    def images(self) -> list[ImageInfo]:
        """Images servers can boot from."""
        ...

    def build_image(self, name: str, progress: Callable[[str], None] | None = None) -> ImageInfo:
        """Build image ``name`` (and what it is built on) unless it is up to date."""
        ...

    def image_log(self, name: str) -> str:
        """The log of the image's build in progress, last failed build, or build."""
        ...

    def delete_image(self, name: str) -> list[str]:
        """Remove image ``name``'s built layers that no server uses; returns what went."""
        ...

    def apply_firewall(self, spec: FirewallSpec) -> None:
        """Make every port's security groups what ``spec`` says (the whole instance's)."""
        ...

    def down_servers(self, timeout: float) -> list[str]:
        """Servers whose processes died (their init) since the last call; waits up to
        ``timeout`` seconds for one."""
        ...

    def used_ranges(self) -> list[str]:
        """IPv4 ranges (CIDR) in use outside this instance's networks; new subnets avoid them."""
        ...

    def observe(self, known_servers: set[str], known_networks: set[str]) -> ObservedState:
        """What really exists; ``object_id`` is set for resources of known objects."""
        ...

    def collect_garbage(
        self, known_servers: set[str], known_networks: set[str], *, read_at: float | None = None
    ) -> GcReport:
        """Remove what belongs to this instance but to no known object.

        ``read_at`` is when the known ids were read (``time.time()`` taken before the read):
        what the backend made after it is kept, since its object may have been committed
        after that read and only look unknown.
        """
        ...
