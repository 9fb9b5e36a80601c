"""A real Chromium using the terminal page as a person would: type a command, read it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import (  # after tests.chromium: it names what is missing
    Browser,
    Page,
    expect,
)

from tests.agent.conftest import Agent
from tests.chromium import chromium

# The canvas has no text to read; the page exposes its xterm.js Terminal, whose buffer is
# what the person sees.
SCREEN = """() => {
  const t = window.ecliptic.terminal;
  t.selectAll();
  const text = t.getSelection();
  t.clearSelection();
  return text;
}"""


@pytest.fixture
def browser() -> Iterator[Browser]:
    with chromium() as b:
        yield b


def _screen(page: Page) -> str:
    return str(page.evaluate(SCREEN))


def test_typing_a_command_shows_its_output(terminal: Agent, browser: Browser) -> None:
    context = browser.new_context()
    context.set_default_timeout(15_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(terminal.url + "/")
    expect(page.locator("#status")).to_have_text("Connected")
    page.locator("#terminal").click()
    page.keyboard.type("echo $((6*7)) cols=$(tput cols)\n")
    page.wait_for_function(f"() => ({SCREEN})().includes('\\n42 cols=')")
    # The page fits the terminal to its 1280-pixel window (wider than xterm's 80 columns)
    # and tells the server: tput sees the same size.
    cols = page.evaluate("window.ecliptic.terminal.cols")
    assert cols > 80
    assert f"42 cols={cols}" in _screen(page)
    page.keyboard.type("exit 0\n")
    expect(page.locator("#status")).to_contain_text("shell exited (status 0)")
    assert errors == []
    context.close()
