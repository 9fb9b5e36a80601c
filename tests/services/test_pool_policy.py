"""The pool's policy (``services.pool.plan``): pure decisions from bookings, idle time,
holds and spares; and its invariants under any pool (hypothesis)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ecliptic.services.pool import Decision, PoolHostView, PoolPolicy, plan

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
POLICY = PoolPolicy(pool="x", spare=0, idle=timedelta(minutes=10))


def host(name: str, phase: str = "BAREMETAL", **kw: object) -> PoolHostView:
    values: dict[str, object] = {
        "name": name,
        "phase": phase,
        "hold": "",
        "up": True,
        "servers": 0,
        "idle_since": None,
        "vm_need": "",
        "bm_need": "",
    }
    values.update(kw)
    return PoolHostView(**values)  # type: ignore[arg-type]


def test_vm_work_booked_on_a_bare_metal_host_makes_it_a_hypervisor() -> None:
    got = plan([host("a", vm_need="lease 'x' has VM slots on it now"), host("b")], NOW, POLICY)
    assert got == [Decision("a", "hypervisor", "lease 'x' has VM slots on it now")]


def test_a_hypervisor_booked_whole_is_handed_back() -> None:
    got = plan([host("a", "HYPERVISOR", bm_need="lease 'bm' books it whole now")], NOW, POLICY)
    assert got == [Decision("a", "baremetal", "lease 'bm' books it whole now")]


def test_an_idle_hypervisor_goes_back_only_after_the_idle_time() -> None:
    young = host("a", "HYPERVISOR", idle_since=NOW - timedelta(minutes=9))
    old = host("b", "HYPERVISOR", idle_since=NOW - timedelta(minutes=11))
    got = plan([young, old], NOW, POLICY)
    assert [(d.host, d.to) for d in got] == [("b", "baremetal")]
    assert "idle since 11:49:00 UTC (over 10 min)" in got[0].reason


def test_spares_are_kept_and_made() -> None:
    spare2 = PoolPolicy(pool="x", spare=2, idle=timedelta(0))
    idle = [host(n, "HYPERVISOR", idle_since=NOW - timedelta(hours=1)) for n in "abc"]
    got = plan(idle, NOW, spare2)
    assert [(d.host, d.to) for d in got] == [("a", "baremetal")]  # oldest idle first
    got = plan([host("a"), host("b"), host("c", bm_need="x")], NOW, spare2)
    assert [(d.host, d.to) for d in got] == [("a", "hypervisor"), ("b", "hypervisor")]
    assert "keep 2 spare" in got[0].reason


def test_a_busy_or_held_or_down_host_is_left_alone() -> None:
    got = plan(
        [
            host("a", "HYPERVISOR", servers=3, vm_need="3 VM server(s) on it"),
            host("b", "HYPERVISOR", hold="hypervisor", idle_since=NOW - timedelta(days=1)),
            host("c", "HYPERVISOR", hold="drained", idle_since=NOW - timedelta(days=1)),
            host("d", up=False, vm_need="lease"),
            host("e", "TO_HYPERVISOR", vm_need="lease"),
        ],
        NOW,
        POLICY,
    )
    assert got == []


def test_bookings_come_before_a_bare_metal_hold() -> None:
    got = plan([host("a", hold="baremetal", vm_need="lease 'x' …")], NOW, POLICY)
    assert got[0].to == "hypervisor" and "bookings come first" in got[0].reason


PHASES = ["BAREMETAL", "TO_HYPERVISOR", "HYPERVISOR", "DRAINING", "TO_BAREMETAL", "ERROR"]
views = st.builds(
    lambda i, phase, hold, up, servers, idle, vm, bm: host(
        f"h{i}",
        phase,
        hold=hold,
        up=up,
        servers=servers,
        idle_since=None if idle is None else NOW - timedelta(minutes=idle),
        vm_need="vm" if vm or (servers and not bm) else "",
        bm_need="bm" if bm else "",
    ),
    st.integers(0, 10_000),
    st.sampled_from(PHASES),
    st.sampled_from(["", "hypervisor", "baremetal", "drained"]),
    st.booleans(),
    st.integers(0, 3),
    st.none() | st.integers(0, 60),
    st.booleans(),
    st.booleans(),
)


@given(st.lists(views, max_size=12, unique_by=lambda v: v.name), st.integers(0, 3))
def test_no_decision_ever_breaks_a_booking_or_touches_a_busy_host(
    pool: list[PoolHostView], spare: int
) -> None:
    by_name = {h.name: h for h in pool}
    got = plan(pool, NOW, PoolPolicy(pool="x", spare=spare, idle=timedelta(minutes=10)))
    assert len({d.host for d in got}) == len(got), "one decision per host"
    for d in got:
        h = by_name[d.host]
        assert h.up
        if d.to == "hypervisor":
            assert h.phase == "BAREMETAL" and not h.bm_need
            assert h.vm_need or not h.servers
        else:
            assert h.phase == "HYPERVISOR" and not h.vm_need
            assert h.bm_need or not h.servers


def test_a_hold_bookings_overrode_comes_back_once_they_are_gone() -> None:
    got = plan(
        [
            host("a", "HYPERVISOR", hold="baremetal"),
            host("b", hold="hypervisor"),
            host("c", "HYPERVISOR", hold="baremetal", vm_need="lease 'x' has VM slots on it now"),
            host("d", hold="hypervisor", bm_need="lease 'y' books it whole now"),
        ],
        NOW,
        POLICY,
    )
    assert [(d.host, d.to) for d in got] == [("a", "baremetal"), ("b", "hypervisor")]
    assert "the operator's bare-metal hold" in got[0].reason
