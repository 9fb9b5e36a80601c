"""SSH host keys: one way to make them and to read their public line."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ecliptic.files import write_atomic


def new_private_key() -> str:
    """A fresh ed25519 private key in OpenSSH's format (what sshd and asyncssh read)."""
    return (
        ed25519.Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
        .decode()
    )


def public_line(private_key: str) -> str:
    """``ssh-ed25519 AAAA...`` of a private key, derived from the key itself."""
    key = serialization.load_ssh_private_key(private_key.encode(), password=None)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def ensure_key_file(path: Path) -> str:
    """The host key at ``path`` (mode 0600), made first when missing; its public line."""
    if not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(path, new_private_key(), mode=0o600)
    os.chmod(path, 0o600)
    return public_line(path.read_text())
