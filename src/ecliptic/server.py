"""``ecliptic serve``: API and workers in one process, in the foreground."""

from __future__ import annotations

import gc
import logging
import os
import sys
from pathlib import Path

import uvicorn

from ecliptic.api.app import create_app
from ecliptic.config import Settings
from ecliptic.runtime import FirstAdmin, Runtime

log = logging.getLogger("ecliptic")


def _write_first_password(settings: Settings, first: FirstAdmin) -> Path:
    path = Path(settings.data_dir) / "initial-admin-password"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(first.password + "\n")
    return path


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
    try:
        uvicorn.Server(config).run()
    except KeyboardInterrupt:
        pass  # uvicorn re-raises Ctrl-C after its graceful shutdown; we are stopping anyway
    finally:
        runtime.stop()
        if echo:
            print("Ecliptic stopped.", file=sys.stderr)
