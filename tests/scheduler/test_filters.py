"""Host filters: typed comparisons, every operator, unknown properties, errors with a column."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ecliptic.scheduler.filters import FilterError, compile_filter, host_properties
from ecliptic.scheduler.model import GpuSpec, HostInfo

A100_HOST = HostInfo(
    "gpu-07",
    64,
    524288,
    2000,
    gpus=(GpuSpec("A100", 4, 80, ("1g.10gb",)), GpuSpec("L4", 1)),
    rdma=True,
    properties={"rack": "r2", "driver": "535.104.05", "cpus": "10", "credit_rate": 1.5},
)
PROPS = host_properties(A100_HOST)


def matches(text: str, props: dict[str, Any] = PROPS) -> bool:
    return compile_filter(text)(props)


def test_built_in_properties_come_from_the_host() -> None:
    assert PROPS["gpu_model"] == "A100"
    assert PROPS["gpu_models"] == ["A100", "L4"]
    assert PROPS["gpu_count"] == 5
    assert PROPS["memory_gb"] == 512 and PROPS["memory_mb"] == 524288
    assert PROPS["rack"] == "r2" and PROPS["name"] == "gpu-07"
    assert host_properties(HostInfo("c", 8, 1024))["gpu_model"] == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('gpu_model == "A100"', True),
        ('gpu_model != "A100"', False),
        ("vcpus > 63", True),
        ("vcpus >= 65", False),
        ("vcpus < 64", False),
        ("vcpus <= 64", True),
        ("memory_gb >= 512 and disk_gb == 2000", True),
        ('rack == "r1" or rack == "r2"', True),
        ('not rack == "r2"', False),
        ('rack in ["r1", "r2"]', True),
        ('rack not in ["r1", "r2"]', False),
        ('"L4" in gpu_models', True),
        ('"H100" in gpu_models', False),
        ('"gpu" in name', True),
        ("rdma", True),
        ("not rdma", False),
        ("rdma == true", True),
        ("(vcpus > 100 or rdma) and gpu_count == 5", True),
        ("vcpus > 100 or rdma and gpu_count == 4", False),  # and binds tighter than or
        ("", True),
    ],
)
def test_operators(text: str, expected: bool) -> None:
    assert matches(text) is expected


def test_numbers_compare_as_numbers_even_from_strings() -> None:
    # Blazar compares extra capabilities as strings, so "10" < "9"; here 10 > 9.
    assert matches('cpus > "9"')
    assert matches("cpus > 9")
    assert matches("credit_rate > 1.25 and credit_rate < 2")
    assert matches("vcpus == 64.0")


def test_versions_compare_as_versions() -> None:
    assert matches('driver >= "535.104"')
    assert matches('driver > "535.54"')  # 104 > 54, although "535.54" > "535.104" as strings
    assert not matches('driver >= "550"')
    assert matches("driver < 550")
    assert matches("driver == 535.104.05")  # unquoted dotted version


def test_strings_compare_as_strings_and_kinds_do_not_mix() -> None:
    assert matches('rack < "r3"')
    assert not matches('rack > "r3"')
    assert not matches("rack == 2")
    assert not matches('vcpus == "many"')
    assert not matches('vcpus < "many"')


def test_unknown_property_means_no_match_not_an_error() -> None:
    assert not matches('colour == "blue"')
    assert not matches('not colour == "blue"')
    assert not matches("colour")
    assert matches('colour == "blue" or rdma')
    assert not matches('colour == "blue" and rdma')


def test_string_booleans_from_inventory() -> None:
    props = {"gpu": "True", "ssd": "false"}
    assert matches("gpu", props) and matches("gpu == true", props)
    assert not matches("ssd", props) and matches("not ssd", props)


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ('gpu_model == "A100" and and rdma', "unexpected 'and' at column 25", 25),
        ('rack == "r1', "unterminated string at column 9", 9),
        ("vcpus >= ", "unexpected end of filter at column 10", 10),
        ("vcpus $ 4", "unexpected character '$' at column 7", 7),
        ("(rdma", "unexpected end of filter at column 6", 6),
        ("a < b < c", "unexpected '<' at column 7", 7),
        ('rack in ["r1" "r2"]', "unexpected '\"r2\"' at column 15", 15),
        ("rdma)", "unexpected ')' at column 5", 5),
    ],
)
def test_syntax_errors_point_at_the_column(text: str, message: str, column: int) -> None:
    with pytest.raises(FilterError) as err:
        compile_filter(text)
    assert str(err.value).startswith(message)
    assert err.value.column == column and err.value.code == "invalid_filter"
    caret_line = str(err.value).splitlines()[-1]
    assert caret_line.index("^") - 2 == column - 1


def test_compiled_filters_are_cached() -> None:
    assert compile_filter("vcpus > 1") is compile_filter("vcpus > 1")


@settings(max_examples=100, deadline=None)
@given(st.integers(-1000, 1000), st.integers(-1000, 1000))
def test_number_order_matches_python(a: int, b: int) -> None:
    props = {"x": a, "sx": str(a)}
    for op, fn in (("<", a < b), ("<=", a <= b), (">", a > b), (">=", a >= b), ("==", a == b)):
        assert matches(f"x {op} {b}", props) is fn
        assert matches(f'sx {op} "{b}"', props) is fn  # strings of numbers, too


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=30))
def test_any_text_parses_or_fails_cleanly(text: str) -> None:
    try:
        compile_filter(text)(PROPS)
    except FilterError as err:
        assert 1 <= err.column <= len(text) + 1
