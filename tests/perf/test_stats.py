"""Repetitions summed up as spreads, and two summaries compared against their spread."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ecliptic.perf.kinds.base import Result
from ecliptic.perf.stats import (
    EN_DASH,
    Aggregate,
    Spread,
    aggregate,
    compare,
    compare_series,
    describe,
)


def iperf(gbps: float, retransmits: float = 0) -> Result:
    return Result(
        headline="throughput_gbps",
        metrics={"throughput_gbps": gbps, "retransmits": retransmits},
        units={"throughput_gbps": "Gbit/s", "retransmits": ""},
        higher_is_better={"retransmits": False},
        summary=f"{gbps:.2f} Gbit/s",
    )


def pingpong(scale: float, sizes: tuple[int, ...] = (0, 1, 1024, 4096)) -> Result:
    """An MPI ping-pong sweep whose latency is ``scale`` times a base curve."""
    rows = [
        {
            "bytes": float(b),
            "latency_us": scale * (2.0 + b / 1000),
            "bandwidth_mbs": b / (scale * (2.0 + b / 1000)),
        }
        for b in sizes
    ]
    return Result(
        headline="latency_min_us",
        metrics={"latency_min_us": rows[0]["latency_us"], "bandwidth_peak_mbs": 10.0 / scale},
        units={
            "latency_min_us": "us",
            "bandwidth_peak_mbs": "MB/s",
            "latency_us": "us",
            "bandwidth_mbs": "MB/s",
            "bytes": "B",
        },
        higher_is_better={"latency_min_us": False},
        series_x="bytes",
        series=rows,
    )


def test_spread_is_median_min_max_and_percent() -> None:
    s = Spread.of([9.44, 9.38, 9.41])
    assert (s.median, s.min, s.max, s.n) == (9.41, 9.38, 9.44, 3)
    assert s.spread_pct == pytest.approx((9.44 - 9.38) / 9.41 * 100)
    assert Spread.of([5.0]).spread_pct == 0.0
    assert Spread.of([2.0, 4.0]).median == 3.0
    assert Spread.of([-1.0, 0.0, 1.0]).spread_pct == math.inf
    with pytest.raises(ValueError, match="at least one"):
        Spread.of([])
    with pytest.raises(ValueError, match="finite"):
        Spread.of([1.0, math.nan])


def test_aggregate_of_three_iperf_runs() -> None:
    agg = aggregate("iperf3", [iperf(9.38, 2), iperf(9.44, 0), iperf(9.41, 5)])
    assert agg.kind == "iperf3"
    assert agg.headline == "throughput_gbps"
    assert agg.metrics["throughput_gbps"] == Spread(9.41, 9.38, 9.44, 3)
    assert agg.metrics["retransmits"] == Spread(2, 0, 5, 3)
    assert agg.summary == f"9.41 Gbit/s (9.38{EN_DASH}9.44, n=3)"
    assert agg.n == 3
    assert agg.series == [] and agg.series_x is None
    assert agg.better_higher("throughput_gbps") and not agg.better_higher("retransmits")
    assert aggregate("iperf3", [iperf(9.38)]).summary == "9.38 Gbit/s (n=1)"


def test_aggregate_refuses_nothing_and_mixed_headlines() -> None:
    with pytest.raises(ValueError, match="no results"):
        aggregate("iperf3", [])
    other = Result(headline="iops", metrics={"iops": 1.0}, units={"iops": ""})
    with pytest.raises(ValueError, match="different headlines"):
        aggregate("iperf3", [iperf(1.0), other])
    mb = Result(
        headline="throughput_gbps",
        metrics={"throughput_gbps": 1.0},
        units={"throughput_gbps": "Mbit/s"},
    )
    with pytest.raises(ValueError, match="Gbit/s in one result, Mbit/s"):
        aggregate("iperf3", [iperf(1.0), mb])


def test_a_metric_some_runs_lack_counts_only_those_that_have_it() -> None:
    bare = Result(
        headline="throughput_gbps",
        metrics={"throughput_gbps": 9.0},
        units={"throughput_gbps": "Gbit/s"},
    )
    agg = aggregate("iperf3", [iperf(9.5, 3), bare])
    assert agg.metrics["throughput_gbps"].n == 2
    assert agg.metrics["retransmits"] == Spread(3, 3, 3, 1)


def test_series_rows_are_aggregated_per_x() -> None:
    agg = aggregate("mpi_pingpong", [pingpong(1.0), pingpong(1.2), pingpong(0.9, (0, 1, 1024))])
    assert agg.series_x == "bytes"
    assert [r["bytes"].median for r in agg.series] == [0, 1, 1024, 4096]
    assert [r["latency_us"].n for r in agg.series] == [3, 3, 3, 2]
    assert agg.series[0]["latency_us"] == Spread(2.0, 1.8, 2.4, 3)
    # Latency is in a unit of time: lower is better though no result said so for the column.
    assert not agg.better_higher("latency_us") and agg.better_higher("bandwidth_mbs")
    assert agg.row(1024) is agg.series[2] and agg.row(3) is None


def test_time_samples_that_jitter_are_one_point() -> None:
    def run(offset: float) -> Result:
        rows = [{"seconds": t + offset, "throughput_gbps": 9.0 + offset * 1000} for t in (1, 2, 3)]
        return iperf(9.0).model_copy(update={"series_x": "seconds", "series": rows})

    agg = aggregate("iperf3", [run(0.000042), run(0.000031), run(-0.000020)])
    assert len(agg.series) == 3
    assert [r["seconds"].n for r in agg.series] == [3, 3, 3]


def test_compare_calls_a_change_real_only_beyond_the_spread() -> None:
    bridge = aggregate("iperf3", [iperf(9.1, 10), iperf(9.3, 12), iperf(9.2, 11)])
    direct = aggregate("iperf3", [iperf(9.6, 0), iperf(9.8, 0), iperf(9.7, 0)])
    noisy = aggregate("iperf3", [iperf(8.0, 0), iperf(9.75, 0), iperf(10.5, 0)])

    diffs = compare(bridge, direct)
    assert [d.metric for d in diffs] == ["throughput_gbps", "retransmits"]
    tp, rt = diffs
    assert tp.beyond_spread and tp.better == "b" and tp.unit == "Gbit/s"
    assert tp.ratio == pytest.approx(9.7 / 9.2)
    assert tp.change_pct == pytest.approx((9.7 / 9.2 - 1) * 100)
    assert rt.beyond_spread and rt.better == "b"  # fewer retransmits is better
    assert rt.ratio == 0.0
    assert compare(direct, bridge)[1].ratio is None  # 0 retransmits on side a

    # The median moved more than on `direct`, but the runs overlap bridge's: no finding.
    tp = compare(bridge, noisy)[0]
    assert not tp.beyond_spread and tp.better is None


def test_compare_refuses_different_kinds() -> None:
    a = aggregate("iperf3", [iperf(1.0)])
    b = Aggregate(**{**a.__dict__, "kind": "fio"})
    with pytest.raises(ValueError, match="iperf3 benchmark with a fio"):
        compare(a, b)


def test_compare_series_at_common_sizes() -> None:
    slow = aggregate("mpi_pingpong", [pingpong(2.0), pingpong(2.1)])
    fast = aggregate("mpi_pingpong", [pingpong(1.0, (0, 1, 1024)), pingpong(1.1, (0, 1, 1024))])
    diffs = compare_series(slow, fast)
    assert [(d.metric, d.x) for d in diffs] == [
        ("latency_us", 0),
        ("latency_us", 1),
        ("latency_us", 1024),
        ("bandwidth_mbs", 0),
        ("bandwidth_mbs", 1),
        ("bandwidth_mbs", 1024),
    ]
    lat = diffs[0]
    assert lat.beyond_spread and lat.better == "b" and lat.unit == "us"
    bw = diffs[5]
    assert bw.beyond_spread and bw.better == "b"
    assert bw.ratio == pytest.approx(bw.b.median / bw.a.median)


# Properties ---------------------------------------------------------------------------------

values = st.lists(
    st.floats(min_value=-1e9, max_value=1e9, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=20,
)
positive_runs = st.lists(
    st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=8,
)


@given(values)
def test_median_lies_within_min_and_max(vs: list[float]) -> None:
    s = Spread.of(vs)
    assert s.min <= s.median <= s.max
    assert s.n == len(vs)
    assert s.spread_pct >= 0


@given(positive_runs)
def test_nothing_differs_from_itself(runs: list[float]) -> None:
    a = aggregate("iperf3", [iperf(v, v / 2) for v in runs])
    for d in compare(a, a):
        assert not d.beyond_spread and d.better is None
        assert d.ratio == pytest.approx(1.0)


@given(positive_runs, positive_runs)
def test_comparing_the_other_way_inverts_the_ratio(ra: list[float], rb: list[float]) -> None:
    a = aggregate("iperf3", [iperf(v, v) for v in ra])
    b = aggregate("iperf3", [iperf(v, v) for v in rb])
    for ab, ba in zip(compare(a, b), compare(b, a), strict=True):
        assert ab.metric == ba.metric
        assert ab.ratio is not None and ba.ratio is not None
        assert ab.ratio == pytest.approx(1 / ba.ratio)
        assert ab.beyond_spread == ba.beyond_spread
        assert {ab.better, ba.better} in ({None}, {"a", "b"})


@given(positive_runs, st.randoms())
def test_the_order_of_repetitions_does_not_matter(runs: list[float], rnd) -> None:
    results = [iperf(v, i) for i, v in enumerate(runs)]
    shuffled = list(results)
    rnd.shuffle(shuffled)
    assert aggregate("iperf3", results) == aggregate("iperf3", shuffled)


def test_describe_reads_like_a_person_wrote_it() -> None:
    wide = Spread(1184.31, 1100.2, 1190.0, 5)
    assert describe(wide, "MB/s") == f"1184 MB/s (1100{EN_DASH}1190, n=5)"
    assert describe(Spread(0.0421, 0.04, 0.05, 2), "ms") == f"0.042 ms (0.04{EN_DASH}0.05, n=2)"
    assert describe(Spread(3.0, 3.0, 3.0, 1), "") == "3.00 (n=1)"
