"""Reading fio's JSON output: real runs in a local-cloud server (with and without the note fio
prints before its JSON); truncated, empty and foreign output is refused, naming the line."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecliptic.perf.errors import ParseError
from ecliptic.perf.kinds.fio import Fio, FioParams

DATA = Path(__file__).parent / "data"
KIND = Fio()


def fixture(name: str) -> str:
    """A fixture's text without its provenance lines (``#fixture: ...``)."""
    text = (DATA / name).read_text()
    return "".join(ln for ln in text.splitlines(keepends=True) if not ln.startswith("#fixture:"))


def job(raw: str) -> dict:  # type: ignore[type-arg]
    """The fixture's job, read independently of the parser."""
    return json.loads(raw[raw.index("{") :])["jobs"][0]  # type: ignore[no-any-return]


def test_random_reads() -> None:
    raw = fixture("fio_randread_libaio_direct.json")
    r = KIND.parse(raw, FioParams())
    read = job(raw)["read"]
    assert r.headline == "bandwidth_mbs"
    assert r.metrics["bandwidth_mbs"] == r.metrics["read_bw_mbs"] == read["bw_bytes"] / 1e6
    assert abs(r.metrics["read_bw_mbs"] - read["bw"] * 1024 / 1e6) < 0.01  # KiB/s
    assert r.metrics["read_iops"] == r.metrics["iops"] == read["iops"]
    assert r.metrics["read_lat_us"] == read["lat_ns"]["mean"] / 1000
    assert r.higher_is_better["read_lat_us"] is False
    assert "write_bw_mbs" not in r.metrics
    assert r.units["read_bw_mbs"] == "MB/s" and r.units["read_lat_us"] == "us"
    assert r.summary.startswith("randread: read ")


def test_the_note_fio_prints_before_its_json() -> None:
    raw = fixture("fio_write_psync_note.json")
    assert raw.startswith("note: both iodepth >= 1 and synchronous I/O engine")
    p = FioParams(rw="write", bs="1m", ioengine="psync", direct=0)
    r = KIND.parse(raw, p)
    assert (
        r.metrics["bandwidth_mbs"]
        == r.metrics["write_bw_mbs"]
        == job(raw)["write"]["bw_bytes"] / 1e6
    )
    assert r.metrics["write_iops"] == job(raw)["write"]["iops"]
    assert "read_bw_mbs" not in r.metrics


def test_mixed_reads_and_writes_count_both_directions() -> None:
    raw = fixture("fio_randrw_psync_note.json")
    r = KIND.parse(raw, FioParams(rw="randrw", ioengine="psync"))
    j = job(raw)
    assert r.metrics["read_bw_mbs"] == j["read"]["bw_bytes"] / 1e6
    assert r.metrics["write_bw_mbs"] == j["write"]["bw_bytes"] / 1e6
    assert r.metrics["bandwidth_mbs"] == pytest.approx(
        (j["read"]["bw_bytes"] + j["write"]["bw_bytes"]) / 1e6
    )
    assert r.metrics["iops"] == pytest.approx(j["read"]["iops"] + j["write"]["iops"])


def test_empty_output() -> None:
    with pytest.raises(ParseError, match="^fio: .*empty"):
        KIND.parse("  \n", FioParams())


@pytest.mark.parametrize("foreign", ["mpi_pingpong_host.txt", "perftest_ib_write_bw_deepops.txt"])
def test_another_tools_output_is_not_read(foreign: str) -> None:
    raw = fixture(foreign)
    with pytest.raises(ParseError, match="no JSON document") as e:
        KIND.parse(raw, FioParams())
    assert e.value.line_no == 1
    assert e.value.line == raw.splitlines()[0]


def test_json_that_is_not_fios() -> None:
    iperf3_like = '{"start": {}, "end": {"sum_received": {"bits_per_second": 1e9}}}\n'
    with pytest.raises(ParseError, match="no 'jobs' list") as e:
        KIND.parse(iperf3_like, FioParams())
    assert e.value.line_no == 1


def test_a_run_cut_short_names_the_line() -> None:
    raw = fixture("fio_write_psync_note.json")
    cut = raw[: raw.index('"write" : {')]
    with pytest.raises(ParseError, match="not whole.*cut short") as e:
        KIND.parse(cut, FioParams(rw="write"))
    assert e.value.line_no == len(cut.splitlines())


def test_a_direction_without_io_is_not_a_zero() -> None:
    raw = fixture("fio_randread_libaio_direct.json")
    doc = json.loads(raw)
    doc["jobs"][0]["read"]["io_bytes"] = 0
    doc["jobs"][0]["read"]["bw_bytes"] = 0
    with pytest.raises(ParseError, match="no read I/O"):
        KIND.parse(json.dumps(doc), FioParams())
    del doc["jobs"][0]["read"]["lat_ns"]
    doc["jobs"][0]["read"]["io_bytes"] = 1
    with pytest.raises(ParseError, match="'read' section has no 'lat_ns'"):
        KIND.parse(json.dumps(doc), FioParams())


def test_a_failed_job() -> None:
    doc = json.loads(fixture("fio_randread_libaio_direct.json"))
    doc["jobs"][0]["error"] = 5
    with pytest.raises(ParseError, match="error 5"):
        KIND.parse(json.dumps(doc), FioParams())


def test_parameters() -> None:
    p = FioParams(bs="64k", size="1g", rw="randrw", rwmixread=70)
    assert (p.bs, p.size) == (65536, 1 << 30)
    argv = KIND.command(p, "/var/tmp/x")
    assert "--rwmixread=70" in argv and "--output-format=json" in argv and "--time_based" in argv
    with pytest.raises(ValueError, match="larger than size"):
        FioParams(bs="4m", size="1m")
    with pytest.raises(ValueError):
        FioParams(ioengine="io_uring")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_prefix_of_a_real_output_is_refused_or_read_whole(data: st.DataObject) -> None:
    name, params = data.draw(
        st.sampled_from(
            [
                ("fio_randread_libaio_direct.json", FioParams()),
                ("fio_randrw_psync_note.json", FioParams(rw="randrw")),
            ]
        )
    )
    raw = fixture(name)
    whole = KIND.parse(raw, params)
    cut = raw[: data.draw(st.integers(min_value=0, max_value=len(raw)))]
    with contextlib.suppress(ParseError):
        assert KIND.parse(cut, params) == whole


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list('{}[]":,0123456789. \nabjoswrite_')), max_size=300))
def test_garbage_is_refused_never_read_as_zero(raw: str) -> None:
    try:
        r = KIND.parse(raw, FioParams())
    except ParseError as e:
        assert str(e).startswith("fio: cannot read the output")
        return
    assert r.metrics["bandwidth_mbs"] > 0
