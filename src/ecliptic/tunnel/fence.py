"""The fence around tunnels' loopback listeners: only the gateway and nginx's workers get in.

Every tunnel is a listener on a loopback port (tunneld's, one per tunnel), and the gateway's
relays listen on loopback too. nginx authorises a request before it reaches them; a local
process that connects to them directly skips that: it would reach a private service
without signing in, or hand the relay an identity header of its choosing. So they all
listen on their own loopback address, ``TUNNEL_HOST`` (in 127.0.0.0/8, on ``lo`` with no
configuration), and when Ecliptic runs as root an nftables table lets only root (the
gateway: probes, relays, the jump host) and nginx's worker account open a connection to
it. Any other account's connection is reset.

One table per running gateway, named after its process (``ecl_gw_<pid>_<n>``), added at start
and deleted at stop; a table whose process is gone (killed) is deleted by the next start.
"""

from __future__ import annotations

import itertools
import logging
import os
import pwd
import re

from ecliptic.nft import NftError, nft, nft_path
from ecliptic.procs import pid_exists

log = logging.getLogger(__name__)

TUNNEL_HOST = "127.77.0.1"
"""The loopback address tunnels and the gateway's relays listen on."""
_TABLE_PREFIX = "ecl_gw_"
_TABLE = re.compile(r"^table inet (ecl_gw_([0-9]+)_[0-9]+)$", re.M)
_count = itertools.count(1)


class FenceError(RuntimeError):
    """The fence could not be put up (nft failed)."""


def prerequisite_problem() -> str | None:
    """Why the fence cannot be put up here (None: it can, or Ecliptic is not root and has
    no fence to put up)."""
    if os.geteuid() != 0 or nft_path() is not None:
        return None
    return "nftables is not installed (apt-get install nftables): it fences tunnels off"


def _ruleset(table: str, uids: list[int]) -> str:
    allowed = ", ".join(str(u) for u in sorted(set(uids)))
    return (
        f"table inet {table} {{\n"
        "  chain output {\n"
        "    type filter hook output priority 0; policy accept;\n"
        f"    ip daddr {TUNNEL_HOST} tcp flags & (syn | ack) == syn "
        f"meta skuid != {{ {allowed} }} counter reject with tcp reset\n"
        "  }\n"
        "}\n"
    )


def _nft(_path: str, *args: str, script: str | None = None) -> str:
    try:
        return nft(*args, script=script)
    except NftError as exc:
        raise FenceError(str(exc)) from exc


class Fence:
    """The fence of one gateway process; ``up`` and ``down`` are idempotent."""

    def __init__(self, worker_user: str) -> None:
        self.worker_user = worker_user
        self.table = f"{_TABLE_PREFIX}{os.getpid()}_{next(_count)}"
        self._up = False

    def up(self) -> None:
        """Put the fence up (root only; a no-op otherwise), after deleting the tables of
        gateways that are gone."""
        if os.geteuid() != 0 or self._up:
            return
        nft = nft_path()
        if nft is None:
            raise FenceError(prerequisite_problem() or "nft is missing")
        for match in _TABLE.finditer(_nft(nft, "list", "tables", "inet")):
            name, pid = match.group(1), int(match.group(2))
            if name != self.table and not pid_exists(pid):
                log.info("fence: deleting %s, left by a gateway that is gone", name)
                _nft(nft, "delete", "table", "inet", name)
        uids = [0, pwd.getpwnam(self.worker_user).pw_uid]
        # Replace, never add twice: declare, flush, then fill, in one transaction.
        script = f"table inet {self.table}\ndelete table inet {self.table}\n"
        _nft(nft, "-f", "-", script=script + _ruleset(self.table, uids))
        self._up = True
        log.info("fence: only uids %s may connect to %s (nft table %s)", uids, TUNNEL_HOST,
                 self.table)  # fmt: skip

    def down(self) -> None:
        if not self._up:
            return
        nft = nft_path()
        if nft is not None:
            try:
                _nft(nft, "delete", "table", "inet", self.table)
            except FenceError as exc:
                log.warning("fence: %s", exc)
        self._up = False
