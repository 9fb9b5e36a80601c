"""One running Ecliptic instance: store, queue, backend and workers, wired together."""

from __future__ import annotations

import logging
import os
import secrets
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecliptic.backends.base import Backend
from ecliptic.backends.ironic import Ironic
from ecliptic.backends.registry import make_backend
from ecliptic.clock import Clock, SystemClock
from ecliptic.config import Settings
from ecliptic.platforms.types import Catalogue
from ecliptic.reconcile.adoption import adopt, resync
from ecliptic.reconcile.base import Context, GatewayLink, IronicLink
from ecliptic.reconcile.hosts import reconcile_ironic
from ecliptic.reconcile.worker import Workers
from ecliptic.secretbox import SecretBox
from ecliptic.services import credits, identity
from ecliptic.services.auth import LoginThrottle
from ecliptic.services.booking import Booking, host_info
from ecliptic.services.catalogue import seed_flavors, sync_inventory
from ecliptic.services.images import ImageBuilds
from ecliptic.services.pool import POOL, SYNC, PoolPolicy, check_pool_filter, require_policy
from ecliptic.services.pricing import MeterPolicy, host_type
from ecliptic.store.db import Database
from ecliptic.store.migrate import upgrade
from ecliptic.store.models import Host, Meta
from ecliptic.store.types import new_id
from ecliptic.store.workqueue import WorkQueue

log = logging.getLogger("ecliptic")
RESYNC_EVERY_S = 300.0
STARTER_HOURS = 10_000


@dataclass(frozen=True)
class FirstAdmin:
    """The administrator created on an empty database."""

    name: str
    """User name."""
    password: str
    """Password, shown once."""
    tenancy: str
    """The tenancy made for them."""


def grant_starter_credits(session: Session, tenancy_id: str, now: datetime) -> None:
    """A year of credit for every resource class of the inventory, so a new install can book."""
    classes = {"vcpu"}
    for h in session.scalars(select(Host)):
        info = host_info(h)
        classes.add(f"host:{host_type(info)}")
        for g in info.gpus:
            classes.add(f"gpu:{g.model}")
            classes.update(f"slice:{p}" for p in g.mig_profiles)
    start = now.replace(second=0, microsecond=0)
    for rc in sorted(classes):
        credits.grant(
            session,
            tenancy_id,
            "starter",
            rc,
            Decimal(STARTER_HOURS),
            start,
            start + timedelta(days=365),
            "starter credit made on first start",
        )


def private_dir(path: Path) -> None:
    """The instance's data folder, made (or fixed to) 0700: its database, console logs and
    the first admin's password are nobody else's business."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_mode & stat.S_ISVTX:  # a shared folder such as /tmp: never close it
        log.warning("data folder %s is shared (sticky); give Ecliptic a folder of its own", path)
        return
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(path, 0o700)


def _ironic(settings: Settings) -> IronicLink | None:
    """The Ironic link of the settings (None: hosts come from the inventory file only)."""
    s = settings.ironic
    if s is None:
        return None
    check_pool_filter(s.pool)
    client = Ironic(s.url, username=s.username or None, password=s.password or None)
    policy = PoolPolicy(pool=s.pool, spare=s.spare, idle=s.idle, margin=s.margin)
    return IronicLink(client, s, policy)


def _hosts(session: Session) -> list[tuple[str, object]]:
    """Every host row as the engine sees it, with its lifecycle state."""
    return [(h.state, host_info(h)) for h in session.scalars(select(Host).order_by(Host.name))]


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
        self.after_key_bound: Callable[[], None] | None = None
        """Called after the API bound a tunnel key: the in-process gateway brings its SSH
        endpoint's keys up to date at once, so a client may connect as soon as it has the
        answer (standalone replicas pick the key up at their next poll, within 0.2 s)."""
        self.login_throttle = LoginThrottle()
        """Failed sign-ins of this process (the API's and the portal's), see the class."""
        private_dir(Path(settings.data_dir))
        self.db = Database(settings.database_url, secrets=SecretBox.load(settings.secret_key_path))
        upgrade(self.db)
        self.instance_id = self._instance_id()
        self.queue = WorkQueue(self.db, self.clock)
        self.backend = backend or make_backend(settings, self.instance_id)
        self.booking = Booking(
            self.db,
            self.clock,
            min_preemptible_lifetime=settings.preemptible_min_lifetime,
            preemptible_grace=settings.preemptible_grace,
            deleted_server_retention=settings.deleted_server_retention,
            meter=MeterPolicy(settings.metered_classes, settings.meter_warn),
        )
        link = (
            GatewayLink(
                settings.gateway_ssh_port, settings.gateway_front_url, settings.gateway_jump_port
            )
            if settings.gateway != "off"
            else None
        )
        self.ctx = Context(self.db, self.backend, self.queue, self.booking, link, _ironic(settings))
        self.image_builds = ImageBuilds(self.backend)
        self.catalogue = Catalogue(settings.platform_types)
        """The platform types on offer."""
        self.workers = Workers(self.ctx, settings.workers)
        self._stop = threading.Event()
        self._resync: threading.Thread | None = None
        self._watcher: threading.Thread | None = None

    def pool_policy(self) -> PoolPolicy:
        """The bare-metal-or-hypervisor pool's policy (refused when no Ironic is configured)."""
        return require_policy(self.ctx.ironic.policy if self.ctx.ironic else None)

    def without_gateway(self) -> None:
        """The gateway did not start: platforms build without tunnels (and say so)."""
        self.ctx = replace(self.ctx, gateway=None)
        self.workers.ctx = self.ctx

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
            hosts_before = _hosts(session)
            sync_inventory(session, self.backend.inventory())
            session.flush()
            if _hosts(session) != hosts_before:
                # Other processes' engines follow the booking log: tell them to rebuild.
                session.info.setdefault("after_commit", []).append(self.booking.reset)
        if self.ctx.ironic is not None:
            self._first_ironic_sync()  # its hosts count for the first admin's credits
        with self.db.write() as session:
            password = os.environ.get("ECLIPTIC_ADMIN_PASSWORD") or secrets.token_urlsafe(12)
            made = identity.first_administrator(session, password)
            if made is None:
                return None
            admin, tenancy = made
            grant_starter_credits(session, tenancy.id, self.clock.now())
            return FirstAdmin(admin.name, password, tenancy.name)

    def start(self, *, workers: bool = True) -> FirstAdmin | None:
        """Bootstrap, adopt what exists, and start the workers and the booking follower."""
        first = self.bootstrap()
        with self.booking.reading():
            pass  # build the engine now, not in the first booking (under the booking lock)
        self.booking.follow()
        adopt(self.ctx)
        if workers:
            self.workers.start()
            self._resync = threading.Thread(
                target=self._resync_loop, daemon=True, name="ecliptic-resync"
            )
            self._resync.start()
            self._watcher = threading.Thread(
                target=self._watch_loop, daemon=True, name="ecliptic-down-servers"
            )
            self._watcher.start()
        return first

    def _first_ironic_sync(self) -> None:
        """Read Ironic's nodes once before serving (its hosts are listed from the start);
        then the ``ironic`` and ``pool`` work items keep it up to date."""
        try:
            reconcile_ironic(self.ctx, SYNC)
        except Exception as exc:  # Ironic down at start: the work item retries
            url = self.settings.ironic.url if self.settings.ironic else "?"
            log.warning("Ironic (%s) not reachable yet: %s", url, exc)
        with self.db.write() as session:
            self.queue.enqueue(session, "ironic", SYNC)
            self.queue.enqueue(session, "pool", POOL)

    def _watch_loop(self) -> None:
        """Servers whose processes died (their init killed) are repaired at once."""
        while not self._stop.is_set():
            try:
                down = self.backend.down_servers(1.0)
                if down:
                    log.warning("server(s) down, restarting: %s", ", ".join(down))
                    with self.db.write() as session:
                        for sid in down:
                            self.queue.enqueue(session, "server", sid)
            except Exception:
                log.exception("watching servers failed")
                self._stop.wait(1.0)

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
        self.booking.stop()
        self.db.dispose()
