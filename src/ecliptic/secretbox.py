"""Sealing the instance's secrets at rest: the gateway secret, the SSH host key and the peer
identity are kept in the shared store encrypted (AES-256-GCM) with a key that is not in it.

The key lives in a file (``ECLIPTIC_SECRET_KEY_FILE``, by default ``secret.key`` in the data
dir), mode 0600, made on first start. Every replica sharing a store needs a copy of it. The
file holds one key per line, ``<id> <base64 key>``, the current one first; older keys stay
to open what they sealed until ``rotate`` has sealed everything again with the new one.

A sealed value is ``sealed:v1:<key id>:<base64 nonce + ciphertext>``, authenticated with
its name (the row it belongs in), so a value moved to another row does not open.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ecliptic.files import write_atomic

PREFIX = "sealed:v1:"
KEY_BYTES = 32


class SecretBoxError(RuntimeError):
    """A sealed secret cannot be opened here; the message says what to do."""


def _key_id(key: bytes) -> str:
    return hashlib.sha256(b"ecliptic-secret-key/" + key).hexdigest()[:12]


@dataclass(frozen=True)
class SecretBox:
    """The keys that seal and open the instance's secrets, the current one first."""

    keys: tuple[bytes, ...]
    path: Path

    @classmethod
    def load(cls, path: Path) -> SecretBox:
        """The keys in ``path``; a new file with a fresh key (0600) when there is none."""
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            box = cls((os.urandom(KEY_BYTES),), path)
            box._write()
            return box
        keys = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            try:
                key_id, encoded = line.split()
                key = base64.b64decode(encoded, validate=True)
            except ValueError:
                raise SecretBoxError(
                    f"{path}, line {number}: expected '<id> <base64 key>'"
                ) from None
            if len(key) != KEY_BYTES or _key_id(key) != key_id:
                raise SecretBoxError(f"{path}, line {number}: not a key this file can hold")
            keys.append(key)
        if not keys:
            raise SecretBoxError(f"{path} holds no key: restore it from a backup or a replica")
        return cls(tuple(keys), path)

    @property
    def current_id(self) -> str:
        """The id of the key new values are sealed with."""
        return _key_id(self.keys[0])

    def _write(self) -> None:
        lines = ["# Ecliptic secret keys: the first seals, every one opens. Keep it 0600."]
        lines += [f"{_key_id(k)} {base64.b64encode(k).decode()}" for k in self.keys]
        write_atomic(self.path, "\n".join(lines) + "\n", mode=0o600)

    @staticmethod
    def is_sealed(value: str) -> bool:
        """Whether ``value`` is a sealed secret (else a legacy plain one)."""
        return value.startswith(PREFIX)

    @staticmethod
    def key_id_of(sealed: str) -> str:
        """The id of the key that sealed ``sealed``."""
        return sealed.removeprefix(PREFIX).partition(":")[0]

    def seal(self, name: str, plain: str) -> str:
        """``plain`` sealed with the current key, for the row called ``name``."""
        nonce = os.urandom(12)
        data = AESGCM(self.keys[0]).encrypt(nonce, plain.encode(), name.encode())
        return f"{PREFIX}{self.current_id}:{base64.b64encode(nonce + data).decode()}"

    def open(self, name: str, sealed: str) -> str:
        """The plain value of a sealed secret of the row called ``name``."""
        key_id = self.key_id_of(sealed)
        payload = sealed.removeprefix(PREFIX).partition(":")[2]
        key = next((k for k in self.keys if _key_id(k) == key_id), None)
        if key is None:
            raise SecretBoxError(
                f"the store's {name} is sealed with key {key_id}, which {self.path} does not "
                "hold: copy the secret key file from a replica that runs (every replica of "
                "an instance needs the same file; see ECLIPTIC_SECRET_KEY_FILE)"
            )
        raw = base64.b64decode(payload)
        try:
            return AESGCM(key).decrypt(raw[:12], raw[12:], name.encode()).decode()
        except InvalidTag:
            raise SecretBoxError(f"the store's {name} does not open with key {key_id}") from None

    def rotate(self) -> SecretBox:
        """A box with a new current key, keeping the older ones, written to the file."""
        box = SecretBox((os.urandom(KEY_BYTES), *self.keys), self.path)
        box._write()
        return box

    def retire_old(self) -> SecretBox:
        """A box with the current key only, written to the file (after everything is
        sealed with it)."""
        box = SecretBox(self.keys[:1], self.path)
        box._write()
        return box
