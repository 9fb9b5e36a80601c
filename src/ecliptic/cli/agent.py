"""``ecliptic agent``: programs platforms run inside their servers (hidden from --help).

They listen on loopback; the tunnel gateway publishes them and signs people in.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from ecliptic.cli.exitcodes import ExitCode

app = typer.Typer(
    help="Programs platforms run inside their servers, behind the tunnel gateway.",
    no_args_is_help=True,
)

Bind = Annotated[
    str,
    typer.Option("--bind", help="Address to listen on (the gateway forwards to loopback)."),
]


def _logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    # websockets logs every plain HTTP answer (each page and asset) at INFO.
    logging.getLogger("websockets").setLevel(logging.WARNING)


@app.command("terminal")
def terminal(
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 7681,
    bind: Bind = "127.0.0.1",
    shell: Annotated[
        str | None,
        typer.Option(
            "--shell",
            help="Shell command line (default: '/bin/bash -l', or '/bin/sh -l' without bash).",
            show_default=False,
        ),
    ] = None,
    xterm_dir: Annotated[
        Path | None,
        typer.Option(
            "--xterm-dir",
            help="node-xterm's modules (default: /usr/share/nodejs/xterm/lib).",
            show_default=False,
        ),
    ] = None,
    max_sessions: Annotated[
        int, typer.Option("--max-sessions", min=1, help="Shells that may run at once.")
    ] = 16,
) -> None:
    """A login shell in the browser: GET / is the page, /ws the WebSocket."""
    from ecliptic.agent import terminal as term
    from ecliptic.agent.xterm import XtermMissing

    config = term.TerminalConfig(bind=bind, port=port, max_sessions=max_sessions)
    if shell is not None:
        try:
            config = replace(config, shell=term.parse_shell(shell))
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--shell") from None
    if xterm_dir is not None:
        config = replace(config, xterm_dir=xterm_dir)
    _logging()
    try:
        term.run(config)
    except XtermMissing as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(ExitCode.REFUSED) from None


@app.command("slurm-status")
def slurm_status(
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8081,
    bind: Bind = "127.0.0.1",
) -> None:
    """A page of the Slurm cluster's nodes and jobs: GET /, /api/status, /healthz."""
    from ecliptic.agent import slurmstatus

    _logging()
    slurmstatus.run(bind, port)
