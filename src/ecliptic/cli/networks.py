"""``ecliptic network`` and ``ecliptic port``: layer-2 networks and the addresses on them."""

from __future__ import annotations

from typing import Annotated

import typer

from ecliptic.cli import output
from ecliptic.cli.session import client, command, current, delete_many, emit
from ecliptic.client import NetworkOut, PortOut, SubnetOut

network_app = typer.Typer(help="Networks: a subnet each to start with, addresses picked for you.")
subnet_app = typer.Typer(help="Subnets: more address ranges on a network.")
port_app = typer.Typer(help="Ports: addresses reserved on a network, to plug into a server.")

Timeout = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait before giving up (exit code 7).")
]


def show_network(net: NetworkOut) -> None:
    """A network's fields, for people."""
    output.fields(
        [
            ("name", net.name),
            ("id", net.id),
            ("phase", net.phase),
            ("reason", net.phase_reason),
            ("subnets", ", ".join(f"{s.cidr} (gateway {s.gateway_ip})" for s in net.subnets)),
            ("created", output.when(net.created_at)),
        ]
    )


@command(network_app, "create")
def network_create(
    name: Annotated[
        str, typer.Argument(help="Name: lowercase letters, digits and '-'.", show_default=False)
    ],
    cidr: Annotated[
        str | None,
        typer.Option(
            "--cidr", help="IPv4 range, /16 to /29 (default: a free /24).", show_default=False
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is ACTIVE.")] = False,
    timeout: Timeout = 120,
) -> None:
    """Create a network with one subnet."""
    c = client()
    net = c.networks.create(name, cidr)
    if wait:
        with output.waiting(f"waiting for network {name}") as update:
            net = c.networks.wait(
                net.id, timeout=timeout, on_change=lambda n: update(f"network {n.name}: {n.phase}")
            )
    emit(net, lambda: show_network(net))


@command(network_app, "list")
def network_list() -> None:
    """List networks of the tenancy."""
    nets = client().networks.list()
    emit(
        nets,
        lambda: output.table(
            ["NAME", "PHASE", "CIDR", "GATEWAY", "AGE"],
            [
                [
                    n.name,
                    n.phase,
                    ", ".join(s.cidr for s in n.subnets),
                    ", ".join(s.gateway_ip for s in n.subnets),
                    n.created_at,
                ]
                for n in nets
            ],
            empty="no networks",
        ),
    )


@command(network_app, "show")
def network_show(
    name: Annotated[str, typer.Argument(help="Network name or id.", show_default=False)],
) -> None:
    """Show one network."""
    net = client().networks.get(name)
    emit(net, lambda: show_network(net))


@command(network_app, "delete")
def network_delete(
    names: Annotated[
        list[str],
        typer.Argument(metavar="NAME", help="Network names or ids.", show_default=False),
    ],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until they are gone.")] = False,
    timeout: Timeout = 120,
) -> None:
    """Delete networks; refused (exit code 4) while ports are on them."""
    c = client()

    def gone(net: NetworkOut) -> None:
        with output.waiting(f"waiting for network {net.name} to go"):
            c.networks.wait_deleted(net.id, timeout=timeout)

    delete_many("network", names, c.networks.delete, gone if wait else None)


def _port_rows(ports: list[PortOut], nets: dict[str, str]) -> list[list[object]]:
    return [
        [
            p.name or p.id[:12],
            nets.get(p.network_id, p.network_id[:12]),
            p.ip_address,
            p.mac,
            p.vnic_type,
            "yes" if p.server_id else "no",
            p.phase,
        ]
        for p in ports
    ]


PORT_COLUMNS = ["PORT", "NETWORK", "ADDRESS", "MAC", "VNIC", "ATTACHED", "PHASE"]


@command(port_app, "create")
def port_create(
    network: Annotated[
        str, typer.Option("--network", help="Network to take the address on.", show_default=False)
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="Name, to refer to it later.", show_default=False)
    ] = None,
    direct: Annotated[
        bool, typer.Option("--direct", help="A direct (SR-IOV) port rather than a virtual NIC.")
    ] = False,
) -> None:
    """Reserve an address on a network (plug it in with 'server create --port')."""
    c = client()
    port = c.ports.create(network, name, "direct" if direct else "normal")
    emit(port, lambda: output.table(PORT_COLUMNS, _port_rows([port], {port.network_id: network})))


@command(port_app, "list")
def port_list() -> None:
    """List ports of the tenancy."""
    c = client()
    ports = c.ports.list()

    def human() -> None:
        nets = {n.id: n.name for n in c.networks.list()} if ports else {}
        output.table(PORT_COLUMNS, _port_rows(ports, nets), empty="no ports")

    emit(ports, human)


@command(port_app, "delete")
def port_delete(
    names: Annotated[
        list[str], typer.Argument(metavar="NAME", help="Port names or ids.", show_default=False)
    ],
) -> None:
    """Release unattached ports."""
    c = client()
    for ref in names:
        c.ports.delete(ref)
        if not current().json:
            output.say(f"port {ref}: deleted")


def _subnet_rows(rows: list[SubnetOut]) -> list[list[object]]:
    return [[s.name, s.cidr, s.gateway_ip, s.phase] for s in rows]


@command(subnet_app, "list")
def subnet_list() -> None:
    """List the subnets of your tenancy."""
    rows = client().subnets.list()
    emit(
        rows,
        lambda: output.table(
            ["NAME", "CIDR", "GATEWAY", "PHASE"], _subnet_rows(rows), empty="no subnets"
        ),
    )


@command(subnet_app, "create")
def subnet_create(
    name: Annotated[
        str, typer.Argument(help="Name: lowercase letters, digits and '-'.", show_default=False)
    ],
    network: Annotated[
        str, typer.Option("--network", help="The network to add it to.", show_default=False)
    ],
    cidr: Annotated[
        str | None,
        typer.Option(
            "--cidr", help="IPv4 range, /16 to /29 (default: a free /24).", show_default=False
        ),
    ] = None,
) -> None:
    """Add an address range to a network (used once the earlier ones are full)."""
    sub = client().subnets.create(name, network, cidr)
    emit(
        sub,
        lambda: output.table(["NAME", "CIDR", "GATEWAY", "PHASE"], _subnet_rows([sub])),
    )


@command(subnet_app, "delete")
def subnet_delete(
    subnet: Annotated[str, typer.Argument(help="Subnet name or id.", show_default=False)],
) -> None:
    """Remove a subnet no port uses (a network's last subnet goes with the network)."""
    client().subnets.delete(subnet)
    if not current().json:
        output.say(f"subnet {subnet}: deleted")
