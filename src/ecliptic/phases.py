"""Explicit state tables: every phase an object can be in, and every move allowed.

One table per kind. ``check_move`` is the single gate every phase change passes; the
store's ``move`` (``store/transitions.py``) calls it and records why the move happened.
"""

from __future__ import annotations

from enum import StrEnum

from ecliptic.errors import EclipticError


class IllegalTransition(EclipticError):
    """A phase change the state table does not allow: a conflict with what the object is
    doing (a 409 that names the move), never an unexplained 500."""

    code = "illegal_transition"
    status = 409
    title = "Not now"


class ServerPhase(StrEnum):
    """Life of a server."""

    PENDING = "PENDING"  # accepted, placed, waiting for a worker
    BUILDING = "BUILDING"  # a worker is creating or repairing it
    ACTIVE = "ACTIVE"  # exists and matches its spec
    ERROR = "ERROR"  # the last attempt failed for good; a repair may retry
    DELETING = "DELETING"  # deletion asked for; the row goes when the backend is clean


class NetworkPhase(StrEnum):
    """Life of a network (and of its subnets)."""

    PENDING = "PENDING"
    BUILDING = "BUILDING"
    ACTIVE = "ACTIVE"
    ERROR = "ERROR"
    DELETING = "DELETING"


class PortPhase(StrEnum):
    """Life of a port."""

    DOWN = "DOWN"  # allocated (address, MAC) but not plugged into a running server
    ACTIVE = "ACTIVE"  # plugged and configured
    ERROR = "ERROR"
    DELETING = "DELETING"


class LeasePhase(StrEnum):
    """Life of a lease."""

    PENDING = "PENDING"  # booked, not started yet
    STARTING = "STARTING"  # start is due: preemptible servers are making way
    ACTIVE = "ACTIVE"  # running; servers may be created inside it
    DEGRADED = "DEGRADED"  # running, but lost a host that could not be replaced yet
    ENDING = "ENDING"  # end is due: servers get their grace period, then go
    ENDED = "ENDED"  # over; capacity released, unused credit refunded
    ERROR = "ERROR"  # could not start (the reason says why): retry it, or end it


class PlatformPhase(StrEnum):
    """Life of a platform."""

    PENDING = "PENDING"  # accepted, waiting for a worker (or for its lease to start)
    CREATING = "CREATING"  # its network and servers are being made
    CONFIGURING = "CONFIGURING"  # its steps run, daemons and tunnels start
    READY = "READY"  # every step done, every service answers
    DEGRADED = "DEGRADED"  # built, but a service's liveness check fails or a server is down
    UPDATING = "UPDATING"  # a patch is being applied (servers added or drained and removed)
    FAILED = "FAILED"  # a step failed (its output is kept); retry resumes from it
    DELETING = "DELETING"  # its services, servers and network are going


class BenchmarkPhase(StrEnum):
    """Life of a benchmark run."""

    PENDING = "PENDING"  # accepted, waiting for its turn (one measurement at a time)
    PROVISIONING = "PROVISIONING"  # its servers (and network) are being made
    RUNNING = "RUNNING"  # the tool runs
    CLEANING = "CLEANING"  # the outcome is known; the servers it made are going
    SUCCEEDED = "SUCCEEDED"  # figures stored, nothing left behind
    FAILED = "FAILED"  # the reason says why (the raw output is kept), nothing left behind


class SetPhase(StrEnum):
    """Life of a benchmark set."""

    RUNNING = "RUNNING"  # its runs are going, one after the other
    SUCCEEDED = "SUCCEEDED"  # every run succeeded
    FAILED = "FAILED"  # every run is over and at least one failed (or it was cancelled)


class HostRolePhase(StrEnum):
    """Life of a host of the bare-metal-or-hypervisor pool."""

    BAREMETAL = "BAREMETAL"  # offered for bare-metal servers and host leases
    TO_HYPERVISOR = "TO_HYPERVISOR"  # Ironic deploys the hypervisor image on it
    HYPERVISOR = "HYPERVISOR"  # VM-kind servers are scheduled onto it
    DRAINING = "DRAINING"  # no new VMs; its servers are moved to other hypervisors
    TO_BAREMETAL = "TO_BAREMETAL"  # Ironic undeploys and cleans it
    ERROR = "ERROR"  # a conversion failed for good (the reason says why); retried on request


_H = HostRolePhase
HOST_ROLE_MOVES: dict[HostRolePhase, frozenset[HostRolePhase]] = {
    _H.BAREMETAL: frozenset({_H.TO_HYPERVISOR, _H.ERROR}),
    _H.TO_HYPERVISOR: frozenset({_H.HYPERVISOR, _H.TO_BAREMETAL, _H.ERROR}),
    _H.HYPERVISOR: frozenset({_H.DRAINING, _H.ERROR}),
    _H.DRAINING: frozenset({_H.HYPERVISOR, _H.TO_BAREMETAL, _H.ERROR}),
    _H.TO_BAREMETAL: frozenset({_H.BAREMETAL, _H.TO_HYPERVISOR, _H.ERROR}),
    _H.ERROR: frozenset(
        {_H.TO_HYPERVISOR, _H.DRAINING, _H.TO_BAREMETAL, _H.BAREMETAL, _H.HYPERVISOR}
    ),
}

SERVER_MOVES: dict[ServerPhase, frozenset[ServerPhase]] = {
    ServerPhase.PENDING: frozenset({ServerPhase.BUILDING, ServerPhase.ERROR, ServerPhase.DELETING}),
    ServerPhase.BUILDING: frozenset({ServerPhase.ACTIVE, ServerPhase.ERROR, ServerPhase.DELETING}),
    ServerPhase.ACTIVE: frozenset({ServerPhase.BUILDING, ServerPhase.ERROR, ServerPhase.DELETING}),
    ServerPhase.ERROR: frozenset({ServerPhase.BUILDING, ServerPhase.DELETING}),
    ServerPhase.DELETING: frozenset(),
}

NETWORK_MOVES: dict[NetworkPhase, frozenset[NetworkPhase]] = {
    NetworkPhase.PENDING: frozenset(
        {NetworkPhase.BUILDING, NetworkPhase.ERROR, NetworkPhase.DELETING}
    ),
    NetworkPhase.BUILDING: frozenset(
        {NetworkPhase.ACTIVE, NetworkPhase.ERROR, NetworkPhase.DELETING}
    ),
    NetworkPhase.ACTIVE: frozenset(
        {NetworkPhase.BUILDING, NetworkPhase.ERROR, NetworkPhase.DELETING}
    ),
    NetworkPhase.ERROR: frozenset({NetworkPhase.BUILDING, NetworkPhase.DELETING}),
    NetworkPhase.DELETING: frozenset(),
}

PORT_MOVES: dict[PortPhase, frozenset[PortPhase]] = {
    PortPhase.DOWN: frozenset({PortPhase.ACTIVE, PortPhase.ERROR, PortPhase.DELETING}),
    PortPhase.ACTIVE: frozenset({PortPhase.DOWN, PortPhase.ERROR, PortPhase.DELETING}),
    PortPhase.ERROR: frozenset({PortPhase.DOWN, PortPhase.ACTIVE, PortPhase.DELETING}),
    PortPhase.DELETING: frozenset(),
}

LEASE_MOVES: dict[LeasePhase, frozenset[LeasePhase]] = {
    LeasePhase.PENDING: frozenset(
        {LeasePhase.STARTING, LeasePhase.ENDING, LeasePhase.ENDED, LeasePhase.ERROR}
    ),
    LeasePhase.STARTING: frozenset(
        {LeasePhase.ACTIVE, LeasePhase.DEGRADED, LeasePhase.ENDING, LeasePhase.ERROR}
    ),
    LeasePhase.ACTIVE: frozenset({LeasePhase.DEGRADED, LeasePhase.ENDING, LeasePhase.ERROR}),
    LeasePhase.DEGRADED: frozenset({LeasePhase.ACTIVE, LeasePhase.ENDING, LeasePhase.ERROR}),
    LeasePhase.ENDING: frozenset({LeasePhase.ENDED, LeasePhase.ERROR}),
    LeasePhase.ENDED: frozenset(),
    LeasePhase.ERROR: frozenset({LeasePhase.STARTING, LeasePhase.ENDING, LeasePhase.ENDED}),
}

_P = PlatformPhase
PLATFORM_MOVES: dict[PlatformPhase, frozenset[PlatformPhase]] = {
    _P.PENDING: frozenset({_P.CREATING, _P.FAILED, _P.DELETING}),
    _P.CREATING: frozenset({_P.CONFIGURING, _P.FAILED, _P.DELETING, _P.UPDATING}),
    _P.CONFIGURING: frozenset({_P.READY, _P.DEGRADED, _P.FAILED, _P.DELETING, _P.UPDATING}),
    _P.READY: frozenset({_P.DEGRADED, _P.UPDATING, _P.CONFIGURING, _P.FAILED, _P.DELETING}),
    _P.DEGRADED: frozenset({_P.READY, _P.UPDATING, _P.CONFIGURING, _P.FAILED, _P.DELETING}),
    _P.UPDATING: frozenset({_P.CONFIGURING, _P.READY, _P.DEGRADED, _P.FAILED, _P.DELETING}),
    _P.FAILED: frozenset({_P.CREATING, _P.CONFIGURING, _P.UPDATING, _P.DELETING}),
    _P.DELETING: frozenset(),
}

_B = BenchmarkPhase
BENCHMARK_MOVES: dict[BenchmarkPhase, frozenset[BenchmarkPhase]] = {
    _B.PENDING: frozenset({_B.PROVISIONING, _B.CLEANING, _B.FAILED}),
    _B.PROVISIONING: frozenset({_B.RUNNING, _B.CLEANING}),
    _B.RUNNING: frozenset({_B.CLEANING}),
    _B.CLEANING: frozenset({_B.SUCCEEDED, _B.FAILED}),
    _B.SUCCEEDED: frozenset(),
    _B.FAILED: frozenset(),
}

TABLES: dict[str, dict[str, frozenset[str]]] = {
    "hostrole": {str(k): frozenset(map(str, v)) for k, v in HOST_ROLE_MOVES.items()},
    "benchmark": {str(k): frozenset(map(str, v)) for k, v in BENCHMARK_MOVES.items()},
    "platform": {str(k): frozenset(map(str, v)) for k, v in PLATFORM_MOVES.items()},
    "server": {str(k): frozenset(map(str, v)) for k, v in SERVER_MOVES.items()},
    "network": {str(k): frozenset(map(str, v)) for k, v in NETWORK_MOVES.items()},
    "port": {str(k): frozenset(map(str, v)) for k, v in PORT_MOVES.items()},
    "lease": {str(k): frozenset(map(str, v)) for k, v in LEASE_MOVES.items()},
}


def check_move(kind: str, current: str, target: str) -> bool:
    """Whether ``kind`` may move from ``current`` to ``target``; staying put is always allowed.

    Returns False for a no-op (same phase), True for a real move, and raises
    ``IllegalTransition`` for a move the table forbids.
    """
    if current == target:
        return False
    table = TABLES[kind]
    if target not in table.get(current, frozenset()):
        raise IllegalTransition(f"a {kind} cannot go from {current} to {target}")
    return True
