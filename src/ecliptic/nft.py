"""Running nftables (``nft``): one place for finding it and for its errors."""

from __future__ import annotations

import os
import shutil
import subprocess

NFT = "/usr/sbin/nft"


class NftError(RuntimeError):
    """``nft`` failed (or is missing); the message has its error."""


def nft_path() -> str | None:
    """The nft program, or None."""
    if os.access(NFT, os.X_OK):
        return NFT
    return shutil.which("nft")


def nft(*args: str, script: str | None = None) -> str:
    """Run ``nft ARGS`` (``-f -`` reads ``script``, one transaction); its output."""
    path = nft_path()
    if path is None:
        raise NftError("nftables is not installed (apt-get install nftables)")
    done = subprocess.run(
        [path, *args], input=script, capture_output=True, text=True, timeout=10, check=False
    )
    if done.returncode != 0:
        raise NftError(f"nft {' '.join(args)} failed: {done.stderr.strip() or done.stdout}")
    return done.stdout
