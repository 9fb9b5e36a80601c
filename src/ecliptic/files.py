"""Writing files so that a reader, or a crash, never sees half of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(
    path: Path, data: str | bytes, *, mode: int = 0o644, root_owned: bool = False
) -> None:
    """Replace ``path`` with ``data``: readers see the old file or the new one, never part of
    either. The mode (and, for root, ownership) is set before the file appears."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            os.fchmod(f.fileno(), mode)
            if root_owned and os.geteuid() == 0:
                os.fchown(f.fileno(), 0, 0)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
