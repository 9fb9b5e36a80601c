"""The local cloud's network boundary: one nftables table per instance.

Without it, networks stay apart only while the host has IP forwarding off, and a server
reaches every host service that listens on all addresses through its network's gateway
address. With it, whatever ``net.ipv4.ip_forward`` says:

* **input**: from the instance's bridges, the host answers only what servers need: replies
  to connections the host made, ping of the gateway address, and the TCP ports the
  instance names (the API and the gateway's SSH endpoint). Anything else is refused (a TCP
  reset or an ICMP "administratively prohibited", so a client fails at once).
* **forward**: nothing is routed into or out of the instance's bridges. Traffic bridged
  within one network (which traverses this hook when the host's ``br_netfilter`` is on, as
  on Docker hosts) is the only forwarding allowed.

The table (``inet ecl_fw_<instance>``) is replaced in one transaction whenever the
instance's networks change, and at every start (garbage collection rebuilds it), so it is
adopted like every other resource; it goes when the instance has no network left.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ecliptic.nft import NftError, nft

TABLE_PREFIX = "ecl_fw_"


def table_name(instance_id: str) -> str:
    """The instance's table: ``ecl_fw_`` and its id, in the characters nft names allow."""
    return TABLE_PREFIX + re.sub(r"[^a-z0-9_]", "_", instance_id.lower())[:48]


def _set(items: Iterable[str]) -> str:
    return ", ".join(items)


def ruleset(table: str, bridges: Iterable[str], host_ports: Iterable[int]) -> str:
    """The table's definition (bridges and ports sorted, so equal inputs give equal text)."""
    brs = sorted(set(bridges))
    ports = sorted({int(p) for p in host_ports if 0 < int(p) < 65536})
    same = [f'"{b}" . "{b}"' for b in brs]
    lines = [
        f"table inet {table} {{",
        "  set bridges {",
        "    type ifname",
        *([f"    elements = {{ {_set(chr(34) + b + chr(34) for b in brs)} }}"] if brs else []),
        "  }",
        "  set same_bridge {",
        "    type ifname . ifname",
        *([f"    elements = {{ {_set(same)} }}"] if same else []),
        "  }",
        "  set host_ports {",
        "    type inet_service",
        *([f"    elements = {{ {_set(str(p) for p in ports)} }}"] if ports else []),
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        "    iifname != @bridges accept",
        "    ct state established,related accept",
        "    icmp type echo-request accept",
        "    tcp dport @host_ports accept",
        "    meta l4proto tcp reject with tcp reset",
        "    reject with icmpx admin-prohibited",
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
        "    iifname . oifname @same_bridge accept",
        "    iifname @bridges reject with icmpx admin-prohibited",
        "    oifname @bridges drop",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def apply(instance_id: str, bridges: Iterable[str], host_ports: Iterable[int]) -> None:
    """Replace the instance's table (one transaction), or delete it when it has no bridge."""
    table = table_name(instance_id)
    brs = list(bridges)
    script = f"table inet {table}\ndelete table inet {table}\n"
    if brs:
        script += ruleset(table, brs, host_ports)
    nft("-f", "-", script=script)


def tables() -> list[str]:
    """The local cloud's firewall tables on this machine (every instance's)."""
    try:
        out = nft("list", "tables", "inet")
    except NftError:
        return []
    return sorted(
        line.split()[2]
        for line in out.splitlines()
        if line.startswith("table inet ") and line.split()[2].startswith(TABLE_PREFIX)
    )
