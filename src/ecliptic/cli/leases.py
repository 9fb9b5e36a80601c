"""``ecliptic lease`` and ``ecliptic calendar``: book capacity for a window, and see what is free.

A lease holds up to one reservation of each kind, given with options:

* ``--hosts N`` or ``--hosts MIN-MAX``: whole hosts (reservation ``hosts``);
* ``--flavor NAME[:COUNT]`` with ``--affinity`` or ``--anti-affinity``: instance slots of a
  flavor's size (reservation ``slots``);
* ``--gpu-slice PROFILE[:COUNT]``: GPU slices such as ``1g.10gb`` (reservation ``slices``);

``--count N`` sets the count of the flavor or slice reservation when only one of them
lacks a ``:COUNT``; ``--where EXPR`` filters the hosts of the host reservation, or of the
only reservation given. ``--file`` gives the whole ``LeaseCreate`` body instead.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.table import Table
from rich.text import Text

from ecliptic.cli import output
from ecliptic.cli.credits import amounts, decimal
from ecliptic.cli.exitcodes import ExitCode, exit_code_for
from ecliptic.cli.session import client, command, current, emit
from ecliptic.cli.times import END_HELP, TIME_HELP, duration, human_duration, parse_when, until
from ecliptic.client import (
    ApiError,
    CalendarRowOut,
    Client,
    LeaseOut,
    WindowOut,
)

EXAMPLES = (
    "Examples:\n\n"
    "ecliptic lease create train --hosts 2 --where 'gpu_model == \"A100\"' --duration 48h\n\n"
    "ecliptic lease create sweep --start 2027-03-01T09:00 --end 2027-03-03T09:00 "
    "--flavor m1.large --count 4 --anti-affinity\n\n"
    "ecliptic lease create slices --gpu-slice 1g.10gb --count 3 --duration 8h\n\n"
    "ecliptic lease create mixed --hosts 1-2 --where 'rdma' --flavor m1.small:2 "
    "--gpu-slice 1g.10gb:1 --duration 1d\n\n"
    "ecliptic lease create big --file lease.yaml"
)

app = typer.Typer(
    help="Leases: capacity booked for a window and paid in credits; servers run inside them.\n\n"
    "A lease holds up to one reservation of each kind: whole hosts (--hosts), instance "
    "slots of a flavor's size (--flavor) and GPU slices (--gpu-slice). "
    "See 'ecliptic lease create --help'.",
    no_args_is_help=True,
)
top = typer.Typer()
"""Commands that live at the top level (``ecliptic calendar``)."""

Name = Annotated[str, typer.Argument(help="Lease name or id.", show_default=False)]
Timeout = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait before giving up (exit code 7).")
]
RESERVE = "Reservation (one of each kind)"

# The reservation options, shared by 'lease create' and 'lease find'.
HostsOpt = Annotated[
    str | None,
    typer.Option(
        "--hosts",
        metavar="N|MIN-MAX",
        help="Whole hosts: N of them, or between MIN and MAX (as many as fit). "
        "Reservation 'hosts'.",
        rich_help_panel=RESERVE,
        show_default=False,
    ),
]
WhereOpt = Annotated[
    str | None,
    typer.Option(
        "--where",
        metavar="EXPR",
        help="Host filter, e.g. 'gpu_model == \"A100\" and rdma'; applies to --hosts, or to "
        "the only reservation given.",
        rich_help_panel=RESERVE,
        show_default=False,
    ),
]
FlavorOpt = Annotated[
    str | None,
    typer.Option(
        "--flavor",
        metavar="NAME[:COUNT]",
        help="Instance slots the size of this flavor ('ecliptic flavor list'). "
        "Reservation 'slots'.",
        rich_help_panel=RESERVE,
        show_default=False,
    ),
]
SliceOpt = Annotated[
    str | None,
    typer.Option(
        "--gpu-slice",
        metavar="PROFILE[:COUNT]",
        help="GPU slices of this profile, e.g. 1g.10gb (a seventh of an A100). "
        "Reservation 'slices'.",
        rich_help_panel=RESERVE,
        show_default=False,
    ),
]
SliceFlavorOpt = Annotated[
    str | None,
    typer.Option(
        "--slice-flavor",
        metavar="NAME",
        help="Book each --gpu-slice with the vCPUs and memory of this flavor (the servers "
        "it is for); by default a slice books its share of its host's.",
        rich_help_panel=RESERVE,
        show_default=False,
    ),
]
CountOpt = Annotated[
    int | None,
    typer.Option(
        "--count",
        min=1,
        help="How many slots or slices (default 1), for the --flavor or --gpu-slice given "
        "without :COUNT.",
        rich_help_panel=RESERVE,
        show_default=False,
    ),
]
AffinityOpt = Annotated[
    bool,
    typer.Option(
        "--affinity", help="Put every --flavor slot on one host.", rich_help_panel=RESERVE
    ),
]
AntiAffinityOpt = Annotated[
    bool,
    typer.Option(
        "--anti-affinity",
        help="Put each --flavor slot on a different host.",
        rich_help_panel=RESERVE,
    ),
]


# -- reservations from options -----------------------------------------------------------


@dataclass
class ReservationOptions:
    """The reservation options of one command line."""

    hosts: str | None = None
    where: str | None = None
    flavor: str | None = None
    gpu_slice: str | None = None
    count: int | None = None
    affinity: bool = False
    anti_affinity: bool = False
    slice_flavor: str | None = None

    def given(self) -> bool:
        """True when any reservation option was used."""
        return any(
            (
                self.hosts,
                self.where is not None,
                self.flavor,
                self.gpu_slice,
                self.count is not None,
                self.affinity,
                self.anti_affinity,
                self.slice_flavor,
            )
        )


def _host_range(spec: str) -> dict[str, Any]:
    lo, sep, hi = spec.strip().partition("-")
    try:
        if not sep:
            return {"count": int(lo)}
        return {"min": int(lo), "max": int(hi)}
    except ValueError:
        raise typer.BadParameter(
            f"'{spec}': write a number of hosts (2) or a range (2-4)", param_hint="--hosts"
        ) from None


def _with_count(spec: str, option: str) -> tuple[str, int | None]:
    name, sep, count = spec.rpartition(":")
    if not sep:
        return spec, None
    try:
        n = int(count)
    except ValueError:
        raise typer.BadParameter(
            f"'{spec}': write NAME or NAME:COUNT (e.g. {option} x:4)", param_hint=option
        ) from None
    return name, n


def reservations(opts: ReservationOptions) -> list[dict[str, Any]]:
    """Reservation bodies (as ``LeaseCreate.reservations`` wants them) from the options."""
    out: list[dict[str, Any]] = []
    if opts.affinity and opts.anti_affinity:
        raise typer.BadParameter("give --affinity or --anti-affinity, not both")
    if (opts.affinity or opts.anti_affinity) and not opts.flavor:
        raise typer.BadParameter(
            "(anti-)affinity places --flavor slots: give --flavor",
            param_hint="--affinity/--anti-affinity",
        )
    host: dict[str, Any] | None = None
    if opts.hosts:
        host = {"kind": "host", "name": "hosts", **_host_range(opts.hosts)}
        out.append(host)
    counted: list[dict[str, Any]] = []  # reservations waiting for --count
    if opts.flavor:
        name, n = _with_count(opts.flavor, "--flavor")
        slots: dict[str, Any] = {"kind": "flavor", "name": "slots", "flavor": name}
        if opts.affinity or opts.anti_affinity:
            slots["affinity"] = "affinity" if opts.affinity else "anti-affinity"
        if n is None:
            counted.append(slots)
        else:
            slots["count"] = n
        out.append(slots)
    if opts.gpu_slice:
        profile, n = _with_count(opts.gpu_slice, "--gpu-slice")
        slices: dict[str, Any] = {"kind": "gpu_slice", "name": "slices", "profile": profile}
        if opts.slice_flavor:
            slices["flavor"] = opts.slice_flavor
        if n is None:
            counted.append(slices)
        else:
            slices["count"] = n
        out.append(slices)
    if opts.slice_flavor and not opts.gpu_slice:
        raise typer.BadParameter(
            "it sizes --gpu-slice slices: give --gpu-slice", param_hint="--slice-flavor"
        )
    if opts.count is not None:
        if not opts.flavor and not opts.gpu_slice:
            raise typer.BadParameter(
                "it counts --flavor slots or --gpu-slice slices; for hosts write --hosts N",
                param_hint="--count",
            )
        if len(counted) != 1:
            raise typer.BadParameter(
                "it is ambiguous with both --flavor and --gpu-slice: write "
                "--flavor NAME:COUNT and --gpu-slice PROFILE:COUNT"
                if counted
                else "both --flavor and --gpu-slice have their :COUNT already",
                param_hint="--count",
            )
        counted[0]["count"] = opts.count
    if not out:
        raise typer.BadParameter(
            "give what to reserve: --hosts N, --flavor NAME or --gpu-slice PROFILE "
            "(or the whole body with --file)"
        )
    if opts.where is not None:
        if host is not None:
            host["where"] = opts.where
        elif len(out) == 1:
            out[0]["where"] = opts.where
        else:
            raise typer.BadParameter(
                "with both --flavor and --gpu-slice and no --hosts it is ambiguous; "
                "give the lease with --file to filter each",
                param_hint="--where",
            )
    return out


def _read_body(path: str) -> dict[str, Any]:
    """A request body from a YAML or JSON file (``-``: stdin)."""
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="--file"
        ) from None
    try:
        doc = yaml.safe_load(text)  # YAML reads JSON too
    except yaml.YAMLError as exc:
        raise typer.BadParameter(
            f"{path} is neither YAML nor JSON: {exc}", param_hint="--file"
        ) from None
    if not isinstance(doc, dict):
        raise typer.BadParameter(
            f"{path} must hold one object (name, start, duration, reservations...)",
            param_hint="--file",
        )
    return doc


# -- showing leases -----------------------------------------------------------------------


def _request_text(kind: str, req: dict[str, Any]) -> str:
    where = f" where {req['where']}" if req.get("where") else ""
    if kind == "host":
        if req.get("count"):
            n = str(req["count"])
        else:
            lo, hi = req.get("min") or 1, req.get("max") or req.get("min") or 1
            n = str(lo) if lo == hi else f"{lo}-{hi}"
        return f"{n} host{'' if n == '1' else 's'}{where}"
    count = req.get("count", 1)
    if kind == "flavor":
        size = req.get("flavor") or ", ".join(
            f"{k}={req[k]}" for k in ("vcpus", "memory_mb", "gpus", "gpu_model") if req.get(k)
        )
        aff = req.get("affinity")
        extra = f" ({aff})" if aff and aff != "none" else ""
        return f"{count}x {size}{extra}{where}"
    if kind == "gpu_slice":
        model = f" on {req['gpu_model']}" if req.get("gpu_model") else ""
        sized = f" for {req['flavor']}" if req.get("flavor") else ""
        return f"{count}x {req.get('profile')}{model}{sized}{where}"
    return json.dumps(req)


def _summary(lease: LeaseOut) -> str:
    return "; ".join(f"{r.name}: {_request_text(r.kind, r.request)}" for r in lease.reservations)


def _placed(kind: str, allocations: list[Any]) -> str:
    if not allocations:
        return ""
    if kind == "host":
        return ", ".join(sorted(a.host for a in allocations))
    return ", ".join(f"{a.host} ({a.slots})" for a in sorted(allocations, key=lambda a: a.host))


def show_lease(lease: LeaseOut) -> None:
    """A lease's fields and its reservations, for people."""
    output.fields(
        [
            ("name", lease.name),
            ("id", lease.id),
            ("phase", lease.phase),
            ("reason", lease.phase_reason),
            ("start", f"{output.when(lease.start)} ({until(lease.start)})"),
            ("end", f"{output.when(lease.end)} ({until(lease.end)})"),
            ("length", human_duration((lease.end - lease.start).total_seconds())),
            ("before end", output.when(lease.before_end_at) if lease.before_end_at else ""),
            ("grace", f"{human_duration(lease.grace_s)} for servers to stop after the end"),
            ("cost", amounts(lease.cost)),
            ("servers", lease.servers),
            ("created", output.when(lease.created_at)),
        ]
    )
    if lease.reservations:
        output.stdout().print()
        output.table(
            ["RESERVATION", "KIND", "REQUEST", "HOSTS"],
            [
                [r.name, r.kind, _request_text(r.kind, r.request), _placed(r.kind, r.allocations)]
                for r in lease.reservations
            ],
        )


def _cost_change(before: dict[str, str], after: dict[str, str]) -> str:
    """``charged 24 A100 GPU-hours; refunded 10 vCPU-hours`` ('' when nothing moved)."""
    charged: dict[str, Decimal] = {}
    refunded: dict[str, Decimal] = {}
    for rc in set(before) | set(after):
        delta = decimal(after.get(rc, "0")) - decimal(before.get(rc, "0"))
        if delta > 0:
            charged[rc] = delta
        elif delta < 0:
            refunded[rc] = -delta
    parts = []
    if charged:
        parts.append(f"charged {amounts(charged)}")
    if refunded:
        parts.append(f"refunded {amounts(refunded)}")
    return "; ".join(parts)


def wait_lease(c: Client, ref: str, timeout: float) -> LeaseOut:
    """Wait for a lease to be ACTIVE, with a spinner that shows its phase."""
    with output.waiting(f"waiting for lease {ref}") as update:
        return c.leases.wait(
            ref,
            timeout=timeout,
            on_change=lambda x: update(f"lease {x.name}: {x.phase} ({x.phase_reason})"),
        )


# -- commands -----------------------------------------------------------------------------


@command(
    app,
    "create",
    help="Book capacity for a window; its cost is charged to your credits at once.\n\n"
    "Give the window with --start (default now) and --end or --duration, and up to one "
    "reservation of each kind: --hosts N|MIN-MAX (whole hosts), --flavor NAME[:COUNT] "
    "(slots of a flavor's size, optionally --affinity or --anti-affinity), --gpu-slice "
    "PROFILE[:COUNT] (GPU slices). --count N counts the --flavor or --gpu-slice given "
    "without :COUNT. --where EXPR filters the hosts of --hosts (or of the only reservation "
    "given). Or give the whole body (name, start, end or duration, before_end, grace, "
    "reservations) with --file lease.yaml|json; NAME, --start, --end, --duration, "
    "--before-end and --grace given as well win over the file.\n\n"
    "Refused with exit code 4 when it does not fit (try 'ecliptic lease find'), 5 when your "
    "credits do not cover it.\n\n" + EXAMPLES,
)
def create(
    name: Annotated[
        str | None,
        typer.Argument(
            help="Name: lowercase letters, digits and '-' (may come from --file).",
            show_default=False,
        ),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option("--start", metavar="TIME", help=f"When it starts: {TIME_HELP}. Default now."),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option(
            "--end", metavar="TIME", help=f"When it ends: {END_HELP}.", show_default=False
        ),
    ] = None,
    duration_: Annotated[
        str | None,
        typer.Option(
            "--duration",
            metavar="DURATION",
            help="How long: 48h, 2d, 90m, 1d12h.",
            show_default=False,
        ),
    ] = None,
    before_end: Annotated[
        str | None,
        typer.Option(
            "--before-end",
            metavar="DURATION",
            help="Mark the lease this long before its end (a warning for its users).",
            show_default=False,
        ),
    ] = None,
    grace: Annotated[
        str | None,
        typer.Option(
            "--grace",
            metavar="DURATION",
            help="How long servers get to stop after the end (the API's default: 10m).",
            show_default=False,
        ),
    ] = None,
    hosts: HostsOpt = None,
    where: WhereOpt = None,
    flavor: FlavorOpt = None,
    count: CountOpt = None,
    affinity: AffinityOpt = False,
    anti_affinity: AntiAffinityOpt = False,
    gpu_slice: SliceOpt = None,
    slice_flavor: SliceFlavorOpt = None,
    file: Annotated[
        str | None,
        typer.Option(
            "--file",
            "-f",
            metavar="PATH",
            help="The whole lease body as YAML or JSON ('-': stdin).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is ACTIVE.")] = False,
    timeout: Timeout = 300,
) -> None:
    """Book capacity for a window."""
    opts = ReservationOptions(
        hosts, where, flavor, gpu_slice, count, affinity, anti_affinity, slice_flavor
    )
    body: dict[str, Any] = _read_body(file) if file else {}
    if file and opts.given():
        raise typer.BadParameter(
            "give the reservations in the file or as options, not both", param_hint="--file"
        )
    if not file:
        body["reservations"] = reservations(opts)
    if name is not None:
        body["name"] = name
    elif "name" not in body:
        raise typer.BadParameter("give the lease a name", param_hint="NAME")
    if end is not None and duration_ is not None:
        raise typer.BadParameter("give --end or --duration, not both", param_hint="--end")
    if end is not None:
        body.pop("duration", None)
        body["end"] = parse_when(end, "--end", allow_now=False)
    if duration_ is not None:
        body.pop("end", None)
        body["duration"] = duration_
    if "end" not in body and "duration" not in body:
        raise typer.BadParameter(
            "say how long: --duration 48h, or --end TIME", param_hint="--duration/--end"
        )
    if start is not None:
        body["start"] = parse_when(start, "--start")
    if before_end is not None:
        body["before_end"] = before_end
    if grace is not None:
        body["grace"] = grace
    c = client()
    lease = c.leases.create(**body)
    if wait:
        lease = wait_lease(c, lease.name, timeout)

    def human() -> None:
        show_lease(lease)
        output.note(
            f"charged {amounts(lease.cost)}; 'ecliptic lease delete {lease.name}' "
            "ends it and refunds what it did not use"
        )

    emit(lease, human)


@command(app, "list")
def list_(
    ended: Annotated[bool, typer.Option("--ended", help="Include ended leases.")] = False,
) -> None:
    """List the tenancy's leases, soonest first."""
    rows = client().leases.list(ended=ended)
    emit(
        rows,
        lambda: output.table(
            ["NAME", "PHASE", "START", "END", "RESERVATIONS", "COST"],
            [
                [
                    x.name,
                    x.phase,
                    output.when(x.start),
                    output.when(x.end),
                    _summary(x),
                    amounts(x.cost),
                ]
                for x in rows
            ],
            empty="no leases" if ended else "no live leases (--ended shows ended ones)",
        ),
    )


@command(app, "show")
def show(
    name: Name,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait until it is ACTIVE first (it may start later).")
    ] = False,
    timeout: Timeout = 300,
) -> None:
    """Show one lease: its window, phase, reservations with their hosts, and its cost."""
    c = client()
    lease = wait_lease(c, name, timeout) if wait else c.leases.get(name)
    emit(lease, lambda: show_lease(lease))


@command(
    app,
    "update",
    help="Change a lease; the cost difference is charged or refunded.\n\n"
    "A lease that has not started can be moved (--start; it keeps its length unless "
    "--end, --extend or --shorten say otherwise); a running one can be extended or "
    "shortened. --resize NAME=COUNT grows or shrinks one reservation (hosts, slots or "
    "slices). Examples:\n\n"
    "ecliptic lease update train --extend 12h\n\n"
    "ecliptic lease update train --resize hosts=4 --resize slots=2",
)
def update(
    name: Name,
    extend: Annotated[
        str | None,
        typer.Option("--extend", metavar="DURATION", help="Move the end later by this much."),
    ] = None,
    shorten: Annotated[
        str | None,
        typer.Option("--shorten", metavar="DURATION", help="Move the end earlier by this much."),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--end", metavar="TIME", help=f"A new end: {END_HELP}."),
    ] = None,
    start: Annotated[
        str | None,
        typer.Option(
            "--start", metavar="TIME", help=f"A new start (not started yet): {TIME_HELP}."
        ),
    ] = None,
    before_end: Annotated[
        str | None,
        typer.Option(
            "--before-end", metavar="DURATION", help="Mark the lease this long before its end."
        ),
    ] = None,
    resize: Annotated[
        list[str] | None,
        typer.Option(
            "--resize",
            metavar="NAME=COUNT",
            help="A new count for a reservation (hosts, slots, slices); repeat for more.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Change a lease; the cost difference is charged or refunded."""
    fields: dict[str, Any] = {}
    if start is not None:
        fields["start"] = parse_when(start, "--start")
    if end is not None:
        fields["end"] = parse_when(end, "--end", allow_now=False)
    for key, value in (("extend", extend), ("shorten", shorten), ("before_end", before_end)):
        if value is not None:
            fields[key] = value
    sizes = []
    for spec in resize or []:
        res, sep, n = spec.partition("=")
        try:
            sizes.append({"name": res, "count": int(n)})
        except ValueError:
            sep = ""
        if not sep or not res:
            raise typer.BadParameter(
                f"'{spec}': write NAME=COUNT, e.g. hosts=4", param_hint="--resize"
            )
    if sizes:
        fields["reservations"] = sizes
    if not fields:
        raise typer.BadParameter(
            "say what to change: --extend, --shorten, --end, --start, --before-end or --resize"
        )
    c = client()
    before = c.leases.get(name)
    lease = c.leases.update(before.id, **fields)

    def human() -> None:
        show_lease(lease)
        moved = _cost_change(before.cost, lease.cost)
        output.note(f"lease {lease.name}: updated" + (f"; {moved}" if moved else ""))

    emit(lease, human)


LeaseNames = Annotated[
    list[str], typer.Argument(metavar="NAME", help="Lease names or ids.", show_default=False)
]


@command(app, "retry")
def retry(name: Name) -> None:
    """Start a lease in ERROR again (its reason says what stopped it; 'lease end' gives up)."""
    lease = client().leases.retry(name)

    def human() -> None:
        show_lease(lease)
        output.note(f"lease {lease.name}: starting again; 'ecliptic lease events {name}'")

    emit(lease, human)


@command(app, "end")
def end_(names: LeaseNames) -> None:
    """End leases now: unused credit is refunded (shown), servers go after the grace period.

    A lease that has not started yet is cancelled and its whole cost refunded. The same
    as 'ecliptic lease delete'; 'lease update' never ends a lease.
    """
    _end_leases(names)


@command(app, "delete")
def delete(names: LeaseNames) -> None:
    """End leases now: unused credit is refunded, servers go after the grace period.

    A lease that has not started yet is cancelled and its whole cost refunded.
    """
    _end_leases(names)


def _end_leases(names: list[str]) -> None:
    c = client()
    ended: list[LeaseOut] = []
    lines: list[str] = []
    failed: list[ApiError] = []
    for ref in names:
        try:
            before = c.leases.get(ref)
            after = c.leases.delete(before.id)
        except ApiError as exc:
            if len(names) == 1:
                raise
            output.error(exc)
            failed.append(exc)
            continue
        ended.append(after)
        lines.append(_ended_text(before, after))

    def human() -> None:
        for line in lines:
            output.say(line)

    emit(ended, human)
    if failed:
        raise typer.Exit(exit_code_for(failed[0]))


def _ended_text(before: LeaseOut, after: LeaseOut) -> str:
    """What ending a lease did, in one line."""
    if before.phase in ("ENDING", "ENDED"):
        return f"lease {after.name}: already {before.phase.lower()}"
    moved = _cost_change(before.cost, after.cost)
    if moved.startswith("refunded "):
        refund = f"unused credit refunded: {moved.removeprefix('refunded ')}"
    else:
        refund = moved or "no unused credit to refund"
    if after.phase == "ENDED" and before.phase == "PENDING":
        return f"lease {after.name}: cancelled before its start; {refund}"
    grace = human_duration(after.grace_s)
    n = before.servers
    servers = (
        f"its {n} server{' goes' if n == 1 else 's go'} after the grace period ({grace})"
        if n
        else f"servers in it would go after the grace period ({grace})"
    )
    return f"lease {after.name}: ending; {refund}; {servers}"


@command(app, "events")
def events(name: Name) -> None:
    """Show what happened to a lease, and why."""
    rows = client().leases.events(name)
    emit(rows, lambda: output.events_table(rows))


def _window_hosts(w: WindowOut) -> str:
    if len(w.hosts) == 1:
        return ", ".join(next(iter(w.hosts.values())))
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in w.hosts.items())


@command(
    app,
    "find",
    help="Find the earliest windows where reservations fit, and what they would cost.\n\n"
    "Takes the reservation options of 'lease create' and how long (--duration). Exits "
    "with code 1 when nothing fits within the horizon. Example:\n\n"
    "ecliptic lease find --hosts 4 --where 'gpu_model == \"A100\"' --duration 48h",
)
def find(
    duration_: Annotated[
        str,
        typer.Option(
            "--duration", metavar="DURATION", help="How long: 48h, 2d, 90m.", show_default=False
        ),
    ],
    hosts: HostsOpt = None,
    where: WhereOpt = None,
    flavor: FlavorOpt = None,
    count: CountOpt = None,
    affinity: AffinityOpt = False,
    anti_affinity: AntiAffinityOpt = False,
    gpu_slice: SliceOpt = None,
    slice_flavor: SliceFlavorOpt = None,
    not_before: Annotated[
        str | None,
        typer.Option(
            "--not-before", metavar="TIME", help=f"Start no earlier than: {TIME_HELP}. Default now."
        ),
    ] = None,
    horizon: Annotated[
        str | None,
        typer.Option(
            "--horizon",
            metavar="DURATION",
            help="How far ahead to look (the API's default: 90d).",
            show_default=False,
        ),
    ] = None,
    alternatives: Annotated[
        int | None,
        typer.Option(
            "--alternatives",
            min=0,
            max=10,
            help="Later windows to show besides the earliest (the API's default: 3).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Find the earliest windows where reservations fit."""
    opts = ReservationOptions(
        hosts, where, flavor, gpu_slice, count, affinity, anti_affinity, slice_flavor
    )
    fields: dict[str, Any] = {
        "reservations": reservations(opts),
        "duration": duration_,
        "horizon": horizon,
        "alternatives": alternatives,
    }
    if not_before is not None:
        fields["not_before"] = parse_when(not_before, "--not-before")
    found = client().availability.earliest(**{k: v for k, v in fields.items() if v is not None})
    if not found:
        if current().json:
            output.emit_json(found)
        sys.stderr.write(
            f"nothing fits within the next {horizon or '90d'}"
            + (f" from {not_before}" if not_before else "")
            + ": ask for fewer or smaller reservations, a shorter --duration, or a longer "
            "--horizon\n"
        )
        raise typer.Exit(ExitCode.REFUSED)

    def human() -> None:
        output.table(
            ["#", "START", "END", "HOSTS", "COST"],
            [
                [
                    i,
                    f"{output.when(w.start)} ({until(w.start)})",
                    output.when(w.end),
                    _window_hosts(w),
                    amounts(w.cost),
                ]
                for i, w in enumerate(found, 1)
            ],
        )
        output.note("book one with 'ecliptic lease create NAME --start TIME' and the same options")

    emit(found, human)


# -- the calendar ---------------------------------------------------------------------------

DAY = timedelta(days=1)


def _aligned_start(bucket: timedelta) -> datetime:
    """Now, floored to the hour (or to local midnight for buckets of whole days)."""
    now = datetime.now().astimezone()
    if bucket >= DAY and bucket % DAY == timedelta(0):
        return now.replace(hour=0, minute=0, second=0, microsecond=0)
    if bucket >= timedelta(hours=1):
        return now.replace(minute=0, second=0, microsecond=0)
    return now.replace(second=0, microsecond=0)


def _labels(starts: list[datetime], bucket: timedelta) -> list[str]:
    """Two-line column headers: the day (when it changes) over the time of day."""
    out = []
    previous = None
    for at in (s.astimezone() for s in starts):
        if bucket >= DAY:
            top = at.strftime("%b") if previous is None or at.month != previous.month else ""
            bottom = at.strftime("%d")
        else:
            top = at.strftime("%a") if previous is None or at.date() != previous.date() else ""
            bottom = at.strftime("%Hh") if at.minute == 0 else at.strftime("%H:%M")
        out.append(f"{top}\n{bottom}")
        previous = at
    return out


def _free_cell(free: int, total: int) -> Text:
    style = "green" if free >= total else ("red" if free <= 0 else "yellow")
    return Text(str(free), style=style if total else "dim")


def draw_calendar(rows: list[CalendarRowOut], bucket: timedelta) -> None:
    """One row per resource class, one column per bucket showing the free units."""
    if not rows or not rows[0].buckets:
        output.note("no capacity to show")
        return
    console = output.stdout()
    starts = [b.start for b in rows[0].buckets]
    totals = [max((b.total for b in r.buckets), default=0) for r in rows]
    label_w = max(len("RESOURCE"), *(len(r.resource) for r in rows))
    total_w = max(len("TOTAL"), *(len(str(t)) for t in totals))
    cell_w = max(3, *(len(str(b.free)) for r in rows for b in r.buckets))
    room = max(1, (console.width - label_w - total_w - 1) // (cell_w + 1))
    shown = min(len(starts), room)
    # One space left of every column but the first: 14 buckets fit 80 columns.
    t = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 0, 0, 1))
    t.add_column("RESOURCE", no_wrap=True)
    t.add_column("TOTAL", justify="right", no_wrap=True)
    for label in _labels(starts[:shown], bucket):
        t.add_column(label, justify="right", no_wrap=True, min_width=cell_w)
    for r, total in zip(rows, totals, strict=True):
        t.add_row(
            Text(r.resource),
            Text(str(total)),
            *(_free_cell(b.free, b.total) for b in r.buckets[:shown]),
        )
    console.print(t)
    output.note(
        f"free units per {human_duration(bucket.total_seconds())} bucket (the fewest free at "
        f"any moment of it) from {output.when(starts[0])}; -o json has the numbers"
    )
    if shown < len(starts):
        output.note(
            f"showing {shown} of {len(starts)} buckets to fit the screen: use a longer "
            "--bucket or fewer --days"
        )


@command(
    top,
    "calendar",
    help="Show free capacity per resource class over time.\n\n"
    "One row per resource class (hosts, GPUs, GPU slices, vCPUs), one column per time "
    "bucket with how many units are free (green: all, yellow: some, red: none). "
    "-o json prints the API's numbers (total, reserved, free per bucket).",
)
def calendar(
    days: Annotated[int, typer.Option("--days", min=1, max=366, help="How many days.")] = 7,
    bucket: Annotated[
        str, typer.Option("--bucket", metavar="DURATION", help="Bucket length: 1h, 6h, 1d.")
    ] = "12h",
    start: Annotated[
        str | None,
        typer.Option(
            "--start",
            metavar="TIME",
            help=f"First bucket: {TIME_HELP}. Default: this hour (today for whole-day buckets).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Show free capacity per resource class over time."""
    step = duration(bucket, "--bucket")
    if step <= timedelta(0):
        raise typer.BadParameter("a bucket must be at least 1m", param_hint="--bucket")
    when = parse_when(start, "--start") if start is not None else _aligned_start(step)
    first = None if when == "now" else when
    rows = client().availability.calendar(start=first, days=days, bucket=bucket)
    emit(rows, lambda: draw_calendar(rows, step))
