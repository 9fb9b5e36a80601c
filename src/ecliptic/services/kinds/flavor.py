"""Instance slots of a flavor's size (or an explicit size), with (anti-)affinity."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from sqlalchemy.orm import Session

from ecliptic.errors import InvalidInput
from ecliptic.scheduler.model import Allocation, FlavorRequest, Request
from ecliptic.services.catalogue import find_flavor
from ecliptic.services.inputs import FlavorReservationIn, ReservationIn
from ecliptic.services.kinds.base import (
    Inside,
    place_in_slots,
    refuse_bare_metal,
    slot_flavor,
)
from ecliptic.store.models import Flavor, Lease, LeaseAllocation

SIZE = ("vcpus", "memory_mb", "disk_gb", "gpu_model", "gpus")


class FlavorKind:
    """Slots: room for ``count`` servers of one size, on any hosts that have it."""

    name = "flavor"
    priced_alone = False

    def request(self, session: Session, r: ReservationIn, loc: list[Any]) -> Request:
        assert isinstance(r, FlavorReservationIn)
        size: dict[str, Any] = {}
        if r.flavor:
            fl = slot_flavor(session, r.flavor, loc)
            size = {k: getattr(fl, k) for k in SIZE}
        for k in SIZE:
            v = getattr(r, k)
            if v is not None:
                size[k] = v
        if "vcpus" not in size or "memory_mb" not in size:
            raise InvalidInput(
                "a flavor reservation needs a flavor, or vcpus and memory_mb",
                errors=[{"loc": loc, "msg": "flavor or vcpus+memory_mb required"}],
            )
        if (size.get("gpus") or r.gpu_profile) and not size.get("gpu_model"):
            raise InvalidInput(
                "GPUs or a GPU profile need a gpu_model",
                errors=[{"loc": [*loc, "gpu_model"], "msg": "required"}],
            )
        return FlavorRequest(
            key=r.name,
            count=r.count,
            vcpus=int(size["vcpus"]),
            memory_mb=int(size["memory_mb"]),
            disk_gb=int(size.get("disk_gb") or 0),
            gpu_model=size.get("gpu_model"),
            gpus=int(size.get("gpus") or 0),
            gpu_profile=r.gpu_profile,
            affinity=r.affinity,
            filter=r.where,
        )

    def resized(self, spec: dict[str, Any], count: int) -> dict[str, Any]:
        return {**spec, "count": count}

    def pinned(self, req: Request, hosts: list[str]) -> Request:
        return req  # slots may move: the engine keeps the ones with servers where they are

    def replacement(self, req: Request, lost: Sequence[Allocation]) -> Request:
        assert isinstance(req, FlavorRequest)
        return replace(req, count=sum(a.slots for a in lost), affinity="none")

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
        """A free slot, for a flavor no bigger than the slot."""
        refuse_bare_metal(fl, reservation, "slot")
        vcpus, memory_mb, gpus = spec.get("vcpus"), spec.get("memory_mb"), spec.get("gpus")
        if spec.get("flavor"):
            ref = find_flavor(session, spec["flavor"])
            vcpus, memory_mb = vcpus or ref.vcpus, memory_mb or ref.memory_mb
            gpus = gpus if gpus is not None else ref.gpus
        if (
            fl.vcpus > int(vcpus or 0)
            or fl.memory_mb > int(memory_mb or 0)
            or fl.gpus > int(gpus or 0)
        ):
            raise InvalidInput(
                f"flavor '{fl.name}' ({fl.vcpus} vCPU, {fl.memory_mb} MiB, {fl.gpus} GPU) is "
                f"bigger than a slot of reservation '{reservation}' ({vcpus} vCPU, "
                f"{memory_mb} MiB, {gpus or 0} GPU); pick a flavor that fits the slot"
            )
        return place_in_slots(lease, reservation, "slot", allocs, fl, inside)
