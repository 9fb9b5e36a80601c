"""Services reached through the tunnel gateway, association tokens, and users' SSH keys."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Request, Response

from ecliptic.api.deps import CallerDep, RuntimeDep
from ecliptic.api.paging import NameFilter, PagingDep, matches, paged
from ecliptic.api.schemas import (
    AssociateOut,
    AssociateRequest,
    EventOut,
    GatewaySsh,
    Page,
    ServiceCreate,
    ServiceOut,
    ServiceUpdate,
    SshKeyCreate,
    SshKeyOut,
    TunnelKeyOut,
    TunnelOut,
    TunnelTokenCreate,
    TunnelTokenOut,
)
from ecliptic.runtime import Runtime
from ecliptic.services import gateway, sshkeys
from ecliptic.store.models import Service

router = APIRouter(tags=["services"])


def _service_out(
    rt: Runtime,
    service: Service,
    detail: gateway.ServiceDetail | None = None,
    token: gateway.IssuedTunnelToken | None = None,
) -> ServiceOut:
    host = f"{service.subdomain}.{rt.settings.gateway_domain}"
    return ServiceOut(
        id=service.id,
        name=service.name,
        subdomain=service.subdomain,
        host=host,
        url=rt.settings.gateway_front_url.format(service.subdomain),
        public=service.public,
        protocol=service.protocol,
        liveness_path=service.liveness_path,
        liveness_period_s=service.liveness_period_s,
        read_timeout_s=service.read_timeout_s,
        created_at=service.created_at,
        access=detail.access if detail else [],
        keys=[TunnelKeyOut.model_validate(k) for k in detail.keys] if detail else [],
        tunnels=[TunnelOut.model_validate(t) for t in detail.tunnels] if detail else [],
        token=TunnelTokenOut(token=token.secret, expires_at=token.expires_at) if token else None,
    )


def _ttl(rt: Runtime, minutes: int | None) -> timedelta:
    return timedelta(minutes=minutes) if minutes else rt.settings.gateway_token_ttl


@router.post("/services", response_model=ServiceOut, status_code=201)
def create_service(body: ServiceCreate, caller: CallerDep, rt: RuntimeDep) -> ServiceOut:
    """Reserve a random subdomain for a service; the answer holds its first association
    token (shown once). Give the token to the client that will serve it:
    ``ecliptic tunnel connect --token T --to http://localhost:8888``."""
    config = gateway.ServiceConfig(
        body.protocol, body.liveness_path, body.liveness_period_s, body.read_timeout_s
    )
    service, token = gateway.create_service(
        rt.db,
        caller,
        name=body.name,
        public=body.public,
        config=config,
        access=list(body.access) if body.access is not None else None,
        token_ttl=_ttl(rt, body.token_ttl_minutes),
        max_services=rt.settings.gateway_max_services,
    )
    detail = gateway.show_service(rt.db, caller, service.id)
    return _service_out(rt, service, detail, token)


@router.get("/services", response_model=Page[ServiceOut])
def list_services(
    caller: CallerDep, rt: RuntimeDep, page: PagingDep, name: NameFilter = None
) -> Page[ServiceOut]:
    """Your tenancy's services."""
    rows = [s for s in gateway.list_services(rt.db, caller) if matches(s.name, name)]
    return paged(rows, page, lambda s: s.id, lambda s: _service_out(rt, s))


@router.get("/services/{ref}", response_model=ServiceOut)
def show_service(ref: str, caller: CallerDep, rt: RuntimeDep) -> ServiceOut:
    """One service with its access list, bound keys and live tunnels."""
    detail = gateway.show_service(rt.db, caller, ref)
    return _service_out(rt, detail.service, detail)


@router.get("/services/{ref}/events", response_model=Page[EventOut])
def service_events(ref: str, caller: CallerDep, rt: RuntimeDep, page: PagingDep) -> Page[EventOut]:
    """Who changed the service and how: tokens issued, keys bound and revoked, access."""
    rows = gateway.service_events(rt.db, caller, ref)
    return paged(rows, page, lambda e: e.id, EventOut.model_validate)


@router.patch("/services/{ref}", response_model=ServiceOut)
def update_service(ref: str, body: ServiceUpdate, caller: CallerDep, rt: RuntimeDep) -> ServiceOut:
    """Make a service public or signed-in, or replace its access list. The gateway applies
    the change within seconds, to requests already signed in too."""
    gateway.update_service(
        rt.db,
        caller,
        ref,
        public=body.public,
        access=list(body.access) if body.access is not None else None,
    )
    detail = gateway.show_service(rt.db, caller, ref)
    return _service_out(rt, detail.service, detail)


@router.delete("/services/{ref}", status_code=204)
def delete_service(ref: str, caller: CallerDep, rt: RuntimeDep) -> Response:
    """Delete a service: its subdomain stops answering and its tunnels are cut."""
    gateway.delete_service(rt.db, caller, ref)
    return Response(status_code=204)


@router.post("/services/{ref}/tokens", response_model=TunnelTokenOut, status_code=201)
def create_token(
    ref: str, caller: CallerDep, rt: RuntimeDep, body: TunnelTokenCreate | None = None
) -> TunnelTokenOut:
    """Another single-use association token, to bind one more client (load-balanced)."""
    issued = gateway.issue_token(rt.db, caller, ref, _ttl(rt, body.ttl_minutes if body else None))
    return TunnelTokenOut(token=issued.secret, expires_at=issued.expires_at)


@router.delete("/services/{ref}/keys/{key_id}", status_code=204)
def revoke_key(ref: str, key_id: str, caller: CallerDep, rt: RuntimeDep) -> Response:
    """Unbind a client's key: its tunnels are cut and it cannot connect again."""
    gateway.revoke_key(rt.db, caller, ref, key_id)
    return Response(status_code=204)


@router.post("/tunnels/associate", response_model=AssociateOut)
def associate(body: AssociateRequest, request: Request, rt: RuntimeDep) -> AssociateOut:
    """Exchange a single-use token (no sign-in needed: the token is the credential) to bind
    an SSH public key to the token's service. First use wins; reuse is refused."""
    # Only what the client set changes the service; the rest stays as its owner made it.
    config = body.model_dump(include=set(gateway.CLIENT_SETTINGS), exclude_unset=True)
    result = gateway.associate(
        rt.db, body.token, body.public_key, config, max_keys=rt.settings.gateway_max_keys
    )
    if rt.after_key_bound is not None:
        rt.after_key_bound()
    s = rt.settings
    if s.gateway_ssh_public:
        host, _, port = s.gateway_ssh_public.rpartition(":")
        ssh_host, ssh_port = (host, int(port)) if port.isdigit() else (s.gateway_ssh_public, 0)
    else:
        ssh_host, ssh_port = request.url.hostname or "127.0.0.1", 0
    return AssociateOut(
        service_id=result.service.id,
        subdomain=result.service.subdomain,
        host=f"{result.service.subdomain}.{s.gateway_domain}",
        url=s.gateway_front_url.format(result.service.subdomain),
        ssh=GatewaySsh(
            host=ssh_host,
            port=ssh_port or s.gateway_ssh_port,
            user="tunnel",
            host_key=gateway.host_key(rt.db)[1],
        ),
    )


@router.get("/gateway/tunnels", response_model=Page[TunnelOut])
def live_tunnels(caller: CallerDep, rt: RuntimeDep, page: PagingDep) -> Page[TunnelOut]:
    """Every tunnel connected to any gateway replica (administrators)."""
    caller.require_admin("list every tunnel")
    rows = gateway.live_tunnels(rt.db)
    return paged(rows, page, lambda t: t.id, TunnelOut.model_validate)


@router.post("/users/me/ssh-keys", response_model=SshKeyOut, status_code=201)
def add_ssh_key(body: SshKeyCreate, caller: CallerDep, rt: RuntimeDep) -> SshKeyOut:
    """Register an SSH public key: it signs you in to the gateway's jump host
    (``ssh -J you@gateway:2223 <service>``) for TCP services you may reach."""
    return SshKeyOut.model_validate(sshkeys.add_user_key(rt.db, caller, body.name, body.public_key))


@router.get("/users/me/ssh-keys", response_model=Page[SshKeyOut])
def list_ssh_keys(caller: CallerDep, rt: RuntimeDep, page: PagingDep) -> Page[SshKeyOut]:
    """Your SSH keys."""
    rows = sshkeys.list_user_keys(rt.db, caller)
    return paged(rows, page, lambda k: k.id, SshKeyOut.model_validate)


@router.delete("/users/me/ssh-keys/{ref}", status_code=204)
def delete_ssh_key(ref: str, caller: CallerDep, rt: RuntimeDep) -> Response:
    """Remove one of your SSH keys."""
    sshkeys.delete_user_key(rt.db, caller, ref)
    return Response(status_code=204)
