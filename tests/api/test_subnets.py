"""Subnets are created and deleted through the API, and the local cloud follows."""

from __future__ import annotations

import subprocess
import time
from typing import Any

from tests.api.conftest import Api


def _bridge_addresses(network_id: str) -> set[str]:
    out = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "dev", f"eclb-{network_id[:10]}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {line.split()[3] for line in out.splitlines()}


def _until(pred: Any, what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_a_network_grows_a_subnet_when_full_and_gives_it_back(admin: Api) -> None:
    r = admin.post("/networks", json={"name": "small", "cidr": "198.19.250.0/29"})
    assert r.status_code == 202, r.text
    net = r.json()
    _until(lambda: admin.get("/networks/small").json()["phase"] == "ACTIVE", "network ACTIVE")
    ports = [admin.post("/ports", json={"network": "small"}) for _ in range(5)]
    assert all(p.status_code == 201 for p in ports), [p.text for p in ports]
    full = admin.post("/ports", json={"network": "small"})
    assert full.status_code == 409 and "ecliptic subnet create" in full.json()["detail"]

    r = admin.post(
        "/subnets", json={"network": "small", "name": "small-more", "cidr": "198.19.250.8/29"}
    )
    assert r.status_code == 202, r.text
    assert r.json()["gateway_ip"] == "198.19.250.9"
    _until(lambda: "198.19.250.9/29" in _bridge_addresses(net["id"]), "new gateway on the bridge")
    assert "198.19.250.1/29" in _bridge_addresses(net["id"])
    extra = admin.post("/ports", json={"network": "small"})
    assert extra.status_code == 201 and extra.json()["ip_address"] == "198.19.250.10"

    # Overlapping ranges, subnets in use and a network's last subnet are refused.
    r = admin.post("/subnets", json={"network": "small", "name": "x", "cidr": "198.19.250.0/28"})
    assert r.status_code == 409 and "overlaps" in r.json()["detail"]
    r = admin.delete("/subnets/small-more")
    assert r.status_code == 409 and "1 port(s)" in r.json()["detail"]
    assert admin.delete(f"/ports/{extra.json()['id']}").status_code == 204
    assert admin.delete("/subnets/small-more").status_code == 204
    _until(lambda: "198.19.250.9/29" not in _bridge_addresses(net["id"]), "gateway removed")
    names = {s["name"] for s in admin.get("/subnets").json()["items"]}
    assert "small-more" not in names and "small-subnet" in names
    for p in ports:
        assert admin.delete(f"/ports/{p.json()['id']}").status_code == 204
    r = admin.delete("/subnets/small-subnet")
    assert r.status_code == 409 and "ecliptic network delete small" in r.json()["detail"]
    assert admin.delete("/subnets/nope").status_code == 404
