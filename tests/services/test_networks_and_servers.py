"""Address management, placement and tenancy isolation, on SQLite and PostgreSQL."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from ecliptic.errors import Conflict, InvalidInput, NotFound
from ecliptic.services import credits, networks, servers
from ecliptic.services.networks import InUse
from ecliptic.services.servers import NicRequest, NoCapacity
from ecliptic.store.models import Flavor
from tests.services.conftest import Env


def test_networks_get_disjoint_ranges_in_the_pool(env: Env) -> None:
    a = networks.create_network(env.db, env.queue, env.alice, "a", None)
    b = networks.create_network(env.db, env.queue, env.bob, "b", None)
    ra, rb = (ipaddress.IPv4Network(n.subnets[0].cidr) for n in (a, b))
    assert not ra.overlaps(rb)
    assert ra.subnet_of(networks.ADDRESS_POOL) and rb.subnet_of(networks.ADDRESS_POOL)
    assert a.subnets[0].gateway_ip == str(next(ra.hosts()))


def test_explicit_range_outside_the_pool_is_refused(env: Env) -> None:
    with pytest.raises(InvalidInput, match="outside the address pool"):
        networks.create_network(env.db, env.queue, env.alice, "x", "10.0.0.0/24")


def test_overlapping_range_is_refused(env: Env) -> None:
    networks.create_network(env.db, env.queue, env.alice, "x", "198.18.200.0/24")
    with pytest.raises(Conflict, match="overlaps 198.18.200.0/24"):
        networks.create_network(env.db, env.queue, env.bob, "y", "198.18.200.128/25")


def test_duplicate_network_name_in_a_tenancy_is_refused(env: Env) -> None:
    networks.create_network(env.db, env.queue, env.alice, "x", None)
    with pytest.raises(Conflict, match="exists already"):
        networks.create_network(env.db, env.queue, env.alice, "x", None)
    networks.create_network(env.db, env.queue, env.bob, "x", None)  # other tenancy: fine


def test_server_gets_default_network_and_an_address(env: Env) -> None:
    srv = servers.create_server(env.booking, env.queue, env.alice, "web", "m1.small", [])
    assert srv.phase == "PENDING" and srv.host is not None
    (port,) = srv.ports
    assert port.network.name == "default" and port.vnic_type == "normal"
    assert port.ip_address != port.subnet.gateway_ip
    assert {(i.kind, i.object_id) for i in env.queue.pending()} >= {("server", srv.id)}


def test_addresses_are_unique_and_released_on_port_delete(env: Env) -> None:
    networks.create_network(env.db, env.queue, env.alice, "n", "198.18.10.0/29")
    made = [networks.create_port(env.db, env.alice, "n", f"p{i}", "normal") for i in range(5)]
    ips = [p.ip_address for p in made]
    assert len(set(ips)) == 5 and "198.18.10.1" not in ips  # gateway kept free
    with pytest.raises(Conflict, match="no free address"):
        networks.create_port(env.db, env.alice, "n", "p5", "normal")
    networks.delete_port(env.db, env.alice, "p0")
    again = networks.create_port(env.db, env.alice, "n", "p6", "normal")
    assert again.ip_address == ips[0]


def test_network_with_ports_cannot_be_deleted(env: Env) -> None:
    networks.create_network(env.db, env.queue, env.alice, "n", None)
    servers.create_server(env.booking, env.queue, env.alice, "s1", "m1.tiny", [NicRequest("n")])
    with pytest.raises(InUse, match="in use by servers s1"):
        networks.delete_network(env.db, env.queue, env.alice, "n")


def test_direct_port_is_recorded(env: Env) -> None:
    networks.create_network(env.db, env.queue, env.alice, "fabric", None)
    srv = servers.create_server(
        env.booking,
        env.queue,
        env.alice,
        "s",
        "m1.tiny",
        [NicRequest(), NicRequest("fabric", vnic_type="direct")],
    )
    assert [(p.device_index, p.vnic_type) for p in srv.ports] == [(0, "normal"), (1, "direct")]


def test_other_tenancies_servers_do_not_exist(env: Env) -> None:
    servers.create_server(env.booking, env.queue, env.alice, "secret", "m1.tiny", [])
    with pytest.raises(NotFound):
        servers.get_server(env.db, env.bob, "secret")
    with pytest.raises(NotFound):
        servers.delete_server(env.db, env.queue, env.bob, "secret")
    rows, _ = servers.list_servers(env.db, env.bob, servers.ServerFilter())
    assert rows == []


def test_capacity_is_never_exceeded(env: Env) -> None:
    # Two 8-vCPU CPU hosts and one 32-vCPU GPU host: 48 vCPUs in all.
    made = 0
    with pytest.raises(NoCapacity, match="no host has room for flavor 'm1.large'"):
        for i in range(100):
            servers.create_server(env.booking, env.queue, env.alice, f"s{i}", "m1.large", [])
            made += 1
    assert made == 12


def test_bare_metal_takes_a_whole_host(env: Env) -> None:
    with env.db.write() as s:  # an operator allows bare metal on demand, paid by the hour
        s.scalars(select(Flavor).where(Flavor.name == "bm.cpu")).one().reservation_only = False
        now = env.booking.clock.now()
        tenancy = env.alice.tenancy_id or ""
        credits.grant(s, tenancy, "g", "host:A100", Decimal(2), now, now + timedelta(days=1))
    srv = servers.create_server(env.booking, env.queue, env.alice, "bm", "bm.cpu", [])
    assert srv.kind == "baremetal" and srv.host is not None and srv.host.name == "gpu-1"
    assert srv.spec["meter"] == {"host:A100": "1"}  # as a whole host, like a lease
    # Nothing else lands on that host now.
    for i in range(4):
        s = servers.create_server(env.booking, env.queue, env.alice, f"v{i}", "m1.medium", [])
        assert s.host is not None and s.host.name != "gpu-1"


def test_unknown_flavor_names_the_choices(env: Env) -> None:
    with pytest.raises(InvalidInput, match="no flavor 'huge'; choose one of: m1.tiny"):
        servers.create_server(env.booking, env.queue, env.alice, "s", "huge", [])


def test_listing_pages_through_everything(env: Env) -> None:
    for i in range(7):
        servers.create_server(env.booking, env.queue, env.alice, f"s{i}", "m1.tiny", [])
        env.booking.clock.advance(timedelta(seconds=1))  # type: ignore[attr-defined]
    seen: list[str] = []
    marker = None
    while True:
        rows, marker = servers.list_servers(
            env.db, env.alice, servers.ServerFilter(), limit=3, marker=marker
        )
        seen += [r.name for r in rows]
        if marker is None:
            break
    assert seen == [f"s{i}" for i in range(7)]
    rows, _ = servers.list_servers(env.db, env.alice, servers.ServerFilter(name="s3"))
    assert [r.name for r in rows] == ["s3"]
    with pytest.raises(InvalidInput, match="marker"):
        servers.list_servers(env.db, env.alice, servers.ServerFilter(), marker="garbage!")
