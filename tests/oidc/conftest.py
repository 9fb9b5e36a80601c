"""A real OpenID provider (npm's oidc-provider, run by node) and an Ecliptic that signs in
with it, both on loopback, for the session; and a browser that goes through the provider's
real sign-in and consent pages."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
import uvicorn

from ecliptic.api.app import create_app
from ecliptic.config import load_settings
from ecliptic.runtime import Runtime
from ecliptic.store.models import Tenancy
from tests.conftest import migrated_sqlite
from tests.ports import free_port
from tests.prerequisites import require

ROOT = Path(__file__).resolve().parents[2]
NODE_MODULES = ROOT / "src" / "ecliptic" / "web" / "node_modules"
PROVIDER_JS = Path(__file__).with_name("provider.mjs")
CLIENT_ID = "ecliptic-tests"
CLIENT_SECRET = "a secret: with 'quotes' & spaces"  # form-encoded for client_secret_basic
GROUPS = (
    "physics=physics:member,physics-admins=physics:admin,cloud-ops=*:admin,chem=chemistry:member"
)
ACCOUNTS: dict[str, dict[str, Any]] = {
    "alice": {"sub": "sub-alice", "groups": ["physics"]},
    "bob": {"sub": "sub-bob", "groups": ["chem", "cloud-ops"]},
    "carol": {"sub": "sub-carol", "groups": ["marketing"]},
    "dave": {"sub": "sub-dave", "groups": ["physics"]},
    "erin": {"sub": "sub-erin", "preferred_username": "Erin.Smith@uni.example", "groups": ["chem"]},
}
TENANCIES = ("physics", "chemistry")
SMALL_INVENTORY = """
hosts:
  - {name: oidc-a, vcpus: 4, memory_mb: 8192, disk_gb: 100}
"""


@dataclass
class OpenIdProvider:
    """The running provider: its issuer URL and the accounts file it reads at each sign-in."""

    issuer: str
    accounts_file: Path
    pid: int

    def set_groups(self, login: str, groups: list[str]) -> None:
        """Change a user's groups at the provider (seen at their next sign-in)."""
        accounts = json.loads(self.accounts_file.read_text())
        accounts[login]["groups"] = groups
        self.accounts_file.write_text(json.dumps(accounts))


def _node_prerequisites() -> None:
    node = shutil.which("node")
    require(node is not None, "node (the tests run npm's oidc-provider): apt-get install nodejs")
    require(
        (NODE_MODULES / "oidc-provider" / "package.json").exists(),
        f"oidc-provider in {NODE_MODULES} (run: make src/ecliptic/web/node_modules/.installed)",
    )


@pytest.fixture(scope="session")
def ecliptic_port() -> int:
    """The port the Ecliptic under test listens on (the provider must know its callback)."""
    return free_port()


@pytest.fixture(scope="session")
def provider(
    tmp_path_factory: pytest.TempPathFactory, ecliptic_port: int
) -> Iterator[OpenIdProvider]:
    """npm's oidc-provider on a free loopback port, stopped by its PID at the end."""
    _node_prerequisites()
    tmp = tmp_path_factory.mktemp("op")
    accounts = tmp / "accounts.json"
    accounts.write_text(json.dumps(ACCOUNTS))
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp),
        "OP_MODULES": str(NODE_MODULES),
        "OP_PORT": str(port),
        "OP_ACCOUNTS": str(accounts),
        "OP_CLIENT": json.dumps(
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uri": f"http://127.0.0.1:{ecliptic_port}/login/oidc/callback",
            }
        ),
    }
    log = tmp / "provider.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["node", str(PROVIDER_JS)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    issuer = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"the provider exited:\n{log.read_text()}"
            try:
                if httpx.get(f"{issuer}/.well-known/openid-configuration").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"the provider did not start:\n{log.read_text()}"
            time.sleep(0.05)
        yield OpenIdProvider(issuer, accounts, proc.pid)
    finally:
        os.kill(proc.pid, 15)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, 9)
            proc.wait(5)


@dataclass
class Ecliptic:
    """The instance under test: its URL and runtime."""

    url: str
    runtime: Runtime


def start_runtime(tmp: Path, env: dict[str, str], port: int = 0) -> Runtime:
    """A runtime (no workers) whose settings read ``env`` on top of the test environment."""
    inventory = tmp / "inventory.yaml"
    inventory.write_text(SMALL_INVENTORY)
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("ECLIPTIC_OIDC_")]:
            mp.delenv(name)
        for name, value in env.items():
            mp.setenv(name, value)
        settings = load_settings(
            data_dir=tmp / "data",
            database_url=migrated_sqlite(tmp / "ecliptic.db"),
            port=port or None,
            inventory_path=inventory,
            workers=0,
        )
    rt = Runtime(settings)
    rt.start(workers=False)
    return rt


@pytest.fixture(scope="session")
def ecliptic(
    tmp_path_factory: pytest.TempPathFactory, provider: OpenIdProvider, ecliptic_port: int
) -> Iterator[Ecliptic]:
    """Ecliptic with the provider configured, served by uvicorn in a thread on loopback."""
    env = {
        "ECLIPTIC_OIDC_ISSUER": provider.issuer,
        "ECLIPTIC_OIDC_CLIENT_ID": CLIENT_ID,
        "ECLIPTIC_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "ECLIPTIC_OIDC_GROUPS": GROUPS,
    }
    rt = start_runtime(tmp_path_factory.mktemp("ecliptic"), env, ecliptic_port)
    with rt.db.write() as session:
        session.add_all([Tenancy(name=name) for name in TENANCIES])
    sock = socket.socket()
    sock.bind(("127.0.0.1", ecliptic_port))
    server = uvicorn.Server(
        uvicorn.Config(create_app(rt), log_level="warning", access_log=False, lifespan="off")
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the API did not start"
        time.sleep(0.01)
    try:
        yield Ecliptic(f"http://127.0.0.1:{ecliptic_port}", rt)
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        rt.stop()


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"[^>]*>(.*?)</form>', re.S)
_HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)"')
_CANCEL = re.compile(r'<a href="([^"]+)">\[ Cancel \]</a>')


class Browser:
    """A browser (cookie jar, no JavaScript) that signs in through the provider's pages."""

    def __init__(self, ecliptic: Ecliptic) -> None:
        self.ecliptic = ecliptic
        self.http = httpx.Client(follow_redirects=False, timeout=10)

    def close(self) -> None:
        """Drop the connections."""
        self.http.close()

    def to_callback(self, login: str, next: str = "/", *, cancel: bool = False) -> str:
        """Start at ``/login/oidc``, go through the provider's login and consent forms as
        ``login`` (or cancel there); the URL the provider sends the browser back to."""
        r = self.http.get(f"{self.ecliptic.url}/login/oidc", params={"next": next})
        callback = f"{self.ecliptic.url}/login/oidc/callback"
        for _ in range(12):
            if r.is_redirect:
                target = urljoin(str(r.url), r.headers["location"])
                if target.startswith(callback):
                    return target
                r = self.http.get(target)
                continue
            assert r.status_code == 200, f"{r.url}: {r.status_code} {r.text[:500]}"
            if cancel:
                link = _CANCEL.search(r.text)
                assert link, r.text
                r = self.http.get(urljoin(str(r.url), unescape(link[1])))
                continue
            form = _FORM.search(r.text)
            assert form, f"no form on {r.url}: {r.text[:500]}"
            data = {k: unescape(v) for k, v in _HIDDEN.findall(form[2])}
            if data.get("prompt") == "login":
                data.update(login=login, password="any password")
            r = self.http.post(urljoin(str(r.url), unescape(form[1])), data=data)
        raise AssertionError("the provider never sent the browser back")

    def sign_in(self, login: str, next: str = "/") -> httpx.Response:
        """The whole sign-in; Ecliptic's answer to the callback."""
        return self.http.get(self.to_callback(login, next))

    def portal_cookie(self) -> str | None:
        """The portal cookie Ecliptic set, if any."""
        return self.http.cookies.get("ecliptic_session")


@pytest.fixture
def browser(ecliptic: Ecliptic) -> Iterator[Browser]:
    """A fresh browser: no cookies, at Ecliptic or at the provider."""
    b = Browser(ecliptic)
    try:
        yield b
    finally:
        b.close()
