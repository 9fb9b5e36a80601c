"""A platform's services on the gateway: one gateway service per platform service, its key
bound by the platform itself, its access list the platform's."""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from ecliptic.services.gateway import new_subdomain
from ecliptic.services.sshkeys import parse_public_key
from ecliptic.store.models import Platform, Service, ServiceAccess, TunnelEndpoint, TunnelKey
from ecliptic.store.transitions import audit


def service_name(platform_name: str, service: str) -> str:
    """The gateway service's name: ``<platform>-<service>``."""
    return f"{platform_name}-{service}"


def ensure_service(
    session: Session,
    row: Platform,
    name: str,
    *,
    public: bool,
    protocol: str,
    liveness_path: str | None,
) -> Service:
    """The platform's gateway service ``name``, made (with the platform's access list) or
    brought in line with the type."""
    full = service_name(row.name, name)
    svc = session.scalar(
        select(Service).where(Service.tenancy_id == row.tenancy_id, Service.name == full)
    )
    if svc is not None and svc.platform_id != row.id:
        raise ValueError(
            f"a gateway service named '{full}' exists already and is not this platform's: "
            "delete or rename it"
        )
    if svc is None:
        svc = Service(
            tenancy_id=row.tenancy_id,
            name=full,
            subdomain=new_subdomain(),
            public=public,
            protocol=protocol,
            liveness_path=liveness_path,
            liveness_period_s=5,
            created_by=row.created_by,
            platform_id=row.id,
        )
        svc.access = [ServiceAccess(user_id=a.user_id) for a in row.access]
        session.add(svc)
        session.flush()
        audit(session, svc, f"created by platform '{row.name}'")
    else:
        svc.public, svc.protocol, svc.liveness_path = public, protocol, liveness_path
    return svc


def bind_key(session: Session, svc: Service, public_line: str) -> None:
    """Bind the platform's tunnel key to its service (once)."""
    key = parse_public_key(public_line)
    have = session.scalar(select(TunnelKey).where(TunnelKey.fingerprint == key.fingerprint))
    if have is not None:
        if have.service_id != svc.id:
            raise ValueError("the platform's tunnel key is bound to another service")
        return
    session.add(TunnelKey(service_id=svc.id, fingerprint=key.fingerprint, public_key=key.line))
    audit(session, svc, f"key {key.fingerprint} bound by its platform")


def sync_access(session: Session, row: Platform) -> None:
    """Every service of the platform lets in exactly the platform's access list."""
    users = {a.user_id for a in row.access}
    for svc in session.scalars(select(Service).where(Service.platform_id == row.id)):
        if {a.user_id for a in svc.access} != users:
            svc.access = [ServiceAccess(user_id=u) for u in sorted(users)]
            audit(session, svc, f"access follows platform '{row.name}'")


def platform_services(session: Session, platform_id: str) -> list[Service]:
    """The platform's gateway services."""
    return list(session.scalars(select(Service).where(Service.platform_id == platform_id)))


def healthy_tunnels(session: Session, service_ids: list[str]) -> dict[str, int]:
    """How many healthy tunnels each service has."""
    out = dict.fromkeys(service_ids, 0)
    for sid, healthy in session.execute(
        select(TunnelEndpoint.service_id, TunnelEndpoint.healthy).where(
            TunnelEndpoint.service_id.in_(service_ids)
        )
    ):
        if healthy:
            out[sid] += 1
    return out


def remove_services(session: Session, platform_id: str, keep: set[str] | None = None) -> list[str]:
    """Delete the platform's gateway services (but those named in ``keep``); their keys and
    tokens go with them. Returns the names removed."""
    gone = []
    for svc in platform_services(session, platform_id):
        if keep is not None and svc.name in keep:
            continue
        gone.append(svc.name)
        session.execute(delete(Service).where(Service.id == svc.id))
    return gone
