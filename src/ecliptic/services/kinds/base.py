"""What every reservation kind provides (see :mod:`ecliptic.services.kinds`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy.orm import Session

from ecliptic.errors import Conflict, InvalidInput, NotFound
from ecliptic.scheduler.model import Allocation, Request
from ecliptic.services.catalogue import find_flavor
from ecliptic.services.inputs import ReservationIn
from ecliptic.store.models import Flavor, Lease, LeaseAllocation

Inside = Sequence[tuple[str, int, int, int]]
"""The servers already in a reservation: (host, vCPUs, memory MiB, GPUs) each."""


class NoCapacity(Conflict):
    """No host has room for the server."""

    code = "no_capacity"


class ReservationKind(Protocol):
    """One kind of reservable capacity."""

    name: str
    """``host``, ``flavor`` or ``gpu_slice``: the ``kind`` of a reservation body."""
    priced_alone: bool
    """True when what the engine books with it (vCPUs, memory) comes with its unit and is
    not charged on its own (GPU slices)."""

    def request(self, session: Session, r: ReservationIn, loc: list[Any]) -> Request:
        """The engine request for a reservation body (flavor names resolved, checked);
        ``loc`` is where the body sits in the request, for errors."""
        ...

    def resized(self, spec: dict[str, Any], count: int) -> dict[str, Any]:
        """The stored reservation ``spec`` grown or shrunk to ``count``."""
        ...

    def pinned(self, req: Request, hosts: list[str]) -> Request:
        """``req`` held to the hosts it has (a started lease with servers on them)."""
        ...

    def replacement(self, req: Request, lost: Sequence[Allocation]) -> Request:
        """A request for what the reservation lost with a host that went down."""
        ...

    def place_server(
        self,
        session: Session,
        lease: Lease,
        reservation: str,
        spec: dict[str, Any],
        allocs: Sequence[LeaseAllocation],
        fl: Flavor,
        inside: Inside,
    ) -> str:
        """The host of the reservation where a new server of flavor ``fl`` goes, or
        ``NoCapacity`` / ``InvalidInput`` saying why none."""
        ...


def slot_flavor(session: Session, name: str, loc: list[Any]) -> Flavor:
    """The flavor a slot or slice reservation is sized by (not bare metal)."""
    try:
        fl = find_flavor(session, name)
    except NotFound as exc:
        raise InvalidInput(
            exc.message, errors=[{"loc": [*loc, "flavor"], "msg": exc.message}]
        ) from None
    if fl.kind == "baremetal":
        raise InvalidInput(
            f"flavor '{fl.name}' is bare metal: reserve whole hosts with a host reservation instead"
        )
    return fl


def refuse_bare_metal(fl: Flavor, reservation: str, unit: str) -> None:
    """A bare-metal flavor needs a whole host: not a slot or a slice of one."""
    if fl.kind == "baremetal":
        raise InvalidInput(
            f"reservation '{reservation}' holds {unit}s, not whole hosts: use a vm flavor"
        )


def place_in_slots(
    lease: Lease,
    reservation: str,
    unit: str,
    allocs: Sequence[LeaseAllocation],
    fl: Flavor,
    inside: Inside,
    *,
    booked_share: bool = False,
) -> str:
    """The first host of a slot or slice reservation with a free ``unit`` for a server of
    flavor ``fl``; with ``booked_share``, also within the vCPUs and memory the units
    booked there. Its callers refuse bare-metal flavors first (``refuse_bare_metal``)."""
    too_big = ""
    for a in sorted(allocs, key=lambda a: a.host):
        used = [r for r in inside if r[0] == a.host]
        if len(used) >= a.slots:
            continue
        if booked_share:
            # The slices booked their vCPUs and memory on this host (their share of it, or
            # the flavor they were reserved for): the servers in them get no more than that.
            from ecliptic.services.booking import amount_from_json

            booked = amount_from_json(a.amount)
            cpu = booked.vcpus - sum(r[1] for r in used)
            mem = booked.memory_mb - sum(r[2] for r in used)
            if fl.vcpus > cpu or fl.memory_mb > mem:
                too_big = (
                    f"; on {a.host} its slices booked {booked.vcpus} vCPU and "
                    f"{booked.memory_mb} MiB, {cpu} vCPU and {mem} MiB are free, and flavor "
                    f"'{fl.name}' needs {fl.vcpus} vCPU and {fl.memory_mb} MiB: use a smaller "
                    'flavor, or reserve the slices for this flavor ("flavor" in the '
                    "reservation, 'ecliptic lease create --slice-flavor')"
                )
                continue
        return a.host
    total = sum(a.slots for a in allocs)
    if too_big:
        raise NoCapacity(
            f"reservation '{reservation}' of lease '{lease.name}' has no room left for "
            f"flavor '{fl.name}'{too_big}"
        )
    raise NoCapacity(
        f"reservation '{reservation}' of lease '{lease.name}' holds {total} "
        f"{unit}(s), all in use; delete a server of the lease or grow it "
        "('ecliptic lease update')"
    )
