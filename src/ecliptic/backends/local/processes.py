"""Processes inside servers: ``run``, pid checks, kill.

Processes are stopped only by PID, through pidfds: a pidfd is opened first and the process'
identity (network namespace inode, cgroup) checked afterwards, so a recycled PID can never be
signalled by mistake.
"""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from ecliptic.backends.base import RunResult
from ecliptic.files import write_atomic

BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
OUTPUT_LIMIT = 1 << 20
TIMEOUT_EXIT_CODE = 124


def clean_env(
    hostname: str, extra: Mapping[str, str] | Iterable[tuple[str, str]] = ()
) -> dict[str, str]:
    """The small environment processes in servers get."""
    env = {"PATH": BASE_PATH, "HOME": "/root", "LANG": "C.UTF-8", "HOSTNAME": hostname}
    env.update(dict(extra))
    return env


def run_command(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    timeout: float,
    stdin: bytes | None = None,
    cwd: str | None = None,
    limit: int = OUTPUT_LIMIT,
) -> RunResult:
    """Run ``argv`` in its own session; bounded output; kill its process group on timeout."""
    start = time.monotonic()
    deadline = start + max(0.0, timeout)
    proc = subprocess.Popen(
        list(argv),
        stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    in_fd = proc.stdin.fileno() if proc.stdin is not None else -1
    bufs = {out_fd: bytearray(), err_fd: bytearray()}
    data_in = memoryview(stdin or b"")
    pos = 0
    timed_out = False
    sel = selectors.DefaultSelector()
    try:
        sel.register(out_fd, selectors.EVENT_READ)
        sel.register(err_fd, selectors.EVENT_READ)
        if in_fd >= 0:
            os.set_blocking(in_fd, False)
            sel.register(in_fd, selectors.EVENT_WRITE)
        drain_until: float | None = None
        while sel.get_map():
            now = time.monotonic()
            if drain_until is None and proc.poll() is not None:
                # Exited, but a background child may hold the pipes: read briefly, then stop.
                drain_until = now + 0.5
            if drain_until is not None and now >= drain_until:
                break
            if now >= deadline:
                timed_out = proc.poll() is None
                break
            wait = min(deadline - now, 0.1 if drain_until is None else drain_until - now)
            for key, _ in sel.select(max(0.0, wait)):
                fd = int(key.fd)
                if fd == in_fd:
                    try:
                        pos += os.write(fd, data_in[pos : pos + 65536])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        pos = len(data_in)
                    if pos >= len(data_in):
                        sel.unregister(fd)
                        assert proc.stdin is not None
                        proc.stdin.close()
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    sel.unregister(fd)
                    continue
                room = limit - len(bufs[fd])
                if room > 0:
                    bufs[fd] += chunk[:room]
        if proc.poll() is None and not timed_out:
            # Pipes closed early but the process lives on: wait for it within the deadline.
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        sel.close()
        if proc.poll() is None:
            timed_out = True
            # The leader is not reaped yet, so its PID (= the group id) cannot be recycled.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        proc.wait()
    return RunResult(
        exit_code=TIMEOUT_EXIT_CODE if timed_out else int(proc.returncode),
        stdout=bytes(bufs[out_fd]),
        stderr=bytes(bufs[err_fd]),
        duration_s=time.monotonic() - start,
        timed_out=timed_out,
    )


def net_inode(pid: int) -> int | None:
    """Inode of the network namespace of ``pid`` (None if gone, a zombie, or unreadable)."""
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    if not fields or fields[0] == "Z":
        return None
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def describe(pid: int) -> str:
    """``pid=<n> cmd=<command line>`` for people reading observe output."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        raw = b""
    cmd = raw.replace(b"\0", b" ").decode(errors="replace").strip()
    return f"pid={pid} cmd={cmd[:200]}"


def comm(pid: int) -> str:
    """Short process name."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def pids_by_netns(inodes: Iterable[int]) -> dict[int, list[int]]:
    """Processes whose network namespace is one of ``inodes`` (one /proc scan)."""
    wanted = set(inodes)
    out: dict[int, list[int]] = {i: [] for i in wanted}
    if not wanted:
        return out
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        pid = int(entry)
        if pid == me:
            continue
        ino = net_inode(pid)
        if ino in wanted:
            out[ino].append(pid)
    return out


def _wait_exit(fds: dict[int, int], timeout: float) -> dict[int, int]:
    """Wait until the pidfds become readable (process exited); returns those still alive."""
    pending = dict(fds)
    deadline = time.monotonic() + timeout
    while pending:
        poller = select.poll()
        for fd in pending.values():
            poller.register(fd, select.POLLIN)
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready = {fd for fd, _ in poller.poll(left * 1000)}
        pending = {pid: fd for pid, fd in pending.items() if fd not in ready}
    return pending


def terminate(
    pids: Iterable[int],
    *,
    verify: Callable[[int], bool],
    grace: float,
    kill_wait: float = 2.0,
) -> list[int]:
    """SIGTERM verified ``pids``, SIGKILL those alive after ``grace``; returns those signalled."""
    fds: dict[int, int] = {}
    me = os.getpid()
    try:
        for pid in set(pids):
            if pid == me:
                continue
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            if verify(pid):  # checked after the pidfd pins the process: no PID-reuse race
                fds[pid] = fd
            else:
                os.close(fd)
        for fd in fds.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGTERM)
        alive = _wait_exit(fds, grace)
        for fd in alive.values():
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)
        _wait_exit(alive, kill_wait)
        return sorted(fds)
    finally:
        for fd in fds.values():
            os.close(fd)


def read_pidfile(path: Path) -> tuple[int, int | None] | None:
    """``(pid, start time)`` from a service pidfile, None if missing or malformed."""
    try:
        parts = path.read_text().split()
    except OSError:
        return None
    try:
        pid = int(parts[0])
        started = int(parts[1]) if len(parts) > 1 else None
    except (IndexError, ValueError):
        return None
    return (pid, started) if pid > 0 else None


def write_pidfile(path: Path, pid: int) -> None:
    """Atomically record ``pid`` and its start time."""
    write_atomic(path, f"{pid} {start_time(pid) or 0}\n")


def live_pid(path: Path, ns_inode: int | None) -> int | None:
    """The pid in ``path`` if that process is alive, unchanged and inside namespace ``ns_inode``."""
    if ns_inode is None:
        return None
    rec = read_pidfile(path)
    if rec is None:
        return None
    pid, started = rec
    if net_inode(pid) != ns_inode:
        return None
    if started and start_time(pid) != started:
        return None
    return pid
