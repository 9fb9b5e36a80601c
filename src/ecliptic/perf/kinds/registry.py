"""The registry of benchmark kinds: every module of this package registers its kind.

Adding a kind is adding one module here that calls :func:`register` with a
:class:`~ecliptic.perf.kinds.base.Kind`.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading

from ecliptic.perf.kinds.base import Kind

_KINDS: dict[str, Kind] = {}
_LOADED = False
_LOCK = threading.Lock()
_NOT_KINDS = {"base", "registry"}


def register(kind: Kind) -> Kind:
    """Make ``kind`` known by its name."""
    _KINDS[kind.name] = kind
    return kind


def _load() -> None:
    global _LOADED
    if _LOADED:
        return
    with _LOCK:
        if _LOADED:
            return
        import ecliptic.perf.kinds as package

        for mod in pkgutil.iter_modules(package.__path__):
            if mod.name not in _NOT_KINDS and not mod.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{mod.name}")
        _LOADED = True


def names() -> list[str]:
    """Names of every kind, sorted."""
    _load()
    return sorted(_KINDS)


def find(name: str) -> Kind:
    """The kind called ``name``; ValueError naming the kinds there are otherwise."""
    _load()
    try:
        return _KINDS[name]
    except KeyError:
        raise ValueError(
            f"no benchmark kind '{name}'; kinds are: {', '.join(sorted(_KINDS))}"
        ) from None


def all_kinds() -> list[Kind]:
    """Every kind, by name."""
    _load()
    return [_KINDS[n] for n in sorted(_KINDS)]
