"""The pool grows ahead of a booking's start by the lead time (the measured build time plus
the operator's margin), not earlier; and says so in the host's events."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from tests.baremetal.conftest import enroll_pool, phases
from tests.crash.test_crash_safety import Instance
from tests.ironic_fixtures import IronicEnv


def _at(minutes: int) -> str:
    return (datetime.now(UTC) + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:00Z")


def _book(inst: Instance, name: str, start: str) -> None:
    body = {
        "name": name,
        "start": start,
        "duration": "1h",
        "reservations": [{"kind": "flavor", "flavor": "m1.xlarge", "count": 4}],
    }
    r = inst.call("POST", "/leases", body)
    assert r.status_code == 201, r.text


def test_a_host_is_converted_within_the_lead_time_of_a_booking_not_before(
    ironic_env: IronicEnv, pool_instance: Callable[..., Instance]
) -> None:
    enroll_pool(ironic_env, 2)
    # Nothing measured yet: a 30 s build is assumed, plus a 150 s margin: 3 minutes.
    inst = pool_instance(ECLIPTIC_POOL_LEAD_MARGIN_SECONDS="150")
    _book(inst, "later", _at(30))
    time.sleep(3)  # the policy looks every 2 s
    assert set(phases(inst).values()) == {"BAREMETAL"}, "30 minutes ahead is beyond the lead"
    _book(inst, "soon", _at(2))
    inst.wait_for(lambda: "HYPERVISOR" in phases(inst).values(), "a hypervisor", 30)
    host = next(n for n, p in phases(inst).items() if p == "HYPERVISOR")
    said = [e["reason"] for e in inst.call("GET", f"/hosts/{host}/events").json()["items"]]
    assert any("lease 'soon' has VM slots on it at" in r for r in said), said
    assert not any("'later'" in r for r in said), said
