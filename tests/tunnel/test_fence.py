"""The fence around tunnels' loopback address: what it lets through, and its tables."""

from __future__ import annotations

import os
import subprocess

from ecliptic.tunnel.fence import Fence, nft_path
from ecliptic.tunnel.front import WORKER_USER, worker_account_problem
from tests.prerequisites import needs

pytestmark = needs(
    os.geteuid() == 0 and nft_path() is not None and worker_account_problem() is None,
    "root, nftables and the ecliptic-web account (scripts/setup-system.sh)",
)


def _tables() -> str:
    return subprocess.run(
        ["nft", "list", "tables", "inet"], capture_output=True, text=True, check=True
    ).stdout


def test_a_fence_replaces_itself_and_clears_what_dead_gateways_left() -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    stale = f"ecl_gw_{gone.pid}_1"
    subprocess.run(["nft", "add", "table", "inet", stale], check=True)
    mine = Fence(WORKER_USER)
    try:
        mine.up()
        mine.up()  # idempotent
        tables = _tables()
        assert f"table inet {mine.table}\n" in tables and stale not in tables
        rules = subprocess.run(
            ["nft", "list", "table", "inet", mine.table], capture_output=True, text=True
        ).stdout
        assert rules.count("reject with tcp reset") == 1, rules
    finally:
        mine.down()
        mine.down()
        subprocess.run(["nft", "delete", "table", "inet", stale], capture_output=True)
    assert mine.table not in _tables()
