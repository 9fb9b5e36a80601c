"""A login shell on a pseudo-terminal of its own, in a session of its own, and its hangup.

The shell is the leader of a new session whose controlling terminal is the PTY, as after
a login: its jobs are process groups of that session. Hanging up signals the whole session
(the shell and every job, background ones included), not only the foreground group; what
ignores SIGHUP is killed after a grace. Only a process that left the session (``setsid``)
outlives its terminal, as it would outlive an SSH login.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import struct
import termios
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def _set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _members(sid: int) -> list[int]:
    """The live processes (zombies left out) of session ``sid``."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 3 and fields[0] != "Z" and fields[3] == str(sid):
            found.append(int(entry.name))
    return found


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class Shell:
    """A running shell: its PID, the PTY's master side and a pidfd that says when it ends."""

    def __init__(self, pid: int, master: int, pidfd: int) -> None:
        self.pid = pid
        self.master = master
        self.pidfd = pidfd
        self._reaped = False

    @classmethod
    def spawn(
        cls,
        argv: Sequence[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        cols: int = 80,
        rows: int = 24,
    ) -> Shell:
        """Start ``argv`` on a new PTY of ``cols`` x ``rows``, in a new session."""
        master, slave = os.openpty()
        try:
            _set_size(slave, cols, rows)
            pid = os.fork()
            if pid == 0:  # pragma: no cover - the child only execs
                try:
                    os.close(master)
                    os.login_tty(slave)  # setsid, controlling terminal, fds 0-2
                    with contextlib.suppress(OSError):
                        os.chdir(cwd)
                    os.execve(argv[0], list(argv), dict(env))
                except BaseException as exc:
                    with contextlib.suppress(BaseException):
                        os.write(2, f"cannot start {argv[0]}: {exc}\r\n".encode())
                finally:
                    os._exit(127)
        except BaseException:
            os.close(master)
            raise
        finally:
            os.close(slave)
        os.set_blocking(master, False)
        return cls(pid, master, os.pidfd_open(pid))

    def resize(self, cols: int, rows: int) -> None:
        """Set the terminal's size (the shell's foreground job gets SIGWINCH)."""
        with contextlib.suppress(OSError):
            _set_size(self.master, cols, rows)

    def running(self) -> bool:
        """True while the shell has not exited."""
        return os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None

    async def exited(self) -> None:
        """Return once the shell has exited (it is not reaped: ``hang_up`` does that)."""
        if not self.running():
            return
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        loop.add_reader(self.pidfd, _wake, done)
        try:
            await done
        finally:
            loop.remove_reader(self.pidfd)

    def exit_reason(self) -> str:
        """How the shell ended, for people: ``shell exited (status 0)``."""
        info = os.waitid(os.P_PID, self.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is None:
            return "shell still running"
        if info.si_code == os.CLD_EXITED:
            return f"shell exited (status {info.si_status})"
        return f"shell killed by {signal.Signals(info.si_status).name}"

    def _signal_session(self, sig: int) -> None:
        # Before the shell is reaped its PID cannot be reused, so the session id is its own.
        for pid in _members(self.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    async def hang_up(self, grace: float) -> None:
        """Close the terminal: SIGHUP to the session, SIGKILL to what is left after
        ``grace`` seconds, then reap the shell. Safe to call once the shell has exited."""
        if self._reaped:
            return
        try:
            with contextlib.suppress(OSError):
                os.close(self.master)  # the kernel hangs the terminal up too
            self._signal_session(signal.SIGHUP)
            self._signal_session(signal.SIGCONT)  # stopped jobs act on SIGHUP only once resumed
            deadline = time.monotonic() + grace
            while _members(self.pid) and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        finally:
            self._signal_session(signal.SIGKILL)
            os.waitpid(self.pid, 0)
            os.close(self.pidfd)
            self._reaped = True
