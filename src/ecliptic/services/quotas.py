"""Quotas on on-demand use: how many servers, vCPUs, memory and GPUs a tenancy may hold
outside leases. Leases are paid from credits; preemptible servers give way to leases; both
are outside these limits. Defaults are site settings (``ECLIPTIC_QUOTA_*``); an
administrator sets a tenancy's own."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ecliptic.config import QUOTA_MAX, bounded_setting
from ecliptic.errors import EclipticError, InvalidInput
from ecliptic.services.caller import Caller
from ecliptic.services.identity import find_tenancy
from ecliptic.store.db import Database
from ecliptic.store.models import Flavor, Server, TenancyQuota

RESOURCES = ("servers", "vcpus", "memory_mb", "gpus")
DEFAULTS = {"servers": 200, "vcpus": 512, "memory_mb": 1048576, "gpus": 0}
"""Site defaults when ``ECLIPTIC_QUOTA_<RESOURCE>`` is not set."""


class QuotaExceeded(EclipticError):
    """An on-demand server would take the tenancy past one of its quotas."""

    code = "quota_exceeded"
    status = 409
    title = "Quota exceeded"


@dataclass(frozen=True)
class Quota:
    """A tenancy's on-demand limits and what it uses of them."""

    limits: dict[str, int]
    """Limit per resource (servers, vcpus, memory_mb, gpus)."""
    used: dict[str, int]
    """In use now, by the tenancy's on-demand servers."""
    defaults: dict[str, bool]
    """Per resource: True when the limit is the site's default."""


def site_defaults() -> dict[str, int]:
    """The default limits, from ``ECLIPTIC_QUOTA_SERVERS|VCPUS|MEMORY_MB|GPUS``."""
    return {
        r: bounded_setting(f"ECLIPTIC_QUOTA_{r.upper()}", default, 0, QUOTA_MAX)
        for r, default in DEFAULTS.items()
    }


def _quota(session: Session, tenancy_id: str) -> Quota:
    row = session.get(TenancyQuota, tenancy_id)
    defaults = site_defaults()
    limits, is_default = {}, {}
    for r in RESOURCES:
        own = getattr(row, r) if row is not None else None
        limits[r] = defaults[r] if own is None else own
        is_default[r] = own is None
    servers, vcpus, memory, gpus = session.execute(
        select(
            func.count(Server.id),
            func.coalesce(func.sum(Server.vcpus), 0),
            func.coalesce(func.sum(Server.memory_mb), 0),
            func.coalesce(func.sum(Server.gpus), 0),
        ).where(
            Server.tenancy_id == tenancy_id,
            Server.lease_id.is_(None),
            Server.preemptible.is_(False),
        )
    ).one()
    used = {"servers": servers, "vcpus": vcpus, "memory_mb": memory, "gpus": gpus}
    return Quota(limits, {k: int(v) for k, v in used.items()}, is_default)


def check_on_demand(session: Session, tenancy_id: str, fl: Flavor) -> None:
    """Refuse an on-demand server of ``fl`` that the tenancy's quota cannot hold (the
    caller holds the placement lock, so concurrent creates cannot both slip through)."""
    q = _quota(session, tenancy_id)
    asked = {"servers": 1, "vcpus": fl.vcpus, "memory_mb": fl.memory_mb, "gpus": fl.gpus}
    for r in RESOURCES:
        if asked[r] and q.used[r] + asked[r] > q.limits[r]:
            raise QuotaExceeded(
                f"on-demand quota '{r}' exceeded: {q.used[r]} in use + {asked[r]} asked > "
                f"limit {q.limits[r]}; delete an on-demand server, reserve capacity with a "
                "lease (ecliptic lease create), run it --preemptible, or ask an "
                "administrator to raise the quota (ecliptic quota set)"
            )


def show(db: Database, caller: Caller, tenancy: str | None = None) -> tuple[str, Quota]:
    """The quota of the caller's tenancy (administrators: of any tenancy)."""
    if tenancy is not None:
        caller.require_admin("see another tenancy's quota")
    with db.read() as session:
        if tenancy is not None:
            t = find_tenancy(session, tenancy)
        else:
            t = find_tenancy(session, caller.require_tenancy())
        return t.name, _quota(session, t.id)


def set_limits(
    db: Database, caller: Caller, tenancy: str, limits: dict[str, int | None]
) -> tuple[str, Quota]:
    """Set some of a tenancy's limits (None: back to the site default); administrators."""
    caller.require_admin("set quotas")
    unknown = set(limits) - set(RESOURCES)
    if unknown:
        raise InvalidInput(f"unknown quota {sorted(unknown)}: use {', '.join(RESOURCES)}")
    with db.write() as session:
        t = find_tenancy(session, tenancy)
        row = session.get(TenancyQuota, t.id)
        if row is None:
            row = TenancyQuota(tenancy_id=t.id)
            session.add(row)
        for r, v in limits.items():
            setattr(row, r, v)
        session.flush()
        return t.name, _quota(session, t.id)
