"""Plots comparing wirings: what they show, that they are valid files, and that they are stable."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET

import pytest

from ecliptic.perf.kinds.base import Result
from ecliptic.perf.plots import PLOTS, Entry, Figure, figures, size_label
from ecliptic.perf.stats import EN_DASH, aggregate

SVG = "{http://www.w3.org/2000/svg}"
MODES = ("bridge", "direct", "host")


def iperf_entries() -> list[Entry]:
    runs = {"bridge": (6.1, 6.4, 5.9), "direct": (9.38, 9.44, 9.41), "host": (9.8, 9.9, 9.85)}
    out = []
    for mode, gbps in runs.items():
        results = [
            Result(
                headline="throughput_gbps",
                metrics={"throughput_gbps": g, "retransmits": 0.0},
                units={"throughput_gbps": "Gbit/s", "retransmits": ""},
                higher_is_better={"retransmits": False},
            )
            for g in gbps
        ]
        out.append(
            Entry(f"network={mode}", "iperf3", {"network": mode}, aggregate("iperf3", results))
        )
    return out


def pingpong(base_us: float, gbps: float, jitter: float) -> Result:
    """An IMB-style sweep: 0 bytes, then 1 B to 4 MiB; latency = base + size / bandwidth."""
    rows = []
    for size in [0] + [2**p for p in range(23)]:
        latency = (base_us + size * 8 / (gbps * 1e3)) * jitter
        rows.append({"bytes": float(size), "latency_us": latency, "bandwidth_mbs": size / latency})
    return Result(
        headline="latency_min_us",
        metrics={
            "latency_min_us": rows[0]["latency_us"],
            "bandwidth_peak_mbs": rows[-1]["bandwidth_mbs"],
        },
        units={
            "latency_min_us": "us",
            "bandwidth_peak_mbs": "MB/s",
            "bytes": "B",
            "latency_us": "us",
            "bandwidth_mbs": "MB/s",
        },
        higher_is_better={"latency_min_us": False},
        series_x="bytes",
        series=rows,
    )


def pingpong_entries() -> list[Entry]:
    wiring = {"bridge": (28.0, 5.0), "direct": (9.0, 20.0), "host": (1.6, 90.0)}
    return [
        Entry(
            f"network={mode}",
            "mpi_pingpong",
            {"network": mode},
            aggregate("mpi_pingpong", [pingpong(lat, bw, j) for j in (0.97, 1.0, 1.04)]),
        )
        for mode, (lat, bw) in wiring.items()
    ]


def slurm(serial_s: float, parallel_s: float, jitter: float) -> Result:
    rows = [
        {"nodes": float(n), "wall_s": (serial_s + parallel_s / n) * jitter} for n in (1, 2, 4, 8)
    ]
    return Result(
        headline="wall_s_max_nodes",
        metrics={"wall_s_max_nodes": rows[-1]["wall_s"]},
        units={"wall_s_max_nodes": "s", "wall_s": "s", "nodes": ""},
        higher_is_better={"wall_s_max_nodes": False},
        series_x="nodes",
        series=rows,
    )


def slurm_entries() -> list[Entry]:
    return [
        Entry(
            f"network={mode}",
            "slurm_job",
            {"network": mode},
            aggregate("slurm_job", [slurm(serial, 900, j) for j in (0.98, 1.0, 1.03)]),
        )
        for mode, serial in (("bridge", 120.0), ("direct", 40.0))
    ]


def texts(figure: Figure) -> list[str]:
    """Every text of an SVG figure, after checking that it is well-formed XML."""
    assert figure.format == "svg"
    root = ET.fromstring(figure.data)
    assert root.tag == f"{SVG}svg"
    return ["".join(t.itertext()).strip() for t in root.iter(f"{SVG}text")]


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_iperf3_bars_per_wiring() -> None:
    (fig,) = figures(iperf_entries(), "svg")
    assert fig.name == "iperf3-throughput"
    assert fig.title == "iperf3: throughput by network"
    words = texts(fig)
    for label in ("network=bridge", "network=direct", "network=host"):
        assert label in words
    assert "Throughput (Gbit/s)" in words
    assert any(w.startswith("higher is better") and f"min{EN_DASH}max" in w for w in words)
    # The median is written on each bar, and a faster wiring's label sits higher up.
    root = ET.fromstring(fig.data)
    y = {
        "".join(t.itertext()): float(t.attrib["y"])
        for t in root.iter(f"{SVG}text")
        if "".join(t.itertext()).endswith("Gbit/s")
    }
    assert set(y) == {"6.10 Gbit/s", "9.41 Gbit/s", "9.85 Gbit/s"}
    assert y["6.10 Gbit/s"] > y["9.41 Gbit/s"] > y["9.85 Gbit/s"]


def test_pingpong_latency_and_bandwidth_against_message_size() -> None:
    figs = figures(pingpong_entries(), "svg")
    assert [f.name for f in figs] == ["mpi_pingpong-latency", "mpi_pingpong-bandwidth"]
    latency, bandwidth = (texts(f) for f in figs)
    assert figs[0].title == "MPI ping-pong: latency against message size"
    assert "Latency (µs) (log scale)" in latency
    assert "Bandwidth (MB/s) (log scale)" in bandwidth
    for words in (latency, bandwidth):
        assert "Message size (bytes, log scale)" in words
        assert {"1", "1 KiB", "4 MiB"} <= set(words)  # a log2 axis labelled in sizes
        assert [w for w in words if w.startswith("network=")] == [f"network={m}" for m in MODES]
        assert any("0-byte messages not shown" in w for w in words)
    assert any(w.startswith("lower is better") for w in latency)
    assert any(w.startswith("higher is better") for w in bandwidth)
    # The size axis is log2: 1 -> 4 is as wide as 1 KiB -> 4 KiB.
    root = ET.fromstring(figs[0].data)
    x = {
        "".join(t.itertext()): float(t.attrib["x"])
        for t in root.iter(f"{SVG}text")
        if t.attrib.get("style", "").endswith("text-anchor: middle")
    }
    assert x["4"] - x["1"] == pytest.approx(x["4 KiB"] - x["1 KiB"], rel=1e-3)
    assert x["4"] - x["1"] == pytest.approx(x["16"] - x["4"], rel=1e-3)
    # One min-max band per wiring.
    bands = [g for g in root.iter(f"{SVG}g") if g.get("id", "").startswith("FillBetween")]
    assert len(bands) == 3


def test_slurm_wall_time_and_speed_up_against_nodes() -> None:
    figs = figures(slurm_entries(), "svg")
    assert [f.name for f in figs] == ["slurm_job-wall-time", "slurm_job-speedup"]
    wall, speedup = (texts(f) for f in figs)
    assert "Wall time (s)" in wall and "Nodes" in wall
    assert {"1", "2", "4", "8"} <= set(wall)
    assert any(w.startswith("lower is better") for w in wall)
    assert "ideal (linear)" in speedup
    assert any(w.startswith("higher is better") for w in speedup)


def test_png_is_a_png_of_a_sensible_size() -> None:
    for entries in (iperf_entries(), pingpong_entries(), slurm_entries()):
        for fig in figures(entries, "png"):
            assert fig.format == "png"
            width, height = png_size(fig.data)
            assert (width, height) == (960, 600)
            assert 10_000 < len(fig.data) < 1_000_000


@pytest.mark.parametrize("fmt", ["svg", "png"])
def test_the_same_data_give_the_same_bytes(fmt: str) -> None:
    entries = iperf_entries() + pingpong_entries() + slurm_entries()
    first = figures(entries, fmt)  # type: ignore[arg-type]
    second = figures(entries, fmt)  # type: ignore[arg-type]
    assert [f.data for f in first] == [f.data for f in second]
    if fmt == "svg":
        assert b"<dc:date>" not in first[0].data


def test_each_kind_gets_its_own_figures_in_order() -> None:
    figs = figures(pingpong_entries() + iperf_entries() + slurm_entries(), "svg")
    assert [f.name for f in figs] == [
        "mpi_pingpong-latency",
        "mpi_pingpong-bandwidth",
        "iperf3-throughput",
        "slurm_job-wall-time",
        "slurm_job-speedup",
    ]
    assert figures([], "svg") == []


def test_a_kind_without_plots_or_a_bad_format_is_refused() -> None:
    entry = iperf_entries()[0]
    unknown = Entry(
        "x",
        "openfoam",
        {},
        entry.aggregate.__class__(**{**entry.aggregate.__dict__, "kind": "openfoam"}),
    )
    with pytest.raises(
        ValueError, match="no plots for benchmark kind 'openfoam'; plots exist for: fio, iperf3"
    ):
        figures([unknown], "svg")
    with pytest.raises(ValueError, match="is fio but its aggregate is iperf3"):
        figures([Entry("x", "fio", {}, entry.aggregate)], "svg")
    with pytest.raises(ValueError, match="'svg' or 'png'"):
        figures([entry], "pdf")  # type: ignore[arg-type]
    assert set(PLOTS) >= {
        "iperf3",
        "fio",
        "mpi_pingpong",
        "rdma_bandwidth",
        "rdma_latency",
        "slurm_job",
    }


def test_a_sweep_kind_without_series_falls_back_to_its_headline() -> None:
    def one_size(gbps: float) -> Result:  # perftest with one size (-s): no sweep
        return Result(
            headline="bandwidth_gbps",
            metrics={"bandwidth_gbps": gbps},
            units={"bandwidth_gbps": "Gbit/s"},
        )

    entries = [
        Entry(
            f"qps={q}",
            "rdma_bandwidth",
            {"rdma_bandwidth.qps": q},
            aggregate("rdma_bandwidth", [one_size(v) for v in vs]),
        )
        for q, vs in ((1, (90.1, 91.0)), (4, (97.5, 97.9)))
    ]
    (fig,) = figures(entries, "svg")
    assert fig.name == "rdma_bandwidth-bandwidth"
    words = texts(fig)
    assert "Bandwidth (Gbit/s)" in words and "qps=1" in words
    assert fig.title == "RDMA bandwidth (perftest): bandwidth by rdma_bandwidth.qps"


def test_rdma_latency_draws_the_average_not_every_column() -> None:
    def sweep(scale: float, average: bool) -> Result:
        key = "latency_avg_us" if average else "latency_typical_us"
        rows = [
            {
                "bytes": float(2**p),
                "iterations": 1000.0,
                key: scale * (1.8 + 2**p / 5000),
                "latency_p99_us": scale * 3.0,
            }
            for p in range(1, 24)
        ]
        return Result(
            headline="latency_us",
            metrics={"latency_us": rows[0][key]},
            units={
                "latency_us": "us",
                "bytes": "B",
                "iterations": "",
                key: "us",
                "latency_p99_us": "us",
            },
            higher_is_better={"latency_us": False},
            series_x="bytes",
            series=rows,
        )

    for average, label in (
        (True, "Average latency (µs) (log scale)"),
        (False, "Typical latency (µs) (log scale)"),
    ):
        entries = [
            Entry(
                f"network={m}",
                "rdma_latency",
                {"network": m},
                aggregate("rdma_latency", [sweep(s, average), sweep(s * 1.05, average)]),
            )
            for m, s in (("direct", 1.0), ("host", 0.8))
        ]
        (fig,) = figures(entries, "svg")
        assert fig.name == "rdma_latency-latency"
        words = texts(fig)
        assert label in words
        assert any(w.startswith("lower is better") for w in words)


def test_fio_bars_bandwidth_and_iops() -> None:
    def run(mbs: float) -> Result:
        return Result(
            headline="bandwidth_mbs",
            metrics={"bandwidth_mbs": mbs, "iops": mbs * 256},
            units={"bandwidth_mbs": "MB/s", "iops": "IO/s"},
        )

    entries = [
        Entry(f"flavor={f}", "fio", {"flavor": f}, aggregate("fio", [run(v), run(v * 1.1)]))
        for f, v in (("m1.small", 180.0), ("m1.large", 420.0))
    ]
    figs = figures(entries, "svg")
    assert [f.name for f in figs] == ["fio-bandwidth", "fio-iops"]
    assert "Bandwidth (MB/s)" in texts(figs[0]) and "IOPS (IO/s)" in texts(figs[1])
    assert figs[1].title == "fio: IOPS by flavor"


def test_long_labels_are_wrapped_and_names_are_file_safe() -> None:
    entries = [
        Entry(
            f"network={e.permutation['network']}, iperf3.streams=8, iperf3.protocol=tcp",
            e.kind,
            e.permutation,
            e.aggregate,
        )
        for e in iperf_entries()
    ]
    (fig,) = figures(entries, "svg")
    assert all(c.isalnum() or c in "-_." for c in fig.name)
    # Wrapped: no tick label line is longer than the bar is wide.
    assert all(
        len(line) <= 18 for w in texts(fig) if w.startswith("network=") for line in w.split("\n")
    )


def test_size_labels() -> None:
    assert [size_label(v) for v in (1, 512, 1024, 4096, 1 << 20, 4 << 20, 1 << 30)] == [
        "1",
        "512",
        "1 KiB",
        "4 KiB",
        "1 MiB",
        "4 MiB",
        "1 GiB",
    ]
