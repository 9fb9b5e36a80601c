"""``ecliptic server``: create, list, show, delete, log, events and exec."""

from __future__ import annotations

import re
import sys
from typing import Annotated

import typer
from pydantic import ValidationError

from ecliptic.cli import output
from ecliptic.cli.exitcodes import exec_exit_code
from ecliptic.cli.session import client, command, current, delete_many, emit
from ecliptic.client import Client, Page, ServerNic, ServerOut
from ecliptic.phases import ServerPhase

app = typer.Typer(
    help="Servers: create, list, show, delete, read their log, run commands in them.",
    no_args_is_help=True,
)

Name = Annotated[str, typer.Argument(help="Server name or id.", show_default=False)]
Timeout = Annotated[
    float, typer.Option("--timeout", help="Seconds to wait before giving up (exit code 7).")
]
STDIN_LIMIT = 1024 * 1024


def nics(networks: list[str], direct: bool, ports: list[str]) -> list[ServerNic]:
    """Interfaces from ``--network NAME[:direct]``, ``--direct-port`` and ``--port``."""
    if direct and not networks:
        raise typer.BadParameter(
            "it makes the --network interfaces direct: give at least one --network",
            param_hint="--direct-port",
        )
    out = []
    try:
        for spec in networks:
            net, sep, kind = spec.partition(":")
            if not net or (sep and kind not in ("direct", "normal")):
                raise typer.BadParameter(
                    f"'{spec}': write a network name, or NAME:direct for a direct port",
                    param_hint="--network",
                )
            vnic = kind if sep else ("direct" if direct else "normal")
            out.append(ServerNic(network=net, vnic_type="direct" if vnic == "direct" else "normal"))
        out += [ServerNic(port=p) for p in ports]
    except ValidationError as exc:
        raise typer.BadParameter(exc.errors()[0]["msg"]) from None
    return out


def wait_active(c: Client, ref: str, timeout: float) -> ServerOut:
    """Wait for a server to be ACTIVE, with a spinner that shows its phase."""
    with output.waiting(f"waiting for server {ref}") as update:
        return c.servers.wait(
            ref,
            timeout=timeout,
            on_change=lambda s: update(f"server {s.name}: {s.phase} ({s.phase_reason})"),
        )


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x9b]")


def _printable(text: str) -> str:
    """A server's console log as safe terminal text: its processes write it, so escape
    sequences (which could retitle or rewrite the reader's terminal) are shown, not run."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def show_server(srv: ServerOut) -> None:
    """A server's fields and its interfaces, for people."""
    gpus = f"{srv.gpus}x {srv.gpu_model}" if srv.gpus else ""
    output.fields(
        [
            ("name", srv.name),
            ("id", srv.id),
            ("phase", srv.phase),
            ("reason", srv.phase_reason),
            ("flavor", f"{srv.flavor} ({srv.kind})"),
            ("image", srv.status.get("image") or srv.image),
            ("security groups", ", ".join(srv.security_groups)),
            ("host", srv.host),
            ("vcpus", srv.vcpus),
            ("memory", output.mib(srv.memory_mb)),
            ("gpus", gpus),
            ("addresses", _addresses(srv)),
            ("limits", _limits(srv)),
            ("runs", _runs(srv)),
            ("created", output.when(srv.created_at)),
        ]
    )
    if srv.ports:
        net_of = {ip: net for net, ips in srv.addresses.items() for ip in ips}
        output.stdout().print()
        output.table(
            ["IFACE", "NETWORK", "ADDRESS", "MAC", "VNIC", "PORT", "PHASE"],
            [
                [
                    p.status.get("ifname") or f"#{p.device_index}",
                    net_of.get(p.ip_address),
                    p.ip_address,
                    p.mac,
                    p.vnic_type,
                    p.name,
                    p.phase,
                ]
                for p in sorted(srv.ports, key=lambda p: p.device_index)
            ],
        )


def _limits(srv: ServerOut) -> str:
    """Whether the flavor's CPU and memory limits are enforced, and why not."""
    if "limits_applied" not in srv.status:
        return ""
    if srv.status["limits_applied"]:
        return f"enforced ({srv.vcpus} vCPU, {output.mib(srv.memory_mb)})"
    return f"not enforced: {srv.status.get('limits_note') or 'unknown reason'}"


def _runs(srv: ServerOut) -> str:
    """On demand, preemptible, or in which lease."""
    if srv.lease_id:
        where = f", reservation {srv.reservation}" if srv.reservation else ""
        return f"in lease {srv.lease_id}{where}"
    if srv.preemptible:
        return "preemptible: stopped when a lease needs its room"
    return "on demand"


def _addresses(srv: ServerOut) -> str:
    return ", ".join(f"{net}={','.join(ips)}" for net, ips in sorted(srv.addresses.items()))


@command(
    app,
    "create",
    help="Create a server.\n\n"
    "Interfaces come in order: one per --network (eth0, eth1, ...), then one per --port. "
    "'--network data --direct-port' gives a direct port on network data; "
    "'--network mgmt --network data:direct' gives a normal eth0 on mgmt and a direct eth1 "
    "on data.\n\n"
    "By default a server runs on demand; '--lease NAME' runs it on capacity a lease "
    "reserved ('ecliptic lease create'), '--preemptible' on room nobody reserved.",
)
def create(
    name: Annotated[
        str, typer.Argument(help="Name: lowercase letters, digits and '-'.", show_default=False)
    ],
    flavor: Annotated[
        str, typer.Option("--flavor", help="Flavor ('ecliptic flavor list').", show_default=False)
    ],
    network: Annotated[
        list[str] | None,
        typer.Option(
            "--network",
            metavar="NAME[:direct]",
            help="An interface on this network; repeat for more. NAME:direct makes it a "
            "direct (SR-IOV) port. Default: the tenancy's 'default' network.",
            show_default=False,
        ),
    ] = None,
    direct_port: Annotated[
        bool,
        typer.Option("--direct-port", help="Make every --network interface a direct port."),
    ] = False,
    port: Annotated[
        list[str] | None,
        typer.Option(
            "--port",
            metavar="PORT",
            help="Plug an existing port ('ecliptic port create'); after the --network ones.",
            show_default=False,
        ),
    ] = None,
    lease: Annotated[
        str | None,
        typer.Option(
            "--lease",
            metavar="LEASE",
            help="Run it inside this lease, on the capacity it reserved ('ecliptic lease "
            "list'). It goes when the lease ends, after the lease's grace period.",
            show_default=False,
        ),
    ] = None,
    reservation: Annotated[
        str | None,
        typer.Option(
            "--reservation",
            metavar="NAME",
            help="Which reservation of the --lease (hosts, slots, slices), when it has several.",
            show_default=False,
        ),
    ] = None,
    preemptible: Annotated[
        bool,
        typer.Option(
            "--preemptible",
            help="Run it on room nobody reserved, without a lease; it is stopped when a "
            "lease needs that room.",
        ),
    ] = False,
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            metavar="NAME",
            help="The image it boots from (default: base; see 'ecliptic image list').",
            show_default=False,
        ),
    ] = None,
    security_group: Annotated[
        list[str] | None,
        typer.Option(
            "--security-group",
            metavar="NAME",
            help="A security group of its ports (repeat for several; default: default).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is ACTIVE.")] = False,
    timeout: Timeout = 300,
) -> None:
    """Create a server."""
    if reservation and not lease:
        raise typer.BadParameter(
            "it picks a reservation of a --lease: give --lease too", param_hint="--reservation"
        )
    if preemptible and lease:
        raise typer.BadParameter(
            "a server runs either inside a lease or preemptible, not both",
            param_hint="--preemptible",
        )
    c = client()
    srv = c.servers.create(
        name,
        flavor,
        nics(network or [], direct_port, port or []),
        lease=lease,
        reservation=reservation,
        preemptible=preemptible,
        image=image,
        security_groups=security_group,
    )
    if wait:
        srv = wait_active(c, srv.name, timeout)
    emit(srv, lambda: show_server(srv))


@command(app, "list")
def list_(
    name: Annotated[
        str | None, typer.Option("--name", help="Only names containing this.", show_default=False)
    ] = None,
    phase: Annotated[
        ServerPhase | None,
        typer.Option("--phase", help="Only servers in this phase.", case_sensitive=False),
    ] = None,
    host: Annotated[
        str | None, typer.Option("--host", help="Only servers on this host.", show_default=False)
    ] = None,
    flavor: Annotated[
        str | None, typer.Option("--flavor", help="Only this flavor.", show_default=False)
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, max=1000, help="Page size (the API's default: 100)."),
    ] = None,
    all_: Annotated[bool, typer.Option("--all", help="Fetch every page.")] = False,
    deleted: Annotated[
        bool,
        typer.Option(
            "--deleted",
            help="Servers deleted lately instead (kept ECLIPTIC_DELETED_SERVER_RETENTION_HOURS, "
            "a week by default), latest first, with why they went.",
        ),
    ] = False,
) -> None:
    """List servers of the tenancy, oldest first."""
    c = client()
    if deleted:
        gone = c.servers.deleted(limit=limit)
        emit(
            gone,
            lambda: output.table(
                ["NAME", "FLAVOR", "HOST", "DELETED", "REASON"],
                [[s.name, s.flavor, s.host, s.deleted_at, s.reason] for s in gone],
                empty="no server was deleted lately",
            ),
        )
        return
    query = {"name": name, "phase": phase.value if phase else None, "host": host, "flavor": flavor}
    if all_:
        page = Page[ServerOut](items=list(c.servers.iter(**query, page_size=limit)))
    else:
        page = c.servers.list(**query, limit=limit)

    def human() -> None:
        output.table(
            ["NAME", "PHASE", "FLAVOR", "HOST", "ADDRESSES", "AGE"],
            [[s.name, s.phase, s.flavor, s.host, _addresses(s), s.created_at] for s in page.items],
            empty="no servers",
        )
        if page.next:
            output.note("more servers exist: use --all, or a larger --limit")

    emit(page, human)


@command(app, "show")
def show(
    name: Name,
    wait: Annotated[bool, typer.Option("--wait", help="Wait until it is ACTIVE first.")] = False,
    timeout: Timeout = 300,
) -> None:
    """Show one server, with its interfaces."""
    c = client()
    srv = wait_active(c, name, timeout) if wait else c.servers.get(name)
    emit(srv, lambda: show_server(srv))


@command(app, "delete")
def delete(
    names: Annotated[
        list[str],
        typer.Argument(metavar="NAME", help="Server names or ids.", show_default=False),
    ],
    wait: Annotated[bool, typer.Option("--wait", help="Wait until they are gone.")] = False,
    timeout: Timeout = 300,
) -> None:
    """Delete servers (they go to DELETING, then disappear)."""
    c = client()

    def gone(srv: ServerOut) -> None:
        with output.waiting(f"waiting for server {srv.name} to go") as update:
            c.servers.wait_deleted(
                srv.id,
                timeout=timeout,
                on_change=lambda s: update(f"server {s.name}: {s.phase} ({s.phase_reason})"),
            )

    delete_many("server", names, c.servers.delete, gone if wait else None)


@command(app, "log")
def log(
    name: Name,
    tail: Annotated[
        int | None,
        typer.Option(
            "--tail",
            min=1,
            metavar="BYTES",
            help="How much of the end (the API's default: 64 KiB).",
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Keep printing what the log gains until the server is gone (or Ctrl-C).",
        ),
    ] = False,
    interval: Annotated[
        float,
        typer.Option("--interval", min=0.05, max=60, help="Seconds between looks (--follow)."),
    ] = 0.5,
) -> None:
    """Print the end of a server's console log; --follow keeps printing it."""
    c = client()
    doc = c.servers.log(name, tail_bytes=tail)

    def human() -> None:
        text = _printable(doc.log)
        sys.stdout.write(text if not text or text.endswith("\n") else text + "\n")
        sys.stdout.flush()

    if not follow:
        emit(doc, human)
        return
    if current().json:
        raise typer.BadParameter("--follow prints text as it comes: leave out --output json")
    sys.stdout.write(_printable(doc.log))
    sys.stdout.flush()
    _follow(c, name, doc.next, interval)


def _follow(c: Client, name: str, after: int, interval: float) -> None:
    """Print what the log gains until the server is gone."""
    import time

    from ecliptic.client import ApiError

    while True:
        time.sleep(interval)
        try:
            doc = c.servers.log(name, after=after, tail_bytes=1024 * 1024)
        except ApiError as exc:
            if exc.status == 404:
                output.note(f"server {name} is gone")
                return
            raise
        if doc.log:
            sys.stdout.write(_printable(doc.log))
            sys.stdout.flush()
        after = doc.next


@command(app, "wait")
def wait(
    name: Name,
    for_: Annotated[
        str,
        typer.Option(
            "--for",
            metavar="PHASE",
            help="ACTIVE (running), DELETED (gone), or another phase (ERROR, BUILDING...).",
        ),
    ] = "ACTIVE",
    timeout: Timeout = 300,
) -> None:
    """Wait until a server reaches a phase (exit 7 if it cannot, or not in time)."""
    c = client()
    target = for_.upper()
    known = {p.value for p in ServerPhase} | {"DELETED"}
    if target not in known:
        raise typer.BadParameter(
            f"{for_!r} is not a server phase: use one of {', '.join(sorted(known))}",
            param_hint="--for",
        )
    if target == "DELETED":
        with output.waiting(f"waiting for server {name} to go") as update:
            c.servers.wait_deleted(
                name,
                timeout=timeout,
                on_change=lambda s: update(f"server {s.name}: {s.phase} ({s.phase_reason})"),
            )
        if current().json:
            output.emit_json({"server": name, "phase": "DELETED"})
        else:
            output.say(f"server {name}: gone")
        return
    with output.waiting(f"waiting for server {name}") as update:
        srv = c.servers.wait(
            name,
            phases={target},
            timeout=timeout,
            on_change=lambda s: update(f"server {s.name}: {s.phase} ({s.phase_reason})"),
        )
    emit(srv, lambda: output.say(f"server {srv.name}: {srv.phase}"))


@command(app, "events")
def events(name: Name) -> None:
    """Show a server's phase changes and why they happened."""
    rows = client().servers.events(name)
    emit(rows, lambda: output.events_table(rows))


@command(
    app,
    "exec",
    help="Run a command in a server; its output and exit code become ours.\n\n"
    "Put the command after '--'. Our stdin goes to the command when it is not a terminal "
    "(up to 1 MiB), unless --no-stdin.",
)
def exec_(
    name: Name,
    argv: Annotated[
        list[str],
        typer.Argument(
            metavar="CMD",
            help="Command and arguments, after '--': ecliptic server exec web -- ls -l /",
            show_default=False,
        ),
    ],
    timeout: Annotated[
        float,
        typer.Option("--timeout", min=0.001, max=3600, help="Kill the command after this long."),
    ] = 60,
    no_stdin: Annotated[
        bool, typer.Option("--no-stdin", help="Do not pass our stdin to the command.")
    ] = False,
) -> None:
    """Run a command in a server; its output and exit code become ours."""
    data: bytes | None = None
    if not no_stdin and sys.stdin is not None and not sys.stdin.closed and not sys.stdin.isatty():
        data = sys.stdin.buffer.read(STDIN_LIMIT + 1)
        if len(data) > STDIN_LIMIT:
            raise typer.BadParameter("stdin is larger than 1 MiB; copy big files another way")
    res = client().servers.exec(name, argv, timeout=timeout, stdin=data)
    if current().json:
        output.emit_json(res)
    else:
        sys.stdout.write(res.stdout)
        sys.stdout.flush()
        sys.stderr.write(res.stderr)
        sys.stderr.flush()
    if res.timed_out:
        sys.stderr.write(f"error: the command timed out after {timeout:g} s and was killed\n")
    elif res.oom_killed:
        limit = output.mib(res.memory_limit_mb) if res.memory_limit_mb else "its flavor's"
        sys.stderr.write(f"killed: out of memory (flavor limit {limit})\n")
    raise typer.Exit(exec_exit_code(res.exit_code))


@command(app, "set-security-groups")
def set_security_groups(
    name: Name,
    security_group: Annotated[
        list[str],
        typer.Option("--security-group", metavar="NAME", help="A group (repeat for several)."),
    ],
) -> None:
    """Replace the security groups of every port of a server (applied within a second)."""
    names = client().security_groups.set_for_server(name, security_group)
    emit({"server": name, "security_groups": names},
         lambda: output.say(f"server {name}: security groups {', '.join(names)}"))  # fmt: skip
