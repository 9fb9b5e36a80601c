"""A server's sandbox: its init (``ecliptic-sandbox boot``) and the way in (``… enter``).

``ecliptic-sandbox`` (C, ``sandbox/sandbox.c``, built by ``make``) does the privileged
work in one short process: new PID, mount, UTS, IPC and cgroup namespaces joined to the
server's network namespace; an overlayfs root (the server's upper layer over its image's
layers over the *host view*); ``/proc``, a read-only ``/sys``, a minimal ``/dev``, private
``/run`` and ``/tmp``; a container runtime's capability set without ``CAP_MKNOD``; a seccomp
filter. This module prepares its arguments and records the init (PID and start time, so a
recycled PID is never taken for it).

The host view
-------------
The lowest layer is the *host layer* (:func:`host_layer`): the host's Debian system made into
a layer by allow list, so an image is a thin layer over it and a server sees of the host
only its system files. (The host's root itself cannot be a lower layer: overlayfs refuses
layers nested in one another, and the image layers live on the same filesystem.)
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ecliptic.backends.local import processes
from ecliptic.files import write_atomic
from ecliptic.procs import find_program

BINARY = "ecliptic-sandbox"
"""The helper's file name: next to the venv's Python, or on PATH."""
BOOT_TIMEOUT_S = 20.0
ENTER_FAILED = 125
"""Exit status of ``enter`` when it cannot get in (the server is down, a cgroup is gone)."""


class SandboxError(RuntimeError):
    """The sandbox could not be started or entered; the message says why."""


@dataclass(frozen=True)
class Init:
    """A server's init process: its PID and its start time (clock ticks since boot)."""

    pid: int
    start: int


def find_binary(path: str | None = None) -> str | None:
    """The helper to run: ``path``, else the venv's, else one on PATH."""
    return find_program(BINARY, path)


def read_init(path: Path) -> Init | None:
    """The init recorded in ``path``, None if missing or malformed."""
    rec = processes.read_pidfile(path)
    return Init(rec[0], rec[1]) if rec is not None and rec[1] else None


def record_init(path: Path, init: Init) -> None:
    """Record ``init`` atomically."""
    write_atomic(path, f"{init.pid} {init.start}\n")


def alive(init: Init | None) -> bool:
    """True when ``init`` still runs (same PID, same start time)."""
    return init is not None and processes.start_time(init.pid) == init.start


def _check_path(p: Path) -> str:
    s = str(p)
    if any(c in s for c in ",:\\\n") or not p.is_absolute():
        raise SandboxError(f"{s}: sandbox paths must be absolute, without ',', ':' or '\\'")
    return s


def boot(
    binary: str,
    *,
    hostname: str,
    lower: Sequence[Path],
    upper: Path,
    work: Path,
    root: Path,
    console: Path,
    net: Path | None = None,
    cgroup_procs: Iterable[Path] = (),
    grace_s: float = 10.0,
    ro_binds: Sequence[tuple[Path, str]] = (),
) -> Init:
    """Start a sandbox's init; returns it once the root is mounted and capabilities dropped."""
    for d in (upper, work, root):
        d.mkdir(parents=True, exist_ok=True)
    argv = [
        binary,
        "boot",
        "--hostname",
        hostname,
        "--lower",
        ":".join(_check_path(p) for p in lower),
        "--upper",
        _check_path(upper),
        "--work",
        _check_path(work),
        "--root",
        _check_path(root),
        "--console",
        str(console),
        "--grace",
        str(max(0, int(grace_s))),
    ]
    if net is not None:
        argv += ["--net", str(net)]
    for p in cgroup_procs:
        argv += ["--cgroup", str(p)]
    for src, dst in ro_binds:
        argv += ["--ro-bind", str(src), "--at", dst]
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=BOOT_TIMEOUT_S,
            start_new_session=True,
            close_fds=True,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C"},
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SandboxError(f"cannot start the sandbox: {e}") from e
    err = proc.stderr.decode(errors="replace").strip()
    if proc.returncode != 0:
        raise SandboxError(err or f"ecliptic-sandbox boot exited with {proc.returncode}")
    try:
        pid = int(proc.stdout.split()[0])
    except (IndexError, ValueError) as e:
        raise SandboxError(f"ecliptic-sandbox boot printed no pid: {proc.stdout!r}") from e
    started = processes.start_time(pid)
    if started is None:
        raise SandboxError(f"the sandbox's init {pid} exited at once; see the console log")
    return Init(pid, started)


def enter_argv(
    binary: str,
    init: Init,
    argv: Sequence[str],
    *,
    cgroup_procs: Iterable[Path] = (),
    cwd: str | None = None,
    detach: bool = False,
    output: Path | None = None,
) -> list[str]:
    """The command line that runs ``argv`` inside the sandbox of ``init``."""
    out = [binary, "enter", "--pid", str(init.pid), "--start", str(init.start)]
    for p in cgroup_procs:
        out += ["--cgroup", str(p)]
    if cwd:
        out += ["--cwd", cwd]
    if detach:
        out.append("--detach")
    if output is not None:
        out += ["--output", str(output)]
    return [*out, "--", *argv]


# ---------------------------------------------------------------------- the agent

AGENT_DIR = "/opt/ecliptic"
"""Where a server finds Ecliptic's own client (read-only): ``/opt/ecliptic/bin/ecliptic``."""


def agent_binds(state: Path) -> list[tuple[Path, str]]:
    """Read-only mounts that give every server Ecliptic's client (``ecliptic tunnel connect``
    and the rest), as cloud images carry their cloud's agent: the Python it runs on (unless
    it is the system's, which servers see anyway), its packages and a launcher."""
    base = Path(sys.base_prefix).resolve()
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    pkg = Path(__file__).resolve().parents[2]  # the ``ecliptic`` package
    exe = f"python{sys.version_info.major}.{sys.version_info.minor}"
    binds: list[tuple[Path, str]] = []
    env = f"PYTHONPATH={AGENT_DIR}/lib:{AGENT_DIR}/site-packages PYTHONNOUSERSITE=1"
    if base in (Path("/usr"), Path("/")):
        python = f"/usr/bin/{exe}"
    else:
        binds.append((base, f"{AGENT_DIR}/python"))
        python = f"{AGENT_DIR}/python/bin/{exe}"
        # Its libpython is found by a run path of the host's, not there in a server.
        env += f" LD_LIBRARY_PATH={AGENT_DIR}/python/lib"
    binds.append((site, f"{AGENT_DIR}/site-packages"))
    binds.append((pkg, f"{AGENT_DIR}/lib/ecliptic"))
    launcher = state / "bin" / "ecliptic"
    text = (
        "#!/bin/sh\n# Ecliptic's client, as every server has it (read-only, from the host).\n"
        f'{env} exec {python} -m ecliptic.cli.main "$@"\n'
    )
    if not launcher.exists() or launcher.read_text() != text:
        launcher.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(launcher, text)
        launcher.chmod(0o755)
    binds.append((launcher.parent, f"{AGENT_DIR}/bin"))
    return binds


# ---------------------------------------------------------------------- the host view

# The host's system as servers see it: these, and nothing else.
_TOP_SYSTEM = ("bin", "sbin", "lib", "lib32", "lib64", "libx32", "usr")
_EMPTY_DIRS = (
    ("root", 0o700),
    ("home", 0o755),
    ("srv", 0o755),
    ("mnt", 0o755),
    ("media", 0o755),
    ("opt", 0o755),
    ("boot", 0o755),
    ("tmp", 0o1777),
    ("run", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("var", 0o755),
    ("var/lib", 0o755),
    ("var/cache", 0o755),
    ("var/log", 0o755),
    ("var/tmp", 0o1777),
    ("var/mail", 0o2775),
    ("var/spool", 0o755),
    ("var/local", 0o2775),
    ("var/opt", 0o755),
    ("var/backups", 0o755),
)
_VAR_KEPT = (
    "var/lib/dpkg",
    "var/lib/apt",
    "var/lib/ucf",
    "var/lib/pam",
    "var/lib/misc",
    "var/lib/python",
    "var/lib/sgml-base",
    "var/lib/xml-core",
    "var/lib/shells.state",
    "var/cache/debconf",
    "var/cache/ldconfig",
    "var/run",
    "var/lock",
)
_LOCKED = ("etc/shadow", "etc/gshadow")
"""Kept, with every password replaced by ``*``: tools that add users need them."""
HOST_LAYER_VERSION = "1"


def _copy(src: str, dst: Path, *, link: bool) -> None:
    """``cp -a`` (hard links instead of copies when ``link``) of ``src`` to ``dst``."""
    flags = "-al" if link else "-a"
    proc = subprocess.run(["cp", flags, src, str(dst)], capture_output=True, check=False)
    if proc.returncode != 0:
        raise SandboxError(f"cannot copy {src}: {proc.stderr.decode(errors='replace').strip()}")


def _hide_private(base: Path) -> None:
    """Remove every entry under ``base`` that is not readable by everyone (keys, shadow)."""
    for dirpath, dirnames, filenames in os.walk(base):
        for name in [*dirnames, *filenames]:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode) or st.st_mode & stat.S_IROTH:
                continue
            if stat.S_ISDIR(st.st_mode):
                shutil.rmtree(full)
            else:
                os.unlink(full)
        dirnames[:] = [d for d in dirnames if os.path.isdir(os.path.join(dirpath, d))]


def _locked_copy(src: Path, dst: Path) -> None:
    """``/etc/shadow``-style file with every password field locked (``*``)."""
    lines = []
    for line in src.read_text(errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) > 1:
            fields[1] = "*"
        lines.append(":".join(fields))
    dst.write_text("".join(f"{line}\n" for line in lines))
    st = src.stat()
    os.chown(dst, st.st_uid, st.st_gid)
    os.chmod(dst, stat.S_IMODE(st.st_mode))


def host_layer(root: Path, key: str) -> Path:
    """The host's system as a layer: made once per ``key`` (the host's package state).

    An allow list: ``/usr`` and the ``/bin``-style links (hard links to the host's files
    when on the same filesystem, so it costs inodes, not space: a package upgrade on the
    host replaces files, and the layer keeps the old ones until a new layer is made),
    a copy of ``/etc`` without what only root may read (SSH host keys, ``ssl/private``;
    ``shadow`` with every password locked), dpkg's and apt's state, and empty ``/root``,
    ``/home``, ``/opt``, ``/srv``, ``/var/log``... Nothing else of the host is in it: not
    its users' files, not other services' data, not Ecliptic's own.
    """
    final = root / f"host-{key}"
    if (final / ".ecliptic-host-layer").exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".host-{key}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(mode=0o755)
    try:
        same_fs = os.stat("/usr").st_dev == os.stat(root).st_dev
        for name in _TOP_SYSTEM:
            if os.path.lexists("/" + name):
                _copy("/" + name, tmp / name, link=same_fs and not os.path.islink("/" + name))
        for rel, mode in _EMPTY_DIRS:
            (tmp / rel).mkdir(exist_ok=True)
            os.chmod(tmp / rel, mode)
        _copy("/etc", tmp / "etc", link=False)
        _hide_private(tmp / "etc")
        for rel in _LOCKED:
            if os.path.isfile("/" + rel):
                _locked_copy(Path("/" + rel), tmp / rel)
        for rel in _VAR_KEPT:
            if os.path.lexists("/" + rel):
                _copy("/" + rel, tmp / rel, link=same_fs and not os.path.islink("/" + rel))
        _hide_private(tmp / "var/cache")
        (tmp / ".ecliptic-host-layer").write_text(f"{HOST_LAYER_VERSION} {key}\n")
        try:
            tmp.rename(final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)  # another process made it first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
