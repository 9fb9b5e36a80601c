"""Inputs an attacker or a tired user sends: each gets a 4xx problem document that says what
to change, never a 500, and nothing is accepted by a loose reading of its type."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from ecliptic.api.app import create_app
from ecliptic.runtime import Runtime
from tests.api.conftest import Api, login

HOST = {"kind": "host", "count": 1}


def _problem(r: Any, status: int = 422) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = r.json()
    assert body["detail"]
    return body


def _lease(**kw: Any) -> dict[str, Any]:
    return {"name": "l1", "duration": "1h", "reservations": [HOST], **kw}


def test_the_four_inputs_that_crashed_the_api_are_422(admin: Api) -> None:
    # A duration that overflows the calendar.
    body = _problem(admin.post("/leases", json=_lease(duration="99999999d")))
    assert "durations go up to 3660d" in body["detail"]
    # A GPU slice profile of more units than a GPU has, on create and on search.
    slices = [{"kind": "gpu_slice", "profile": "9g.999gb"}]
    for path, extra in (("/leases", {"name": "l2"}), ("/availability/earliest", {})):
        body = _problem(admin.post(path, json={"reservations": slices, "duration": "1h", **extra}))
        assert "N from 1 to 7" in body["detail"]
    # A filter nested 500 levels deep.
    deep = "(" * 500 + "vcpus > 1" + ")" * 500
    body = _problem(
        admin.post(
            "/availability/earliest",
            json={"reservations": [{**HOST, "where": deep}], "duration": "1h"},
        )
    )
    assert "nested more than 32 levels" in body["detail"]
    deep_not = "not " * 600 + "rdma"
    _problem(admin.post("/leases", json=_lease(reservations=[{**HOST, "where": deep_not}])))
    # A NUL byte in a command's arguments (refused before any server is looked up).
    body = _problem(admin.post("/servers/nope/exec", json={"argv": ["echo", "a\x00b"]}))
    assert "NUL" in body["detail"]
    # The API still answers on the same client afterwards.
    assert admin.get("/flavors").status_code == 200


def test_an_explicit_end_or_start_far_away_is_refused(admin: Api) -> None:
    body = _problem(
        admin.post("/leases", json={**_lease(), "duration": None, "end": "9999-12-31T00:00Z"})
    )
    assert "at most 3660 days" in body["detail"]
    body = _problem(admin.post("/leases", json={**_lease(), "start": "9999-12-30T00:00Z"}))
    assert "too far ahead" in body["detail"]


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/servers", {"name": "s", "flavor": "m1.small", "preemptible": "yes"}, "preemptible"),
        ("/services", {"name": "svc", "public": "yes"}, "public"),
        ("/users", {"name": "eve", "password": "password-1", "is_admin": "true"}, "is_admin"),
        ("/servers", {"name": "s", "flavor": "m1.small", "preemptible": 1}, "preemptible"),
    ],
)
def test_booleans_must_be_booleans(admin: Api, path: str, body: dict[str, Any], field: str) -> None:
    problem = _problem(admin.post(path, json=body))
    assert problem["errors"][0]["field"] == field
    assert "boolean" in problem["detail"]


def test_an_empty_nic_and_a_reservation_without_its_lease_are_refused(admin: Api) -> None:
    body = _problem(
        admin.post("/servers", json={"name": "s", "flavor": "m1.small", "networks": [{}]})
    )
    assert "a network or a port" in body["detail"]
    body = _problem(
        admin.post("/servers", json={"name": "s", "flavor": "m1.small", "reservation": "hosts"})
    )
    assert "give the lease too" in body["detail"]
    assert admin.get("/servers/s").status_code == 404


def test_durations_are_bounded_and_say_they_need_a_unit(admin: Api) -> None:
    body = _problem(admin.post("/leases", json=_lease(grace="99999999d")))
    assert "too long" in body["detail"]
    body = _problem(admin.post("/leases", json=_lease(duration="5")))
    assert "needs one, like 5h, 5m or 5d" in body["detail"]


def test_unknown_query_parameters_are_refused_by_name(admin: Api) -> None:
    body = _problem(admin.get("/servers", params={"limt": "5"}))
    assert "'limt'" in body["detail"] and "limit" in body["detail"]
    body = _problem(admin.get("/flavors", params={"x": "1"}))
    assert "'x'" in body["detail"]
    assert admin.get("/servers", params={"limit": "5"}).status_code == 200


def test_a_name_that_could_be_an_id_is_refused(admin: Api) -> None:
    id_like = "0123456789abcdef0123456789abcdef"
    for path, body in (
        ("/servers", {"name": id_like, "flavor": "m1.small"}),
        ("/networks", {"name": id_like}),
        ("/leases", _lease(name=id_like)),
        ("/services", {"name": id_like}),
    ):
        problem = _problem(admin.post(path, json=body))
        assert "looks like an object id" in problem["detail"], path
    # A name of 32 characters that is not hexadecimal is fine.
    r = admin.post("/networks", json={"name": "0123456789abcdef0123456789abcdeg"})
    assert r.status_code == 202, r.text
    assert admin.delete("/networks/0123456789abcdef0123456789abcdeg").status_code in (200, 202, 204)


@pytest.mark.parametrize(
    ("where", "said"),
    [
        ('gpu_modle == "A100"', "no host has a property 'gpu_modle' (did you mean 'gpu_model'?)"),
        ("gpu_model == A100", 'quote it: "A100"'),
        ('vcpus > "abc"', "'vcpus' is a number on every host"),
        ("rdam", "did you mean 'rdma'?"),
    ],
)
def test_filter_typos_are_named_instead_of_matching_nothing(
    admin: Api, where: str, said: str
) -> None:
    for path, extra in (("/leases", {"name": "typo"}), ("/availability/earliest", {})):
        body = _problem(
            admin.post(
                path, json={"reservations": [{**HOST, "where": where}], "duration": "1h", **extra}
            )
        )
        assert said in body["detail"], (path, body["detail"])
    # Correct filters still work.
    r = admin.post(
        "/availability/earliest",
        json={"reservations": [{**HOST, "where": 'gpu_model == "A100"'}], "duration": "1h"},
    )
    assert r.status_code == 200, r.text


def test_an_unexpected_error_is_a_problem_document_not_a_dropped_connection(
    runtime: Runtime,
) -> None:
    app = create_app(runtime)

    @app.get("/api/v1/test-boom")
    def boom() -> None:
        raise ZeroDivisionError("boom")

    with TestClient(app, raise_server_exceptions=False) as c:
        api = Api(c, login(c, "admin", "test-admin-password"))
        body = _problem(api.get("/test-boom"), 500)
        assert body["code"] == "internal_error"
        assert "request " in body["detail"] and "boom" not in body["detail"]
        assert api.get("/flavors").status_code == 200


def test_strangers_are_refused_before_their_input_is_judged(client: TestClient, admin: Api) -> None:
    """Authentication and authorisation come before validation: a stranger's malformed body
    gets 401/403, never a validation error that describes the endpoint."""
    bad = {"nonsense": True}
    for path in ("/blazar/check-create", "/blazar/check-update", "/blazar/on-end"):
        assert client.post(f"/api/v1{path}", json=bad).status_code == 401, path
    assert client.post("/api/v1/credits/allocations", json=bad).status_code == 401
    r = admin.post("/users", json={"name": "mallory", "password": "mallory-password"})
    assert r.status_code == 201, r.text
    mallory = Api(client, login(client, "mallory", "mallory-password"))
    for path in ("/blazar/check-create", "/credits/allocations"):
        r = mallory.post(path, json=bad)
        assert r.status_code == 403, (path, r.text)
        assert "administrator" in r.json()["detail"]


def test_a_user_without_a_tenancy_is_told_to_ask_an_admin(client: TestClient, admin: Api) -> None:
    r = admin.post("/users", json={"name": "newbie", "password": "newbie-password"})
    assert r.status_code == 201, r.text
    newbie = Api(client, login(client, "newbie", "newbie-password"))
    body = _problem(newbie.get("/servers"), 403)
    assert "ask an administrator" in body["detail"], body["detail"]
