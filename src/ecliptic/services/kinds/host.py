"""Whole hosts matching a filter: ``count``, or a ``min``-``max`` range."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecliptic.errors import InvalidInput
from ecliptic.scheduler.model import Allocation, HostRequest, Request
from ecliptic.services.inputs import HostReservationIn, ReservationIn
from ecliptic.services.kinds.base import Inside, NoCapacity
from ecliptic.store.models import Flavor, Host, Lease, LeaseAllocation


class HostKind:
    """Whole hosts: the lease has every host it holds to itself."""

    name = "host"
    priced_alone = False

    def request(self, session: Session, r: ReservationIn, loc: list[Any]) -> Request:
        assert isinstance(r, HostReservationIn)
        if r.count is not None and (r.min is not None or r.max is not None):
            raise InvalidInput(
                "give either count, or min and max, for a host reservation",
                errors=[{"loc": loc, "msg": "count and min/max are exclusive"}],
            )
        lo = r.count or r.min or 1
        hi = r.count or r.max or lo
        if hi < lo:
            raise InvalidInput(
                f"max ({hi}) is below min ({lo})",
                errors=[{"loc": [*loc, "max"], "msg": "must be >= min"}],
            )
        return HostRequest(key=r.name, min_count=lo, max_count=hi, filter=r.where)

    def resized(self, spec: dict[str, Any], count: int) -> dict[str, Any]:
        return {**spec, "count": count, "min": None, "max": None}

    def pinned(self, req: Request, hosts: list[str]) -> Request:
        """Restricted to ``hosts``, and to at least all of them."""
        assert isinstance(req, HostRequest)
        if not hosts:
            return req
        names = ", ".join(f'"{h}"' for h in hosts)
        where = f"({req.filter}) and name in [{names}]" if req.filter else f"name in [{names}]"
        return HostRequest(
            key=req.key, min_count=req.min_count, max_count=req.max_count, filter=where
        )

    def replacement(self, req: Request, lost: Sequence[Allocation]) -> Request:
        assert isinstance(req, HostRequest)
        return HostRequest(key=req.key, min_count=len(lost), max_count=len(lost), filter=req.filter)

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
        """The first of the lease's hosts with room for ``fl`` (a bare-metal server takes a
        host of the lease that no server uses)."""
        hosts = {
            h.name: h
            for h in session.scalars(select(Host).where(Host.name.in_([a.host for a in allocs])))
        }
        for a in sorted(allocs, key=lambda a: a.host):
            h = hosts[a.host]
            used = [r for r in inside if r[0] == a.host]
            if fl.kind == "baremetal":
                if not used:
                    return a.host
                continue
            cpu = h.vcpus - sum(r[1] for r in used)
            mem = h.memory_mb - sum(r[2] for r in used)
            gpu = sum(int(g["count"]) for g in h.gpus if g["model"] == fl.gpu_model) - sum(
                r[3] for r in used
            )
            if cpu >= fl.vcpus and mem >= fl.memory_mb and (not fl.gpus or gpu >= fl.gpus):
                return a.host
        raise NoCapacity(
            f"the hosts of reservation '{reservation}' of lease '{lease.name}' "
            f"have no room left for flavor '{fl.name}'"
        )
