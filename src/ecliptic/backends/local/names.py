"""Resource names of the local backend, and the owner records that say whose they are.

Every namespace and link the backend creates is named ``ecl<kind>-<10 hex of the object id>``
and, before it is created, gets an owner record ``<owners_dir>/<resource-name>`` holding
``{"instance": ..., "kind": ..., "object_id": ...}``. Several Ecliptic instances share one
machine; an instance only ever touches resources whose record names it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from ecliptic.backends.base import BackendError

SERVER_PREFIX = "ecl-"
BRIDGE_PREFIX = "eclb-"
VETH_PREFIX = "eclv-"
MACVLAN_PREFIX = "eclm-"
PF_PREFIX = "eclp-"
PF_PEER_PREFIX = "eclq-"
LINK_PREFIXES = (BRIDGE_PREFIX, VETH_PREFIX, MACVLAN_PREFIX, PF_PREFIX, PF_PEER_PREFIX)
"""Prefixes of links in the root namespace."""

DEFAULT_OWNERS_DIR = Path("/run/ecliptic/owners")

OwnerKind = Literal["server", "network", "port"]

_ID_RE = re.compile(r"^[0-9a-f]{10,64}$")
_RESOURCE_RE = re.compile(r"^ecl[a-z]?-[0-9a-f]{10}$")


class OwnershipError(BackendError):
    """A resource exists but is not ours (another instance's, or nobody's record)."""

    code = "ownership_conflict"

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


def short_id(object_id: str) -> str:
    """The first 10 hex characters of an id with dashes removed; rejects non-hex ids."""
    s = object_id.replace("-", "").lower()
    if not _ID_RE.match(s):
        raise BackendError(f"invalid object id {object_id!r}: expected a hex uuid", retryable=False)
    return s[:10]


def netns_name(server_id: str) -> str:
    """Network namespace of a server: ``ecl-<sid>``."""
    return SERVER_PREFIX + short_id(server_id)


def bridge_name(network_id: str) -> str:
    """Bridge of a network: ``eclb-<nid>``."""
    return BRIDGE_PREFIX + short_id(network_id)


def pf_name(network_id: str) -> str:
    """Emulated SR-IOV physical function of a network: ``eclp-<nid>``."""
    return PF_PREFIX + short_id(network_id)


def pf_peer_name(network_id: str) -> str:
    """Bridge-side peer of a network's PF veth: ``eclq-<nid>``."""
    return PF_PEER_PREFIX + short_id(network_id)


def veth_name(port_id: str) -> str:
    """Host end of a normal port's veth pair: ``eclv-<pid>``."""
    return VETH_PREFIX + short_id(port_id)


def macvlan_name(port_id: str) -> str:
    """Root-namespace name of a direct port's macvlan (only ever seen as a leftover)."""
    return MACVLAN_PREFIX + short_id(port_id)


def port_resource_name(port_id: str, vnic_type: str) -> str:
    """The name a port's owner record is filed under."""
    return veth_name(port_id) if vnic_type == "normal" else macvlan_name(port_id)


def inner_ifname(index: int) -> str:
    """Interface name inside a server for port ``index``: ``eth<index>``."""
    return f"eth{index}"


def is_resource_name(name: str) -> bool:
    """True for names of the shape the backend gives its namespaces and links."""
    return bool(_RESOURCE_RE.match(name))


@dataclass(frozen=True)
class OwnerRecord:
    """Who a resource belongs to; ports also say which server and network."""

    instance: str
    kind: OwnerKind
    object_id: str
    server_id: str | None = None
    network_id: str | None = None
    vnic_type: str | None = None
    index: int | None = None

    def to_json(self) -> str:
        """Serialise, leaving out unset fields."""
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def from_json(cls, text: str) -> OwnerRecord:
        """Parse a record; raises ValueError on anything malformed."""
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("owner record is not an object")
        kind = raw.get("kind")
        if kind not in ("server", "network", "port"):
            raise ValueError(f"bad kind {kind!r}")
        instance, object_id = raw.get("instance"), raw.get("object_id")
        if not isinstance(instance, str) or not isinstance(object_id, str):
            raise ValueError("instance and object_id must be strings")
        index = raw.get("index")
        return cls(
            instance=instance,
            kind=kind,
            object_id=object_id,
            server_id=_opt_str(raw.get("server_id")),
            network_id=_opt_str(raw.get("network_id")),
            vnic_type=_opt_str(raw.get("vnic_type")),
            index=index if isinstance(index, int) else None,
        )


def _opt_str(value: object) -> str | None:
    return value if isinstance(value, str) else None


class OwnerRegistry:
    """The owner-record directory, seen from one Ecliptic instance."""

    def __init__(self, directory: Path, instance: str) -> None:
        if not instance or len(instance) > 200:
            raise ValueError("instance_id must be a non-empty string of at most 200 characters")
        self.directory = directory
        self.instance = instance

    def path(self, name: str) -> Path:
        """Path of the record of resource ``name``."""
        return self.directory / name

    def read(self, name: str) -> OwnerRecord | None:
        """The record of ``name``, None when there is none; OwnershipError if unreadable."""
        try:
            text = self.path(name).read_text()
        except FileNotFoundError:
            return None
        try:
            return OwnerRecord.from_json(text)
        except ValueError as e:
            raise OwnershipError(f"owner record {self.path(name)} is unreadable: {e}") from e

    def is_mine(self, name: str) -> bool:
        """True when ``name`` has a record of this instance."""
        try:
            rec = self.read(name)
        except OwnershipError:
            return False
        return rec is not None and rec.instance == self.instance

    def claim(self, name: str, record: OwnerRecord, *, exists_unowned: bool = False) -> bool:
        """File ``record`` for ``name`` unless already ours; refuse another instance's resource.

        ``exists_unowned`` tells that the resource already exists: without a record of ours it
        is somebody else's, and we refuse rather than adopt it. Returns True when written.
        """
        current = self.read(name)
        if current is not None:
            if current.instance != self.instance:
                raise OwnershipError(
                    f"{name} belongs to another Ecliptic instance ({current.instance!r})"
                )
            if current.object_id != record.object_id or current.kind != record.kind:
                raise OwnershipError(
                    f"{name} is already used by {current.kind} {current.object_id}"
                    f" (id prefix clash with {record.kind} {record.object_id})"
                )
            if current != record:
                self._write(name, record, replace=True)
                return True
            return False
        if exists_unowned:
            raise OwnershipError(f"{name} exists but has no owner record; not touching it")
        self._write(name, record, replace=False)
        return True

    def release(self, name: str) -> None:
        """Remove the record of ``name`` if it is ours."""
        if self.is_mine(name):
            with contextlib.suppress(FileNotFoundError):
                self.path(name).unlink()

    def age(self, name: str) -> float:
        """Seconds since the record of ``name`` was written (0 when missing)."""
        try:
            return max(0.0, time.time() - self.path(name).stat().st_mtime)
        except FileNotFoundError:
            return 0.0

    def mine(self, prefixes: tuple[str, ...] = ()) -> dict[str, OwnerRecord]:
        """All readable records of this instance (names starting with ``prefixes``, if given)."""
        out: dict[str, OwnerRecord] = {}
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return out
        for name in names:
            if not is_resource_name(name) or (prefixes and not name.startswith(prefixes)):
                continue
            try:
                rec = self.read(name)
            except (OwnershipError, OSError):
                continue
            if rec is not None and rec.instance == self.instance:
                out[name] = rec
        return out

    def _write(self, name: str, record: OwnerRecord, *, replace: bool) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(record.to_json())
        try:
            if replace:
                os.replace(tmp, self.path(name))
                return
            try:
                os.link(tmp, self.path(name))  # atomic create-if-absent
            except OSError as e:
                if e.errno != errno.EEXIST:
                    raise
                self.claim(name, record)  # raced with another writer: re-check
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
