"""``ecliptic serve``: API and workers in one process, in the foreground."""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from pathlib import Path

import uvicorn

from ecliptic.api.app import create_app
from ecliptic.config import Settings
from ecliptic.runtime import FirstAdmin, Runtime
from ecliptic.tunnel.gateway import Gateway, prerequisites

log = logging.getLogger("ecliptic")


def _write_first_password(settings: Settings, first: FirstAdmin) -> Path:
    path = Path(settings.data_dir) / "initial-admin-password"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(first.password + "\n")
    return path


def stop_like_ctrl_c(signum: int, frame: object) -> None:
    """SIGTERM handler that unwinds like Ctrl-C, so cleanup in ``finally`` runs."""
    raise KeyboardInterrupt


class GatewayUnavailable(SystemExit):
    """ECLIPTIC_GATEWAY=on, and the gateway cannot start here: serve stops with this."""


GATEWAY_FIX = "make setup   (as root: installs nginx, Go and the 'tunnel' account, builds tunneld)"
"""The one command that gives this machine what the gateway needs."""


def _start_gateway(settings: Settings, runtime: Runtime) -> tuple[Gateway | None, str]:
    """The in-process tunnel gateway, when enabled and possible here, and why it is off."""
    if settings.gateway == "off":
        return None, "off (ECLIPTIC_GATEWAY=off)"
    problems = prerequisites(settings)
    if problems:
        if settings.gateway == "on":
            raise GatewayUnavailable(
                "cannot start the tunnel gateway (ECLIPTIC_GATEWAY=on): "
                + "; ".join(problems)
                + f"\nfix: {GATEWAY_FIX}"
            )
        log.warning("tunnel gateway not started (ECLIPTIC_GATEWAY=auto): %s", "; ".join(problems))
        return None, "; ".join(problems)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    gateway = Gateway(settings, runtime.db, auth_upstream=f"{host}:{settings.port}")
    try:
        gateway.start()
    except Exception as exc:
        gateway.stop()
        if settings.gateway == "on":
            raise GatewayUnavailable(
                f"cannot start the tunnel gateway (ECLIPTIC_GATEWAY=on): {exc}"
            ) from None
        log.warning("tunnel gateway not started (ECLIPTIC_GATEWAY=auto): %s", exc)
        return None, str(exc)
    return gateway, ""


def serve(settings: Settings, *, echo: bool = True) -> None:
    """Start the runtime and serve the API until interrupted (Ctrl-C stops cleanly)."""
    logging.basicConfig(
        level=os.environ.get("ECLIPTIC_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    runtime = Runtime(settings)
    runtime.booking.freeze_gc = True
    first = runtime.start()
    app = create_app(runtime)
    # Everything loaded so far lives as long as the process: keep it out of the garbage
    # collector's full passes, which otherwise scan it and stall requests (p99 x10).
    gc.collect()
    gc.freeze()
    url = settings.public_url
    try:
        gateway, why_off = _start_gateway(settings, runtime)
    except BaseException:
        runtime.stop()
        raise
    if echo:
        print(f"Ecliptic {runtime.backend.name} cloud serving at {url}", file=sys.stderr)
        print(f"  API docs:  {url}/docs    database: {settings.database_url}", file=sys.stderr)
        if first is not None:
            path = _write_first_password(settings, first)
            print(
                "  First start: created administrator 'admin' in tenancy "
                f"'{first.tenancy}' with password: {first.password}\n"
                f"  (also saved, readable by you only, in {path})",
                file=sys.stderr,
            )
        if gateway is not None:
            print(
                f"  Services:  {settings.gateway_front_url.format('<subdomain>')}"
                f"    tunnels: ssh -N -R 0:localhost:PORT tunnel@HOST -p {gateway.ssh_port}",
                file=sys.stderr,
            )
        else:
            print(f"  Gateway:   OFF: {why_off}", file=sys.stderr)
            if settings.gateway != "off":
                print(
                    f"             to turn it on: {GATEWAY_FIX}, then start again",
                    file=sys.stderr,
                )
        print(
            f"  Sign in:   ecliptic login --url {url} --user admin\n  Stop:      Ctrl-C",
            file=sys.stderr,
            flush=True,
        )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal with the handler
    # it found: make that handler unwind like Ctrl-C so the cleanup below always runs.
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        pass  # uvicorn re-raises Ctrl-C after its graceful shutdown; we are stopping anyway
    finally:
        if gateway is not None:
            gateway.stop()
        runtime.stop()
        if echo:
            print("Ecliptic stopped.", file=sys.stderr)
