"""``ecliptic platform-type`` (the catalogue) and ``ecliptic platform`` (what was made)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import webbrowser
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from ecliptic.cli import output
from ecliptic.cli.exitcodes import ExitCode
from ecliptic.cli.session import client, command, current, emit
from ecliptic.client import ApiError, PlatformOut, PlatformPlanOut, PlatformTypeOut, WaitError
from ecliptic.platforms.types import TypeFileError, load_type

type_app = typer.Typer(help="Platform types: the catalogue of what can be launched.")
app = typer.Typer(help="Platforms: Slurm clusters, notebooks, workstations, made in one step.")

Ref = Annotated[str, typer.Argument(help="Platform name or id.", show_default=False)]
Params = Annotated[
    list[str] | None,
    typer.Option("--param", "-p", help="A parameter: name=value (repeat).", show_default=False),
]


# ------------------------------------------------------------------------------ types


@command(type_app, "list")
def type_list() -> None:
    """List the platform types on offer."""
    types = client().platform_types.list()
    emit(
        types,
        lambda: output.table(
            ["NAME", "LABEL", "VERSION", "DESCRIPTION"],
            [[t.name, t.label, t.version, t.description] for t in types],
            empty="no platform types",
        ),
    )


def _show_type(t: PlatformTypeOut) -> None:
    output.fields(
        [
            ("name", t.name),
            ("label", t.label),
            ("version", t.version),
            ("description", t.description),
            ("roles", ", ".join(r["name"] for r in t.roles)),
            ("services", ", ".join(s["name"] for s in t.services)),
            ("steps", ", ".join(t.steps)),
            ("source", t.source),
        ]
    )
    rows = []
    for p in t.parameters:
        if p.get("hidden"):
            continue
        bounds = []
        if p.get("min") is not None:
            bounds.append(f">= {p['min']:g}")
        if p.get("max") is not None:
            bounds.append(f"<= {p['max']:g}")
        if p.get("choices"):
            bounds.append("|".join(p["choices"]))
        rows.append(
            [
                p["name"],
                p["kind"],
                "" if p.get("default") is None else str(p["default"]),
                " ".join(bounds),
                ("required " if p.get("required") else "")
                + ("immutable" if p.get("immutable") else ""),
                p.get("help") or p.get("label") or "",
            ]
        )
    output.table(["PARAMETER", "KIND", "DEFAULT", "ALLOWED", "", "HELP"], rows)


@command(type_app, "show")
def type_show(name: Annotated[str, typer.Argument(help="Platform type name.")]) -> None:
    """Show a platform type: its parameters, roles and services."""
    t = client().platform_types.get(name)
    emit(t, lambda: _show_type(t))


@command(type_app, "validate")
def type_validate(
    path: Annotated[Path, typer.Argument(help="A platform type file (YAML).", exists=False)],
) -> None:
    """Check a platform type file: every problem with its line and column (no server needed)."""
    try:
        t = load_type(path)
    except TypeFileError as exc:
        problems = [p.__dict__ for p in exc.problems]
        if current().json:
            output.emit_json({"valid": False, "path": str(path), "problems": problems})
        else:
            for p in exc.problems:
                where = f"{p.where}: " if p.where else ""
                output.stderr().print(
                    f"{path}:{p.line}:{p.column}: {where}{p.message}", highlight=False, markup=False
                )
            output.note(f"{len(exc.problems)} problem(s) in {path}")
        raise typer.Exit(ExitCode.REFUSED) from None
    emit(
        {"valid": True, "path": str(path), "name": t.name},
        lambda: output.say(f"{path}: platform type '{t.name}' {t.version} is valid"),
    )


# ------------------------------------------------------------------------------ platforms


def _value(kind: str, raw: str, name: str) -> Any:
    """A ``-p`` value as its parameter's kind wants it."""
    if kind == "integer":
        try:
            return int(raw)
        except ValueError:
            raise typer.BadParameter(f"{name} is a whole number, not {raw!r}") from None
    if kind == "number":
        try:
            return float(raw)
        except ValueError:
            raise typer.BadParameter(f"{name} is a number, not {raw!r}") from None
    if kind == "boolean":
        low = raw.lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        raise typer.BadParameter(f"{name} is true or false, not {raw!r}")
    return raw


def _params(pairs: list[str] | None, ptype: PlatformTypeOut) -> dict[str, Any]:
    kinds = {p["name"]: p["kind"] for p in ptype.parameters}
    out: dict[str, Any] = {}
    for pair in pairs or []:
        name, sep, raw = pair.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"give parameters as name=value, not {pair!r}")
        # An unknown name is sent as text: the API names it (and what it might be).
        out[name] = _value(kinds.get(name, "string"), raw, name)
    return out


def _progress(p: PlatformOut) -> str:
    return f"{p.name}: {p.phase} {p.phase_reason}"


def show_platform(p: PlatformOut) -> None:
    """A platform, for people."""
    output.fields(
        [
            ("name", p.name),
            ("type", f"{p.type} {p.type_version}"),
            ("phase", p.phase),
            ("reason", p.phase_reason),
            ("lease", p.lease_id or ("(preemptible)" if p.preemptible else "(on demand)")),
            ("parameters", ", ".join(f"{k}={v}" for k, v in p.parameters.items() if v is not None)),
            ("access", ", ".join(p.access) or "nobody"),
            ("created", output.when(p.created_at)),
        ]
    )
    output.table(
        ["SERVER", "ROLE", "PHASE", "ADDRESS", "FABRIC"],
        [[s.name, s.role, s.phase, s.address, s.fabric_address] for s in p.servers],
        empty="no servers",
    )
    output.table(
        ["SERVICE", "LABEL", "URL", "UP"],
        [
            [
                s.name,
                s.label,
                s.url or ("ecliptic platform ssh" if s.protocol == "tcp" else ""),
                "yes" if s.healthy else ("no" if s.healthy is False else ""),
            ]
            for s in p.services
        ],
        empty="no services",
    )
    if p.failed:
        output.note(
            f"step '{p.failed.get('step')}' failed on {p.failed.get('server')} "
            f"(exit {p.failed.get('exit_code')}); its output:\n{p.failed.get('output', '')}"
            "\nfix what it says, then: ecliptic platform retry " + p.name
        )
    if p.usage.strip():
        output.stdout().print("\n" + p.usage.strip(), highlight=False, markup=False)


def _wait(ref: str, timeout: float) -> PlatformOut:
    c = client()
    seen: set[int] = set()

    def events() -> None:
        for e in c.platforms.events(ref):
            key = hash((e.at, e.reason))
            if key not in seen:
                seen.add(key)
                if not current().json:
                    output.note(f"{e.at:%H:%M:%S} {e.reason}")

    try:
        with output.waiting(f"platform {ref}") as update:

            def changed(p: PlatformOut) -> None:
                update(_progress(p))
                events()

            p = c.platforms.wait(ref, {"READY", "DEGRADED"}, timeout, on_change=changed)
        events()
        return p
    except WaitError as exc:
        events()
        last = exc.last
        if isinstance(last, PlatformOut):
            emit(last, lambda: show_platform(last))
        raise


def _show_plan(plan: PlatformPlanOut) -> None:
    output.table(
        ["SERVER", "ROLE", "FLAVOR", "IMAGE", "HOST"],
        [[s.name, s.role, s.flavor, s.image, s.host] for s in plan.servers],
    )
    hourly = ", ".join(f"{v} {rc}" for rc, v in plan.hourly.items())
    output.say(
        f"{plan.name} ({plan.type}) fits: {len(plan.servers)} server(s), {plan.vcpus} vCPU, "
        f"{output.mib(plan.memory_mb)}"
        + (f", {plan.gpus} GPU" if plan.gpus else "")
        + (f"; in lease {plan.lease} (paid with it)" if plan.lease else "; on demand")
        + (f"; charged per hour: {hourly}" if hourly else "")
        + ". Nothing was made."
    )


@command(app, "create")
def platform_create(
    type_name: Annotated[str, typer.Argument(metavar="TYPE", help="Platform type.")],
    name: Annotated[str, typer.Argument(help="Name of the new platform.")],
    lease: Annotated[
        str | None, typer.Option("--lease", help="The running lease it is made in.")
    ] = None,
    param: Params = None,
    access: Annotated[
        str | None,
        typer.Option("--access", help="Members who may use it, comma-separated (default: you)."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until READY, showing each step.")
    ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait.")] = 900,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show what it would make and cost; make nothing."),
    ] = False,
    preemptible: Annotated[
        bool,
        typer.Option(
            "--preemptible",
            help="On capacity nobody reserved (where allowed): deleted when a lease needs it.",
        ),
    ] = False,
) -> None:
    """Create a platform: checked and placed now (all of it or nothing), built in seconds."""
    c = client()
    ptype = c.platform_types.get(type_name)
    fields: dict[str, Any] = {
        "name": name,
        "type": type_name,
        "parameters": _params(param, ptype),
    }
    if lease is not None:
        fields["lease"] = lease
    if access is not None:
        fields["access"] = [a.strip() for a in access.split(",") if a.strip()]
    if preemptible:
        fields["preemptible"] = True
    if dry_run:
        plan = c.platforms.plan(**fields)
        emit(plan, lambda: _show_plan(plan))
        return
    p = c.platforms.create(**fields)
    if wait:
        p = _wait(name, timeout)
    emit(p, lambda: show_platform(p))


@command(app, "list")
def platform_list() -> None:
    """List your tenancy's platforms."""
    rows = client().platforms.list()
    emit(
        rows,
        lambda: output.table(
            ["NAME", "TYPE", "PHASE", "SERVERS", "REASON"],
            [[p.name, p.type, p.phase, len(p.servers), p.phase_reason] for p in rows],
            empty="no platforms",
        ),
    )


@command(app, "show")
def platform_show(ref: Ref) -> None:
    """Show a platform: servers, services (URLs), usage, and a failed step's output."""
    p = client().platforms.get(ref)
    emit(p, lambda: show_platform(p))


@command(app, "wait")
def platform_wait(ref: Ref, timeout: Annotated[float, typer.Option("--timeout")] = 900) -> None:
    """Wait until a platform is READY (or DEGRADED), showing its timeline."""
    p = _wait(ref, timeout)
    emit(p, lambda: show_platform(p))


@command(app, "patch")
def platform_patch(
    ref: Ref,
    param: Params = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait")] = False,
    timeout: Annotated[float, typer.Option("--timeout")] = 900,
) -> None:
    """Change mutable parameters (e.g. -p compute_count=4)."""
    c = client()
    current_p = c.platforms.get(ref)
    ptype = c.platform_types.get(current_p.type)
    p = c.platforms.patch(ref, _params(param, ptype))
    if wait:
        p = _wait(ref, timeout)
    emit(p, lambda: show_platform(p))


@command(app, "delete")
def platform_delete(
    ref: Ref,
    wait: Annotated[bool, typer.Option("--wait/--no-wait")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False,
) -> None:
    """Delete a platform with its servers, services and networks."""
    c = client()
    p = c.platforms.get(ref)
    if not yes and sys.stdin.isatty() and not current().json:
        names = ", ".join(s.name for s in p.servers)
        if not typer.confirm(f"delete platform {p.name} and its servers ({names})?"):
            raise typer.Exit(ExitCode.OK)
    p = c.platforms.delete(ref)
    if wait:
        c.platforms.wait_deleted(ref)
        output.say(f"platform {p.name}: deleted")
        return
    emit(p, lambda: output.say(f"platform {p.name}: deleting"))


@command(app, "retry")
def platform_retry(ref: Ref) -> None:
    """Resume a FAILED platform from the step that failed."""
    p = client().platforms.retry(ref)
    emit(p, lambda: output.say(f"platform {p.name}: {p.phase} ({p.phase_reason})"))


@command(app, "events")
def platform_events(ref: Ref) -> None:
    """The platform's timeline: steps with timings, services up and down, scaling."""
    rows = client().platforms.events(ref)
    emit(
        rows,
        lambda: output.table(
            ["AT", "PHASE", "WHAT"],
            [[output.when(e.at), e.to_phase, e.reason] for e in rows],
            empty="no events",
        ),
    )


@command(app, "access")
def platform_access(
    ref: Ref,
    users: Annotated[
        str | None,
        typer.Option("--set", help="Members who may use it, comma-separated ('' for nobody)."),
    ] = None,
) -> None:
    """Show or set who may use the platform's services."""
    c = client()
    if users is None:
        p = c.platforms.get(ref)
    else:
        p = c.platforms.set_access(ref, [u.strip() for u in users.split(",") if u.strip()])
    emit(p.access, lambda: output.say(", ".join(p.access) or "nobody"))


@command(app, "open")
def platform_open(
    ref: Ref,
    service: Annotated[str | None, typer.Argument(help="Service (default: the first).")] = None,
) -> None:
    """Print a service's URL, and open it in a browser where there is one."""
    p = client().platforms.get(ref)
    http = [s for s in p.services if s.protocol == "http" and s.url]
    chosen = next((s for s in http if s.name == service), None) if service else None
    if chosen is None and service is None and http:
        chosen = http[0]
    if chosen is None or chosen.url is None:
        names = ", ".join(s.name for s in http) or "none"
        raise ApiError(
            404, "not_found", f"platform {p.name} has no web service {service!r} (it has: {names})"
        )
    url = chosen.url
    emit({"service": chosen.name, "url": url}, lambda: output.say(url))
    if not current().json and sys.stdout.isatty():
        webbrowser.open(url)


@command(app, "ssh", context_settings={"allow_extra_args": True})
def platform_ssh(
    ref: Ref,
    role: Annotated[str | None, typer.Argument(help="Role (default: the ssh service's).")] = None,
    user: Annotated[str, typer.Option("--login", "-l", help="User in the server.")] = "root",
    dry_run: Annotated[
        bool, typer.Option("--print", help="Print the ssh command instead of running it.")
    ] = False,
) -> None:
    """SSH into a platform's server through the gateway's jump host (your registered key)."""
    c = client()
    p = c.platforms.get(ref)
    tcp = [s for s in p.services if s.protocol == "tcp" and s.subdomain]
    chosen = next((s for s in tcp if role is None or s.role == role), None)
    if chosen is None:
        raise ApiError(
            404,
            "not_found",
            f"platform {p.name} has no SSH service" + (f" on role {role}" if role else ""),
        )
    me = c.whoami().user
    host = urlsplit(c.url).hostname or "localhost"
    argv = [
        "ssh", "-J", f"{me}@{host}:{chosen.jump_port}",
        "-o", f"HostKeyAlias={chosen.subdomain}",
        f"{user}@{chosen.subdomain}",
    ]  # fmt: skip
    if dry_run or shutil.which("ssh") is None:
        emit({"argv": argv}, lambda: output.say(" ".join(argv)))
        return
    raise typer.Exit(subprocess.call(argv))
