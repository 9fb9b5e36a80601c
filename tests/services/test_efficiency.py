"""Reserved against used host-hours: the arithmetic of the operator's efficiency page."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from ecliptic.services.efficiency import Held, Lived, efficiency

T0 = datetime(2027, 1, 1, tzinfo=UTC)


def at(hours: float) -> datetime:
    return T0 + timedelta(hours=hours)


def test_a_lease_half_used_on_one_host_and_idle_on_another() -> None:
    held = [Held("physics", "L1", "h1", at(0), at(10)), Held("physics", "L1", "h2", at(0), at(10))]
    lived = [Lived("L1", "h1", at(2), at(7))]
    [e] = efficiency(held, lived, at(0), at(24))
    assert (e.tenancy, e.reserved_hours, e.used_hours, e.leases) == ("physics", 20, 5, 1)
    assert e.share == 0.25


def test_the_window_the_lease_and_overlapping_servers_clip_the_hours() -> None:
    held = [
        Held("physics", "L1", "h1", at(-5), at(5)),
        # A second reservation of the same lease on the same host counts once.
        Held("physics", "L1", "h1", at(-5), at(5)),
        Held("chemistry", "L2", "h2", at(1), at(3)),
        Held("biology", "L3", "h3", at(30), at(40)),  # outside the window
    ]
    lived = [
        Lived("L1", "h1", at(-3), at(2)),  # before the window: only [0, 2) counts
        Lived("L1", "h1", at(1), None),  # still running: to the lease's end, 5
        Lived("L1", "h2", at(0), at(5)),  # another host than the lease holds: ignored
        Lived("L2", "h2", at(0), at(9)),  # longer than its lease: clipped to [1, 3)
        Lived("L9", "h1", at(0), at(9)),  # no lease of the window
    ]
    out = {e.tenancy: e for e in efficiency(held, lived, at(0), at(24))}
    assert set(out) == {"physics", "chemistry"}
    assert (out["physics"].reserved_hours, out["physics"].used_hours) == (5, 5)
    assert (out["chemistry"].reserved_hours, out["chemistry"].used_hours) == (2, 2)


def test_nothing_reserved_is_no_row() -> None:
    assert efficiency([], [Lived("L1", "h1", at(0), at(1))], at(0), at(24)) == []


span = st.tuples(st.integers(-50, 50), st.integers(0, 60))


@given(
    st.lists(st.tuples(st.sampled_from(["a", "b"]), st.integers(0, 3), st.integers(0, 2), span)),
    st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2), span, st.booleans())),
)
def test_use_never_exceeds_what_was_reserved(
    held_raw: list[tuple[str, int, int, tuple[int, int]]],
    lived_raw: list[tuple[int, int, tuple[int, int], bool]],
) -> None:
    # A lease belongs to one tenancy: the first one drawn for it.
    owner: dict[int, str] = {}
    held = []
    for t, lease, host, (s, d) in held_raw:
        tenancy = owner.setdefault(lease, t)
        held.append(Held(tenancy, f"L{lease}", f"h{host}", at(s), at(s + d)))
    lived = [
        Lived(f"L{lease}", f"h{host}", at(s), None if running else at(s + d))
        for lease, host, (s, d), running in lived_raw
    ]
    for e in efficiency(held, lived, at(0), at(24)):
        assert 0 <= e.used_hours <= e.reserved_hours + 1e-9
        assert e.reserved_hours <= 24 * 3 * 4  # 3 hosts, 4 leases, 24 hours
