"""Flavors and hosts: what servers can be, and where they can go."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ecliptic.backends.base import HostRecord
from ecliptic.errors import Conflict, InvalidInput, NotFound
from ecliptic.services.caller import Caller
from ecliptic.store.db import Database
from ecliptic.store.models import Flavor, Host, Server


@dataclass(frozen=True)
class HostUsage:
    """A host's capacity and what its servers hold, for listings."""

    name: str
    """Host name."""
    vcpus: int
    """Total schedulable vCPUs."""
    memory_mb: int
    """Total schedulable memory."""
    disk_gb: int
    """Total local disk."""
    gpus: dict[str, int] = field(default_factory=dict)
    """Total GPUs per model."""
    used_vcpus: int = 0
    """vCPUs held by servers."""
    used_memory_mb: int = 0
    """Memory held by servers."""
    used_disk_gb: int = 0
    """Disk held by servers."""
    used_gpus: dict[str, int] = field(default_factory=dict)
    """GPUs held per model."""
    servers: int = 0
    """Servers on the host (a bare-metal server needs it empty)."""
    schedulable: bool = True
    """False for hosts that are down, in maintenance, or held whole by a bare-metal server."""


def default_flavors() -> list[dict[str, Any]]:
    """The flavors shipped with Ecliptic (``data/flavors.yaml``)."""
    text = resources.files("ecliptic").joinpath("data/flavors.yaml").read_text()
    return list(yaml.safe_load(text))


def seed_flavors(session: Session) -> int:
    """Create the shipped flavors on an empty flavor table; returns how many."""
    if session.scalar(select(func.count()).select_from(Flavor)):
        return 0
    from ecliptic.services.inputs import FlavorCreate

    rows = []
    for f in default_flavors():
        fields = FlavorCreate(**f).model_dump()
        if fields["reservation_only"] is None:
            fields["reservation_only"] = bool(fields["gpus"]) or fields["kind"] == "baremetal"
        rows.append(Flavor(**fields))
    session.add_all(rows)
    return len(rows)


def list_flavors(db: Database) -> list[Flavor]:
    """Every flavor, smallest first."""
    with db.read() as session:
        return list(
            session.scalars(select(Flavor).order_by(Flavor.vcpus, Flavor.memory_mb, Flavor.name))
        )


def create_flavor(db: Database, caller: Caller, fields: dict[str, Any]) -> Flavor:
    """Create a flavor (administrators only)."""
    caller.require_admin("create flavors")
    if fields.get("gpus") and not fields.get("gpu_model"):
        raise InvalidInput(
            "a flavor with gpus needs a gpu_model",
            errors=[{"loc": ["gpu_model"], "msg": "required when gpus > 0"}],
        )
    fields = {**fields}
    if fields.get("reservation_only") is None:
        fields["reservation_only"] = bool(fields.get("gpus")) or fields.get("kind") == "baremetal"
    try:
        with db.write() as session:
            f = Flavor(**fields)
            session.add(f)
            session.flush()
            return f
    except IntegrityError:
        raise Conflict(f"a flavor named '{fields['name']}' exists already") from None


def delete_flavor(db: Database, caller: Caller, ref: str) -> None:
    """Delete a flavor no server uses (administrators only)."""
    caller.require_admin("delete flavors")
    with db.write() as session:
        f = find_flavor(session, ref)
        users = session.scalar(select(func.count()).where(Server.flavor_id == f.id)) or 0
        if users:
            raise Conflict(f"flavor '{f.name}' is used by {users} server(s)")
        session.delete(f)


def find_flavor(session: Session, ref: str) -> Flavor:
    """A flavor by name or id."""
    f = session.scalar(select(Flavor).where((Flavor.name == ref) | (Flavor.id == ref)))
    if f is None:
        names = ", ".join(session.scalars(select(Flavor.name).order_by(Flavor.vcpus)))
        raise NotFound(f"no flavor '{ref}'; choose one of: {names}")
    return f


def sync_inventory(session: Session, records: list[HostRecord]) -> None:
    """Make the inventory file's hosts match the backend's inventory; vanished ones are
    retired (hosts from Ironic are the Ironic sync's: ``services.pool``)."""
    existing = {h.name: h for h in session.scalars(select(Host))}
    for rec in records:
        host = existing.pop(rec.name, None) or Host(name=rec.name)
        if host.source not in (None, "inventory"):
            continue  # the name is an Ironic node's: that host is not the file's to change
        host.source = "inventory"
        fill_host(host, rec)
        if host.state == "retired":
            host.state = "up"
        session.add(host)
    for gone in existing.values():
        if gone.source == "inventory":
            gone.state = "retired"


def fill_host(host: Host, rec: HostRecord) -> None:
    """Copy what a backend says of a host (capacity, GPUs, NICs, properties) into its row."""
    host.vcpus, host.memory_mb, host.disk_gb = rec.vcpus, rec.memory_mb, rec.disk_gb
    host.gpus = [
        {
            "model": g.model,
            "count": g.count,
            "memory_gb": g.memory_gb,
            "mig_profiles": list(g.mig_profiles),
        }
        for g in rec.gpus
    ]
    host.nics = [
        {"name": n.name, "speed_gbps": n.speed_gbps, "rdma": n.rdma, "sriov_vfs": n.sriov_vfs}
        for n in rec.nics
    ]
    host.properties = dict(rec.properties)


def _no_use() -> dict[str, Any]:
    return {"vcpus": 0, "mem": 0, "disk": 0, "gpus": {}, "n": 0, "bm": False}


def host_usage(session: Session, hosts: list[Host] | None = None) -> list[HostUsage]:
    """Every host (or those given) with what its live servers hold, for placement and
    listing."""
    if hosts is None:
        hosts = list(session.scalars(select(Host).order_by(Host.name)))
    used: dict[str, dict[str, Any]] = {}
    rows = session.execute(
        select(
            Server.host_id,
            Server.kind,
            Server.vcpus,
            Server.memory_mb,
            Server.disk_gb,
            Server.gpu_model,
            Server.gpus,
        ).where(Server.host_id.is_not(None))
    )
    for host_id, kind, vcpus, mem, disk, gpu_model, gpus in rows:
        u = used.setdefault(str(host_id), _no_use())
        u["vcpus"] += vcpus
        u["mem"] += mem
        u["disk"] += disk
        u["n"] += 1
        u["bm"] = u["bm"] or kind == "baremetal"
        if gpu_model and gpus:
            u["gpus"][gpu_model] = u["gpus"].get(gpu_model, 0) + gpus
    out = []
    for h in hosts:
        u = used.get(h.id) or _no_use()
        out.append(
            HostUsage(
                name=h.name,
                vcpus=h.vcpus,
                memory_mb=h.memory_mb,
                disk_gb=h.disk_gb,
                gpus={g["model"]: int(g["count"]) for g in h.gpus},
                used_vcpus=u["vcpus"],
                used_memory_mb=u["mem"],
                used_disk_gb=u["disk"],
                used_gpus=u["gpus"],
                servers=u["n"],
                schedulable=h.state == "up" and not u["bm"],
            )
        )
    return out


def list_hosts(db: Database, caller: Caller) -> list[tuple[Host, HostUsage]]:
    """Hosts with their usage (administrators only)."""
    caller.require_admin("see the host inventory")
    with db.read() as session:
        # One list of hosts for both: the Ironic sync may add one between two reads.
        hosts = list(session.scalars(select(Host).order_by(Host.name)))
        return list(zip(hosts, host_usage(session, hosts), strict=True))
