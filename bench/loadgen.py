"""Open-loop HTTP/1.1 load at a fixed request rate, with latency counted from the scheduled send.

    python -m bench.loadgen URL [--rate 2000] [--duration 10] [--connections 32] [--host H]

``wrk`` has no rate control and measures from the actual send, so a stalled server makes it
send less and look faster (coordinated omission). Here request ``i`` is due at
``start + i / rate`` whatever happened before; a free keep-alive connection takes the earliest
due request and sends it at its due time. Latency runs to the last byte of the response from
the due time when no connection was free by then (the wait counts against the server), else
from the actual send: event-loop timers fire up to a millisecond late, and that slack is the
generator's, not the server's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from bench.harness import percentile


@dataclass
class OpenLoopResult:
    """What one open-loop run saw."""

    rate: float
    """Requests per second asked for."""
    duration_s: float
    """Length of the measured window (after warm-up)."""
    latencies_ms: list[float] = field(default_factory=list)
    """Send (or due) time to last response byte, one per 200 answer, in ms."""
    errors: int = 0
    """Requests that failed or answered something other than 200."""
    queued: int = 0
    """Requests no connection was free for at their due time (counted from the due time)."""

    @property
    def sent(self) -> int:
        """Requests completed in the measured window, successful or not."""
        return len(self.latencies_ms) + self.errors

    def figures(self) -> dict[str, float | int]:
        """Summary: p50/p99/p99.9/max in ms, achieved rate, errors."""
        lat = self.latencies_ms
        return {
            "rate": self.rate,
            "achieved_rps": round(self.sent / self.duration_s, 1) if self.duration_s else 0.0,
            "p50_ms": round(percentile(lat, 50), 3),
            "p99_ms": round(percentile(lat, 99), 3),
            "p999_ms": round(percentile(lat, 99.9), 3),
            "max_ms": round(max(lat), 3) if lat else float("nan"),
            "errors": self.errors,
            "queued": self.queued,
        }


class _BadResponse(Exception):
    """The server answered something this client does not parse."""


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """Read one response; returns its status and whether the server will close."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length = None
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        name = name.strip().lower()
        if name == "content-length":
            length = int(value)
        elif name == "connection" and value.strip().lower() == "close":
            close = True
        elif name == "transfer-encoding" and "chunked" in value.lower():
            await _read_chunked(reader)
            return status, close
    if length is None:
        raise _BadResponse("response without Content-Length")
    await reader.readexactly(length)
    return status, close


async def _read_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return
        await reader.readexactly(size + 2)


async def open_loop(
    url: str,
    *,
    rate: float,
    duration: float,
    connections: int = 32,
    host: str | None = None,
    warmup: float = 1.0,
) -> OpenLoopResult:
    """Send ``rate`` requests per second to ``url`` for ``warmup + duration`` seconds."""
    parts = urlsplit(url)
    addr = parts.hostname or "127.0.0.1"
    port = parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host or parts.netloc}\r\nUser-Agent: ecl-loadgen\r\n\r\n"
    ).encode()
    clock = time.perf_counter  # uvloop's loop.time() moves in whole milliseconds
    total = int(rate * (warmup + duration))
    first_measured = int(rate * warmup)
    result = OpenLoopResult(rate=rate, duration_s=duration)
    next_index = 0
    start = clock() + 0.2  # let every connection open first

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(addr, port)

    async def worker() -> None:
        nonlocal next_index
        reader, writer = await connect()
        try:
            while next_index < total:
                i = next_index
                next_index += 1
                due = start + i / rate
                delay = due - clock()
                queued = delay < 0
                if not queued:
                    await asyncio.sleep(delay)
                sent = clock()
                ok = False
                try:
                    writer.write(request)
                    status, close = await _read_response(reader)
                    ok = status == 200
                except (OSError, asyncio.IncompleteReadError, _BadResponse, ValueError):
                    close = True
                done = clock()
                if i >= first_measured:
                    result.queued += queued
                    if ok:
                        result.latencies_ms.append((done - (due if queued else sent)) * 1000)
                    else:
                        result.errors += 1
                if close:
                    writer.close()
                    reader, writer = await connect()
        finally:
            writer.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return result


def run_open_loop(
    url: str,
    *,
    rate: float,
    duration: float,
    connections: int = 32,
    host: str | None = None,
    warmup: float = 1.0,
) -> OpenLoopResult:
    """``open_loop`` on a fresh event loop (uvloop when installed)."""
    coro = open_loop(
        url, rate=rate, duration=duration, connections=connections, host=host, warmup=warmup
    )
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main() -> None:
    """Command line entry."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("url")
    p.add_argument("--rate", type=float, default=2000, help="requests per second")
    p.add_argument("--duration", type=float, default=10, help="measured seconds")
    p.add_argument("--warmup", type=float, default=1, help="unmeasured seconds first")
    p.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    p.add_argument("--host", help="Host header (default: from the URL)")
    a = p.parse_args()
    t0 = time.monotonic()
    r = run_open_loop(
        a.url,
        rate=a.rate,
        duration=a.duration,
        connections=a.connections,
        host=a.host,
        warmup=a.warmup,
    )
    print(json.dumps({**r.figures(), "wall_s": round(time.monotonic() - t0, 2)}))


if __name__ == "__main__":
    main()
