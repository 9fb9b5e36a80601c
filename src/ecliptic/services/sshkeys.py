"""SSH public keys: parsing, fingerprints, and users' own keys for the gateway's jump host."""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ecliptic.errors import Conflict, InvalidInput, NotFound
from ecliptic.services.caller import Caller
from ecliptic.store.db import Database
from ecliptic.store.models import User, UserSshKey

KEY_TYPES = (
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)


MIN_RSA_BITS = 2048
"""The smallest RSA modulus the gateway takes (its SSH endpoint refuses smaller keys)."""
MAX_RSA_BITS = 16384
"""The largest (what OpenSSH generates at most, and the endpoint's library accepts)."""


def _rsa_bits(blob: bytes, at: int) -> int:
    """Bits of the modulus of an ``ssh-rsa`` blob whose exponent starts at ``at``."""
    try:
        (e_len,) = struct.unpack(">I", blob[at : at + 4])
        at += 4 + e_len
        (n_len,) = struct.unpack(">I", blob[at : at + 4])
        modulus = blob[at + 4 : at + 4 + n_len]
    except struct.error:
        return 0
    if len(modulus) != n_len:
        return 0
    return int.from_bytes(modulus, "big").bit_length()


@dataclass(frozen=True)
class PublicKey:
    """A parsed OpenSSH public key."""

    type: str
    """Key type, e.g. ``ssh-ed25519``."""
    blob: str
    """Base64 key blob as written in authorized_keys."""
    comment: str
    """Free text after the blob."""

    @property
    def line(self) -> str:
        """The key in authorized_keys form, without options."""
        return f"{self.type} {self.blob}" + (f" {self.comment}" if self.comment else "")

    @property
    def fingerprint(self) -> str:
        """``SHA256:…`` as OpenSSH prints it."""
        return fingerprint_of_blob(base64.b64decode(self.blob))


def fingerprint_of_blob(blob: bytes) -> str:
    """OpenSSH's SHA256 fingerprint of a key blob (unpadded base64)."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def parse_public_key(text: str) -> PublicKey:
    """Parse one OpenSSH public key line; refuse anything else with a message that says why."""
    parts = text.strip().split(None, 2)
    hint = "paste the one line of your '.pub' file, e.g. 'ssh-ed25519 AAAAC3Nza... you@host'"
    if len(parts) < 2 or "\n" in text.strip():
        raise InvalidInput(f"not an SSH public key: {hint}")
    kind, blob_text = parts[0], parts[1]
    if kind not in KEY_TYPES:
        raise InvalidInput(f"unsupported key type '{kind[:40]}': use one of {', '.join(KEY_TYPES)}")
    try:
        blob = base64.b64decode(blob_text, validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        inner = blob[4 : 4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise InvalidInput(f"the key data is not valid base64 of an SSH key: {hint}") from None
    if inner != kind or len(blob) < 4 + length + 16:
        raise InvalidInput(f"the key data does not match its type '{kind}': {hint}")
    if kind == "ssh-rsa":
        bits = _rsa_bits(blob, 4 + length)
        if not MIN_RSA_BITS <= bits <= MAX_RSA_BITS:
            raise InvalidInput(
                f"an RSA key of {bits} bits is refused: use {MIN_RSA_BITS} to {MAX_RSA_BITS} "
                "bits, or better an Ed25519 key ('ssh-keygen -t ed25519')"
            )
    comment = parts[2].strip() if len(parts) > 2 else ""
    if any(ord(c) < 32 for c in comment):
        raise InvalidInput("the key comment holds control characters")
    return PublicKey(kind, blob_text, comment)


def add_user_key(db: Database, caller: Caller, name: str, public_key: str) -> UserSshKey:
    """Register one of the caller's SSH keys (for the gateway's jump host)."""
    key = parse_public_key(public_key)
    row = UserSshKey(
        user_id=caller.user_id, name=name, public_key=key.line, fingerprint=key.fingerprint
    )
    try:
        with db.write() as session:
            taken = session.scalar(
                select(UserSshKey).where(
                    UserSshKey.user_id == caller.user_id, UserSshKey.name == name
                )
            )
            if taken is not None:
                raise Conflict(f"you already have a key named '{name}': pick another name")
            session.add(row)
            session.flush()
            session.expunge(row)
    except IntegrityError:
        raise Conflict(
            "this key is already registered (to you or someone else): generate a new one"
        ) from None
    return row


def list_user_keys(db: Database, caller: Caller) -> list[UserSshKey]:
    """The caller's SSH keys."""
    with db.read() as session:
        rows = list(
            session.scalars(
                select(UserSshKey)
                .where(UserSshKey.user_id == caller.user_id)
                .order_by(UserSshKey.name)
            )
        )
        session.expunge_all()
        return rows


def delete_user_key(db: Database, caller: Caller, ref: str) -> None:
    """Remove one of the caller's SSH keys, by id or name."""
    with db.write() as session:
        row = session.scalar(
            select(UserSshKey).where(
                UserSshKey.user_id == caller.user_id,
                (UserSshKey.id == ref) | (UserSshKey.name == ref),
            )
        )
        if row is None:
            raise NotFound(f"you have no SSH key '{ref}'")
        session.delete(row)


def user_for_key(db: Database, username: str, public_key: str) -> User | None:
    """The enabled user called ``username`` who registered ``public_key``, if any."""
    try:
        fp = parse_public_key(public_key).fingerprint
    except InvalidInput:
        return None
    with db.read() as session:
        user = session.scalar(
            select(User)
            .join(UserSshKey, UserSshKey.user_id == User.id)
            .where(UserSshKey.fingerprint == fp, User.name == username, User.disabled.is_(False))
        )
        if user is not None:
            session.expunge(user)
        return user
