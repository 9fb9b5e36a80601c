"""The work queue on SQLite and PostgreSQL: dedupe, claims, retries, crash recovery."""

from __future__ import annotations

import random
import threading
from datetime import timedelta

import pytest

from ecliptic.clock import ManualClock
from ecliptic.store.db import Database
from ecliptic.store.migrate import upgrade
from ecliptic.store.workqueue import Backoff, WorkQueue


@pytest.fixture
def queue(database_url: str) -> WorkQueue:
    db = Database(database_url)
    upgrade(db)
    return WorkQueue(db, ManualClock(), rng=random.Random(7))


def _enqueue(q: WorkQueue, kind: str, oid: str, delay: float = 0.0) -> None:
    with q.db.write() as s:
        q.enqueue(s, kind, oid, delay=delay)


def test_enqueue_twice_keeps_one_item(queue: WorkQueue) -> None:
    _enqueue(queue, "server", "a")
    _enqueue(queue, "server", "a")
    _enqueue(queue, "network", "a")
    items = queue.pending()
    assert sorted((i.kind, i.object_id) for i in items) == [("network", "a"), ("server", "a")]


def test_later_enqueue_never_postpones_an_earlier_due_time(queue: WorkQueue) -> None:
    _enqueue(queue, "server", "a", delay=0)
    _enqueue(queue, "server", "a", delay=60)
    assert queue.claim() is not None


def test_delayed_item_waits_for_the_clock(queue: WorkQueue) -> None:
    clock = queue.clock
    assert isinstance(clock, ManualClock)
    _enqueue(queue, "server", "a", delay=30)
    assert queue.claim() is None
    assert queue.next_due_in() == pytest.approx(30)
    clock.advance(timedelta(seconds=31))
    claim = queue.claim()
    assert claim is not None and claim.object_id == "a"


def test_claimed_item_is_not_claimed_twice(queue: WorkQueue) -> None:
    _enqueue(queue, "server", "a")
    assert queue.claim() is not None
    assert queue.claim() is None


def test_complete_removes_item(queue: WorkQueue) -> None:
    _enqueue(queue, "server", "a")
    claim = queue.claim()
    assert claim is not None
    queue.complete(claim)
    assert queue.pending() == []


def test_enqueue_while_working_is_not_lost(queue: WorkQueue) -> None:
    _enqueue(queue, "server", "a")
    claim = queue.claim()
    assert claim is not None
    _enqueue(queue, "server", "a")  # the spec changed while the worker was busy
    queue.complete(claim)
    again = queue.claim()
    assert again is not None and again.object_id == "a"


def test_failure_backs_off_with_jitter_and_counts_attempts(queue: WorkQueue) -> None:
    clock = queue.clock
    assert isinstance(clock, ManualClock)
    _enqueue(queue, "server", "a")
    delays = []
    for _ in range(4):
        claim = queue.claim()
        assert claim is not None
        delays.append(queue.fail(claim, "boom"))
        assert queue.claim() is None  # not due yet
        clock.advance(timedelta(seconds=delays[-1] + 0.001))
    for n, d in enumerate(delays, start=1):
        raw = min(60.0, 0.5 * 2 ** (n - 1))
        assert raw * 0.5 <= d <= raw
    item = queue.pending()[0]
    assert item.attempts == 4 and item.last_error == "boom"


def test_requeue_after_releases_and_delays(queue: WorkQueue) -> None:
    _enqueue(queue, "server", "a")
    claim = queue.claim()
    assert claim is not None
    queue.complete(claim, requeue_after=10)
    assert queue.claim() is None
    assert queue.next_due_in() == pytest.approx(10)


def test_claims_of_a_dead_process_are_released(queue: WorkQueue) -> None:
    _enqueue(queue, "server", "a")
    dead = WorkQueue(queue.db, queue.clock)
    # A process id that cannot exist: the kernel's pid_max is far below it.
    host = dead.identity.split(":")[0]
    dead.identity = f"{host}:999999999:deadbeef"
    assert dead.claim() is not None
    assert queue.claim() is None
    assert queue.release_dead_claims() == 1
    assert queue.claim() is not None


def test_expired_claims_are_claimable(queue: WorkQueue) -> None:
    clock = queue.clock
    assert isinstance(clock, ManualClock)
    _enqueue(queue, "server", "a")
    assert queue.claim() is not None
    clock.advance(queue.claim_for + timedelta(seconds=1))
    assert queue.claim() is not None


def test_concurrent_claimers_never_share_an_item(queue: WorkQueue) -> None:
    with queue.db.write() as s:
        for i in range(40):
            queue.enqueue(s, "server", f"s{i}")
    got: list[str] = []
    lock = threading.Lock()

    def claimer() -> None:
        q = WorkQueue(queue.db, queue.clock)
        while (c := q.claim()) is not None:
            with lock:
                got.append(c.object_id)

    threads = [threading.Thread(target=claimer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == sorted(f"s{i}" for i in range(40))


def test_backoff_is_capped() -> None:
    b = Backoff(base_s=1, cap_s=8)
    rng = random.Random(1)
    assert all(b.delay(n, rng) <= 8 for n in range(1, 30))
