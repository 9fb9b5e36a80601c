"""Wait for a condition by polling it, never by sleeping a fixed time and hoping.

A test that sleeps ``n`` seconds is slow when the machine is fast and flaky when it is
slow; ``wait_until`` returns as soon as the condition holds and fails, saying what it
waited for, only when it has not held for ``timeout`` seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T], timeout: float, what: str = "", interval: float = 0.02
) -> T:
    """Poll ``predicate`` every ``interval`` seconds; return its first truthy value, or fail
    the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)
