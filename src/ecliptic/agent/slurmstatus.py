"""``ecliptic agent slurm-status``: a page of a Slurm cluster's nodes and jobs.

``GET /`` is an HTML page (refreshed every 5 s by a meta refresh: no JavaScript) with the
nodes (``sinfo``) and the jobs (``squeue``); ``GET /api/status`` is the same as JSON;
``GET /healthz`` answers ``ok``. A failing ``sinfo`` or ``squeue`` (no controller yet,
munge down) is a message on the page and an ``error`` in the JSON, not a 500.

Slurm 22.05's ``sinfo --json`` works, but its fields change with every release (a node's
state is a string in 22.05 and a list from 23.02); the ``-o`` formats used here have been
stable for a decade, so this reads those. Job names come last in the format because they
are the only free text a user chooses: they may hold the separator.

Like the terminal, the page listens on loopback behind the tunnel gateway, which signs
people in; everything from Slurm is HTML-escaped.
"""

from __future__ import annotations

import html
import json
import logging
import signal
import subprocess
import threading
import time
from dataclasses import asdict, dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_PORT = 8081
REFRESH_SECONDS = 5
CACHE_SECONDS = 2.0
"""Every open page asks every 5 s; the controller is asked at most once in this time."""
COMMAND_TIMEOUT = 10.0

SINFO = ["sinfo", "--Node", "--noheader", "--format", "%N|%P|%T|%C|%m|%E"]
SQUEUE = ["squeue", "--noheader", "--format", "%i|%P|%u|%T|%M|%D|%R|%j"]


@dataclass(frozen=True)
class Node:
    """A node in a partition, as ``sinfo --Node`` lists it (once per partition)."""

    name: str
    partition: str
    state: str
    cpus: str
    """Allocated/idle/other/total CPUs."""
    memory_mb: str
    reason: str
    """Why the node is down or drained; ``none`` otherwise."""


@dataclass(frozen=True)
class Job:
    """A pending or running job, as ``squeue`` lists it."""

    id: str
    partition: str
    user: str
    state: str
    time: str
    nodes: str
    where: str
    """The nodes it runs on, or why it waits (``(Resources)``)."""
    name: str


@dataclass(frozen=True)
class Status:
    """What the page shows: nodes and jobs, or why they could not be read."""

    nodes: list[Node]
    jobs: list[Job]
    nodes_error: str | None
    jobs_error: str | None
    at: float
    """When Slurm was asked (Unix time)."""


def _run(argv: list[str]) -> tuple[list[str], str | None]:
    """The output lines of ``argv``, or an error saying why there are none."""
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, errors="replace", timeout=COMMAND_TIMEOUT
        )
    except FileNotFoundError:
        return [], f"{argv[0]} is not installed"
    except subprocess.TimeoutExpired:
        return [], f"{argv[0]} did not answer within {COMMAND_TIMEOUT:.0f} s"
    if done.returncode != 0:
        message = done.stderr.strip() or done.stdout.strip() or "no message"
        return [], f"{argv[0]} failed (exit {done.returncode}): {message}"
    return [line for line in done.stdout.splitlines() if line.strip()], None


def parse_nodes(lines: list[str]) -> list[Node]:
    """Nodes from ``SINFO``'s lines (the reason last: it may hold ``|``)."""
    nodes = []
    for line in lines:
        fields = line.split("|", 5)
        if len(fields) == 6:
            nodes.append(Node(*fields))
    return nodes


def parse_jobs(lines: list[str]) -> list[Job]:
    """Jobs from ``SQUEUE``'s lines (the name last: it may hold ``|``)."""
    jobs = []
    for line in lines:
        fields = line.split("|", 7)
        if len(fields) == 8:
            jobs.append(Job(*fields))
    return jobs


def read_status() -> Status:
    """Ask Slurm now."""
    node_lines, nodes_error = _run(SINFO)
    job_lines, jobs_error = _run(SQUEUE)
    return Status(
        nodes=parse_nodes(node_lines),
        jobs=parse_jobs(job_lines),
        nodes_error=nodes_error,
        jobs_error=jobs_error,
        at=time.time(),
    )


class StatusCache:
    """The last status, reused for ``CACHE_SECONDS``; one request at a time asks Slurm."""

    def __init__(self, max_age: float = CACHE_SECONDS) -> None:
        self.max_age = max_age
        self._lock = threading.Lock()
        self._status: Status | None = None
        self._when = 0.0

    def get(self) -> Status:
        """A status at most ``max_age`` seconds old."""
        with self._lock:
            if self._status is None or time.monotonic() - self._when > self.max_age:
                self._status = read_status()
                self._when = time.monotonic()
            return self._status


def _table(headings: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{html.escape(empty)}</p>'
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headings)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _section(title: str, error: str | None, table: str) -> str:
    if error is not None:
        return f'<h2>{title}</h2><p class="error">{html.escape(error)}</p>'
    return f"<h2>{title}</h2>{table}"


def render(status: Status) -> str:
    """The page: two tables, or the errors, every value escaped."""
    nodes = _table(
        ["Node", "Partition", "State", "CPUs (alloc/idle/other/total)", "Memory (MB)", "Reason"],
        [[n.name, n.partition, n.state, n.cpus, n.memory_mb, n.reason] for n in status.nodes],
        "No nodes.",
    )
    jobs = _table(
        ["Job", "Partition", "User", "State", "Time", "Nodes", "Node list (reason)", "Name"],
        [
            [j.id, j.partition, j.user, j.state, j.time, j.nodes, j.where, j.name]
            for j in status.jobs
        ],
        "No jobs.",
    )
    at = time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(status.at))
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        "<title>Slurm cluster</title><style>"
        "body{font:14px system-ui,sans-serif;margin:1.5em}"
        "table{border-collapse:collapse}th,td{border:1px solid #ccc;padding:.25em .6em;"
        "text-align:left}th{background:#f3f3f3}.error{color:#a00}.empty{color:#666}"
        "</style></head><body><h1>Slurm cluster</h1>"
        f"{_section('Nodes', status.nodes_error, nodes)}"
        f"{_section('Jobs', status.jobs_error, jobs)}"
        f'<p class="empty">As of {html.escape(at)}; refreshed every {REFRESH_SECONDS} s.</p>'
        "</body></html>\n"
    )


def to_json(status: Status) -> dict[str, Any]:
    """The status as ``GET /api/status`` answers it."""
    return asdict(status)


class _Handler(BaseHTTPRequestHandler):
    server_version = "ecliptic-slurm-status"
    sys_version = ""
    cache: StatusCache

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/":
            page = render(self.cache.get()).encode()
            self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        elif path == "/api/status":
            body = json.dumps(to_json(self.cache.get())).encode()
            self._send(HTTPStatus.OK, body, "application/json")
        else:
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain; charset=utf-8")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


def make_server(bind: str, port: int, cache: StatusCache | None = None) -> ThreadingHTTPServer:
    """A server bound to ``bind``:``port`` (not yet serving)."""
    handler = type("Handler", (_Handler,), {"cache": cache or StatusCache()})
    server = ThreadingHTTPServer((bind, port), handler)
    server.daemon_threads = True
    return server


def run(bind: str = "127.0.0.1", port: int = DEFAULT_PORT) -> None:
    """Serve the page in the foreground until SIGTERM or SIGINT."""
    server = make_server(bind, port)
    log.info("slurm status listening on %s:%d", bind, server.server_address[1])

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
