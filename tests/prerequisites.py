"""Tests that cannot pass by skipping: under ``make test`` a missing prerequisite fails.

Outside ``make test`` a test whose prerequisite is missing here (root, nginx, chromium, a
built ``ecliptic-tunneld``...) skips, so a developer can run a corner of the suite anywhere.
``make test`` (and so CI) sets ``ECLIPTIC_TEST_STRICT=1``: then every such skip is a failure
that names what is missing, and only tests marked ``@pytest.mark.hardware("gpu")`` (hardware
no machine of ours has: GPUs, RDMA) may skip; the summary counts them.

``tests/conftest.py`` imports the hooks below, so they apply to the whole suite.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Generator
from typing import Any

import pytest

STRICT_ENV = "ECLIPTIC_TEST_STRICT"


def strict() -> bool:
    """True under ``make test``: missing prerequisites fail instead of skipping."""
    return os.environ.get(STRICT_ENV, "") == "1"


def require(ok: bool, what: str) -> None:
    """Go on when ``ok``; otherwise skip (or, under ``make test``, fail) naming ``what``."""
    if ok:
        return
    if strict():
        pytest.fail(f"missing prerequisite: {what}", pytrace=False)
    pytest.skip(f"missing prerequisite: {what}")


def require_module(ok: bool, what: str) -> None:
    """``require`` at a module's top: the whole module skips (or, under ``make test``, fails)."""
    if not ok:
        pytest.skip(f"missing prerequisite: {what}", allow_module_level=True)


def needs(ok: bool, what: str) -> pytest.MarkDecorator:
    """A mark for tests that need ``what``: they skip without it (fail under ``make test``)."""
    return pytest.mark.skipif(not ok, reason=f"missing prerequisite: {what}")


def _reason(longrepr: Any) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        reason = str(longrepr[2])
    else:
        reason = str(longrepr)
    return reason.removeprefix("Skipped: ").removeprefix("missing prerequisite: ")


def _hardware(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("hardware")
    if marker is None:
        return None
    return str(marker.args[0]) if marker.args else "hardware"


def _refuse(reason: str) -> str:
    return (
        f"skipped under {STRICT_ENV}=1 (make test), where only tests marked "
        f"@pytest.mark.hardware may skip; missing prerequisite: {reason}"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Under ``make test``, a test's skip is a failure unless it is marked hardware."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    hardware = _hardware(item)
    if hardware is not None:
        report.user_properties.append(("hardware", hardware))
        return
    if strict():
        report.outcome = "failed"
        report.longrepr = _refuse(_reason(report.longrepr))


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    """Under ``make test``, a whole module that skips (``allow_module_level``) fails too."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.skipped and strict():
        report.outcome = "failed"
        report.longrepr = _refuse(_reason(report.longrepr))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say how many tests skipped for hardware this machine lacks, and for what else."""
    skipped = terminalreporter.stats.get("skipped", [])
    if not skipped:
        return
    hardware = Counter(
        dict(r.user_properties).get("hardware")
        for r in skipped
        if dict(getattr(r, "user_properties", [])).get("hardware")
    )
    other = len(skipped) - sum(hardware.values())
    write = terminalreporter.write_line
    if hardware:
        kinds = ", ".join(f"{kind}: {n}" for kind, n in sorted(hardware.items()))
        write(f"skipped for hardware this machine does not have ({kinds})")
    if other:
        write(
            f"{other} skipped for a missing prerequisite: under make test "
            f"({STRICT_ENV}=1) these fail"
        )
