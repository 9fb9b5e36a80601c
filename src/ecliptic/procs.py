"""Small facts about processes on this machine."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def pid_exists(pid: int) -> bool:
    """Whether a process with this pid exists (one of another user's counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_program(name: str, path: str | None = None) -> str | None:
    """A helper program Ecliptic builds (``ecliptic-tunneld``, ``ecliptic-sandbox``):
    ``path`` when given, else the one beside the venv's Python, else one on PATH."""
    if path:
        return path if os.access(path, os.X_OK) else None
    beside = Path(sys.executable).parent / name
    if os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)
