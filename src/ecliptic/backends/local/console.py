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


def read(path: Path, after: int, limit: int) -> tuple[str, int]:
    """The log from byte ``after`` (negative: that many bytes before the end), at most
    ``limit`` bytes, cut at a whole UTF-8 character; and the offset to read from next.
    A log shorter than ``after`` (it was recreated) is read from its start."""
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            start = max(0, size + after) if after < 0 else after
            if start > size:
                start = 0
            f.seek(start)
            data = f.read(max(0, limit))
    except FileNotFoundError:
        return "", 0
    cut = len(data)
    # Leave an incomplete multi-byte character at the end for the next read.
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 == 0x80:
            continue
        if byte & 0x80 and back < (2 if byte < 0xE0 else 3 if byte < 0xF0 else 4):
            cut = len(data) - back
        break
    return data[:cut].decode("utf-8", errors="replace"), start + cut
