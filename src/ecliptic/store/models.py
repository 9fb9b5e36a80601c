"""SQLAlchemy models: the whole persistent state of an Ecliptic instance.

Objects that live outside the database (networks, subnets, ports, servers) carry the
reconciliation fields of ``Reconciled``: what was asked (``spec``), what was last seen
(``status``), where they stand (``phase`` from ``ecliptic.phases``) and a ``generation``
bumped on every change of spec.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.sql.expression import false

from ecliptic.store.types import JsonDoc, UTCDateTime, new_id, utcnow

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (Alembic needs them)."""

    metadata = MetaData(naming_convention=NAMING)


class Timestamped:
    """Created and updated times."""

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Reconciled(Timestamped):
    """Spec, status, phase and generation of an object that lives outside the database."""

    spec: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    status: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    phase: Mapped[str] = mapped_column(String(16), index=True)
    phase_reason: Mapped[str] = mapped_column(Text, default="")
    generation: Mapped[int] = mapped_column(Integer, default=1)
    observed_generation: Mapped[int] = mapped_column(Integer, default=0)


class Meta(Base):
    """Instance-wide key/value facts (the instance id, for one)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class Tenancy(Timestamped, Base):
    """A project: the unit of ownership, membership and (later) credit."""

    __tablename__ = "tenancy"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")


class User(Timestamped, Base):
    """A person (or robot) who signs in."""

    __tablename__ = "user_account"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    email: Mapped[str] = mapped_column(String(254), default="")
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class Membership(Timestamped, Base):
    """A user's role in a tenancy: ``member`` or ``admin`` (tenancy admin)."""

    __tablename__ = "membership"
    __table_args__ = (UniqueConstraint("tenancy_id", "user_id"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenancy_id: Mapped[str] = mapped_column(ForeignKey("tenancy.id", ondelete="CASCADE"))
    user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    role: Mapped[str] = mapped_column(String(16), default="member")
    origin: Mapped[str] = mapped_column(String(16), default="manual", server_default="manual")
    """Who made it: ``manual`` (an administrator, or the first start) or ``oidc`` (a group of
    the user's at the OpenID Connect provider, so sign-in may change or remove it)."""
    tenancy: Mapped[Tenancy] = relationship(lazy="joined")
    user: Mapped[User] = relationship(lazy="joined")


class OidcLink(Timestamped, Base):
    """A user who signs in with an OpenID Connect provider: which account there is theirs."""

    __tablename__ = "oidc_link"
    __table_args__ = (UniqueConstraint("issuer", "subject"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    issuer: Mapped[str] = mapped_column(String(255))
    """The provider's issuer URL, as configured."""
    subject: Mapped[str] = mapped_column(String(255))
    """The ``sub`` claim: the provider's stable id of the account."""
    granted_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    """Whether the user is an administrator because of a ``*:admin`` group (then sign-in
    takes it away when the group no longer applies; an administrator made by hand stays)."""


class ApiToken(Timestamped, Base):
    """A bearer token; only its SHA-256 is kept."""

    __tablename__ = "api_token"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    user: Mapped[User] = relationship(lazy="joined")


class Host(Timestamped, Base):
    """A host of the inventory that servers are placed on."""

    __tablename__ = "host"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(BigInteger)
    disk_gb: Mapped[int] = mapped_column(Integer)
    gpus: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc, default=list)
    nics: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc, default=list)
    properties: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="up")
    state_reason: Mapped[str] = mapped_column(Text, default="", server_default="")
    """Why the host is in its state (Ironic's maintenance reason, its last error...)."""
    source: Mapped[str] = mapped_column(String(16), default="inventory", server_default="inventory")
    """Where the host comes from: ``inventory`` (the YAML file) or ``ironic`` (a node)."""
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    """The Ironic node's UUID when ``source`` is ``ironic``."""
    pool: Mapped[HostRole | None] = relationship(lazy="joined", uselist=False, viewonly=True)
    """Its place in the bare-metal-or-hypervisor pool, when it is in that pool."""


class HostRole(Reconciled, Base):
    """A host of the bare-metal-or-hypervisor pool: what it serves now, and its conversion.

    ``phase`` is one of ``HostRolePhase``: BAREMETAL (offered for bare-metal servers and
    host leases), TO_HYPERVISOR (Ironic deploys the hypervisor image), HYPERVISOR (VMs are
    scheduled onto it), DRAINING (no new VMs; its servers are moved away), TO_BAREMETAL
    (Ironic undeploys and cleans it), ERROR (the reason says why). ``spec`` holds who asked
    for the current conversion and why; ``status`` what Ironic did (the instance UUID of the
    hypervisor deployment, when each step started, how long builds took).
    """

    __tablename__ = "host_role"
    id: Mapped[str] = mapped_column(ForeignKey("host.id", ondelete="CASCADE"), primary_key=True)
    hold: Mapped[str] = mapped_column(String(16), default="", server_default="")
    """An operator's choice that the policy keeps: ``hypervisor``, ``baremetal`` or empty."""
    idle_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    """Since when a hypervisor has held no server (None: it holds some, or is not one)."""
    host: Mapped[Host] = relationship(lazy="joined", foreign_keys=[id])


class Flavor(Timestamped, Base):
    """A server size: vCPUs, memory, disk, GPUs, and whether it takes a whole host."""

    __tablename__ = "flavor"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(BigInteger)
    disk_gb: Mapped[int] = mapped_column(Integer, default=0)
    gpu_model: Mapped[str | None] = mapped_column(String(63), nullable=True)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(16), default="vm")
    reservation_only: Mapped[bool] = mapped_column(Boolean, default=False)
    """Servers of this flavor run inside a lease (or preemptible), never on demand."""


class TenancyQuota(Base):
    """Limits on a tenancy's on-demand servers; a None limit is the site's default."""

    __tablename__ = "tenancy_quota"
    tenancy_id: Mapped[str] = mapped_column(
        ForeignKey("tenancy.id", ondelete="CASCADE"), primary_key=True
    )
    servers: Mapped[int | None] = mapped_column(Integer, nullable=True)
    vcpus: Mapped[int | None] = mapped_column(Integer, nullable=True)
    memory_mb: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    gpus: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Network(Reconciled, Base):
    """A layer-2 network of a tenancy."""

    __tablename__ = "network"
    __table_args__ = (UniqueConstraint("tenancy_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenancy_id: Mapped[str] = mapped_column(ForeignKey("tenancy.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    platform_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    """The platform that made it (its own network), if one did."""
    subnets: Mapped[list[Subnet]] = relationship(
        back_populates="network", lazy="selectin", order_by="Subnet.created_at"
    )


class Subnet(Reconciled, Base):
    """An IPv4 range on a network; addresses are handed out from it to ports."""

    __tablename__ = "subnet"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenancy_id: Mapped[str] = mapped_column(ForeignKey("tenancy.id", ondelete="CASCADE"))
    network_id: Mapped[str] = mapped_column(
        ForeignKey("network.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    cidr: Mapped[str] = mapped_column(String(43), unique=True)
    gateway_ip: Mapped[str] = mapped_column(String(39))
    network: Mapped[Network] = relationship(back_populates="subnets")


class Port(Reconciled, Base):
    """A network interface: an address and a MAC on a subnet, plugged into at most one server."""

    __tablename__ = "port"
    __table_args__ = (
        UniqueConstraint("subnet_id", "ip_address"),
        Index("ix_port_server_index", "server_id", "device_index"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenancy_id: Mapped[str] = mapped_column(
        ForeignKey("tenancy.id", ondelete="CASCADE"), index=True
    )
    network_id: Mapped[str] = mapped_column(ForeignKey("network.id"), index=True)
    subnet_id: Mapped[str] = mapped_column(ForeignKey("subnet.id"))
    server_id: Mapped[str | None] = mapped_column(
        ForeignKey("server.id", ondelete="SET NULL"), nullable=True
    )
    name: Mapped[str] = mapped_column(String(63), default="")
    mac: Mapped[str] = mapped_column(String(17), unique=True)
    ip_address: Mapped[str] = mapped_column(String(39))
    vnic_type: Mapped[str] = mapped_column(String(16), default="normal")
    device_index: Mapped[int] = mapped_column(Integer, default=0)
    network: Mapped[Network] = relationship(lazy="joined")
    subnet: Mapped[Subnet] = relationship(lazy="joined")


class SecurityGroup(Timestamped, Base):
    """A tenancy's named set of firewall rules for ports (Neutron's security group).

    Ports name their groups in ``port.spec["security_groups"]`` (group ids)."""

    __tablename__ = "security_group"
    __table_args__ = (UniqueConstraint("tenancy_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenancy_id: Mapped[str] = mapped_column(
        ForeignKey("tenancy.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(Text, default="")
    rules: Mapped[list[SecurityGroupRule]] = relationship(
        lazy="selectin",
        order_by="SecurityGroupRule.created_at",
        foreign_keys="SecurityGroupRule.group_id",
        cascade="all, delete-orphan",
    )


class SecurityGroupRule(Base):
    """One rule: traffic a group's ports let in (``ingress``) or out (``egress``)."""

    __tablename__ = "security_group_rule"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    group_id: Mapped[str] = mapped_column(
        ForeignKey("security_group.id", ondelete="CASCADE"), index=True
    )
    direction: Mapped[str] = mapped_column(String(8))
    protocol: Mapped[str] = mapped_column(String(8), default="any")
    port_min: Mapped[int | None] = mapped_column(Integer, nullable=True)
    port_max: Mapped[int | None] = mapped_column(Integer, nullable=True)
    remote_cidr: Mapped[str | None] = mapped_column(String(43), nullable=True)
    remote_group_id: Mapped[str | None] = mapped_column(
        ForeignKey("security_group.id", ondelete="CASCADE"), nullable=True, index=True
    )
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Server(Reconciled, Base):
    """A server (VM or bare-metal) of a tenancy, placed on a host."""

    __tablename__ = "server"
    __table_args__ = (
        UniqueConstraint("tenancy_id", "name"),
        Index("ix_server_tenancy_created", "tenancy_id", "created_at", "id"),
    )
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenancy_id: Mapped[str] = mapped_column(ForeignKey("tenancy.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    flavor_id: Mapped[str] = mapped_column(ForeignKey("flavor.id"))
    host_id: Mapped[str | None] = mapped_column(ForeignKey("host.id"), nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(16), default="vm")
    image: Mapped[str] = mapped_column(
        String(63), default="base", server_default="base", index=True
    )
    """The image the server boots from (a name, as a Glance image's would be)."""
    vcpus: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(BigInteger)
    disk_gb: Mapped[int] = mapped_column(Integer, default=0)
    gpu_model: Mapped[str | None] = mapped_column(String(63), nullable=True)
    gpus: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    lease_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    reservation: Mapped[str | None] = mapped_column(String(63), nullable=True)
    preemptible: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    metered_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, index=True)
    """On-demand use charged by the hour: paid up to here (None: not metered)."""
    platform_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    """The platform it is part of (its role and index are in ``spec['platform']``)."""
    flavor: Mapped[Flavor] = relationship(lazy="joined")
    host: Mapped[Host | None] = relationship(lazy="joined")
    ports: Mapped[list[Port]] = relationship(
        lazy="selectin", order_by="Port.device_index", foreign_keys=[Port.server_id]
    )


class DeletedServer(Base):
    """A deleted server's tombstone: what it was and why it went, kept for its tenancy a while
    (its events stay readable through it; ``ecliptic server list --deleted``)."""

    __tablename__ = "deleted_server"
    __table_args__ = (Index("ix_deleted_server_tenancy", "tenancy_id", "deleted_at"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenancy_id: Mapped[str] = mapped_column(ForeignKey("tenancy.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    flavor: Mapped[str] = mapped_column(String(63))
    host: Mapped[str | None] = mapped_column(String(63), nullable=True)
    lease_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    preemptible: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    reason: Mapped[str] = mapped_column(Text, default="")


class WorkItem(Base):
    """One pending reconcile of one object: deduplicated, claimable, retried with backoff."""

    __tablename__ = "work_item"
    __table_args__ = (UniqueConstraint("kind", "object_id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    seq: Mapped[int] = mapped_column(Integer, default=1)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    claimed_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Event(Base):
    """Why an object moved from one phase to another: the audit trail users read."""

    __tablename__ = "event"
    __table_args__ = (Index("ix_event_object", "object_kind", "object_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenancy_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    object_kind: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(64))
    from_phase: Mapped[str] = mapped_column(String(16), default="")
    to_phase: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Lease(Timestamped, Base):
    """A booking of capacity for a time window, holding one or more reservations."""

    __tablename__ = "lease"
    __table_args__ = (UniqueConstraint("tenancy_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenancy_id: Mapped[str] = mapped_column(ForeignKey("tenancy.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    start_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    before_end_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    grace_s: Mapped[int] = mapped_column(Integer, default=600)
    phase: Mapped[str] = mapped_column(String(16), index=True)
    phase_reason: Mapped[str] = mapped_column(Text, default="")
    generation: Mapped[int] = mapped_column(Integer, default=1)
    spec: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    status: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    allocations: Mapped[list[LeaseAllocation]] = relationship(
        lazy="selectin", order_by="LeaseAllocation.id", cascade="all, delete-orphan"
    )


class LeaseAllocation(Base):
    """Part of a lease's reservation placed on one host: what the engine is rebuilt from."""

    __tablename__ = "lease_allocation"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    lease_id: Mapped[str] = mapped_column(ForeignKey("lease.id", ondelete="CASCADE"), index=True)
    reservation: Mapped[str] = mapped_column(String(63))
    host: Mapped[str] = mapped_column(String(63), index=True)
    amount: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    slots: Mapped[int] = mapped_column(Integer, default=1)


class CreditAccount(Timestamped, Base):
    """A tenancy's credit account."""

    __tablename__ = "credit_account"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenancy_id: Mapped[str] = mapped_column(
        ForeignKey("tenancy.id", ondelete="CASCADE"), unique=True
    )


class CreditAllocation(Timestamped, Base):
    """Resource-hours of one resource class granted to an account for a window."""

    __tablename__ = "credit_allocation"
    __table_args__ = (UniqueConstraint("account_id", "name", "resource_class"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("credit_account.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    resource_class: Mapped[str] = mapped_column(String(127))
    hours: Mapped[Decimal] = mapped_column(Numeric(16, 3))
    start_at: Mapped[datetime] = mapped_column(UTCDateTime)
    end_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LedgerEntry(Base):
    """One movement of credit: a grant, a charge or a refund. Balances are sums of these."""

    __tablename__ = "ledger_entry"
    __table_args__ = (Index("ix_ledger_allocation", "allocation_id", "id"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("credit_account.id", ondelete="CASCADE"), index=True
    )
    allocation_id: Mapped[str] = mapped_column(
        ForeignKey("credit_allocation.id", ondelete="CASCADE")
    )
    lease_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    server_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    """The on-demand server whose metered use this charge (or refund) is."""
    kind: Mapped[str] = mapped_column(String(16))
    resource_class: Mapped[str] = mapped_column(String(127))
    hours: Mapped[Decimal] = mapped_column(Numeric(16, 3))
    note: Mapped[str] = mapped_column(Text, default="")
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class UserSshKey(Timestamped, Base):
    """A user's SSH public key: how they sign in to the gateway's jump host."""

    __tablename__ = "user_ssh_key"
    __table_args__ = (UniqueConstraint("user_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(63))
    public_key: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)


class Service(Timestamped, Base):
    """Something reachable through the tunnel gateway at ``<subdomain>.<base domain>``."""

    __tablename__ = "tunnel_service"
    __table_args__ = (UniqueConstraint("tenancy_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenancy_id: Mapped[str] = mapped_column(ForeignKey("tenancy.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    subdomain: Mapped[str] = mapped_column(String(63), unique=True)
    public: Mapped[bool] = mapped_column(Boolean, default=False)
    protocol: Mapped[str] = mapped_column(String(8), default="http")
    liveness_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    liveness_period_s: Mapped[int] = mapped_column(Integer, default=10)
    read_timeout_s: Mapped[int] = mapped_column(Integer, default=3600)
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    platform_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    """The platform that exposes it; its access list follows the platform's."""
    access: Mapped[list[ServiceAccess]] = relationship(
        lazy="selectin", cascade="all, delete-orphan"
    )


class ServiceAccess(Base):
    """A user allowed to reach a signed-in service."""

    __tablename__ = "tunnel_service_access"
    service_id: Mapped[str] = mapped_column(
        ForeignKey("tunnel_service.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class TunnelToken(Base):
    """A single-use association token; only its SHA-256 is kept."""

    __tablename__ = "tunnel_token"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    service_id: Mapped[str] = mapped_column(
        ForeignKey("tunnel_service.id", ondelete="CASCADE"), index=True
    )
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TunnelKey(Timestamped, Base):
    """An SSH public key bound to a service: connections with it serve that service."""

    __tablename__ = "tunnel_key"
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    service_id: Mapped[str] = mapped_column(
        ForeignKey("tunnel_service.id", ondelete="CASCADE"), index=True
    )
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    public_key: Mapped[str] = mapped_column(Text)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class TunnelEndpoint(Base):
    """A live tunnel connection as a gateway replica last reported it."""

    __tablename__ = "tunnel_endpoint"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    gateway_id: Mapped[str] = mapped_column(String(32), index=True)
    service_id: Mapped[str] = mapped_column(
        ForeignKey("tunnel_service.id", ondelete="CASCADE"), index=True
    )
    fingerprint: Mapped[str] = mapped_column(String(64))
    client: Mapped[str] = mapped_column(String(64))
    port: Mapped[int] = mapped_column(Integer)
    healthy: Mapped[bool] = mapped_column(Boolean, default=True)
    connected_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class GatewayCode(Base):
    """A single-use sign-in code handed to a service's subdomain after sign-in."""

    __tablename__ = "gateway_code"
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    host: Mapped[str] = mapped_column(String(253))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    portal_token_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """The portal sign-in it came from: the service session it becomes ends with it."""
    state_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """Hash of the state cookie of the browser that started sign-in on the service's host:
    only that browser can redeem the code (no sign-in CSRF)."""


class GatewaySession(Base):
    """A browser signed in to one service's subdomain: its cookie names this row (signed),
    so signing out, of the service or of the portal, ends it at once."""

    __tablename__ = "gateway_session"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"))
    host: Mapped[str] = mapped_column(String(253))
    portal_token_id: Mapped[str | None] = mapped_column(
        ForeignKey("api_token.id", ondelete="CASCADE"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)


class GatewayReplica(Base):
    """A running gateway replica: where its peers forward requests, and its last heartbeat."""

    __tablename__ = "gateway_replica"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    peer_address: Mapped[str] = mapped_column(String(300))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


class BookingLog(Base):
    """One change of the reservation engine, numbered in commit order.

    Written in the transaction that makes the change, so that other processes sharing the
    database can follow bookings incrementally instead of rebuilding their engine.
    """

    __tablename__ = "booking_log"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    """Position in the log: the value of ``meta.booking_seq`` once this change committed."""
    kind: Mapped[str] = mapped_column(String(16))
    """``booking`` (a lease or an on-demand server), ``preemptible``, ``host`` or ``reset``."""
    key: Mapped[str] = mapped_column(String(300))
    """The lease id, ``server:<id>``, the preemptible server's id, or the host name."""
    action: Mapped[str] = mapped_column(String(16))
    """``booked`` (``data`` holds the new state) or ``released``."""
    data: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, nullable=True)
    """The placement, preemptible server or host as the engine now holds it."""
    origin: Mapped[str] = mapped_column(String(100))
    """The process that wrote it (``host:pid``)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Platform(Reconciled, Base):
    """An instance of a platform type in a tenancy: its servers, network, steps and services.

    ``spec`` holds the type as it was when the platform was made (``type``: later changes to
    the catalogue do not change running platforms) and the parameters (``parameters``);
    ``status`` what the reconciler last did (steps run per server, services, failures).
    """

    __tablename__ = "platform"
    __table_args__ = (UniqueConstraint("tenancy_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenancy_id: Mapped[str] = mapped_column(ForeignKey("tenancy.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    type_name: Mapped[str] = mapped_column(String(63), index=True)
    type_version: Mapped[str] = mapped_column(String(32))
    lease_id: Mapped[str | None] = mapped_column(String(32), nullable=True, index=True)
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    secrets: Mapped[str] = mapped_column(Text, default="")
    """The platform's generated secrets (JSON), sealed with the instance's secret key."""
    access: Mapped[list[PlatformAccess]] = relationship(
        lazy="selectin", cascade="all, delete-orphan"
    )


class PlatformAccess(Base):
    """A member of the tenancy allowed to use a platform (its services and SSH)."""

    __tablename__ = "platform_access"
    platform_id: Mapped[str] = mapped_column(
        ForeignKey("platform.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(
        ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True, index=True
    )


class BenchmarkSet(Timestamped, Base):
    """A benchmark set: a template expanded over permutations and repetitions; its runs
    are :class:`Benchmark` rows (``set_id``), run one after the other."""

    __tablename__ = "benchmark_set"
    __table_args__ = (UniqueConstraint("tenancy_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenancy_id: Mapped[str] = mapped_column(ForeignKey("tenancy.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    spec: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    """The set as submitted (template, permutations, repetitions)."""
    phase: Mapped[str] = mapped_column(String(16), index=True)
    phase_reason: Mapped[str] = mapped_column(Text, default="")
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Benchmark(Reconciled, Base):
    """One benchmark run: its spec, the servers it ran on, the environment, the tool's raw
    output and the figures read from it."""

    __tablename__ = "benchmark"
    __table_args__ = (UniqueConstraint("tenancy_id", "name"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenancy_id: Mapped[str] = mapped_column(ForeignKey("tenancy.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(63))
    kind: Mapped[str] = mapped_column(String(32), index=True)
    set_id: Mapped[str | None] = mapped_column(
        ForeignKey("benchmark_set.id", ondelete="CASCADE"), nullable=True, index=True
    )
    permutation_index: Mapped[int] = mapped_column(Integer, default=0)
    repetition: Mapped[int] = mapped_column(Integer, default=0)
    permutation: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    """What this run changed in its set's template (empty for a lone benchmark)."""
    created_by: Mapped[str | None] = mapped_column(String(32), nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc, nullable=True)
    """The parsed figures (a ``perf.kinds.base.Result``); None until it succeeded."""
    raw_output: Mapped[str] = mapped_column(Text, default="")
    """What the tool printed, as it printed it."""
    environment: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    """Kernel, tool versions, hosts and servers the run measured."""
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
