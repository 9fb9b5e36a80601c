"""``ecliptic gateway``: one gateway replica on its own, sharing the store with the API.

Run as many as needed behind DNS, sharing the database: each serves the tunnels connected
to it and forwards requests for tunnels held by another replica to that one. The replica
answers nginx's access checks and the subdomain half of the sign-in hand-off itself, on
loopback only; people sign in at the portal (``ECLIPTIC_PORTAL_URL``), which shares the
store and so the gateway's secret.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from typing import cast

import uvicorn
from fastapi import FastAPI

from ecliptic.api import problems
from ecliptic.api.routes import gateway_web
from ecliptic.config import Settings
from ecliptic.runtime import Runtime
from ecliptic.server import stop_like_ctrl_c
from ecliptic.store.db import Database
from ecliptic.store.migrate import upgrade
from ecliptic.tunnel.gateway import Gateway, prerequisites

log = logging.getLogger("ecliptic.gateway")


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


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(settings: Settings) -> None:
    """Run a replica in the foreground until interrupted."""
    logging.basicConfig(
        level=os.environ.get("ECLIPTIC_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    missing = prerequisites(settings)
    if missing:
        raise SystemExit("cannot start the tunnel gateway: " + "; ".join(missing))
    db = Database(settings.database_url)
    upgrade(db)
    port = _free_loopback_port()
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
    config = uvicorn.Config(
        auth_app(settings, db),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )
    signal.signal(signal.SIGTERM, stop_like_ctrl_c)
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        pass
    finally:
        gateway.stop()
