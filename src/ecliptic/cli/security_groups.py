"""``ecliptic security-group``: which traffic a tenancy's ports let in and out."""

from __future__ import annotations

from typing import Annotated

import typer

from ecliptic.cli import output
from ecliptic.cli.session import client, command, emit
from ecliptic.client import SecurityGroupOut, SecurityGroupRuleOut

app = typer.Typer(
    help="Security groups: stateful firewall rules for ports ('default' lets its members "
    "talk to each other and everything out)."
)

Group = Annotated[str, typer.Argument(help="Group name or id.", show_default=False)]


def _ports(r: SecurityGroupRuleOut) -> str:
    if r.port_min is None:
        return "all"
    return str(r.port_min) if r.port_max in (None, r.port_min) else f"{r.port_min}-{r.port_max}"


def _peer(r: SecurityGroupRuleOut) -> str:
    return f"group {r.remote_group}" if r.remote_group else (r.remote_cidr or "0.0.0.0/0")


def show_group(g: SecurityGroupOut) -> None:
    """A group and its rules, for people."""
    output.fields([("name", g.name), ("id", g.id), ("description", g.description)])
    output.stdout().print()
    output.table(
        ["RULE", "DIRECTION", "PROTOCOL", "PORTS", "PEER", "DESCRIPTION"],
        [[r.id, r.direction, r.protocol, _ports(r), _peer(r), r.description] for r in g.rules],
        empty="no rules: its ports let nothing in and send nothing",
    )


@command(app, "list")
def group_list() -> None:
    """List the tenancy's security groups."""
    groups = client().security_groups.list()
    emit(
        groups,
        lambda: output.table(
            ["NAME", "RULES", "DESCRIPTION"],
            [[g.name, len(g.rules), g.description] for g in groups],
            empty="no security groups",
        ),
    )


@command(app, "show")
def group_show(group: Group) -> None:
    """Show a group and its rules."""
    g = client().security_groups.get(group)
    emit(g, lambda: show_group(g))


@command(app, "create")
def group_create(
    name: Annotated[str, typer.Argument(help="Name: lowercase letters, digits and '-'.")],
    description: Annotated[str, typer.Option("--description", help="What it is for.")] = "",
) -> None:
    """Create a group (no rules yet: nothing in or out)."""
    g = client().security_groups.create(name, description)
    emit(g, lambda: show_group(g))


@command(app, "delete")
def group_delete(group: Group) -> None:
    """Delete a group no server uses."""
    client().security_groups.delete(group)
    output.say(f"security group {group}: deleted")


@command(app, "rule-create")
def rule_create(
    group: Group,
    direction: Annotated[
        str, typer.Option("--direction", help="ingress (in to its ports) or egress (out).")
    ] = "ingress",
    protocol: Annotated[str, typer.Option("--protocol", help="any, tcp, udp or icmp.")] = "any",
    port: Annotated[
        str | None,
        typer.Option("--port", help="A port or a range (80, 8000-8100); tcp and udp only."),
    ] = None,
    remote_cidr: Annotated[
        str | None, typer.Option("--remote-cidr", help="Peer addresses (default: anywhere).")
    ] = None,
    remote_group: Annotated[
        str | None, typer.Option("--remote-group", help="Peers: the members of this group.")
    ] = None,
    description: Annotated[str, typer.Option("--description")] = "",
) -> None:
    """Add a rule; running servers follow within a second."""
    lo: int | None = None
    hi: int | None = None
    if port:
        first, _, last = port.partition("-")
        try:
            lo, hi = int(first), int(last or first)
        except ValueError:
            msg = "give a port (80) or a range (8000-8100)"
            raise typer.BadParameter(msg, param_hint="--port") from None
    r = client().security_groups.add_rule(
        group,
        direction=direction,
        protocol=protocol,
        port_min=lo,
        port_max=hi,
        remote_cidr=remote_cidr,
        remote_group=remote_group,
        description=description or None,
    )
    emit(r, lambda: output.say(f"rule {r.id}: {r.direction} {r.protocol} {_ports(r)} {_peer(r)}"))


@command(app, "rule-delete")
def rule_delete(
    group: Group, rule: Annotated[str, typer.Argument(help="Rule id (security-group show).")]
) -> None:
    """Remove a rule."""
    client().security_groups.delete_rule(group, rule)
    output.say(f"rule {rule}: deleted")
