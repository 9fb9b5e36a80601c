"""Links over netlink: network bridges, the emulated SR-IOV PF, veth and macvlan ports.

All functions take pyroute2 ``IPRoute`` objects: ``root`` talks to the host namespace,
``ns`` to a server's namespace. Every function converges: it inspects what is there, removes
what is wrong, and creates what is missing.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

IFACE_GROUP = 0xEC1
"""Interface group given to every interface the backend puts in a server (bulk delete)."""

_ENODEV = 19
_ENOENT = 2
_EEXIST = 17
_EADDRNOTAVAIL = 99

IpIface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
_NF_CALL = ("IFLA_BR_NF_CALL_IPTABLES", "IFLA_BR_NF_CALL_IP6TABLES")


def get(ipr: Any, name: str) -> Any | None:
    """The RTM_NEWLINK message of link ``name``, or None when it does not exist."""
    try:
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as e:
        if e.code in (_ENODEV, _ENOENT):
            return None
        raise


def kind(msg: Any) -> str | None:
    """Link kind (``veth``, ``bridge``, ``macvlan``) of a link message."""
    return msg.get(("linkinfo", "kind"))


def delete(ipr: Any, name: str) -> bool:
    """Delete link ``name``; True if it was there."""
    try:
        ipr.link("del", ifname=name)
        return True
    except NetlinkError as e:
        if e.code in (_ENODEV, _ENOENT):
            return False
        raise


def delete_index(ipr: Any, index: int) -> None:
    """Delete a link by index; no error if it is gone."""
    try:
        ipr.link("del", index=index)
    except NetlinkError as e:
        if e.code not in (_ENODEV, _ENOENT):
            raise


def _set(ipr: Any, msg: Any, **want: Any) -> bool:
    """``link set`` only the attributes of ``msg`` that differ from ``want``."""
    current = {
        "address": msg.get("address"),
        "mtu": msg.get("mtu"),
        "master": msg.get("master"),
        "group": msg.get("group"),
        "state": msg.get("state"),
    }
    diff = {k: v for k, v in want.items() if current.get(k) != v}
    if not diff:
        return False
    ipr.link("set", index=msg["index"], **diff)
    return True


def parse_ifaces(addresses: Iterable[str]) -> list[IpIface]:
    """Parse ``ip/prefixlen`` strings (ValueError on a bad one)."""
    return [ipaddress.ip_interface(a) for a in addresses]


def addresses(ipr: Any, index: int) -> list[IpIface]:
    """Global addresses of a link (IPv6 link-local ones left out)."""
    out: list[IpIface] = []
    for msg in ipr.get_addr(index=index):
        addr = msg.get("IFA_ADDRESS")
        if addr is None:
            continue
        iface = ipaddress.ip_interface(f"{addr}/{msg['prefixlen']}")
        if iface.version == 6 and iface.ip.is_link_local:
            continue
        out.append(iface)
    return out


def sync_addresses(ipr: Any, index: int, wanted: Iterable[IpIface]) -> bool:
    """Make a link hold exactly ``wanted`` (plus IPv6 link-local); True when changed."""
    want = list(dict.fromkeys(wanted))
    have = addresses(ipr, index)
    changed = False
    for iface in have:
        if iface not in want:
            try:
                ipr.addr(
                    "del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
                )
            except NetlinkError as e:
                if e.code != _EADDRNOTAVAIL:
                    raise
            changed = True
    for iface in want:
        if iface not in have:
            try:
                ipr.addr(
                    "add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen
                )
            except NetlinkError as e:
                if e.code != _EEXIST:
                    raise
            changed = True
    return changed


def ensure_bridge(root: Any, name: str, *, mac: str, mtu: int) -> tuple[Any, bool]:
    """A bridge ``name`` with a fixed MAC, MTU and up; returns (link, created)."""
    msg = get(root, name)
    created = False
    if msg is not None and kind(msg) != "bridge":
        delete(root, name)
        msg = None
    if msg is None:
        root.link("add", ifname=name, kind="bridge", address=mac, mtu=mtu)
        msg = get(root, name)
        created = True
    assert msg is not None
    _set(root, msg, address=mac, mtu=mtu, state="up")
    # Frames bridged between its ports pass the inet hooks (with conntrack), where the
    # instance's security groups are: per bridge, whatever the host's global settings. IPv6
    # too, so that it meets the groups' "IPv4 only" instead of passing them unseen.
    info = msg.get_attr("IFLA_LINKINFO")
    data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
    if data is None or any(data.get_attr(a) != 1 for a in _NF_CALL):
        root.link(
            "set", index=msg["index"], kind="bridge", br_nf_call_iptables=1, br_nf_call_ip6tables=1
        )
    return msg, created


def ensure_pf(root: Any, pf: str, peer: str, *, bridge_index: int, mtu: int) -> tuple[int, bool]:
    """Veth pair ``pf``/``peer`` with ``peer`` on the bridge, both up; returns (pf index, made)."""
    pf_msg, peer_msg = get(root, pf), get(root, peer)
    paired = (
        pf_msg is not None
        and peer_msg is not None
        and kind(pf_msg) == "veth"
        and kind(peer_msg) == "veth"
        and pf_msg.get("IFLA_LINK") == peer_msg["index"]
        and peer_msg.get("IFLA_LINK") == pf_msg["index"]
    )
    created = False
    if not paired:
        for name, msg in ((pf, pf_msg), (peer, peer_msg)):
            if msg is not None:
                delete(root, name)
        root.link("add", ifname=pf, kind="veth", mtu=mtu, peer={"ifname": peer, "mtu": mtu})
        pf_msg, peer_msg = get(root, pf), get(root, peer)
        created = True
    assert pf_msg is not None and peer_msg is not None
    _set(root, peer_msg, master=bridge_index, mtu=mtu, state="up")
    _set(root, pf_msg, mtu=mtu, state="up")
    return int(pf_msg["index"]), created


def ensure_veth_port(
    root: Any,
    ns: Any,
    nsfd: int,
    *,
    host: str,
    inner: str,
    mac: str,
    mtu: int,
    bridge_index: int,
) -> tuple[Any, bool]:
    """Veth ``host`` (on the bridge) / ``inner`` (in the server); returns (inner link, rebuilt)."""
    inner_msg, host_msg = get(ns, inner), get(root, host)
    paired = (
        inner_msg is not None
        and host_msg is not None
        and kind(inner_msg) == "veth"
        and kind(host_msg) == "veth"
        and host_msg.get("IFLA_LINK") == inner_msg["index"]
        and inner_msg.get("IFLA_LINK") == host_msg["index"]
        and host_msg.get("IFLA_LINK_NETNSID") is not None
    )
    rebuilt = False
    if not paired:
        if inner_msg is not None:
            delete_index(ns, inner_msg["index"])
        if get(root, host) is not None:
            delete(root, host)
        root.link(
            "add",
            ifname=host,
            kind="veth",
            mtu=mtu,
            peer={
                "ifname": inner,
                "net_ns_fd": nsfd,
                "address": mac,
                "mtu": mtu,
                "group": IFACE_GROUP,
            },
        )
        host_msg, inner_msg = get(root, host), get(ns, inner)
        rebuilt = True
    assert host_msg is not None and inner_msg is not None
    _set(root, host_msg, master=bridge_index, mtu=mtu, state="up")
    _set(ns, inner_msg, address=mac, mtu=mtu, group=IFACE_GROUP, state="up")
    return inner_msg, rebuilt


def ensure_macvlan_port(
    root: Any,
    ns: Any,
    nsfd: int,
    *,
    inner: str,
    mac: str,
    mtu: int,
    pf_index: int,
) -> tuple[Any, bool]:
    """Macvlan (bridge mode) child of the PF, made directly in the server as ``inner``."""
    inner_msg = get(ns, inner)
    ok = (
        inner_msg is not None
        and kind(inner_msg) == "macvlan"
        and inner_msg.get("IFLA_LINK") == pf_index
        and inner_msg.get("IFLA_LINK_NETNSID") is not None
        and inner_msg.get(("linkinfo", "data", "IFLA_MACVLAN_MODE")) == "bridge"
    )
    rebuilt = False
    if not ok:
        if inner_msg is not None:
            delete_index(ns, inner_msg["index"])
        root.link(
            "add",
            ifname=inner,
            kind="macvlan",
            link=pf_index,
            macvlan_mode="bridge",
            address=mac,
            mtu=mtu,
            group=IFACE_GROUP,
            net_ns_fd=nsfd,
        )
        inner_msg = get(ns, inner)
        rebuilt = True
    assert inner_msg is not None
    _set(ns, inner_msg, address=mac, mtu=mtu, group=IFACE_GROUP, state="up")
    return inner_msg, rebuilt


def loopback_up(ns: Any) -> None:
    """Bring ``lo`` up."""
    msg = get(ns, "lo")
    if msg is not None:
        _set(ns, msg, state="up")


def names(ipr: Any) -> dict[str, Any]:
    """All links of a namespace by name."""
    return {m.get("ifname"): m for m in ipr.get_links()}


def down_all_but_lo(ns: Any) -> int:
    """Set every interface of a server's namespace but ``lo`` down; returns how many were up."""
    return sum(1 for m in ns.get_links() if m.get("ifname") != "lo" and _set(ns, m, state="down"))


def delete_all_but_lo(ns: Any) -> int:
    """Delete every interface of a server's namespace but ``lo`` in one batch; returns count."""
    doomed = [m for m in ns.get_links() if m.get("ifname") != "lo"]
    if not doomed:
        return 0
    for m in doomed:
        if m.get("group") != IFACE_GROUP:
            ns.link("set", index=m["index"], group=IFACE_GROUP)
    try:
        # One RTM_DELLINK by group: one RCU grace period for all, not one per link.
        ns.link("del", index=0, group=IFACE_GROUP)
    except NetlinkError as e:
        if e.code not in (_ENODEV, _ENOENT):
            raise
    return len(doomed)
