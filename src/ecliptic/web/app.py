"""Mount the portal on the API's application: pages, its stylesheet and front-end packages."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles

from ecliptic.errors import NotFound
from ecliptic.web.pages import (
    admin,
    benchmarks,
    catalogue,
    dashboard,
    leases,
    platforms,
    resources,
)
from ecliptic.web.render import PageRoute

HERE = Path(__file__).parent
NODE_MODULES = HERE / "node_modules"
VENDOR = {
    # name served under /static/vendor/ -> file in node_modules (package-lock.json pins it)
    "htmx.min.js": "htmx.org/dist/htmx.min.js",
}
"""Front-end packages the pages load: only these files of node_modules are served."""

vendor = APIRouter(route_class=PageRoute, include_in_schema=False)


@vendor.get("/static/vendor/{name}")
def vendor_file(name: str) -> Response:
    """A pinned front-end package's file (long cache: the name changes with the lock file)."""
    rel = VENDOR.get(name)
    if rel is None or not (NODE_MODULES / rel).is_file():
        raise NotFound(f"no front-end file '{name}' (run 'make setup' to install them)")
    return FileResponse(
        NODE_MODULES / rel,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=3600"},
    )


@vendor.get("/favicon.ico")
def favicon() -> Response:
    """Browsers ask for it on every site."""
    return FileResponse(HERE / "static" / "favicon.svg", media_type="image/svg+xml")


def install(app: FastAPI) -> None:
    """Serve the portal from ``app`` under ``/``."""
    app.include_router(vendor)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (dashboard, catalogue, platforms, leases, resources, benchmarks, admin):
        app.include_router(module.router)
