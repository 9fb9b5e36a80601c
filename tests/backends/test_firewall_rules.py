"""The firewall's ruleset as text: what a spec of ports and groups turns into (no kernel,
except the last test, which has ``nft`` check the text)."""

from __future__ import annotations

import os
import re
import uuid

from ecliptic.backends.base import (
    FirewallPortSpec,
    FirewallSpec,
    SecurityGroupRuleSpec,
    SecurityGroupSpec,
)
from ecliptic.backends.local import firewall
from ecliptic.backends.local.names import bridge_name, veth_name
from ecliptic.nft import nft, nft_path
from tests.prerequisites import require

NET, OTHER = "1" * 32, "2" * 32
BR = bridge_name(NET)
G1, G2 = "a" * 32, "b" * 32


def port(
    i: int, groups: tuple[str, ...], *, net: str = NET, vnic: str = "normal"
) -> FirewallPortSpec:
    return FirewallPortSpec(
        id=f"{i:010x}{uuid.uuid4().hex[:22]}",
        network_id=net,
        addresses=(f"198.18.{i // 250}.{i % 250 + 2}",),
        groups=groups,
        mac=f"02:ec:00:00:{i // 256:02x}:{i % 256:02x}",
        vnic_type=vnic,  # type: ignore[arg-type]
    )


def text(spec: FirewallSpec, bridges: tuple[str, ...] = (BR,)) -> str:
    return firewall.ruleset("ecl_fw_test", bridges, (8470, 2222), spec)


def chain(ruleset: str, name: str) -> list[str]:
    """The rules of one chain."""
    m = re.search(rf"^  chain {name} {{\n(.*?)^  }}", ruleset, re.M | re.S)
    assert m, f"no chain {name}"
    return [line.strip() for line in m.group(1).splitlines()]


def elements(ruleset: str, kind: str, name: str, table: str = "inet") -> str:
    body = ruleset.split(f"table {table} ")[1]
    m = re.search(rf"^  {kind} {name} {{\n(.*?)^  }}", body, re.M | re.S)
    assert m, f"no {kind} {name}"
    found = re.search(r"elements = \{ (.*) \}", m.group(1))
    return found.group(1) if found else ""


DEFAULTISH = SecurityGroupSpec(
    G1, (SecurityGroupRuleSpec("ingress", remote_group_id=G1), SecurityGroupRuleSpec("egress"))
)


def test_ports_share_one_chain_per_set_of_groups() -> None:
    ports = tuple(port(i, (G1,) if i % 2 else (G2, G1)) for i in range(600))
    out = text(FirewallSpec(ports, (DEFAULTISH, SecurityGroupSpec(G2))))
    assert len(re.findall(r"^  chain (out|in)_\d+ \{", out, re.M)) == 4
    assert elements(out, "map", "egress").count("jump out_") == 600
    assert elements(out, "map", "ingress").count("jump in_") == 600
    # Port security is three sets, not a chain per port.
    assert elements(out, "set", "ports", "bridge").count('"eclv-') == 600
    assert f'"{veth_name(ports[7].id)}" . 02:ec:00:00:00:07' in out


def test_rules_become_matches_on_peer_protocol_and_ports() -> None:
    web = SecurityGroupSpec(
        G2,
        (
            SecurityGroupRuleSpec("ingress", "tcp", 8000, 8100, remote_cidr="10.1.2.3/8"),
            SecurityGroupRuleSpec("ingress", "udp", 53, remote_group_id=G1),
            SecurityGroupRuleSpec("ingress", "icmp", remote_cidr="0.0.0.0/0"),
            SecurityGroupRuleSpec("egress", "tcp", 443, 443),
            SecurityGroupRuleSpec("egress", "any", remote_group_id=G1),
            SecurityGroupRuleSpec("ingress", "tcp", remote_cidr="not-a-cidr"),  # left out
            SecurityGroupRuleSpec("ingress", "tcp", 0, 10),  # left out: no port 0
        ),
    )
    out = text(FirewallSpec((port(1, (G2,)), port(2, (G1,))), (web, DEFAULTISH)))
    n = re.findall(r"198\.18\.0\.3 : jump in_(\d+)", elements(out, "map", "ingress"))[0]
    assert chain(out, f"in_{n}") == [
        "ip saddr 10.0.0.0/8 tcp dport 8000-8100 accept",
        f"iifname . ip saddr @m_{G1} udp dport 53 accept",
        "meta l4proto icmp accept",
        "drop",
    ]
    assert chain(out, f"out_{n}") == [
        "tcp dport 443 return",
        f"oifname . ip daddr @m_{G1} return",
        "drop",
    ]
    # Members are bridge-qualified: an address on another network is not a member.
    assert elements(out, "set", f"m_{G1}") == f'"{BR}" . 198.18.0.4'


def test_a_port_with_no_group_gets_nothing_in_or_out() -> None:
    out = text(FirewallSpec((port(1, ()),), ()))
    assert chain(out, "out_0") == ["drop"] and chain(out, "in_0") == ["drop"]
    assert '"eclb-1111111111" . 198.18.0.3 : jump out_0' in out


def test_unknown_addresses_are_dropped_and_direct_ports_unfiltered() -> None:
    spec = FirewallSpec(
        (port(1, (G1,)), port(2, (G1,), vnic="direct"), port(3, (G1,), net=OTHER)), (DEFAULTISH,)
    )
    out = text(spec)
    sg = chain(out, "security_groups")
    assert sg.index("iifname . ip saddr != @ports drop") < sg.index(
        "iifname . ip saddr vmap @egress"
    )
    assert sg.index("oifname . ip daddr != @ports drop") < sg.index(
        "oifname . ip daddr vmap @ingress"
    )
    assert sg[0] == "meta nfproto != ipv4 drop"
    # The direct port is known and a member of its group, but has no rules of its own...
    assert "198.18.0.4" in elements(out, "set", "ports")
    assert "198.18.0.4" in elements(out, "set", f"m_{G1}")
    assert "198.18.0.4" not in elements(out, "map", "egress") + elements(out, "map", "ingress")
    assert veth_name(spec.ports[1].id) not in out
    # ...and a port of a network that is not the instance's is left out.
    assert "198.18.0.5" not in out


def test_the_spec_kept_in_the_state_folder_reads_back_the_same() -> None:
    spec = FirewallSpec(
        (port(1, (G1, G2)), port(2, (), vnic="direct")),
        (DEFAULTISH, SecurityGroupSpec(G2, (SecurityGroupRuleSpec("egress", "udp", 1, 9),))),
    )
    assert firewall.loads(firewall.dumps(spec)) == spec


def test_nft_accepts_the_ruleset() -> None:
    require(os.geteuid() == 0 and nft_path() is not None, "root and nftables (nft -c)")
    ports = tuple(port(i, ((G1,), (G2,), (G1, G2), ())[i % 4]) for i in range(40))
    ports += (port(41, (G1,), vnic="direct"),)
    groups = (
        DEFAULTISH,
        SecurityGroupSpec(
            G2,
            (
                SecurityGroupRuleSpec("ingress", "tcp", 22, remote_cidr="198.18.0.0/15"),
                SecurityGroupRuleSpec("egress", "udp", 1000, 2000, remote_group_id=G1),
                SecurityGroupRuleSpec("ingress", "any", remote_group_id=uuid.uuid4().hex),
            ),
        ),
    )
    nft("-c", "-f", "-", script=text(FirewallSpec(ports, groups)))


def test_addresses_other_than_ipv4_are_left_out() -> None:
    odd = FirewallPortSpec(
        "9" * 32, NET, ("fe80::1", "198.18.9.9/24", "junk"), (G1,), "02:ec:00:00:00:09"
    )
    out = text(FirewallSpec((odd,), (DEFAULTISH,)))
    assert elements(out, "set", "ports") == f'"{BR}" . 198.18.9.9'
