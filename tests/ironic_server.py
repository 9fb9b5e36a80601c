"""A real standalone Ironic for the tests: API and conductor in one ``ironic`` process.

Fake hardware, no authentication, no RPC bus, SQLite, on a free 127.0.0.1 port, all its
files in one work folder. ``kill()`` is a crashed conductor (SIGKILL, nothing cleaned up);
``restart()`` starts it again on the same database and port, as an operator would.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import IO, Any

from tests.ports import free_port

CONF = """\
[DEFAULT]
auth_strategy = noauth
rpc_transport = none
host = test-conductor
log_file = {d}/ironic.log
use_stderr = false
enabled_hardware_types = fake-hardware
enabled_bios_interfaces = fake,no-bios
enabled_boot_interfaces = fake
enabled_console_interfaces = fake,no-console
enabled_deploy_interfaces = fake
enabled_firmware_interfaces = fake,no-firmware
enabled_inspect_interfaces = fake,no-inspect
enabled_management_interfaces = fake
enabled_network_interfaces = noop
enabled_power_interfaces = fake
enabled_raid_interfaces = fake,no-raid
enabled_rescue_interfaces = fake,no-rescue
enabled_storage_interfaces = fake,noop
enabled_vendor_interfaces = fake,no-vendor
default_deploy_interface = fake
default_network_interface = noop
default_resource_class = baremetal

[api]
host_ip = 127.0.0.1
port = {port}
api_workers = 1

[database]
connection = sqlite:///{d}/ironic.sqlite

[dhcp]
dhcp_provider = none

[conductor]
automated_clean = {clean}
heartbeat_interval = 5
sync_power_state_interval = 60
check_provision_state_interval = 10
{lock_retry}
[fake]
{fake}

[oslo_concurrency]
lock_path = {d}/locks
"""


class IronicServer:
    """One Ironic process group, started and stopped by its own PID."""

    def __init__(
        self,
        venv_bin: Path | str,
        workdir: Path | str,
        *,
        automated_clean: bool = True,
        fake_delays: dict[str, str] | None = None,
        lock_retries: int | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        self.bin = Path(venv_bin)
        self.dir = Path(workdir)
        self.automated_clean = automated_clean
        self.fake_delays = dict(fake_delays or {})
        self.lock_retries = lock_retries
        """Ironic's own attempts at a node's lock (3, 1 s apart, by default) before 409."""
        self.start_timeout = start_timeout
        self.port: int | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._out: IO[bytes] | None = None
        self.timings: dict[str, float] = {}
        """Seconds: ``dbsync`` (first start), ``start`` (to ready), ``stop``."""

    @property
    def url(self) -> str:
        """The API's base URL (without ``/v1``)."""
        if self.port is None:
            raise RuntimeError("Ironic was never started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def conf(self) -> Path:
        """Its configuration file."""
        return self.dir / "ironic.conf"

    def running(self) -> bool:
        """True while its main process lives."""
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> IronicServer:
        """Start it (creating its database the first time) and wait until it serves."""
        if self.running():
            return self
        (self.dir / "locks").mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        self._write_conf()
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        if not (self.dir / "ironic.sqlite").exists():
            t0 = time.monotonic()
            subprocess.run(
                [str(self.bin / "ironic-dbsync"), "--config-file", str(self.conf), "create_schema"],
                check=True,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            self.timings["dbsync"] = time.monotonic() - t0
        t0 = time.monotonic()
        self._out = open(self.dir / "stdout.log", "ab")  # noqa: SIM115  (closed by stop)
        # A session of its own: its master and forked worker share one process group.
        self.proc = subprocess.Popen(
            [str(self.bin / "ironic"), "--config-file", str(self.conf)],
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.kill()
            raise
        self.timings["start"] = time.monotonic() - t0
        return self

    def _write_conf(self) -> None:
        lock_retry = ""
        if self.lock_retries is not None:
            lock_retry = f"node_locked_retry_attempts = {self.lock_retries}\n"
        fake = "\n".join(f"{k} = {v}" for k, v in sorted(self.fake_delays.items()))
        self.conf.write_text(
            CONF.format(
                d=self.dir,
                port=self.port,
                clean="true" if self.automated_clean else "false",
                lock_retry=lock_retry,
                fake=fake,
            )
        )

    def _wait_ready(self) -> None:
        """Until ``/v1/drivers`` lists fake-hardware: the conductor has registered."""
        assert self.proc is not None
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"ironic exited with {self.proc.returncode}; see {self.dir}/ironic.log"
                )
            try:
                with urllib.request.urlopen(self.url + "/v1/drivers", timeout=2) as r:
                    drivers = json.load(r).get("drivers", [])
                if any(d.get("name") == "fake-hardware" for d in drivers):
                    return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"ironic did not serve within {self.start_timeout} s; see {self.dir}"
                )
            time.sleep(0.1)

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM its process group (a graceful conductor shutdown); SIGKILL after ``grace``."""
        if self.proc is not None:
            t0 = time.monotonic()
            if self.proc.poll() is None:
                self._signal(signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(grace)
            self._signal(signal.SIGKILL)  # the worker may outlive the master
            self.proc.wait()
            self.timings["stop"] = time.monotonic() - t0
        self._close()

    def kill(self) -> None:
        """SIGKILL its process group: a crashed conductor, locks and states left as they were."""
        if self.proc is not None:
            self._signal(signal.SIGKILL)
            self.proc.wait()
        self._close()

    def restart(self) -> IronicServer:
        """Start it again on the same database and port (stopping it first if it runs)."""
        if self.running():
            self.stop()
        return self.start()

    def _close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None

    def connect(self) -> Any:
        """An openstacksdk Connection to it (no auth; no client-side retry of 409/503)."""
        import openstack

        return openstack.connect(
            load_yaml_config=False,
            load_envvars=False,
            auth_type="none",
            baremetal_endpoint_override=self.url,
            baremetal_status_code_retries=0,
        )

    def log(self) -> str:
        """Ironic's log so far (for assertion messages)."""
        try:
            return (self.dir / "ironic.log").read_text(errors="replace")
        except OSError:
            return ""

    def __enter__(self) -> IronicServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
