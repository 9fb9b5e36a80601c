"""Settings of one Ecliptic instance, read from the environment (``ECLIPTIC_*``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import platformdirs


def _data_dir() -> Path:
    return Path(os.environ.get("ECLIPTIC_DATA_DIR") or platformdirs.user_data_dir("ecliptic"))


@dataclass(frozen=True)
class Settings:
    """Where an instance keeps its state and how it is reached."""

    data_dir: Path
    """Folder for the SQLite file, console logs and other state."""
    database_url: str
    """SQLAlchemy URL; SQLite under ``data_dir`` unless ``ECLIPTIC_DATABASE_URL`` is set."""
    host: str
    """Address the API listens on."""
    port: int
    """Port the API listens on."""
    inventory_path: Path | None
    """Inventory YAML of the local cloud; the packaged default when ``None``."""
    workers: int
    """Reconciler threads started by ``ecliptic serve``."""
    backend: str
    """Backend name (``local``)."""
    owners_dir: Path
    """Where the local cloud records which instance owns which namespace and link."""
    preemptible_min_lifetime: timedelta = timedelta(hours=1)
    """How long a preemptible server is guaranteed to run before a lease may evict it."""

    @property
    def public_url(self) -> str:
        """Base URL people and servers use to reach the API."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"


def load_settings(**overrides: object) -> Settings:
    """Settings from the environment, with explicit overrides winning."""
    data_dir = Path(str(overrides.pop("data_dir", None) or _data_dir()))
    url = os.environ.get("ECLIPTIC_DATABASE_URL") or f"sqlite:///{data_dir / 'ecliptic.db'}"
    inv = os.environ.get("ECLIPTIC_INVENTORY")
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": url,
        "host": os.environ.get("ECLIPTIC_HOST", "127.0.0.1"),
        "port": int(os.environ.get("ECLIPTIC_PORT", "8470")),
        "inventory_path": Path(inv) if inv else None,
        "workers": int(os.environ.get("ECLIPTIC_WORKERS", "2")),
        "backend": os.environ.get("ECLIPTIC_BACKEND", "local"),
        "owners_dir": Path(os.environ.get("ECLIPTIC_OWNERS_DIR", "/run/ecliptic/owners")),
        "preemptible_min_lifetime": timedelta(
            minutes=int(os.environ.get("ECLIPTIC_PREEMPTIBLE_MIN_LIFETIME_MINUTES", "60"))
        ),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)  # type: ignore[arg-type]
