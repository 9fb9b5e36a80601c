"""Security groups: a tenancy's named sets of stateful firewall rules for its ports.

As in Neutron: a port lets in only what one of its groups' ingress rules allows and sends
only what an egress rule allows; replies to allowed traffic always pass. Every tenancy has
a group ``default`` (made on first need) that lets in traffic from its own members and lets
everything out; a server's ports get the groups named at its creation, or ``default``.
Changes reach the backend through the ``firewall`` reconciler (one object for the whole
instance), queued in the same transaction: running servers see them within a second.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecliptic.backends.base import (
    FirewallPortSpec,
    FirewallSpec,
    SecurityGroupRuleSpec,
    SecurityGroupSpec,
)
from ecliptic.errors import Conflict, Forbidden, InvalidInput, NotFound
from ecliptic.services.caller import Caller
from ecliptic.store.db import Database
from ecliptic.store.models import Port, SecurityGroup, SecurityGroupRule, Server
from ecliptic.store.workqueue import WorkQueue

DEFAULT = "default"
FIREWALL = "firewall"
"""Reconciler kind of the instance's firewall, and its one object id (``all``)."""
FIREWALL_OBJECT = "all"


def changed(session: Session, queue: WorkQueue, *, delay: float = 0.0) -> None:
    """Queue the firewall for a look (in the caller's transaction). Changes that need not
    be at once (a deleted server's rules) wait ``delay`` seconds and coalesce: a rebuild of
    600 ports' rules costs ~80 ms."""
    queue.enqueue(session, FIREWALL, FIREWALL_OBJECT, delay=delay)


def ensure_default(session: Session, tenancy_id: str) -> SecurityGroup:
    """The tenancy's ``default`` group, made on first need."""
    group = session.scalar(
        select(SecurityGroup).where(
            SecurityGroup.tenancy_id == tenancy_id, SecurityGroup.name == DEFAULT
        )
    )
    if group is not None:
        return group
    group = SecurityGroup(
        tenancy_id=tenancy_id,
        name=DEFAULT,
        description="traffic from its members in, everything out",
    )
    session.add(group)
    session.flush()
    group.rules.append(
        SecurityGroupRule(
            direction="ingress",
            protocol="any",
            remote_group_id=group.id,
            description="from members of default",
        )
    )
    group.rules.append(
        SecurityGroupRule(direction="egress", protocol="any", description="everything out")
    )
    session.flush()
    return group


PLATFORM_PREFIX = "platform:"
"""Groups named ``platform:<name>`` are made and kept by their platform (names users give
cannot hold a colon)."""
OWNED_PREFIXES = (PLATFORM_PREFIX, "benchmark:")
"""Groups kept by what made them (a platform, a benchmark run): users may not change them."""


def platform_group(session: Session, tenancy_id: str, platform: str) -> SecurityGroup:
    """A platform's own group: its servers reach each other, send anything, and nothing
    else reaches them (their services go through the gateway). Made on first need."""
    return owned_group(
        session,
        tenancy_id,
        f"{PLATFORM_PREFIX}{platform}",
        f"platform {platform}: its servers to each other, everything out",
    )


def owned_group(session: Session, tenancy_id: str, name: str, description: str) -> SecurityGroup:
    """A group kept by what made it (a platform, a benchmark run): its members reach each
    other and send anything; nothing else reaches them. Made on first need."""
    group = session.scalar(
        select(SecurityGroup).where(
            SecurityGroup.tenancy_id == tenancy_id, SecurityGroup.name == name
        )
    )
    if group is not None:
        return group
    group = SecurityGroup(tenancy_id=tenancy_id, name=name, description=description)
    session.add(group)
    session.flush()
    group.rules.append(
        SecurityGroupRule(
            direction="ingress", protocol="any", remote_group_id=group.id, description="members"
        )
    )
    group.rules.append(
        SecurityGroupRule(direction="egress", protocol="any", description="everything out")
    )
    session.flush()
    return group


def _not_a_platforms(group: SecurityGroup, what: str) -> None:
    if group.name.startswith(OWNED_PREFIXES):
        raise Forbidden(f"security group '{group.name}' is kept by what made it: it may not {what}")


def find_group(session: Session, tenancy_id: str, ref: str) -> SecurityGroup:
    """A group of the tenancy by name or id; other tenancies' groups do not exist."""
    if ref == DEFAULT:
        return ensure_default(session, tenancy_id)
    group = session.scalar(
        select(SecurityGroup).where(
            SecurityGroup.tenancy_id == tenancy_id,
            (SecurityGroup.name == ref) | (SecurityGroup.id == ref),
        )
    )
    if group is None:
        raise NotFound(
            f"no security group '{ref}' in this tenancy; see 'ecliptic security-group list'"
        )
    return group


def list_groups(db: Database, caller: Caller) -> list[SecurityGroup]:
    """The tenancy's groups (``default`` included), by name."""
    tenancy_id = caller.require_tenancy()
    with db.write() as session:
        ensure_default(session, tenancy_id)
    with db.read() as session:
        return list(
            session.scalars(
                select(SecurityGroup)
                .where(SecurityGroup.tenancy_id == tenancy_id)
                .order_by(SecurityGroup.name)
            )
        )


def get_group(db: Database, caller: Caller, ref: str) -> SecurityGroup:
    """One group."""
    tenancy_id = caller.require_tenancy()
    with db.write() as session:
        return find_group(session, tenancy_id, ref)


def create_group(db: Database, caller: Caller, name: str, description: str) -> SecurityGroup:
    """A new group with no rules: its ports let nothing in and send nothing."""
    tenancy_id = caller.require_tenancy()
    with db.write() as session:
        ensure_default(session, tenancy_id)
        if session.scalar(
            select(SecurityGroup.id).where(
                SecurityGroup.tenancy_id == tenancy_id, SecurityGroup.name == name
            )
        ):
            raise Conflict(f"a security group named '{name}' exists already in this tenancy")
        group = SecurityGroup(tenancy_id=tenancy_id, name=name, description=description)
        session.add(group)
        session.flush()
        session.refresh(group, ["rules"])  # loaded now: the caller reads it after the session
        return group


def _ports_using(session: Session, tenancy_id: str, group_id: str) -> list[str]:
    rows = session.execute(
        select(Port.name, Port.spec, Server.name)
        .outerjoin(Server, Server.id == Port.server_id)
        .where(Port.tenancy_id == tenancy_id)
    ).all()
    return sorted(
        f"server {srv}" if srv else f"port {port}"
        for port, spec, srv in rows
        if group_id in (spec or {}).get("security_groups", ())
    )


def delete_group(db: Database, queue: WorkQueue, caller: Caller, ref: str) -> None:
    """Delete a group no port uses and no other group's rule names."""
    tenancy_id = caller.require_tenancy()
    with db.write() as session:
        group = find_group(session, tenancy_id, ref)
        _not_a_platforms(group, "be deleted (delete the platform)")
        if group.name == DEFAULT:
            raise Conflict("the default security group cannot be deleted")
        users = sorted(set(_ports_using(session, tenancy_id, group.id)))
        if users:
            raise Conflict(
                f"security group '{group.name}' is used by {', '.join(users)}: give them "
                "other groups first (ecliptic server set-security-groups)"
            )
        naming = session.scalars(
            select(SecurityGroup.name)
            .join(SecurityGroupRule, SecurityGroupRule.group_id == SecurityGroup.id)
            .where(SecurityGroupRule.remote_group_id == group.id, SecurityGroup.id != group.id)
        ).all()
        if naming:
            raise Conflict(
                f"security group '{group.name}' is named by rules of {', '.join(sorted(naming))}"
            )
        session.delete(group)
        changed(session, queue)


def _bad(field: str, msg: str) -> InvalidInput:
    return InvalidInput(msg, errors=[{"loc": ["body", field], "msg": msg}])


def add_rule(
    db: Database, queue: WorkQueue, caller: Caller, ref: str, fields: dict[str, Any]
) -> SecurityGroupRule:
    """Add a rule; a port range needs tcp or udp, a peer is a CIDR or a group, not both."""
    tenancy_id = caller.require_tenancy()
    protocol = fields.get("protocol") or "any"
    lo, hi = fields.get("port_min"), fields.get("port_max")
    if hi is not None and lo is None:
        raise _bad("port_min", "give port_min with port_max (a single port: port_min alone)")
    if lo is not None:
        if protocol not in ("tcp", "udp"):
            raise _bad("protocol", f"ports need protocol tcp or udp, not {protocol}")
        hi = lo if hi is None else hi
        if not 1 <= lo <= hi <= 65535:
            raise _bad("port_max", f"ports {lo}-{hi}: give 1 <= port_min <= port_max <= 65535")
    cidr, remote = fields.get("remote_cidr"), fields.get("remote_group")
    if cidr and remote:
        raise _bad("remote_group", "a rule's peer is a CIDR or a group, not both")
    if cidr:
        try:
            cidr = str(ipaddress.IPv4Network(cidr, strict=False))
        except ValueError:
            raise _bad("remote_cidr", f"'{cidr}' is not an IPv4 CIDR such as 10.0.0.0/8") from None
    with db.write() as session:
        group = find_group(session, tenancy_id, ref)
        _not_a_platforms(group, "be changed")
        remote_id = resolve(session, tenancy_id, [remote], "remote_group")[0].id if remote else None
        rule = SecurityGroupRule(
            direction=fields["direction"],
            protocol=protocol,
            port_min=lo,
            port_max=hi,
            remote_cidr=None if remote_id else (cidr or "0.0.0.0/0"),
            remote_group_id=remote_id,
            description=fields.get("description") or "",
        )
        group.rules.append(rule)
        session.flush()
        changed(session, queue)
        return rule


def delete_rule(db: Database, queue: WorkQueue, caller: Caller, ref: str, rule_id: str) -> None:
    """Remove one rule of a group."""
    tenancy_id = caller.require_tenancy()
    with db.write() as session:
        group = find_group(session, tenancy_id, ref)
        _not_a_platforms(group, "be changed")
        rule = next((r for r in group.rules if r.id == rule_id), None)
        if rule is None:
            raise NotFound(f"security group '{group.name}' has no rule '{rule_id}'")
        group.rules.remove(rule)
        changed(session, queue)


def resolve(
    session: Session,
    tenancy_id: str,
    names: Iterable[str] | None,
    field: str = "security_groups",
) -> list[SecurityGroup]:
    """Groups by name or id (``default`` when none are named); 422 naming an unknown one."""
    wanted = list(dict.fromkeys(names or [DEFAULT]))
    out = []
    for name in wanted:
        try:
            out.append(find_group(session, tenancy_id, name))
        except NotFound as e:
            raise _bad(field, e.message) from None
    return out


def give_ports(session: Session, ports: Iterable[Port], groups: list[SecurityGroup]) -> None:
    """Set the ports' groups."""
    ids = [g.id for g in groups]
    for port in ports:
        port.spec = {**(port.spec or {}), "security_groups": ids}


def set_server_groups(
    db: Database, queue: WorkQueue, caller: Caller, server_ref: str, names: list[str]
) -> list[str]:
    """Give every port of a server these groups (at least one); returns their names."""
    from ecliptic.services.servers import find_server

    tenancy_id = caller.require_tenancy()
    if not names:
        raise _bad("security_groups", "name at least one group (default, say)")
    with db.write() as session:
        srv = find_server(session, tenancy_id, server_ref)
        if srv.platform_id is not None:
            raise Forbidden(
                f"server '{srv.name}' is part of a platform: its security group is the platform's"
            )
        groups = resolve(session, tenancy_id, names)
        for g in groups:
            _not_a_platforms(g, "be given to other servers")
        give_ports(session, srv.ports, groups)
        srv.spec = {**srv.spec, "security_groups": [g.name for g in groups]}
        changed(session, queue)
        return [g.name for g in groups]


_PROTOCOL: dict[str, Literal["any", "tcp", "udp", "icmp"]] = {
    "any": "any",
    "tcp": "tcp",
    "udp": "udp",
    "icmp": "icmp",
}


def _protocol(value: str) -> Literal["any", "tcp", "udp", "icmp"]:
    return _PROTOCOL.get(value, "any")


def firewall_spec(session: Session) -> FirewallSpec:
    """Every plugged port with its groups, and those groups, for the backend."""
    # Columns, not ORM objects: this runs for every server built, with every port.
    rows = session.execute(
        select(
            Port.id, Port.network_id, Port.ip_address, Port.mac, Port.vnic_type, Port.spec
        ).where(Port.server_id.is_not(None))
    ).all()
    used: set[str] = set()
    out = []
    for pid, network_id, ip, mac, vnic, spec in rows:
        groups = tuple((spec or {}).get("security_groups", ()))
        used.update(groups)
        out.append(
            FirewallPortSpec(
                id=pid,
                network_id=network_id,
                addresses=(ip,),
                groups=groups,
                mac=mac,
                vnic_type="direct" if vnic == "direct" else "normal",
            )
        )
    rows_g = session.scalars(select(SecurityGroup).where(SecurityGroup.id.in_(used))).all()
    specs = []
    for g in sorted(rows_g, key=lambda g: g.id):
        specs.append(
            SecurityGroupSpec(
                g.id,
                tuple(
                    SecurityGroupRuleSpec(
                        direction="egress" if r.direction == "egress" else "ingress",
                        protocol=_protocol(r.protocol),
                        port_min=r.port_min,
                        port_max=r.port_max,
                        remote_cidr=r.remote_cidr,
                        remote_group_id=r.remote_group_id,
                    )
                    for r in g.rules
                ),
            )
        )
    return FirewallSpec(tuple(sorted(out, key=lambda p: p.id)), tuple(specs))
