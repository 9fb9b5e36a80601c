"""The work queue: one pending item per object, claimed by workers, retried with backoff.

Items live in the ``work_item`` table, so work survives a crash and several worker
processes can share it. Enqueueing an object that already has an item only bumps the
item's ``seq`` (deduplication); a worker that finishes an item whose ``seq`` moved on
meanwhile leaves it queued, so no request is ever lost. Claims carry a deadline and
the claimer's identity; claims of a dead process on this machine are released at
once, others when their deadline passes.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, case, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from ecliptic.clock import Clock, SystemClock
from ecliptic.procs import pid_exists
from ecliptic.store.db import Database
from ecliptic.store.models import WorkItem


@dataclass(frozen=True)
class Claim:
    """A work item a worker holds."""

    id: int
    """Row id."""
    kind: str
    """Object kind (``server``, ``network``)."""
    object_id: str
    """Object to reconcile."""
    seq: int
    """Sequence number when claimed; a later enqueue changes it."""
    attempts: int
    """Failed attempts so far."""


@dataclass(frozen=True)
class Backoff:
    """Jittered exponential backoff for retries."""

    base_s: float = 0.5
    """Delay after the first failure."""
    cap_s: float = 60.0
    """Longest delay."""

    def delay(self, attempts: int, rng: random.Random) -> float:
        """Delay before attempt number ``attempts + 1``: exponential, capped, jittered 50-100%."""
        raw = min(self.cap_s, self.base_s * (2 ** max(0, attempts - 1)))
        return raw * (0.5 + rng.random() / 2)


def worker_identity() -> str:
    """``host:pid:random``: who holds a claim, precise enough to tell a dead local process."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


class WorkQueue:
    """Enqueue, claim, complete and fail work items."""

    def __init__(
        self,
        db: Database,
        clock: Clock | None = None,
        *,
        claim_for: timedelta = timedelta(seconds=120),
        backoff: Backoff | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.db = db
        self.clock = clock or SystemClock()
        self.claim_for = claim_for
        self.backoff = backoff or Backoff()
        self.rng = rng or random.Random()
        self.identity = worker_identity()
        self._wake = threading.Condition()
        self._generation = 0

    # -- producers -------------------------------------------------------------------

    def enqueue(self, session: Session, kind: str, object_id: str, *, delay: float = 0.0) -> None:
        """Ask for ``object_id`` to be reconciled (once, however often asked), after ``delay``.

        Runs inside the caller's transaction; workers of this process are woken when it
        commits.
        """
        due = self.clock.now() + timedelta(seconds=delay)
        values = {"kind": kind, "object_id": object_id, "due_at": due, "seq": 1, "attempts": 0}
        dialect = session.get_bind().dialect.name
        ins = postgresql.insert(WorkItem) if dialect == "postgresql" else sqlite.insert(WorkItem)
        stmt = ins.values(**values)
        earlier = WorkItem.__table__.c.due_at
        new_due = stmt.excluded.due_at
        stmt = stmt.on_conflict_do_update(
            index_elements=["kind", "object_id"],
            set_={
                "seq": WorkItem.__table__.c.seq + 1,
                "due_at": case((new_due < earlier, new_due), else_=earlier),
            },
        )
        session.execute(stmt)
        session.info.setdefault("after_commit", []).append(self.notify)

    def notify(self) -> None:
        """Wake the workers of this process: something may be due."""
        with self._wake:
            self._generation += 1
            self._wake.notify_all()

    def wait(self, timeout: float) -> None:
        """Sleep until notified or ``timeout`` seconds pass."""
        with self._wake:
            start = self._generation
            self._wake.wait_for(lambda: self._generation != start, timeout=timeout)

    # -- consumers -------------------------------------------------------------------

    def claim(self, kinds: Iterable[str] | None = None) -> Claim | None:
        """Take the most overdue unclaimed item, or None when nothing is due."""
        now = self.clock.now()
        with self.db.write() as session:
            query = (
                select(WorkItem)
                .where(
                    WorkItem.due_at <= now,
                    or_(WorkItem.claimed_by.is_(None), WorkItem.claimed_until < now),
                )
                .order_by(WorkItem.due_at, WorkItem.id)
                .limit(1)
            )
            if kinds is not None:
                query = query.where(WorkItem.kind.in_(list(kinds)))
            if not self.db.is_sqlite:
                query = query.with_for_update(skip_locked=True)
            item = session.scalars(query).first()
            if item is None:
                return None
            item.claimed_by = self.identity
            item.claimed_until = now + self.claim_for
            return Claim(item.id, item.kind, item.object_id, item.seq, item.attempts)

    def complete(self, claim: Claim, *, requeue_after: float | None = None) -> None:
        """Done with ``claim``; keep the item if it was enqueued again meanwhile."""
        with self.db.write() as session:
            if requeue_after is not None:
                self._release(session, claim, self.clock.now() + timedelta(seconds=requeue_after))
                return
            gone = session.execute(
                delete(WorkItem).where(WorkItem.id == claim.id, WorkItem.seq == claim.seq)
            ).rowcount  # type: ignore[attr-defined]
            if not gone:
                session.execute(
                    update(WorkItem)
                    .where(WorkItem.id == claim.id)
                    .values(claimed_by=None, claimed_until=None, attempts=0, last_error="")
                )
        if not gone:
            self.notify()

    def fail(self, claim: Claim, error: str) -> float:
        """Record a failed attempt and schedule a retry with backoff; returns the delay."""
        delay = self.backoff.delay(claim.attempts + 1, self.rng)
        with self.db.write() as session:
            session.execute(
                update(WorkItem)
                .where(WorkItem.id == claim.id)
                .values(
                    claimed_by=None,
                    claimed_until=None,
                    attempts=WorkItem.attempts + 1,
                    last_error=error[:4000],
                    due_at=self.clock.now() + timedelta(seconds=delay),
                )
            )
        return delay

    def _release(self, session: Session, claim: Claim, due: datetime) -> None:
        session.execute(
            update(WorkItem)
            .where(WorkItem.id == claim.id)
            .values(claimed_by=None, claimed_until=None, attempts=0, last_error="", due_at=due)
        )

    def release_dead_claims(self) -> int:
        """Release claims held by processes of this machine that no longer run."""
        host = socket.gethostname()
        released = 0
        with self.db.write() as session:
            rows = session.execute(
                select(WorkItem.id, WorkItem.claimed_by).where(
                    WorkItem.claimed_by.like(f"{host}:%")
                )
            ).all()
            dead = [i for i, who in rows if who and who != self.identity and not _alive(who)]
            if dead:
                released = session.execute(
                    update(WorkItem)
                    .where(WorkItem.id.in_(dead))
                    .values(claimed_by=None, claimed_until=None)
                ).rowcount  # type: ignore[attr-defined]
        return int(released)

    def next_due_in(self) -> float | None:
        """Seconds until the next unclaimed item is due (0 if overdue), None if none."""
        now = self.clock.now()
        with self.db.read() as session:
            due = session.scalar(
                select(WorkItem.due_at)
                .where(or_(WorkItem.claimed_by.is_(None), WorkItem.claimed_until < now))
                .order_by(WorkItem.due_at)
                .limit(1)
            )
        if due is None:
            return None
        return max(0.0, (due - now).total_seconds())

    def pending(self) -> list[WorkItem]:
        """Every queued item, for status pages and tests."""
        with self.db.read() as session:
            return list(session.scalars(select(WorkItem).order_by(WorkItem.id)))

    def has_pending(self, kind: str, object_ids: Iterable[str]) -> set[str]:
        """Which of ``object_ids`` still have an item of ``kind`` queued."""
        ids = list(object_ids)
        with self.db.read() as session:
            return set(
                session.scalars(
                    select(WorkItem.object_id).where(
                        and_(WorkItem.kind == kind, WorkItem.object_id.in_(ids))
                    )
                )
            )


def _alive(identity: str) -> bool:
    try:
        pid = int(identity.split(":")[1])
    except (IndexError, ValueError):
        return True
    return pid == os.getpid() or pid_exists(pid)
