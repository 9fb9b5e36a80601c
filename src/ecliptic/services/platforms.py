"""Platforms: create from a catalogue type, list, show, patch, retry, access, delete, events.

A platform's servers and network are placed when it is created, all in one booking
transaction: it fits (lease room, quotas) and is paid for, or nothing is made. The
reconciler (``reconcile/platforms.py``) builds, configures and watches it.
"""

from __future__ import annotations

import base64
import json
import secrets as pysecrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecliptic import hostkeys
from ecliptic.errors import Conflict, Forbidden, InvalidInput, NotFound
from ecliptic.phases import LeasePhase, PlatformPhase
from ecliptic.platforms.templates import TemplateError, evaluate, render
from ecliptic.platforms.types import Catalogue, ParamRef, PlatformType
from ecliptic.services import security_groups as sg
from ecliptic.services.booking import Booking
from ecliptic.services.caller import Caller
from ecliptic.services.catalogue import find_flavor
from ecliptic.services.identity import members_named
from ecliptic.services.leases import find_lease
from ecliptic.services.networks import IPAM_LOCK, UsedRanges, add_network
from ecliptic.services.platform_tunnels import (
    healthy_tunnels,
    platform_services,
    service_name,
    sync_access,
)
from ecliptic.services.servers import NicRequest, add_server
from ecliptic.store.db import Database
from ecliptic.store.models import (
    Event,
    Network,
    Platform,
    PlatformAccess,
    Server,
    Service,
    User,
)
from ecliptic.store.transitions import created, move, note, timeline
from ecliptic.store.workqueue import WorkQueue

ImageNames = Callable[[], set[str]]
"""The names of the images servers can boot from (the backend's)."""


@dataclass(frozen=True)
class PlatformCreate:
    """What a user asks for."""

    name: str
    type: str
    parameters: Mapping[str, object] = field(default_factory=dict)
    lease: str | None = None
    """Shorthand for the type's lease parameter."""
    access: tuple[str, ...] | None = None
    """Members who may use it; the creator alone by default."""
    preemptible: bool = False
    """On preemptible capacity (where the operator allows it): it goes when a lease needs
    the room (after the servers' minimum lifetime)."""


@dataclass(frozen=True)
class Planned:
    """One server a platform should have."""

    role: str
    index: int
    name: str
    flavor: str
    image: str
    direct: bool


def _bad(field_name: str, msg: str) -> InvalidInput:
    return InvalidInput(
        f"parameter '{field_name}': {msg}",
        errors=[{"loc": ["body", "parameters", field_name], "msg": msg}],
    )


def resolve_parameters(
    ptype: PlatformType,
    given: Mapping[str, object],
    *,
    old: Mapping[str, object] | None = None,
) -> dict[str, object]:
    """The full parameter set: ``given`` checked against the type, defaults filled in (and,
    on a patch, the ``old`` values kept where nothing new is given)."""
    import difflib

    known = {p.name: p for p in ptype.parameters}
    unknown = sorted(set(given) - set(known))
    if unknown:
        name = unknown[0]
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise InvalidInput(
            f"platform type '{ptype.name}' has no parameter '{name}'{hint}; it has: "
            f"{', '.join(sorted(known)) or 'none'}",
            errors=[{"loc": ["body", "parameters", n], "msg": "unknown"} for n in unknown],
        )
    out: dict[str, object] = {}
    for p in ptype.parameters:
        if p.name in given:
            value: object = given[p.name]
        elif old is not None and p.name in old:
            value = old[p.name]
        else:
            value = p.default
        if value is None:
            if p.required:
                raise _bad(p.name, f"is required ({p.help or p.kind})")
            out[p.name] = None
            continue
        try:
            out[p.name] = p.check(value)
        except ValueError as exc:
            raise _bad(p.name, str(exc)) from None
    return out


def _param(params: Mapping[str, object], ref: object) -> object:
    return params.get(ref.param) if isinstance(ref, ParamRef) else ref


def plan(ptype: PlatformType, params: Mapping[str, object], platform_name: str) -> list[Planned]:
    """Every server the platform should have, by role then index."""
    out: list[Planned] = []
    for role in ptype.roles:
        count = _param(params, role.count)
        size = _param(params, role.size)
        image = _param(params, role.image)
        direct = bool(_param(params, role.direct))
        if not isinstance(count, int) or not isinstance(size, str) or not isinstance(image, str):
            raise InvalidInput(
                f"role '{role.name}' needs a count, a size and an image: give the parameters "
                "they come from"
            )
        for i in range(1, count + 1):
            name = f"{platform_name}-{role.name}{i}"
            out.append(Planned(role.name, i, name, size, image, direct))
    return out


def find_platform(session: Session, tenancy_id: str, ref: str) -> Platform:
    """A platform of the tenancy by name or id."""
    row = session.scalar(
        select(Platform).where(
            Platform.tenancy_id == tenancy_id, (Platform.name == ref) | (Platform.id == ref)
        )
    )
    if row is None:
        raise NotFound(f"no platform '{ref}' in this tenancy; see 'ecliptic platform list'")
    return row


def _access_users(session: Session, tenancy_id: str, names: tuple[str, ...]) -> list[User]:
    return members_named(session, tenancy_id, names, "a platform's")


def _check_sizes(
    session: Session, ptype: PlatformType, params: Mapping[str, object], images: set[str]
) -> None:
    for p in ptype.parameters:
        value = params.get(p.name)
        if value is None:
            continue
        if p.kind == "size":
            try:
                fl = find_flavor(session, str(value))
            except NotFound:
                raise _bad(p.name, f"no flavor '{value}' ('ecliptic flavor list')") from None
            short = [
                f"{what} {have} < {need}"
                for what, have, need in (
                    ("vCPUs", fl.vcpus, p.min_vcpus),
                    ("memory MiB", fl.memory_mb, p.min_memory_mb),
                    ("GPUs", fl.gpus, p.min_gpus),
                )
                if have < need
            ]
            if short:
                raise _bad(p.name, f"flavor '{value}' is too small ({', '.join(short)})")
        elif p.kind == "image" and value not in images:
            raise _bad(p.name, f"no image '{value}' ('ecliptic image list')")
    for role in ptype.roles:
        image = _param(params, role.image)
        if isinstance(image, str) and image not in images:
            raise InvalidInput(
                f"platform type '{ptype.name}' needs image '{image}' for role '{role.name}', "
                "which this cloud does not have"
            )


def _new_secrets(ptype: PlatformType) -> dict[str, str]:
    out = {}
    for s in ptype.secrets:
        if s.encoding == "ssh-ed25519":
            out[s.name] = hostkeys.new_private_key()
            continue
        raw = pysecrets.token_bytes(s.bytes)
        out[s.name] = raw.hex() if s.encoding == "hex" else base64.b64encode(raw).decode()
    return out


def seal_secrets(db: Database, platform_id: str, values: Mapping[str, str]) -> str:
    """The platform's secrets as stored (sealed with the instance's key)."""
    assert db.secrets is not None, "platforms need the instance's secret key"
    return db.secrets.seal(f"platform:{platform_id}", json.dumps(dict(values)))


def open_secrets(db: Database, row: Platform) -> dict[str, str]:
    """The platform's secrets in plain (with the public line of each SSH key pair as
    ``<name>_public``)."""
    if not row.secrets:
        return {}
    assert db.secrets is not None, "platforms need the instance's secret key"
    out = dict(json.loads(db.secrets.open(f"platform:{row.id}", row.secrets)))
    for name, value in list(out.items()):
        if not name.startswith("_") and value.startswith("-----BEGIN OPENSSH PRIVATE KEY"):
            out[f"{name}_public"] = hostkeys.public_line(value)
    return out


def add_servers(
    session: Session,
    engine: Any,
    booking: Booking,
    queue: WorkQueue,
    caller: Caller,
    row: Platform,
    servers: list[Planned],
    used_elsewhere: UsedRanges,
) -> None:
    """Place ``servers`` for the platform (inside the caller's booking transaction)."""
    nets = {
        n.name: n for n in session.scalars(select(Network).where(Network.platform_id == row.id))
    }
    lease_name = None
    if row.lease_id:
        lease_row = find_lease(session, row.tenancy_id, row.lease_id)
        lease_name = lease_row.name
    group = sg.platform_group(session, row.tenancy_id, row.name)
    for s in servers:
        nics = [NicRequest(network=nets[f"{row.name}-net"].name)]
        if s.direct:
            nics.append(NicRequest(network=nets[f"{row.name}-fabric"].name, vnic_type="direct"))
        add_server(
            session,
            engine,
            booking,
            queue,
            caller,
            s.name,
            s.flavor,
            nics,
            used_elsewhere,
            lease=lease_name,
            reservation=row.spec.get("reservation"),
            image=s.image,
            preemptible=bool(row.spec.get("preemptible")),
            security_groups=[group.name],
            platform={"id": row.id, "role": s.role, "index": s.index},
        )


@dataclass(frozen=True)
class PlannedServer:
    """One server a create would make, where it would go and what it would cost."""

    name: str
    role: str
    flavor: str
    image: str
    host: str
    vcpus: int
    memory_mb: int
    gpus: int
    hourly: dict[str, str]
    """Credits per hour by resource class when it is charged on demand (metered)."""


@dataclass(frozen=True)
class PlatformPlan:
    """What ``create`` would do: it fits (capacity, quota, credits for the first hour)."""

    name: str
    type: str
    lease: str | None
    parameters: dict[str, object]
    servers: list[PlannedServer]


class _DryRun(Exception):
    def __init__(self, plan: PlatformPlan) -> None:
        super().__init__("dry run")
        self.plan = plan


def plan_platform(
    booking: Booking,
    queue: WorkQueue,
    caller: Caller,
    catalogue: Catalogue,
    images: ImageNames,
    body: PlatformCreate,
    used_elsewhere: UsedRanges = tuple,
    *,
    allow_preemptible: bool = False,
) -> PlatformPlan:
    """Everything ``create_platform`` checks and places, then undone: what it would make,
    where, and what it costs (a 409/422 when it would not fit)."""
    try:
        create_platform(
            booking,
            queue,
            caller,
            catalogue,
            images,
            body,
            used_elsewhere,
            dry_run=True,
            allow_preemptible=allow_preemptible,
        )
    except _DryRun as done:
        return done.plan
    raise AssertionError("a dry run made a platform")  # pragma: no cover


def create_platform(
    booking: Booking,
    queue: WorkQueue,
    caller: Caller,
    catalogue: Catalogue,
    images: ImageNames,
    body: PlatformCreate,
    used_elsewhere: UsedRanges = tuple,
    *,
    dry_run: bool = False,
    allow_preemptible: bool = False,
) -> Platform:
    """Check the parameters, place every server (in the lease, or on demand within the
    tenancy's quota), make the platform's network(s), and queue it: all or nothing."""
    tenancy_id = caller.require_tenancy()
    entry = catalogue.get(body.type)
    if entry is None:
        names = ", ".join(sorted(catalogue.scan()[0])) or "none"
        raise InvalidInput(
            f"no platform type '{body.type}' (the catalogue has: {names})",
            errors=[{"loc": ["body", "type"], "msg": "unknown platform type"}],
        )
    ptype = entry.type
    if body.preemptible and not allow_preemptible:
        raise Forbidden(
            "this cloud does not run platforms on preemptible capacity (its operator can allow "
            "it: ECLIPTIC_PLATFORM_PREEMPTIBLE=on); reserve a lease, or create it on demand"
        )
    given = dict(body.parameters)
    lp = ptype.lease_parameter
    if body.lease is not None:
        if lp is None:
            raise InvalidInput(f"platform type '{ptype.name}' does not run in a lease")
        if lp.name in given and given[lp.name] != body.lease:
            raise InvalidInput(f"--lease and parameter '{lp.name}' name different leases")
        given[lp.name] = body.lease
    params = resolve_parameters(ptype, given)
    if body.preemptible and lp is not None and params.get(lp.name):
        raise InvalidInput(
            "a platform runs either in a lease or on preemptible capacity, not both",
            errors=[{"loc": ["body", "preemptible"], "msg": "exclusive with lease"}],
        )
    servers = plan(ptype, params, body.name)
    available = images()
    with booking.transaction(IPAM_LOCK) as (session, engine):
        if session.scalar(
            select(Platform.id).where(Platform.tenancy_id == tenancy_id, Platform.name == body.name)
        ):
            raise Conflict(f"a platform named '{body.name}' exists already in this tenancy")
        _check_sizes(session, ptype, params, available)
        taken = sorted(
            session.scalars(
                select(Service.name).where(
                    Service.tenancy_id == tenancy_id,
                    Service.name.in_([service_name(body.name, s.name) for s in ptype.services]),
                )
            )
        )
        if taken:
            raise Conflict(
                f"gateway service(s) {', '.join(taken)} exist already: the platform's services "
                "would be called so; pick another platform name"
            )
        lease_id = None
        if lp is not None and params.get(lp.name):
            lease_row = find_lease(session, tenancy_id, str(params[lp.name]))
            if lease_row.phase not in (LeasePhase.ACTIVE, LeasePhase.DEGRADED):
                raise Conflict(
                    f"lease '{lease_row.name}' is {lease_row.phase}: a platform is made in a "
                    f"running lease (it starts {lease_row.start_at:%Y-%m-%d %H:%M} UTC)"
                )
            lease_id = lease_row.id
        access = (
            _access_users(session, tenancy_id, body.access)
            if body.access is not None
            else [session.get(User, caller.user_id)]
        )
        row = Platform(
            tenancy_id=tenancy_id,
            name=body.name,
            type_name=ptype.name,
            type_version=ptype.version,
            lease_id=lease_id,
            created_by=caller.user_id,
            phase=PlatformPhase.PENDING,
            phase_reason="waiting for a worker",
            spec={
                "type": ptype.model_dump(mode="json"),
                "source": entry.source,
                "parameters": params,
                "preemptible": body.preemptible,
            },
            status={},
        )
        row.access = [PlatformAccess(user_id=u.id) for u in access if u is not None]
        session.add(row)
        session.flush()
        row.secrets = seal_secrets(booking.db, row.id, _new_secrets(ptype))
        net = add_network(session, queue, tenancy_id, f"{body.name}-net", None, used_elsewhere)
        net.platform_id = row.id
        if any(s.direct for s in servers):
            fabric = add_network(
                session, queue, tenancy_id, f"{body.name}-fabric", None, used_elsewhere
            )
            fabric.platform_id = row.id
        session.flush()
        add_servers(session, engine, booking, queue, caller, row, servers, used_elsewhere)
        if dry_run:
            made = list(session.scalars(select(Server).where(Server.platform_id == row.id)))
            raise _DryRun(
                PlatformPlan(
                    body.name,
                    ptype.name,
                    str(params[lp.name]) if lp is not None and lease_id else None,
                    params,
                    [
                        PlannedServer(
                            m.name,
                            str(m.spec["platform"]["role"]),
                            m.flavor.name,
                            m.image,
                            m.host.name if m.host else "",
                            m.vcpus,
                            int(m.memory_mb),
                            m.gpus,
                            dict(m.spec.get("meter", {})),
                        )
                        for m in sorted(made, key=lambda m: m.name)
                    ],
                )
            )
        where = " in lease " + str(params[lp.name]) if lp is not None and lease_id else ""
        where += " on preemptible capacity" if body.preemptible else ""
        created(
            session,
            row,
            f"created from {ptype.name} {ptype.version}{where} by {caller.user_name}: "
            f"{len(servers)} server(s)",
        )
        queue.enqueue(session, "platform", row.id)
        session.flush()
        session.refresh(row)
        return row


def wake_platforms(session: Session, queue: WorkQueue, lease_id: str) -> None:
    """Have the platforms of a lease look at it now (it warned, ended, or changed)."""
    for pid in session.scalars(select(Platform.id).where(Platform.lease_id == lease_id)):
        queue.enqueue(session, "platform", pid)


def type_of(row: Platform) -> PlatformType:
    """The type a platform was made from (as it was then)."""
    return PlatformType.model_validate(row.spec["type"], strict=False)


def list_platforms(db: Database, caller: Caller) -> list[Platform]:
    """The tenancy's platforms, by name."""
    tenancy_id = caller.require_tenancy()
    with db.read() as session:
        return list(
            session.scalars(
                select(Platform).where(Platform.tenancy_id == tenancy_id).order_by(Platform.name)
            )
        )


def get_platform(db: Database, caller: Caller, ref: str) -> Platform:
    """One platform of the tenancy."""
    with db.read() as session:
        return find_platform(session, caller.require_tenancy(), ref)


def may_use(caller: Caller, row: Platform) -> bool:
    """Whether the caller is on the platform's access list (or administers its tenancy or
    the cloud): who may see inside it, such as a failed step's output."""
    return (
        caller.is_admin
        or caller.role == "admin"
        or any(a.user_id == caller.user_id for a in row.access)
    )


def failure_for(caller: Caller, row: Platform) -> dict[str, Any] | None:
    """What failed (step, server, exit code, output), the output only for those who may
    use the platform: a step's output comes from inside its servers."""
    failed = (row.status or {}).get("failed")
    if not failed:
        return None
    if may_use(caller, row):
        return dict(failed)
    return {
        **{k: v for k, v in failed.items() if k != "output"},
        "output": "",
        "hidden": "the output is shown to the platform's access list",
    }


def _managed(session: Session, caller: Caller, ref: str, what: str) -> Platform:
    """A platform the caller may change: its creator, tenancy admins, site admins."""
    row = find_platform(session, caller.require_tenancy(), ref)
    if caller.is_admin or caller.role == "admin" or row.created_by == caller.user_id:
        return row
    raise Forbidden(
        f"only the creator of platform '{row.name}' or an admin of tenancy "
        f"'{caller.tenancy_name}' may {what}"
    )


def delete_platform(db: Database, queue: WorkQueue, caller: Caller, ref: str) -> Platform:
    """Ask for a platform to go: its services, servers and networks are removed."""
    with db.write() as session:
        row = _managed(session, caller, ref, "delete it")
        if row.phase != PlatformPhase.DELETING:
            move(session, row, PlatformPhase.DELETING, f"deletion requested by {caller.user_name}")
        row.generation += 1
        queue.enqueue(session, "platform", row.id)
        return row


def retry_platform(db: Database, queue: WorkQueue, caller: Caller, ref: str) -> Platform:
    """Resume a failed platform from the step that failed."""
    with db.write() as session:
        row = _managed(session, caller, ref, "retry it")
        if row.phase != PlatformPhase.FAILED:
            raise Conflict(f"platform '{row.name}' is {row.phase}: only a FAILED one is retried")
        failed = (row.status or {}).get("failed") or {}
        move(
            session,
            row,
            PlatformPhase.CONFIGURING,
            f"retry requested by {caller.user_name}"
            + (f" (resuming at step '{failed['step']}')" if failed.get("step") else ""),
        )
        row.status = {**(row.status or {}), "failed": None}
        queue.enqueue(session, "platform", row.id)
        return row


def patch_platform(
    booking: Booking,
    queue: WorkQueue,
    caller: Caller,
    ref: str,
    parameters: Mapping[str, object],
    images: ImageNames,
    used_elsewhere: UsedRanges = tuple,
) -> Platform:
    """Change mutable parameters. New servers are placed now (all or nothing); servers no
    longer wanted are drained and removed by the reconciler."""
    if not parameters:
        raise InvalidInput("nothing to change: give parameters (-p name=value)")
    with booking.transaction(IPAM_LOCK) as (session, engine):
        row = _managed(session, caller, ref, "change it")
        if row.phase in (PlatformPhase.DELETING, PlatformPhase.PENDING):
            raise Conflict(f"platform '{row.name}' is {row.phase}: it cannot change now")
        ptype = type_of(row)
        old = dict(row.spec["parameters"])
        frozen = sorted(
            n
            for n, v in parameters.items()
            if (p := ptype.parameter(n)) is not None
            and (p.immutable or p.kind == "lease")
            and old.get(n) != v
        )
        if frozen:
            raise InvalidInput(
                f"{', '.join(frozen)} cannot change after create (immutable in "
                f"'{ptype.name}'); make a new platform for that",
                errors=[{"loc": ["body", "parameters", n], "msg": "immutable"} for n in frozen],
            )
        new = resolve_parameters(ptype, parameters, old=old)
        if new == old:
            raise InvalidInput("those are the values it has already: nothing to change")
        _check_sizes(session, ptype, new, images())
        have = {s.name for s in session.scalars(select(Server).where(Server.platform_id == row.id))}
        wanted = plan(ptype, new, row.name)
        extra = [s for s in wanted if s.name not in have]
        row.spec = {**row.spec, "parameters": new}
        row.generation += 1
        add_servers(session, engine, booking, queue, caller, row, extra, used_elsewhere)
        changes = ", ".join(
            f"{k} {old.get(k)!r} -> {v!r}" for k, v in new.items() if old.get(k) != v
        )
        move(session, row, PlatformPhase.UPDATING, f"changed by {caller.user_name}: {changes}")
        queue.enqueue(session, "platform", row.id)
        session.flush()
        session.refresh(row)
        return row


def set_access(
    db: Database, queue: WorkQueue, caller: Caller, ref: str, names: list[str]
) -> Platform:
    """Who may use the platform (members of its tenancy); its services follow at once."""
    with db.write() as session:
        row = _managed(session, caller, ref, "change who may use it")
        users = _access_users(session, row.tenancy_id, tuple(names))
        row.access = [PlatformAccess(user_id=u.id) for u in users]
        note(
            session,
            row,
            f"access set by {caller.user_name}: {', '.join(sorted(names)) or 'nobody'}",
        )
        row.generation += 1
        session.flush()
        sync_access(session, row)
        queue.enqueue(session, "platform", row.id)
        session.refresh(row)
        return row


def platform_events(db: Database, caller: Caller, ref: str, limit: int = 200) -> list[Event]:
    """The platform's timeline (created, steps, services, scaling, lease warnings), oldest
    first."""
    with db.read() as session:
        row = find_platform(session, caller.require_tenancy(), ref)
        return timeline(session, "platform", row.id, limit)


@dataclass(frozen=True)
class ServerView:
    """A platform's server, for people."""

    name: str
    role: str
    index: int
    phase: str
    address: str
    fabric_address: str


@dataclass(frozen=True)
class ServiceView:
    """A platform's service, for people."""

    name: str
    label: str
    role: str
    protocol: str
    public: bool
    url: str | None
    subdomain: str | None
    healthy: bool | None


@dataclass(frozen=True)
class PlatformView:
    """Everything ``platform show`` tells."""

    row: Platform
    servers: list[ServerView]
    services: list[ServiceView]
    access: list[str]
    usage: str


def view(db: Database, row: Platform, url_format: str | None) -> PlatformView:
    """A platform with its servers, services (URLs, health) and rendered usage text."""
    ptype = type_of(row)
    with db.read() as session:
        rows = list(session.scalars(select(Server).where(Server.platform_id == row.id)))
        servers = []
        for s in rows:
            meta = s.spec.get("platform", {})
            normal = [p.ip_address for p in s.ports if p.vnic_type != "direct"]
            direct = [p.ip_address for p in s.ports if p.vnic_type == "direct"]
            servers.append(
                ServerView(
                    s.name,
                    str(meta.get("role", "")),
                    int(meta.get("index", 0)),
                    s.phase,
                    normal[0] if normal else "",
                    direct[0] if direct else "",
                )
            )
        servers.sort(key=lambda v: ([r.name for r in ptype.roles].index(v.role), v.index))
        gw = {s.name: s for s in platform_services(session, row.id)}
        counts = healthy_tunnels(session, [s.id for s in gw.values()])
        access = sorted(
            session.scalars(select(User.name).where(User.id.in_([a.user_id for a in row.access])))
        )
    params = dict(row.spec["parameters"])
    ctx: dict[str, Any] = {
        "params": params,
        "secrets": {},
        "platform": {"name": row.name, "id": row.id, "ssh_keys": [], "leaving": []},
        "servers": [v.__dict__ for v in servers],
        "roles": {},
        "services": {},
    }
    for v in servers:
        ctx["roles"].setdefault(v.role, []).append(v.__dict__)
    services = []
    for d in ptype.services:
        try:
            if d.when is not None and not evaluate(d.when, ctx):
                continue
        except TemplateError:
            continue
        g = gw.get(service_name(row.name, d.name))
        url = url_format.format(g.subdomain) if g is not None and url_format else None
        services.append(
            ServiceView(
                d.name,
                d.label or d.name,
                d.role,
                d.protocol,
                d.public,
                url,
                g.subdomain if g is not None else None,
                (counts.get(g.id, 0) > 0) if g is not None else None,
            )
        )
        ctx["services"][d.name] = {
            "url": url or "",
            "subdomain": g.subdomain if g is not None else "",
            "label": d.label or d.name,
        }
    try:
        usage = render(ptype.usage, ctx, "usage")
    except TemplateError as exc:
        usage = f"(the usage text cannot be shown: {exc})"
    return PlatformView(row, servers, services, access, usage)
