"""Backends by name: adding one is adding a module and a line here."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ecliptic.backends.base import Backend
from ecliptic.config import Settings

BackendFactory = Callable[[Settings, str], Backend]


def _local(settings: Settings, instance_id: str) -> Backend:
    from ecliptic.backends.local import LocalBackend

    return LocalBackend(
        instance_id=instance_id,
        state_dir=Path(settings.data_dir) / "local",
        owners_dir=settings.owners_dir,
        inventory_path=settings.inventory_path,
        image_dir=settings.image_dir or Path(settings.data_dir) / "images",
        image_recipes=settings.image_recipes,
        # What servers may reach on the host: the API and the gateway's SSH endpoint.
        host_ports=(settings.port, settings.gateway_ssh_port),
    )


BACKENDS: dict[str, BackendFactory] = {"local": _local}


def make_backend(settings: Settings, instance_id: str) -> Backend:
    """The backend named in the settings."""
    try:
        factory = BACKENDS[settings.backend]
    except KeyError:
        raise ValueError(
            f"unknown backend '{settings.backend}'; ECLIPTIC_BACKEND may be one of: "
            + ", ".join(sorted(BACKENDS))
        ) from None
    return factory(settings, instance_id)
