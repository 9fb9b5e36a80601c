"""``ecliptic``: the command line of an Ecliptic cloud.

Every command but ``serve`` talks to the REST API through ``ecliptic.client``; ``serve``
runs the API itself. Exit codes are documented in ``ecliptic.cli.exitcodes`` and in
``ecliptic --help``: 0 ok, 1 refused, 2 usage, 3 not found, 4 conflict, 5 unauthenticated
or forbidden, 6 unreachable or server error, 7 wait failed; ``server exec`` passes the
command's own code through.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ecliptic import __version__
from ecliptic.cli import (
    agent,
    auth,
    bench,
    catalogue,
    credits,
    identity,
    images,
    leases,
    local,
    networks,
    platforms,
    quota,
    security_groups,
    servers,
    services,
)
from ecliptic.cli.exitcodes import EPILOG, ExitCode
from ecliptic.cli.output import OutputFormat
from ecliptic.cli.session import Session
from ecliptic.cli.tunnel import app as tunnel_app

if TYPE_CHECKING:
    from ecliptic.config import Settings

app = typer.Typer(
    help="Ecliptic: a self-service research cloud. Start with 'ecliptic serve', then "
    "'ecliptic login'.",
    epilog=EPILOG,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(servers.app, name="server", no_args_is_help=True)
app.add_typer(images.app, name="image", no_args_is_help=True)
app.add_typer(security_groups.app, name="security-group", no_args_is_help=True)
app.add_typer(leases.app, name="lease", no_args_is_help=True)
app.add_typer(credits.app, name="credits", no_args_is_help=True)
app.add_typer(quota.app, name="quota", no_args_is_help=True)
app.add_typer(networks.network_app, name="network", no_args_is_help=True)
app.add_typer(networks.subnet_app, name="subnet", no_args_is_help=True)
app.add_typer(networks.port_app, name="port", no_args_is_help=True)
app.add_typer(catalogue.flavor_app, name="flavor", no_args_is_help=True)
app.add_typer(catalogue.host_app, name="host", no_args_is_help=True)
app.add_typer(identity.tenancy_app, name="tenancy", no_args_is_help=True)
app.add_typer(identity.user_app, name="user", no_args_is_help=True)
app.add_typer(auth.token_app, name="token", no_args_is_help=True)
app.add_typer(local.app, name="local", no_args_is_help=True)
app.add_typer(services.app, name="service", no_args_is_help=True)
app.add_typer(services.key_app, name="ssh-key", no_args_is_help=True)
app.add_typer(tunnel_app, name="tunnel", no_args_is_help=True)
app.add_typer(platforms.type_app, name="platform-type", no_args_is_help=True)
app.add_typer(platforms.app, name="platform", no_args_is_help=True)
app.add_typer(bench.app, name="bench", no_args_is_help=True)
app.add_typer(agent.app, name="agent", no_args_is_help=True, hidden=True)
app.registered_commands += auth.app.registered_commands
app.registered_commands += leases.top.registered_commands


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ecliptic {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    output_format: Annotated[
        OutputFormat,
        typer.Option(
            "--output",
            "-o",
            envvar="ECLIPTIC_OUTPUT",
            help="Print tables for people or the API's JSON (one document on stdout).",
        ),
    ] = OutputFormat.table,
    url: Annotated[
        str | None,
        typer.Option(
            "--url", envvar="ECLIPTIC_URL", help="API URL (default: the one you logged in to)."
        ),
    ] = None,
    tenancy: Annotated[
        str | None,
        typer.Option(
            "--tenancy",
            envvar="ECLIPTIC_TENANCY",
            help="Tenancy to act in (default: the one you logged in to).",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            envvar="ECLIPTIC_PROFILE",
            help="Which saved login to use, to keep several clouds apart.",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Ecliptic: a self-service research cloud."""
    session = Session(output=output_format, url=url, tenancy=tenancy, profile=profile)
    ctx.obj = session
    ctx.call_on_close(session.close)


@app.command("serve")
def serve(
    host: Annotated[
        str | None,
        typer.Option(
            "--host", help="Address to listen on (default: 127.0.0.1).", show_default=False
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option("--port", help="Port to listen on (default: 8470).", show_default=False),
    ] = None,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Where the database and logs live (default: your user data dir).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run the API and its workers in the foreground; Ctrl-C stops them."""
    from ecliptic.server import serve as run

    run(_settings(host=host, port=port, data_dir=data_dir))


@app.command("gateway")
def gateway(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Data dir whose database to share (or set ECLIPTIC_DATABASE_URL).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a tunnel gateway replica on its own (production: several, sharing the database).

    Settings come from ECLIPTIC_GATEWAY_* (ports, domain, TLS certificate) and
    ECLIPTIC_PORTAL_URL (where people sign in)."""
    from ecliptic.server import serve_gateway as run

    run(_settings(data_dir=data_dir))


@app.command("rotate-secret-key")
def rotate_secret_key(
    data_dir: Annotated[
        Path | None,
        typer.Option("--data-dir", help="Data dir of the instance.", show_default=False),
    ] = None,
    retire_old: Annotated[
        bool,
        typer.Option(
            "--retire-old",
            help="Only drop the older keys from the key file (after every replica has the "
            "rotated file).",
        ),
    ] = False,
) -> None:
    """Seal the instance's secrets in the store with a new key (ECLIPTIC_SECRET_KEY_FILE).

    Run on one machine, then copy the key file to every replica and restart them; once all
    run with it, run again with --retire-old (on each machine) to drop the old key."""
    from ecliptic.server import rotate_secret_key as run

    run(_settings(data_dir=data_dir), retire_old=retire_old)


def _settings(**overrides: object) -> Settings:
    """The instance's settings; an unusable ECLIPTIC_* variable ends the command with exit
    code 1 and a message that names it, not a traceback."""
    from ecliptic.config import InvalidSetting, load_settings

    try:
        return load_settings(**overrides)
    except InvalidSetting as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.REFUSED) from None


def main() -> None:
    """Entry point of the ``ecliptic`` command."""
    app(prog_name="ecliptic")


if __name__ == "__main__":
    main()
