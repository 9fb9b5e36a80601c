"""``ecliptic agent terminal``: a login shell in the browser, over a WebSocket.

``GET /`` answers a page running xterm.js (``GET /xterm/xterm.js``, linked from Debian's
packages by ``ecliptic.agent.xterm``; ``GET /xterm/xterm.css``); the page opens a
WebSocket at ``/ws``, and each WebSocket is one shell on a PTY of its own.

Protocol on ``/ws``:

- client -> server, **binary** frame: keyboard input, raw bytes written to the PTY.
- client -> server, **text** frame: a JSON control message. The only one is
  ``{"resize": [cols, rows]}`` (1-1000 each), which sets the PTY's size (TIOCSWINSZ;
  the foreground job gets SIGWINCH). Anything else closes the socket with 1008.
- server -> client, **binary** frame: the PTY's output, raw bytes (UTF-8 as the shell
  writes it; a character may straddle two frames). Output is batched: what the shell
  writes within a few milliseconds goes out as one frame.
- The server closes the socket with 1000 and a reason such as ``shell exited (status 0)``
  when the shell ends, 1013 ``too many terminal sessions ...`` when the cap of concurrent
  sessions is reached, 1001 when the server stops. The page shows the reason.
- When the socket closes, the shell's session gets SIGHUP, and SIGKILL after a grace.

Security: the server listens on loopback (default 127.0.0.1) behind the tunnel gateway,
which signs people in and decides who reaches the server; there is no login here. A
WebSocket is refused with 403 when its ``Origin`` is not the page's own (``Host``), so no
other site a signed-in person visits can open a shell with their gateway cookie
(cross-site WebSocket hijacking). The page itself may not be framed.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import os
import shlex
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ecliptic.agent import xterm
from ecliptic.agent.shell import Shell

log = logging.getLogger(__name__)

DEFAULT_PORT = 7681
DEFAULT_MAX_SESSIONS = 16
BATCH_SECONDS = 0.005
"""How long output is gathered before it is sent: one frame per burst, not per read."""
HIGH_WATER = 256 * 1024
"""Output waiting for a slow browser beyond which the PTY is no longer read (the shell
then blocks on write, as on a slow serial line) instead of buffering without end."""
MAX_MESSAGE = 1024 * 1024
"""The largest frame a browser may send (a big paste); a larger one closes the socket."""
# Variables of the agent's own launcher (/opt/ecliptic/bin/ecliptic), not the person's:
# with them the shell's python3 would import Ecliptic's packages and libpython.
AGENT_ONLY_ENV = ("PYTHONPATH", "PYTHONNOUSERSITE", "PYTHONHOME")
AGENT_DIR = "/opt/ecliptic"


def shell_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The shell's environment: the agent's, without its launcher's Python settings."""
    env = {k: v for k, v in environ.items() if k not in AGENT_ONLY_ENV}
    if env.get("LD_LIBRARY_PATH", "").startswith(AGENT_DIR + "/"):
        del env["LD_LIBRARY_PATH"]
    env["TERM"] = "xterm-256color"
    return env


def default_shell() -> tuple[str, ...]:
    """A login bash where there is one, else a login sh."""
    return ("/bin/bash", "-l") if Path("/bin/bash").exists() else ("/bin/sh", "-l")


def parse_shell(command: str) -> tuple[str, ...]:
    """``--shell`` as argv: ``"/bin/zsh -l"`` -> ("/bin/zsh", "-l")."""
    argv = tuple(shlex.split(command))
    if not argv or not os.path.isabs(argv[0]):
        raise ValueError(f"the shell must be an absolute path, got {command!r}")
    return argv


@dataclass(frozen=True)
class TerminalConfig:
    """How the terminal server runs."""

    bind: str = "127.0.0.1"
    """Address to listen on: loopback, the tunnel gateway forwards to it."""
    port: int = DEFAULT_PORT
    """TCP port to listen on (0: any free one)."""
    shell: tuple[str, ...] = field(default_factory=default_shell)
    """The shell's argv; its first element is an absolute path."""
    xterm_dir: Path = xterm.DEFAULT_DIR
    """Where node-xterm's modules and xterm.css are."""
    max_sessions: int = DEFAULT_MAX_SESSIONS
    """Shells that may run at once; one more WebSocket is closed with 1013."""
    grace: float = 2.0
    """Seconds between SIGHUP and SIGKILL when a socket closes."""


Dimension = Annotated[int, Field(ge=1, le=1000)]


class Control(BaseModel):
    """A control message from the browser (a text frame)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    resize: tuple[Dimension, Dimension]
    """The terminal's new size: columns, rows."""


class BadMessage(Exception):
    """The browser sent a text frame that is not a control message."""

    code = "bad_message"


def same_origin(headers: Headers) -> bool:
    """True unless a browser says the page that opens the socket is from another site.

    Browsers always send ``Origin`` with a WebSocket; a client that sends none is not a
    browser, so no one's cookies ride along and there is nothing to hijack."""
    origins = headers.get_all("Origin")
    if not origins:
        return True
    hosts = headers.get_all("Host")
    if len(origins) != 1 or len(hosts) != 1:
        return False
    default_ports = {"http": 80, "https": 443}
    try:
        origin = urlsplit(origins[0])
        host = urlsplit(f"//{hosts[0]}")
        if origin.scheme not in default_ports or not origin.hostname or not host.hostname:
            return False
        default = default_ports[origin.scheme]
        return (origin.hostname, origin.port or default) == (host.hostname, host.port or default)
    except ValueError:  # a port that is not a number
        return False


def _response(
    status: HTTPStatus, body: bytes, content_type: str, extra: dict[str, str] | None = None
) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    for name, value in (extra or {}).items():
        headers[name] = value
    return Response(status.value, status.phrase, headers, body)


def _text(status: HTTPStatus, text: str) -> Response:
    return _response(status, text.encode(), "text/plain; charset=utf-8")


PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Terminal</title>
<link rel="stylesheet" href="xterm/xterm.css">
<style>
html, body { height: 100%; margin: 0; background: #000; }
#terminal { position: absolute; top: 0; left: 0; right: 0; bottom: 1.75em; padding: 2px; }
#status { position: absolute; left: 0; right: 0; bottom: 0; height: 1.75em;
  line-height: 1.75em; padding: 0 .6em; font: 13px system-ui, sans-serif;
  color: #ddd; background: #222; }
#status.closed { background: #7a1f1f; color: #fff; }
</style>
</head>
<body>
<div id="terminal"></div>
<div id="status" role="status">Connecting...</div>
<script src="xterm/xterm.js"></script>
<script src="terminal.js"></script>
</body>
</html>
"""

SCRIPT = """(function () {
  "use strict";
  var status = document.getElementById("status");
  var term = new Terminal({ cursorBlink: true, scrollback: 5000 });
  window.ecliptic = { terminal: term };
  term.open(document.getElementById("terminal"));
  term.fit();
  var url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  var ws = new WebSocket(url.href);
  ws.binaryType = "arraybuffer";
  var decoder = new TextDecoder();
  var encoder = new TextEncoder();
  function sendSize() {
    if (ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ resize: [term.cols, term.rows] }));
    }
  }
  ws.onopen = function () {
    status.textContent = "Connected";
    sendSize();
    term.focus();
  };
  ws.onmessage = function (event) {
    term.write(decoder.decode(new Uint8Array(event.data), { stream: true }));
  };
  ws.onclose = function (event) {
    var why = event.reason || (event.code === 1006 ? "connection lost" : "closed");
    status.textContent = "Disconnected: " + why + ". Reload the page for a new shell.";
    status.className = "closed";
    term.write("\\r\\n\\x1b[7m " + why.replace(/[\\x00-\\x1f\\x7f]/g, "") + " \\x1b[0m\\r\\n");
  };
  term.on("data", function (data) {
    if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data));
  });
  term.on("resize", sendSize);
  window.addEventListener("resize", function () { term.fit(); });
})();
"""


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _Session:
    """One WebSocket bridged to one shell."""

    def __init__(self, ws: ServerConnection, shell: Shell) -> None:
        self.ws = ws
        self.shell = shell
        self.out = bytearray()
        self.ready = asyncio.Event()
        self.eof = False
        self.reading = False
        self.loop = asyncio.get_running_loop()

    def _start_reading(self) -> None:
        if not self.reading and not self.eof:
            self.loop.add_reader(self.shell.master, self._on_readable)
            self.reading = True

    def _stop_reading(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.shell.master)
            self.reading = False

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self.shell.master, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: no process has the terminal open any more
            chunk = b""
        if chunk:
            self.out += chunk
            if len(self.out) >= HIGH_WATER:
                self._stop_reading()
        else:
            self._stop_reading()
            self.eof = True
        self.ready.set()

    def _drain(self) -> None:
        """Read what the shell wrote before it exited, then stop reading."""
        while self.reading and len(self.out) < HIGH_WATER:
            before = len(self.out)
            self._on_readable()
            if len(self.out) == before:
                break
        self._stop_reading()
        self.eof = True
        self.ready.set()

    async def _pump(self) -> None:
        """PTY -> WebSocket, in batches, until the PTY's end."""
        while True:
            await self.ready.wait()
            await asyncio.sleep(BATCH_SECONDS)
            self.ready.clear()
            if self.out:
                data = bytes(self.out)
                self.out.clear()
                self._start_reading()
                await self.ws.send(data)
            if self.eof and not self.out:
                return

    async def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.shell.master, view) :]
            except BlockingIOError:
                writable = self.loop.create_future()
                self.loop.add_writer(self.shell.master, _wake, writable)
                try:
                    await writable
                finally:
                    self.loop.remove_writer(self.shell.master)
            except OSError:  # the shell has gone; its exit closes the socket
                return

    async def _receive(self) -> None:
        """WebSocket -> PTY, until the browser closes the socket."""
        with contextlib.suppress(ConnectionClosed):
            async for message in self.ws:
                if isinstance(message, bytes):
                    await self._write(message)
                    continue
                try:
                    control = Control.model_validate_json(message)
                except ValidationError:
                    raise BadMessage(
                        'a text frame must be {"resize": [cols, rows]}; input goes in binary frames'
                    ) from None
                self.shell.resize(*control.resize)

    async def run(self) -> None:
        """Bridge until either side ends, then close the other."""
        self._start_reading()
        pump = asyncio.create_task(self._pump())
        receive = asyncio.create_task(self._receive())
        exited = asyncio.create_task(self.shell.exited())
        try:
            await asyncio.wait({receive, exited}, return_when=asyncio.FIRST_COMPLETED)
            if exited.done():
                self._drain()
                with contextlib.suppress(ConnectionClosed, TimeoutError):
                    await asyncio.wait_for(pump, timeout=5)  # a browser that reads no more
                await self.ws.close(1000, self.shell.exit_reason())
            elif isinstance(receive.exception(), BadMessage):
                await self.ws.close(1008, str(receive.exception())[:120])
        finally:
            for task in (pump, receive, exited):
                task.cancel()
            await asyncio.gather(pump, receive, exited, return_exceptions=True)
            self._stop_reading()


class TerminalServer:
    """The HTTP answers and the WebSocket sessions of one terminal server."""

    def __init__(self, config: TerminalConfig) -> None:
        self.config = config
        self.script = xterm.bundle(config.xterm_dir)  # fails now, not at the first page
        self.sessions = 0
        self.env = shell_env(os.environ)

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP; let a same-origin WebSocket at /ws through."""
        path = urlsplit(request.path).path
        if path == "/ws":
            if not same_origin(request.headers):
                log.warning("refused a cross-origin WebSocket from %s", connection.remote_address)
                return _text(HTTPStatus.FORBIDDEN, "cross-origin WebSocket refused\n")
            return None
        if path == "/":
            return _response(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8", PAGE_HEADERS)
        if path == "/terminal.js":
            return _response(HTTPStatus.OK, SCRIPT.encode(), xterm.CONTENT_TYPES[".js"])
        if path == "/xterm/xterm.js":
            return _response(HTTPStatus.OK, self.script, xterm.CONTENT_TYPES[".js"])
        if path.startswith("/xterm/"):
            found = xterm.asset(self.config.xterm_dir, path.removeprefix("/xterm/"))
            if found is not None:
                return _response(HTTPStatus.OK, found[0], found[1])
        return _text(HTTPStatus.NOT_FOUND, "not found\n")

    async def handle(self, ws: ServerConnection) -> None:
        """One WebSocket: a shell of its own, unless the cap is reached."""
        cap = self.config.max_sessions
        if self.sessions >= cap:
            await ws.close(1013, f"too many terminal sessions (at most {cap}): close one")
            return
        self.sessions += 1
        try:
            shell = Shell.spawn(self.config.shell, env=self.env, cwd=self.env.get("HOME", "/"))
        except OSError as exc:
            self.sessions -= 1
            await ws.close(1011, f"cannot start the shell: {exc.strerror}")
            return
        log.info("session of %s: shell %d", ws.remote_address, shell.pid)
        try:
            await _Session(ws, shell).run()
        finally:
            await shell.hang_up(self.config.grace)
            self.sessions -= 1
            log.info("session of %s ended: shell %d", ws.remote_address, shell.pid)

    async def serve(self, stop: asyncio.Future[None]) -> None:
        """Listen until ``stop`` is done, then close every session."""
        async with serve(
            self.handle,
            self.config.bind,
            self.config.port,
            process_request=self.process_request,
            max_size=MAX_MESSAGE,
            server_header=None,
        ) as server:
            for sock in server.sockets:
                log.info("terminal listening on %s", sock.getsockname())
            await stop


def run(config: TerminalConfig) -> None:
    """Run the terminal server in the foreground until SIGTERM or SIGINT."""

    async def main() -> None:
        server = TerminalServer(config)
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, _wake, stop)
        await server.serve(stop)

    asyncio.run(main())
