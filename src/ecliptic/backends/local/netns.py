"""Named network namespaces (``/run/netns/<name>``), made without forking.

``unshare(CLONE_NEWNET)`` and ``setns`` only change the calling *thread*, so a short-lived
helper thread enters (or creates) the namespace, bind-mounts it / opens a netlink socket
there, and exits; the socket stays bound to the namespace. This is what ``ip netns add`` does,
minus the process: about 1 ms per namespace instead of a fork of the Python interpreter.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from pyroute2 import IPRoute

NETNS_DIR = Path("/run/netns")

CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MS_REC = 16384
_MS_SHARED = 1 << 20
_MNT_DETACH = 2
_NETLINK_ROUTE = 0

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_rundir_lock = threading.Lock()
_rundir_ready = False
_nsfs_dev: int | None = None

T = TypeVar("T")


def path(name: str) -> Path:
    """Mount point of namespace ``name``."""
    return NETNS_DIR / name


def _nsfs() -> int:
    global _nsfs_dev
    if _nsfs_dev is None:
        _nsfs_dev = os.stat("/proc/self/ns/net").st_dev
    return _nsfs_dev


def inode(name: str) -> int | None:
    """Inode of namespace ``name`` (as in ``/proc/<pid>/ns/net``), None when not there."""
    try:
        st = os.stat(path(name))
    except OSError:
        return None
    return st.st_ino if st.st_dev == _nsfs() else None


def exists(name: str) -> bool:
    """True when ``name`` is a mounted network namespace."""
    return inode(name) is not None


def list_names(prefix: str = "") -> list[str]:
    """Names under ``/run/netns`` starting with ``prefix`` (mounted or not)."""
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def _prepare_rundir() -> None:
    """Create ``/run/netns`` as a shared mount, as iproute2 does."""
    global _rundir_ready
    with _rundir_lock:
        if _rundir_ready:
            return
        NETNS_DIR.mkdir(parents=True, exist_ok=True)
        d = str(NETNS_DIR).encode()
        if _libc.mount(b"", d, b"none", _MS_SHARED | _MS_REC, None) != 0:
            if _libc.mount(d, d, b"none", _MS_BIND | _MS_REC, None) != 0:
                raise OSError(ctypes.get_errno(), f"bind mount of {NETNS_DIR} failed")
            if _libc.mount(b"", d, b"none", _MS_SHARED | _MS_REC, None) != 0:
                raise OSError(ctypes.get_errno(), f"making {NETNS_DIR} shared failed")
        _rundir_ready = True


def _in_thread(fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread (which may change its namespace) and return its result."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["value"] = fn()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=body, name="ecliptic-netns", daemon=True)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _netlink_socket() -> int:
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_ROUTE)
    return s.detach()


def create(name: str) -> bool:
    """Create namespace ``name`` unless it exists; True when created."""
    if exists(name):
        return False
    _prepare_rundir()
    target = path(name)
    # A crash between creating the mount point and mounting leaves an empty file: reuse it.
    os.close(os.open(target, os.O_RDONLY | os.O_CREAT, 0))

    def body() -> None:
        if _libc.unshare(CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) failed")
        src = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        if _libc.mount(src, str(target).encode(), b"none", _MS_BIND, None) != 0:
            raise OSError(ctypes.get_errno(), f"bind mount of {target} failed")

    _in_thread(body)
    return True


def remove(name: str) -> None:
    """Unmount and unlink namespace ``name``; no error if it is not there."""
    target = path(name)
    if _libc.umount2(str(target).encode(), _MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"umount of {target} failed")
    with contextlib.suppress(FileNotFoundError):
        target.unlink()


def open_fd(name: str) -> int:
    """An O_RDONLY fd on namespace ``name`` (for ``net_ns_fd``); caller closes it."""
    if not exists(name):
        raise FileNotFoundError(errno.ENOENT, "no such network namespace", str(path(name)))
    return os.open(path(name), os.O_RDONLY | os.O_CLOEXEC)


def iproute(name: str) -> Any:
    """An ``IPRoute`` talking to namespace ``name``; caller closes it."""
    nsfd = open_fd(name)

    def body() -> int:
        if _libc.setns(nsfd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns into {name} failed")
        return _netlink_socket()

    try:
        fd = _in_thread(body)
    finally:
        os.close(nsfd)
    return IPRoute(fileno=fd)
