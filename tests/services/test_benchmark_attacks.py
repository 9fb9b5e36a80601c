"""What an attack on benchmarks found in the queue and the names, each tried again: a
thousand waiting runs hammering the placement lock, a tenancy jumping the queue by
deleting its finished runs or by runs that never get to measure, names too long for what a
run makes (PostgreSQL refuses them, and the run would be retried for ever at the head of
everyone's queue), a run and a set of the same name. The attacks on specs are in
``tests/perf/test_spec_attacks.py``, those through a real ``ecliptic serve`` in
``tests/platforms/test_benchmark_attacks.py``."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from ecliptic.errors import EclipticError
from ecliptic.perf.spec import BenchmarkSetSpec, BenchmarkSpec
from ecliptic.phases import BenchmarkPhase
from ecliptic.reconcile import benchmarks as runner
from ecliptic.reconcile.base import Context
from ecliptic.services import benchmarks
from ecliptic.store.models import Benchmark, Network, SecurityGroup, Server, Subnet
from ecliptic.store.transitions import move
from tests.services.conftest import Env, MemoryBackend
from tests.services.test_benchmark_queue import SPEC, _set, take_turn


def _ctx(env: Env) -> Context:
    return Context(env.db, MemoryBackend(), env.queue, env.booking)  # type: ignore[arg-type]


def test_waiting_runs_do_not_each_look_every_two_seconds(env: Env) -> None:
    # With a thousand runs waiting behind one that measures, every waiting run took the
    # placement lock every 2 s: creating a network went from 0.1 s to 8.6 s for every
    # tenancy (measured on `ecliptic serve` with 2 workers). Now only the run that is next
    # up looks soon; the others are woken when their turn comes.
    blocker = benchmarks.create_benchmark(env.db, env.queue, env.bob, SPEC, "blocker")
    with env.db.write() as s:
        take_turn(s, s.get(Benchmark, blocker.id), end=False)
    benchmarks.create_set(env.db, env.queue, env.alice, _set("flood", 30))
    with env.db.read() as s:
        nxt = benchmarks.next_up(s)
        waiting = list(s.scalars(select(Benchmark.id).where(Benchmark.phase == "PENDING")))
    assert nxt is not None and len(waiting) == 30
    ctx = _ctx(env)
    soon = []
    for w in waiting:
        out = runner.reconcile_benchmark(ctx, w)
        assert out.requeue_after is not None  # still looked at, as a safety net
        if out.requeue_after <= 10:
            soon.append(w)
    assert soon == [nxt]
    with env.db.read() as s:
        assert s.get(Benchmark, nxt).phase == BenchmarkPhase.PENDING


def test_deleting_finished_runs_does_not_jump_the_queue(env: Env) -> None:
    benchmarks.create_set(env.db, env.queue, env.alice, _set("long", 5))
    late = benchmarks.create_benchmark(env.db, env.queue, env.bob, SPEC, "late")
    with env.db.write() as s:
        take_turn(s, s.get(Benchmark, benchmarks.next_up(s)))
    # Alice removes the run that measured: before the fix her tenancy looked as if it had
    # never measured, and went before bob again (and again, for all of her set).
    assert benchmarks.delete_benchmark(env.db, env.queue, env.alice, "long-000") is None
    with env.db.read() as s:
        assert benchmarks.next_up(s) == late.id


def test_a_run_that_never_measured_still_took_its_turn(env: Env) -> None:
    benchmarks.create_set(env.db, env.queue, env.alice, _set("stuck", 5))
    late = benchmarks.create_benchmark(env.db, env.queue, env.bob, SPEC, "late")
    with env.db.write() as s:
        row = s.get(Benchmark, benchmarks.next_up(s))
        # Its servers never came up (a platform's server stopped, say): it held the queue
        # while provisioning, then failed, and never had a start time.
        move(s, row, BenchmarkPhase.PROVISIONING, "servers placed")
        move(s, row, BenchmarkPhase.CLEANING, "a server failed")
        move(s, row, BenchmarkPhase.FAILED, "a server failed")
    with env.db.read() as s:
        assert benchmarks.next_up(s) == late.id


def _places(env: Env, row: Benchmark) -> None:
    """Place ``row`` as the reconciler would, and check what it made is named validly."""
    assert benchmarks.provision(env.booking, env.queue, env.alice, row.id)
    with env.db.read() as s:
        names = [
            n for m in (Server, Network, Subnet, SecurityGroup) for n in s.scalars(select(m.name))
        ]
    assert names and all(len(n) <= 63 for n in names), names


@pytest.mark.parametrize("length", [52, 53, 63])
def test_a_runs_name_leaves_room_for_what_it_makes(env: Env, length: int) -> None:
    # A 63-character run made '<run>-net-subnet' (74 characters): PostgreSQL refused the
    # row, the reconciler retried for ever, and the run stayed at the head of the queue of
    # every tenancy. A name is refused at once, or everything it makes fits.
    name = "r" * length
    try:
        row = benchmarks.create_benchmark(env.db, env.queue, env.alice, SPEC, name)
    except EclipticError as e:
        assert e.status == 422 and "at most 52 characters" in e.message
        return
    _places(env, row)


@pytest.mark.parametrize("length", [48, 49, 50])
def test_a_sets_name_leaves_room_for_what_its_runs_make(env: Env, length: int) -> None:
    body = BenchmarkSetSpec.model_validate({"name": "s" * length, "template": {"kind": "iperf3"}})
    try:
        set_row = benchmarks.create_set(env.db, env.queue, env.alice, body)
    except EclipticError as e:
        assert e.status == 422 and "at most 48 characters" in e.message
        return
    rows = benchmarks.list_benchmarks(env.db, env.alice, set_ref=set_row.name)
    _places(env, rows[0])


def test_a_run_and_a_set_never_share_a_name(env: Env) -> None:
    # results, plots and compare take a run or a set: '/benchmarks/dup/results' answered
    # with the set's figures when a set was named like the run.
    benchmarks.create_benchmark(env.db, env.queue, env.alice, SPEC, "dup")
    body = BenchmarkSetSpec.model_validate({"name": "dup", "template": {"kind": "iperf3"}})
    with pytest.raises(EclipticError) as exc:
        benchmarks.create_set(env.db, env.queue, env.alice, body)
    assert exc.value.status == 409 and "benchmark run is named 'dup'" in exc.value.message
    body = BenchmarkSetSpec.model_validate({"name": "dup2", "template": {"kind": "iperf3"}})
    benchmarks.create_set(env.db, env.queue, env.alice, body)
    with pytest.raises(EclipticError) as exc:
        benchmarks.create_benchmark(
            env.db, env.queue, env.alice, BenchmarkSpec.model_validate({"kind": "fio"}), "dup2"
        )
    assert exc.value.status == 409 and "set is named 'dup2'" in exc.value.message
