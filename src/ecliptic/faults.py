"""Crash points for crash-safety tests: die at a named step, as a power cut would.

Set ``ECLIPTIC_CRASH_AT=<point>[,<point>...]`` and the process SIGKILLs itself the
first time it reaches one of those points. Unset (always, outside tests), a point
costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal

_ARMED: frozenset[str] = frozenset(
    p.strip() for p in os.environ.get("ECLIPTIC_CRASH_AT", "").split(",") if p.strip()
)


def point(name: str) -> None:
    """Die here, with SIGKILL, when the crash point ``name`` is armed."""
    if name in _ARMED:
        os.kill(os.getpid(), signal.SIGKILL)
