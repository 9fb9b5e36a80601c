"""Free TCP ports for tests' own listeners, chosen where nothing else will take them.

Binding port 0 and closing the socket hands out a port from the kernel's ephemeral range,
and the kernel may give that same port to an outgoing connection before the test's server
binds it (seen in CI: a replica's SSH listener failed with EADDRINUSE). Ports below the
ephemeral range are never used for outgoing connections, so this hands those out instead,
each one once per test process, and checks that it can be bound right now.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
from pathlib import Path

_LOW = 10_000


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


_HIGH = max(_LOW + 1000, _ephemeral_low())
_SPAN = _HIGH - _LOW
_cursor = itertools.count((os.getpid() * 7919) % _SPAN)
_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on and no other call handed out."""
    for _ in range(_SPAN):
        with _lock:
            port = _LOW + next(_cursor) % _SPAN
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError(f"no free TCP port in {_LOW}-{_HIGH - 1}")
