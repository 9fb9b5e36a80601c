"""One running Ecliptic instance: store, queue, backend and workers, wired together."""

from __future__ import annotations

import logging
import os
import secrets
import threading
from dataclasses import dataclass

from sqlalchemy import func, select

from ecliptic.backends.base import Backend
from ecliptic.backends.registry import make_backend
from ecliptic.clock import Clock, SystemClock
from ecliptic.config import Settings
from ecliptic.reconcile.adoption import adopt, resync
from ecliptic.reconcile.base import Context
from ecliptic.reconcile.worker import Workers
from ecliptic.services.auth import hash_password
from ecliptic.services.catalogue import seed_flavors, sync_inventory
from ecliptic.store.db import Database
from ecliptic.store.migrate import upgrade
from ecliptic.store.models import Membership, Meta, Tenancy, User
from ecliptic.store.types import new_id
from ecliptic.store.workqueue import WorkQueue

log = logging.getLogger("ecliptic")
RESYNC_EVERY_S = 300.0


@dataclass(frozen=True)
class FirstAdmin:
    """The administrator created on an empty database."""

    name: str
    """User name."""
    password: str
    """Password, shown once."""
    tenancy: str
    """The tenancy made for them."""


class Runtime:
    """Everything an instance needs, started and stopped together."""

    def __init__(
        self,
        settings: Settings,
        *,
        backend: Backend | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock or SystemClock()
        self.db = Database(settings.database_url)
        upgrade(self.db)
        self.instance_id = self._instance_id()
        self.queue = WorkQueue(self.db, self.clock)
        self.backend = backend or make_backend(settings, self.instance_id)
        self.ctx = Context(self.db, self.backend, self.queue)
        self.workers = Workers(self.ctx, settings.workers)
        self._stop = threading.Event()
        self._resync: threading.Thread | None = None

    def _instance_id(self) -> str:
        with self.db.write() as session:
            row = session.get(Meta, "instance_id")
            if row is None:
                row = Meta(key="instance_id", value=new_id()[:12])
                session.add(row)
            return row.value

    def bootstrap(self) -> FirstAdmin | None:
        """Seed flavors, sync the inventory and, on an empty database, make a first admin."""
        with self.db.write() as session:
            seed_flavors(session)
            sync_inventory(session, self.backend.inventory())
            if session.scalar(select(func.count()).select_from(User)):
                return None
            password = os.environ.get("ECLIPTIC_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            admin = User(name="admin", password_hash=hash_password(password), is_admin=True)
            tenancy = Tenancy(name="default", description="created on first start")
            session.add_all([admin, tenancy])
            session.flush()
            session.add(Membership(tenancy_id=tenancy.id, user_id=admin.id, role="admin"))
            return FirstAdmin("admin", password, tenancy.name)

    def start(self, *, workers: bool = True) -> FirstAdmin | None:
        """Bootstrap, adopt what exists, and start the workers."""
        first = self.bootstrap()
        adopt(self.ctx)
        if workers:
            self.workers.start()
            self._resync = threading.Thread(
                target=self._resync_loop, daemon=True, name="ecliptic-resync"
            )
            self._resync.start()
        return first

    def _resync_loop(self) -> None:
        while not self._stop.wait(RESYNC_EVERY_S):
            try:
                resync(self.ctx)
            except Exception:
                log.exception("periodic resync failed")

    def stop(self) -> None:
        """Stop the workers and close the database."""
        self._stop.set()
        self.workers.stop()
        self.db.dispose()
