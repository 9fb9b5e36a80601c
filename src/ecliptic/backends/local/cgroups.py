"""Flavor limits as cgroup v1 groups: ``<root>/{cpu,memory,pids}/ecliptic/<server netns
name>``: CPU quota and memory of the flavor, and a bound on processes (a fork bomb in a
server exhausts its own, not the host's)."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ROOT = Path("/sys/fs/cgroup")
CONTROLLERS = ("cpu", "memory", "pids")
PIDS_PER_VCPU = 1024
"""Processes (and threads) a server may have, per vCPU of its flavor."""
PARENT = "ecliptic"
CFS_PERIOD_US = 100_000


@dataclass(frozen=True)
class LimitsResult:
    """Outcome of applying a flavor's limits."""

    applied: bool
    note: str
    changed: bool


class CgroupManager:
    """Creates, fills and removes the per-server cgroups under one cgroup v1 root."""

    def __init__(self, root: Path = DEFAULT_ROOT) -> None:
        self.root = root

    def dir(self, controller: str, name: str) -> Path:
        """The cgroup directory of server ``name`` in ``controller``."""
        return self.root / controller / PARENT / name

    def existing_dirs(self, name: str) -> list[Path]:
        """Cgroup directories of ``name`` that exist."""
        return [d for c in CONTROLLERS if (d := self.dir(c, name)).is_dir()]

    def procs_files(self, name: str) -> list[Path]:
        """``cgroup.procs`` files a process of server ``name`` must join."""
        return [d / "cgroup.procs" for d in self.existing_dirs(name)]

    def ensure(self, name: str, *, vcpus: int, memory_mb: int) -> LimitsResult:
        """Create the cgroups of ``name`` and write the CPU quota and memory limit."""
        wanted = {
            "cpu": [
                ("cpu.cfs_period_us", str(CFS_PERIOD_US)),
                ("cpu.cfs_quota_us", str(vcpus * CFS_PERIOD_US)),
            ],
            "memory": [("memory.limit_in_bytes", str(memory_mb * 1024 * 1024))],
            "pids": [("pids.max", str(max(1, vcpus) * PIDS_PER_VCPU))],
        }
        problems: list[str] = []
        changed = False
        for controller, settings in wanted.items():
            base = self.root / controller
            if not (base / "cgroup.procs").exists():
                problems.append(f"cgroup v1 {controller} controller not mounted at {base}")
                continue
            d = self.dir(controller, name)
            try:
                if not d.is_dir():
                    d.mkdir(parents=True, exist_ok=True)
                    changed = True
                for fname, value in settings:
                    f = d / fname
                    if f.read_text().strip() != value:
                        f.write_text(value)
                        changed = True
            except OSError as e:
                problems.append(f"cannot set {controller} limits in {d}: {e.strerror or e}")
        if problems:
            return LimitsResult(False, "; ".join(problems), changed)
        return LimitsResult(True, "", changed)

    def oom_kills(self, name: str) -> int:
        """Processes of ``name`` the kernel has killed for exceeding its memory limit."""
        try:
            text = (self.dir("memory", name) / "memory.oom_control").read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def pids(self, name: str) -> set[int]:
        """Processes in the cgroups of ``name``."""
        out: set[int] = set()
        for f in self.procs_files(name):
            with contextlib.suppress(OSError):
                out.update(int(x) for x in f.read_text().split())
        return out

    def contains(self, name: str, pid: int) -> bool:
        """True when process ``pid`` is in a cgroup of ``name`` (read from /proc)."""
        try:
            text = Path(f"/proc/{pid}/cgroup").read_text()
        except OSError:
            return False
        suffix = f":/{PARENT}/{name}"
        return any(line.endswith(suffix) for line in text.splitlines())

    def remove(self, name: str, *, wait_s: float = 1.0) -> list[str]:
        """Remove the cgroups of ``name`` (retrying while tasks leave); returns the failures."""
        failures: list[str] = []
        for controller in CONTROLLERS:
            d = self.dir(controller, name)
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    if e.errno == errno.EBUSY and time.monotonic() < deadline:
                        time.sleep(0.01)
                        continue
                    failures.append(f"{d}: {e.strerror}")
                    break
        return failures
