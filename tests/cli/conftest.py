"""A real Ecliptic (store, local cloud, workers, HTTP API on a free port) for the CLI to talk to."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from typer.testing import CliRunner, Result

from ecliptic.api.app import create_app
from ecliptic.cli.main import app
from ecliptic.client import ApiError, Client
from ecliptic.config import load_settings
from ecliptic.runtime import Runtime
from tests.conftest import migrated_sqlite
from tests.prerequisites import require

ADMIN_PASSWORD = os.environ.get("ECLIPTIC_ADMIN_PASSWORD", "test-admin-password")
# Variables a developer's shell may hold that would point the CLI elsewhere.
CLI_ENV = (
    "ECLIPTIC_URL",
    "ECLIPTIC_TOKEN",
    "ECLIPTIC_TENANCY",
    "ECLIPTIC_PROFILE",
    "ECLIPTIC_OUTPUT",
    "ECLIPTIC_DEBUG",
)
SMALL_INVENTORY = """
hosts:
  - {name: cli-a, vcpus: 8, memory_mb: 16384, disk_gb: 500,
     nics: [{name: eth0, speed_gbps: 25, sriov_vfs: 8}]}
  - {name: cli-gpu, vcpus: 32, memory_mb: 262144, disk_gb: 2000,
     gpus: [{model: A100, count: 2, memory_gb: 80}]}
"""


def _local_backend_reason() -> str:
    """Why the local cloud cannot run here ('' when it can)."""
    try:
        from ecliptic.backends.local import LocalBackend  # noqa: F401
    except ImportError as exc:
        return f"the local backend is not available ({exc})"
    if os.geteuid() != 0:
        return "the local backend needs root"
    return ""


@dataclass
class Cloud:
    """A running instance: its URL and a way in for fixtures."""

    url: str
    runtime: Runtime

    def admin(self, tenancy: str | None = "default") -> Client:
        """A client signed in as the administrator."""
        c = Client(self.url, tenancy=tenancy)
        c.login("admin", ADMIN_PASSWORD)
        return c


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """Runtime + API served by uvicorn in a thread; every object is deleted at the end."""
    reason = _local_backend_reason()
    require(not reason, reason)
    tmp = tmp_path_factory.mktemp("cloud")
    inventory = tmp / "inventory.yaml"
    inventory.write_text(SMALL_INVENTORY)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ECLIPTIC_ADMIN_PASSWORD", ADMIN_PASSWORD)
        settings = load_settings(
            data_dir=tmp / "data",
            database_url=migrated_sqlite(tmp / "ecliptic.db"),
            port=port,
            backend="local",
            inventory_path=inventory,
            workers=2,
        )
        # owners_dir comes from ECLIPTIC_OWNERS_DIR, which tests/conftest.py points at a
        # temporary folder that its leak check inspects after the session.
        runtime = Runtime(settings)
        runtime.start()
    server = uvicorn.Server(
        uvicorn.Config(create_app(runtime), log_level="warning", access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.01)
    cloud = Cloud(f"http://127.0.0.1:{port}", runtime)
    try:
        yield cloud
    finally:
        try:
            _delete_everything(cloud)
        finally:
            server.should_exit = True
            thread.join(10)
            sock.close()
            runtime.stop()


def _delete_everything(cloud: Cloud) -> None:
    """Delete every server and network of every tenancy, through the API, and check."""
    with cloud.admin(tenancy=None) as admin:
        tenancies = [t.name for t in admin.tenancies.list()]
        for name in tenancies:
            admin.tenancy = name
            for srv in list(admin.servers.iter()):
                if srv.phase != "DELETING":
                    admin.servers.delete(srv.id)
            for srv in list(admin.servers.iter()):
                admin.servers.wait_deleted(srv.id, timeout=60)
            for port in admin.ports.list():
                if not port.server_id:
                    admin.ports.delete(port.id)
            for net in admin.networks.list():
                try:
                    admin.networks.delete(net.id)
                except ApiError as exc:
                    if exc.status != 404:
                        raise
                admin.networks.wait_deleted(net.id, timeout=60)
        admin.tenancy = None
        left = admin.backend_status().resources
        assert not left, f"the backend still holds {left}"


@pytest.fixture(autouse=True)
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private config dir per test, and none of the caller's ECLIPTIC_* settings."""
    for var in CLI_ENV:
        monkeypatch.delenv(var, raising=False)
    config = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    return config


class Cli:
    """Runs ``ecliptic`` in-process, the way a user types it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()

    def __call__(self, *args: str, input: str | None = None) -> Result:
        """Run one command; the result has ``exit_code``, ``stdout`` and ``stderr``."""
        return self.runner.invoke(app, list(args), input=input, catch_exceptions=False)

    def login(self, user: str = "admin", password: str = ADMIN_PASSWORD, *extra: str) -> Result:
        """``ecliptic login`` with the password on stdin; asserts it worked."""
        res = self(
            "login", "--url", self.url, "--user", user, "--password-stdin", *extra, input=password
        )
        assert res.exit_code == 0, res.output
        return res


@pytest.fixture
def cli(cloud: Cloud) -> Cli:
    """The CLI, not signed in yet, with its own config dir."""
    return Cli(cloud.url)


@pytest.fixture
def admin_cli(cli: Cli) -> Cli:
    """The CLI signed in as the administrator, in tenancy 'default'."""
    cli.login()
    return cli


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
