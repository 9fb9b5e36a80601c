"""The composition root: ``ecliptic serve`` (API, workers and a gateway replica in one
process) and ``ecliptic gateway`` (a replica alone) are wired here, and only here."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from pathlib import Path
from typing import cast

import uvicorn
from fastapi import FastAPI

from ecliptic.api import problems
from ecliptic.api.app import create_app
from ecliptic.api.routes import gateway_web
from ecliptic.backends.base import BackendError
from ecliptic.config import Settings
from ecliptic.runtime import FirstAdmin, Runtime
from ecliptic.secretbox import SecretBox
from ecliptic.services import gateway as gateway_registry
from ecliptic.store.db import Database
from ecliptic.store.migrate import upgrade
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


def _run_http(app: FastAPI, host: str, port: int, sock: socket.socket | None = None) -> None:
    """Serve ``app`` until SIGTERM or Ctrl-C; returns after a graceful shutdown.

    ``sock``, when given, is an already bound listening socket to serve on instead."""
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal with the handler
    # it found: make that handler unwind like Ctrl-C so the caller's cleanup always runs.
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    # uvicorn re-raises Ctrl-C after its graceful shutdown; we are stopping anyway.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(config).run(sockets=[sock] if sock is not None else None)


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


def _first_image(runtime: Runtime, echo: bool) -> None:
    """Servers boot from ``base``: build it now (once; later starts find it in the cache)
    rather than in the first server's create."""

    def say(message: str) -> None:
        if "up to date" not in message:
            print(f"  image {message}", file=sys.stderr, flush=True)

    try:
        runtime.backend.build_image("base", say if echo else None)
    except BackendError as e:
        runtime.stop()
        raise SystemExit(f"ecliptic: cannot build the base image: {e}") from e


def serve(settings: Settings, *, echo: bool = True) -> None:
    """Start the runtime and serve the API until interrupted (Ctrl-C stops cleanly)."""
    logging.basicConfig(
        level=os.environ.get("ECLIPTIC_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    runtime = Runtime(settings)
    runtime.booking.freeze_gc = True
    _first_image(runtime, echo)
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
    if gateway is not None:
        runtime.after_key_bound = gateway.sync_now
    else:
        runtime.without_gateway()
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
    try:
        _run_http(app, settings.host, settings.port)
    finally:
        if gateway is not None:
            gateway.stop()
        runtime.stop()
        if echo:
            print("Ecliptic stopped.", file=sys.stderr)


class _GatewayRuntime:
    """The part of a runtime the gateway's web routes use."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db


def auth_app(settings: Settings, db: Database) -> FastAPI:
    """The loopback-only app nginx asks: access checks and the sign-in callback."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.runtime = cast(Runtime, _GatewayRuntime(settings, db))
    problems.install(app)
    app.include_router(gateway_web.router)
    return app


def serve_gateway(settings: Settings) -> None:
    """``ecliptic gateway``: one replica in the foreground until interrupted.

    Run as many as needed behind DNS, sharing the database: each serves the tunnels
    connected to it and forwards requests for tunnels held by another replica to that one.
    The replica answers nginx's access checks and the subdomain half of the sign-in
    hand-off itself, on loopback only; people sign in at the portal
    (``ECLIPTIC_PORTAL_URL``), which shares the store and so the gateway's secret.
    """
    logging.basicConfig(
        level=os.environ.get("ECLIPTIC_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    missing = prerequisites(settings)
    if missing:
        raise SystemExit("cannot start the tunnel gateway: " + "; ".join(missing))
    db = Database(settings.database_url, secrets=SecretBox.load(settings.secret_key_path))
    upgrade(db)
    # Bound now and handed to the HTTP server, so no other process can take the port
    # between choosing it and serving on it.
    auth_sock = socket.create_server(("127.0.0.1", 0))
    port = int(auth_sock.getsockname()[1])
    gateway = Gateway(settings, db, auth_upstream=f"127.0.0.1:{port}")
    try:
        gateway.start()
    except Exception as exc:
        gateway.stop()
        raise SystemExit(f"cannot start the tunnel gateway: {exc}") from None
    print(
        f"Ecliptic gateway {gateway.gateway_id}: services at "
        f"{settings.gateway_front_url.format('<subdomain>')}, tunnels on port "
        f"{gateway.ssh_port}, jump host on port {gateway.jump_port}; peers forward to "
        f"{gateway.peer_address}; sign-in at {settings.public_url}. Ctrl-C stops it.",
        file=sys.stderr,
        flush=True,
    )
    try:
        _run_http(auth_app(settings, db), "127.0.0.1", port, sock=auth_sock)
    finally:
        gateway.stop()
        auth_sock.close()


def rotate_secret_key(settings: Settings, *, retire_old: bool = False) -> None:
    """``ecliptic rotate-secret-key``: a new current key in the key file, and every secret
    in the store sealed again with it (or, with ``retire_old``, drop the older keys)."""
    path = settings.secret_key_path
    if not path.exists():
        raise SystemExit(f"there is no secret key file at {path}: nothing to rotate")
    box = SecretBox.load(path)
    db = Database(settings.database_url, secrets=box)
    try:
        upgrade(db)
        if retire_old:
            stale = {
                name: key_id
                for name, key_id in gateway_registry.sealing_keys(db).items()
                if key_id != box.current_id
            }
            if stale:
                raise SystemExit(
                    f"{', '.join(sorted(stale))} still sealed with an older key: run "
                    "`ecliptic rotate-secret-key` first (without --retire-old)"
                )
            box.retire_old()
            print(f"{path}: only key {box.current_id} kept.")
            return
        rotated = box.rotate()
        count = gateway_registry.reseal_secrets(db, rotated)
    finally:
        db.dispose()
    print(
        f"{path}: new key {rotated.current_id} ({count} secrets sealed with it; the older "
        f"key {box.current_id} is kept to open anything sealed before). Copy this file to "
        "every replica and restart them; then run with --retire-old on each machine."
    )
