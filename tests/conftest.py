"""Shared fixtures: real SQLite and PostgreSQL databases, and a leak check for the local cloud."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from ecliptic.backends.local import firewall
from tests.ports import free_port as _free_port
from tests.prerequisites import (  # noqa: F401  (hooks: a missing prerequisite fails make test)
    pytest_make_collect_report,
    pytest_runtest_makereport,
    pytest_terminal_summary,
)

# A real standalone Ironic (bare metal), started only for the tests that ask for it.
pytest_plugins = ["tests.ironic_fixtures"]

# Every test instance records what it creates here, not in the machine-wide /run/ecliptic,
# so the leak check sees exactly what the tests made and a running dev instance is safe.
_OWNERS = Path(tempfile.mkdtemp(prefix="ecl-test-owners-"))
os.environ["ECLIPTIC_OWNERS_DIR"] = str(_OWNERS)
os.environ.setdefault("ECLIPTIC_ADMIN_PASSWORD", "test-admin-password")
# Cheap argon2 for the tests (and the serve processes they start, which inherit it): see
# ecliptic.services.auth.FAST_HASH_ENV. Production never sets it.
os.environ["ECLIPTIC_TEST_FAST_PASSWORD_HASH"] = "1"
# One image folder for the session: the host layer and `base` are made once, not per test.
IMAGE_DIR = Path(tempfile.mkdtemp(prefix="ecl-test-images-"))
os.environ["ECLIPTIC_IMAGE_DIR"] = str(IMAGE_DIR)


class ThrowawayPostgres:
    """A private PostgreSQL cluster in a temporary folder, on loopback, for one test session."""

    def __init__(self) -> None:
        bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not bins:
            raise RuntimeError("PostgreSQL is not installed: run scripts/setup-system.sh test")
        self.bin = Path(bins[-1]).parent
        self.dir = Path(tempfile.mkdtemp(prefix="ecl-pg-"))
        shutil.chown(self.dir, "postgres")
        self.port = _free_port()

    def _pg(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *args],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def start(self) -> str:
        """Start the cluster; returns a SQLAlchemy URL of its ``postgres`` database."""
        self._pg(
            str(self.bin / "initdb"), "-D", f"{self.dir}/data", "-A", "trust", "-U", "ecliptic"
        )
        opts = (
            f"-k {self.dir} -p {self.port} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._pg(
            str(self.bin / "pg_ctl"),
            "-D",
            f"{self.dir}/data",
            "-l",
            f"{self.dir}/log",
            "-w",
            "start",
            "-o",
            opts,
        )
        return f"postgresql+psycopg://ecliptic@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        """Stop the cluster and remove its files."""
        try:
            self._pg(str(self.bin / "pg_ctl"), "-D", f"{self.dir}/data", "-m", "immediate", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A PostgreSQL server for the session (``ECLIPTIC_TEST_PG_URL`` to use an existing one)."""
    given = os.environ.get("ECLIPTIC_TEST_PG_URL")
    if given:
        yield given
        return
    pg = ThrowawayPostgres()
    try:
        yield pg.start()
    finally:
        pg.stop()


_TEMPLATES: dict[str, str] = {}
"""Per PostgreSQL server (admin URL): a database migrated once, copied for every test."""
_TEMPLATE_LOCK = threading.Lock()
_SQLITE_TEMPLATE = Path(tempfile.mkdtemp(prefix="ecl-test-sqlite-")) / "migrated.db"


def _migrate(url: str) -> None:
    """Apply every migration to the database at ``url`` and close every connection to it
    (a PostgreSQL template must be unused; a SQLite file is then whole, its WAL folded in)."""
    from ecliptic.store.db import Database
    from ecliptic.store.migrate import upgrade

    db = Database(url)
    try:
        upgrade(db)
        if url.startswith("sqlite"):
            with db.engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.dispose()


def _pg_template(admin_url: str) -> str:
    """The session's migrated template database on this server (made on first use)."""
    with _TEMPLATE_LOCK:
        name = _TEMPLATES.get(admin_url)
        if name is None:
            name = "t_template_" + uuid.uuid4().hex[:8]
            engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
            with engine.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            engine.dispose()
            _migrate(admin_url.rsplit("/", 1)[0] + "/" + name)
            _TEMPLATES[admin_url] = name
        return name


def fresh_pg_database(admin_url: str, *, migrated: bool = True) -> str:
    """A new database on the server at ``admin_url``: a copy of the session's migrated
    template (``CREATE DATABASE ... TEMPLATE``: migrations run once per session), or empty."""
    name = "t_" + uuid.uuid4().hex[:12]
    template = f' TEMPLATE "{_pg_template(admin_url)}"' if migrated else ""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{template}'))
    engine.dispose()
    return admin_url.rsplit("/", 1)[0] + "/" + name


def migrated_sqlite(path: Path) -> str:
    """A SQLite database at ``path`` holding the newest schema: a copy of a file migrated
    once per session. Returns its URL."""
    with _TEMPLATE_LOCK:
        if not _SQLITE_TEMPLATE.exists():
            made = _SQLITE_TEMPLATE.with_suffix(".new")
            _migrate(f"sqlite:///{made}")
            made.rename(_SQLITE_TEMPLATE)
    shutil.copyfile(_SQLITE_TEMPLATE, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database with the newest schema: once SQLite, once PostgreSQL."""
    if request.param == "sqlite":
        return migrated_sqlite(tmp_path / "ecliptic.db")
    admin: str = request.getfixturevalue("pg_admin_url")
    return fresh_pg_database(admin)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database (no schema): once SQLite, once PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ecliptic.db'}"
    admin: str = request.getfixturevalue("pg_admin_url")
    return fresh_pg_database(admin, migrated=False)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh SQLite database file with the newest schema."""
    return migrated_sqlite(tmp_path / "ecliptic.db")


@pytest.fixture(scope="session", autouse=True)
def no_leaks() -> Iterator[None]:
    """After the session, nothing any test created in the local cloud may remain: neither
    what the tests' owner records name, nor an ``ecl`` namespace or link that appeared during
    the session and that no instance records (its record removed, the resource left)."""
    before = _local_cloud()
    mounts_before, inits_before = _mounts(), _sandbox_inits()
    tables_before = set(firewall.tables())
    yield
    leftovers = sorted(p.name for p in _OWNERS.iterdir()) if _OWNERS.exists() else []
    existing = _local_cloud()
    leaked = [n for n in leftovers if n in existing]
    recorded = {p.name for d in _owner_dirs() for p in d.iterdir()}
    unrecorded = sorted(existing - before - recorded)
    mounts = sorted(_mounts() - mounts_before)
    inits = sorted(_sandbox_inits() - inits_before)
    for _ in range(30):  # one may still be on its way out (a pid namespace takes a moment)
        if not inits:
            break
        time.sleep(0.1)
        inits = sorted(_sandbox_inits() - inits_before)
    tables = sorted(set(firewall.tables()) - tables_before - _running_instances_tables())
    shutil.rmtree(_OWNERS, ignore_errors=True)
    shutil.rmtree(IMAGE_DIR, ignore_errors=True)
    assert not leaked, f"tests leaked local-cloud resources: {leaked}"
    assert not unrecorded, f"tests left local-cloud resources no owner record names: {unrecorded}"
    assert not mounts, f"tests left mounts on the host: {mounts}"
    assert not inits, f"tests left servers' init processes running: {inits}"
    assert not tables, f"tests left nftables tables of the local cloud: {tables}"


def _running_instances_tables() -> set[str]:
    """Firewall tables of instances that still own bridges (another session's, a dev
    server's): each instance keeps its table while it has networks."""
    out = set()
    for d in _owner_dirs():
        for rec in d.iterdir():
            with contextlib.suppress(OSError, ValueError):
                instance = json.loads(rec.read_text()).get("instance")
                if rec.name.startswith("eclb-") and instance:
                    out.add(firewall.table_name(instance))
    return out


def _mounts() -> set[str]:
    """Overlay mounts, and mounts under this session's image folder, in the host's mount
    table (servers' mounts live in their own mount namespaces; the network namespaces'
    own mounts in /run/netns are checked with the namespaces)."""
    out = set()
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        point, fstype = left.split()[4], right.split()[0]
        if fstype == "overlay" or point.startswith(str(IMAGE_DIR)):
            out.add(f"{fstype} on {point}")
    return out


def _sandbox_inits() -> set[str]:
    """Servers' init processes (``ecliptic-sandbox boot``, PID 1 of their own namespace)
    that this session may have made: those of servers another session or a running
    ``ecliptic serve`` records are theirs."""
    theirs = {p.name for d in _owner_dirs() if d != _OWNERS for p in d.iterdir()}
    out = set()
    mine = os.stat("/proc/self/ns/pid").st_ino
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if Path(f"/proc/{entry}/comm").read_text().strip() != "init":
                continue
            if "\nState:\tZ" in Path(f"/proc/{entry}/status").read_text():
                continue  # exited, not yet reaped by its parent
            ns_pid = os.stat(f"/proc/{entry}/ns/pid").st_ino
            cgroups = Path(f"/proc/{entry}/cgroup").read_text()
        except OSError:
            continue
        server = next(
            (ln.rsplit("/", 1)[-1] for ln in cgroups.splitlines() if "/ecliptic/ecl-" in ln), ""
        )
        if ns_pid != mine and server not in theirs:
            out.add(f"pid {entry} ({server or 'no server cgroup'})")
    return out


def _local_cloud() -> set[str]:
    """The local cloud's namespaces and links on this machine (every instance's)."""
    names = set(_names(["ip", "-o", "netns", "list"])) | set(_links())
    return {n for n in names if n.startswith("ecl")}


def _owner_dirs() -> list[Path]:
    """Where instances here record what they own: this session's, other test sessions'
    (which may run beside this one), and the machine-wide folder of ``ecliptic serve``."""
    dirs = [
        _OWNERS,
        Path("/run/ecliptic/owners"),
        *Path(tempfile.gettempdir()).glob("ecl-test-owners-*"),
    ]
    return [d for d in dirs if d.is_dir()]


def _names(cmd: list[str]) -> list[str]:
    out = subprocess.run(cmd, capture_output=True, text=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _links() -> list[str]:
    out = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if ":" in line]
