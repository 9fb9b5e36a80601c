"""Engine and sessions for SQLite (default, WAL) and PostgreSQL, with serialised writes."""

from __future__ import annotations

import os
import threading
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

if TYPE_CHECKING:
    from ecliptic.secretbox import SecretBox


def private_file(path: Path) -> None:
    """Make the SQLite file (and its write-ahead log and shared memory) readable by its
    owner only: it holds password hashes, token hashes and the gateway's keys. A new file
    is created 0600 (SQLite gives its -wal and -shm files the same mode); an existing one
    is fixed."""
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    os.close(fd)
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            st = p.stat()
        except FileNotFoundError:
            continue
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(p, 0o600)


class Database:
    """One database: an engine, a session factory and the write discipline.

    On SQLite all writes of the process go through one lock (SQLite has a single
    writer anyway, and holding the lock over the read-then-write of a transaction
    avoids stale-snapshot failures). On PostgreSQL, writes run in parallel and the
    ones that must be serialised (placement, address allocation) name an advisory lock.
    """

    def __init__(self, url: str, *, echo: bool = False, secrets: SecretBox | None = None) -> None:
        self.url = url
        self.secrets = secrets
        """What seals the instance's secrets kept in this store (None: they cannot be read
        or made through this object)."""
        self.is_sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                private_file(Path(path))
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        else:
            kwargs.update(pool_size=10, max_overflow=20, pool_pre_ping=True)
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        event.listen(self._sessions, "after_commit", _run_after_commit)
        event.listen(self._sessions, "after_rollback", _drop_after_commit)
        self._write_lock = threading.RLock()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; objects it loaded stay usable (detached) after it closes."""
        with self._sessions() as session:
            yield session

    @contextmanager
    def write(self, *locks: str) -> Iterator[Session]:
        """A transaction, committed on success; ``locks`` serialise it against others."""
        if self.is_sqlite:
            with self._write_lock, self._sessions() as session, session.begin():
                yield session
        else:
            with self._sessions() as session, session.begin():
                for name in sorted(set(locks)):
                    session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": lock_key(name)})
                yield session

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def lock_key(name: str) -> int:
    """A stable 63-bit advisory-lock key for a lock name."""
    return zlib.crc32(name.encode()) | (0x45434C << 32)


def _run_after_commit(session: Session) -> None:
    # Callbacks registered in ``session.info["after_commit"]`` (wake the workers, say)
    # must see committed data, so they run only now.
    for callback in session.info.pop("after_commit", []):
        callback()


def _drop_after_commit(session: Session) -> None:
    session.info.pop("after_commit", None)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()
