"""What a reconciler is, and the registry workers dispatch through."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ecliptic.backends.base import Backend
from ecliptic.store.db import Database
from ecliptic.store.workqueue import WorkQueue

if TYPE_CHECKING:
    from ecliptic.backends.ironic import Ironic
    from ecliptic.config import IronicSettings
    from ecliptic.services.booking import Booking
    from ecliptic.services.pool import PoolPolicy


@dataclass(frozen=True)
class GatewayLink:
    """How platforms' servers reach the tunnel gateway."""

    ssh_port: int
    """Port of its SSH endpoint (on the host, at each network's gateway address)."""
    url_format: str
    """A service's URL, ``{}`` standing for its subdomain."""
    jump_port: int = 2223
    """Port of the jump host users reach TCP services (SSH) through."""


@dataclass(frozen=True)
class IronicLink:
    """An Ironic, and how Ecliptic uses its nodes."""

    client: Ironic
    """openstacksdk's bare-metal API, wrapped (``backends.ironic``)."""
    settings: IronicSettings
    """Endpoint, sync interval, deploy timeout and retries."""
    policy: PoolPolicy
    """The bare-metal-or-hypervisor pool's policy."""


@dataclass(frozen=True)
class Context:
    """What every reconciler works with."""

    db: Database
    """The store."""
    backend: Backend
    """The infrastructure."""
    queue: WorkQueue
    """To enqueue follow-up work."""
    booking: Booking
    """The reservation engine, kept in step with the store."""
    gateway: GatewayLink | None = None
    """The tunnel gateway platforms expose their services through (None: there is none)."""
    ironic: IronicLink | None = None
    """The Ironic whose nodes are hosts (None: hosts come from the inventory file only)."""


@dataclass(frozen=True)
class Outcome:
    """How a reconcile ended: done, or look again after a while."""

    requeue_after: float | None = None
    """Seconds until the object should be looked at again; None when converged."""


Reconciler = Callable[[Context, str], Outcome]
RECONCILERS: dict[str, Reconciler] = {}


def reconciler(kind: str) -> Callable[[Reconciler], Reconciler]:
    """Register the reconciler of one object kind."""

    def register(fn: Reconciler) -> Reconciler:
        RECONCILERS[kind] = fn
        return fn

    return register
