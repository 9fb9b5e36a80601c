"""Hole 7 of the gateway attack, the rest: the gateway secret and the SSH host key sat in the
shared database in clear. They are now sealed with a key that is not in it (a 0600 file
every replica holds), plain values from older versions are sealed when first read, and the
key can be rotated."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from sqlalchemy import select

from ecliptic.config import Settings, load_settings
from ecliptic.secretbox import SecretBox, SecretBoxError
from ecliptic.server import rotate_secret_key
from ecliptic.services import gateway as registry
from ecliptic.store.db import Database
from ecliptic.store.models import Meta
from tests.conftest import migrated_sqlite


def test_a_new_key_file_is_the_owners_only_and_seals_what_it_opens(tmp_path: Path) -> None:
    box = SecretBox.load(tmp_path / "keys" / "secret.key")
    assert stat.S_IMODE(box.path.stat().st_mode) == 0o600
    sealed = box.seal("gateway_secret", "s3cret")
    assert "s3cret" not in sealed and SecretBox.is_sealed(sealed)
    assert box.open("gateway_secret", sealed) == "s3cret"
    assert SecretBox.load(box.path).open("gateway_secret", sealed) == "s3cret"  # same key
    # Bound to its row: moved elsewhere, or changed, it does not open.
    with pytest.raises(SecretBoxError):
        box.open("gateway_host_key", sealed)
    tampered = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    with pytest.raises(SecretBoxError):
        box.open("gateway_secret", tampered)
    # Another instance's key cannot open it, and says what to do.
    other = SecretBox.load(tmp_path / "other.key")
    with pytest.raises(SecretBoxError, match="copy the secret key file"):
        other.open("gateway_secret", sealed)


def test_a_damaged_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "secret.key"
    box = SecretBox.load(path)
    line = path.read_text().splitlines()[1]
    path.write_text(line[:-4] + "AAA=\n")
    with pytest.raises(SecretBoxError, match="not a key"):
        SecretBox.load(path)
    path.write_text("# nothing\n")
    with pytest.raises(SecretBoxError, match="holds no key"):
        SecretBox.load(path)
    assert box.current_id


def _meta(db: Database) -> dict[str, str]:
    with db.read() as session:
        return {m.key: m.value for m in session.scalars(select(Meta))}


def test_secrets_are_sealed_in_the_store_and_old_plain_ones_are_sealed_when_read(
    tmp_path: Path,
) -> None:
    box = SecretBox.load(tmp_path / "secret.key")
    db = Database(migrated_sqlite(tmp_path / "db.sqlite"), secrets=box)
    try:
        secret = registry.gateway_secret(db)
        pem, public = registry.host_key(db)
        cert, key = registry.peer_identity(db)
        stored = _meta(db)
        for name in registry.SEALED_SECRETS:
            assert SecretBox.is_sealed(stored[name]), name
        raw = (tmp_path / "db.sqlite").read_bytes() + b"".join(
            p.read_bytes() for p in tmp_path.glob("db.sqlite-*")
        )
        assert secret.hex().encode() not in raw and b"PRIVATE KEY" not in raw
        # The same values come back, from this object and from a fresh one.
        again = Database(db.url, secrets=SecretBox.load(box.path))
        try:
            assert registry.gateway_secret(again) == secret
            assert registry.host_key(again) == (pem, public)
            assert registry.peer_identity(again) == (cert, key)
        finally:
            again.dispose()
        # Without the key nothing opens.
        stranger = Database(db.url, secrets=SecretBox.load(tmp_path / "stranger.key"))
        try:
            with pytest.raises(SecretBoxError):
                registry.gateway_secret(stranger)
        finally:
            stranger.dispose()
        # An install from before sealing: the plain value is sealed in place when read.
        with db.write() as session:
            row = session.get(Meta, "gateway_secret")
            assert row is not None
            row.value = "ab" * 32
        assert registry.gateway_secret(db) == bytes.fromhex("ab" * 32)
        assert SecretBox.is_sealed(_meta(db)["gateway_secret"])
    finally:
        db.dispose()


def _instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Settings, SecretBox]:
    """A data dir with a migrated database whose secrets exist, sealed; its settings."""
    data = tmp_path / "data"
    data.mkdir()
    url = migrated_sqlite(data / "ecliptic.db")
    monkeypatch.setenv("ECLIPTIC_DATABASE_URL", url)
    box = SecretBox.load(data / "secret.key")
    db = Database(url, secrets=box)
    registry.gateway_secret(db)
    registry.host_key(db)
    db.dispose()
    return load_settings(data_dir=data), box


def test_rotating_the_key_reseals_everything_and_keeps_the_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, box = _instance(tmp_path, monkeypatch)
    data, url = settings.data_dir, settings.database_url
    db = Database(url, secrets=box)
    secret, pem = registry.gateway_secret(db), registry.host_key(db)[0]
    db.dispose()

    rotate_secret_key(settings)
    rotated = SecretBox.load(data / "secret.key")
    assert rotated.current_id != box.current_id and len(rotated.keys) == 2
    db = Database(url, secrets=rotated)
    assert set(registry.sealing_keys(db).values()) == {rotated.current_id}
    assert registry.gateway_secret(db) == secret and registry.host_key(db)[0] == pem
    db.dispose()
    rotate_secret_key(settings, retire_old=True)
    final = SecretBox.load(data / "secret.key")
    assert final.keys == rotated.keys[:1]
    db = Database(url, secrets=final)
    assert registry.gateway_secret(db) == secret
    # The key it replaced no longer opens the store.
    with pytest.raises(SecretBoxError):
        registry.gateway_secret(Database(url, secrets=box))
    db.dispose()


def test_retiring_the_old_key_too_early_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings, old = _instance(tmp_path, monkeypatch)
    old.rotate()  # a new current key, but nothing sealed with it yet
    with pytest.raises(SystemExit, match="run `ecliptic rotate-secret-key` first"):
        rotate_secret_key(settings, retire_old=True)
    assert len(SecretBox.load(old.path).keys) == 2
