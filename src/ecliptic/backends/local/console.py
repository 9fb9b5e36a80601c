"""Per-server console log: timestamped boot lines from the backend plus service output."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path


def append(path: Path, message: str) -> None:
    """Append one timestamped line (a single O_APPEND write, safe next to service output)."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    line = f"[{stamp}] ecliptic: {message}\n".encode(errors="replace")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except FileNotFoundError:
        return  # server state directory gone (deleted concurrently)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def tail(path: Path, tail_bytes: int) -> str:
    """The last ``tail_bytes`` of the log, decoded leniently; empty when there is no log."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(0, size - max(0, tail_bytes)))
            data = f.read()
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", errors="replace")
