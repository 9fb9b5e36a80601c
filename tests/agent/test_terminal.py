"""The browser terminal's server, driven by a WebSocket client as the page drives it."""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ecliptic.agent.terminal import same_origin
from tests.agent.conftest import Agent, alive, open_shell, read_until
from tests.waiting import wait_until


def _closed(ws: object) -> tuple[int, str]:
    """The code and reason the server closed ``ws`` with (waiting for its close frame)."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)  # type: ignore[attr-defined]
    rcvd = closed.value.rcvd
    assert rcvd is not None, "the connection dropped without a close frame"
    return rcvd.code, rcvd.reason


def test_a_command_runs_in_the_shell(terminal: Agent) -> None:
    with open_shell(terminal) as ws:
        ws.send(b"echo $((6*7)) $TERM\n")
        read_until(ws, r"[\r\n]42 xterm-256color\r\n")


def test_the_shell_does_not_inherit_the_agents_python_settings(
    start_terminal: Callable[..., Agent],
) -> None:
    # /opt/ecliptic/bin/ecliptic sets these for Ecliptic's Python, not for the person's.
    agent = start_terminal(
        env={
            "PYTHONPATH": f"{os.environ.get('PYTHONPATH', '')}:/opt/ecliptic/site-packages",
            "PYTHONNOUSERSITE": "1",
            "LD_LIBRARY_PATH": "/opt/ecliptic/python/lib",
            "ECL_TEST_KEPT": "kept",
        }
    )
    with open_shell(agent) as ws:
        ws.send(
            b'echo "[${PYTHONPATH-unset} ${PYTHONNOUSERSITE-unset} '
            b'${LD_LIBRARY_PATH-unset} $ECL_TEST_KEPT]"\n'
        )
        read_until(ws, r"\[unset unset unset kept\]")


def test_resize_sets_the_terminal_size(terminal: Agent) -> None:
    with open_shell(terminal) as ws:
        ws.send(json.dumps({"resize": [100, 40]}))
        ws.send(b"stty size\n")
        read_until(ws, r"[\r\n]40 100\r\n")
        ws.send(json.dumps({"resize": [132, 50]}))
        ws.send(b"stty size\n")
        read_until(ws, r"[\r\n]50 132\r\n")


def test_a_text_frame_that_is_not_a_control_message_closes_the_socket(terminal: Agent) -> None:
    with open_shell(terminal) as ws:
        ws.send("ls\n")
        code, reason = _closed(ws)
    assert code == 1008
    assert "resize" in reason


def test_closing_the_socket_kills_the_shell_and_its_jobs(terminal: Agent) -> None:
    with open_shell(terminal) as ws:
        # A background job with SIGHUP ignored: only the SIGKILL after the grace ends it.
        ws.send(b"trap '' HUP; sleep 1000 & echo shell=$$ job=$!\n")
        found = read_until(ws, r"shell=(\d+) job=(\d+)")
        shell, job = int(found[1]), int(found[2])
        assert alive(shell) and alive(job)
    wait_until(lambda: not Path(f"/proc/{shell}").exists(), 10, f"shell {shell} to be reaped")
    wait_until(lambda: not alive(job), 10, f"background job {job} to be killed")


def test_the_shell_exiting_closes_the_socket_with_its_status(terminal: Agent) -> None:
    with open_shell(terminal) as ws:
        ws.send(b"echo shell=$$; exit 3\n")
        shell = int(read_until(ws, r"shell=(\d+)")[1])
        code, reason = _closed(ws)
    assert (code, reason) == (1000, "shell exited (status 3)")
    wait_until(lambda: not Path(f"/proc/{shell}").exists(), 10, f"shell {shell} to be reaped")


def test_sessions_have_their_own_shells(terminal: Agent) -> None:
    with open_shell(terminal) as a, open_shell(terminal) as b:
        a.send(b"echo tty=$(tty) pid=$$\n")
        b.send(b"echo tty=$(tty) pid=$$\n")
        first = read_until(a, r"tty=(\S+) pid=(\d+)")
        second = read_until(b, r"tty=(\S+) pid=(\d+)")
    assert first[1] != second[1] and first[2] != second[2]


def test_sessions_beyond_the_cap_are_refused_with_a_reason(
    start_terminal: Callable[..., Agent],
) -> None:
    agent = start_terminal("--max-sessions", "2")
    with open_shell(agent) as a, open_shell(agent) as b:
        for ws in (a, b):
            ws.send(b"echo ready\n")
            read_until(ws, "ready")
        with open_shell(agent) as third:
            code, reason = _closed(third)
        assert code == 1013
        assert "too many terminal sessions (at most 2)" in reason
    # The two have closed: a new one gets a shell.
    with open_shell(agent) as again:
        again.send(b"echo $((6*7))\n")
        read_until(again, r"[\r\n]42\r\n")


def test_a_websocket_from_another_site_is_refused(terminal: Agent) -> None:
    with pytest.raises(InvalidStatus) as refused:
        open_shell(terminal, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus) as other_port:
        open_shell(terminal, origin="http://127.0.0.1:1")
    assert other_port.value.response.status_code == 403
    with open_shell(terminal, origin=f"http://127.0.0.1:{terminal.port}") as ws:
        ws.send(b"echo same-origin-ok\n")
        read_until(ws, "same-origin-ok")


@pytest.mark.parametrize(
    ("origin", "host", "ok"),
    [
        ("http://k3j9x2.localhost:8480", "k3j9x2.localhost:8480", True),
        ("https://term.example.org", "term.example.org", True),
        ("https://term.example.org", "TERM.example.org:443", True),
        ("http://k3j9x2.localhost:8480", "other.localhost:8480", False),
        ("http://k3j9x2.localhost:8480", "k3j9x2.localhost:8481", False),
        ("https://term.example.org", "term.example.org:80", False),
        ("null", "term.example.org", False),
        ("file://", "term.example.org", False),
        ("http://term.example.org:x", "term.example.org", False),
    ],
)
def test_same_origin(origin: str, host: str, ok: bool) -> None:
    assert same_origin(Headers(Origin=origin, Host=host)) is ok


def test_the_page_loads_xterm_from_the_server(terminal: Agent) -> None:
    page = httpx.get(f"{terminal.url}/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert '<script src="xterm/xterm.js"></script>' in page.text
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    script = httpx.get(f"{terminal.url}/xterm/xterm.js")
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("application/javascript")
    assert "window.Terminal = Terminal" in script.text
    assert "require(" not in script.text.split("var defs", 1)[0]
    css = httpx.get(f"{terminal.url}/xterm/xterm.css")
    assert css.headers["content-type"].startswith("text/css")
    assert ".xterm" in css.text


@pytest.mark.parametrize(
    "path",
    [
        "/xterm/../xterm/xterm.css",
        "/xterm/../../../../etc/passwd",
        "/xterm/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/xterm//etc/passwd",
        "/xterm/addons/fit/fit.js",  # a symlink out of the folder
        "/xterm/package.json",
        "/xterm/.hidden.js",
        "/etc/passwd",
    ],
)
def test_nothing_outside_the_xterm_folder_is_served(terminal: Agent, path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", terminal.port, timeout=10)
    try:
        conn.request("GET", path)  # http.client sends the path as it is, ".." included
        response = conn.getresponse()
        assert response.status == 404, response.read()[:200]
    finally:
        conn.close()


def test_a_missing_xterm_is_named(tmp_path: Path) -> None:
    from tests.agent.conftest import start_agent

    with pytest.raises(AssertionError, match="node-xterm"):
        start_agent(tmp_path, "terminal", "--xterm-dir", str(tmp_path))
