"""Reading perftest output (ib_*_bw, ib_*_lat) from real runs published in public repositories
and issue threads (tests/perf/data/perftest_*.txt name each source); the kinds refuse to run
without RDMA devices; truncated, empty and foreign output is refused, naming the line."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from ecliptic.perf.errors import ParseError, Unsupported
from ecliptic.perf.kinds.base import Completed
from ecliptic.perf.kinds.rdma import (
    RdmaBandwidth,
    RdmaBandwidthParams,
    RdmaLatency,
    RdmaLatencyParams,
)

DATA = Path(__file__).parent / "data"
BW, LAT = RdmaBandwidth(), RdmaLatency()
BWP, LATP = RdmaBandwidthParams(), RdmaLatencyParams()
MB = (1 << 20) * 8 / 1e9  # perftest's MB/sec (2^20 bytes/s) in Gbit/s


def fixture(name: str) -> str:
    """A fixture's text without its provenance lines (``#fixture: ...``)."""
    text = (DATA / name).read_text()
    return "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("#fixture:"))


def test_write_bandwidth_with_a_warning_inside_the_table() -> None:
    raw = fixture("perftest_ib_write_bw_deepops.txt")
    assert "Conflicting CPU frequency values detected" in raw
    r = BW.parse(raw, BWP)
    assert r.headline == "bandwidth_gbps"
    assert r.metrics["bandwidth_gbps"] == 92.40
    assert r.metrics["bandwidth_bytes"] == 65536
    assert r.metrics["msg_rate_max_mpps"] == 0.176230
    assert r.series == [
        {
            "bytes": 65536,
            "iterations": 5000,
            "bw_peak_gbps": 92.42,
            "bw_avg_gbps": 92.40,
            "msg_rate_mpps": 0.176230,
        }
    ]
    assert r.series_x is None  # one size: nothing to draw against
    assert r.units["bandwidth_gbps"] == "Gbit/s"


def test_a_read_bandwidth_sweep_in_megabytes() -> None:
    r = BW.parse(fixture("perftest_ib_read_bw_sweep.txt"), BWP)
    assert r.series_x == "bytes"
    assert [row["bytes"] for row in r.series] == [1 << e for e in range(1, 24)]
    # " 2097152    20000            3667.22            3667.10            0.001834"
    assert r.metrics["bandwidth_bytes"] == 2097152
    assert r.metrics["bandwidth_gbps"] == pytest.approx(3667.10 * MB)
    assert r.series[0]["bw_avg_gbps"] == pytest.approx(8.68 * MB)
    assert r.metrics["msg_rate_max_mpps"] == 4.678329


def test_duration_mode_bandwidth() -> None:
    r = BW.parse(fixture("perftest_ib_write_bw_duration.txt"), BWP)
    assert r.series[0]["bw_peak_gbps"] == 0.0  # perftest measures no peak with -D
    assert r.metrics["bandwidth_gbps"] == 0.48
    assert r.metrics["msg_rate_max_mpps"] == 7.498617


@pytest.mark.parametrize(
    ("name", "avg", "at", "low", "p99"),
    [
        ("perftest_ib_read_lat_sweep.txt", 2.01, 2, 1.91, 2.13),
        ("perftest_ib_send_lat_sweep.txt", 1.11, 2, 1.01, 1.62),
    ],
)
def test_latency_sweeps(name: str, avg: float, at: int, low: float, p99: float) -> None:
    r = LAT.parse(fixture(name), LATP)
    assert r.headline == "latency_us"
    assert r.higher_is_better["latency_us"] is False
    assert len(r.series) == 23
    assert r.metrics["latency_us"] == avg
    assert r.metrics["latency_bytes"] == at
    assert r.metrics["latency_min_us"] == low
    assert r.metrics["latency_p99_us"] == p99
    assert set(r.series[0]) == {
        "bytes",
        "iterations",
        "latency_min_us",
        "latency_max_us",
        "latency_typical_us",
        "latency_avg_us",
        "latency_stdev_us",
        "latency_p99_us",
        "latency_p999_us",
    }


def test_the_last_row_of_the_read_latency_sweep() -> None:
    r = LAT.parse(fixture("perftest_ib_read_lat_sweep.txt"), LATP)
    # " 8388608 20000  2177.92  2240.08  2184.09  2184.33  2.24  2192.22  2202.42"
    assert r.series[-1] == {
        "bytes": 8388608,
        "iterations": 20000,
        "latency_min_us": 2177.92,
        "latency_max_us": 2240.08,
        "latency_typical_us": 2184.09,
        "latency_avg_us": 2184.33,
        "latency_stdev_us": 2.24,
        "latency_p99_us": 2192.22,
        "latency_p999_us": 2202.42,
    }


def test_duration_mode_latency_has_averages_only() -> None:
    # The heading and row quoted in shared/reference/benchmark-formats.md (C.4), with a
    # warning between them as perftest prints it; no fixture of a whole -D run was found.
    raw = (
        " #bytes        #iterations       t_avg[usec]    tps average\n"
        "Conflicting CPU frequency values detected: 917.203000 != 2153.728000. "
        "CPU Frequency is not max.\n"
        " 2             62078352            2.42           413812.77\n"
    ) + ("-" * 87 + "\n")
    r = LAT.parse(raw, LATP)
    assert r.metrics == {"latency_us": 2.42, "latency_bytes": 2}
    assert r.series == [
        {"bytes": 2, "iterations": 62078352, "latency_avg_us": 2.42, "tps": 413812.77}
    ]


def test_old_perftest_latency_without_an_average_uses_the_typical_time() -> None:
    raw = (  # RESULT_FMT_LAT of perftest before t_avg (see benchmark-formats.md)
        " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]\n"
        " 2       1000          1.34           8.56         1.41\n" + "-" * 87 + "\n"
    )
    assert LAT.parse(raw, LATP).metrics["latency_us"] == 1.41


def test_empty_output() -> None:
    for kind, params in ((BW, BWP), (LAT, LATP)):
        with pytest.raises(ParseError, match=f"^{kind.name}: .*empty"):
            kind.parse("", params)


def test_bandwidth_and_latency_outputs_are_not_each_other() -> None:
    with pytest.raises(ParseError, match="no latency table") as e:
        LAT.parse(fixture("perftest_ib_write_bw_deepops.txt"), LATP)
    assert e.value.kind == "rdma_latency"
    assert e.value.line_no == 1
    with pytest.raises(ParseError, match="no bandwidth table") as e:
        BW.parse(fixture("perftest_ib_read_lat_sweep.txt"), BWP)
    assert e.value.kind == "rdma_bandwidth"


@pytest.mark.parametrize("foreign", ["fio_randread_libaio_direct.json", "imb_pingpong_oci.txt"])
def test_another_tools_output_is_not_read(foreign: str) -> None:
    raw = fixture(foreign)
    with pytest.raises(ParseError, match="not perftest's ib_\\*_bw output") as e:
        BW.parse(raw, BWP)
    assert e.value.line == raw.splitlines()[0]


def test_a_table_cut_short_names_the_last_line() -> None:
    raw = fixture("perftest_ib_read_bw_sweep.txt")
    cut = raw[: raw.index(" 4194304")]
    with pytest.raises(ParseError, match="not closed.*cut short") as e:
        BW.parse(cut, BWP)
    assert e.value.line_no == len(cut.splitlines())
    assert e.value.line.split()[0] == "2097152"


def test_a_row_cut_inside() -> None:
    raw = fixture("perftest_ib_read_lat_sweep.txt")
    row = " 1024    20000          2.63           12.95"
    broken = raw.replace(
        raw[raw.index(" 1024    20000") : raw.index("\n", raw.index(" 1024    20000"))], row
    )
    with pytest.raises(ParseError, match="not 9 numbers") as e:
        LAT.parse(broken, LATP)
    assert e.value.line == row


def test_a_closed_table_without_rows() -> None:
    raw = fixture("perftest_ib_write_bw_deepops.txt")
    head, _, _ = raw.partition(" 65536      5000")
    with pytest.raises(ParseError, match="no rows"):
        BW.parse(head + "-" * 87 + "\n", BWP)


class NoRdma:
    """A target whose servers see no RDMA device; records whatever would run."""

    network = "bridge"
    count = 2

    def __init__(self) -> None:
        self.calls: list[str] = []

    def address(self, index: int) -> str:
        return f"198.19.7.{10 + index}"

    def interface(self, index: int) -> str:
        return "eth0"

    def rdma_devices(self, index: int) -> list[str]:
        return []

    def run(self, index: int, argv: list[str], **_: Any) -> Completed:
        self.calls.append(f"run {argv}")
        return Completed(0, "", "", 0.0)

    def start(self, index: int, name: str, argv: list[str]) -> None:
        self.calls.append(f"start {argv}")

    def stop(self, index: int, name: str) -> None:
        self.calls.append("stop")

    def log(self, index: int, name: str) -> str:
        return ""

    def progress(self, message: str) -> None:
        pass


@pytest.mark.parametrize(("kind", "params"), [(BW, BWP), (LAT, LATP)])
def test_without_rdma_devices_nothing_runs(kind: Any, params: Any) -> None:
    target = NoRdma()
    with pytest.raises(Unsupported) as e:
        kind.execute(params, target)
    assert str(e.value) == (
        f"{kind.name} needs an RDMA device; server 0 (198.19.7.10) sees none in "
        "/sys/class/infiniband (its host has no RDMA hardware, or none is passed to the server)"
    )
    assert target.calls == []


def test_commands() -> None:
    p = RdmaBandwidthParams(mode="read", qps=4, iterations=5000, extra_args=["--tclass=96"])
    assert BW.program(p) == "ib_read_bw"
    assert BW.options(p) == [
        "-R", "-F", "-p", "18515", "-a", "-n", "5000", "--tclass=96", "--report_gbits", "-q", "4",
    ]  # fmt: skip
    q = RdmaLatencyParams(mode="send", size="64k", duration=30)
    assert LAT.program(q) == "ib_send_lat"
    assert LAT.options(q) == ["-R", "-F", "-p", "18515", "-s", "65536", "-D", "30"]


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        (["--port=1"], "not an option Ecliptic passes"),
        (["-d", "mlx5_0"], "not an option Ecliptic passes"),
        (["--mtu=1500"], "does not have the form"),
        (["--ib-dev=mlx5_0;reboot"], "does not have the form"),
        (["--tclass"], "does not have the form"),
    ],
)
def test_extra_args_come_from_an_allow_list(extra: list[str], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        RdmaBandwidthParams(extra_args=extra)


def test_parameters_perftest_would_refuse() -> None:
    with pytest.raises(ValidationError, match="greater than or equal to 5"):
        RdmaLatencyParams(iterations=4)
    with pytest.raises(ValidationError, match="a duration runs one message size"):
        RdmaBandwidthParams(duration=10)
    with pytest.raises(ValidationError, match="extra"):
        RdmaLatencyParams(qps=2)  # type: ignore[call-arg]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_prefix_of_a_real_output_is_refused_or_read_whole(data: st.DataObject) -> None:
    kind, params, name = data.draw(
        st.sampled_from(
            [
                (BW, BWP, "perftest_ib_read_bw_sweep.txt"),
                (BW, BWP, "perftest_ib_write_bw_deepops.txt"),
                (LAT, LATP, "perftest_ib_read_lat_sweep.txt"),
            ]
        )
    )
    raw = fixture(name)
    whole = kind.parse(raw, params)
    cut = raw[: data.draw(st.integers(min_value=0, max_value=len(raw)))]
    with contextlib.suppress(ParseError):
        assert kind.parse(cut, params) == whole


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("0123456789. #\n-[]BGMbsecyt_avgusp%")), max_size=300))
def test_garbage_is_refused_never_read_as_zero(raw: str) -> None:
    heading = " #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]\n"
    for kind, params, text in ((BW, BWP, raw), (BW, BWP, heading + raw), (LAT, LATP, raw)):
        try:
            r = kind.parse(text, params)
        except ParseError as e:
            assert str(e).startswith(f"{kind.name}: cannot read the output")
            continue
        assert r.metrics[r.headline] > 0
