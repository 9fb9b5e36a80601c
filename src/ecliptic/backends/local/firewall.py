"""The local cloud's network boundary and security groups: nftables tables of the instance.

Without them, networks stay apart only while the host has IP forwarding off, a server
reaches every host service that listens on all addresses through its network's gateway
address, and every server reaches every other. With them, whatever ``net.ipv4.ip_forward``
or the host's ``bridge-nf-call-*`` settings say (our bridges ask for the inet hooks
themselves, see ``links.ensure_bridge``):

* **input**: from the instance's bridges, the host answers only what servers need: replies
  to connections the host made, and, on the bridge's own (gateway) address only, ping and
  the TCP ports the instance names (the API and the gateway's SSH endpoint). Anything else
  is refused (a TCP reset or an ICMP "administratively prohibited", so a client fails at
  once), the host's other addresses (another network's gateway, say) included.
* **forward**: nothing is routed into or out of the instance's bridges. Traffic bridged
  within one network goes through the security groups (chain ``security_groups``), which
  fail closed: IPv4 only; a packet from or to an address no plugged port of that network
  holds is dropped (broadcast and multicast included); a normal port sends only what an
  egress rule of one of its groups allows and receives only what an ingress rule allows,
  a port with no group nothing; replies of allowed connections pass (conntrack). Direct
  (SR-IOV) ports get no security groups, as in Neutron; traffic between a direct and a
  normal port still meets the normal port's rules.
* **port security** (table ``bridge``): a normal port's veth sends only IPv4 and ARP, from
  its own MAC and its own addresses (ARP's sender fields too), so rules keyed by address
  cannot be fooled by a server that changes its address or MAC.

Rules are chains per distinct *set of groups* (not per port), and ports reach theirs
through verdict maps keyed by ``bridge . address``; remote-group rules look the peer up in
a set of the group's members (``bridge . address``). So 600 ports cost map elements, not
chains: the whole ruleset is replaced in one ``nft -f`` transaction in ~45 ms (``bench.firewall``,
``docs/benchmarks.md``).

The tables (``inet``/``bridge ecl_fw_<instance>``) are replaced whenever the instance's
networks or security groups change, and at every start (garbage collection rebuilds them
from the last applied spec, kept in the state folder), so they are adopted like every
other resource; they go when the instance has no network left.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable
from dataclasses import asdict

from ecliptic.backends.base import (
    FirewallPortSpec,
    FirewallSpec,
    SecurityGroupRuleSpec,
    SecurityGroupSpec,
)
from ecliptic.backends.local.names import bridge_name, veth_name
from ecliptic.nft import NftError, nft

TABLE_PREFIX = "ecl_fw_"
_HEX = re.compile(r"^[0-9a-f]{1,64}$")
_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def table_name(instance_id: str) -> str:
    """The instance's table: ``ecl_fw_`` and its id, in the characters nft names allow."""
    return TABLE_PREFIX + re.sub(r"[^a-z0-9_]", "_", instance_id.lower())[:48]


def _elements(items: Iterable[str]) -> list[str]:
    listed = list(items)
    return [f"    elements = {{ {', '.join(listed)} }}"] if listed else []


def _named(kind: str, type_: str, items: Iterable[str]) -> list[str]:
    name, _, what = kind.partition(" ")
    return [f"  {name} {what} {{", f"    type {type_}", *_elements(items), "  }"]


def _group_key(group_id: str) -> str | None:
    """A group id as it appears in set names (hex), or None for an id that is not one."""
    key = group_id.replace("-", "").lower()
    return key if _HEX.match(key) else None


def _match(rule: SecurityGroupRuleSpec) -> str | None:
    """The protocol and port match of a rule (None: a rule that cannot be expressed)."""
    if rule.protocol == "any":
        return ""
    if rule.protocol == "icmp":
        return "meta l4proto icmp "
    if rule.protocol not in ("tcp", "udp"):
        return None
    if rule.port_min is None:
        return f"meta l4proto {rule.protocol} "
    hi = rule.port_max if rule.port_max is not None else rule.port_min
    if not 0 < rule.port_min <= hi < 65536:
        return None
    ports = str(rule.port_min) if hi == rule.port_min else f"{rule.port_min}-{hi}"
    return f"{rule.protocol} dport {ports} "


def _peer(rule: SecurityGroupRuleSpec) -> str | None:
    """The peer match of a rule: the source of ingress, the destination of egress."""
    iface, field = ("iifname", "saddr") if rule.direction == "ingress" else ("oifname", "daddr")
    if rule.remote_group_id:
        key = _group_key(rule.remote_group_id)
        return None if key is None else f"{iface} . ip {field} @m_{key} "
    if rule.remote_cidr:
        try:
            net = ipaddress.IPv4Network(rule.remote_cidr, strict=False)
        except ValueError:
            return None
        return f"ip {field} {net} " if net.prefixlen else ""
    return ""


def _rule(rule: SecurityGroupRuleSpec) -> str | None:
    """One rule as an nft rule; egress rules return (to the ingress check), ingress accept.
    None for a rule that cannot be expressed: it is left out, which only narrows."""
    peer, match = _peer(rule), _match(rule)
    if peer is None or match is None:
        return None
    return f"    {peer}{match}{'return' if rule.direction == 'egress' else 'accept'}"


def _ipv4(address: str) -> str | None:
    """An address (``ip`` or ``ip/prefix``) if it is IPv4; the rules are IPv4 only."""
    try:
        return str(ipaddress.IPv4Address(address.split("/")[0]))
    except ValueError:
        return None


def _security(spec: FirewallSpec, bridges: set[str]) -> tuple[list[str], list[str]]:
    """(definitions in the inet table, in the bridge table) of security groups and port
    security; ports of networks that are not the instance's are left out."""
    groups = {g.id: g for g in spec.groups}
    known: list[str] = []  # bridge . address of every plugged port
    members: dict[str, set[str]] = {}
    sets_of_groups: dict[tuple[str, ...], list[str]] = {}  # group set -> its ports' keys
    guarded: list[str] = []
    macs: list[str] = []
    ips: list[str] = []
    for port in spec.ports:
        br = bridge_name(port.network_id)
        if br not in bridges:
            continue
        addrs = sorted(filter(None, (_ipv4(a) for a in port.addresses)))
        keys = [f'"{br}" . {a}' for a in addrs]
        known += keys
        for gid in port.groups:
            key = _group_key(gid)
            if key is not None:
                members.setdefault(key, set()).update(keys)
        if port.vnic_type != "normal":
            continue  # SR-IOV ports: no security groups and no port security, as in Neutron
        sets_of_groups.setdefault(tuple(sorted(set(port.groups))), []).extend(keys)
        veth = f'"{veth_name(port.id)}"'
        guarded.append(veth)
        mac = port.mac.lower()
        if _MAC.match(mac):
            macs.append(f"{veth} . {mac}")
        ips += [f"{veth} . {a}" for a in addrs]
    egress: list[str] = []
    ingress: list[str] = []
    chains: list[str] = []
    for n, (gset, keys) in enumerate(sorted(sets_of_groups.items())):
        rules = [r for gid in gset if gid in groups for r in groups[gid].rules]
        out = [line for r in rules if r.direction == "egress" and (line := _rule(r))]
        into = [line for r in rules if r.direction != "egress" and (line := _rule(r))]
        chains += [f"  chain out_{n} {{", *out, "    drop", "  }"]
        chains += [f"  chain in_{n} {{", *into, "    drop", "  }"]
        egress += [f"{k} : jump out_{n}" for k in keys]
        ingress += [f"{k} : jump in_{n}" for k in keys]
    for g in groups.values():
        for r in g.rules:
            key = _group_key(r.remote_group_id or "")
            if r.remote_group_id and key is not None:
                members.setdefault(key, set())
    inet = [
        *_named("set ports", "ifname . ipv4_addr", sorted(set(known))),
        *(
            line
            for key in sorted(members)
            for line in _named(f"set m_{key}", "ifname . ipv4_addr", sorted(members[key]))
        ),
        *_named("map egress", "ifname . ipv4_addr : verdict", egress),
        *_named("map ingress", "ifname . ipv4_addr : verdict", ingress),
        "  chain security_groups {",
        "    meta nfproto != ipv4 drop",
        "    ct state established,related accept",
        "    ct state invalid drop",
        "    iifname . ip saddr != @ports drop",
        "    oifname . ip daddr != @ports drop",
        "    iifname . ip saddr vmap @egress",
        "    oifname . ip daddr vmap @ingress",
        "    accept",
        "  }",
        *chains,
    ]
    bridge = [
        *_named("set ports", "ifname", sorted(set(guarded))),
        *_named("set port_macs", "ifname . ether_addr", sorted(set(macs))),
        *_named("set port_ips", "ifname . ipv4_addr", sorted(set(ips))),
        "  chain prerouting {",
        "    type filter hook prerouting priority filter; policy accept;",
        "    iifname @ports jump port_security",
        "  }",
        "  chain port_security {",
        "    ether type != { ip, arp } drop",
        "    iifname . ether saddr != @port_macs drop",
        "    ether type ip iifname . ip saddr != @port_ips drop",
        "    ether type arp iifname . arp saddr ether != @port_macs drop",
        "    ether type arp iifname . arp saddr ip != @port_ips drop",
        "  }",
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
    inet_sg, bridge_sg = _security(security or FirewallSpec(), set(brs))
    lines = [
        f"table inet {table} {{",
        *_named("set bridges", "ifname", [f'"{b}"' for b in brs]),
        *_named("set same_bridge", "ifname . ifname", [f'"{b}" . "{b}"' for b in brs]),
        *_named("set host_ports", "inet_service", [str(p) for p in ports]),
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
        "    iifname != @bridges accept",
        "    ct state established,related accept",
        "    fib daddr . iif type != local reject with icmpx admin-prohibited",
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


def dumps(spec: FirewallSpec) -> str:
    """A spec as JSON (what the state folder keeps of the last applied one)."""
    return json.dumps(asdict(spec), sort_keys=True, separators=(",", ":"))


def loads(text: str) -> FirewallSpec:
    """A spec from ``dumps``; ValueError (or KeyError, TypeError) on anything else."""
    raw = json.loads(text)
    return FirewallSpec(
        ports=tuple(
            FirewallPortSpec(
                id=p["id"],
                network_id=p["network_id"],
                addresses=tuple(p["addresses"]),
                groups=tuple(p["groups"]),
                mac=p.get("mac", ""),
                vnic_type="direct" if p.get("vnic_type") == "direct" else "normal",
            )
            for p in raw["ports"]
        ),
        groups=tuple(
            SecurityGroupSpec(
                g["id"], tuple(SecurityGroupRuleSpec(**r) for r in g.get("rules", ()))
            )
            for g in raw["groups"]
        ),
    )
