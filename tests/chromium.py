"""Debian's headless Chromium driven by Playwright (its bundled browsers are not used): a
missing one fails the run under ``make test``, naming what to install."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from tests.prerequisites import require_module

if TYPE_CHECKING:
    from playwright.sync_api import Browser

CHROMIUM = Path("/usr/bin/chromium")
require_module(CHROMIUM.exists(), "Debian's chromium (scripts/setup-system.sh test installs it)")
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    require_module(False, "playwright (pip install -e '.[dev]'); its bundled browsers are not used")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    """A headless Chromium for one test (or module), closed after."""
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()
