"""What an attack on benchmark specs found, each tried again: a set whose permutations
multiply past any memory, a template nested past Python's stack, a set named like an id."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from pydantic import ValidationError

from ecliptic.perf.spec import BenchmarkSetSpec

BOMB = textwrap.dedent(
    """
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
    from ecliptic.perf.spec import BenchmarkSetSpec
    keys = {f"iperf3.k{i}": [1, 2, 3, 4] for i in range(16)}  # 4^16 = 4294967296
    try:
        BenchmarkSetSpec.model_validate(
            {"name": "bomb", "template": {"kind": "iperf3"}, "permutations": {"product": keys}}
        )
    except ValueError as e:
        print(e)
    """
)


def test_a_product_of_billions_is_refused_before_it_is_expanded() -> None:
    # Sixteen keys of four values each: before the fix every combination was made first
    # (and only then counted against the 256 allowed), which ran out of memory.
    res = subprocess.run([sys.executable, "-c", BOMB], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "4294967296 combinations; at most 256 permutations" in res.stdout, res.stdout


def test_a_template_nested_past_reason_is_refused_not_a_crash() -> None:
    deep: dict[str, object] = {}
    cur = deep
    for _ in range(600):
        cur["a"] = {}
        cur = cur["a"]  # type: ignore[assignment]
    for body in (
        {"name": "deep", "template": {"kind": "iperf3", "x": deep}},
        {"name": "deep", "template": {"kind": "iperf3"}, "permutations": {"explicit": [deep]}},
    ):
        with pytest.raises(ValidationError) as exc:  # not a RecursionError (an HTTP 500)
            BenchmarkSetSpec.model_validate(body)
        assert "nests deeper than 8 levels" in str(exc.value)


def test_a_set_name_that_looks_like_an_id_is_refused() -> None:
    # A set named like a run's id answered for the run: results and plots look for a set
    # by name first.
    with pytest.raises(ValidationError) as exc:
        BenchmarkSetSpec.model_validate({"name": "deadbeef" * 4, "template": {"kind": "iperf3"}})
    assert "looks like an object id" in str(exc.value)
