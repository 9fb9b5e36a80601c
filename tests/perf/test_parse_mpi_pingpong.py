"""Reading MPI ping-pong output: ours (real runs in local-cloud servers) and real IMB-MPI1
PingPong output; truncated, empty and foreign output is refused, naming the line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecliptic.perf.errors import ParseError, Unsupported
from ecliptic.perf.kinds.mpi_pingpong import MpiPingPong, MpiPingPongParams

DATA = Path(__file__).parent / "data"
KIND = MpiPingPong()
OURS = MpiPingPongParams()  # max_log 22: what the fixtures were made with
IMB = MpiPingPongParams(max_log=26)


def fixture(name: str) -> str:
    """A fixture's text without its provenance lines (``#fixture: ...``)."""
    text = (DATA / name).read_text()
    return "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("#fixture:"))


@pytest.mark.parametrize("network", ["bridge", "direct", "host"])
def test_our_runs_give_the_whole_sweep(network: str) -> None:
    raw = fixture(f"mpi_pingpong_{network}.txt")
    r = KIND.parse(raw, OURS)
    assert r.series_x == "bytes"
    assert [row["bytes"] for row in r.series] == [0] + [1 << e for e in range(23)]
    latencies = [row["latency_us"] for row in r.series]
    assert r.headline == "latency_min_us"
    assert r.metrics["latency_min_us"] == min(latencies)
    assert r.higher_is_better["latency_min_us"] is False
    assert 0.1 < r.metrics["latency_min_us"] < 10_000
    assert r.metrics["bandwidth_peak_mbs"] == max(row["bandwidth_mbs"] for row in r.series)
    assert r.metrics["bandwidth_peak_mbs"] > 10
    assert r.units["latency_us"] == "us" and r.units["bandwidth_mbs"] == "MB/s"


def test_the_host_fixture_row_by_row() -> None:
    raw = fixture("mpi_pingpong_host.txt")
    rows = {row["bytes"]: row for row in KIND.parse(raw, OURS).series}
    # "            0         1000         7.63         0.00" in the fixture
    assert rows[0] == {"bytes": 0, "latency_us": 7.63, "bandwidth_mbs": 0.0}
    line = next(ln for ln in raw.splitlines() if ln.split()[:1] == ["4194304"])
    size, _reps, usec, mbs = line.split()
    assert rows[4194304]["latency_us"] == float(usec)
    assert rows[4194304]["bandwidth_mbs"] == float(mbs)
    # bandwidth is bytes / t[usec], as IMB defines it (within the 2-decimal rounding of t)
    assert abs(float(size) / float(usec) - float(mbs)) / float(mbs) < 0.01


def test_real_intel_mpi_benchmarks_output() -> None:
    r = KIND.parse(fixture("imb_pingpong_oci.txt"), IMB)
    assert len(r.series) == 27  # 0, then 8 .. 2^28 (-msglog 3:28)
    assert r.series[0] == {"bytes": 0, "latency_us": 1.66, "bandwidth_mbs": 0.0}
    assert r.series[-1] == {"bytes": 268435456, "latency_us": 23900.0, "bandwidth_mbs": 11231.61}
    assert r.metrics["latency_min_us"] == 1.66
    assert r.metrics["bandwidth_peak_mbs"] == 11481.46
    assert r.metrics["bandwidth_peak_bytes"] == 16777216
    assert "1.66 us" in r.summary


def test_empty_output() -> None:
    for raw in ("", "\n\n  \n"):
        with pytest.raises(ParseError, match="mpi_pingpong: .*empty"):
            KIND.parse(raw, OURS)


@pytest.mark.parametrize(
    "foreign",
    ["fio_randread_libaio_direct.json", "perftest_ib_read_lat_sweep.txt"],
)
def test_another_tools_output_is_not_read(foreign: str) -> None:
    raw = fixture(foreign)
    first = next(ln for ln in raw.splitlines() if ln.strip())
    with pytest.raises(ParseError, match="no PingPong table") as e:
        KIND.parse(raw, OURS)
    assert e.value.line_no == 1 + raw.splitlines().index(first)
    assert e.value.kind == "mpi_pingpong"
    assert first.strip()[:40] in str(e.value)


def test_another_imb_benchmark_is_not_a_ping_pong() -> None:
    alltoall = (
        "# Benchmarking Alltoall\n"
        "# #processes = 4\n"
        "       #bytes #repetitions  t_min[usec]  t_max[usec]  t_avg[usec]\n"
        "            0         1000         0.03         0.03         0.03\n"
    )  # the shape of IMB's Alltoall table (typed here, not a real run)
    with pytest.raises(ParseError, match="no PingPong table"):
        KIND.parse(alltoall, OURS)


def test_a_run_cut_after_some_rows_names_the_last_line() -> None:
    lines = fixture("mpi_pingpong_bridge.txt").splitlines(keepends=True)
    header = next(i for i, ln in enumerate(lines) if "#repetitions" in ln)
    cut = "".join(lines[: header + 12])  # rows 0, 1, 2 ... 512 bytes, nothing after
    with pytest.raises(ParseError, match="stops at 512 bytes.*cut short") as e:
        KIND.parse(cut, OURS)
    assert e.value.line_no == header + 12
    assert e.value.line.split()[0] == "512"


def test_a_run_cut_inside_a_row() -> None:
    raw = fixture("mpi_pingpong_direct.txt")
    end = raw.index("\n", raw.index("   4194304 ")) - 3  # the last row, its last digits gone
    with pytest.raises(ParseError, match="not whole") as e:
        KIND.parse(raw[:end], OURS)
    assert e.value.line.split()[:3] == ["4194304", "16", "1382.92"]
    half = raw[: raw.index("  1048576 ") + 20] + "\n# All processes entering MPI_Finalize\n"
    with pytest.raises(ParseError, match="not four numbers"):
        KIND.parse(half, OURS)


def test_a_table_without_rows() -> None:
    raw = fixture("mpi_pingpong_host.txt")
    head = raw[: raw.index("\n", raw.index("#repetitions")) + 1]
    with pytest.raises(ParseError, match="no rows") as e:
        KIND.parse(head, OURS)
    assert "#repetitions" in e.value.line


def test_units_other_than_imbs_are_refused() -> None:
    raw = fixture("mpi_pingpong_host.txt").replace("t[usec]", "t[msec]")
    with pytest.raises(ParseError, match=r"units t\[msec\]"):
        KIND.parse(raw, OURS)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_prefix_of_a_real_output_is_refused_or_read_whole(data: st.DataObject) -> None:
    """A cut-short output never gives other figures than the whole one: it is refused, or
    (cut after the last row) read the same."""
    name, params = data.draw(
        st.sampled_from(
            [
                ("mpi_pingpong_bridge.txt", OURS),
                ("mpi_pingpong_host.txt", OURS),
                ("imb_pingpong_oci.txt", MpiPingPongParams.model_construct(max_log=28)),
            ]
        )
    )
    raw = fixture(name)
    whole = KIND.parse(raw, params)
    cut = raw[: data.draw(st.integers(min_value=0, max_value=len(raw)))]
    try:
        r = KIND.parse(cut, params)
    except ParseError:
        return
    assert r == whole


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.sampled_from(list("0123456789. #\n-[]abcdegimnoprstuyBMt")), max_size=400)
)
def test_garbage_is_refused_never_read_as_zero(raw: str) -> None:
    for text in (raw, "       #bytes #repetitions      t[usec]   Mbytes/sec\n" + raw):
        try:
            r = KIND.parse(text, MpiPingPongParams(max_log=0))
        except ParseError as e:
            assert str(e).startswith("mpi_pingpong: cannot read the output")
            continue
        assert r.metrics["latency_min_us"] > 0
        assert r.metrics["bandwidth_peak_mbs"] > 0


class Servers:
    """Where a run's ranks are, as a kind sees them (no RDMA device; records what runs)."""

    def __init__(self, count: int) -> None:
        self.network = "bridge" if count == 2 else "host"
        self.count = count
        self.calls: list[list[str]] = []

    def address(self, index: int) -> str:
        return "127.0.0.1" if self.count == 1 else f"198.19.7.{10 + index}"

    def interface(self, index: int) -> str:
        return "lo" if self.count == 1 else "eth0"

    def rdma_devices(self, index: int) -> list[str]:
        return []

    def run(self, index: int, argv: list[str], **_: object) -> None:
        self.calls.append(argv)

    def start(self, index: int, name: str, argv: list[str]) -> None:
        self.calls.append(argv)

    def progress(self, message: str) -> None:
        pass


def test_tcp_only_on_the_measured_interface() -> None:
    two = KIND.command(OURS, Servers(2), "/run/ecliptic-mpi/id_ed25519")  # type: ignore[arg-type]
    joined = " ".join(two)
    assert "--host 198.19.7.10:1,198.19.7.11:1" in joined
    assert "--mca btl self,tcp" in joined and "--mca pml ob1" in joined  # no shm, no UCX
    assert "--mca btl_tcp_if_include eth0" in joined and "--mca oob_tcp_if_include eth0" in joined
    rsh = two[two.index("plm_rsh_args") + 1]
    assert "-p 2222" in rsh and "-i /run/ecliptic-mpi/id_ed25519" in rsh
    assert "StrictHostKeyChecking=no" in rsh and "UserKnownHostsFile=/dev/null" in rsh
    assert two[-5:] == ["/usr/local/bin/mpi-pingpong", "-msglog", "22", "-iter", "1000"]
    one = " ".join(KIND.command(OURS, Servers(1), None))  # type: ignore[arg-type]
    assert "--host localhost:2" in one and "btl_tcp_if_include lo" in one
    assert "plm_rsh" not in one  # both ranks in one server: nothing to log in to


def test_rdma_without_devices_is_refused_before_anything_runs() -> None:
    target = Servers(2)
    with pytest.raises(Unsupported, match="transport rdma needs an RDMA device; server 0") as e:
        KIND.execute(MpiPingPongParams(transport="rdma"), target)
    assert "use transport: tcp" in str(e.value)
    assert target.calls == []
