"""Applying the local cloud's firewall: the whole instance's security groups at once.

    python -m bench.firewall [--json] [--ports 600] [--groups 20] [--networks 10] [--repeat 7]

Builds a spec of ``--ports`` normal ports spread over ``--networks`` networks, each port in
one of ``--groups`` groups (every group: in from its members, tcp 22 from anywhere,
everything out), and replaces a throwaway instance's tables with it ``--repeat`` times:
``generate_ms`` is making the ruleset's text, ``apply_ms`` that plus the one ``nft -f``
transaction (as root; the table is deleted afterwards). Medians, and the maximum.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

from ecliptic.backends.base import (
    FirewallPortSpec,
    FirewallSpec,
    SecurityGroupRuleSpec,
    SecurityGroupSpec,
)
from ecliptic.backends.local import firewall
from ecliptic.backends.local.names import bridge_name


def spec(ports: int, groups: int, networks: int) -> FirewallSpec:
    """A spec of that many ports, groups and networks."""
    nets = [uuid.uuid4().hex for _ in range(networks)]
    gids = [uuid.uuid4().hex for _ in range(groups)]
    rules = lambda g: (  # noqa: E731
        SecurityGroupRuleSpec("ingress", remote_group_id=g),
        SecurityGroupRuleSpec("ingress", "tcp", 22, 22, remote_cidr="0.0.0.0/0"),
        SecurityGroupRuleSpec("egress"),
    )
    return FirewallSpec(
        tuple(
            FirewallPortSpec(
                id=uuid.uuid4().hex,
                network_id=nets[i % networks],
                addresses=(f"198.18.{i // 250}.{i % 250 + 2}",),
                groups=(gids[i % groups],),
                mac=f"02:ec:00:00:{i // 256:02x}:{i % 256:02x}",
            )
            for i in range(ports)
        ),
        tuple(SecurityGroupSpec(g, rules(g)) for g in gids),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ports", type=int, default=600)
    ap.add_argument("--groups", type=int, default=20)
    ap.add_argument("--networks", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    s = spec(args.ports, args.groups, args.networks)
    bridges = sorted({bridge_name(p.network_id) for p in s.ports})
    instance = "bench" + uuid.uuid4().hex[:8]
    table = firewall.table_name(instance)
    gen, apply = [], []
    try:
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            text = firewall.ruleset(table, bridges, (8470, 2222), s)
            t1 = time.perf_counter()
            firewall.apply(instance, bridges, (8470, 2222), s)
            t2 = time.perf_counter()
            gen.append((t1 - t0) * 1000)
            apply.append((t2 - t1 + t1 - t0) * 1000)
    finally:
        firewall.apply(instance, [], [])
    out = {
        "ports": args.ports,
        "groups": args.groups,
        "networks": args.networks,
        "ruleset_bytes": len(text),
        "generate_ms": round(statistics.median(gen), 1),
        "apply_ms": round(statistics.median(apply), 1),
        "apply_max_ms": round(max(apply), 1),
    }
    if args.json:
        print(json.dumps(out))
    else:
        for k, v in out.items():
            print(f"{k:14} {v}")


if __name__ == "__main__":
    main()
