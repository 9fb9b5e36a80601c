"""Benchmark runs measure one at a time; tenancies take turns so that one tenancy's long
set cannot hold another's run back for more than one run."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from ecliptic.perf.spec import BenchmarkSetSpec, BenchmarkSpec
from ecliptic.phases import BenchmarkPhase
from ecliptic.services import benchmarks
from ecliptic.store.models import Benchmark
from ecliptic.store.transitions import move
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


def take_turn(s: Session, row: Benchmark, *, end: bool = True) -> None:
    """``row`` takes its turn as the reconciler moves it (the moves record events), and ends
    unless ``end`` is False."""
    move(s, row, BenchmarkPhase.PROVISIONING, "servers placed")
    move(s, row, BenchmarkPhase.RUNNING, "measuring")
    row.started_at = utcnow()
    if end:
        move(s, row, BenchmarkPhase.CLEANING, "done")
        move(s, row, BenchmarkPhase.SUCCEEDED, "done")


def test_tenancies_take_turns_and_runs_go_oldest_first(env: Env) -> None:
    benchmarks.create_set(env.db, env.queue, env.alice, _set("long", 5))
    late = benchmarks.create_benchmark(env.db, env.queue, env.bob, SPEC, "late")
    with env.db.write() as s:
        first = benchmarks.next_up(s)
        assert s.get(Benchmark, first).name == "long-000"  # nobody ran yet: oldest first
        take_turn(s, s.get(Benchmark, first))
    with env.db.write() as s:
        assert benchmarks.next_up(s) == late.id  # bob's turn, before alice's 4 others
        row = s.get(Benchmark, late.id)
        assert benchmarks.my_turn(s, row)
        take_turn(s, row, end=False)
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
