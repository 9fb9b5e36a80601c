"""Benchmark runs measure one at a time; tenancies take turns so that one tenancy's long
set cannot hold another's run back for more than one run."""

from __future__ import annotations

from datetime import timedelta

import pytest

from ecliptic.perf.spec import BenchmarkSetSpec, BenchmarkSpec
from ecliptic.phases import BenchmarkPhase
from ecliptic.services import benchmarks
from ecliptic.store.models import Benchmark
from ecliptic.store.types import utcnow
from tests.services.conftest import Env

SPEC = BenchmarkSpec.model_validate({"kind": "iperf3"})


def _set(name: str, runs: int) -> BenchmarkSetSpec:
    return BenchmarkSetSpec.model_validate(
        {
            "name": name,
            "template": {"kind": "iperf3"},
            "permutations": {"product": {"iperf3.streams": list(range(1, runs + 1))}},
        }
    )


def test_tenancies_take_turns_and_runs_go_oldest_first(env: Env) -> None:
    benchmarks.create_set(env.db, env.queue, env.alice, _set("long", 5))
    late = benchmarks.create_benchmark(env.db, env.queue, env.bob, SPEC, "late")
    with env.db.write() as s:
        first = benchmarks.next_up(s)
        assert s.get(Benchmark, first).name == "long-000"  # nobody ran yet: oldest first
        row = s.get(Benchmark, first)
        row.phase, row.started_at = BenchmarkPhase.SUCCEEDED, utcnow()
    with env.db.write() as s:
        assert benchmarks.next_up(s) == late.id  # bob's turn, before alice's 4 others
        row = s.get(Benchmark, late.id)
        assert benchmarks.my_turn(s, row)
        row.phase, row.started_at = BenchmarkPhase.RUNNING, utcnow() + timedelta(seconds=1)
    with env.db.write() as s:
        nxt = s.get(Benchmark, benchmarks.next_up(s))
        assert nxt.name == "long-001"
        assert not benchmarks.my_turn(s, nxt)  # bob's run still measures


def test_a_tenancy_cannot_queue_without_limit(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(benchmarks, "MAX_UNFINISHED", 6)
    benchmarks.create_set(env.db, env.queue, env.alice, _set("five", 5))
    benchmarks.create_benchmark(env.db, env.queue, env.alice, SPEC, "sixth")
    try:
        benchmarks.create_benchmark(env.db, env.queue, env.alice, SPEC, "seventh")
    except benchmarks.Conflict as e:
        assert "at most 6 may wait" in e.message
    else:
        raise AssertionError("a seventh run was accepted")
    benchmarks.create_benchmark(env.db, env.queue, env.bob, SPEC, "bobs")  # others unaffected
