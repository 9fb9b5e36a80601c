"""The portal over a real runtime (store, local cloud, workers), driven as a browser would
be: form posts with the session cookie and the page's CSRF token. One runtime for the
package; tests make their own names."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ecliptic.api.app import create_app
from ecliptic.runtime import Runtime
from tests.api.conftest import small_runtime

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
BASE = "http://portal.test"
PASSWORD = "portal-test-password"


class Browser:
    """A signed-in browser: cookies kept, forms posted with the page's token."""

    def __init__(self, client: TestClient, user: str) -> None:
        self.client = client
        self.user = user
        self.csrf = ""

    def get(self, path: str, **kw: Any) -> Any:
        r = self.client.get(path, **kw)
        m = CSRF.search(r.text)
        if m:
            self.csrf = m.group(1)
        return r

    def post(
        self,
        path: str,
        data: dict[str, Any] | None = None,
        *,
        csrf: str | None = None,
        origin: str | None = BASE,
        **kw: Any,
    ) -> Any:
        if not self.csrf and csrf is None:
            self.get("/")
        body = {"csrf": self.csrf if csrf is None else csrf, **(data or {})}
        headers = {"Origin": origin} if origin else {}
        return self.client.post(path, data=body, headers=headers, follow_redirects=False, **kw)


def sign_in(app: Any, user: str, password: str = PASSWORD) -> Browser:
    """A new browser, signed in through the sign-in form."""
    client = TestClient(app, base_url=BASE)
    r = client.post(
        "/login",
        data={"username": user, "password": password, "next": "/"},
        headers={"Origin": BASE},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    b = Browser(client, user)
    b.get("/")
    return b


@pytest.fixture(scope="package")
def portal_runtime(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runtime]:
    with small_runtime(tmp_path_factory.mktemp("portal")) as rt:
        yield rt


@pytest.fixture(scope="package")
def portal_app(portal_runtime: Runtime) -> Any:
    return create_app(portal_runtime)


@pytest.fixture(scope="package")
def people(portal_app: Any) -> dict[str, str]:
    """Tenancies physics (alice, carol; with credits) and chemistry (bob)."""
    admin = TestClient(portal_app, base_url=BASE)
    r = admin.post(
        "/api/v1/auth/login", json={"username": "admin", "password": "test-admin-password"}
    )
    assert r.status_code == 201, r.text
    h = {"Authorization": f"Bearer {r.json()['secret']}"}
    for t in ("physics", "chemistry"):
        assert admin.post("/api/v1/tenancies", json={"name": t}, headers=h).status_code == 201
    for user, t in (("alice", "physics"), ("bob", "chemistry"), ("carol", "physics")):
        r = admin.post("/api/v1/users", json={"name": user, "password": PASSWORD}, headers=h)
        assert r.status_code == 201, r.text
        r = admin.put(
            f"/api/v1/tenancies/{t}/members", json={"user": user, "role": "member"}, headers=h
        )
        assert r.status_code in (200, 201), r.text
    hours = {rc: 5000 for rc in ("host:cpu", "host:A100", "vcpu", "gpu:A100", "slice:1g.10gb")}
    r = admin.post(
        "/api/v1/credits/allocations",
        json={
            "tenancy": "physics",
            "name": "grant-2027",
            "hours": hours,
            "end": "2027-12-31T00:00:00Z",
        },
        headers=h,
    )
    assert r.status_code == 201, r.text
    return {"admin_token": h["Authorization"].split()[1]}


@pytest.fixture
def alice(portal_app: Any, people: dict[str, str]) -> Browser:
    return sign_in(portal_app, "alice")


@pytest.fixture
def bob(portal_app: Any, people: dict[str, str]) -> Browser:
    return sign_in(portal_app, "bob")


@pytest.fixture
def operator(portal_app: Any, people: dict[str, str]) -> Browser:
    return sign_in(portal_app, "admin", "test-admin-password")
