"""Security groups through the API: validation, tenancy walls, and rules that take effect
on running servers of the real local cloud within a second."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient

from ecliptic.backends.local import firewall
from tests.api.conftest import Api, login

LISTEN = (
    "import socket, sys\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('0.0.0.0', int(sys.argv[1]))); s.listen(16)\n"
    "while True:\n"
    "    c, _ = s.accept(); c.sendall(b'hi'); c.close()\n"
)
CONNECT = (
    "import socket, sys\n"
    "s = socket.socket(); s.settimeout(1)\n"
    "try:\n"
    "    s.connect((sys.argv[1], int(sys.argv[2]))); print(s.recv(16).decode())\n"
    "except OSError as e:\n"
    "    print('refused', type(e).__name__)\n"
)


def reach(api: Api, server: str, ip: str, port: int) -> bool:
    out = api.post(
        f"/servers/{server}/exec", {"argv": ["python3", "-c", CONNECT, ip, str(port)]}
    ).json()
    return bool(out["stdout"].strip() == "hi")


def within(seconds: float, check: object) -> float:
    """Seconds until ``check()`` holds (AssertionError after ``seconds``)."""
    started = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_security_groups_validate_and_stay_in_their_tenancy(admin: Api, client: TestClient) -> None:
    groups = admin.get("/security-groups").json()["items"]
    assert [g["name"] for g in groups] == ["default"]
    assert {(r["direction"], r["remote_group"]) for r in groups[0]["rules"]} == {
        ("ingress", "default"),
        ("egress", None),
    }
    assert admin.post("/security-groups", {"name": "web"}).status_code == 201
    assert admin.post("/security-groups", {"name": "web"}).status_code == 409
    bad = [
        ({"direction": "sideways"}, "direction"),
        ({"direction": "ingress", "protocol": "any", "port_min": 80}, "protocol"),
        ({"direction": "ingress", "protocol": "tcp", "port_min": 90, "port_max": 80}, "port_max"),
        ({"direction": "ingress", "protocol": "tcp", "port_min": 0}, "port_min"),
        ({"direction": "ingress", "remote_cidr": "10.0.0.300/8"}, "remote_cidr"),
        (
            {"direction": "ingress", "remote_cidr": "10.0.0.0/8", "remote_group": "default"},
            "remote_group",
        ),
        ({"direction": "ingress", "remote_group": "nope"}, None),
        ({"direction": "ingress", "colour": "red"}, "colour"),
    ]
    for body, field in bad:
        r = admin.post("/security-groups/web/rules", body)
        assert r.status_code in (404, 422), (body, r.text)
        assert r.json()["detail"], r.text
        if field:
            assert field in {e["field"] for e in r.json()["errors"]}, (body, r.json())
    r = admin.post(
        "/security-groups/web/rules",
        {"direction": "ingress", "protocol": "tcp", "port_min": 80, "remote_cidr": "10.1.2.3/8"},
    )
    assert r.status_code == 201 and r.json()["remote_cidr"] == "10.0.0.0/8", r.text
    assert r.json()["port_max"] == 80
    # Another tenancy sees none of it, and cannot use it.
    admin.post("/tenancies", {"name": "other"})
    admin.post("/users", {"name": "eve", "password": "eve-password"})
    admin.put("/tenancies/other/members", {"user": "eve", "role": "member"})
    eve = Api(client, login(client, "eve", "eve-password"))
    assert [g["name"] for g in eve.get("/security-groups").json()["items"]] == ["default"]
    assert eve.get("/security-groups/web").status_code == 404
    web_id = admin.get("/security-groups/web").json()["id"]
    assert eve.get(f"/security-groups/{web_id}").status_code == 404
    assert eve.delete(f"/security-groups/{web_id}").status_code == 404
    r = eve.post("/security-groups/default/rules", {"direction": "ingress", "remote_group": web_id})
    assert r.status_code == 422 and "no security group" in r.json()["detail"], r.text
    r = eve.post("/servers", {"name": "e1", "flavor": "m1.tiny", "security_groups": ["web"]})
    assert r.status_code == 422 and "no security group 'web'" in r.json()["detail"], r.text
    # default stays; a group in use stays.
    assert admin.delete("/security-groups/default").status_code == 409
    r = admin.post("/servers", {"name": "w1", "flavor": "m1.tiny", "security_groups": ["web"]})
    assert r.status_code == 202 and r.json()["security_groups"] == ["web"], r.text
    r = admin.delete("/security-groups/web")
    assert r.status_code == 409 and "w1" in r.json()["detail"], r.text
    admin.wait("w1")
    assert admin.delete("/servers/w1").status_code == 202
    admin.wait("w1", "GONE")
    assert admin.delete("/security-groups/web").status_code == 204


def test_rules_reach_running_servers_within_a_second(admin: Api) -> None:
    assert admin.post("/security-groups", {"name": "web"}).status_code == 201
    r = admin.post(
        "/security-groups/web/rules",
        {"direction": "ingress", "protocol": "tcp", "port_min": 8080},
    )
    assert r.status_code == 201, r.text
    assert admin.post("/servers", {"name": "a", "flavor": "m1.tiny"}).status_code == 202
    body = {"name": "w", "flavor": "m1.tiny", "security_groups": ["web"]}
    assert admin.post("/servers", body).status_code == 202
    a, w = admin.wait("a"), admin.wait("w")
    ip_a, ip_w = a["addresses"]["default"][0], w["addresses"]["default"][0]
    for port in (8080, 9090):
        script = f'setsid python3 -c "$0" {port} >/dev/null 2>&1 </dev/null &'
        admin.post("/servers/w/exec", {"argv": ["sh", "-c", script, LISTEN]})
        admin.post("/servers/a/exec", {"argv": ["sh", "-c", script, LISTEN]})
    within(5, lambda: reach(admin, "a", ip_w, 8080))
    assert not reach(admin, "a", ip_w, 9090)
    assert not reach(admin, "w", ip_a, 9090)  # a is in default: only its members get in
    rule = admin.post(
        "/security-groups/web/rules", {"direction": "ingress", "protocol": "tcp", "port_min": 9090}
    ).json()
    took = within(1.0, lambda: reach(admin, "a", ip_w, 9090))
    admin.delete(f"/security-groups/web/rules/{rule['id']}")
    within(1.0, lambda: not reach(admin, "a", ip_w, 9090))
    # Giving w the default group too lets it reach a.
    r = admin.put("/servers/w/security-groups", {"security_groups": ["web", "default"]})
    assert r.status_code == 200 and r.json()["security_groups"] == ["web", "default"]
    within(1.0, lambda: reach(admin, "w", ip_a, 9090))
    assert admin.get("/servers/w").json()["security_groups"] == ["web", "default"]
    print(f"\na rule reached a running server in {took:.2f} s")


def test_creating_a_server_calls_nft_once(admin: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    """Applying the whole instance's rules is one ``nft`` transaction, and a server's
    creation needs one (the firewall's own reconcile and the server's share it)."""
    assert admin.post("/servers", {"name": "a", "flavor": "m1.tiny"}).status_code == 202
    ip_a = admin.wait("a")["addresses"]["default"][0]
    calls: list[tuple[str, ...]] = []
    real = firewall.nft

    def counting(*args: str, script: str | None = None) -> str:
        calls.append(args)
        return real(*args, script=script)

    monkeypatch.setattr(firewall, "nft", counting)
    assert admin.post("/servers", {"name": "b", "flavor": "m1.tiny"}).status_code == 202
    admin.wait("b")
    ping = {"argv": ["ping", "-c1", "-W1", ip_a]}
    within(2, lambda: admin.post("/servers/b/exec", ping).json()["exit_code"] == 0)
    time.sleep(0.5)  # anything still queued
    assert len(calls) == 1, calls
