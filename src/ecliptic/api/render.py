"""Store rows to response bodies."""

from __future__ import annotations

from typing import Any

from ecliptic.api import schemas
from ecliptic.services.catalogue import HostUsage
from ecliptic.store.models import Host, Network, Port, Server


def port_out(p: Port) -> schemas.PortOut:
    """A port body."""
    return schemas.PortOut.model_validate(p)


def network_out(n: Network) -> schemas.NetworkOut:
    """A network body."""
    return schemas.NetworkOut.model_validate(n)


def server_out(s: Server) -> schemas.ServerOut:
    """A server body."""
    ports = list(s.ports)
    addresses: dict[str, list[str]] = {}
    for p in ports:
        addresses.setdefault(p.network.name, []).append(p.ip_address)
    return schemas.ServerOut(
        id=s.id,
        name=s.name,
        tenancy_id=s.tenancy_id,
        flavor=s.flavor.name,
        kind=s.kind,
        host=s.host.name if s.host else None,
        vcpus=s.vcpus,
        memory_mb=s.memory_mb,
        gpu_model=s.gpu_model,
        gpus=s.gpus,
        image=s.image,
        security_groups=list(s.spec.get("security_groups", [])),
        lease_id=s.lease_id,
        reservation=s.reservation,
        preemptible=s.preemptible,
        phase=s.phase,
        phase_reason=s.phase_reason,
        generation=s.generation,
        observed_generation=s.observed_generation,
        addresses=addresses,
        ports=[port_out(p) for p in ports],
        status=s.status,
        created_at=s.created_at,
        updated_at=s.updated_at,
    )


def server_row_body(row: dict[str, Any]) -> dict[str, Any]:
    """A server body (as ``ServerOut`` validates it) from a row of ``list_server_rows``."""
    addresses: dict[str, list[str]] = {}
    for p in row["ports"]:
        addresses.setdefault(p["network"], []).append(p["ip_address"])
    groups = list((row.get("spec") or {}).get("security_groups", []))
    return {**row, "addresses": addresses, "security_groups": groups}


def host_out(h: Host, usage: HostUsage) -> schemas.HostOut:
    """A host body with its usage."""
    return schemas.HostOut(
        id=h.id,
        name=h.name,
        state=h.state,
        state_reason=h.state_reason,
        source=h.source,
        node_id=h.node_id,
        pool=schemas.HostPoolOut(
            phase=h.pool.phase,
            reason=h.pool.phase_reason,
            hold=h.pool.hold,
            updated_at=h.pool.updated_at,
        )
        if h.pool is not None
        else None,
        vcpus=h.vcpus,
        memory_mb=h.memory_mb,
        disk_gb=h.disk_gb,
        gpus=[schemas.GpuOut(**g) for g in h.gpus],
        nics=h.nics,
        properties=h.properties,
        used_vcpus=usage.used_vcpus,
        used_memory_mb=usage.used_memory_mb,
        used_gpus=usage.used_gpus,
        servers=usage.servers,
    )
