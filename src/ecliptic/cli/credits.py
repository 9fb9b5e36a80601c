"""``ecliptic credits``: allocations of resource-hours, what leases took, and grants.

Leases are paid in resource-hours of a class: ``host:<type>`` (whole hosts), ``gpu:<model>``
(whole GPUs), ``slice:<profile>`` (GPU slices) and ``vcpu``. Each allocation grants hours of
one class for a window; a lease is charged when it is booked and refunded what it did not
use when it ends early or shrinks.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated

import typer
from rich.text import Text

from ecliptic.cli import output
from ecliptic.cli.session import client, command, emit
from ecliptic.cli.times import parse_when
from ecliptic.client import BalanceOut, LedgerOut
from ecliptic.units import describe

app = typer.Typer(
    help="Credits: resource-hours granted to your tenancy, and what leases charged and refunded.",
    no_args_is_help=True,
)


def amounts(hours: Mapping[str, str | Decimal]) -> str:
    """Hours per class for people: ``96 A100 GPU-hours, 384 vCPU-hours``."""
    return ", ".join(f"{_num(h)} {describe(rc)}" for rc, h in sorted(hours.items())) or "nothing"


def _num(value: str | Decimal) -> str:
    d = Decimal(str(value))
    text = f"{d.normalize():f}"
    return text


def decimal(value: str) -> Decimal:
    """A decimal from the API's hours (``'96'``, ``'40.5'``); 0 when unreadable."""
    try:
        return Decimal(value)
    except (InvalidOperation, TypeError):
        return Decimal(0)


def _day(at: datetime) -> str:
    return at.astimezone().strftime("%Y-%m-%d")


def _remaining(b: BalanceOut) -> object:
    left = decimal(b.remaining)
    if left <= 0:
        return Text(b.remaining, style="red")
    return b.remaining


BALANCE_COLUMNS = [
    "ALLOCATION",
    "RESOURCE",
    "GRANTED",
    "CHARGED",
    "REFUNDED",
    "LEFT",
    "WINDOW",
]


def _window(b: BalanceOut) -> str:
    if b.start <= datetime.now(UTC):
        return f"until {_day(b.end)}"
    return f"{_day(b.start)} to {_day(b.end)}"


def balance_rows(rows: list[BalanceOut]) -> list[list[object]]:
    """Table rows of balances (the resource class as words; -o json has its code)."""
    return [
        [
            b.allocation,
            b.description,
            b.granted,
            b.charged,
            b.refunded,
            _remaining(b),
            _window(b),
        ]
        for b in rows
    ]


@command(app, "show")
def credits_show() -> None:
    """Show your tenancy's allocations: hours granted, charged, refunded and left.

    Leases are charged their whole cost when booked, from allocations of the resource
    class whose window covers the lease (the one ending soonest first).
    """
    rows = client().credits.balance()
    emit(
        rows,
        lambda: output.table(
            BALANCE_COLUMNS,
            balance_rows(rows),
            empty="no credit allocations: ask an administrator ('ecliptic credits allocate')",
        ),
    )


def _signed(e: LedgerOut) -> str:
    value = decimal(e.hours)
    return f"+{e.hours}" if value > 0 else e.hours


@command(app, "ledger")
def credits_ledger(
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit", min=1, max=5000, help="How many movements (the API's default: 200)."
        ),
    ] = None,
) -> None:
    """List credit movements, newest first: grants (+), charges (-) and refunds (+)."""
    c = client()
    rows = c.credits.ledger(limit)

    def human() -> None:
        names = _allocation_names(c.credits.balance()) if rows else {}
        output.table(
            ["AT", "KIND", "CLASS", "HOURS", "ALLOCATION", "NOTE"],
            [
                [
                    output.when(e.at),
                    e.kind,
                    e.resource_class,
                    _signed(e),
                    names.get(e.resource_class, e.allocation_id[:12]),
                    e.note,
                ]
                for e in rows
            ],
            empty="no credit movements",
        )

    emit(rows, human)


def _allocation_names(balances: list[BalanceOut]) -> dict[str, str]:
    """Resource class -> allocation name, for classes only one allocation grants.

    Ledger rows name their allocation by id, balances by name only; a row always moves
    hours of its allocation's class, so a class with one allocation names it.
    """
    seen: dict[str, set[str]] = {}
    for b in balances:
        seen.setdefault(b.resource_class, set()).add(b.allocation)
    return {rc: next(iter(names)) for rc, names in seen.items() if len(names) == 1}


@command(
    app,
    "allocate",
    help="Grant resource-hours to a tenancy for a window (administrators).\n\n"
    "Classes: host:<type> (whole hosts, e.g. host:A100 or host:cpu, in host credits: one "
    "host-hour at credit rate 1, so host:H100=30 on hosts of rate 20 is 1.5 hours), "
    "gpu:<model> (GPU-hours), slice:<profile> (GPU-slice-hours) and vcpu (vCPU-hours). "
    "Example:\n\n"
    "ecliptic credits allocate physics spring-27 --hours gpu:A100=500 --hours vcpu=10000 "
    "--end 2027-06-30T00:00Z",
)
def credits_allocate(
    tenancy: Annotated[str, typer.Argument(help="Tenancy name or id.", show_default=False)],
    name: Annotated[
        str, typer.Argument(help="Allocation name (unique per class).", show_default=False)
    ],
    hours: Annotated[
        list[str],
        typer.Option(
            "--hours",
            metavar="CLASS=HOURS",
            help="Hours of one resource class, e.g. gpu:A100=500; repeat for more classes.",
            show_default=False,
        ),
    ],
    end: Annotated[
        str,
        typer.Option(
            "--end",
            metavar="TIME",
            help="When the hours expire: ISO time (local unless it has a zone) or +DURATION.",
            show_default=False,
        ),
    ],
    start: Annotated[
        str,
        typer.Option(
            "--start", metavar="TIME", help="When they become usable: now, +DURATION or ISO."
        ),
    ] = "now",
) -> None:
    """Grant resource-hours to a tenancy (administrators)."""
    grants: dict[str, float] = {}
    for spec in hours:
        rc, sep, amount = spec.rpartition("=")
        try:
            value = float(amount)
        except ValueError:
            value = -1.0
        if not sep or not rc or value <= 0:
            raise typer.BadParameter(
                f"'{spec}': write CLASS=HOURS, e.g. gpu:A100=500 or vcpu=10000",
                param_hint="--hours",
            )
        if rc in grants:
            raise typer.BadParameter(f"'{rc}' is given twice", param_hint="--hours")
        grants[rc] = value
    rows = client().credits.allocate(
        tenancy=tenancy,
        name=name,
        hours=grants,
        start=parse_when(start, "--start"),
        end=parse_when(end, "--end", allow_now=False),
    )
    emit(rows, lambda: output.table(BALANCE_COLUMNS, balance_rows(rows)))
