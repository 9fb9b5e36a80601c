"""SSH host keys (one way to make them and to read their public line), and the TLS identity
the gateway's replicas share on their peer listeners."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

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


PEER_NAME = "ecliptic-peer.invalid"
"""The name in the peer certificate (``tunnel.front.PEER_TLS_NAME``)."""
PEER_CERT_YEARS = 10


def new_peer_identity() -> tuple[str, str]:
    """A self-signed ECDSA P-256 certificate for ``PEER_NAME`` and its key, both PEM: every
    replica presents it and trusts only it, for serving and as a client."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PEER_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365 * PEER_CERT_YEARS))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(PEER_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem


def split_identity(pem: str) -> tuple[str, str]:
    """(certificate, private key) of a certificate and key stored one after the other."""
    marker = "-----BEGIN PRIVATE KEY-----"
    at = pem.index(marker)
    return pem[:at], pem[at:]
