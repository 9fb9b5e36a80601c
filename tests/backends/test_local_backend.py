"""The local backend against the real kernel: namespaces, bridges, veth/macvlan, cgroups."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pyroute2 import IPRoute

from ecliptic.backends.base import (
    Backend,
    NotFoundInBackend,
    PortSpec,
    ServerSpec,
    ServiceSpec,
)
from ecliptic.backends.local import LocalBackend, links, netns
from ecliptic.backends.local.inventory import InventoryError
from ecliptic.backends.local.names import (
    OwnerRecord,
    OwnershipError,
    bridge_name,
    macvlan_name,
    netns_name,
    pf_name,
    veth_name,
)

from .conftest import Lab


def ip(*args: str) -> str:
    """Run ``ip`` and return its stdout (raises on failure)."""
    return subprocess.run(["ip", *args], check=True, capture_output=True, text=True).stdout


def root_link(name: str) -> object | None:
    """The root-namespace link ``name``, or None."""
    with IPRoute() as ipr:
        return links.get(ipr, name)


def ping(b: LocalBackend, server_id: str, address: str) -> bool:
    r = b.run(server_id, ["ping", "-c1", "-W1", address], timeout=5)
    return r.exit_code == 0


def addrs_inside(ns: str, ifname: str) -> set[str]:
    out = json.loads(ip("-n", ns, "-j", "addr", "show", "dev", ifname))
    return {f"{a['local']}/{a['prefixlen']}" for a in out[0]["addr_info"] if a["family"] == "inet"}


def test_is_a_backend(lab: Lab) -> None:
    assert isinstance(lab.backend(), Backend)


def test_network_bridge_holds_gateway(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    br = bridge_name(net.id)
    status = b.ensure_network(net)  # idempotent
    assert status.ready and status.backend_ref == br
    info = json.loads(ip("-j", "-d", "addr", "show", "dev", br))[0]
    assert info["linkinfo"]["info_kind"] == "bridge"
    assert "UP" in info["flags"]
    v4 = {f"{a['local']}/{a['prefixlen']}" for a in info["addr_info"] if a["family"] == "inet"}
    assert v4 == {net.subnets[0].gateway_ip + "/24"}
    assert json.loads((lab.owners_dir / br).read_text()) == {
        "instance": b.instance_id,
        "kind": "network",
        "object_id": net.id,
    }
    b.delete_network(net.id)
    b.delete_network(net.id)  # idempotent
    assert not (lab.owners_dir / br).exists()
    assert root_link(br) is None


def test_normal_and_direct_ports_share_l2_with_gateway(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    gw = net.subnets[0].gateway_ip
    normal = lab.server(net, "alpha", 10)
    direct = lab.server(net, "beta", 11, vnic_type="direct")
    direct2 = lab.server(net, "gamma", 12, vnic_type="direct")
    st_n = b.ensure_server(normal)
    st_d = b.ensure_server(direct)
    b.ensure_server(direct2)
    assert [i.ifname for i in st_n.interfaces] == ["eth0"]
    assert st_n.interfaces[0].addresses == normal.ports[0].addresses
    assert st_n.interfaces[0].mac == normal.ports[0].mac
    assert st_d.interfaces[0].vnic_type == "direct"
    assert b.server_exists(normal.id) and b.server_exists(direct.id)
    ip_n, ip_d = (s.ports[0].addresses[0].split("/")[0] for s in (normal, direct))
    lab.open_walls(b, normal, direct, direct2)
    assert ping(b, normal.id, ip_d)
    assert ping(b, normal.id, gw)
    assert ping(b, direct.id, ip_n)
    assert ping(b, direct.id, gw)
    assert ping(b, direct2.id, ip_d)  # macvlan to macvlan, inside the PF
    for target in (ip_n, ip_d):  # and from the host itself (source: the bridge address)
        host_ping = ["ping", "-c1", "-W1", "-I", bridge_name(net.id), target]
        assert subprocess.run(host_ping, capture_output=True).returncode == 0
    # hostnames, and nothing routed anywhere: connected routes only
    assert b.run(normal.id, ["hostname"]).stdout == b"alpha\n"
    assert b.run(direct.id, ["hostname"]).stdout == b"beta\n"
    routes = b.run(direct.id, ["ip", "route"]).stdout.decode()
    assert "default" not in routes and "eth0" in routes
    detail = json.loads(ip("-n", netns_name(direct.id), "-j", "-d", "link", "show", "eth0"))[0]
    assert detail["linkinfo"]["info_kind"] == "macvlan"
    assert detail["linkinfo"]["info_data"]["mode"] == "bridge"
    assert root_link(macvlan_name(direct.ports[0].id)) is None
    assert root_link(pf_name(net.id)) is not None


def test_run_env_stdin_timeout_and_missing_server(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    s = lab.server(net, "gamma", 10)
    b.ensure_server(s)
    r = b.run(
        s.id,
        ["sh", "-c", 'echo "$FOO $HOME $HOSTNAME"; cat; echo err >&2; exit 3'],
        stdin=b"in-data",
        env={"FOO": "bar"},
    )
    assert (r.exit_code, r.stdout, r.stderr) == (3, b"bar /root gamma\nin-data", b"err\n")
    t0 = time.monotonic()
    r = b.run(s.id, ["sh", "-c", "sleep 30 & sleep 30"], timeout=0.3)
    assert r.timed_out and r.exit_code == 124
    assert time.monotonic() - t0 < 3
    big = b.run(s.id, ["sh", "-c", "head -c 3000000 /dev/zero"])
    assert big.exit_code == 0 and len(big.stdout) == 1 << 20
    with pytest.raises(NotFoundInBackend):
        b.run(lab.new_id(), ["true"])


def test_services_and_console_log(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    s = lab.server(net, "delta", 10)
    b.ensure_server(s)
    svc = ServiceSpec(
        name="echoer",
        argv=("sh", "-c", 'echo "out-$(hostname)"; echo "err-$((6 * 7))" >&2; exec sleep 60'),
    )
    st = b.start_service(s.id, svc)
    assert st.running and st.pid
    assert b.start_service(s.id, svc).pid == st.pid  # idempotent
    assert b.services(s.id) == [st]
    pid = st.pid
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == netns.inode(netns_name(s.id))
    deadline = time.monotonic() + 5
    while "err-42" not in b.console_log(s.id) and time.monotonic() < deadline:
        time.sleep(0.02)
    log = b.console_log(s.id)
    assert "out-delta" in log and "err-42" in log
    assert "network namespace" in log and "eth0" in log and "limits applied" in log
    assert b.console_log(s.id, tail_bytes=10) == log[-10:]
    b.stop_service(s.id, "echoer")
    b.stop_service(s.id, "echoer")  # idempotent
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
    assert b.services(s.id) == []
    # a pidfile naming a process outside the server is never trusted (PID reuse)
    pidfile = b.state_dir / "servers" / s.id / "services" / "fake.pid"
    pidfile.write_text(f"{os.getpid()} 0\n")
    assert [x.running for x in b.services(s.id)] == [False]
    b.stop_service(s.id, "fake")  # must not signal us
    # a running service is killed by delete_server
    st = b.start_service(s.id, svc)
    b.delete_server(s.id)
    assert not b.server_exists(s.id)
    assert b.console_log(s.id) == ""
    assert not (b.state_dir / "servers" / s.id).exists()
    assert not Path(f"/proc/{st.pid}").exists() or "Z" in Path(f"/proc/{st.pid}/stat").read_text()


def test_cgroup_limits(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    s = lab.server(net, "eps", 10, vcpus=2, memory_mb=300)
    status = b.ensure_server(s)
    assert status.limits_applied, status.limits_note
    ns = netns_name(s.id)
    cpu = Path("/sys/fs/cgroup/cpu/ecliptic") / ns
    mem = Path("/sys/fs/cgroup/memory/ecliptic") / ns
    assert (cpu / "cpu.cfs_period_us").read_text().strip() == "100000"
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "200000"
    assert (mem / "memory.limit_in_bytes").read_text().strip() == str(300 * 1024 * 1024)
    # Inside, the server's cgroups are its root (a cgroup namespace); seen from the host,
    # its processes are in them.
    inside = b.run(s.id, ["cat", "/proc/self/cgroup"]).stdout.decode()
    assert "cpu:/\n" in inside and "memory:/\n" in inside, inside
    init = b._init(s.id)
    assert init is not None
    cg = Path(f"/proc/{init.pid}/cgroup").read_text()
    assert f"cpu:/ecliptic/{ns}" in cg and f"memory:/ecliptic/{ns}" in cg
    # a flavor change is applied in place
    b.ensure_server(dataclasses.replace(s, vcpus=1))
    assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "100000"
    b.delete_server(s.id)
    assert not cpu.exists() and not mem.exists()


def test_cgroups_missing_are_reported(lab: Lab, tmp_path: Path) -> None:
    b = lab.backend(cgroup_root=tmp_path / "no-cgroups")
    net = lab.network(b)
    s = lab.server(net, "zeta", 10)
    status = b.ensure_server(s)
    assert not status.limits_applied and "not mounted" in status.limits_note
    assert b.run(s.id, ["true"]).exit_code == 0


def test_ensure_repairs(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    gw = net.subnets[0].gateway_ip
    s = lab.server(net, "eta", 10)
    d = lab.server(net, "theta", 11, vnic_type="direct")
    b.ensure_server(s)
    b.ensure_server(d)
    ns, nsd = netns_name(s.id), netns_name(d.id)
    ip("-n", ns, "link", "del", "eth0")  # also takes the host end with it
    ip("-n", nsd, "addr", "flush", "dev", "eth0")
    ip("-n", nsd, "addr", "add", "10.99.0.5/16", "dev", "eth0")
    ip("-n", nsd, "link", "set", "eth0", "down")
    st = b.ensure_server(s)
    b.ensure_server(d)
    assert st.interfaces[0].addresses == s.ports[0].addresses
    assert addrs_inside(nsd, "eth0") == set(d.ports[0].addresses)
    assert ping(b, s.id, gw) and ping(b, d.id, gw)
    # an extra interface in the namespace is removed; a moved port index is rebuilt
    ip("-n", ns, "link", "add", "junk0", "type", "veth", "peer", "name", "junk1")
    moved = dataclasses.replace(s, ports=(dataclasses.replace(s.ports[0], index=1),))
    st = b.ensure_server(moved)
    assert [i.ifname for i in st.interfaces] == ["eth1"]
    names = {x["ifname"] for x in json.loads(ip("-n", ns, "-j", "link", "show"))}
    assert names == {"lo", "eth1"}


def test_crash_leftovers_converge_in_process(lab: Lab) -> None:
    """Partial states built with the lower-level helpers, then ensure_server converges."""
    b = lab.backend()
    net = lab.network(b)
    d = lab.server(net, "iota", 11, vnic_type="direct")
    n = lab.server(net, "kappa", 12)
    # a namespace without interfaces, and a macvlan left in the root namespace
    b.owners.claim(netns_name(d.id), OwnerRecord(b.instance_id, "server", d.id))
    netns.create(netns_name(d.id))
    port = d.ports[0]
    stray = macvlan_name(port.id)
    b.owners.claim(
        stray, OwnerRecord(b.instance_id, "port", port.id, server_id=d.id, vnic_type="direct")
    )
    with IPRoute() as root:
        b.ensure_network(net)
        b.ensure_server(lab.server(net, "pf-maker", 13, vnic_type="direct"))  # makes the PF
        pf = links.get(root, pf_name(net.id))
        assert pf is not None
        root.link("add", ifname=stray, kind="macvlan", link=pf["index"], macvlan_mode="bridge")
    # a veth pair that exists already, with its peer still in the root namespace
    b.owners.claim(netns_name(n.id), OwnerRecord(b.instance_id, "server", n.id))
    netns.create(netns_name(n.id))
    host = veth_name(n.ports[0].id)
    b.owners.claim(host, OwnerRecord(b.instance_id, "port", n.ports[0].id, server_id=n.id))
    ip("link", "add", host, "type", "veth", "peer", "name", "eclt-" + host[5:])
    b.ensure_server(d)
    b.ensure_server(n)
    with IPRoute() as root:
        assert links.get(root, stray) is None
        assert links.get(root, "eclt-" + host[5:]) is None
    lab.open_walls(b, d, n)
    assert ping(b, d.id, n.ports[0].addresses[0].split("/")[0])


CHILD = """
import json, sys
from pathlib import Path
from ecliptic.backends.base import NetworkSpec, PortSpec, ServerSpec, SubnetSpec
from ecliptic.backends.local import LocalBackend
a = json.loads(sys.argv[1])
b = LocalBackend(a["instance"], Path(a["state"]), owners_dir=Path(a["owners"]))
if a["op"] == "ensure_network":
    n = a["spec"]
    b.ensure_network(NetworkSpec(**{**n, "subnets": tuple(SubnetSpec(**x) for x in n["subnets"])}))
elif a["op"] == "ensure_server":
    s = a["spec"]
    ports = tuple(PortSpec(**{**p, "addresses": tuple(p["addresses"])}) for p in s["ports"])
    b.ensure_server(ServerSpec(**{**s, "ports": ports}))
else:
    b.delete_server(a["spec"]["id"])
"""


def crash_child(b: LocalBackend, op: str, spec: object, point: str) -> int:
    arg = json.dumps(
        {
            "instance": b.instance_id,
            "state": str(b.state_dir),
            "owners": str(b.owners.directory),
            "op": op,
            "spec": dataclasses.asdict(spec),  # type: ignore[call-overload]
        }
    )
    env = dict(os.environ, ECLIPTIC_CRASH_AT=point)
    return subprocess.run([sys.executable, "-c", CHILD, arg], env=env, timeout=60).returncode


def test_sigkill_mid_operation_converges(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network_spec()
    assert crash_child(b, "ensure_network", net, "local.network.after_bridge") == -signal.SIGKILL
    assert root_link(bridge_name(net.id)) is not None
    b.ensure_network(net)
    gw = net.subnets[0].gateway_ip
    servers = []
    for i, point in enumerate(["local.server.after_netns", "local.server.after_ports"]):
        s = lab.server(net, f"crash{i}", 20 + i, vnic_type="direct" if i else "normal")
        assert crash_child(b, "ensure_server", s, point) == -signal.SIGKILL
        assert netns.exists(netns_name(s.id))
        status = b.ensure_server(s)
        assert status.limits_applied and status.interfaces[0].addresses == s.ports[0].addresses
        assert ping(b, s.id, gw)
        servers.append(s)
    victim = servers[0]
    b.start_service(victim.id, ServiceSpec(name="sleeper", argv=("sleep", "60")))
    rc = crash_child(b, "delete_server", victim, "local.server.delete.after_kill")
    assert rc == -signal.SIGKILL
    assert b.services(victim.id) == [] or not b.services(victim.id)[0].running
    b.delete_server(victim.id)
    assert not netns.exists(netns_name(victim.id))


def test_delete_is_idempotent_and_tolerant(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    s = lab.server(net, "lam", 10)
    b.ensure_server(s)
    t0 = time.monotonic()
    b.delete_server(s.id)
    assert time.monotonic() - t0 < 1.0
    b.delete_server(s.id)
    b.delete_server(lab.new_id())  # never existed
    assert not b.server_exists(s.id)
    assert not list(lab.owners_dir.glob("ecl-*")) and not list(lab.owners_dir.glob("eclv-*"))
    with pytest.raises(NotFoundInBackend):
        b.start_service(s.id, ServiceSpec(name="x", argv=("true",)))
    assert b.services(s.id) == [] and b.console_log(s.id) == ""


def test_gc_and_observe_respect_ownership(lab: Lab) -> None:
    mine, theirs = lab.backend(), lab.backend()
    net_a, net_b = lab.network(mine), lab.network(theirs)
    keep = lab.server(net_a, "keep", 10)
    drop = lab.server(net_a, "drop", 11, vnic_type="direct")
    other = lab.server(net_b, "other", 10)
    for b, s in ((mine, keep), (mine, drop), (theirs, other)):
        b.ensure_server(s)
    theirs.start_service(other.id, ServiceSpec(name="sleeper", argv=("sleep", "60")))
    mine.start_service(drop.id, ServiceSpec(name="sleeper", argv=("sleep", "60")))

    obs = mine.observe({keep.id}, {net_a.id})
    assert obs.ids("server") == {keep.id}
    assert obs.ids("network") == {net_a.id}
    by_name = {r.name: r for r in obs.resources}
    assert by_name[netns_name(drop.id)].object_id is None
    assert netns_name(other.id) not in by_name and bridge_name(net_b.id) not in by_name
    assert any(r.kind == "process" and r.object_id is None for r in obs.resources)
    assert {r.name for r in obs.resources if r.kind == "port"} == {
        veth_name(keep.ports[0].id),
        macvlan_name(drop.ports[0].id),
    }

    # another instance's server can be neither deleted nor garbage-collected by us
    with pytest.raises(OwnershipError):
        mine.delete_server(other.id)
    with pytest.raises(OwnershipError):
        mine.delete_network(net_b.id)
    report = mine.collect_garbage({keep.id}, {net_a.id})
    removed = {r.name for r in report.removed}
    assert netns_name(drop.id) in removed and netns_name(keep.id) not in removed
    assert not mine.server_exists(drop.id) and mine.server_exists(keep.id)
    assert theirs.server_exists(other.id) and theirs.services(other.id)[0].running
    assert ping(theirs, other.id, net_b.subnets[0].gateway_ip)

    report = mine.collect_garbage(set(), set())
    assert {r.name for r in report.removed} >= {netns_name(keep.id), bridge_name(net_a.id)}
    assert theirs.server_exists(other.id)
    assert root_link(bridge_name(net_b.id)) is not None
    assert mine.observe(set(), set()).resources == ()
    assert {r.name for r in theirs.observe({other.id}, {net_b.id}).resources} >= {
        netns_name(other.id),
        bridge_name(net_b.id),
    }


def test_unowned_resources_are_refused(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    s = lab.server(net, "mu", 10)
    # a namespace with our name but no owner record: somebody else's
    netns.create(netns_name(s.id))
    try:
        with pytest.raises(OwnershipError):
            b.ensure_server(s)
        with pytest.raises(OwnershipError):
            b.delete_server(s.id)
        b.collect_garbage(set(), {net.id})
        assert netns.exists(netns_name(s.id))
    finally:
        netns.remove(netns_name(s.id))


def test_inventory_default_and_errors(lab: Lab, tmp_path: Path) -> None:
    hosts = lab.backend().inventory()
    assert len(hosts) >= 8
    models = {g.model for h in hosts for g in h.gpus}
    assert {"A100", "H100", "L40S"} <= models
    a100 = next(g for h in hosts for g in h.gpus if g.model == "A100")
    assert "3g.40gb" in a100.mig_profiles
    assert next(g for h in hosts for g in h.gpus if g.model == "L40S").mig_profiles == ()
    assert any(n.rdma and n.speed_gbps == 100 and n.sriov_vfs for h in hosts for n in h.nics)
    assert all(dict(h.properties).get("rack") for h in hosts)

    bad = tmp_path / "inv.yaml"
    bad.write_text(
        "hosts:\n"
        "  - {name: ok-1, vcpus: 4, memory_mb: 1024}\n"
        "  - {name: gpu-9, vcpus: 4, memory_mb: 1024, gpus: [{model: A100, count: 0}]}\n"
    )
    with pytest.raises(InventoryError) as e:
        lab.backend(inventory_path=bad).inventory()
    msg = str(e.value)
    assert str(bad) in msg and "gpu-9" in msg and "gpus[0].count" in msg
    bad.write_text("hosts:\n  - {name: Bad_Name, vcpus: 4, memory_mb: 1024, colour: red}\n")
    with pytest.raises(InventoryError) as e:
        lab.backend(inventory_path=bad).inventory()
    assert "'name'" in str(e.value) and "'colour'" in str(e.value)


def test_port_spec_validation(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    s = lab.server(net, "nu", 10)
    bad = dataclasses.replace(
        s,
        ports=(
            PortSpec(id=lab.new_id(), network_id=net.id, mac="01:00:00:00:00:01", addresses=()),
        ),
    )
    with pytest.raises(Exception, match="unicast"):
        b.ensure_server(bad)
    with pytest.raises(Exception, match="hostname"):
        b.ensure_server(dataclasses.replace(s, name="bad name"))
    missing_net = dataclasses.replace(
        s, ports=(dataclasses.replace(s.ports[0], network_id=lab.new_id()),)
    )
    with pytest.raises(Exception, match="not ready"):
        b.ensure_server(missing_net)
    assert isinstance(s, ServerSpec)


def test_two_threads_share_one_backend(lab: Lab) -> None:
    b = lab.backend()
    net = lab.network(b)
    specs = [
        lab.server(net, f"t{i}", 30 + i, vnic_type="direct" if i % 2 else "normal")
        for i in range(6)
    ]
    with ThreadPoolExecutor(2) as pool:
        statuses = list(pool.map(b.ensure_server, specs))
    assert all(st.interfaces and st.limits_applied for st in statuses)
    lab.open_walls(b, *specs)
    assert ping(b, specs[0].id, specs[1].ports[0].addresses[0].split("/")[0])
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(b.delete_server, [s.id for s in specs]))
    assert not any(b.server_exists(s.id) for s in specs)
