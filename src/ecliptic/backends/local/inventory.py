"""The host inventory: a YAML file validated with pydantic and turned into ``HostRecord``s."""

from __future__ import annotations

import importlib.resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from ecliptic.backends.base import BackendError, GpuRecord, HostRecord, NicRecord

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.-]{0,62}$")]
NicName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,14}$")]
GpuModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")]
MigProfile = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]?g\.[1-9][0-9]{0,3}gb$")]
PropertyKey = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.-]{0,62}$")]
PropertyValue = bool | int | float | Annotated[str, StringConstraints(max_length=256)]


class InventoryError(BackendError):
    """The inventory file is missing or invalid; the message names file, host and field."""

    code = "invalid_inventory"

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class GpuModel(BaseModel):
    """GPUs of one model in a host."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: GpuModelName
    count: int = Field(ge=1, le=64)
    memory_gb: int = Field(default=0, ge=0, le=4096)
    mig_profiles: tuple[MigProfile, ...] = Field(default=(), max_length=16)


class NicModel(BaseModel):
    """A physical NIC of a host."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: NicName
    speed_gbps: int = Field(default=0, ge=0, le=3200)
    rdma: bool = False
    sriov_vfs: int = Field(default=0, ge=0, le=1024)


class HostModel(BaseModel):
    """One host of the inventory."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    vcpus: int = Field(ge=1, le=4096)
    memory_mb: int = Field(ge=1, le=64 * 1024 * 1024)
    disk_gb: int = Field(default=0, ge=0, le=10_000_000)
    gpus: tuple[GpuModel, ...] = Field(default=(), max_length=16)
    nics: tuple[NicModel, ...] = Field(default=(), max_length=32)
    properties: dict[PropertyKey, PropertyValue] = Field(default_factory=dict, max_length=64)

    def to_record(self) -> HostRecord:
        """As the backend-neutral ``HostRecord``."""
        return HostRecord(
            name=self.name,
            vcpus=self.vcpus,
            memory_mb=self.memory_mb,
            disk_gb=self.disk_gb,
            gpus=tuple(
                GpuRecord(
                    model=g.model,
                    count=g.count,
                    memory_gb=g.memory_gb,
                    mig_profiles=g.mig_profiles,
                )
                for g in self.gpus
            ),
            nics=tuple(
                NicRecord(name=n.name, speed_gbps=n.speed_gbps, rdma=n.rdma, sriov_vfs=n.sriov_vfs)
                for n in self.nics
            ),
            properties=tuple(sorted(self.properties.items())),
        )


class InventoryModel(BaseModel):
    """The whole inventory file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hosts: tuple[HostModel, ...] = Field(default=(), max_length=10_000)
    """May be empty when every host comes from Ironic (``ECLIPTIC_IRONIC_URL``)."""


def default_text() -> tuple[str, str]:
    """The packaged default inventory: (text, name for messages)."""
    res = importlib.resources.files("ecliptic").joinpath("data/inventory.yaml")
    return res.read_text(encoding="utf-8"), str(res)


def load(path: Path | None = None) -> list[HostRecord]:
    """Hosts from ``path`` (default: the packaged inventory); InventoryError when invalid."""
    if path is None:
        text, where = default_text()
    else:
        where = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise InventoryError(f"inventory {where}: cannot read: {e.strerror or e}") from e
    return parse(text, where)


def parse(text: str, where: str) -> list[HostRecord]:
    """Validate inventory YAML ``text`` (``where`` names it in errors)."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise InventoryError(f"inventory {where}: not valid YAML: {e}") from e
    try:
        model = InventoryModel.model_validate(raw)
    except ValidationError as e:
        raise InventoryError(_explain(e, raw, where)) from e
    seen: set[str] = set()
    for i, host in enumerate(model.hosts):
        if host.name in seen:
            raise InventoryError(
                f"inventory {where}: host {host.name!r} (hosts[{i}]): field 'name': duplicate"
            )
        seen.add(host.name)
    return [h.to_record() for h in model.hosts]


def _explain(err: ValidationError, raw: Any, where: str) -> str:
    """One line per problem: file, host (by name when it has one) and field path."""
    lines = []
    for item in err.errors():
        loc = list(item["loc"])
        host = ""
        if len(loc) >= 2 and loc[0] == "hosts" and isinstance(loc[1], int):
            idx = loc[1]
            name = None
            if isinstance(raw, dict) and isinstance(raw.get("hosts"), list):
                entry = raw["hosts"][idx] if idx < len(raw["hosts"]) else None
                if isinstance(entry, dict):
                    name = entry.get("name")
            host = f"host {name!r} (hosts[{idx}])" if name else f"host hosts[{idx}]"
            loc = loc[2:]
        field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        prefix = f"inventory {where}: " + (f"{host}: " if host else "")
        lines.append(f"{prefix}field {field or '(top level)'!r}: {item['msg']}")
    return "\n".join(lines)
