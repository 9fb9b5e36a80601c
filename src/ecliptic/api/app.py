"""The FastAPI application of one runtime."""

from __future__ import annotations

from fastapi import Depends, FastAPI
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ecliptic import __version__
from ecliptic.api import problems
from ecliptic.api.routes import (
    auth,
    backend,
    benchmarks,
    blazar,
    catalogue,
    credits,
    gateway_web,
    identity,
    images,
    leases,
    networks,
    platforms,
    quotas,
    security_groups,
    servers,
    services,
)
from ecliptic.runtime import Runtime
from ecliptic.web import app as portal
from ecliptic.web import oidc

API_PREFIX = "/api/v1"


def create_app(runtime: Runtime) -> FastAPI:
    """The REST API of ``runtime``; OpenAPI at ``/openapi.json``, docs at ``/docs``."""
    app = FastAPI(
        title="Ecliptic",
        version=__version__,
        description="Self-service research cloud: servers, networks, reservations, platforms.",
        openapi_url="/openapi.json",
        dependencies=[Depends(problems.no_unknown_query)],
    )
    app.state.runtime = runtime
    problems.install(app)
    for module in (
        auth,
        identity,
        catalogue,
        networks,
        servers,
        security_groups,
        images,
        leases,
        credits,
        quotas,
        blazar,
        backend,
        services,
        platforms,
        benchmarks,
    ):
        app.include_router(module.router, prefix=API_PREFIX)

    app.include_router(gateway_web.router)
    portal.install(app)
    app.include_router(oidc.router)

    @app.get(f"{API_PREFIX}/health", tags=["meta"])
    def health() -> dict[str, str]:
        """Liveness: the process answers and its database is reachable."""
        with runtime.db.read() as session:
            session.connection()
        return {"status": "ok", "version": __version__, "backend": runtime.backend.name}

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
