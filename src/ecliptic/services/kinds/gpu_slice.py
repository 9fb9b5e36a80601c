"""GPU slices of a profile (``1g.10gb`` is a seventh of an A100) on any host offering it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from ecliptic.errors import InvalidInput
from ecliptic.scheduler.model import Allocation, Request, SliceRequest
from ecliptic.services.inputs import ReservationIn, SliceReservationIn
from ecliptic.services.kinds.base import (
    Inside,
    place_in_slots,
    refuse_bare_metal,
    slot_flavor,
)
from ecliptic.store.models import Flavor, Lease, LeaseAllocation


class SliceKind:
    """Slices: a share of a GPU each, booked with its share of the host's vCPUs and memory
    (or the size of the flavor it is for), which its server is held to."""

    name = "gpu_slice"
    priced_alone = True

    def request(self, session: Session, r: ReservationIn, loc: list[Any]) -> Request:
        assert isinstance(r, SliceReservationIn)
        vcpus = memory_mb = None
        if r.flavor:
            fl = slot_flavor(session, r.flavor, loc)
            if fl.gpus:
                raise InvalidInput(
                    f"flavor '{fl.name}' has whole GPUs; a slice reservation is for flavors "
                    "without GPUs (the slice is the server's GPU)",
                    errors=[{"loc": [*loc, "flavor"], "msg": "flavor has whole GPUs"}],
                )
            vcpus, memory_mb = fl.vcpus, fl.memory_mb
        return SliceRequest(
            key=r.name,
            count=r.count,
            profile=r.profile,
            gpu_model=r.gpu_model,
            filter=r.where,
            vcpus=vcpus,
            memory_mb=memory_mb,
        )

    def resized(self, spec: dict[str, Any], count: int) -> dict[str, Any]:
        return {**spec, "count": count}

    def pinned(self, req: Request, hosts: list[str]) -> Request:
        return req

    def replacement(self, req: Request, lost: Sequence[Allocation]) -> Request:
        assert isinstance(req, SliceRequest)
        return replace(req, count=sum(a.slots for a in lost))

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
        """A free slice whose booked vCPUs and memory hold the flavor."""
        refuse_bare_metal(fl, reservation, "slice")
        if fl.gpus:
            raise InvalidInput(
                f"reservation '{reservation}' holds GPU slices, not whole GPUs: use "
                "a flavor without GPUs (the slice is the server's GPU)"
            )
        return place_in_slots(lease, reservation, "slice", allocs, fl, inside, booked_share=True)
