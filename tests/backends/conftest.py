"""Fixtures for the local backend tests: real namespaces, bridges and cgroups (needs root)."""

from __future__ import annotations

import os
import random
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from ecliptic.backends.base import (
    FirewallPortSpec,
    FirewallSpec,
    NetworkSpec,
    PortSpec,
    SecurityGroupRuleSpec,
    SecurityGroupSpec,
    ServerSpec,
    SubnetSpec,
)
from ecliptic.backends.local import LocalBackend, links, netns
from ecliptic.backends.local.names import short_id
from tests.prerequisites import require

PREFIXES = ("ecl-", "eclb-", "eclv-", "eclm-", "eclp-", "eclq-")


def _can_run() -> str:
    if os.geteuid() != 0:
        return "needs root"
    if not Path("/sys/class/net").exists():
        return "no sysfs"
    return ""


@dataclass
class Lab:
    """Makes backends, ids and specs for one test, and remembers every id it handed out."""

    tmp: Path
    owners_dir: Path
    ids: list[str] = field(default_factory=list)
    backends: list[LocalBackend] = field(default_factory=list)
    _octets: set[int] = field(default_factory=set)

    def new_id(self) -> str:
        """A fresh uuid4 hex id, remembered for the teardown check."""
        i = uuid.uuid4().hex
        self.ids.append(i)
        return i

    def backend(self, instance_id: str | None = None, **kwargs: object) -> LocalBackend:
        """A backend with its own instance id and state dir, sharing the test's owners dir."""
        iid = instance_id or f"test-{uuid.uuid4().hex[:12]}"
        b = LocalBackend(
            iid,
            self.tmp / f"state-{iid}",
            owners_dir=self.owners_dir,
            stale_record_grace_s=0.0,
            image_dir=Path(os.environ["ECLIPTIC_IMAGE_DIR"]),
            **kwargs,  # type: ignore[arg-type]
        )
        self.backends.append(b)
        return b

    def network_spec(self) -> NetworkSpec:
        """A network spec with one /24 in 198.19.0.0/16 that no other network of the test has."""
        with IPRoute() as ipr:  # avoid subnets already on this host (other runs, dev server)
            taken = {
                int(a.get("IFA_ADDRESS").split(".")[2])
                for a in ipr.get_addr(family=socket.AF_INET)
                if a.get("IFA_ADDRESS", "").startswith("198.19.")
            }
        octet = random.choice([o for o in range(1, 255) if o not in self._octets | taken])
        self._octets.add(octet)
        return NetworkSpec(
            id=self.new_id(),
            name=f"net{octet}",
            subnets=(
                SubnetSpec(
                    id=self.new_id(), cidr=f"198.19.{octet}.0/24", gateway_ip=f"198.19.{octet}.1"
                ),
            ),
        )

    def network(self, b: LocalBackend) -> NetworkSpec:
        """Ensure a fresh network (see ``network_spec``) with ``b`` and return its spec."""
        spec = self.network_spec()
        b.ensure_network(spec)
        return spec

    def server(
        self,
        net: NetworkSpec,
        name: str,
        host_octet: int,
        *,
        vnic_type: str = "normal",
        vcpus: int = 1,
        memory_mb: int = 256,
    ) -> ServerSpec:
        """A server spec with one port on ``net`` at ``.host_octet``."""
        prefix = net.subnets[0].cidr.rsplit(".", 1)[0]
        port = PortSpec(
            id=self.new_id(),
            network_id=net.id,
            mac=f"02:00:00:{random.randrange(256):02x}:{random.randrange(256):02x}:{host_octet:02x}",
            addresses=(f"{prefix}.{host_octet}/24",),
            vnic_type=vnic_type,  # type: ignore[arg-type]
        )
        return ServerSpec(
            id=self.new_id(),
            name=name,
            kind="vm",
            host="cpu-r1-01",
            vcpus=vcpus,
            memory_mb=memory_mb,
            ports=(port,),
        )

    def open_walls(self, b: LocalBackend, *servers: ServerSpec) -> None:
        """Put every port of ``servers`` in one group that lets everything in and out (the
        firewall fails closed: a port it has not been told about gets nothing through)."""
        group = "0" * 32
        b.apply_firewall(
            FirewallSpec(
                tuple(
                    FirewallPortSpec(
                        id=p.id,
                        network_id=p.network_id,
                        addresses=tuple(a.split("/")[0] for a in p.addresses),
                        groups=(group,),
                        mac=p.mac,
                        vnic_type=p.vnic_type,
                    )
                    for s in servers
                    for p in s.ports
                ),
                (
                    SecurityGroupSpec(
                        group,
                        (SecurityGroupRuleSpec("ingress"), SecurityGroupRuleSpec("egress")),
                    ),
                ),
            )
        )

    def resource_names(self) -> set[str]:
        """Every namespace/link name the ids of this test could have produced."""
        return {p + short_id(i) for i in self.ids for p in PREFIXES}


def leftovers(names: set[str]) -> set[str]:
    """Which of ``names`` still exist as namespaces or root-namespace links."""
    found = {n for n in netns.list_names("ecl") if n in names}
    with IPRoute() as ipr:
        found |= {n for n in links.names(ipr) if n in names}
    return found


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A Lab; on teardown every backend collects all its garbage, and nothing may remain."""
    reason = _can_run()
    require(not reason, reason)
    lab = Lab(tmp=tmp_path, owners_dir=tmp_path / "owners")
    try:
        yield lab
    finally:
        errors = []
        for b in reversed(lab.backends):
            try:
                b.collect_garbage(set(), set())
            except Exception as e:
                errors.append(f"{b.instance_id}: {e!r}")
        left = leftovers(lab.resource_names())
        assert not errors, errors
        assert not left, f"resources left behind: {sorted(left)}"
