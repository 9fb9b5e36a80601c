"""``ecliptic service`` and ``ecliptic ssh-key``: services reached through the tunnel gateway.

A service is reserved with a random subdomain; its one-time association token lets one client
bind its SSH key (``ecliptic tunnel connect --token T --to URL``). People open
``<subdomain>.<domain>``: public services directly, the others after signing in, if they are
on the access list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ecliptic.cli import output
from ecliptic.cli.session import client, command, emit
from ecliptic.client import ServiceOut

app = typer.Typer(help="Services reached by name through the tunnel gateway.")
key_app = typer.Typer(help="Your SSH keys: they sign you in to the gateway's jump host.")

COLUMNS = ["NAME", "URL", "ACCESS", "PROTOCOL", "AGE"]


def _users(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [u.strip() for u in value.split(",") if u.strip()]


def _show(s: ServiceOut) -> None:
    live = [t for t in s.tunnels if t.healthy]
    output.fields(
        [
            ("name", s.name),
            ("id", s.id),
            ("url", s.url),
            ("protocol", s.protocol),
            ("access", "public" if s.public else ", ".join(s.access) or "nobody"),
            ("liveness", f"{s.liveness_path} every {s.liveness_period_s} s"
             if s.liveness_path else "none"),
            ("read timeout", f"{s.read_timeout_s} s"),
            ("tunnels", f"{len(live)} healthy of {len(s.tunnels)}"),
            ("keys", ", ".join(
                f"{k.id[:8]} {k.fingerprint}" + (" (revoked)" if k.revoked_at else "")
                for k in s.keys
            ) or "none bound yet"),
        ]
    )  # fmt: skip
    if s.token is not None:
        output.say(
            f"\nAssociation token (shown once, valid until {output.when(s.token.expires_at)}):\n"
            f"  {s.token.token}\n"
            f"Connect a client with:\n"
            f"  ecliptic tunnel connect --token {s.token.token} --to http://localhost:PORT"
        )


@command(app, "create")
def create(
    name: Annotated[str, typer.Argument(help="Name of the service in your tenancy.")],
    public: Annotated[bool, typer.Option("--public", help="Reachable without signing in.")] = False,
    access: Annotated[
        str | None,
        typer.Option("--access", help="Comma-separated users who may reach it (default: you)."),
    ] = None,
    protocol: Annotated[
        str, typer.Option("--protocol", help="http, https (behind the tunnel) or tcp.")
    ] = "http",
    liveness_path: Annotated[
        str | None, typer.Option("--liveness-path", help="Path probed through each tunnel.")
    ] = None,
) -> None:
    """Reserve a subdomain for a service and print its one-time association token."""
    s = client().services.create(
        name=name,
        public=public,
        access=_users(access),
        protocol=protocol,
        liveness_path=liveness_path,
    )
    emit(s, lambda: _show(s))


@command(app, "list")
def list_services() -> None:
    """List your tenancy's services."""
    rows = client().services.list()
    emit(
        rows,
        lambda: output.table(
            COLUMNS,
            [
                [s.name, s.url, "public" if s.public else "signed-in", s.protocol,
                 output.age(s.created_at)]
                for s in rows
            ],
            empty="no services yet: 'ecliptic service create NAME'",
        ),
    )  # fmt: skip


@command(app, "show")
def show(name: Annotated[str, typer.Argument(help="Service name or id.")]) -> None:
    """Show a service: URL, access list, bound keys and live tunnels."""
    s = client().services.get(name)
    emit(s, lambda: _show(s))


@command(app, "update")
def update(
    name: Annotated[str, typer.Argument(help="Service name or id.")],
    access: Annotated[
        str | None, typer.Option("--access", help="Replace the access list (comma-separated).")
    ] = None,
    public: Annotated[
        bool | None, typer.Option("--public/--signed-in", help="Public or signed-in.")
    ] = None,
) -> None:
    """Change who may reach a service; the gateway applies it within seconds."""
    s = client().services.update(name, access=_users(access), public=public)
    emit(s, lambda: _show(s))


@command(app, "token")
def token(
    name: Annotated[str, typer.Argument(help="Service name or id.")],
    ttl_minutes: Annotated[int | None, typer.Option("--ttl-minutes", min=1)] = None,
) -> None:
    """Issue another one-time association token (to add a load-balanced client)."""
    t = client().services.token(name, ttl_minutes)
    emit(t, lambda: output.say(t.token))


@command(app, "revoke-key")
def revoke_key(
    name: Annotated[str, typer.Argument(help="Service name or id.")],
    key_id: Annotated[str, typer.Argument(help="Key id (see 'service show').")],
) -> None:
    """Unbind a client's key: its tunnels are cut and it cannot connect again."""
    client().services.revoke_key(name, key_id)
    output.note(f"key {key_id} of service {name} revoked")


@command(app, "events")
def events(name: Annotated[str, typer.Argument(help="Service name or id.")]) -> None:
    """Who changed a service and how: tokens issued, keys bound and revoked, access."""
    rows = client().services.events(name)
    emit(
        rows,
        lambda: output.table(
            ["AT", "WHAT"],
            [[output.when(e.at), e.reason] for e in rows],
            empty="no events",
        ),
    )


@command(app, "delete")
def delete(
    names: Annotated[list[str], typer.Argument(help="Service names or ids.")],
) -> None:
    """Delete services: their subdomains stop answering and their tunnels are cut."""
    c = client()
    for name in names:
        c.services.delete(name)
        output.note(f"service {name} deleted")


@command(key_app, "add")
def key_add(
    name: Annotated[str, typer.Argument(help="A name for the key, e.g. laptop.")],
    path: Annotated[Path, typer.Argument(help="Public key file, e.g. ~/.ssh/id_ed25519.pub.")],
) -> None:
    """Register an SSH public key for the jump host (``ssh -J you@gateway:2223 NAME``)."""
    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file", param_hint="PATH")
    k = client().ssh_keys.add(name, path.read_text().strip())
    emit(k, lambda: output.say(f"added {k.name}: {k.fingerprint}"))


@command(key_app, "list")
def key_list() -> None:
    """List your SSH keys."""
    rows = client().ssh_keys.list()
    emit(
        rows,
        lambda: output.table(
            ["NAME", "FINGERPRINT", "AGE"],
            [[k.name, k.fingerprint, output.age(k.created_at)] for k in rows],
            empty="no SSH keys: 'ecliptic ssh-key add NAME ~/.ssh/id_ed25519.pub'",
        ),
    )


@command(key_app, "delete")
def key_delete(name: Annotated[str, typer.Argument(help="Key name or id.")]) -> None:
    """Remove one of your SSH keys."""
    client().ssh_keys.delete(name)
    output.note(f"SSH key {name} removed")
