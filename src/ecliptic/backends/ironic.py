"""Bare metal through a standalone Ironic: node snapshots, deploy, undeploy and recovery.

Everything goes through openstacksdk's bare-metal proxy (and keystoneauth, its
transport). Every mutating call is idempotent and keyed by the instance uuid Ecliptic
gives it (a server's id): calling it again, or after a crash half-way through, converges
and never deploys a node that carries another instance. Nothing here waits for Ironic:
callers poll ``node()`` (a GET costs about 20 ms) and call again. Neither openstacksdk nor
keystoneauth retries a 409 (NodeLocked) or a 503: Ecliptic's work queue does, with its
own backoff, so a locked node is reported at once as ``NodeLocked``.
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import openstack
import openstack.exceptions as sdk_exc
from keystoneauth1 import exceptions as ksa_exc

from ecliptic.backends.base import (
    BackendError,
    GpuRecord,
    HostRecord,
    NicRecord,
    NotFoundInBackend,
)

# Provision states (ironic/common/states.py).
AVAILABLE = "available"
ACTIVE = "active"
DEPLOYING = "deploying"
DEPLOYWAIT = "wait call-back"
DEPLOYHOLD = "deploy hold"
DEPLOYFAIL = "deploy failed"
DELETING = "deleting"
CLEANING = "cleaning"
CLEANWAIT = "clean wait"
CLEANFAIL = "clean failed"
MANAGEABLE = "manageable"
ENROLL = "enroll"
ERROR = "error"

FAILED_STATES = frozenset(
    {
        DEPLOYFAIL,
        CLEANFAIL,
        ERROR,
        "inspect failed",
        "rescue failed",
        "unrescue failed",
        "adopt failed",
        "service failed",
    }
)
"""States a node stays in after an operation failed, until someone acts."""
TRANSIENT_STATES = frozenset(
    {
        DEPLOYING,
        DEPLOYWAIT,
        DELETING,
        CLEANING,
        CLEANWAIT,
        "verifying",
        "inspecting",
        "inspect wait",
        "adopting",
        "rescuing",
        "rescue wait",
        "unrescuing",
        "servicing",
        "service wait",
        "rebuild",
    }
)
"""States Ironic moves a node out of by itself."""
UP_STATES = frozenset(
    {AVAILABLE, ACTIVE, DEPLOYING, DEPLOYWAIT, DEPLOYHOLD, DELETING, CLEANING, CLEANWAIT}
    | {"clean hold", "rescue", "rescuing", "rescue wait", "unrescuing", "rebuild"}
    | {"servicing", "service wait", "service hold"}
)
"""States of a node that serves, or is on its way to serve, instances."""
DEPLOYED_STATES = frozenset({DEPLOYING, DEPLOYWAIT, DEPLOYHOLD, ACTIVE})
"""States where a node carrying an instance needs no deploy call for it."""
UNDEPLOYABLE_STATES = frozenset({ACTIVE, DEPLOYFAIL, ERROR, DEPLOYWAIT, DEPLOYHOLD})
"""States from which Ironic tears an instance down on ``deleted``."""

RECOVERY = {
    DEPLOYFAIL: "deleted",
    ERROR: "deleted",
    CLEANFAIL: "manage",
    "inspect failed": "manage",
    "adopt failed": "manage",
    "rescue failed": "deleted",
    "unrescue failed": "deleted",
    "service failed": "abort",
    ENROLL: "manage",
    MANAGEABLE: "provide",
}
"""Ironic's own guidance (doc/source/user/states.rst): the verb that moves a node from a
failed or unprovided state one step nearer ``available``."""

HOST_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{0,62}$")
NIC_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,14}$")
PROPERTY_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
GPU_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}$")
MIG_PROFILE = re.compile(r"^[1-9][0-9]?g\.[1-9][0-9]{0,3}gb$")
MAX_PROPERTY_VALUE = 256
GPU_KEYS = frozenset({"gpu_model", "gpu_count", "gpu_memory_gb", "mig_profiles"})
OWN_KEYS = frozenset({"resource_class", "cpu_arch", "ironic_node"})
"""Properties a node's own fields give: a capability of that name (or ``trait.*``) would
pass for them (a node without a resource class claiming the pool's), so it is dropped."""
BOUNDS = {
    "cpus": (1, 4096),
    "memory_mb": (1, 64 * 1024 * 1024),
    "local_gb": (0, 10_000_000),
    "gpu_count": (1, 64),
    "gpu_memory_gb": (0, 4096),
    "speed_gbps": (0, 3200),
    "sriov_vfs": (0, 1024),
}
"""What a node may say of itself: the inventory file's bounds (``backends/local/inventory``).
Out of them a node is no host (one huge ``gpu_count`` would stall the scheduler, a huge
``cpus`` would not fit the database and fail every sync)."""
MAX_PROPERTIES = 128
MAX_NICS = 32
MAX_MIG_PROFILES = 16
IMAGE_SCHEME = "ecliptic-image://"

PropertyValue = str | int | float | bool


class IronicError(BackendError):
    """Ironic refused or failed an action; the message says what Ironic said."""

    code = "ironic_error"


class NodeLocked(IronicError):
    """Ironic's conductor holds the node's lock (409 NodeLocked): try again shortly."""

    code = "ironic_node_locked"

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class NodeBusy(IronicError):
    """The node is in a transition (cleaning, deploying...) the action must wait for."""

    code = "ironic_node_busy"

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class InvalidState(IronicError):
    """The node is in a state the action cannot start from (Ironic's 400 InvalidState)."""

    code = "ironic_invalid_state"

    def __init__(self, message: str, *, retryable: bool = False) -> None:
        super().__init__(message, retryable=retryable)


class NodeInUse(IronicError):
    """The node carries another instance: deploying would take it from its owner."""

    code = "ironic_node_in_use"

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class NodeInMaintenance(IronicError):
    """An operator put the node in maintenance; Ironic refuses to provision it."""

    code = "ironic_maintenance"


@dataclass(frozen=True)
class PortInfo:
    """One Ironic port (a physical NIC) of a node."""

    uuid: str
    """Ironic's port uuid."""
    address: str
    """MAC address."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form data the operator stored (``name``, ``speed_gbps``, ``sriov_vfs``)."""


@dataclass(frozen=True)
class IronicNode:
    """A snapshot of one Ironic node."""

    uuid: str
    """Ironic's node uuid."""
    name: str | None
    """Operator-given name, if any."""
    provision_state: str
    """Where it is in Ironic's provisioning state machine (``available``, ``active``...)."""
    target_provision_state: str | None
    """Where the current transition is heading (None when stable; kept after a failure)."""
    power_state: str | None
    """``power on``/``power off``; None until Ironic first reads it."""
    maintenance: bool
    """True when an operator (or Ironic) set maintenance."""
    maintenance_reason: str
    """Why, as given; empty when not in maintenance or no reason."""
    instance_uuid: str | None
    """The instance deployed or being deployed on it, as Ironic stores it."""
    last_error: str
    """Ironic's last error for this node; empty when none."""
    reservation: str | None
    """The conductor holding the node's lock, while an action runs."""
    resource_class: str | None
    """Resource class (``baremetal``, ``gpu``...)."""
    properties: dict[str, Any] = field(default_factory=dict)
    """Hardware properties: ``cpus``, ``memory_mb``, ``local_gb``, ``capabilities``..."""
    traits: tuple[str, ...] = ()
    """Traits (``CUSTOM_GPU_H100``)."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Free-form operator data."""
    ports: tuple[PortInfo, ...] = ()
    """Its ports, by MAC address."""

    @property
    def busy(self) -> bool:
        """True while a transition is in flight or a conductor holds the node's lock."""
        return self.reservation is not None or self.provision_state in TRANSIENT_STATES

    @property
    def failed(self) -> bool:
        """True when an operation failed and the node waits for someone to act."""
        return self.provision_state in FAILED_STATES

    def carries(self, instance_uuid: str) -> bool:
        """True when the node carries this instance (uuids compared normalised)."""
        return self.instance_uuid is not None and same_instance(self.instance_uuid, instance_uuid)


def normalise_instance(value: str) -> str:
    """An instance uuid as 32 lower-case hex digits (Ironic stores what it is given: with
    or without dashes, any case); a value that is no uuid is only lower-cased."""
    try:
        return uuid.UUID(value).hex
    except ValueError:
        return value.strip().lower()


def same_instance(a: str, b: str) -> bool:
    """True when two instance uuids name the same instance."""
    return normalise_instance(a) == normalise_instance(b)


def image_source(image: str) -> str:
    """Where Ironic's ``instance_info.image_source`` points for Ecliptic image ``image``
    (a URL is kept as given)."""
    return image if "://" in image else IMAGE_SCHEME + image


def config_drive(
    instance_uuid: str,
    hostname: str,
    ssh_keys: Sequence[str],
    user_data: str | None,
    meta: Mapping[str, str],
) -> dict[str, Any]:
    """The config drive Ironic builds for a deploy (OpenStack metadata format)."""
    drive: dict[str, Any] = {
        "meta_data": {
            "uuid": instance_uuid,
            "hostname": hostname,
            "name": hostname,
            "public_keys": {f"key{i}": key for i, key in enumerate(ssh_keys)},
            "meta": dict(meta),
        }
    }
    if user_data is not None:
        drive["user_data"] = user_data
    return drive


class Ironic:
    """Ecliptic's client of one Ironic endpoint."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        auth: dict[str, Any] = {"auth_type": "none"}
        if username is not None:
            auth = {
                "auth_type": "http_basic",
                "username": username,
                "password": password or "",
                "endpoint": self.url,
            }
        # No clouds.yaml or OS_* variables: this endpoint and nothing else. Status code
        # retries off (the sdk's default is 5 for bare metal, backing off 0.5..8 s).
        self._conn = openstack.connect(
            load_yaml_config=False,
            load_envvars=False,
            baremetal_endpoint_override=self.url,
            baremetal_status_code_retries=0,
            api_timeout=timeout,
            **auth,
        )

    @property
    def _bm(self) -> Any:
        """The bare-metal proxy (made on first use: it asks Ironic for its API versions,
        so only call it inside ``_calling``)."""
        return self._conn.baremetal

    def close(self) -> None:
        """Release the HTTP connections."""
        self._conn.close()

    def nodes(self) -> list[IronicNode]:
        """Every node with its ports (one listing of nodes, one of ports)."""
        with self._calling("list nodes"):
            raw = list(self._bm.nodes(details=True))
        with self._calling("list ports"):
            ports = list(self._bm.ports(details=True))
        by_node: dict[str, list[PortInfo]] = {}
        for p in ports:
            by_node.setdefault(p.node_id, []).append(_port(p))
        return [_node(n, by_node.get(n.id, [])) for n in raw]

    def node(self, node_uuid: str) -> IronicNode | None:
        """One node with its ports, or None when Ironic has no such node."""
        try:
            with self._calling("get", node_uuid):
                raw = self._bm.get_node(node_uuid)
                ports = list(self._bm.ports(details=True, node_id=raw.id))
        except NotFoundInBackend:
            return None
        return _node(raw, [_port(p) for p in ports])

    def _require(self, node_uuid: str) -> IronicNode:
        n = self.node(node_uuid)
        if n is None:
            raise NotFoundInBackend(f"Ironic has no node {node_uuid}")
        return n

    def deploy(
        self,
        node_uuid: str,
        instance_uuid: str,
        *,
        image: str,
        hostname: str,
        ssh_keys: Sequence[str] = (),
        user_data: str | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> None:
        """Start deploying ``instance_uuid`` on the node; nothing if it is already deploying
        or deployed there. Poll ``node()`` until ``active``."""
        n = self._require(node_uuid)
        if n.instance_uuid is not None and not n.carries(instance_uuid):
            raise NodeInUse(
                f"Ironic node {_label(n)} carries instance {n.instance_uuid}, "
                f"not {instance_uuid}: refusing to deploy over it"
            )
        if n.carries(instance_uuid) and n.provision_state in DEPLOYED_STATES:
            return
        if n.maintenance:
            raise NodeInMaintenance(
                f"Ironic node {_label(n)} is in maintenance"
                + (f" ({n.maintenance_reason})" if n.maintenance_reason else "")
                + ": an operator must unset it (baremetal node maintenance unset) "
                "before it can be deployed",
                retryable=False,
            )
        if n.provision_state in TRANSIENT_STATES:
            raise NodeBusy(
                f"Ironic node {_label(n)} is {n.provision_state}: deploy once it is available"
            )
        if n.provision_state != AVAILABLE:
            detail = f": {n.last_error}" if n.failed and n.last_error else ""
            raise InvalidState(
                f"Ironic node {_label(n)} is {n.provision_state}{detail}, "
                "not available: it cannot be deployed"
            )
        info = {
            "image_source": image_source(image),
            # Ironic otherwise probes the image source to tell whole-disk from partition
            # images, and refuses a scheme it cannot download.
            "image_type": "whole-disk",
            "display_name": hostname,
        }
        local_gb = _int(n.properties.get("local_gb"))
        if local_gb:
            info["root_gb"] = str(local_gb)
        with self._calling("set the instance of", node_uuid):
            if n.carries(instance_uuid):
                self._bm.update_node(node_uuid, instance_info=info)
            else:  # Ironic answers 409 if another instance got there first
                self._bm.update_node(node_uuid, instance_id=instance_uuid, instance_info=info)
        drive = config_drive(instance_uuid, hostname, ssh_keys, user_data, meta or {})
        with self._calling("deploy", node_uuid):
            self._bm.set_node_provision_state(node_uuid, "active", config_drive=drive)

    def undeploy(self, node_uuid: str, instance_uuid: str) -> None:
        """Start tearing ``instance_uuid`` down (Ironic cleans the node, then it is
        available); nothing if it is gone, going, or the node carries another instance."""
        n = self.node(node_uuid)
        if n is None or not n.carries(instance_uuid):
            return
        if n.provision_state in (DELETING, CLEANING, CLEANWAIT):
            return
        if n.provision_state == AVAILABLE:  # never deployed, or Ironic kept the instance
            self.release(node_uuid, instance_uuid)
            return
        if n.provision_state not in UNDEPLOYABLE_STATES:
            raise NodeBusy(
                f"Ironic node {_label(n)} is {n.provision_state}: undeploy once it settles"
            )
        if n.maintenance:
            raise NodeInMaintenance(
                f"Ironic node {_label(n)} is in maintenance"
                + (f" ({n.maintenance_reason})" if n.maintenance_reason else "")
                + f": instance {instance_uuid} is torn down once an operator unsets it",
                retryable=True,
            )
        with self._calling("undeploy", node_uuid):
            self._bm.set_node_provision_state(node_uuid, "deleted")

    def release(self, node_uuid: str, instance_uuid: str) -> None:
        """Clear ``instance_uuid`` (and the instance's data) from an available node, if
        Ironic did not; nothing if the node carries no such instance."""
        n = self.node(node_uuid)
        if n is None or not n.carries(instance_uuid):
            return
        if n.provision_state != AVAILABLE or n.busy:
            raise NodeBusy(
                f"Ironic node {_label(n)} is {n.provision_state}: "
                f"instance {instance_uuid} is released once it is undeployed and available"
            )
        with self._calling("release", node_uuid):
            self._bm.update_node(node_uuid, instance_id=None, instance_info={})

    def recover(self, node_uuid: str) -> str | None:
        """Move a failed or unprovided node one step nearer ``available`` (``deploy
        failed``: tear down and clean; ``clean failed``: manage, then provide...).
        Returns the verb sent; None when there is nothing to do, the node must settle
        first, or it is in maintenance (lifting that is an operator's call)."""
        n = self._require(node_uuid)
        if n.busy or n.maintenance:
            return None
        verb = RECOVERY.get(n.provision_state)
        if verb is None:
            return None
        with self._calling(verb, node_uuid):
            self._bm.set_node_provision_state(node_uuid, verb)
        if verb == "manage":  # a failed node is manageable at once: provide it now
            after = self.node(node_uuid)
            if after is not None and after.provision_state == MANAGEABLE and not after.busy:
                with self._calling("provide", node_uuid):
                    self._bm.set_node_provision_state(node_uuid, "provide")
                return "provide"
        return verb

    @contextmanager
    def _calling(self, action: str, node_uuid: str | None = None) -> Iterator[None]:
        """Turn openstacksdk's and keystoneauth's errors into ours, saying what Ironic said."""
        what = f"Ironic: {action}" + (f" node {node_uuid}" if node_uuid else "")
        try:
            yield
        except sdk_exc.NotFoundException as e:
            raise NotFoundInBackend(f"{what}: {_said(e)}") from e
        except sdk_exc.ConflictException as e:
            said = _said(e)
            if "locked" in said.lower():
                raise NodeLocked(f"{what}: {said}") from e
            raise IronicError(f"{what}: {said}", retryable=False) from e
        except sdk_exc.BadRequestException as e:
            raise InvalidState(f"{what}: {_said(e)}") from e
        except sdk_exc.HttpException as e:
            status = e.status_code or 0
            retryable = status >= 500 or status in (408, 429)
            raise IronicError(f"{what}: HTTP {status}: {_said(e)}", retryable=retryable) from e
        except sdk_exc.SDKException as e:
            raise IronicError(f"{what}: {e}") from e
        except ksa_exc.ClientException as e:
            raise IronicError(f"{what}: Ironic at {self.url} unreachable: {e}") from e


def _said(e: sdk_exc.HttpException) -> str:
    return str(e.details or e.message or e)


def _label(n: IronicNode) -> str:
    return f"{n.name} ({n.uuid})" if n.name else n.uuid


def _port(p: Any) -> PortInfo:
    return PortInfo(uuid=p.id, address=p.address, extra=dict(p.extra or {}))


def _node(n: Any, ports: list[PortInfo]) -> IronicNode:
    return IronicNode(
        uuid=n.id,
        name=n.name,
        provision_state=n.provision_state or ENROLL,
        target_provision_state=n.target_provision_state,
        power_state=n.power_state,
        maintenance=bool(n.is_maintenance),
        maintenance_reason=n.maintenance_reason or "",
        instance_uuid=n.instance_id,
        last_error=n.last_error or "",
        reservation=n.reservation,
        resource_class=n.resource_class,
        properties=dict(n.properties or {}),
        traits=tuple(n.traits or ()),
        extra=dict(n.extra or {}),
        ports=tuple(sorted(ports, key=lambda p: p.address)),
    )


def host_state(node: IronicNode) -> tuple[str, str]:
    """Whether the node can host servers: ``("up"|"maintenance"|"down", reason)``.

    A failed node that still carries an instance is ``up``: the host is that instance's,
    and the server's own status tells the failure.
    """
    if node.maintenance:
        reason = f": {node.maintenance_reason}" if node.maintenance_reason else ""
        return "maintenance", f"Ironic: in maintenance{reason}"
    state = node.provision_state
    if state in UP_STATES:
        return "up", ""
    if state in FAILED_STATES:
        if node.instance_uuid is not None:
            return "up", ""
        return "down", f"Ironic: {state}: {node.last_error or 'no error recorded'}"
    return "down", f"Ironic: node is {state}, not provided (baremetal node provide)"


def node_to_host(node: IronicNode) -> HostRecord | None:
    """The node as an inventory host; None when it is unfit to be one (``unfit`` says why)."""
    return node_record(node)[0]


def unfit(node: IronicNode) -> str:
    """Why the node cannot be a host (no CPUs or memory, a value out of the inventory
    file's bounds...); empty when it can."""
    return node_record(node)[1]


def node_record(node: IronicNode) -> tuple[HostRecord | None, str]:
    """The node as a host, or None and why it cannot be one."""
    p = node.properties
    for key in ("cpus", "memory_mb"):
        if _int(p.get(key)) is None:
            return None, f"lacks {key} (a whole number in its properties)"
    problems = [_out_of_bounds(k, k, _int(p.get(k))) for k in ("cpus", "memory_mb", "local_gb")]
    caps = capabilities(p.get("capabilities"))
    if caps.get("gpu_model", "").strip():
        model = caps["gpu_model"].strip()
        if not GPU_MODEL.match(model):
            problems.append(f"capability gpu_model {model[:64]!r} is not a GPU model name")
        for key in ("gpu_count", "gpu_memory_gb"):
            problems.append(_out_of_bounds(f"capability {key}", key, _int(caps.get(key))))
        profiles = [x.strip() for x in caps.get("mig_profiles", "").split("|") if x.strip()]
        bad = [x for x in profiles if not MIG_PROFILE.match(x)]
        if bad:
            problems.append(f"mig_profiles {bad[0][:32]!r} is not of the form Ng.Mgb")
        if len(profiles) > MAX_MIG_PROFILES:
            problems.append(f"more than {MAX_MIG_PROFILES} mig_profiles")
    if len(node.ports) > MAX_NICS:
        problems.append(f"{len(node.ports)} ports (at most {MAX_NICS})")
    for port in node.ports:
        for key in ("speed_gbps", "sriov_vfs"):
            label = f"port {port.address} {key}"
            problems.append(_out_of_bounds(label, key, _int(port.extra.get(key))))
    problem = "; ".join(x for x in problems if x)
    if problem:
        return None, problem
    record = _record(node, caps)
    if len(record.properties) > MAX_PROPERTIES:
        return None, (
            f"{len(record.properties)} properties from its capabilities and traits "
            f"(at most {MAX_PROPERTIES})"
        )
    return record, ""


def _out_of_bounds(label: str, key: str, value: int | None) -> str:
    if value is None:
        return ""
    low, high = BOUNDS[key]
    return "" if low <= value <= high else f"{label} {value} is out of range ({low} to {high})"


def _record(node: IronicNode, caps: Mapping[str, str]) -> HostRecord:
    props: dict[str, PropertyValue] = {}
    for key, value in caps.items():
        if key in GPU_KEYS or key == "rdma":
            continue
        _put(props, key, _typed(value), own=False)
    if isinstance(node.properties.get("cpu_arch"), str):
        _put(props, "cpu_arch", node.properties["cpu_arch"])
    if node.resource_class:
        _put(props, "resource_class", node.resource_class)
    props["ironic_node"] = node.uuid
    for trait in node.traits:
        _put(props, f"trait.{trait.lower()}", True)
    return HostRecord(
        name=node.name if node.name and HOST_NAME.match(node.name) else f"node-{node.uuid[:8]}",
        vcpus=_int(node.properties.get("cpus")) or 0,
        memory_mb=_int(node.properties.get("memory_mb")) or 0,
        disk_gb=max(_int(node.properties.get("local_gb")) or 0, 0),
        gpus=_gpus(caps),
        nics=_nics(node.ports, rdma=_typed(caps.get("rdma", "")) is True),
        properties=tuple(sorted(props.items())),
    )


def capabilities(raw: object) -> dict[str, str]:
    """Ironic's ``capabilities`` property (``"k:v,k:v"`` or a dict) as a dict of strings."""
    if isinstance(raw, Mapping):
        return {str(k).strip(): str(v).strip() for k, v in raw.items()}
    if not isinstance(raw, str):
        return {}
    out = {}
    for item in raw.split(","):
        key, sep, value = item.partition(":")
        if sep and key.strip():
            out[key.strip()] = value.strip()
    return out


def _gpus(caps: Mapping[str, str]) -> tuple[GpuRecord, ...]:
    model = caps.get("gpu_model", "").strip()
    if not model:
        return ()
    count = _int(caps.get("gpu_count")) or 1
    profiles = tuple(p.strip() for p in caps.get("mig_profiles", "").split("|") if p.strip())
    return (
        GpuRecord(
            model=model,
            count=max(count, 1),
            memory_gb=max(_int(caps.get("gpu_memory_gb")) or 0, 0),
            mig_profiles=profiles,
        ),
    )


def _nics(ports: Sequence[PortInfo], *, rdma: bool) -> tuple[NicRecord, ...]:
    nics = []
    taken: set[str] = set()
    for i, p in enumerate(ports):
        name = str(p.extra.get("name", ""))
        if not NIC_NAME.match(name) or name in taken:
            name = f"nic{i}"
        taken.add(name)
        nics.append(
            NicRecord(
                name=name,
                speed_gbps=max(_int(p.extra.get("speed_gbps")) or 0, 0),
                rdma=rdma,
                sriov_vfs=max(_int(p.extra.get("sriov_vfs")) or 0, 0),
            )
        )
    return tuple(nics)


def _put(props: dict[str, PropertyValue], key: str, value: object, *, own: bool = True) -> None:
    """Store a property under a valid key (lower-cased, other characters as ``_``); drop
    it when no valid key or value can be made of it, or when it is not the node's ``own``
    field but would pass for one (``OWN_KEYS``, ``trait.*``)."""
    key = re.sub(r"[^a-z0-9_.-]", "_", key.strip().lower())
    if not own and (key in OWN_KEYS or key.startswith("trait.")):
        return
    if not PROPERTY_KEY.match(key) or isinstance(value, dict | list | tuple) or value is None:
        return
    if isinstance(value, str) and len(value) > MAX_PROPERTY_VALUE:
        return
    if isinstance(value, str | int | float | bool):
        props[key] = value


def _typed(value: str) -> PropertyValue:
    """A capability's value as bool, int or float when it reads as one."""
    low = value.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    try:
        return int(low)
    except ValueError:
        pass
    try:
        number = float(low)
    except ValueError:
        return value
    return number if math.isfinite(number) else value


def _int(value: object) -> int | None:
    """An int from Ironic's properties, which may hold ints or their strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None
