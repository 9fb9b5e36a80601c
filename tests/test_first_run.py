"""The README's first command, from a fresh clone in a folder only root can enter.

A new user clones into their home folder (mode 0700) and types ``make run``. The gateway's
SSH endpoint runs as the unprivileged ``tunnel`` account, which cannot enter that folder, so
this checks the whole path: setup from the clone, ``ecliptic serve`` with the gateway *on*
(it must refuse to start rather than warn when the gateway cannot run), a stock OpenSSH
client answered by the endpoint, and a clean stop.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from tests.ports import free_port as _free_port

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A clone of this checkout's HEAD in a 0700 folder."""
    if os.geteuid() != 0:
        pytest.fail("the first-run test needs root (make run sets up the local cloud)")
    home = tmp_path_factory.mktemp("ecl-home")
    home.chmod(0o700)
    target = home / "ecliptic"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(target)], check=True)
    yield target
    shutil.rmtree(home, ignore_errors=True)


def _env(clone: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECLIPTIC_")}
    env.update(
        ECLIPTIC_DATA_DIR=str(clone / "data"),
        ECLIPTIC_OWNERS_DIR=os.environ.get("ECLIPTIC_OWNERS_DIR", "/run/ecliptic/owners"),
        # The clone builds tunneld with this checkout's Go cache: same inputs, no rebuild.
        GOCACHE=str(ROOT / ".cache" / "go-build"),
        **extra,
    )
    return env


def _wait(pred: object, timeout: float, what: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"make run exited ({proc.returncode}) before {what}")
        if pred():  # type: ignore[operator]
            return
        time.sleep(0.2)
    pytest.fail(f"make run: {what} not within {timeout} s")


def _api_up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _serve_process(make: subprocess.Popen[bytes]) -> psutil.Process | None:
    for child in psutil.Process(make.pid).children(recursive=True):
        try:
            if "serve" in child.cmdline():
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def test_make_run_from_a_private_folder_serves_with_its_gateway(clone: Path) -> None:
    api, http, ssh, jump = (_free_port() for _ in range(4))
    env = _env(
        clone,
        ECLIPTIC_PORT=str(api),
        ECLIPTIC_GATEWAY="on",
        ECLIPTIC_GATEWAY_HTTP_PORT=str(http),
        ECLIPTIC_GATEWAY_SSH_HOST="127.0.0.1",
        ECLIPTIC_GATEWAY_SSH_PORT=str(ssh),
        ECLIPTIC_GATEWAY_JUMP_PORT=str(jump),
        ECLIPTIC_GATEWAY_PEER_PORT=str(_free_port()),
    )
    log = clone / "make-run.log"
    with log.open("wb") as out:
        make = subprocess.Popen(
            ["make", "run"], cwd=clone, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        _wait(lambda: _api_up(api), 600, "the API answered", make)
        banner = log.read_text()
        assert "Services:" in banner and f"-p {ssh}" in banner, banner[-2000:]
        assert "Gateway:   OFF" not in banner
        # The endpoint (running as 'tunnel', from a copy outside the 0700 folder) answers a
        # stock OpenSSH client and refuses a key it was never given.
        key = clone / "data" / "probe-key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        probe = subprocess.run(
            [
                "ssh",
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-i",
                str(key),
                "-p",
                str(ssh),
                "-N",
                "tunnel@127.0.0.1",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert probe.returncode == 255
        assert "Permission denied (publickey)" in probe.stderr, probe.stderr
        tunneld = [
            p
            for p in psutil.process_iter(["name", "exe", "username"])
            if (p.info["name"] or "").startswith("ecliptic-tunnel")
            and p.info["username"] == "tunnel"
            and str(clone) not in (p.info["exe"] or "")
        ]
        assert tunneld, "no ecliptic-tunneld runs as 'tunnel' from outside the checkout"
        serve = _serve_process(make)
        assert serve is not None
        serve.send_signal(signal.SIGTERM)
        assert make.wait(timeout=60) == 0, log.read_text()[-3000:]
        assert "Ecliptic stopped." in log.read_text()
    finally:
        if make.poll() is None:
            serve = _serve_process(make)
            if serve is not None:
                serve.send_signal(signal.SIGTERM)
            try:
                make.wait(timeout=30)
            except subprocess.TimeoutExpired:
                make.kill()


@contextlib.contextmanager
def _ssh_port_taken(clone: Path, gateway: str) -> Iterator[tuple[int, dict[str, str]]]:
    """An API port and the environment of a serve whose SSH endpoint cannot listen."""
    api = _free_port()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        yield (
            api,
            _env(
                clone,
                ECLIPTIC_PORT=str(api),
                ECLIPTIC_GATEWAY=gateway,
                ECLIPTIC_GATEWAY_HTTP_PORT=str(_free_port()),
                ECLIPTIC_GATEWAY_SSH_HOST="127.0.0.1",
                ECLIPTIC_GATEWAY_SSH_PORT=str(busy.getsockname()[1]),
                ECLIPTIC_GATEWAY_JUMP_PORT=str(_free_port()),
                ECLIPTIC_GATEWAY_PEER_PORT=str(_free_port()),
            ),
        )


def test_gateway_on_that_cannot_start_stops_serve_loudly(clone: Path) -> None:
    """ECLIPTIC_GATEWAY=on is a promise: serve exits non-zero and says why and how to fix."""
    with _ssh_port_taken(clone, "on") as (api, env):
        done = subprocess.run(
            [str(clone / ".venv" / "bin" / "ecliptic"), "serve"],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode != 0
    assert "cannot start the tunnel gateway (ECLIPTIC_GATEWAY=on)" in done.stderr, done.stderr
    assert not _api_up(api)


def test_auto_gateway_that_cannot_start_says_so_in_the_banner(clone: Path) -> None:
    """With ECLIPTIC_GATEWAY=auto, serve runs without it and its banner says what to do."""
    log = clone / "serve-auto.log"
    with _ssh_port_taken(clone, "auto") as (api, env):
        with log.open("wb") as out:
            serve = subprocess.Popen(
                [str(clone / ".venv" / "bin" / "ecliptic"), "serve"],
                cwd=clone,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait(lambda: _api_up(api), 120, "the API answered", serve)
            _wait(lambda: "Sign in:" in log.read_text(), 30, "the banner", serve)
            banner = log.read_text()
            assert "Gateway:   OFF:" in banner, banner
            assert "to turn it on: make setup" in banner
            serve.send_signal(signal.SIGTERM)
            assert serve.wait(timeout=60) == 0
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.wait()
