"""Ecliptic credits enforced on a real Blazar: the use case behind Blazar's
ExternalServiceFilter contract (``api/routes/blazar.py`` parses and renders it).

Costs: ``physical:host`` reservations are charged as ``host:<type>`` host-hours per
allocated host (type from the host's ``host_type``/``node_type`` capability, else the
Ecliptic host of that name, else ``blazar``); instance reservations as ``vcpu`` hours
(``vcpus x amount``); ``resource_requests`` (StackHPC's Blazar) map ``VCPU`` to ``vcpu``
and ``CUSTOM_GPU_<MODEL>`` to ``gpu:<MODEL>``. Create has no lease id in Blazar, so the
charge is keyed by project, name and start and re-keyed to the lease id when it appears.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecliptic.services import credits
from ecliptic.services.booking import host_info
from ecliptic.services.pricing import duration_hours, host_type
from ecliptic.store.db import Database
from ecliptic.store.models import Host, Meta, Tenancy


@dataclass(frozen=True)
class BlazarLease:
    """A lease as Blazar describes it (only what the cost needs)."""

    name: str
    """Blazar's lease name."""
    start_date: datetime
    """Start (naive times are UTC)."""
    end_date: datetime
    """End (naive times are UTC)."""
    id: str | None = None
    """Blazar's lease id; absent on create."""
    reservations: Sequence[Mapping[str, Any]] = ()
    """Blazar's reservations (resource_type, allocations, vcpus, amount...)."""
    resource_requests: Mapping[str, float] | None = field(default=None)
    """StackHPC's placement-style requests (``VCPU``, ``CUSTOM_GPU_<MODEL>``)."""


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _tenancy(session: Session, project_id: str) -> Tenancy | None:
    return session.scalar(
        select(Tenancy).where((Tenancy.id == project_id) | (Tenancy.name == project_id))
    )


def blazar_cost(session: Session, lease: BlazarLease) -> dict[str, Decimal]:
    """Resource-hours a Blazar lease holds."""
    start, end = _utc(lease.start_date), _utc(lease.end_date)
    h = duration_hours(start, end)
    cost: dict[str, Decimal] = defaultdict(Decimal)
    if lease.resource_requests:
        for rc, amount in lease.resource_requests.items():
            if rc == "VCPU":
                cost["vcpu"] += h * Decimal(str(amount))
            elif rc.startswith("CUSTOM_GPU_"):
                cost[f"gpu:{rc.removeprefix('CUSTOM_GPU_')}"] += h * Decimal(str(amount))
        return dict(cost)
    hosts = {x.name: x for x in session.scalars(select(Host))}
    for r in lease.reservations:
        rtype = str(r.get("resource_type", ""))
        if rtype == "physical:host":
            allocs = r.get("allocations") or []
            count = len(allocs) or int(str(r.get("min", 1)))
            for i in range(count):
                a = allocs[i] if i < len(allocs) else {}
                kind = a.get("host_type") or a.get("node_type")
                name = a.get("hypervisor_hostname")
                if not kind and name in hosts:
                    kind = host_type(host_info(hosts[name]))
                cost[f"host:{kind or 'blazar'}"] += h
        elif rtype in ("virtual:instance", "flavor:instance"):
            cost["vcpu"] += h * int(r.get("vcpus", 0) or 0) * int(r.get("amount", 1) or 1)
    return {k: v for k, v in cost.items() if v}


def _key(project: str, lease: BlazarLease) -> str:
    raw = f"blazar:{project}:{lease.name}:{_utc(lease.start_date).isoformat()}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def _ledger_id(session: Session, project: str, lease: BlazarLease) -> str:
    if lease.id:
        row = session.get(Meta, f"blazar:{lease.id}")
        if row is not None:
            return row.value
        key = _key(project, lease)
        session.add(Meta(key=f"blazar:{lease.id}", value=key))
        return key
    return _key(project, lease)


def settle(
    db: Database,
    project: str,
    lease: BlazarLease,
    key_from: BlazarLease,
    end: datetime | None,
    note: str,
) -> str | None:
    """Charge (or refund) what the lease holds until ``end`` (default its end) from the
    project's tenancy; the reason to refuse it, or None when it is allowed."""
    try:
        with db.write(credits.CREDITS_LOCK) as session:
            t = _tenancy(session, project)
            if t is None:
                return f"project {project} has no Ecliptic tenancy, so no credit"
            start = _utc(lease.start_date)
            stop = max(start, _utc(end or lease.end_date))
            credits.settle(
                session,
                t.id,
                _ledger_id(session, project, key_from),
                blazar_cost(session, replace(lease, end_date=stop)),
                start,
                stop,
                note=note,
            )
    except credits.InsufficientCredits as exc:
        return exc.message
    return None


def ended_at(lease: BlazarLease, now: datetime) -> datetime:
    """When a lease Blazar says has ended stopped costing: now, within its window."""
    return min(_utc(lease.end_date), max(_utc(lease.start_date), now))
