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

import ipaddress
import re
from collections.abc import Iterable

from ecliptic.backends.base import FirewallSpec, SecurityGroupRuleSpec
from ecliptic.backends.local.names import bridge_name, short_id, veth_name
from ecliptic.nft import NftError, nft

TABLE_PREFIX = "ecl_fw_"


def table_name(instance_id: str) -> str:
    """The instance's table: ``ecl_fw_`` and its id, in the characters nft names allow."""
    return TABLE_PREFIX + re.sub(r"[^a-z0-9_]", "_", instance_id.lower())[:48]


def _set(items: Iterable[str]) -> str:
    return ", ".join(items)


def _elements(items: list[str]) -> list[str]:
    return [f"    elements = {{ {_set(items)} }}"] if items else []


def _peer(rule: SecurityGroupRuleSpec, field: str) -> str:
    """The address match of a rule (``ip saddr`` for ingress, ``ip daddr`` for egress)."""
    if rule.remote_group_id:
        return f"ip {field} @g_{short_id(rule.remote_group_id)} "
    if rule.remote_cidr and ipaddress.ip_network(rule.remote_cidr).prefixlen > 0:
        return f"ip {field} {rule.remote_cidr} "
    return ""


def _match(rule: SecurityGroupRuleSpec) -> str:
    """The protocol and port match of a rule."""
    if rule.protocol == "any":
        return ""
    if rule.protocol == "icmp":
        return "meta l4proto icmp "
    if rule.port_min is None:
        return f"meta l4proto {rule.protocol} "
    hi = rule.port_max if rule.port_max is not None else rule.port_min
    ports = str(rule.port_min) if hi == rule.port_min else f"{rule.port_min}-{hi}"
    return f"{rule.protocol} dport {ports} "


def _security(spec: FirewallSpec, bridges: set[str]) -> tuple[list[str], list[str]]:
    """(definitions in the inet table, the bridge table) for security groups and port
    security; ports of networks that are not the instance's are left out."""
    groups = {g.id: g for g in spec.groups}
    members: dict[str, list[str]] = {gid: [] for gid in groups}
    egress, ingress, chains, spoof, guards = [], [], [], [], []
    for port in sorted(spec.ports, key=lambda p: p.id):
        br = bridge_name(port.network_id)
        if br not in bridges or not port.addresses:
            continue
        for gid in port.groups:
            members.setdefault(gid, []).extend(port.addresses)
        if port.vnic_type != "normal":
            continue  # SR-IOV ports: no security groups, as in Neutron
        sid = short_id(port.id)
        ips = _set(sorted(port.addresses))
        # Port security: its own MAC and addresses only (ARP included), no IPv6.
        guards.append(f'"{veth_name(port.id)}" : jump spoof_{sid}')
        spoof += [
            f"  chain spoof_{sid} {{",
            f"    ether saddr != {port.mac} drop",
            f"    ether type ip ip saddr != {{ {ips} }} drop",
            f"    ether type arp arp saddr ip != {{ {ips} }} drop",
            f"    ether type arp arp saddr ether != {port.mac} drop",
            "    ether type ip6 drop",
            "  }",
        ]
        if not port.groups:
            continue
        for ip in sorted(port.addresses):
            egress.append(f'"{br}" . {ip} : jump out_{sid}')
            ingress.append(f'"{br}" . {ip} : jump in_{sid}')
        out_rules, in_rules = [], []
        for gid in port.groups:
            for rule in groups[gid].rules if gid in groups else ():
                if rule.remote_group_id and rule.remote_group_id not in groups:
                    continue
                if rule.direction == "egress":
                    out_rules.append(f"    {_peer(rule, 'daddr')}{_match(rule)}return")
                else:
                    in_rules.append(f"    {_peer(rule, 'saddr')}{_match(rule)}accept")
        chains += [f"  chain out_{sid} {{", *out_rules, "    drop", "  }"]
        chains += [f"  chain in_{sid} {{", *in_rules, "    drop", "  }"]
    sets = []
    for gid in sorted(members):
        sets += [
            f"  set g_{short_id(gid)} {{",
            "    type ipv4_addr",
            *_elements(sorted(set(members[gid]))),
            "  }",
        ]
    inet = [
        *sets,
        "  map egress {",
        "    type ifname . ipv4_addr : verdict",
        *_elements(egress),
        "  }",
        "  map ingress {",
        "    type ifname . ipv4_addr : verdict",
        *_elements(ingress),
        "  }",
        "  chain security_groups {",
        "    ct state established,related accept",
        "    ct state invalid drop",
        "    iifname . ip saddr vmap @egress",
        "    oifname . ip daddr vmap @ingress",
        "    accept",
        "  }",
        *chains,
    ]
    bridge = [
        "  map ports {",
        "    type ifname : verdict",
        *_elements(guards),
        "  }",
        "  chain prerouting {",
        "    type filter hook prerouting priority filter; policy accept;",
        "    iifname vmap @ports",
        "  }",
        *spoof,
    ]
    return inet, bridge


def ruleset(
    table: str,
    bridges: Iterable[str],
    host_ports: Iterable[int],
    security: FirewallSpec | None = None,
) -> str:
    """The tables' definitions (sorted, so equal inputs give equal text)."""
    brs = sorted(set(bridges))
    ports = sorted({int(p) for p in host_ports if 0 < int(p) < 65536})
    same = [f'"{b}" . "{b}"' for b in brs]
    inet_sg, bridge_sg = _security(security or FirewallSpec(), set(brs))
    lines = [
        f"table inet {table} {{",
        "  set bridges {",
        "    type ifname",
        *_elements([f'"{b}"' for b in brs]),
        "  }",
        "  set same_bridge {",
        "    type ifname . ifname",
        *_elements(same),
        "  }",
        "  set host_ports {",
        "    type inet_service",
        *_elements([str(p) for p in ports]),
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
        "    iifname . oifname @same_bridge jump security_groups",
        "    iifname @bridges reject with icmpx admin-prohibited",
        "    oifname @bridges drop",
        "  }",
        *inet_sg,
        "}",
        f"table bridge {table} {{",
        *bridge_sg,
        "}",
    ]
    return "\n".join(lines) + "\n"


def apply(
    instance_id: str,
    bridges: Iterable[str],
    host_ports: Iterable[int],
    security: FirewallSpec | None = None,
) -> None:
    """Replace the instance's tables (one transaction), or delete them when it has no
    bridge."""
    table = table_name(instance_id)
    brs = list(bridges)
    script = (
        f"table inet {table}\ndelete table inet {table}\n"
        f"table bridge {table}\ndelete table bridge {table}\n"
    )
    if brs:
        script += ruleset(table, brs, host_ports, security)
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
