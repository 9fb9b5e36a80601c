"""Request and response bodies of the REST API; the Python client reuses them.

Every request body forbids unknown fields and bounds every size, so a typo in a field
name is an error that names the field rather than a silently ignored option.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    model_validator,
)

from ecliptic.config import QUOTA_MAX
from ecliptic.naming import ID_LIKE_RE, NAME_RE, FlavorName, Name
from ecliptic.perf.spec import BenchmarkSpec
from ecliptic.services.inputs import (
    MAX_DURATION,
    Count,
    Duration,
    FilterText,
    FlavorCreate,
    FlavorReservationIn,
    GpuProfile,
    HostReservationIn,
    LeaseCreate,
    LeaseUpdate,
    ReservationIn,
    ReservationResize,
    SliceReservationIn,
    When,
    parse_duration,
)

T = TypeVar("T")
__all__ = [
    "ID_LIKE_RE",
    "MAX_DURATION",
    "NAME_RE",
    "Count",
    "Duration",
    "FilterText",
    "FlavorCreate",
    "FlavorName",
    "FlavorReservationIn",
    "GpuProfile",
    "HostReservationIn",
    "LeaseCreate",
    "LeaseUpdate",
    "Name",
    "ReservationIn",
    "ReservationResize",
    "SliceReservationIn",
    "When",
    "parse_duration",
]


def _cidr(value: str) -> str:
    try:
        net = ipaddress.IPv4Network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"'{value}' is not an IPv4 network in CIDR form ({exc})") from None
    if not 16 <= net.prefixlen <= 29:
        raise ValueError(f"'{value}' has prefix /{net.prefixlen}: use a prefix from /16 to /29")
    return str(net)


Cidr = Annotated[str, Field(max_length=18), AfterValidator(_cidr)]
Ref = Annotated[str, Field(min_length=1, max_length=63)]
VnicType = Literal["normal", "direct"]


class Strict(BaseModel):
    """Base of request bodies: unknown fields are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Out(BaseModel):
    """Base of response bodies."""

    model_config = ConfigDict(from_attributes=True)


# -- auth and identity ----------------------------------------------------------------


class LoginRequest(Strict):
    """Exchange a user name and password for a bearer token."""

    username: Annotated[str, Field(min_length=1, max_length=63)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]
    token_name: Annotated[str, Field(min_length=1, max_length=63)] = "cli"
    ttl_hours: Annotated[int, Field(ge=1, le=24 * 365)] = 24 * 30


class TokenCreate(Strict):
    """Create a token for yourself."""

    name: Annotated[str, Field(min_length=1, max_length=63)]
    ttl_hours: Annotated[int, Field(ge=1, le=24 * 365)] | None = None


class TokenOut(Out):
    """A token (its secret only in the response that created it)."""

    id: str
    name: str
    prefix: str | None = None
    secret: str | None = None
    expires_at: datetime | None = None
    last_used_at: datetime | None = None


class TenancyCreate(Strict):
    """Create a tenancy."""

    name: Name
    description: Annotated[str, Field(max_length=1000)] = ""


class TenancyOut(Out):
    """A tenancy."""

    id: str
    name: str
    description: str
    created_at: datetime


class UserCreate(Strict):
    """Create a user."""

    name: Name
    password: Annotated[str, Field(min_length=8, max_length=1024)] | None = None
    email: Annotated[str, Field(max_length=254, pattern=r"^$|^[^@\s]+@[^@\s]+$")] = ""
    is_admin: StrictBool = False


class UserUpdate(Strict):
    """Disable a user (their tokens and sessions end at once) or enable them again."""

    disabled: StrictBool


class UserOut(Out):
    """A user."""

    id: str
    name: str
    email: str
    is_admin: bool
    disabled: bool
    created_at: datetime


class MembershipSet(Strict):
    """Add a user to a tenancy, or change their role."""

    user: Ref
    role: Literal["member", "admin"] = "member"


class MembershipOut(BaseModel):
    """A user's role in a tenancy."""

    tenancy: str
    user: str
    role: str


class WhoAmI(BaseModel):
    """The signed-in user and the tenancy the request acted in."""

    user: str
    user_id: str
    is_admin: bool
    tenancy: str | None
    role: str | None
    tenancies: list[str]


# -- inventory and flavors ------------------------------------------------------------


class GpuOut(BaseModel):
    """GPUs of one model on a host."""

    model: str
    count: int
    memory_gb: int = 0
    mig_profiles: list[str] = []


class HostPoolOut(BaseModel):
    """A host's place in the bare-metal-or-hypervisor pool."""

    phase: str
    """BAREMETAL, TO_HYPERVISOR, HYPERVISOR, DRAINING, TO_BAREMETAL or ERROR."""
    reason: str
    """Why it is in that phase (the last conversion's reason, or its error)."""
    hold: str
    """An operator's choice the policy keeps: ``hypervisor``, ``baremetal``, ``drained``, or
    empty (the policy decides)."""
    updated_at: datetime


class HostOut(BaseModel):
    """A host of the inventory, with what is in use on it."""

    id: str
    name: str
    state: str
    state_reason: str = ""
    """Why the host is in its state (Ironic's maintenance reason, its last error...)."""
    source: str = "inventory"
    """``inventory`` (the inventory file) or ``ironic`` (a node of Ironic)."""
    node_id: str | None = None
    """The Ironic node's UUID when ``source`` is ``ironic``."""
    pool: HostPoolOut | None = None
    """Its place in the bare-metal-or-hypervisor pool; null when it is not in the pool."""
    vcpus: int
    memory_mb: int
    disk_gb: int
    gpus: list[GpuOut]
    nics: list[dict[str, Any]]
    properties: dict[str, Any]
    used_vcpus: int
    used_memory_mb: int
    used_gpus: dict[str, int]
    servers: int


class PoolHostOut(Out):
    """A host of the bare-metal-or-hypervisor pool, with what needs it."""

    name: str
    node_id: str | None
    """The Ironic node's UUID."""
    state: str
    """The host's state (up, down, maintenance, retired)."""
    phase: str
    """Its role: BAREMETAL, TO_HYPERVISOR, HYPERVISOR, DRAINING, TO_BAREMETAL or ERROR."""
    reason: str
    """Why it is in that phase."""
    hold: str
    """An operator's choice the policy keeps (``hypervisor``, ``baremetal``, ``drained``)."""
    servers: int
    """Servers placed on it."""
    vm_need: str
    """What needs it as a hypervisor now (VM slots booked from now or within the lead time,
    VM servers on it); empty when nothing does."""
    bm_need: str
    """What needs it as bare metal now (a whole-host booking, a bare-metal server)."""
    updated_at: datetime


class HostConvert(Strict):
    """Convert a pool host: ``hypervisor`` or ``baremetal`` (held until ``auto``), or
    ``auto`` (give it back to the policy)."""

    to: Literal["hypervisor", "baremetal", "auto"]


class FlavorOut(Out):
    """A flavor."""

    id: str
    name: str
    description: str
    vcpus: int
    memory_mb: int
    disk_gb: int
    gpu_model: str | None
    gpus: int
    kind: str
    reservation_only: bool = False


QuotaLimit = Annotated[int, Field(ge=0, le=QUOTA_MAX)]


class QuotaSet(Strict):
    """New on-demand limits of a tenancy: give the ones to change (null: the site default)."""

    servers: QuotaLimit | None = None
    vcpus: QuotaLimit | None = None
    memory_mb: QuotaLimit | None = None
    gpus: QuotaLimit | None = None


class QuotaOut(BaseModel):
    """A tenancy's on-demand limits, what it uses, and which limits are the site default."""

    tenancy: str
    limits: dict[str, int]
    used: dict[str, int]
    defaults: dict[str, bool]


# -- networks and ports ---------------------------------------------------------------


class NetworkCreate(Strict):
    """Create a network with one subnet (its range picked for you unless given)."""

    name: Name
    cidr: Cidr | None = None


class SubnetCreate(Strict):
    """Add a range to a network (picked for you unless given)."""

    network: Ref
    name: Name
    cidr: Cidr | None = None


class SubnetOut(Out):
    """A subnet."""

    id: str
    name: str
    cidr: str
    gateway_ip: str
    network_id: str = ""
    phase: str = ""


class NetworkOut(Out):
    """A network."""

    id: str
    name: str
    tenancy_id: str
    phase: str
    phase_reason: str
    generation: int
    observed_generation: int
    subnets: list[SubnetOut]
    status: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class PortCreate(Strict):
    """Reserve an address on a network, to plug into a server later."""

    network: Ref
    name: Name | None = None
    vnic_type: VnicType = "normal"


class PortOut(Out):
    """A port."""

    id: str
    name: str
    network_id: str
    subnet_id: str
    server_id: str | None
    mac: str
    ip_address: str
    vnic_type: str
    device_index: int
    phase: str
    status: dict[str, Any]


# -- servers --------------------------------------------------------------------------


class ServerNic(Strict):
    """One interface of a new server: a network (a port is made) or an existing port."""

    network: Ref | None = None
    port: Ref | None = None
    vnic_type: VnicType = "normal"

    @model_validator(mode="after")
    def _one_of(self) -> ServerNic:
        if (self.network is None) == (self.port is None):
            raise ValueError("give a network or a port for each interface (exactly one)")
        return self


class ServerCreate(Strict):
    """Create a server."""

    name: Name
    flavor: Annotated[str, Field(min_length=1, max_length=63)]
    networks: Annotated[list[ServerNic], Field(max_length=8)] = []
    lease: Ref | None = None
    reservation: Name | None = None
    preemptible: StrictBool = False
    image: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,62}$")] = "base"
    """The image it boots from (``ecliptic image list``)."""
    security_groups: Annotated[list[Name], Field(min_length=1, max_length=16)] | None = None
    """Security groups of its ports (``default`` when not given)."""

    @model_validator(mode="after")
    def _consistent(self) -> ServerCreate:
        if self.reservation is not None and self.lease is None:
            raise ValueError("a reservation is part of a lease: give the lease too (--lease NAME)")
        return self


class ServerOut(Out):
    """A server."""

    id: str
    name: str
    tenancy_id: str
    flavor: str
    kind: str
    host: str | None
    vcpus: int
    memory_mb: int
    gpu_model: str | None
    gpus: int
    image: str = "base"
    security_groups: list[str] = []
    lease_id: str | None = None
    reservation: str | None = None
    preemptible: bool = False
    phase: str
    phase_reason: str
    generation: int
    observed_generation: int
    addresses: dict[str, list[str]]
    ports: list[PortOut]
    status: dict[str, Any]
    created_at: datetime
    updated_at: datetime


class SecurityGroupCreate(Strict):
    """Create a security group (it lets nothing in or out until it has rules)."""

    name: Name
    description: Annotated[str, Field(max_length=500)] = ""


class SecurityGroupRuleCreate(Strict):
    """A rule: what a group's ports let in (``ingress``) or send (``egress``)."""

    direction: Literal["ingress", "egress"]
    protocol: Literal["any", "tcp", "udp", "icmp"] = "any"
    port_min: Annotated[int, Field(ge=1, le=65535)] | None = None
    """First destination port (tcp, udp); alone: that one port."""
    port_max: Annotated[int, Field(ge=1, le=65535)] | None = None
    remote_cidr: Annotated[str, Field(max_length=43)] | None = None
    """Peer addresses (source of ingress, destination of egress); default everywhere."""
    remote_group: Ref | None = None
    """Or: the members of this group of the tenancy (name or id)."""
    description: Annotated[str, Field(max_length=500)] = ""


class SecurityGroupRuleOut(Out):
    """A rule of a security group."""

    id: str
    direction: str
    protocol: str
    port_min: int | None
    port_max: int | None
    remote_cidr: str | None
    remote_group: str | None
    description: str


class SecurityGroupOut(Out):
    """A security group and its rules."""

    id: str
    name: str
    description: str
    rules: list[SecurityGroupRuleOut]
    created_at: datetime


class ServerSecurityGroups(Strict):
    """The security groups of a server's ports."""

    security_groups: Annotated[list[Name], Field(min_length=1, max_length=16)]


class ImageOut(Out):
    """An image servers boot from."""

    name: str
    version: str
    description: str
    status: str
    """``built``, ``not built``, ``building``, ``outdated`` (rebuilt on next use) or
    ``failed`` (``detail`` has the end of its log)."""
    parent: str | None = None
    hash: str = ""
    size_bytes: int = 0
    built_at: str | None = None
    build_seconds: float | None = None
    detail: str = ""
    source: str = ""


class ImageLog(Out):
    """A build log."""

    name: str
    log: str


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next`` as ``marker`` to get the following one."""

    items: list[T]
    next: str | None = None


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("a command argument cannot contain a NUL character (\\0)")
    return value


class ExecRequest(Strict):
    """Run one command inside a server and wait for it."""

    argv: Annotated[
        list[Annotated[str, Field(max_length=65536), AfterValidator(_no_nul)]],
        Field(min_length=1, max_length=1024),
    ]
    timeout: Annotated[float, Field(gt=0, le=3600)] = 60.0
    stdin: Annotated[str, Field(max_length=1024 * 1024)] | None = None


class ExecResult(BaseModel):
    """The outcome of a command."""

    exit_code: int
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool
    oom_killed: bool = False
    """Killed by the kernel for exceeding the server's memory limit (``memory_limit_mb``)."""
    memory_limit_mb: int | None = None


class ConsoleLog(BaseModel):
    """The tail of a server's console log."""

    server: str
    log: str
    next: int = 0
    """Pass as ``after`` to get what the log gains from here on (``log --follow``)."""


class DeletedServerOut(Out):
    """A server deleted within the retention period, and why it went."""

    id: str
    name: str
    flavor: str
    host: str | None
    lease_id: str | None
    preemptible: bool
    created_at: datetime
    deleted_at: datetime
    reason: str


class EventOut(Out):
    """A phase change and why it happened."""

    object_kind: str
    object_id: str
    from_phase: str
    to_phase: str
    reason: str
    at: datetime


class BackendResource(BaseModel):
    """A resource the backend really holds."""

    kind: str
    name: str
    object_id: str | None
    detail: str
    known: bool


class BackendStatus(BaseModel):
    """What the backend holds, and what of it belongs to no known object."""

    backend: str
    resources: list[BackendResource]
    orphans: int


class GcResult(BaseModel):
    """What garbage collection removed."""

    removed: list[BackendResource]


# -- leases, availability, credits ----------------------------------------------------


class AllocationOut(BaseModel):
    """Where part of a reservation sits."""

    host: str
    slots: int


class ReservationOut(BaseModel):
    """One reservation of a lease."""

    name: str
    kind: str
    request: dict[str, Any]
    allocations: list[AllocationOut]


class LeaseOut(BaseModel):
    """A lease."""

    id: str
    name: str
    tenancy_id: str
    start: datetime
    end: datetime
    before_end_at: datetime | None
    grace_s: int
    phase: str
    phase_reason: str
    reservations: list[ReservationOut]
    cost: dict[str, str]
    servers: int = 0
    created_at: datetime


class FindRequest(Strict):
    """When is the earliest this fits? ``duration`` long, not before ``not_before``."""

    reservations: Annotated[list[ReservationIn], Field(min_length=1, max_length=16)]
    duration: Duration
    not_before: When = "now"
    horizon: Duration = "90d"
    alternatives: Annotated[int, Field(ge=0, le=10)] = 3
    grace: Duration = Field(
        default="10m",
        description="the lease's grace period: its capacity is held that long after its end",
    )


class FitRequest(Strict):
    """Would this lease fit in exactly this window, and where?"""

    reservations: Annotated[list[ReservationIn], Field(min_length=1, max_length=16)]
    start: When = "now"
    end: datetime | None = None
    duration: Duration | None = None
    grace: Duration = Field(
        default="10m",
        description="the lease's grace period: its capacity is held that long after its end",
    )


class FitOut(BaseModel):
    """The answer of a fit check."""

    fits: bool
    reason: str = ""
    start: datetime
    end: datetime
    hosts: dict[str, list[str]] = {}
    cost: dict[str, str] = {}
    earliest_start: datetime | None = None


class WindowOut(BaseModel):
    """A window where the request fits, and where it would go."""

    start: datetime
    end: datetime
    hosts: dict[str, list[str]]
    cost: dict[str, str]


class CalendarBucketOut(BaseModel):
    """Capacity of one class in one bucket."""

    start: datetime
    total: int
    reserved: int
    free: int


class CalendarRowOut(BaseModel):
    """One resource class over time."""

    resource: str
    buckets: list[CalendarBucketOut]


class CreditAllocate(Strict):
    """Grant resource-hours to a tenancy for a window."""

    tenancy: Ref
    name: Name
    hours: Annotated[
        dict[
            Annotated[str, Field(pattern=r"^(vcpu|(host|gpu|slice):[A-Za-z0-9._-]{1,60})$")],
            Annotated[float, Field(gt=0, le=1e9)],
        ],
        Field(min_length=1, max_length=32),
    ]
    start: When = "now"
    end: datetime


class BalanceOut(BaseModel):
    """An allocation and what is left of it."""

    allocation_id: str
    allocation: str
    resource_class: str
    description: str
    granted: str
    charged: str
    refunded: str
    remaining: str
    start: datetime
    end: datetime


class LedgerOut(BaseModel):
    """One movement of credit."""

    id: int
    at: datetime
    kind: str
    resource_class: str
    hours: str
    allocation_id: str
    allocation: str
    lease_id: str | None
    server_id: str | None = None
    """The on-demand server whose metered use this is."""
    note: str


# -- tunnel gateway -------------------------------------------------------------------


def _liveness_path(value: str | None) -> str | None:
    if value is not None and (not value.startswith("/") or any(c in value for c in " \r\n\t")):
        raise ValueError("a path on the service starting with '/', without spaces, e.g. '/health'")
    return value


TunnelProtocol = Literal["http", "https", "tcp"]
LivenessPath = Annotated[str | None, Field(max_length=1024), AfterValidator(_liveness_path)]
UserList = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=63)]], Field(max_length=1000)
]


class ServiceCreate(Strict):
    """Reserve a subdomain for a service; the answer carries its first association token."""

    name: Name
    public: StrictBool = False
    protocol: TunnelProtocol = "http"
    liveness_path: LivenessPath = None
    liveness_period_s: Annotated[int, Field(ge=1, le=3600)] = 10
    read_timeout_s: Annotated[int, Field(ge=1, le=86400)] = 3600
    access: UserList | None = Field(
        default=None, description="Users who may reach it when signed in; default: you."
    )
    token_ttl_minutes: Annotated[int, Field(ge=1, le=60 * 24 * 30)] | None = None


class ServiceUpdate(Strict):
    """Change who may reach a service."""

    public: StrictBool | None = None
    access: UserList | None = None


class TunnelTokenCreate(Strict):
    """Another association token for a service."""

    ttl_minutes: Annotated[int, Field(ge=1, le=60 * 24 * 30)] | None = None


class TunnelTokenOut(Out):
    """A single-use association token: shown once."""

    token: str
    expires_at: datetime


class TunnelKeyOut(Out):
    """A key bound to a service."""

    id: str
    fingerprint: str
    created_at: datetime
    revoked_at: datetime | None


class TunnelOut(Out):
    """A live tunnel connection."""

    id: str
    gateway_id: str
    service_id: str
    fingerprint: str
    client: str
    healthy: bool
    connected_at: datetime


class ServiceOut(Out):
    """A service reachable through the gateway."""

    id: str
    name: str
    subdomain: str
    host: str
    url: str
    public: bool
    protocol: str
    liveness_path: str | None
    liveness_period_s: int
    read_timeout_s: int
    created_at: datetime
    access: list[str] = []
    keys: list[TunnelKeyOut] = []
    tunnels: list[TunnelOut] = []
    token: TunnelTokenOut | None = None


class AssociateRequest(Strict):
    """Exchange a single-use token to bind an SSH public key to the token's service."""

    token: Annotated[str, Field(min_length=1, max_length=512)]
    public_key: Annotated[str, Field(min_length=1, max_length=16384)]
    protocol: TunnelProtocol | None = None
    liveness_path: LivenessPath = None
    liveness_period_s: Annotated[int, Field(ge=1, le=3600)] | None = None
    read_timeout_s: Annotated[int, Field(ge=1, le=86400)] | None = None


class GatewaySsh(Out):
    """Where the tunnel's SSH connection goes."""

    host: str
    port: int
    user: str
    host_key: str


class AssociateOut(Out):
    """What a tunnel client needs to connect."""

    service_id: str
    subdomain: str
    host: str
    url: str
    ssh: GatewaySsh


class SshKeyCreate(Strict):
    """Register one of your SSH public keys (for the gateway's jump host)."""

    name: Name
    public_key: Annotated[str, Field(min_length=1, max_length=16384)]


class SshKeyOut(Out):
    """One of your SSH keys."""

    id: str
    name: str
    fingerprint: str
    public_key: str
    created_at: datetime


# --- platforms ----------------------------------------------------------------------------

PlatformName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")]
"""A platform's name: its servers are ``<name>-<role><n>`` (host names)."""
ParamName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
ParamValue = StrictBool | StrictInt | StrictFloat | Annotated[str, Field(max_length=4096)]


class PlatformCreate(Strict):
    """Create a platform from a platform type."""

    name: PlatformName
    type: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{0,30}$")]
    parameters: Annotated[dict[ParamName, ParamValue], Field(max_length=64)] = {}
    lease: Ref | None = None
    """The lease it runs in (the type's lease parameter)."""
    access: Annotated[list[Name], Field(max_length=200)] | None = None
    """Members who may use it (you alone when not given)."""
    preemptible: StrictBool = False
    """On preemptible capacity, where the operator allows it (not with a lease): it is
    deleted when a lease needs the room, after its servers' minimum lifetime."""


class PlatformPatch(Strict):
    """Change a platform's mutable parameters."""

    parameters: Annotated[dict[ParamName, ParamValue], Field(min_length=1, max_length=64)]


class PlatformAccessSet(Strict):
    """Who may use a platform: members of its tenancy."""

    users: Annotated[list[Name], Field(max_length=200)]


class PlatformServerOut(BaseModel):
    """One server of a platform."""

    name: str
    role: str
    index: int
    phase: str
    address: str
    fabric_address: str = ""


class PlatformServiceOut(BaseModel):
    """One service of a platform, through the gateway."""

    name: str
    label: str
    role: str
    protocol: str
    public: bool
    url: str | None
    subdomain: str | None
    healthy: bool | None
    jump_port: int | None = None
    """For TCP services: the gateway's jump host port (``ssh -J you@gateway:PORT ...``)."""


class PlatformOut(BaseModel):
    """A platform."""

    id: str
    name: str
    type: str
    type_version: str
    lease_id: str | None
    phase: str
    phase_reason: str
    parameters: dict[str, Any]
    servers: list[PlatformServerOut]
    services: list[PlatformServiceOut]
    access: list[str]
    usage: str
    failed: dict[str, Any] | None = None
    preemptible: bool = False
    created_by: str | None
    created_at: datetime
    updated_at: datetime


class PlannedServerOut(BaseModel):
    """A server a platform create would make."""

    name: str
    role: str
    flavor: str
    image: str
    host: str
    vcpus: int
    memory_mb: int
    gpus: int
    hourly: dict[str, str]
    """Credits per hour by resource class, when it is charged on demand (metered)."""


class PlatformPlanOut(BaseModel):
    """What creating a platform would do: it fits, here is what it takes and costs."""

    name: str
    type: str
    lease: str | None
    parameters: dict[str, Any]
    servers: list[PlannedServerOut]
    vcpus: int
    memory_mb: int
    gpus: int
    hourly: dict[str, str]
    """Credits per hour by resource class for its on-demand metered servers (inside a
    lease: nothing more, the lease is paid)."""


class PlatformTypeOut(BaseModel):
    """A platform type of the catalogue."""

    name: str
    label: str
    description: str
    logo: str
    version: str
    source: str
    parameters: list[dict[str, Any]]
    roles: list[dict[str, Any]]
    services: list[dict[str, Any]]
    steps: list[str]
    usage: str


class TypeProblem(BaseModel):
    """One error in a platform type file."""

    line: int
    column: int
    where: str
    message: str


class PlatformTypeCheck(BaseModel):
    """The result of validating a platform type."""

    valid: bool
    name: str | None = None
    problems: list[TypeProblem] = []


class PlatformTypeText(Strict):
    """A platform type file's text, to validate."""

    text: Annotated[str, Field(max_length=1_000_000)]


# -- benchmarks -----------------------------------------------------------------------


class BenchmarkCreate(BenchmarkSpec):
    """Run one benchmark: a spec (``kind``, ``network``, where, the kind's parameters in a
    section named after it) and an optional name."""

    name: Name | None = None


class BenchmarkOut(Out):
    """A benchmark run: what was asked, where it is, and what it measured."""

    id: str
    name: str
    kind: str
    phase: str
    phase_reason: str
    spec: dict[str, Any]
    set: str | None = None
    permutation: dict[str, Any]
    repetition: int
    result: dict[str, Any] | None
    """The figures (``headline``, ``metrics``, ``units``, ``series``…), once it succeeded."""
    summary: str
    environment: dict[str, Any]
    """Kernel, tool versions, and the servers (host, interface, address) it measured."""
    servers: list[str]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    """From the start of the tool's run to its end."""


class SetOut(Out):
    """A benchmark set and how far its runs got."""

    id: str
    name: str
    phase: str
    phase_reason: str
    spec: dict[str, Any]
    runs: int
    counts: dict[str, int]
    """Runs per phase."""
    created_at: datetime
    finished_at: datetime | None


class KindOut(Out):
    """A kind of benchmark and the parameters it takes (JSON schema)."""

    name: str
    title: str
    networks: list[str]
    needs_platform: bool
    parameters: dict[str, Any]


class SpreadOut(Out):
    """A figure over repetitions."""

    median: float
    min: float
    max: float
    n: int
    spread_pct: float | None
    """(max - min) / median in percent (None when the median is 0)."""


class AggregateOut(Out):
    """The repetitions of one permutation as spreads."""

    kind: str
    headline: str
    metrics: dict[str, SpreadOut]
    units: dict[str, str]
    higher_is_better: dict[str, bool]
    series_x: str | None
    series: list[dict[str, SpreadOut]]
    summary: str


class DifferenceOut(Out):
    """One figure of two sides compared (b against a)."""

    metric: str
    unit: str
    x: float | None
    a: SpreadOut
    b: SpreadOut
    ratio: float | None
    change_pct: float | None
    beyond_spread: bool
    """True when the ranges of the runs do not overlap: a real difference, not noise."""
    better: Literal["a", "b"] | None


class GroupOut(Out):
    """The runs of one permutation: their figures aggregated, compared with the baseline."""

    label: str
    kind: str
    permutation: dict[str, Any]
    runs: list[str]
    failed: list[str]
    aggregate: AggregateOut | None
    against_baseline: list[DifferenceOut]
    """Against the first permutation of the same kind (or ``?baseline=``); empty for it."""


class ResultsOut(Out):
    """A set's (or a run's) figures per permutation, and the plots there are."""

    name: str
    baseline: dict[str, str]
    """The label each kind is compared against."""
    groups: list[GroupOut]
    plots: list[str]
    """Names of the plots (``/plots/{name}.svg`` or ``.png``)."""


class PairOut(Out):
    """Two groups compared."""

    a: str
    b: str
    kind: str
    differences: list[DifferenceOut]


class CompareOut(Out):
    """What ``compare`` found: b against a, figure by figure."""

    a: str
    b: str
    pairs: list[PairOut]
