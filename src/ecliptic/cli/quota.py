"""``ecliptic quota``: what a tenancy may hold on demand (outside leases)."""

from __future__ import annotations

from typing import Annotated

import typer

from ecliptic.cli import output
from ecliptic.cli.session import client, command, emit
from ecliptic.client import QuotaOut

app = typer.Typer(
    help="On-demand quotas: servers, vCPUs, memory and GPUs a tenancy may hold outside leases."
)

RESOURCES = ("servers", "vcpus", "memory_mb", "gpus")


def _show(q: QuotaOut) -> None:
    def limit(r: str) -> str:
        value = output.mib(q.limits[r]) if r == "memory_mb" else str(q.limits[r])
        return value + (" (site default)" if q.defaults.get(r) else "")

    def used(r: str) -> str:
        return output.mib(q.used[r]) if r == "memory_mb" else str(q.used[r])

    output.table(
        ["RESOURCE", "IN USE", "LIMIT"],
        [[r.replace("_mb", ""), used(r), limit(r)] for r in RESOURCES],
    )


@command(app, "show")
def quota_show(
    tenancy: Annotated[
        str | None,
        typer.Option("--of", help="Another tenancy's (administrators).", show_default=False),
    ] = None,
) -> None:
    """Show your tenancy's on-demand quota and what it uses."""
    q = client().quotas.show(tenancy)
    emit(q, lambda: _show(q))


@command(app, "set")
def quota_set(
    tenancy: Annotated[str, typer.Argument(help="Tenancy name or id.", show_default=False)],
    servers: Annotated[int | None, typer.Option("--servers", min=0, help="Servers.")] = None,
    vcpus: Annotated[int | None, typer.Option("--vcpus", min=0, help="vCPUs.")] = None,
    memory_mb: Annotated[
        int | None, typer.Option("--memory-mb", min=0, help="Memory, MiB.")
    ] = None,
    gpus: Annotated[int | None, typer.Option("--gpus", min=0, help="Whole GPUs.")] = None,
    default: Annotated[
        list[str] | None,
        typer.Option(
            "--default",
            metavar="RESOURCE",
            help="Put a limit back to the site default (servers, vcpus, memory_mb, gpus).",
        ),
    ] = None,
) -> None:
    """Set a tenancy's on-demand limits (administrators)."""
    limits: dict[str, int | None] = {
        k: v
        for k, v in (
            ("servers", servers),
            ("vcpus", vcpus),
            ("memory_mb", memory_mb),
            ("gpus", gpus),
        )
        if v is not None
    }
    for r in default or []:
        if r not in RESOURCES:
            raise typer.BadParameter(
                f"{r!r}: use one of {', '.join(RESOURCES)}", param_hint="--default"
            )
        limits[r] = None
    if not limits:
        raise typer.BadParameter("give at least one limit, or --default RESOURCE")
    q = client().quotas.set(tenancy, **limits)
    emit(q, lambda: _show(q))
