"""The network boundary (an nftables table per instance), tried from inside servers."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from ecliptic.backends.base import (
    FirewallPortSpec,
    FirewallSpec,
    SecurityGroupRuleSpec,
    SecurityGroupSpec,
    ServerSpec,
    ServiceSpec,
)
from ecliptic.backends.local import LocalBackend, firewall, netns
from ecliptic.backends.local.names import netns_name
from tests.backends.conftest import Lab
from tests.ports import free_port

CONNECT = (
    "import socket, sys\n"
    "s = socket.socket(); s.settimeout(2)\n"
    "try:\n"
    "    s.connect((sys.argv[1], int(sys.argv[2]))); print(s.recv(16).decode())\n"
    "except OSError as e:\n"
    "    print('refused', type(e).__name__)\n"
)


@contextlib.contextmanager
def listener(port: int) -> Iterator[None]:
    """A TCP service of the host on all addresses that says ``hello``."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(8)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"hello")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield
    finally:
        stop.set()
        t.join()
        srv.close()


def connect(b: LocalBackend, sid: str, host: str, port: int) -> str:
    out = b.run(sid, ["python3", "-c", CONNECT, host, str(port)], timeout=10)
    return out.stdout.decode().strip()


def ping(b: LocalBackend, sid: str, ip: str) -> bool:
    return b.run(sid, ["ping", "-c1", "-W1", ip], timeout=10).exit_code == 0


def _sg(gid: str, *rules: SecurityGroupRuleSpec) -> SecurityGroupSpec:
    return SecurityGroupSpec(gid, rules)


DEFAULT = _sg(
    "d" * 32,
    SecurityGroupRuleSpec("ingress", remote_group_id="d" * 32),
    SecurityGroupRuleSpec("egress"),
)
"""Like a tenancy's ``default`` group: in from its members, everything out."""


def test_servers_reach_only_the_host_ports_they_need(lab: Lab) -> None:
    allowed, other = free_port(), free_port()
    b = lab.backend(host_ports=(allowed,))
    net = lab.network(b)
    s = lab.server(net, "fw1", 10)
    b.ensure_server(s)
    gw = net.subnets[0].gateway_ip
    assert firewall.table_name(b.instance_id) in firewall.tables()
    with listener(allowed), listener(other):
        assert connect(b, s.id, gw, allowed) == "hello"
        # The same host, a service listening on all addresses: not for servers.
        assert connect(b, s.id, gw, other).startswith("refused")
        # Nor the allowed port on another address of the host (another network's gateway,
        # routed to by hand as root: a server cannot add routes itself).
        other_gw = lab.network(b).subnets[0].gateway_ip
        with contextlib.closing(netns.iproute(netns_name(s.id))) as ipr:
            ipr.route("add", dst=f"{other_gw}/32", gateway=gw)
        assert connect(b, s.id, other_gw, allowed).startswith("refused")
        assert not ping(b, s.id, other_gw)
    assert ping(b, s.id, gw)
    # The table goes with the instance's last network.
    b.delete_server(s.id)
    b.collect_garbage(set(), set())
    assert firewall.table_name(b.instance_id) not in firewall.tables()


def test_networks_never_reach_each_other_even_with_forwarding_on(lab: Lab) -> None:
    b = lab.backend()
    n1, n2 = lab.network(b), lab.network(b)
    s1, s2 = lab.server(n1, "left", 10), lab.server(n2, "right", 10)
    b.ensure_server(s1)
    b.ensure_server(s2)
    ip1 = s1.ports[0].addresses[0].split("/")[0]
    ip2 = s2.ports[0].addresses[0].split("/")[0]
    # Routes a server cannot add itself (no CAP_NET_ADMIN inside), added here as root:
    # each server's traffic for the other network goes to its own gateway address.
    for spec, other, gw in ((s1, n2, n1), (s2, n1, n2)):
        with contextlib.closing(netns.iproute(netns_name(spec.id))) as ipr:
            ipr.route("add", dst=other.subnets[0].cidr, gateway=gw.subnets[0].gateway_ip)
    forward = Path("/proc/sys/net/ipv4/ip_forward")
    before = forward.read_text().strip()
    forward.write_text("1\n")
    try:
        assert not ping(b, s1.id, ip2) and not ping(b, s2.id, ip1)
        assert connect(b, s1.id, ip2, 22).startswith("refused")
        # The control: without the instance's table, the host routes between them.
        firewall.apply(b.instance_id, [], [])
        assert ping(b, s1.id, ip2), "the test's routes do not work: it would prove nothing"
        b._sync_firewall(force=True)
        assert not ping(b, s1.id, ip2)
    finally:
        forward.write_text(before + "\n")
        b._sync_firewall(force=True)
    # Within one network, servers their groups let in reach each other.
    s3 = lab.server(n1, "left2", 11)
    b.ensure_server(s3)
    assert not ping(b, s3.id, ip1)  # no port is in the firewall's spec yet: closed
    b.apply_firewall(FirewallSpec(_ports((s1, ("d" * 32,)), (s3, ("d" * 32,))), (DEFAULT,)))
    assert ping(b, s3.id, ip1)


LISTEN = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(16)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hi'); c.close()\n"
)


UDP_LISTEN = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(('0.0.0.0', 7070))\n"
    "while True:\n"
    "    data, peer = s.recvfrom(100); print('udp', data.decode(), peer, flush=True)\n"
)


def _ports(*pairs: tuple[ServerSpec, tuple[str, ...]]) -> tuple[FirewallPortSpec, ...]:
    return tuple(
        FirewallPortSpec(
            id=s.ports[0].id,
            network_id=s.ports[0].network_id,
            addresses=(s.ports[0].addresses[0].split("/")[0],),
            groups=groups,
            mac=s.ports[0].mac,
        )
        for s, groups in pairs
    )


def test_security_groups_are_walls_between_ports(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    s1, s2, web, lone = (lab.server(net, n, 10 + i) for i, n in enumerate(
        ("one", "two", "web", "lone")))  # fmt: skip
    for s in (s1, s2, web, lone):
        b.ensure_server(s)
    ip = {s.name: s.ports[0].addresses[0].split("/")[0] for s in (s1, s2, web, lone)}
    for s in (s2, web, lone):
        for port in (8080, 9090):
            b.start_service(s.id, ServiceSpec(f"l{port}", ("python3", "-c", LISTEN, str(port))))
    default = DEFAULT
    webg = _sg(
        "e" * 32,
        SecurityGroupRuleSpec("ingress", "tcp", 8080, 8080, remote_cidr="0.0.0.0/0"),
        SecurityGroupRuleSpec("egress"),
    )
    mute = _sg("f" * 32, SecurityGroupRuleSpec("ingress", remote_group_id="d" * 32))
    ports = _ports((s1, ("d" * 32,)), (s2, ("d" * 32,)), (web, ("e" * 32,)), (lone, ("f" * 32,)))
    b.apply_firewall(FirewallSpec(ports, (default, webg, mute)))
    time.sleep(0.5)  # the listeners
    # Members of one group reach each other; others do not get in.
    assert ping(b, s1.id, ip["two"]) and connect(b, s1.id, ip["two"], 9090) == "hi"
    assert not ping(b, web.id, ip["two"])
    assert connect(b, web.id, ip["two"], 8080).startswith("refused")
    # A rule opens exactly its port, to anyone.
    assert connect(b, s1.id, ip["web"], 8080) == "hi"
    assert connect(b, s1.id, ip["web"], 9090).startswith("refused")
    assert not ping(b, s1.id, ip["web"])
    # No egress rule: lone sends nothing, but answers what its ingress lets in (stateful).
    assert ping(b, s1.id, ip["lone"]) and connect(b, s1.id, ip["lone"], 9090) == "hi"
    assert not ping(b, lone.id, ip["one"])
    # A rule change applies to running servers at once.
    started = time.monotonic()
    opened = _sg("e" * 32, *webg.rules, SecurityGroupRuleSpec("ingress", "tcp", 9090, 9095))
    b.apply_firewall(FirewallSpec(ports, (default, opened, mute)))
    assert time.monotonic() - started < 1.0
    assert connect(b, s1.id, ip["web"], 9090) == "hi"
    b.apply_firewall(FirewallSpec(ports, (default, webg, mute)))
    assert connect(b, s1.id, ip["web"], 9090).startswith("refused")
    # Port security: web taking one's address (as root on its namespace) gets nowhere.
    with contextlib.closing(netns.iproute(netns_name(web.id))) as ipr:
        idx = ipr.link_lookup(ifname="eth0")[0]
        ipr.addr("add", index=idx, address=ip["one"], prefixlen=32)
    b.start_service(s2.id, ServiceSpec("udp", ("python3", "-c", UDP_LISTEN)))
    time.sleep(0.3)
    send = "import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    send += "s.bind((sys.argv[1], 0)); s.sendto(sys.argv[3].encode(), (sys.argv[2], 7070))\n"
    assert b.run(web.id, ["python3", "-c", send, ip["one"], ip["two"], "spoofed!"]).exit_code == 0
    assert b.run(s1.id, ["python3", "-c", send, ip["one"], ip["two"], "genuine!"]).exit_code == 0
    deadline = time.monotonic() + 3
    while "genuine!" not in b.console_log(s2.id):
        assert time.monotonic() < deadline, b.console_log(s2.id)
        time.sleep(0.05)
    assert "spoofed!" not in b.console_log(s2.id)


def _ip(s: ServerSpec) -> str:
    return s.ports[0].addresses[0].split("/")[0]


def test_walls_stay_up_across_a_restart(lab: Lab) -> None:
    """A new process of the instance (a restart, another worker) rebuilds the tables with
    the last applied groups: it neither drops the walls nor cuts allowed traffic."""
    b = lab.backend()
    net = lab.network(b)
    one, two, lone = (lab.server(net, n, 20 + i) for i, n in enumerate(("one", "two", "lone")))
    for s in (one, two, lone):
        b.ensure_server(s)
    mute = _sg("c" * 32)  # no rule: nothing in, nothing out
    spec = FirewallSpec(_ports((one, ("d" * 32,)), (two, ("d" * 32,)), (lone, ("c" * 32,))),
                        (DEFAULT, mute))  # fmt: skip
    b.apply_firewall(spec)
    assert ping(b, one.id, _ip(two)) and not ping(b, one.id, _ip(lone))
    restarted = lab.backend(b.instance_id)
    # What a start does: garbage collection (which rebuilds the tables), then the networks.
    restarted.collect_garbage({one.id, two.id, lone.id}, {net.id})
    restarted.ensure_network(net)
    assert not ping(b, one.id, _ip(lone)), "a restart took the walls down"
    assert ping(b, one.id, _ip(two)), "a restart cut traffic the groups allow"


def test_a_server_that_changes_its_mac_gets_nowhere(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    one, two = lab.server(net, "one", 30), lab.server(net, "two", 31)
    for s in (one, two):
        b.ensure_server(s)
    b.apply_firewall(FirewallSpec(_ports((one, ("d" * 32,)), (two, ("d" * 32,))), (DEFAULT,)))
    b.start_service(two.id, ServiceSpec("udp", ("python3", "-c", UDP_LISTEN)))
    with contextlib.closing(netns.iproute(netns_name(one.id))) as ipr:
        idx = ipr.link_lookup(ifname="eth0")[0]
        # As root on its namespace, what a server's root could do: a new MAC, and two's
        # address resolved by hand (its ARP, with the new MAC, would not get through).
        ipr.link("set", index=idx, address="02:00:00:aa:bb:cc")
        ipr.neigh("replace", dst=_ip(two), lladdr=two.ports[0].mac, ifindex=idx, state=0x80)
    send = "import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    send += "s.sendto(sys.argv[2].encode(), (sys.argv[1], 7070))\n"
    assert b.run(one.id, ["python3", "-c", send, _ip(two), "other-mac!"]).exit_code == 0
    with contextlib.closing(netns.iproute(netns_name(one.id))) as ipr:
        ipr.link("set", index=idx, address=one.ports[0].mac)
    # The control: the same datagram from its own MAC gets through.
    assert b.run(one.id, ["python3", "-c", send, _ip(two), "own-mac!"]).exit_code == 0
    deadline = time.monotonic() + 3
    while "own-mac!" not in b.console_log(two.id):
        assert time.monotonic() < deadline, b.console_log(two.id)
        time.sleep(0.05)
    assert "other-mac!" not in b.console_log(two.id)


def test_remote_group_cidr_and_egress_rules(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    a, c, web = (lab.server(net, n, 40 + i) for i, n in enumerate(("a", "c", "web")))
    for s in (a, c, web):
        b.ensure_server(s)
    for s, ports in ((web, (8080, 9090)), (a, (7000, 7001))):
        for port in ports:
            b.start_service(s.id, ServiceSpec(f"l{port}", ("python3", "-c", LISTEN, str(port))))
    ga, gc, gw = "a" * 32, "c" * 32, "b" * 32
    groups = (
        _sg(ga, SecurityGroupRuleSpec("egress"),
            SecurityGroupRuleSpec("ingress", "tcp", 7000, 7001)),
        _sg(gc, SecurityGroupRuleSpec("egress")),
        _sg(gw, SecurityGroupRuleSpec("ingress", "tcp", 8080, remote_group_id=ga),
            SecurityGroupRuleSpec("ingress", "tcp", 9090, remote_cidr=f"{_ip(c)}/32"),
            SecurityGroupRuleSpec("egress", "tcp", 7000, 7000)),
    )  # fmt: skip
    b.apply_firewall(FirewallSpec(_ports((a, (ga,)), (c, (gc,)), (web, (gw,))), groups))
    time.sleep(0.5)  # the listeners
    # Remote group: members of a get to 8080 (and the replies come back: stateful), c not.
    assert connect(b, a.id, _ip(web), 8080) == "hi"
    assert connect(b, c.id, _ip(web), 8080).startswith("refused")
    # Remote CIDR: c's address gets to 9090, a's not.
    assert connect(b, c.id, _ip(web), 9090) == "hi"
    assert connect(b, a.id, _ip(web), 9090).startswith("refused")
    # Egress: web sends only to tcp port 7000 (a lets in 7000 and 7001).
    assert connect(b, web.id, _ip(a), 7000) == "hi"
    assert connect(b, web.id, _ip(a), 7001).startswith("refused")
    assert not ping(b, web.id, _ip(a))
    # Membership is a rule change too: c joins a, and gets to 8080 within a second.
    started = time.monotonic()
    b.apply_firewall(FirewallSpec(_ports((a, (ga,)), (c, (gc, ga)), (web, (gw,))), groups))
    assert time.monotonic() - started < 1.0
    assert connect(b, c.id, _ip(web), 8080) == "hi"


RAW_LISTEN = (
    "import socket\n"
    "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88B5))\n"
    "s.bind(('eth0', 0))\n"
    "while True:\n"
    "    print('raw', s.recv(1500)[14:30], flush=True)\n"
)
RAW_SEND = (
    "import socket, sys\n"
    "s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW); s.bind(('eth0', 0))\n"
    "mac = lambda m: bytes.fromhex(m.replace(':', ''))\n"
    "s.send(mac(sys.argv[1]) + mac(sys.argv[2]) + b'\\x88\\xb5' + sys.argv[3].encode().ljust(46))\n"
)


def test_frames_other_than_ipv4_and_arp_do_not_pass_around_the_walls(lab: Lab) -> None:
    """Frames the inet hooks never see (another ethertype, VLAN tags, IPv6) would cross the
    bridge without meeting the groups: a normal port may send IPv4 and ARP, nothing else."""
    b = lab.backend()
    net = lab.network(b)
    one, two = lab.server(net, "one", 50), lab.server(net, "two", 51)
    for s in (one, two):
        b.ensure_server(s)
    mute = _sg("c" * 32)  # nothing in, nothing out
    b.apply_firewall(FirewallSpec(_ports((one, ("c" * 32,)), (two, ("c" * 32,))), (mute,)))
    b.start_service(two.id, ServiceSpec("raw", ("python3", "-c", RAW_LISTEN)))
    time.sleep(0.3)
    macs = [two.ports[0].mac, one.ports[0].mac]
    assert b.run(one.id, ["python3", "-c", RAW_SEND, *macs, "walled-off!"]).exit_code == 0
    # The control: with the instance's tables gone, the same frame arrives.
    firewall.apply(b.instance_id, [], [])
    assert b.run(one.id, ["python3", "-c", RAW_SEND, *macs, "no-tables!"]).exit_code == 0
    deadline = time.monotonic() + 3
    while "no-tables!" not in b.console_log(two.id):
        assert time.monotonic() < deadline, b.console_log(two.id)
        time.sleep(0.05)
    assert "walled-off!" not in b.console_log(two.id)
