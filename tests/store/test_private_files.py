"""Hole 7 of the gateway attack: the database (password and token hashes, the gateway's
keys) was created world-readable, in a world-readable folder; as ``nobody`` (nginx's
worker account) the gateway secret was read and a session cookie forged."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

from sqlalchemy import text

from ecliptic.runtime import private_dir
from ecliptic.store.db import Database


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_a_new_database_and_its_log_are_the_owners_only(tmp_path: Path) -> None:
    path = tmp_path / "new" / "ecliptic.db"
    db = Database(f"sqlite:///{path}")
    with db.write() as s:
        s.execute(text("CREATE TABLE t (x INTEGER)"))
        s.execute(text("INSERT INTO t VALUES (1)"))
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert p.exists() and _mode(p) == 0o600, (p, oct(_mode(p)))
    db.dispose()
    # nobody cannot read it (root can read anything, so ask as nginx's worker account)
    os.chmod(tmp_path, 0o755)
    os.chmod(path.parent, 0o755)
    read = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(path)], capture_output=True)
    assert read.returncode != 0 and b"Permission denied" in read.stderr


def test_an_existing_install_is_fixed_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    os.chmod(data, 0o755)
    path = data / "ecliptic.db"
    db = Database(f"sqlite:///{path}")
    with db.write() as s:
        s.execute(text("CREATE TABLE t (x INTEGER)"))
    db.dispose()
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if p.exists():
            os.chmod(p, 0o644)
    private_dir(data)
    Database(f"sqlite:///{path}").dispose()
    assert _mode(data) == 0o700
    assert _mode(path) == 0o600
    fresh = tmp_path / "fresh" / "deeper"
    private_dir(fresh)
    assert _mode(fresh) == 0o700


def test_a_shared_folder_is_never_closed(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    private_dir(shared)
    assert _mode(shared) == 0o1777
