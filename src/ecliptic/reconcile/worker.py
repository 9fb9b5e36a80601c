"""Worker threads: claim work items, run the reconciler of their kind, complete or retry."""

from __future__ import annotations

import logging
import threading
import time

from ecliptic.backends.base import BackendError
from ecliptic.reconcile import benchmarks as _benchmarks  # noqa: F401  (registers)
from ecliptic.reconcile import firewall as _firewall  # noqa: F401  (registers)
from ecliptic.reconcile import hosts as _hosts  # noqa: F401  (registers)
from ecliptic.reconcile import leases as _leases  # noqa: F401  (registers)
from ecliptic.reconcile import metering as _metering  # noqa: F401  (registers)
from ecliptic.reconcile import networks as _networks  # noqa: F401  (registers)
from ecliptic.reconcile import platforms as _platforms  # noqa: F401  (registers)
from ecliptic.reconcile import servers as _servers  # noqa: F401  (registers)
from ecliptic.reconcile.base import RECONCILERS, Context
from ecliptic.store.workqueue import Claim

log = logging.getLogger("ecliptic.worker")
IDLE_POLL_S = 1.0


class Workers:
    """A pool of reconciler threads sharing one work queue."""

    def __init__(self, ctx: Context, count: int = 2) -> None:
        self.ctx = ctx
        self.count = count
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the threads."""
        for i in range(self.count):
            t = threading.Thread(target=self._loop, name=f"ecliptic-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the threads to finish their current item and wait for them."""
        self._stop.set()
        self.ctx.queue.notify()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._threads.clear()

    def run_once(self) -> bool:
        """Claim and process one due item; False when nothing was due (for tests)."""
        claim = self.ctx.queue.claim(RECONCILERS.keys())
        if claim is None:
            return False
        self.process(claim)
        return True

    def drain(self, limit: int = 10_000) -> int:
        """Process items until none is due; returns how many were processed."""
        done = 0
        while done < limit and self.run_once():
            done += 1
        return done

    def process(self, claim: Claim) -> None:
        """Run the reconciler for one claimed item and settle the claim."""
        fn = RECONCILERS[claim.kind]
        try:
            outcome = fn(self.ctx, claim.object_id)
        except Exception as exc:  # every failure is retried; the queue backs off
            if not isinstance(exc, BackendError):
                log.exception("reconcile %s %s failed", claim.kind, claim.object_id)
            else:
                log.warning("reconcile %s %s: %s", claim.kind, claim.object_id, exc)
            if claim.kind == "server":
                from ecliptic.reconcile.servers import mark_failing

                try:
                    mark_failing(self.ctx, claim.object_id, claim.attempts, exc)
                except Exception:
                    log.exception("could not record failure of server %s", claim.object_id)
            self.ctx.queue.fail(claim, f"{type(exc).__name__}: {exc}")
            return
        self.ctx.queue.complete(claim, requeue_after=outcome.requeue_after)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                if self.run_once():
                    continue
                wait = self.ctx.queue.next_due_in()
                self.ctx.queue.wait(IDLE_POLL_S if wait is None else min(wait, IDLE_POLL_S))
            except Exception:
                log.exception("worker loop error")
                self._stop.wait(1.0)
