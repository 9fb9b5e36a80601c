"""The timeline and calendar indexes agree with brute force over random holdings."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from ecliptic.scheduler.occupancy import Levels
from ecliptic.scheduler.sweep import Sweep
from ecliptic.scheduler.timeline import Timeline

ZERO = (0, 0, 0)
SPAN = 40  # brute force looks at minutes 0..SPAN+10

holding = st.tuples(
    st.integers(0, SPAN),
    st.integers(1, 12),
    st.tuples(st.integers(0, 1), st.integers(0, 5), st.integers(0, 3)),
)


def usage(holdings: Sequence[tuple[int, int, tuple[int, ...]]], t: int) -> tuple[int, ...]:
    out = [0, 0, 0]
    for s, d, vec in holdings:
        if s <= t < s + d:
            for i, v in enumerate(vec):
                out[i] += v
    return tuple(out)


@settings(max_examples=80, deadline=None)
@given(st.lists(holding, max_size=12), st.data())
def test_timeline_matches_brute_force(
    holdings: list[tuple[int, int, tuple[int, int, int]]], data: st.DataObject
) -> None:
    tl = Timeline(ZERO)
    for s, d, vec in holdings:
        tl.add(s, s + d, vec)
    removed = data.draw(
        st.lists(st.integers(0, max(0, len(holdings) - 1)), unique=True, max_size=4)
    )
    removed = [i for i in removed if i < len(holdings)]
    kept = [h for i, h in enumerate(holdings) if i not in removed]
    for i in removed:
        s, d, vec = holdings[i]
        tl.add(s, s + d, vec, -1)
    built = Timeline.build(ZERO, [(s, s + d, v) for s, d, v in kept])
    assert built.pieces() == tl.pieces()  # canonical whatever the order
    for t in range(-1, SPAN + 14):
        assert tl.at(t) == usage(kept, t)
    a = data.draw(st.integers(0, SPAN))
    b = a + data.draw(st.integers(1, 15))
    brute = tuple(max(usage(kept, t)[i] for t in range(a, b)) for i in range(3))
    assert tl.peak(a, b) == brute
    occupied = any(usage(kept, t)[0] > 0 for t in range(a, b))
    assert tl.is_free(a, b) is (not occupied)
    duration = data.draw(st.integers(1, 10))
    starts = {s for lo, hi in tl.free_starts(0, SPAN, duration) for s in range(lo, hi)}
    assert starts == {
        s for s in range(0, SPAN + 1) if all(usage(kept, t)[0] == 0 for t in range(s, s + duration))
    }
    for lo, hi, peak in tl.window_peaks(0, SPAN, duration):
        for s in range(lo, hi):
            assert peak == tuple(
                max(usage(kept, t)[i] for t in range(s, s + duration)) for i in range(3)
            )


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 600), st.integers(-3, 5)), max_size=15),
    st.integers(1, 200),
    st.integers(0, 500),
)
def test_levels_match_brute_force(
    adds: list[tuple[int, int, int]], bucket: int, first: int
) -> None:
    lv = Levels()
    deltas: dict[int, int] = {}
    for s, d, v in adds:
        lv.add(s, s + d, v)
        deltas[s] = deltas.get(s, 0) + v
        deltas[s + d] = deltas.get(s + d, 0) - v

    def level(t: int) -> int:
        return sum(v for s, d, v in adds if s <= t < s + d)

    built = Levels.build(list(deltas.items()))
    assert built.canonical() == lv.canonical()
    for t in range(0, 2700, 37):
        assert lv.level_at(t) == level(t) == built.level_at(t)
    edges = list(range(first, first + 10 * bucket, bucket))
    end = first + 10 * bucket
    expect = [max(0, max(level(t) for t in range(a, min(a + bucket, end)))) for a in edges]
    assert lv.peaks(edges, end) == expect == built.peaks(edges, end)
    # Undo everything: the index is empty again.
    for s, d, v in adds:
        lv.add(s, s + d, -v)
    assert lv.canonical() == []


def test_levels_jump_over_long_quiet_stretches() -> None:
    lv = Levels()
    lv.add(10, 10**9, 3)  # "until the year 9999"
    lv.add(500_000, 500_030, 2)
    edges = list(range(0, 1_000_000, 100_000))
    assert lv.peaks(edges, 1_000_000) == [3, 3, 3, 3, 3, 5, 3, 3, 3, 3]


def test_sweep_finds_the_first_start_with_enough() -> None:
    a = iter([(0, 5, 1), (10, 20, 1)])
    b = iter([(3, 12, 1)])
    c = iter([(11, 30, 2)])
    sw = Sweep([a, b, c], 3)
    assert sw.next_ok(0, 100) == 11
    assert sw.next_ok(12, 100) == 12
    assert sw.next_ok(20, 100) is None
