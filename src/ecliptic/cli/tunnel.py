"""``ecliptic tunnel``: reach a service on a private network by a subdomain of the gateway."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from ecliptic.cli import output
from ecliptic.cli.exitcodes import ExitCode, exit_code_for
from ecliptic.cli.session import command, current, emit
from ecliptic.client import DEFAULT_URL, ApiError
from ecliptic.tunnel.client import (
    RunResult,
    StateError,
    TargetError,
    TunnelClient,
    TunnelState,
    default_state_dir,
    parse_target,
    read_status,
)

app = typer.Typer(
    help="Tunnels: publish a service of a private network at a subdomain of the gateway.",
    no_args_is_help=True,
)

TOKEN_ENV = "ECLIPTIC_TUNNEL_TOKEN"
_STATE_EXIT = {"in_use": ExitCode.CONFLICT}
"""Exit codes of local state problems; any other is 1 (the local configuration is unusable)."""

Token = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar=TOKEN_ENV,
        help=f"The one-time tunnel token (better: set {TOKEN_ENV}; command lines are "
        "visible to other users). Needed on the first run only.",
        show_default=False,
    ),
]
StateDir = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        metavar="DIR",
        help="Where the key, the association and the status live (default: "
        "~/.local/state/ecliptic/tunnel/<first 12 hex of sha256(token)>).",
        show_default=False,
    ),
]


def _state_dir(state_dir: Path | None, token: str | None) -> Path:
    if state_dir is not None:
        return state_dir
    if not token:
        raise typer.BadParameter(
            f"give the token (--token or {TOKEN_ENV}), or the --state-dir of a tunnel that "
            "already ran",
            param_hint="--token",
        )
    return default_state_dir(token)


def _fail(detail: str, code: ExitCode) -> typer.Exit:
    sys.stderr.write(f"error: {detail}\n")
    sys.stderr.flush()
    return typer.Exit(code)


@command(
    app,
    "connect",
    help="Publish a local service through the gateway, and keep the tunnel up.\n\n"
    "The first run creates an SSH key and binds it to the service with the one-time token; "
    "later runs with the same state directory reuse both, without a token. The tunnel is a "
    "stock 'ssh -N -R', restarted within about 2 s whenever it drops; SIGTERM or Ctrl-C "
    "stops it. Progress goes to stderr, one line per change; 'ecliptic tunnel status' "
    "shows the current state.",
)
def connect(
    to: Annotated[
        str,
        typer.Option(
            "--to",
            metavar="URL",
            help="The local service: http://HOST:PORT, https://HOST:PORT or tcp://HOST:PORT "
            "(the scheme is the protocol the gateway speaks to it).",
            show_default=False,
        ),
    ],
    token: Token = None,
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            metavar="URL",
            help=f"The Ecliptic API that issued the token (default: --url or ECLIPTIC_URL, "
            f"else {DEFAULT_URL}).",
            show_default=False,
        ),
    ] = None,
    state_dir: StateDir = None,
    liveness_path: Annotated[
        str | None,
        typer.Option(
            "--liveness-path",
            metavar="PATH",
            help="HTTP path that answers 2xx/3xx while the service is well ('/'); checked "
            "here, and by the gateway (which learns it on the first run only).",
            show_default=False,
        ),
    ] = None,
    liveness_period: Annotated[
        int | None,
        typer.Option(
            "--liveness-period",
            metavar="SECONDS",
            min=1,
            help="How often the gateway checks the liveness path (first run only).",
            show_default=False,
        ),
    ] = None,
    read_timeout: Annotated[
        int | None,
        typer.Option(
            "--read-timeout",
            metavar="SECONDS",
            min=1,
            help="How long the gateway waits for the service to answer a request (first run only).",
            show_default=False,
        ),
    ] = None,
    once: Annotated[
        bool,
        typer.Option("--once", help="Connect once and end when the tunnel drops (exit code 6)."),
    ] = False,
) -> None:
    """Publish a local service through the gateway, and keep the tunnel up."""
    try:
        target = parse_target(to)
    except TargetError as exc:
        raise typer.BadParameter(str(exc), param_hint="--to") from None
    if liveness_path is not None and not liveness_path.startswith("/"):
        raise typer.BadParameter("write a path starting with '/'", param_hint="--liveness-path")
    if liveness_path is not None and target.protocol == "tcp":
        raise typer.BadParameter(
            "a tcp:// service has no HTTP path to check", param_hint="--liveness-path"
        )
    directory = _state_dir(state_dir, token)
    api_url = api or current().url or os.environ.get("ECLIPTIC_URL") or DEFAULT_URL
    tc = TunnelClient(
        target=target,
        state_dir=directory,
        api_url=api_url,
        token=token,
        liveness_path=liveness_path,
        liveness_period_s=liveness_period,
        read_timeout_s=read_timeout,
        once=once,
    )
    try:
        with tc:
            saved = tc.associate()
            assoc = saved.association
            emit(
                {
                    "service_id": assoc.service_id,
                    "subdomain": assoc.subdomain,
                    "host": assoc.host,
                    "url": assoc.url,
                    "to": target.url,
                    "state_dir": str(directory),
                },
                lambda: output.say(f"{assoc.url} -> {target.url}"),
            )
            result = asyncio.run(_run(tc))
    except StateError as exc:
        raise _fail(exc.detail, _STATE_EXIT.get(exc.code, ExitCode.REFUSED)) from None
    except ApiError as exc:
        output.error(exc)
        # An expired token is "token unknown or expired" (5), like a 401, not a plain 4xx.
        code = ExitCode.UNAUTHORIZED if exc.code == "token_expired" else exit_code_for(exc)
        raise typer.Exit(code) from None
    if not result.stopped:
        raise _fail(f"the tunnel ended: {result.reason}", ExitCode.UNAVAILABLE)
    if result.reason == "interrupted":
        raise typer.Exit(ExitCode.INTERRUPTED)


async def _run(tc: TunnelClient) -> RunResult:
    """Run the tunnel; SIGTERM and SIGINT stop it (and its ssh) cleanly."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, tc.stop, "terminated")
    loop.add_signal_handler(signal.SIGINT, tc.stop, "interrupted")
    try:
        return await tc.run()
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
        loop.remove_signal_handler(signal.SIGINT)


@command(app, "status")
def status(state_dir: StateDir = None, token: Token = None) -> None:
    """Show what the tunnel client of a state directory is doing."""
    directory = _state_dir(state_dir, token)
    try:
        found = read_status(directory)
    except StateError as exc:
        raise _fail(exc.detail, ExitCode.REFUSED) from None
    if found is None:
        raise _fail(f"no tunnel has run with state directory {directory}", ExitCode.NOT_FOUND)
    st, running = found
    doc = st.model_dump(mode="json")
    if not running and st.state != TunnelState.STOPPED:
        doc["state"] = TunnelState.STOPPED.value  # the client died without saying so
    doc["running"] = running

    def human() -> None:
        target = {True: "answering", False: "NOT answering", None: ""}[st.target_ok]
        output.fields(
            [
                ("state", doc["state"] if running else f"{doc['state']} (client not running)"),
                ("subdomain", st.subdomain),
                ("url", st.url),
                ("since", f"{output.when(st.since)} ({output.age(st.since)} ago)"),
                ("reconnects", st.reconnects),
                ("target", target),
                ("last error", st.last_error),
            ]
        )

    emit(doc, human)
