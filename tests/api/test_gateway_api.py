"""The gateway's registrar and its access decisions, through the API."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from ecliptic.runtime import Runtime
from ecliptic.services import gateway
from ecliptic.store.models import ApiToken, GatewaySession, TunnelToken
from ecliptic.store.types import utcnow
from tests.api.conftest import Api, login


def new_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return line.decode() + " test@client"


def make_user(admin: Api, client: TestClient, name: str) -> Api:
    assert admin.post("/users", {"name": name, "password": f"{name}-password"}).status_code == 201
    assert admin.put("/tenancies/default/members", {"user": name, "role": "member"}).is_success
    return Api(client, login(client, name, f"{name}-password"), tenancy="default")


def create(admin: Api, **body: Any) -> dict[str, Any]:
    r = admin.post("/services", {"name": "notebook", **body})
    assert r.status_code == 201, r.text
    return dict(r.json())


def test_reserve_then_associate_once(admin: Api, client: TestClient) -> None:
    svc = create(admin, liveness_path="/health")
    assert svc["subdomain"][0].isalpha() and svc["subdomain"].isalnum()
    assert svc["host"] == f"{svc['subdomain']}.localhost"
    assert svc["access"] == ["admin"] and not svc["public"]
    token = svc["token"]["token"]
    assert token.startswith("ectt_")

    key = new_key()
    body = {"token": token, "public_key": key, "protocol": "http", "read_timeout_s": 60}
    r = client.post("/api/v1/tunnels/associate", json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["subdomain"] == svc["subdomain"]
    assert out["ssh"]["user"] == "tunnel" and out["ssh"]["host_key"].startswith("ssh-ed25519 ")
    assert out["ssh"]["port"] == 2222

    again = client.post("/api/v1/tunnels/associate", json={**body, "public_key": new_key()})
    assert again.status_code == 409 and again.json()["code"] == "token_used"

    shown = admin.get(f"/services/{svc['name']}").json()
    assert len(shown["keys"]) == 1 and shown["keys"][0]["revoked_at"] is None
    assert shown["read_timeout_s"] == 60
    # The token is never stored in clear.
    assert token not in str(admin.get("/services").json()["items"])


def test_bad_expired_and_forged_tokens_are_refused(
    admin: Api, client: TestClient, runtime: Runtime
) -> None:
    svc = create(admin)
    token = svc["token"]["token"]
    assoc = "/api/v1/tunnels/associate"
    r = client.post(assoc, json={"token": "nonsense", "public_key": new_key()})
    assert r.status_code == 401 and r.json()["code"] == "token_invalid"
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    r = client.post(assoc, json={"token": forged, "public_key": new_key()})
    assert r.status_code == 401 and "signature" in r.json()["detail"]
    r = client.post(assoc, json={"token": token, "public_key": "ssh-ed25519 notbase64!"})
    assert r.status_code == 422 and "base64" in r.json()["detail"]
    r = client.post(assoc, json={"token": token, "public_key": new_key(), "extra": 1})
    assert r.status_code == 422

    with runtime.db.write() as s:
        s.execute(update(TunnelToken).values(expires_at=utcnow() - timedelta(seconds=1)))
    r = client.post(assoc, json={"token": token, "public_key": new_key()})
    assert r.status_code == 410 and r.json()["code"] == "token_expired"


def test_a_key_serves_one_service_only(admin: Api, client: TestClient) -> None:
    a = create(admin)
    b = admin.post("/services", {"name": "other"}).json()
    key = new_key()
    assoc = "/api/v1/tunnels/associate"
    assert client.post(assoc, json={"token": a["token"]["token"], "public_key": key}).is_success
    r = client.post(assoc, json={"token": b["token"]["token"], "public_key": key})
    assert r.status_code == 409 and "already bound" in r.json()["detail"]


def test_first_use_wins_under_concurrency(admin: Api, client: TestClient) -> None:
    token = create(admin)["token"]["token"]
    results: list[int] = []

    def go() -> None:
        r = client.post("/api/v1/tunnels/associate", json={"token": token, "public_key": new_key()})
        results.append(r.status_code)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] + [409] * 7


def auth(client: TestClient, host: str, **headers: str) -> Any:
    return client.get("/gateway/auth", headers={"X-Ecliptic-Host": host, **headers})


def test_bearer_tokens_and_access_lists(admin: Api, client: TestClient) -> None:
    svc = create(admin)
    host = svc["host"]
    bob = make_user(admin, client, "bob")

    r = auth(client, host)
    assert r.status_code == 401 and "x-ecliptic-login" not in r.headers
    r = auth(client, host, **{"X-Ecliptic-Accept": "text/html,*/*", "X-Ecliptic-Uri": "/lab?x=1"})
    assert r.status_code == 401
    # A browser starts signing in on the service's own host (which remembers it).
    login_url = urlsplit(r.headers["x-ecliptic-login"])
    assert login_url.netloc == f"{svc['subdomain']}.localhost:8480"
    assert login_url.path == "/_ecliptic/start"
    assert parse_qs(login_url.query) == {"next": ["/lab?x=1"]}

    r = auth(client, host, Authorization=admin.headers["Authorization"], Cookie="a=1; b=2")
    assert r.status_code == 200
    assert r.headers["x-remote-user"] == "admin"
    assert r.headers["x-forward-authorization"] == ""  # our credential is not passed on
    assert r.headers["x-forward-cookie"] == "a=1; b=2"
    # A credential that is not ours goes through untouched.
    r = auth(client, host, Authorization="Basic dXNlcjpwdw==")
    assert r.status_code == 401

    assert auth(client, host, Authorization=bob.headers["Authorization"]).status_code == 403
    r = admin.client.patch(
        f"/api/v1/services/{svc['id']}", json={"access": ["admin", "bob"]}, headers=admin.headers
    )
    assert r.status_code == 200 and r.json()["access"] == ["admin", "bob"]
    assert auth(client, host, Authorization=bob.headers["Authorization"]).status_code == 200
    admin.client.patch(
        f"/api/v1/services/{svc['id']}", json={"access": ["admin"]}, headers=admin.headers
    )
    assert auth(client, host, Authorization=bob.headers["Authorization"]).status_code == 403

    # Host spellings that name the same service are the same service; others are not.
    bearer = {"Authorization": admin.headers["Authorization"]}
    assert auth(client, host.upper() + ".", **bearer).status_code == 200
    assert auth(client, "x" + host, **bearer).status_code == 403
    assert auth(client, host + ".evil.test", **bearer).status_code == 403


def sign_in_start(client: TestClient, host: str, next_uri: str = "/lab") -> str:
    """What a browser does on the service's host when it must sign in: /_ecliptic/start
    sets the state cookie there and sends it to the portal. Returns the portal URL."""
    r = client.get(
        f"/_ecliptic/start?next={next_uri}",
        headers={"X-Ecliptic-Host": host},
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text
    assert r.headers["set-cookie"].startswith("ecliptic_gw_state=")
    target = urlsplit(r.headers["location"])
    assert target.path == "/gateway/authorize"
    return f"{target.path}?{target.query}"


def test_browser_sign_in_hands_a_single_use_code_to_the_subdomain(
    admin: Api, client: TestClient
) -> None:
    svc = create(admin)
    host = svc["host"]
    authorize = sign_in_start(client, host)
    assert parse_qs(urlsplit(authorize).query)["host"] == [host]

    r = client.get(authorize, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    page = client.get(r.headers["location"])
    assert page.status_code == 200 and "<form" in page.text

    bad = client.post(
        "/login", content="username=admin&password=wrong&next=/x", follow_redirects=False
    )
    assert bad.status_code == 401 and "wrong user name or password" in bad.text
    ok = client.post(
        "/login",
        content="username=admin&password=test-admin-password&next=" + quote(authorize, safe=""),
        follow_redirects=False,
    )
    assert ok.status_code == 303 and ok.headers["location"] == authorize
    assert "ecliptic_session" in ok.cookies

    r = client.get(authorize, follow_redirects=False)
    assert r.status_code == 303
    target = urlsplit(r.headers["location"])
    assert target.netloc == f"{svc['subdomain']}.localhost:8480"
    assert target.path == "/_ecliptic/callback"
    code_url = f"{target.path}?{target.query}"

    # The code is bound to its host and works once.
    wrong = client.get(code_url, headers={"X-Ecliptic-Host": "other.localhost"})
    assert wrong.status_code == 403
    cb = client.get(code_url, headers={"X-Ecliptic-Host": host}, follow_redirects=False)
    assert cb.status_code == 303 and cb.headers["location"] == "/lab"
    set_cookie = cb.headers["set-cookie"]
    assert set_cookie.startswith("ecliptic_gw=") and "Domain" not in set_cookie
    assert "HttpOnly" in set_cookie
    again = client.get(code_url, headers={"X-Ecliptic-Host": host}, follow_redirects=False)
    assert again.status_code == 403

    cookie = set_cookie.split(";")[0]
    r = auth(client, host, Cookie=f"theirs=1; {cookie}")
    assert r.status_code == 200 and r.headers["x-remote-user"] == "admin"
    assert r.headers["x-forward-cookie"] == "theirs=1"
    # Hole 3: signed in by cookie, with an API token too (and the portal's cookie): neither
    # is passed on to the service; a credential of the service's own is.
    r = auth(
        client,
        host,
        Cookie=f"ecliptic_session=portal; theirs=1; {cookie}",
        Authorization=admin.headers["Authorization"],
    )
    assert r.status_code == 200 and r.headers["x-remote-user"] == "admin"
    assert r.headers["x-forward-authorization"] == ""
    assert r.headers["x-forward-cookie"] == "theirs=1"
    r = auth(client, host, Cookie=cookie, Authorization="Bearer the-services-own")
    assert r.headers["x-forward-authorization"] == "Bearer the-services-own"
    # The cookie is valid on its own host only.
    other = create(admin, name="second")
    assert auth(client, other["host"], Cookie=cookie).status_code == 401


def test_sign_in_refuses_users_without_access_and_open_redirects(
    admin: Api, client: TestClient
) -> None:
    svc = create(admin)
    make_user(admin, client, "carol")
    client.post("/login", content="username=carol&password=carol-password&next=/")
    r = client.get(sign_in_start(client, svc["host"]), follow_redirects=False)
    assert r.status_code == 403 and "may not reach" in r.text
    ok = client.post(
        "/login",
        content="username=carol&password=carol-password&next=//evil.test/",
        follow_redirects=False,
    )
    assert ok.headers["location"] == "/"


@pytest.mark.parametrize(
    "body",
    [
        {"name": "x", "protocol": "ftp"},
        {"name": "x", "liveness_path": "health"},
        {"name": "x", "access": ["nobody-here"]},
        {"name": "x", "unknown": True},
    ],
)
def test_service_input_is_validated(admin: Api, body: dict[str, Any]) -> None:
    r = admin.post("/services", body)
    assert r.status_code == 422, r.text


def test_user_ssh_keys(admin: Api) -> None:
    key = new_key()
    r = admin.post("/users/me/ssh-keys", {"name": "laptop", "public_key": key})
    assert r.status_code == 201 and r.json()["fingerprint"].startswith("SHA256:")
    assert admin.post("/users/me/ssh-keys", {"name": "again", "public_key": key}).status_code == 409
    assert [k["name"] for k in admin.get("/users/me/ssh-keys").json()["items"]] == ["laptop"]
    assert admin.delete("/users/me/ssh-keys/laptop").status_code == 204


def _rsa_key(bits: int) -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )


def test_weak_rsa_keys_are_refused_where_they_are_given(admin: Api) -> None:
    """The attack's retest: an RSA-1024 key was accepted at associate (using up the token
    and a key slot) but could never log in. It is refused at once, saying what to use."""
    svc = create(admin)
    weak = _rsa_key(1024)
    r = admin.client.post(
        "/api/v1/tunnels/associate", json={"token": svc["token"]["token"], "public_key": weak}
    )
    assert r.status_code == 422 and "1024 bits" in r.text and "ed25519" in r.text, r.text
    r = admin.post("/users/me/ssh-keys", {"name": "old", "public_key": weak})
    assert r.status_code == 422
    # The token was not used up: a good key binds with it.
    r = admin.client.post(
        "/api/v1/tunnels/associate",
        json={"token": svc["token"]["token"], "public_key": _rsa_key(2048)},
    )
    assert r.status_code == 200, r.text


def test_portal_sign_out_lets_another_user_sign_in(admin: Api, client: TestClient) -> None:
    svc = create(admin)
    make_user(admin, client, "dave")
    client.post("/login", content="username=dave&password=dave-password&next=/")
    refused = client.get(sign_in_start(client, svc["host"]), follow_redirects=False)
    assert refused.status_code == 403 and "Sign in as someone else" in refused.text
    csrf = refused.text.split('name="csrf" value="')[1].split('"')[0]
    out = client.post(
        "/logout",
        content=f"csrf={csrf}&next=/gateway/authorize",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert out.status_code == 303 and out.headers["location"].startswith("/login?next=")
    assert "ecliptic_session" not in client.cookies
    again = client.get(sign_in_start(client, svc["host"]), follow_redirects=False)
    assert again.headers["location"].startswith("/login")


def _signed_in_service(
    admin: Api, client: TestClient, name: str = "notebook"
) -> tuple[dict[str, Any], str]:
    """A service, and the gateway cookie of a browser signed in to it (and to the portal)."""
    svc = create(admin, name=name)
    authorize = sign_in_start(client, svc["host"])
    client.post(
        "/login",
        content="username=admin&password=test-admin-password&next=/",
        follow_redirects=False,
    )
    r = client.get(authorize, follow_redirects=False)
    target = urlsplit(r.headers["location"])
    cb = client.get(
        f"{target.path}?{target.query}",
        headers={"X-Ecliptic-Host": svc["host"]},
        follow_redirects=False,
    )
    assert cb.status_code == 303, cb.text
    return svc, cb.headers["set-cookie"].split(";")[0]


def test_signing_out_ends_service_sessions_at_once(
    runtime: Runtime, admin: Api, client: TestClient
) -> None:
    """Hole 6: the service cookie kept working for 12 h after signing out. Also what the
    gateway's relay asks every second about its long-lived connections (WebSockets, event
    streams): the credential a connection came in with stops holding at sign-out."""
    svc, cookie = _signed_in_service(admin, client)
    host = svc["host"]
    allowed = auth(client, host, Cookie=cookie)
    assert allowed.status_code == 200
    credential = allowed.headers["x-ecliptic-credential"]
    # It names the session; it is not the cookie (which carries a MAC only the gateway makes).
    assert credential.startswith("session:") and cookie.split("=", 1)[1] not in credential
    held = (svc["id"], "admin", credential)
    assert gateway.still_allowed(runtime.db, {held}) == {held}
    # Signing out of the service: a GET only asks; the POST needs the page's token.
    page = client.get("/_ecliptic/logout", headers={"X-Ecliptic-Host": host, "Cookie": cookie})
    assert page.status_code == 200 and "<form" in page.text
    forged = client.post(
        "/_ecliptic/logout",
        content="csrf=guess",
        headers={"X-Ecliptic-Host": host, "Cookie": cookie,
                 "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert forged.status_code == 403
    assert auth(client, host, Cookie=cookie).status_code == 200
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    out = client.post(
        "/_ecliptic/logout",
        content=f"csrf={csrf}",
        headers={"X-Ecliptic-Host": host, "Cookie": cookie,
                 "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert out.status_code == 200
    assert auth(client, host, Cookie=cookie).status_code == 401  # the old cookie is dead
    assert gateway.still_allowed(runtime.db, {held}) == set()

    # Signing out of the portal ends every service session it opened.
    svc2, cookie2 = _signed_in_service(admin, client, "second")
    allowed = auth(client, svc2["host"], Cookie=cookie2)
    assert allowed.status_code == 200
    held = (svc2["id"], "admin", allowed.headers["x-ecliptic-credential"])
    assert gateway.still_allowed(runtime.db, {held}) == {held}
    page = client.get("/logout")
    csrf = page.text.split('name="csrf" value="')[1].split('"')[0]
    out = client.post(
        "/logout",
        content=f"csrf={csrf}&next=/",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert out.status_code == 303
    assert auth(client, svc2["host"], Cookie=cookie2).status_code == 401
    assert gateway.still_allowed(runtime.db, {held}) == set()


def test_sign_in_csrf_is_refused(admin: Api, client: TestClient) -> None:
    """Hole 9: a code not tied to the browser that started sign-in, a sign-in form posted
    from another site, and a sign-out by GET."""
    svc = create(admin)
    host = svc["host"]
    # The attacker signs in as themself and keeps the code instead of following it.
    authorize = sign_in_start(client, host)
    client.post("/login", content="username=admin&password=test-admin-password&next=/")
    target = urlsplit(client.get(authorize, follow_redirects=False).headers["location"])
    code_url = f"{target.path}?{target.query}"
    # The victim's browser never started a sign-in there: no state cookie, no session.
    client.cookies.clear()
    r = client.get(code_url, headers={"X-Ecliptic-Host": host}, follow_redirects=False)
    assert r.status_code == 403 and "started in another browser" in r.text
    assert "ecliptic_gw=" not in r.headers.get("set-cookie", "")
    # Without the state, the portal hands out no code at all.
    client.post("/login", content="username=admin&password=test-admin-password&next=/")
    r = client.get(f"/gateway/authorize?host={host}&next=/", follow_redirects=False)
    assert r.status_code == 422 and "start at the service" in r.text
    # A sign-in form posted from another site sets nothing.
    client.cookies.clear()
    r = client.post(
        "/login",
        content="username=admin&password=test-admin-password&next=/",
        headers={"Origin": "http://evil.test", "Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert r.status_code == 403 and "ecliptic_session" not in r.headers.get("set-cookie", "")
    r = client.post(
        "/login",
        content="username=admin&password=test-admin-password&next=/",
        headers={"Sec-Fetch-Site": "cross-site"},
        follow_redirects=False,
    )
    assert r.status_code == 403
    # Sign-out by GET only asks.
    client.post("/login", content="username=admin&password=test-admin-password&next=/")
    assert client.get("/logout").status_code == 200
    assert "ecliptic_session" in client.cookies


def test_client_settings_change_only_what_the_client_sent(admin: Api, client: TestClient) -> None:
    svc = create(admin, liveness_path="/health", read_timeout_s=120)
    body = {"token": svc["token"]["token"], "public_key": new_key(), "protocol": "http"}
    assert client.post("/api/v1/tunnels/associate", json=body).status_code == 200
    shown = admin.get(f"/services/{svc['name']}").json()
    assert shown["liveness_path"] == "/health" and shown["read_timeout_s"] == 120


def test_what_the_first_client_sets_is_an_event_the_owner_sees(
    admin: Api, client: TestClient
) -> None:
    """The attack's retest: the first client of a service turned it into a TCP service with
    a day-long timeout, and the service's events said only that a key was bound."""
    svc = create(admin, name="fresh")
    body = {
        "token": svc["token"]["token"],
        "public_key": new_key(),
        "protocol": "tcp",
        "read_timeout_s": 86400,
    }
    assert client.post("/api/v1/tunnels/associate", json=body).status_code == 200
    events = [e["reason"] for e in admin.get("/services/fresh/events").json()["items"]]
    assert any(
        "protocol 'tcp'" in e and "read_timeout_s 86400" in e and "first client" in e
        for e in events
    ), events
    # A second client cannot change it, and is told why without a confusing "None".
    token = admin.post("/services/fresh/tokens").json()["token"]
    again = {"token": token, "public_key": new_key(), "liveness_path": "/x"}
    r = client.post("/api/v1/tunnels/associate", json=again)
    assert r.status_code == 409 and "liveness_path none" in r.text, r.text


def test_only_the_owner_or_a_tenancy_admin_may_change_a_service(
    admin: Api, client: TestClient
) -> None:
    """Hole 2: a plain member of the tenancy, not on the access list, minted a token for
    another member's service, bound her key, took its traffic, added herself to the access
    list and revoked the owner's key. Now each step is refused, and the owner sees every
    change in the service's events."""
    owner = make_user(admin, client, "olga")
    mallory = make_user(admin, client, "mallory")
    r = owner.post("/services", {"name": "lab"})
    assert r.status_code == 201, r.text
    svc = r.json()
    body = {"token": svc["token"]["token"], "public_key": new_key(), "protocol": "http"}
    assert client.post("/api/v1/tunnels/associate", json=body).status_code == 200
    key_id = owner.get("/services/lab").json()["keys"][0]["id"]

    for method, path, payload in (
        ("post", "/services/lab/tokens", {}),
        ("patch", "/services/lab", {"access": ["olga", "mallory"]}),
        ("patch", "/services/lab", {"public": True}),
        ("delete", f"/services/lab/keys/{key_id}", None),
        ("delete", "/services/lab", None),
    ):
        r = client.request(
            method.upper(),
            f"/api/v1{path}",
            json=payload,
            headers=mallory.headers,
        )
        assert r.status_code == 403, (method, path, r.text)
        assert "only the owner of service 'lab' (olga) or an admin" in r.json()["detail"]
    assert owner.get("/services/lab").json()["access"] == ["olga"]

    # A token binds a key and nothing else: a second client cannot flip the protocol.
    token = owner.post("/services/lab/tokens", {}).json()["token"]
    flip = {"token": token, "public_key": new_key(), "protocol": "tcp"}
    r = client.post("/api/v1/tunnels/associate", json=flip)
    assert r.status_code == 409 and "a token only binds a key" in r.json()["detail"]
    assert owner.get("/services/lab").json()["protocol"] == "http"

    # The tenancy's admin may; the owner sees what happened.
    r = client.request(
        "PATCH",
        "/api/v1/services/lab",
        json={"access": ["olga", "mallory"]},
        headers=admin.headers,
    )
    assert r.status_code == 200, r.text
    events = [e["reason"] for e in owner.get("/services/lab/events").json()["items"]]
    assert events[0] == "created by olga; first token issued"
    assert any(e.startswith("key SHA256:") and e.endswith("bound by a token") for e in events)
    assert "token issued by olga" in events
    assert events[-1] == "access +mallory by admin"


def test_services_per_tenancy_and_keys_per_service_are_bounded(
    runtime: Runtime, admin: Api, client: TestClient
) -> None:
    """Hole 8, in part: every service is a route in every replica's front and every key a
    line in its endpoint; a tenancy cannot make them without end."""
    runtime.settings = replace(runtime.settings, gateway_max_services=2, gateway_max_keys=2)
    first = create(admin, name="a")
    create(admin, name="b")
    r = admin.post("/services", {"name": "c"})
    assert r.status_code == 409 and "has 2 services, its limit" in r.json()["detail"]
    assoc = "/api/v1/tunnels/associate"
    tokens = [first["token"]["token"]]
    tokens += [admin.post("/services/a/tokens", {}).json()["token"] for _ in range(2)]
    for token in tokens[:2]:
        assert client.post(assoc, json={"token": token, "public_key": new_key()}).is_success
    r = client.post(assoc, json={"token": tokens[2], "public_key": new_key()})
    assert r.status_code == 409 and "has 2 keys bound, its limit" in r.json()["detail"]
    key_id = admin.get("/services/a").json()["keys"][0]["id"]
    assert admin.delete(f"/services/a/keys/{key_id}").status_code == 204
    again = admin.post("/services/a/tokens", {}).json()["token"]
    assert client.post(assoc, json={"token": again, "public_key": new_key()}).is_success


def test_over_https_the_gateway_cookies_are_host_prefixed(admin: Api, client: TestClient) -> None:
    """Issue 12: with TLS, the gateway's cookies are ``__Host-`` cookies (Secure, Path=/,
    no Domain: a sibling subdomain cannot plant or widen them), and over HTTPS only those
    count."""
    svc = create(admin)
    host = svc["host"]
    https = {"X-Ecliptic-Host": host, "X-Forwarded-Proto": "https"}
    r = client.get("/_ecliptic/start?next=/lab", headers=https, follow_redirects=False)
    state = r.headers["set-cookie"]
    assert state.startswith("__Host-ecliptic_gw_state=") and "Secure" in state
    assert "Path=/" in state and "Domain" not in state
    target = urlsplit(r.headers["location"])
    client.post(
        "/login", content="username=admin&password=test-admin-password&next=/x",
        follow_redirects=False,
    )  # fmt: skip
    r = client.get(f"{target.path}?{target.query}", follow_redirects=False)
    callback = urlsplit(r.headers["location"])
    # (The test client speaks plain HTTP, so it would not send a Secure cookie back.)
    cb = client.get(
        f"{callback.path}?{callback.query}",
        headers={**https, "Cookie": state.split(";")[0]},
        follow_redirects=False,
    )
    assert cb.status_code == 303, cb.text
    cookie = next(c for c in cb.headers.get_list("set-cookie") if "ecliptic_gw=" in c)
    assert cookie.startswith("__Host-ecliptic_gw=") and "Secure" in cookie
    assert "Path=/" in cookie and "Domain" not in cookie and "HttpOnly" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    over_https = {"X-Ecliptic-Scheme": "https"}
    r = auth(client, host, Cookie=f"__Host-ecliptic_gw={value}; theirs=1", **over_https)
    assert r.status_code == 200 and r.headers["x-forward-cookie"] == "theirs=1"
    # The same value without the prefix is not a session over HTTPS, and is not passed on.
    r = auth(client, host, Cookie=f"ecliptic_gw={value}; theirs=1", **over_https)
    assert r.status_code == 401


def test_a_service_session_ends_with_the_portal_sign_in_it_came_from(
    runtime: Runtime, admin: Api, client: TestClient
) -> None:
    """Hole 6, the retest: a service session outlived the expiry of the portal sign-in that
    opened it (up to the service session's 12 h)."""
    svc, cookie = _signed_in_service(admin, client)
    with runtime.db.read() as s:
        session_row = s.scalars(select(GatewaySession)).one()
        portal = s.get(ApiToken, session_row.portal_token_id)
        assert portal is not None and portal.expires_at is not None
        assert session_row.expires_at <= portal.expires_at
    assert auth(client, svc["host"], Cookie=cookie).status_code == 200


def test_access_lists_name_members_of_the_tenancy_only(admin: Api, client: TestClient) -> None:
    """The attack's retest: an access list could name a user of another tenancy, and the
    error told which user names exist on the whole instance."""
    svc = create(admin)
    make_user(admin, client, "bob")
    assert admin.post("/tenancies", {"name": "other"}).is_success
    assert admin.post("/users", {"name": "oscar", "password": "oscar-password"}).is_success
    assert admin.put("/tenancies/other/members", {"user": "oscar", "role": "member"}).is_success
    outsider = admin.patch(f"/services/{svc['id']}", {"access": ["admin", "oscar"]})
    nobody = admin.patch(f"/services/{svc['id']}", {"access": ["admin", "nosuchuser"]})
    assert outsider.status_code == nobody.status_code == 422
    assert "oscar" in outsider.text and "nosuchuser" in nobody.text
    assert outsider.text.replace("oscar", "X") == nobody.text.replace("nosuchuser", "X")
    assert admin.patch(f"/services/{svc['id']}", {"access": ["admin", "bob"]}).is_success
    assert admin.post("/services", {"name": "x2", "access": ["oscar"]}).status_code == 422
