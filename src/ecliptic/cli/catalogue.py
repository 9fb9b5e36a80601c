"""``ecliptic flavor`` and ``ecliptic host``: what servers can be, and where they go."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from ecliptic.cli import output
from ecliptic.cli.session import client, command, current, emit
from ecliptic.client import FlavorOut, HostOut, PoolHostOut

flavor_app = typer.Typer(help="Flavors: the sizes servers come in.")
host_app = typer.Typer(
    help="Hosts (from the inventory file or Ironic), what runs on them, and the "
    "bare-metal-or-hypervisor pool (administrators)."
)


class HostState(StrEnum):
    """States an administrator may put a host in."""

    up = "up"
    down = "down"
    maintenance = "maintenance"


class Role(StrEnum):
    """What a pool host can be converted to."""

    hypervisor = "hypervisor"
    baremetal = "baremetal"
    auto = "auto"


class Kind(StrEnum):
    """Kinds of flavor."""

    vm = "vm"
    baremetal = "baremetal"


def _flavor_rows(flavors: list[FlavorOut]) -> list[list[object]]:
    return [
        [
            f.name,
            f.vcpus,
            output.mib(f.memory_mb),
            f"{f.disk_gb} GB",
            f"{f.gpus}x {f.gpu_model}" if f.gpus else "",
            f.kind,
            "lease" if f.reservation_only else "on demand",
            f.description,
        ]
        for f in flavors
    ]


FLAVOR_COLUMNS = ["NAME", "VCPUS", "MEMORY", "DISK", "GPUS", "KIND", "RUNS", "DESCRIPTION"]


@command(flavor_app, "list")
def flavor_list() -> None:
    """List flavors, smallest first."""
    flavors = client().flavors.list()
    emit(
        flavors,
        lambda: output.table(FLAVOR_COLUMNS, _flavor_rows(flavors), empty="no flavors"),
    )


@command(flavor_app, "create")
def flavor_create(
    name: Annotated[
        str, typer.Argument(help="Name: lowercase letters, digits, '.', '-'.", show_default=False)
    ],
    vcpus: Annotated[int, typer.Option("--vcpus", help="Virtual CPUs.", show_default=False)],
    memory_mb: Annotated[
        int, typer.Option("--memory-mb", help="Memory in MiB.", show_default=False)
    ],
    disk_gb: Annotated[int, typer.Option("--disk-gb", help="Disk in GB.")] = 0,
    gpu_model: Annotated[
        str | None,
        typer.Option("--gpu-model", help="GPU model, e.g. A100.", show_default=False),
    ] = None,
    gpus: Annotated[int, typer.Option("--gpus", help="GPUs of that model.")] = 0,
    kind: Annotated[Kind, typer.Option("--kind", help="A VM or a whole host.")] = Kind.vm,
    description: Annotated[str, typer.Option("--description", help="For people.")] = "",
    reservation_only: Annotated[
        bool | None,
        typer.Option(
            "--reservation-only/--on-demand",
            help="Servers of it only in leases (or preemptible), or on demand too "
            "(default: leases only for GPU and bare-metal flavors).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Create a flavor (administrators)."""
    f = client().flavors.create(
        name=name,
        vcpus=vcpus,
        memory_mb=memory_mb,
        disk_gb=disk_gb,
        gpu_model=gpu_model,
        gpus=gpus,
        kind=kind.value,
        description=description,
        reservation_only=reservation_only,
    )
    emit(f, lambda: output.table(FLAVOR_COLUMNS, _flavor_rows([f])))


@command(flavor_app, "delete")
def flavor_delete(
    names: Annotated[
        list[str], typer.Argument(metavar="NAME", help="Flavor names.", show_default=False)
    ],
) -> None:
    """Delete flavors no server uses (administrators)."""
    c = client()
    for ref in names:
        c.flavors.delete(ref)
        if not current().json:
            output.say(f"flavor {ref}: deleted")


def _gpus(h: HostOut) -> str:
    return ", ".join(f"{h.used_gpus.get(g.model, 0)}/{g.count} {g.model}" for g in h.gpus)


def _host_rows(hosts: list[HostOut]) -> list[list[object]]:
    return [
        [
            h.name,
            h.state,
            h.source,
            h.pool.phase if h.pool else ("bare metal only" if h.source == "ironic" else "-"),
            f"{h.used_vcpus}/{h.vcpus}",
            f"{output.mib(h.used_memory_mb)}/{output.mib(h.memory_mb)}",
            _gpus(h),
            h.servers,
        ]
        for h in hosts
    ]


HOST_COLUMNS = [
    "NAME",
    "STATE",
    "SOURCE",
    "ROLE",
    "VCPUS USED",
    "MEMORY USED",
    "GPUS USED",
    "SERVERS",
]


@command(host_app, "list")
def host_list() -> None:
    """List hosts with where they come from, their pool role, and used/total vCPUs, memory
    and GPUs (administrators)."""
    hosts = client().hosts.list()
    emit(hosts, lambda: output.table(HOST_COLUMNS, _host_rows(hosts), empty="no hosts"))


@command(host_app, "set-state")
def host_set_state(
    name: Annotated[str, typer.Argument(help="Host name.", show_default=False)],
    state: Annotated[
        HostState,
        typer.Argument(help="up: takes servers; down, maintenance: takes no new ones."),
    ],
) -> None:
    """Mark a host up, down or in maintenance (administrators)."""
    h = client().hosts.set_state(name, state.value)
    emit(h, lambda: output.table(HOST_COLUMNS, _host_rows([h])))


HostName = Annotated[str, typer.Argument(help="Host name.", show_default=False)]


def _needs(r: PoolHostOut) -> str:
    parts = [f"vm: {r.vm_need}" if r.vm_need else "", f"bm: {r.bm_need}" if r.bm_need else ""]
    return "\n".join(p for p in parts if p)


POOL_COLUMNS = ["NAME", "NODE", "STATE", "ROLE", "HOLD", "SERVERS", "NEEDS", "REASON"]


@command(host_app, "pool")
def host_pool() -> None:
    """Show the bare-metal-or-hypervisor pool: each host's role, hold, and what needs it."""
    rows = client().hosts.pool()
    emit(
        rows,
        lambda: output.table(
            POOL_COLUMNS,
            [
                [r.name, r.node_id, r.state, r.phase, r.hold, r.servers, _needs(r), r.reason]
                for r in rows
            ],
            empty="no host in the pool (ECLIPTIC_HYPERVISOR_POOL selects none)",
        ),
    )


@command(host_app, "convert")
def host_convert(
    name: HostName,
    to: Annotated[
        Role,
        typer.Option(
            "--to",
            help="hypervisor or baremetal: convert and hold it so; auto: let the policy decide.",
            show_default=False,
        ),
    ],
) -> None:
    """Make a pool host a hypervisor or bare metal (held until --to auto); bookings come first."""
    h = client().hosts.convert(name, to.value)
    emit(h, lambda: output.table(HOST_COLUMNS, _host_rows([h])))


@command(host_app, "drain")
def host_drain(name: HostName) -> None:
    """Drain a hypervisor: no new VMs on it, its servers moved to other hypervisors."""
    h = client().hosts.drain(name)
    emit(h, lambda: output.table(HOST_COLUMNS, _host_rows([h])))


@command(host_app, "events")
def host_events(name: HostName) -> None:
    """Show what happened to a host's role in the pool, and why."""
    rows = client().hosts.events(name)
    emit(rows, lambda: output.events_table(rows))
