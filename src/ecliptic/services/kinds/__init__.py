"""Reservation kinds: one module per kind of reservable capacity, behind one interface.

A lease reserves capacity in reservations of three kinds, as Blazar has one plugin per
reservable resource:

- ``host`` (:mod:`.host`): whole hosts matching a filter;
- ``flavor`` (:mod:`.flavor`): instance slots of a flavor's size, with (anti-)affinity;
- ``gpu_slice`` (:mod:`.gpu_slice`): GPU slices (MIG profiles) with their share of a host.

Everything that differs between them lives in their module, behind
:class:`ReservationKind`: how a request body becomes an engine request, how a
reservation is resized, pinned to the hosts it holds, replaced after a host is lost, and
where a server inside it goes. The rest of the services ask :func:`kind_of`.
"""

from __future__ import annotations

from ecliptic.services.kinds.base import NoCapacity, ReservationKind
from ecliptic.services.kinds.flavor import FlavorKind
from ecliptic.services.kinds.gpu_slice import SliceKind
from ecliptic.services.kinds.host import HostKind

KINDS: dict[str, ReservationKind] = {k.name: k for k in (HostKind(), FlavorKind(), SliceKind())}


def kind_of(name: str) -> ReservationKind:
    """The reservation kind called ``name`` (``host``, ``flavor``, ``gpu_slice``)."""
    return KINDS[name]


__all__ = ["KINDS", "NoCapacity", "ReservationKind", "kind_of"]
