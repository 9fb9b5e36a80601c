"""Images servers boot from: list, build (in the background, with a log), delete.

An image is a name and a version to everyone above the backend, exactly as a Glance image
would be: the local cloud builds its images from recipes, OpenStack would list Glance's.
Anyone signed in may list images and read their build logs; building and deleting them is
for administrators (a build runs package installs as root on the machine).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from sqlalchemy import select

from ecliptic.backends.base import Backend, BackendError, ImageInfo
from ecliptic.errors import Conflict, InvalidInput, NotFound
from ecliptic.services.caller import Caller
from ecliptic.store.db import Database
from ecliptic.store.models import Server, Tenancy

log = logging.getLogger(__name__)


class ImageBuilds:
    """Background builds, one per image at a time, and what the last one said."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self.last_error: dict[str, str] = {}

    def running(self, name: str) -> bool:
        """True while a build of ``name`` started here runs."""
        with self._lock:
            t = self._threads.get(name)
            return t is not None and t.is_alive()

    def start(self, name: str) -> bool:
        """Start building ``name`` unless a build of it runs; True when one was started."""
        with self._lock:
            t = self._threads.get(name)
            if t is not None and t.is_alive():
                return False
            t = threading.Thread(
                target=self._build, args=(name,), daemon=True, name=f"ecliptic-image-{name}"
            )
            self._threads[name] = t
            self.last_error.pop(name, None)
            t.start()
            return True

    def _build(self, name: str) -> None:
        try:
            self.backend.build_image(name, lambda m: log.info("image %s", m))
        except BackendError as e:
            self.last_error[name] = str(e)
            log.warning("image %s: build failed: %s", name, e)
        except Exception as e:  # a thread's error must reach the user, not vanish
            self.last_error[name] = f"{type(e).__name__}: {e}"
            log.exception("image %s: build failed", name)


def _find(backend: Backend, name: str) -> ImageInfo:
    for info in backend.images():
        if info.name == name:
            return info
    names = ", ".join(i.name for i in backend.images()) or "none"
    raise NotFound(f"no image called '{name}' (images: {names})")


def list_images(backend: Backend, builds: ImageBuilds) -> list[ImageInfo]:
    """Every image, built or not."""
    return [_with_build(i, builds) for i in backend.images()]


def _with_build(info: ImageInfo, builds: ImageBuilds) -> ImageInfo:
    if builds.running(info.name) and info.status != "building":
        return replace(info, status="building")
    return info


def get_image(backend: Backend, builds: ImageBuilds, name: str) -> ImageInfo:
    """One image."""
    return _with_build(_find(backend, name), builds)


def build_image(backend: Backend, builds: ImageBuilds, caller: Caller, name: str) -> ImageInfo:
    """Start building ``name`` in the background (nothing to do when it is up to date)."""
    caller.require_admin("build images")
    info = _find(backend, name)
    if info.status == "built":
        return info
    builds.start(name)
    return _with_build(info, builds)


def check_image(backend: Backend, name: str) -> None:
    """Refuse a server's image that does not exist, saying which do."""
    names = [i.name for i in backend.images()]
    if name not in names:
        msg = f"no image called '{name}': choose one of {', '.join(names)} (ecliptic image list)"
        raise InvalidInput(msg, errors=[{"loc": ["body", "image"], "msg": msg}])


def servers_using(db: Database, name: str) -> list[str]:
    """``tenancy/server`` names of the servers that boot from image ``name``."""
    with db.read() as session:
        rows = session.execute(
            select(Tenancy.name, Server.name)
            .join(Tenancy, Tenancy.id == Server.tenancy_id)
            .where(Server.image == name)
            .order_by(Tenancy.name, Server.name)
        ).all()
    return [f"{t}/{s}" for t, s in rows]


def delete_image(
    db: Database, backend: Backend, builds: ImageBuilds, caller: Caller, name: str
) -> list[str]:
    """Remove an image's built layers; refused while servers use it or it is being built."""
    caller.require_admin("delete images")
    _find(backend, name)
    users = servers_using(db, name)
    if users:
        shown = ", ".join(users[:20]) + (f" and {len(users) - 20} more" if len(users) > 20 else "")
        raise Conflict(
            f"image '{name}' is used by {len(users)} server(s): {shown}; delete them first",
            errors=[{"loc": ["image"], "msg": "in use", "servers": users}],
        )
    if builds.running(name):
        raise Conflict(f"image '{name}' is being built: wait for the build to finish")
    try:
        return backend.delete_image(name)
    except BackendError as e:
        raise Conflict(str(e)) from e
