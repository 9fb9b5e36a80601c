"""A real runtime (store + local cloud + workers) behind the API, driven in-process."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ecliptic.api.app import create_app
from ecliptic.config import load_settings
from ecliptic.runtime import Runtime
from tests.conftest import fresh_pg_database, migrated_sqlite

SMALL_INVENTORY = """
hosts:
  - {name: cpu-a, vcpus: 8, memory_mb: 16384, disk_gb: 500,
     nics: [{name: eth0, speed_gbps: 25}]}
  - {name: gpu-a, vcpus: 32, memory_mb: 262144, disk_gb: 2000,
     gpus: [{model: A100, count: 4, memory_gb: 80, mig_profiles: [1g.10gb, 3g.40gb]}],
     nics: [{name: ib0, speed_gbps: 100, rdma: true, sriov_vfs: 16}]}
"""


class Api:
    """An authenticated test client with helpers."""

    def __init__(self, client: TestClient, token: str, tenancy: str | None = None) -> None:
        self.client = client
        self.headers = {"Authorization": f"Bearer {token}"}
        if tenancy:
            self.headers["X-Ecliptic-Tenancy"] = tenancy

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(f"/api/v1{path}", headers=self.headers, **kw)

    def post(self, path: str, json: Any = None, **kw: Any) -> Any:
        return self.client.post(f"/api/v1{path}", json=json, headers=self.headers, **kw)

    def put(self, path: str, json: Any = None) -> Any:
        return self.client.put(f"/api/v1{path}", json=json, headers=self.headers)

    def patch(self, path: str, json: Any = None) -> Any:
        return self.client.patch(f"/api/v1{path}", json=json, headers=self.headers)

    def delete(self, path: str) -> Any:
        return self.client.delete(f"/api/v1{path}", headers=self.headers)

    def wait(self, name: str, phase: str = "ACTIVE", timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = self.get(f"/servers/{name}")
            if phase == "GONE" and r.status_code == 404:
                return {}
            if r.status_code == 200 and r.json()["phase"] == phase:
                return dict(r.json())
            time.sleep(0.02)
        raise AssertionError(f"{name} did not reach {phase}: {r.status_code} {r.text}")


def login(client: TestClient, user: str, password: str) -> str:
    r = client.post("/api/v1/auth/login", json={"username": user, "password": password})
    assert r.status_code == 201, r.text
    return str(r.json()["secret"])


@contextmanager
def small_runtime(tmp: Path, url: str | None = None) -> Iterator[Runtime]:
    """A started runtime over the small inventory (SQLite in ``tmp`` unless ``url``);
    everything it made in the local cloud is deleted after."""
    url = url or migrated_sqlite(tmp / "ecl.db")
    inv = tmp / "inventory.yaml"
    inv.write_text(SMALL_INVENTORY)
    settings = load_settings(data_dir=tmp / "data", inventory_path=inv)
    settings = type(settings)(**{**settings.__dict__, "database_url": url})
    rt = Runtime(settings)
    rt.start()
    try:
        yield rt
    finally:
        _delete_everything(rt)
        rt.stop()


@pytest.fixture
def runtime(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Runtime]:
    url = None
    if getattr(request, "param", None) == "postgresql":
        url = fresh_pg_database(request.getfixturevalue("pg_admin_url"))
    with small_runtime(tmp_path, url) as rt:
        yield rt


def _delete_everything(rt: Runtime) -> None:
    from ecliptic.reconcile.adoption import known_ids

    rt.workers.stop()
    rt.backend.collect_garbage(set(), set())
    servers, networks = known_ids(rt.ctx)
    assert rt.backend.observe(servers, networks).resources == ()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime)) as c:
        yield c


@pytest.fixture
def admin(client: TestClient) -> Api:
    return Api(client, login(client, "admin", "test-admin-password"))
