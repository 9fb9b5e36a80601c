"""What an attack on the portal found, each tried again as a browser (or an attacker's page)
would: every test asserts the safe behaviour, so it fails while the hole is open. Besides
the holes, what held is kept as regression tests (forged and foreign form tokens, open
redirects, revoked cookies, escaping, operator pages by other methods).

The platform tests use a FAILED platform written to the store directly: the reconciler leaves
a FAILED platform alone (until a retry, a patch or a delete), so nothing is built."""

from __future__ import annotations

import html
import re
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, select

from ecliptic import credentials
from ecliptic.phases import PlatformPhase
from ecliptic.runtime import Runtime
from ecliptic.store.models import Event, Platform, PlatformAccess, Tenancy, User
from ecliptic.store.transitions import note
from ecliptic.web.pages import platforms as platform_pages
from tests.api.conftest import Api
from tests.web.conftest import BASE, PASSWORD, Browser, sign_in
from tests.web.conftest import CSRF as CSRF_FIELD

SECRET = "DB_ROOT_PASSWORD=hunter2-7f3a9c"
"""What a failed setup step printed (a script that echoes its environment)."""
COOKIE = credentials.PORTAL_COOKIE
NOWHERE = "/t/physics/leases/no-such-lease/end"
"""A form of alice's tenancy that changes nothing: with a good token the answer is 404."""


@pytest.fixture(scope="module")
def api(portal_app: Any, people: dict[str, str]) -> Api:
    """The administrator, through the REST API, acting in physics."""
    return Api(TestClient(portal_app, base_url=BASE), people["admin_token"], "physics")


def member(api: Api, name: str, tenancy: str = "physics") -> str:
    """A user (made now unless there) who is a plain member of ``tenancy``."""
    r = api.post("/users", json={"name": name, "password": PASSWORD})
    assert r.status_code in (201, 409), r.text
    r = api.put(f"/tenancies/{tenancy}/members", json={"user": name, "role": "member"})
    assert r.status_code in (200, 201), r.text
    return name


def unique(prefix: str) -> str:
    return f"{prefix}-{time.monotonic_ns() % 10**7}"


@pytest.fixture(scope="module")
def failed_platform(portal_runtime: Runtime, people: dict[str, str]) -> Iterator[str]:
    """A workstation of physics made by alice, only alice on its access list, FAILED at a
    step whose output holds a secret."""
    rt = portal_runtime
    entry = rt.catalogue.get("workstation")
    assert entry is not None
    name = unique("leaky")
    with rt.db.write() as session:
        tenancy = session.scalar(select(Tenancy).where(Tenancy.name == "physics"))
        alice = session.scalar(select(User).where(User.name == "alice"))
        assert tenancy is not None and alice is not None
        row = Platform(
            tenancy_id=tenancy.id,
            name=name,
            type_name=entry.type.name,
            type_version=entry.type.version,
            lease_id=None,
            created_by=alice.id,
            phase=PlatformPhase.FAILED,
            phase_reason=f"step 'sshd' failed on {name}-ws1 (exit 1)",
            spec={
                "type": entry.type.model_dump(mode="json"),
                "source": entry.source,
                "parameters": {"lease": None, "size": "m1.small", "desktop": False},
                "preemptible": False,
            },
            status={
                "failed": {
                    "step": "sshd",
                    "server": f"{name}-ws1",
                    "exit_code": 1,
                    "output": f"+ env\nHOME=/root\n{SECRET}\n",
                }
            },
        )
        row.access = [PlatformAccess(user_id=alice.id)]
        session.add(row)
        session.flush()
        pid = row.id
    yield name
    with rt.db.write() as session:
        session.execute(
            delete(Event).where(Event.object_kind == "platform", Event.object_id == pid)
        )
        session.execute(delete(PlatformAccess).where(PlatformAccess.platform_id == pid))
        session.execute(delete(Platform).where(Platform.id == pid))


def _access(rt: Runtime, platform: str) -> set[str]:
    with rt.db.read() as session:
        row = session.scalar(select(Platform).where(Platform.name == platform))
        assert row is not None
        ids = [a.user_id for a in row.access]
        return set(session.scalars(select(User.name).where(User.id.in_(ids))))


# ------------------------------------------------------------------------------ holes


def test_failed_step_output_is_shown_only_to_the_access_list(
    portal_app: Any, api: Api, failed_platform: str
) -> None:
    """A member off the access list may not read the console log of the platform's servers
    (nor run commands in them); the output of a step that ran inside them is the same kind
    of thing and must not be shown to them either."""
    alice = sign_in(portal_app, "alice")
    mallory = sign_in(portal_app, member(api, "mallory"))
    path = f"/t/physics/platforms/{failed_platform}"
    r = alice.get(path)
    assert r.status_code == 200 and SECRET in r.text  # on the list: sees what failed
    r = mallory.get(path)
    assert r.status_code == 200, r.text
    assert SECRET not in r.text, "a member off the access list reads the failed step's output"
    r = mallory.get(f"{path}/events.json")
    assert r.status_code == 200 and SECRET not in r.text


@pytest.mark.parametrize("how", ["signed out", "disabled", "removed from the tenancy"])
def test_an_open_event_stream_stops_when_its_session_ends(
    portal_app: Any,
    portal_runtime: Runtime,
    api: Api,
    failed_platform: str,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    """The timeline's server-sent events keep the caller of the moment they started: signed
    out, disabled or removed from the tenancy, the browser goes on getting the platform's
    events for up to STREAM_S (5 minutes), and the page's EventSource simply reconnects."""
    monkeypatch.setattr(platform_pages, "STREAM_S", 2.0)
    monkeypatch.setattr(platform_pages, "TICK_S", 0.1)
    user = member(api, unique("watcher"))
    b = sign_in(portal_app, user)
    b.get(f"/t/physics/platforms/{failed_platform}")
    watcher = TestClient(portal_app, base_url=BASE)
    cookie = {"Cookie": f"{COOKIE}={b.client.cookies[COOKIE]}"}
    got: dict[str, Any] = {}

    def watch() -> None:
        got["r"] = watcher.get(
            f"/t/physics/platforms/{failed_platform}/events/stream", headers=cookie
        )

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    time.sleep(0.4)
    if how == "signed out":
        assert b.post("/logout", {"next": "/login"}).status_code == 303
    elif how == "disabled":
        r = api.patch(f"/users/{user}", {"disabled": True})
        assert r.status_code == 200, r.text
    else:
        r = api.delete(f"/tenancies/physics/members/{user}")
        assert r.status_code in (200, 204), r.text
    assert b.get("/t/physics/", follow_redirects=False).status_code in (303, 404)
    late = f"LATE-EVENT-{unique('x')}"
    with portal_runtime.db.write() as session:
        row = session.scalar(select(Platform).where(Platform.name == failed_platform))
        assert row is not None
        keep = row.phase_reason
        note(session, row, late)
        row.phase_reason = keep
    t.join(15)
    assert not t.is_alive()
    assert "retry:" in got["r"].text  # the stream did start
    assert late not in got["r"].text, f"the stream went on after the session was {how}"


@pytest.mark.parametrize("path", ["/login", "/login?next=/t/physics/", "/logout", "/login/oidc"])
def test_sign_in_sign_out_and_message_pages_cannot_be_framed(alice: Browser, path: str) -> None:
    """Every portal page says DENY / frame-ancestors 'none'; the sign-in page, the sign-out
    confirmation (one click signs out) and the message pages do not: another site can frame
    them (clickjacking the sign-out button, a framed sign-in form)."""
    r = alice.get(path, follow_redirects=False)
    assert r.headers.get("content-type", "").startswith("text/html"), (r.status_code, r.text)
    csp = r.headers.get("content-security-policy", "")
    assert r.headers.get("x-frame-options", "").upper() == "DENY" or (
        "frame-ancestors 'none'" in csp
    ), (path, r.status_code, dict(r.headers))


def test_a_form_token_that_is_not_ascii_is_refused_not_a_server_error(alice: Browser) -> None:
    """hmac.compare_digest raises TypeError on a non-ASCII str: a crafted token (in the form
    or the htmx header) becomes a 500 and a logged traceback instead of a 403."""
    r = alice.post(NOWHERE, csrf="\u00e9t\u00e9")
    assert r.status_code == 403, (r.status_code, r.text[:300])
    r = alice.client.post(
        NOWHERE,
        content=b"",
        headers={"Origin": BASE, "X-CSRF-Token": b"\xc3\xa9"},
        follow_redirects=False,
    )
    assert r.status_code == 403, (r.status_code, r.text[:300])
    r = alice.client.post(
        "/logout", data={"csrf": "\u00e9"}, headers={"Origin": BASE}, follow_redirects=False
    )
    assert r.status_code == 403, (r.status_code, r.text[:300])


def test_a_form_with_too_many_fields_is_refused_not_a_server_error(
    alice: Browser, portal_app: Any
) -> None:
    """parse_qs(max_num_fields=...) raises ValueError past the limit: a 500 instead of a
    refusal, on the portal's forms, the sign-in form and the sign-out form."""
    r = alice.post(NOWHERE, {f"f{i}": "x" for i in range(600)})
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    anon = TestClient(portal_app, base_url=BASE)
    extra = {f"f{i}": "x" for i in range(12)}
    r = anon.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "next": "/", **extra},
        headers={"Origin": BASE},
        follow_redirects=False,
    )
    assert r.status_code != 500 and r.status_code < 500, (r.status_code, r.text[:300])
    r = alice.client.post(
        "/logout",
        data={"csrf": alice.csrf, **extra},
        headers={"Origin": BASE},
        follow_redirects=False,
    )
    assert r.status_code < 500, (r.status_code, r.text[:300])


def test_the_sign_in_form_is_size_limited(portal_app: Any) -> None:
    """POST /login (and /logout) read the whole body, of any size, before looking at it, with
    nobody signed in: a few large requests fill the server's memory. The portal's own forms
    stop at 256 KiB; the sign-in form (three short fields) should stop far sooner."""
    anon = TestClient(portal_app, base_url=BASE)
    body = b"username=alice&next=%2F&password=" + b"x" * (1024 * 1024)
    r = anon.post(
        "/login",
        content=body,
        headers={"Origin": BASE, "Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert r.status_code in (400, 413), (r.status_code, r.text[:200])


# ------------------------------------------------------------------------------ what held


def test_a_member_off_the_access_list_cannot_change_share_retry_or_delete(
    portal_app: Any, portal_runtime: Runtime, api: Api, failed_platform: str
) -> None:
    mallory = sign_in(portal_app, member(api, "mallory"))
    alice = sign_in(portal_app, "alice")
    base = f"/t/physics/platforms/{failed_platform}"
    mallory.get(base)
    for action, data in (
        ("patch", {"p.size": "m1.medium"}),
        ("access", {"add": "mallory"}),
        ("access", {"users": ["mallory"], "users.shown": "1"}),
        ("retry", {}),
        ("delete", {"confirm": failed_platform}),
    ):
        r = mallory.post(f"{base}/{action}", data)
        assert r.status_code == 403, (action, r.status_code, r.text[:300])
    # The owner cannot put a user of another tenancy on it, nor an unknown one.
    alice.get(base)
    for who in ("bob", "nobody-at-all"):
        r = alice.post(f"{base}/access", {"add": who})
        assert r.status_code in (404, 422), (who, r.status_code)
        assert "not a member of this tenancy" in r.text
    assert _access(portal_runtime, failed_platform) == {"alice"}
    with portal_runtime.db.read() as session:
        row = session.scalar(select(Platform).where(Platform.name == failed_platform))
        assert row is not None and row.phase == PlatformPhase.FAILED


def test_form_tokens_are_per_session_and_only_from_this_site(
    portal_app: Any, alice: Browser, bob: Browser
) -> None:
    alice.get("/t/physics/")
    bob.get("/")
    assert alice.csrf and bob.csrf and alice.csrf != bob.csrf
    # A good token passes (the lease is unknown: 404).
    assert alice.post(NOWHERE).status_code == 404
    other = alice.csrf[:-1] + ("0" if alice.csrf[-1] != "0" else "1")
    refused: list[tuple[str, dict[str, str]]] = [
        (bob.csrf, {"Origin": BASE}),  # another user's token
        ("", {"Origin": BASE}),
        (other, {"Origin": BASE}),
        ("", {"Origin": BASE, "X-CSRF-Token": bob.csrf}),  # htmx header of another session
        (alice.csrf, {"Origin": "null", "Sec-Fetch-Site": "cross-site"}),  # sandboxed frame
        (alice.csrf, {"Sec-Fetch-Site": "cross-site"}),  # no Origin
        (alice.csrf, {"Origin": "http://portal.test.evil.example"}),
        (alice.csrf, {"Origin": "https://portal.test"}),  # another scheme: another origin
    ]
    for token, headers in refused:
        r = alice.client.post(
            NOWHERE, data={"csrf": token}, headers=headers, follow_redirects=False
        )
        assert r.status_code == 403, (token, headers, r.status_code)
    # The token in the query string, or a JSON body, is not a form of this site either.
    r = alice.client.post(
        f"{NOWHERE}?csrf={alice.csrf}", headers={"Origin": BASE}, follow_redirects=False
    )
    assert r.status_code == 403
    r = alice.client.post(
        NOWHERE, json={"csrf": alice.csrf}, headers={"Origin": BASE}, follow_redirects=False
    )
    assert r.status_code == 403
    # A token of a signed-out session of the same user is dead with it.
    old = sign_in(portal_app, "alice")
    old.get("/t/physics/")
    token = old.csrf
    assert old.post("/logout", {"next": "/login"}).status_code == 303
    assert alice.post(NOWHERE, csrf=token).status_code == 403


def test_signing_out_or_being_disabled_ends_the_cookie(portal_app: Any, api: Api) -> None:
    b = sign_in(portal_app, "alice")
    cookie = b.client.cookies[COOKIE]
    b.get("/t/physics/")
    r = b.post("/logout", {"next": "/login"})
    assert r.status_code == 303
    again = TestClient(portal_app, base_url=BASE)
    r = again.get("/t/physics/", headers={"Cookie": f"{COOKIE}={cookie}"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")
    # Sign-out needs the page's token: another site cannot sign anyone out.
    c = sign_in(portal_app, "alice")
    r = c.client.post("/logout", data={"next": "/login"}, headers={"Origin": BASE})
    assert r.status_code == 403
    r = c.client.post("/logout", data={"csrf": c.csrf}, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    assert c.get("/t/physics/", follow_redirects=False).status_code == 200
    # A disabled user's open session stops at once.
    user = member(api, unique("leaver"))
    d = sign_in(portal_app, user)
    assert d.get("/t/physics/", follow_redirects=False).status_code == 200
    assert api.patch(f"/users/{user}", {"disabled": True}).status_code == 200
    r = d.get("/t/physics/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_the_session_cookie_is_http_only_and_same_site(portal_app: Any) -> None:
    anon = TestClient(portal_app, base_url=BASE)
    r = anon.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "next": "/"},
        headers={"Origin": BASE},
        follow_redirects=False,
    )
    assert r.status_code == 303
    cookie = r.headers["set-cookie"].lower()
    assert cookie.startswith(f"{COOKIE}=") and "httponly" in cookie and "samesite=lax" in cookie
    assert "path=/" in cookie and "domain=" not in cookie


def test_a_forwarded_scheme_from_anyone_changes_no_cookie(portal_app: Any) -> None:
    """Sign-in, sign-out and the pages agree on the session cookie's name: they take the
    scheme uvicorn reports (it believes X-Forwarded-Proto only from trusted proxies, on
    loopback by default). A header from anyone else neither loops sign-in nor makes the
    pages read a cookie the sign-in did not set."""
    front = {"Origin": BASE, "X-Forwarded-Proto": "https"}
    client = TestClient(portal_app, base_url=BASE)
    r = client.post(
        "/login",
        data={"username": "alice", "password": PASSWORD, "next": "/t/physics/"},
        headers=front,
        follow_redirects=False,
    )
    assert r.status_code == 303, r.text[:300]
    name, _, rest = r.headers["set-cookie"].partition("=")
    assert name == "ecliptic_session"  # plain HTTP as the connection says: no __Host-
    value = rest.split(";", 1)[0]
    r = client.get(
        "/t/physics/",
        headers={"X-Forwarded-Proto": "https", "Cookie": f"{name}={value}"},
        follow_redirects=False,
    )
    assert r.status_code == 200, (name, r.status_code, r.headers.get("location"))


EVIL = [
    "//evil.example/",
    "/\\evil.example",
    "\\\\evil.example",
    "https://evil.example/",
    "http:evil.example",
    "/\t/evil.example",
    "/\r\n/evil.example",
    " //evil.example",
    "javascript:alert(1)",
]


def _same_site(location: str) -> bool:
    return urlsplit(urljoin(BASE + "/t/x/", location)).netloc == "portal.test"


def _local_path(value: str) -> bool:
    """What safe_next lets through: a path on this host (a tab stays percent-encoded in a
    Location, so it is no way out)."""
    return value.startswith("/") and not value.startswith("//") and "\\" not in value


NEXT_FIELD = re.compile(r'name="next" value="([^"]*)"')
HREF = re.compile(r'href="([^"]*)"')


def test_no_open_redirect_after_sign_in_or_sign_out(portal_app: Any) -> None:
    for target in EVIL:
        anon = TestClient(portal_app, base_url=BASE)
        r = anon.get("/login", params={"next": target})
        assert r.status_code == 200, target
        hidden = [html.unescape(v) for v in NEXT_FIELD.findall(r.text)]
        assert hidden and all(_local_path(v) for v in hidden), (target, hidden)
        r = anon.get("/logout", params={"next": target}, follow_redirects=False)
        assert _same_site(r.headers["location"]), (target, r.headers["location"])
        r = anon.get("/login/oidc", params={"next": target}, follow_redirects=False)
        assert _same_site(r.headers.get("location", "/")), target
        assert all(_same_site(html.unescape(h)) for h in HREF.findall(r.text)), target
        r = anon.post(
            "/login",
            data={"username": "alice", "password": PASSWORD, "next": target},
            headers={"Origin": BASE},
            follow_redirects=False,
        )
        assert r.status_code == 303, (target, r.text[:200])
        assert _same_site(r.headers["location"]), (target, r.headers["location"])
        # Signed in now: the sign-out page's form and the sign-out itself stay here too.
        r = anon.get("/logout", params={"next": target})
        hidden = [html.unescape(v) for v in NEXT_FIELD.findall(r.text)]
        assert hidden and all(_local_path(v) for v in hidden), (target, hidden)
        token = CSRF_FIELD.search(r.text)
        assert token is not None
        r = anon.post(
            "/logout",
            data={"csrf": token.group(1), "next": target},
            headers={"Origin": BASE},
            follow_redirects=False,
        )
        assert r.status_code == 303 and _same_site(r.headers["location"]), target
    # The tenancy switcher only moves between the visitor's own tenancies.
    b = sign_in(portal_app, "alice")
    for to in ("//evil.example", "physics/../../admin", "chemistry"):
        r = b.get("/switch", params={"to": to}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/", (to, r.headers["location"])


def test_error_pages_escape_what_the_url_says_and_keep_the_headers(alice: Browser) -> None:
    for path in (
        "/t/physics/platforms/<svg onload=alert(1)>",
        "/t/physics/leases/<img src=x onerror=alert(1)>",
        '/t/physics/servers/"><iframe srcdoc=x>',
        "/t/physics/catalogue/<b>x<b>",
    ):
        r = alice.get(path, follow_redirects=False)
        assert r.status_code == 404, (path, r.status_code)
        for raw in ("<svg onload", "<img src=x", "<iframe srcdoc", "<b>x"):
            assert raw not in r.text, (path, raw)
        assert r.headers["x-frame-options"] == "DENY"
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["cache-control"] == "no-store"


def test_operator_pages_answer_no_other_method_to_a_member(alice: Browser) -> None:
    for path in ("/admin/hosts", "/admin/tenancies", "/admin/credits", "/admin/tenancies/physics"):
        for method in ("HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"):
            r = alice.client.request(method, path, follow_redirects=False)
            assert r.status_code in (403, 405), (method, path, r.status_code)
            assert "cpu-a" not in r.text and "grant-2027" not in r.text


def test_preemptible_cannot_be_forced_when_the_operator_forbids_it(
    portal_runtime: Runtime, alice: Browser, api: Api
) -> None:
    if portal_runtime.settings.platform_preemptible:
        pytest.skip("this runtime allows platforms on preemptible capacity")
    name = unique("pre")
    alice.get("/t/physics/catalogue/workstation")
    try:
        r = alice.post(
            "/t/physics/catalogue/workstation",
            {"name": name, "p.size": "m1.small", "preemptible": "on", "access": "alice"},
        )
        assert r.status_code == 403 and "preemptible" in r.text, (r.status_code, r.text[:300])
        assert api.get(f"/platforms/{name}").status_code == 404
    finally:
        if api.get(f"/platforms/{name}").status_code == 200:
            api.delete(f"/platforms/{name}")


def test_a_tenancy_admin_is_no_operator(portal_app: Any, api: Api) -> None:
    user = unique("tadmin")
    member(api, user)
    r = api.put("/tenancies/physics/members", json={"user": user, "role": "admin"})
    assert r.status_code in (200, 201), r.text
    b = sign_in(portal_app, user)
    assert b.get("/t/physics/").status_code == 200
    for path in ("/admin/hosts", "/admin/tenancies/physics", "/admin/credits"):
        assert b.get(path, follow_redirects=False).status_code == 403, path
    r = b.post("/admin/tenancies/physics/members", {"user": user, "role": "admin"})
    assert r.status_code == 403
    r = b.post("/admin/tenancies/chemistry/members", {"user": user, "role": "admin"})
    assert r.status_code == 403
    assert b.get("/switch?to=chemistry", follow_redirects=False).headers["location"] == "/"
    assert b.get("/t/chemistry/", follow_redirects=False).status_code == 404
