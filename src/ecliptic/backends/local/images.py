"""Images of the local cloud: named, versioned root-filesystem layers built from recipes.

A recipe (YAML, validated by :class:`Recipe`) names Debian packages, PyPI packages for a
venv inside the image, files and commands. Its image is the overlayfs upper layer of a
build sandbox whose lower layers are the parent image's and the host view (see
``sandbox``), so an image holds only what its recipe added to the host's Debian system.

An image is identified by the hash of its recipe, its parent's hash and the host's package
state (``/var/lib/dpkg/status``): a build whose hash is already there is a cache hit and
costs a few milliseconds; a change of any of them builds a new layer beside the old one
(servers booted from the old one keep it until they go). Built layers live under
``<image_dir>/<name>/<hash>/`` with ``image.json`` and the build's log; a failed build
leaves its log as ``<image_dir>/<name>/failed.log``.

Built-in recipes ship in the package (``ecliptic/data/images``); an operator adds or
overrides recipes with a folder of their own (``ECLIPTIC_IMAGE_RECIPES``).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ecliptic.backends import base
from ecliptic.backends.local import processes, sandbox

NAME_RE = r"^[a-z][a-z0-9-]{0,62}$"
BUILDER_VERSION = "1"
STEP_TIMEOUT_S = 3600.0
Progress = Callable[[str], None]

_APT_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$")
_PIP_REQ = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9._-]*(\[[A-Za-z0-9,._-]+\])?([<>=!~]=?[A-Za-z0-9.*+!-]+)?$"
)


class ImageError(base.ImageError):
    """An image cannot be found, built or deleted; the message says why (the backend's own
    error: it reaches callers as it is, and retrying does not help)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class RecipeFile(BaseModel):
    """A file the image carries."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    path: Annotated[str, Field(pattern=r"^/[^\x00]*$", max_length=4096)]
    content: Annotated[str, Field(max_length=1 << 20)]
    mode: Annotated[str, Field(pattern=r"^0?[0-7]{3,4}$")] = "0644"


class RecipePip(BaseModel):
    """PyPI packages, installed into a venv of their own inside the image."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    venv: Annotated[str, Field(pattern=r"^/[A-Za-z0-9/._-]+$", max_length=255)]
    packages: Annotated[list[str], Field(min_length=1, max_length=200)]

    @field_validator("packages")
    @classmethod
    def _requirements(cls, v: list[str]) -> list[str]:
        for req in v:
            if not _PIP_REQ.match(req):
                raise ValueError(f"{req!r} is not a requirement such as 'name==1.2.3'")
        return v


class Recipe(BaseModel):
    """How an image is built."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: Annotated[str, Field(pattern=NAME_RE)]
    version: Annotated[str, Field(min_length=1, max_length=63)]
    description: Annotated[str, Field(max_length=500)] = ""
    parent: Annotated[str | None, Field(pattern=NAME_RE)] = "base"
    apt: Annotated[list[str], Field(max_length=500)] = []
    pip: RecipePip | None = None
    files: Annotated[list[RecipeFile], Field(max_length=200)] = []
    commands: Annotated[list[str], Field(max_length=200)] = []

    @field_validator("apt")
    @classmethod
    def _packages(cls, v: list[str]) -> list[str]:
        for pkg in v:
            if not _APT_NAME.match(pkg):
                raise ValueError(f"{pkg!r} is not a Debian package name")
        return v


@dataclass(frozen=True)
class ImageRecord:
    """One image as the local cloud knows it."""

    name: str
    version: str
    description: str
    parent: str | None
    status: str
    """``built``, ``not built``, ``building``, ``outdated`` (built from an older recipe or
    host state: rebuilt on next use) or ``failed``."""
    hash: str
    """The hash a build of the current recipe has (what ``status`` refers to)."""
    size_bytes: int = 0
    built_at: str | None = None
    build_seconds: float | None = None
    detail: str = ""
    recipe_path: str = ""


def load_recipe(path: Path) -> Recipe:
    """A recipe file, validated; ImageError naming the file and the problem otherwise."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ImageError(f"{path}: {e}") from e
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in e.errors()
        )
        raise ImageError(f"{path}: {problems}") from e
    if recipe.name == recipe.parent:
        raise ImageError(f"{path}: an image cannot be its own parent")
    return recipe


def _du(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_blocks * 512
    return total


class ImageStore:
    """Recipes, built layers and builds, under one image folder shared by instances."""

    def __init__(
        self,
        image_dir: Path,
        *,
        recipe_dirs: tuple[Path, ...] = (),
        binary: Callable[[], str],
    ) -> None:
        self.image_dir = Path(image_dir)
        self.recipe_dirs = recipe_dirs
        self._binary = binary
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._building: set[str] = set()
        self._dpkg: tuple[float, int, str] | None = None
        self._recipes: (
            tuple[tuple[tuple[str, int, int], ...], dict[str, tuple[Recipe, Path]]] | None
        )
        self._recipes = None

    # ------------------------------------------------------------------ recipes

    def recipes(self) -> dict[str, tuple[Recipe, Path]]:
        """Every recipe by name: built-ins, then the operator's folders (which override).
        Read again only when a recipe file changes, appears or goes."""
        builtin = resources.files("ecliptic") / "data" / "images"
        paths = [Path(str(builtin / n)) for n in sorted(p.name for p in builtin.iterdir())]
        for d in self.recipe_dirs:
            if d.is_dir():
                paths += sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml"))
        paths = [p for p in paths if p.suffix in (".yaml", ".yml")]
        key = tuple((str(p), p.stat().st_mtime_ns, p.stat().st_size) for p in paths)
        cached = self._recipes
        if cached is not None and cached[0] == key:
            return cached[1]
        out: dict[str, tuple[Recipe, Path]] = {}
        for p in paths:
            r = load_recipe(p)
            out[r.name] = (r, p)
        self._recipes = (key, out)
        return out

    def recipe(self, name: str) -> Recipe:
        """The recipe called ``name``."""
        found = self.recipes().get(name)
        if found is None:
            known = ", ".join(sorted(self.recipes())) or "none"
            raise ImageError(f"no image called '{name}' (images: {known})")
        return found[0]

    def _host_state(self) -> str:
        path = Path("/var/lib/dpkg/status")
        try:
            st = path.stat()
        except OSError:
            return "no-dpkg"
        cached = self._dpkg
        if cached and cached[0] == st.st_mtime and cached[1] == st.st_size:
            return cached[2]
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        self._dpkg = (st.st_mtime, st.st_size, digest)
        return digest

    def host_key(self) -> str:
        """The host's package state, as the key of its host layer."""
        return self._host_state()[:16]

    def hosts_dir(self) -> Path:
        """Where host layers are made: beside the images when they share ``/usr``'s
        filesystem (the layer is then hard links), else in ``/var/lib/ecliptic`` if that
        does; only when neither does is ``/usr`` copied."""
        usr = os.stat("/usr").st_dev
        for candidate in (self.image_dir / "hosts", Path("/var/lib/ecliptic/host-layers")):
            probe = candidate
            while not probe.exists():
                probe = probe.parent
            if os.stat(probe).st_dev == usr:
                return candidate
        return self.image_dir / "hosts"

    def host_layer(self) -> Path:
        """The host layer of the host's current package state (made on first need)."""
        with self._exclusive("host"):
            return sandbox.host_layer(self.hosts_dir(), self.host_key())

    def hash_of(self, name: str, _seen: tuple[str, ...] = ()) -> str:
        """The hash a build of ``name``'s current recipe has."""
        if name in _seen:
            raise ImageError(f"image parents form a loop: {' -> '.join((*_seen, name))}")
        recipe = self.recipe(name)
        h = hashlib.sha256()
        h.update(f"builder {BUILDER_VERSION}\n".encode())
        h.update(recipe.model_dump_json().encode())
        h.update(f"\nhost {self._host_state()}\n".encode())
        if recipe.parent:
            h.update(f"parent {self.hash_of(recipe.parent, (*_seen, name))}\n".encode())
        return h.hexdigest()[:20]

    # ------------------------------------------------------------------ records

    def _dir(self, name: str) -> Path:
        if not re.match(NAME_RE, name):
            raise ImageError(f"'{name}' is not an image name")
        return self.image_dir / name

    def _meta(self, name: str, digest: str) -> dict[str, object] | None:
        try:
            data = json.loads((self._dir(name) / digest / "image.json").read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def record(self, name: str) -> ImageRecord:
        """What is known of image ``name``."""
        recipe, path = self.recipes().get(name) or (None, None)
        if recipe is None or path is None:
            self.recipe(name)  # raises with the list of names
            raise AssertionError
        digest = self.hash_of(name)
        meta = self._meta(name, digest)
        detail = ""
        if name in self._building:
            status = "building"
        elif meta is not None:
            status = "built"
        elif self._built_hashes(name):
            status = "outdated"
            detail = "built from an older recipe or host package state; rebuilt on next use"
        elif (self._dir(name) / "failed.log").exists():
            status = "failed"
            detail = self.failure(name)
        else:
            status = "not built"
        return ImageRecord(
            name=name,
            version=recipe.version,
            description=recipe.description,
            parent=recipe.parent,
            status=status,
            hash=digest,
            size_bytes=int(meta.get("size_bytes", 0)) if meta else 0,  # type: ignore[call-overload]
            built_at=str(meta["built_at"]) if meta else None,
            build_seconds=float(meta["build_seconds"]) if meta else None,  # type: ignore[arg-type]
            detail=detail,
            recipe_path=str(path),
        )

    def records(self) -> list[ImageRecord]:
        """Every image with a recipe."""
        return [self.record(n) for n in sorted(self.recipes())]

    def failure(self, name: str) -> str:
        """The last lines of a failed build's log."""
        try:
            lines = (self._dir(name) / "failed.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-15:])

    def log_path(self, name: str) -> Path | None:
        """The log of the current build, the last failed one, or the built image's."""
        d = self._dir(name)
        building = sorted(d.glob(".build-*/build.log"), key=lambda p: p.stat().st_mtime)
        if building:
            return building[-1]
        with contextlib.suppress(ImageError):
            built = d / self.hash_of(name) / "build.log"
            if built.exists():
                return built
        failed = d / "failed.log"
        return failed if failed.exists() else None

    def _built_hashes(self, name: str) -> list[str]:
        d = self._dir(name)
        try:
            return sorted(p.name for p in d.iterdir() if (p / "image.json").exists())
        except FileNotFoundError:
            return []

    def layers_of(self, name: str, digest: str) -> list[Path]:
        """Lower dirs (newest first) of a built image, its parents' included."""
        meta = self._meta(name, digest)
        if meta is None:
            raise ImageError(f"image {name} ({digest}) is not built")
        out = [self._dir(name) / digest / "layer"]
        parent, phash = meta.get("parent"), meta.get("parent_hash")
        if isinstance(parent, str) and isinstance(phash, str):
            out += self.layers_of(parent, phash)
        else:
            where = meta.get("host_layer")
            out.append(
                Path(str(where)) if where else self.hosts_dir() / f"host-{meta.get('host_key')}"
            )
        return out

    def in_use_hashes(self, name: str, used: set[str]) -> list[str]:
        """Of ``used`` layer paths, the hashes of ``name`` they belong to."""
        prefix = str(self._dir(name)) + "/"
        return sorted({p[len(prefix) :].split("/")[0] for p in used if p.startswith(prefix)})

    # ------------------------------------------------------------------ build

    def _lock(self, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(name, threading.Lock())

    @contextlib.contextmanager
    def _exclusive(self, name: str) -> Iterator[None]:
        """One build of ``name`` at a time, across threads and processes."""
        d = self._dir(name)
        d.mkdir(parents=True, exist_ok=True)
        with self._lock(name):
            fd = os.open(d / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def ensure(self, name: str, progress: Progress | None = None) -> tuple[str, list[Path]]:
        """Build ``name`` (and its parents) unless built; returns its hash and layers."""
        say = progress or (lambda _m: None)
        recipe = self.recipe(name)
        if recipe.parent:
            self.ensure(recipe.parent, progress)
        digest = self.hash_of(name)
        if self._meta(name, digest) is None:
            with self._exclusive(name):
                if self._meta(name, digest) is None:
                    self._build(recipe, digest, say)
        else:
            say(f"{name}: up to date ({digest})")
        return digest, self.layers_of(name, digest)

    def _build(self, recipe: Recipe, digest: str, say: Progress) -> None:
        name = recipe.name
        d = self._dir(name)
        tmp = d / f".build-{digest}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for stale in d.glob(f".build-{digest}-*"):
            pid = stale.name.rsplit("-", 1)[-1]
            if pid.isdigit() and not processes.start_time(int(pid)):
                shutil.rmtree(stale, ignore_errors=True)
        layer, log = tmp / "layer", tmp / "build.log"
        layer.mkdir(parents=True)
        parent_hash = self.hash_of(recipe.parent) if recipe.parent else None
        host_key = self.host_key()
        if recipe.parent and parent_hash:
            lowers = self.layers_of(recipe.parent, parent_hash)
        else:
            say(f"{name}: making the host layer (the host's system, once per package state)")
            lowers = [self.host_layer()]
        started = time.monotonic()
        self._building.add(name)
        steps = _steps(recipe)
        try:
            blocker = layer / "usr" / "sbin" / "policy-rc.d"
            blocker.parent.mkdir(parents=True)
            blocker.write_text("#!/bin/sh\n# no services start while an image is built\nexit 101\n")
            blocker.chmod(0o755)
            say(f"{name}: building ({len(steps)} steps)")
            init = sandbox.boot(
                self._binary(),
                hostname=f"build-{name}",
                lower=lowers,
                upper=layer,
                work=tmp / "work",
                root=tmp / "root",
                console=log,
                grace_s=2,
            )
            try:
                for i, (title, argv, stdin) in enumerate(steps, 1):
                    say(f"{name}: step {i}/{len(steps)}: {title}")
                    self._step(init, argv, stdin, log, title)
            finally:
                self._stop(init)
            _remove_under(layer, "usr/sbin/policy-rc.d")
            _prune(layer)
            shutil.rmtree(tmp / "work", ignore_errors=True)
            shutil.rmtree(tmp / "root", ignore_errors=True)
            seconds = time.monotonic() - started
            size = _du(layer)
            meta = {
                "name": name,
                "version": recipe.version,
                "hash": digest,
                "parent": recipe.parent,
                "parent_hash": parent_hash,
                "host_key": host_key,
                "host_layer": str(lowers[-1]),
                "recipe": recipe.model_dump(mode="json"),
                "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "build_seconds": round(seconds, 3),
                "size_bytes": size,
            }
            (tmp / "image.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
            tmp.rename(d / digest)
            with contextlib.suppress(FileNotFoundError):
                (d / "failed.log").unlink()
            say(f"{name}: built in {seconds:.1f} s ({size // 1024} KiB)")
        except BaseException as e:
            with contextlib.suppress(OSError):
                with open(log, "a") as f:
                    f.write(f"\nbuild failed: {e}\n")
                shutil.copyfile(log, d / "failed.log")
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, ImageError | sandbox.SandboxError):
                raise ImageError(f"image {name}: {e}") from e
            raise
        finally:
            self._building.discard(name)

    def _step(
        self, init: sandbox.Init, argv: list[str], stdin: bytes | None, log: Path, title: str
    ) -> None:
        with open(log, "ab") as out:
            out.write(f"\n$ {title}\n".encode())
            out.flush()
            env = {
                "PATH": processes.BASE_PATH,
                "HOME": "/root",
                "LANG": "C.UTF-8",
                "DEBIAN_FRONTEND": "noninteractive",
                "PIP_DISABLE_PIP_VERSION_CHECK": "1",
                "PIP_NO_CACHE_DIR": "1",
            }
            proc = subprocess.Popen(
                sandbox.enter_argv(self._binary(), init, argv),
                stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                start_new_session=True,
            )
            try:
                proc.communicate(stdin, timeout=STEP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise ImageError(
                    f"step '{title}' took longer than {STEP_TIMEOUT_S:.0f} s"
                ) from None
        if proc.returncode != 0:
            raise ImageError(f"step '{title}' failed with status {proc.returncode}; see its log")

    @staticmethod
    def _stop(init: sandbox.Init) -> None:
        processes.terminate(
            [init.pid],
            verify=lambda p: processes.start_time(p) == init.start,
            grace=3.0,
        )

    def delete(self, name: str, *, in_use: set[str]) -> list[str]:
        """Remove every built layer of ``name`` not in ``in_use`` (layer paths); returns the
        hashes removed."""
        removed = []
        with self._exclusive(name):
            keep = set(self.in_use_hashes(name, in_use))
            for digest in self._built_hashes(name):
                if digest in keep:
                    continue
                shutil.rmtree(self._dir(name) / digest, ignore_errors=True)
                removed.append(digest)
            with contextlib.suppress(FileNotFoundError):
                (self._dir(name) / "failed.log").unlink()
        return removed


def _steps(recipe: Recipe) -> list[tuple[str, list[str], bytes | None]]:
    """(title, argv, stdin) of each build step."""
    out: list[tuple[str, list[str], bytes | None]] = []
    if recipe.apt:
        pkgs = " ".join(shlex.quote(p) for p in recipe.apt)
        # Only what the layers below lack is installed; package lists are fetched only when
        # apt cannot find a package (the host's lists are used otherwise).
        script = (
            f"missing=$(for p in {pkgs}; do dpkg-query -W -f='${{db:Status-Abbrev}}' "
            '"${p%%=*}" 2>/dev/null | grep -q "^ii" || echo "$p"; done)\n'
            'if [ -z "$missing" ]; then echo "all packages present"; exit 0; fi\n'
            "echo installing: $missing\n"
            "apt-get install -y -q --no-install-recommends $missing || "
            "{ apt-get update -q && apt-get install -y -q --no-install-recommends $missing; }\n"
            "apt-get clean\n"
        )
        out.append((f"apt-get install {' '.join(recipe.apt)}", ["/bin/sh", "-ec", script], None))
    if recipe.pip:
        venv = shlex.quote(recipe.pip.venv)
        reqs = " ".join(shlex.quote(p) for p in recipe.pip.packages)
        script = (
            f"[ -x {venv}/bin/python ] || python3 -m venv {venv}\n"
            f"{venv}/bin/pip install -q {reqs}\n"
        )
        out.append(
            (
                f"pip install {' '.join(recipe.pip.packages)} into {recipe.pip.venv}",
                ["/bin/sh", "-ec", script],
                None,
            )
        )
    for f in recipe.files:
        script = 'umask 022; mkdir -p "$(dirname "$1")"; cat > "$1"; chmod "$2" "$1"'
        out.append(
            (f"file {f.path}", ["/bin/sh", "-ec", script, "sh", f.path, f.mode], f.content.encode())
        )
    for cmd in recipe.commands:
        out.append((cmd if len(cmd) < 80 else cmd[:77] + "...", ["/bin/sh", "-ec", cmd], None))
    return out


_PRUNE = (
    "var/lib/apt/lists",
    "var/cache/apt/archives",
    "var/cache/apt/pkgcache.bin",
    "var/cache/apt/srcpkgcache.bin",
    "var/log",
    "root/.cache",
    "tmp",
    "run",
)


def _open_dir_under(layer: Path, parts: list[str]) -> int | None:
    """An fd on ``layer/<parts>``, reached without following a symlink; None if it is not
    there or a component is a link (what a build left in its layer is the recipe's, and a
    link there may point at the host: ``/var -> /``)."""
    fd = os.open(layer, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    for part in parts:
        try:
            nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        except OSError:
            os.close(fd)
            return None
        os.close(fd)
        fd = nxt
    return fd


def _remove_under(layer: Path, rel: str) -> None:
    """Remove ``layer/rel`` (a file or a tree), never following a symlink on the way."""
    parts = [p for p in rel.split("/") if p]
    fd = _open_dir_under(layer, parts[:-1])
    if fd is None:
        return
    try:
        try:
            st = os.stat(parts[-1], dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(parts[-1], dir_fd=fd)
        else:
            os.unlink(parts[-1], dir_fd=fd)
    finally:
        os.close(fd)


def _prune(layer: Path) -> None:
    """Drop from a built layer what a build leaves behind and no server needs."""
    for rel in _PRUNE:
        _remove_under(layer, rel)
    fd = _open_dir_under(layer, ["var", "lib", "dpkg"])
    if fd is None:
        return
    try:
        for name in os.listdir(fd):
            if name.endswith("-old") and not os.path.islink(f"/proc/self/fd/{fd}/{name}"):
                with contextlib.suppress(OSError):
                    os.unlink(name, dir_fd=fd)
    finally:
        os.close(fd)
