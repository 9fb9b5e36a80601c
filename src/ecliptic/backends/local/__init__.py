"""The local cloud backend: servers as network namespaces, networks as bridges, on this machine."""

from ecliptic.backends.local.backend import LocalBackend

__all__ = ["LocalBackend"]
