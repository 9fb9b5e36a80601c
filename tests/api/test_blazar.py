"""Blazar's ExternalServiceFilter contract: the payloads a real Blazar sends, and its answers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from tests.api.conftest import Api

DAY = (datetime.now(UTC) + timedelta(days=2)).replace(hour=0, minute=0, second=0, microsecond=0)


def at(hours: float) -> str:
    """A Blazar time (naive UTC, minute resolution) ``hours`` after the test's day."""
    return (DAY + timedelta(hours=hours)).replace(tzinfo=None).isoformat()


CONTEXT = {
    "user_id": "c631173e",
    "project_id": "default",
    "auth_url": "https://keystone.example:5000/v3",
    "region_name": "RegionOne",
}


def host_lease(name: str, start: str, end: str, hosts: list[str]) -> dict[str, Any]:
    """A physical:host lease as Blazar's UsageEnforcement formats it (naive UTC times)."""
    return {
        "name": name,
        "start_date": start,
        "end_date": end,
        "before_end_date": None,
        "user_id": "c631173e",
        "project_id": "default",
        "status": "PENDING",
        "reservations": [
            {
                "resource_type": "physical:host",
                "min": len(hosts),
                "max": len(hosts),
                "hypervisor_properties": "",
                "resource_properties": '["=", "$gpu", "True"]',
                "allocations": [
                    {
                        "id": str(i),
                        "hypervisor_hostname": h,
                        "vcpus": 32,
                        "memory_mb": 262144,
                        "local_gb": 2000,
                    }
                    for i, h in enumerate(hosts)
                ],
            }
        ],
    }


def post(client: TestClient, admin: Api, path: str, body: dict[str, Any]) -> Any:
    token = admin.headers["Authorization"][7:]
    return client.post(f"/api/v1/blazar/{path}", json=body, headers={"X-Auth-Token": token})


def balance(admin: Api, rc: str) -> float:
    return next(
        float(b["remaining"])
        for b in admin.get("/credits").json()["items"]
        if b["resource_class"] == rc
    )


def test_create_update_end_charge_and_refund(client: TestClient, admin: Api) -> None:
    start = balance(admin, "host:A100")
    lease = host_lease("bz", at(0), at(24), ["gpu-a"])
    r = post(client, admin, "check-create", {"context": CONTEXT, "lease": lease})
    assert r.status_code == 204, r.text
    assert balance(admin, "host:A100") == start - 24
    # Blazar now knows the lease id; an extension by 12 h charges the difference.
    current = {**lease, "id": "4c1f7a10-aaaa"}
    longer = {**current, "end_date": at(36)}
    r = post(
        client,
        admin,
        "check-update",
        {"context": CONTEXT, "current_lease": current, "lease": longer},
    )
    assert r.status_code == 204, r.text
    assert balance(admin, "host:A100") == start - 36
    # It ends before it starts: everything comes back, and never more.
    r = post(client, admin, "on-end", {"context": CONTEXT, "lease": longer})
    assert r.status_code == 204
    assert balance(admin, "host:A100") == start


def test_denial_carries_a_message_blazar_shows(client: TestClient, admin: Api) -> None:
    lease = host_lease("huge", at(0), at(24 * 300), ["gpu-a", "gpu-b"])
    lease["reservations"][0]["allocations"][1]["node_type"] = "A100"  # a host Blazar knows
    r = post(client, admin, "check-create", {"context": CONTEXT, "lease": lease})
    assert r.status_code == 403
    assert r.json()["message"].startswith("needs 14400 'A100' host credits, 10000 left")
    other = {**CONTEXT, "project_id": "no-such-project"}
    r = post(client, admin, "check-create", {"context": other, "lease": lease})
    assert r.status_code == 403 and "no Ecliptic tenancy" in r.json()["message"]


def test_only_administrators_may_call(client: TestClient, admin: Api) -> None:
    lease = host_lease("bz", at(0), at(24), ["gpu-a"])
    r = client.post("/api/v1/blazar/check-create", json={"context": CONTEXT, "lease": lease})
    assert r.status_code == 401
    admin.post("/users", {"name": "eve", "password": "eve-password"})
    from tests.api.conftest import login

    eve = login(client, "eve", "eve-password")
    r = client.post(
        "/api/v1/blazar/check-create",
        json={"context": CONTEXT, "lease": lease},
        headers={"X-Auth-Token": eve},
    )
    assert r.status_code == 403
