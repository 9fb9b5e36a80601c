"""Administrators disable and remove users: their tokens and sessions stop working at once."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.api.conftest import Api, login


def _user(admin: Api, name: str) -> None:
    r = admin.post("/users", json={"name": name, "password": f"{name}-password"})
    assert r.status_code == 201, r.text


def test_disabling_ends_every_session_at_once_and_enabling_needs_a_new_sign_in(
    client: TestClient, admin: Api
) -> None:
    _user(admin, "mallory")
    cli_token = login(client, "mallory", "mallory-password")
    second = login(client, "mallory", "mallory-password")  # say, a browser session
    mallory = Api(client, cli_token)
    assert mallory.get("/auth/whoami").status_code == 200
    r = admin.client.patch("/api/v1/users/mallory", json={"disabled": True}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["disabled"] is True, r.text
    for token in (cli_token, second):
        r = Api(client, token).get("/auth/whoami")
        assert r.status_code == 401, r.text
    r = client.post(
        "/api/v1/auth/login", json={"username": "mallory", "password": "mallory-password"}
    )
    assert r.status_code == 401
    r = admin.client.patch("/api/v1/users/mallory", json={"disabled": False}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["disabled"] is False
    # The old tokens stay dead; a new sign-in works.
    assert Api(client, cli_token).get("/auth/whoami").status_code == 401
    assert (
        Api(client, login(client, "mallory", "mallory-password")).get("/auth/whoami").status_code
        == 200
    )


def test_removing_a_user_ends_their_sessions_and_forgets_them(
    client: TestClient, admin: Api
) -> None:
    _user(admin, "trudy")
    r = admin.put("/tenancies/default/members", json={"user": "trudy", "role": "member"})
    assert r.status_code == 200, r.text
    token = login(client, "trudy", "trudy-password")
    assert admin.delete("/users/trudy").status_code == 204
    assert Api(client, token).get("/auth/whoami").status_code == 401
    assert "trudy" not in {u["name"] for u in admin.get("/users").json()["items"]}
    members = admin.get("/tenancies/default/members").json()["items"]
    assert members and "trudy" not in {m["user"] for m in members}
    assert admin.delete("/users/trudy").status_code == 404
    # The name is free again.
    _user(admin, "trudy")


def test_admins_cannot_lock_everyone_out_and_members_cannot_do_it_at_all(
    client: TestClient, admin: Api
) -> None:
    r = admin.client.patch("/api/v1/users/admin", json={"disabled": True}, headers=admin.headers)
    assert r.status_code == 409 and "yourself" in r.json()["detail"]
    assert admin.delete("/users/admin").status_code == 409
    _user(admin, "eve")
    eve = Api(client, login(client, "eve", "eve-password"))
    r = eve.client.patch("/api/v1/users/admin", json={"disabled": True}, headers=eve.headers)
    assert r.status_code == 403
    assert eve.delete("/users/admin").status_code == 403
    r = admin.client.patch("/api/v1/users/eve", json={"disabled": "yes"}, headers=admin.headers)
    assert r.status_code == 422


def test_password_guessing_is_throttled_on_both_sign_ins(client: TestClient, admin: Api) -> None:
    """The attack's retest: no limit on sign-in attempts. After 5 failures for an account
    from one address, the API answers 429 with Retry-After (the right password too), and so
    does the portal's sign-in form; other accounts are unaffected."""
    _user(admin, "victim")
    wrong = {"username": "victim", "password": "guess"}
    assert [client.post("/api/v1/auth/login", json=wrong).status_code for _ in range(5)] == [
        401
    ] * 5
    right = {"username": "victim", "password": "victim-password"}
    r = client.post("/api/v1/auth/login", json=right)
    assert r.status_code == 429, r.text
    assert r.json()["code"] == "too_many_attempts" and "try again in" in r.json()["detail"]
    assert 250 <= int(r.headers["retry-after"]) <= 300
    form = client.post(
        "/login",
        content="username=victim&password=victim-password&next=/",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert form.status_code == 429 and "try again in" in form.text and form.headers["retry-after"]
    assert "ecliptic_session" not in form.cookies
    _user(admin, "bystander")
    assert login(client, "bystander", "bystander-password")
