"""Agent programs run as servers run them: ``ecliptic agent ...`` subprocesses on loopback."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection, connect

from ecliptic.agent import xterm
from tests.ports import free_port
from tests.prerequisites import require
from tests.waiting import wait_until


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Agent:
    """A running ``ecliptic agent`` command."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(
                    f"the agent ignored SIGTERM; log:\n{self.log.read_text()}"
                ) from None


def start_agent(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Agent:
    """Run ``ecliptic agent <args> --port P`` and wait until it listens."""
    port = free_port()
    log = tmp_path / f"agent-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ecliptic.cli.main", "agent", *args, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
    agent = Agent(proc, port, log)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the agent exited ({proc.returncode}):\n{log.read_text()}")
        return _listening(port)

    try:
        wait_until(up, 20, f"ecliptic agent {args[0]} to listen on {port}")
    except BaseException:
        agent.stop()
        raise
    return agent


@pytest.fixture
def start_terminal(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    """Start ``ecliptic agent terminal`` with extra arguments; every one stops at the end."""
    require(
        (xterm.DEFAULT_DIR / "xterm.js").is_file()
        and (xterm.DEFAULT_DIR / "addons/fit/fit.js").is_file(),
        f"{xterm.PACKAGES}; scripts/setup-system.sh run installs them",
    )
    started: list[Agent] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Agent:
        agent = start_agent(tmp_path, "terminal", *args, env=env)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


@pytest.fixture
def terminal(start_terminal: Callable[..., Agent]) -> Agent:
    """A terminal server with the default settings."""
    return start_terminal()


def open_shell(agent: Agent, **kwargs: object) -> ClientConnection:
    """A WebSocket to the terminal, as a client that is not a browser (no Origin)."""
    return connect(f"ws://127.0.0.1:{agent.port}/ws", proxy=None, open_timeout=10, **kwargs)  # type: ignore[arg-type]


def read_until(ws: ClientConnection, pattern: str, timeout: float = 10) -> re.Match[str]:
    """Read the shell's output until ``pattern`` matches it; fail with what came otherwise."""
    seen = b""
    deadline = time.monotonic() + timeout
    while True:
        found = re.search(pattern, seen.decode(errors="replace"))
        if found:
            return found
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {pattern!r} in the terminal's output: {seen!r}")
        try:
            message = ws.recv(timeout=left)
        except TimeoutError:
            continue
        assert isinstance(message, bytes), f"the server sent a text frame: {message!r}"
        seen += message


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] != "Z"
