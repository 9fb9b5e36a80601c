"""What an attack on platforms found, each tried again: a member who is not on a platform's
access list, hostile parameters, a hostile type sent to the validator."""

from __future__ import annotations

import time
from typing import Any

import pytest

from ecliptic.platforms.types import TypeFileError, parse_type
from ecliptic.reconcile.platforms import _Failed, fetch_wheels
from tests.platforms.conftest import wait_phase
from tests.tunnel.conftest import Served, needs_gateway


def _member(served: Served, name: str) -> dict[str, str]:
    api = served.api
    r = api.post("/users", json={"name": name, "password": f"{name}-password-1"})
    assert r.status_code in (201, 409), r.text
    api.put("/tenancies/default/members", json={"user": name, "role": "member"})
    token = api.post(
        "/auth/login", json={"username": name, "password": f"{name}-password-1"}
    ).json()["secret"]
    return {"Authorization": f"Bearer {token}"}


@needs_gateway
def test_a_member_off_the_access_list_cannot_get_in_by_the_side(served: Served) -> None:
    api = served.api
    mallory = _member(served, "mallory")
    r = api.post("/platforms", json={"name": "sd", "type": "web", "parameters": {"workers": 0}})
    assert r.status_code == 202, r.text
    wait_phase(api, "sd", "READY", timeout=60)
    flavor = "m1.tiny"
    tries: list[tuple[str, str, dict[str, Any] | None]] = [
        (
            "POST",
            "/servers",
            {"name": "sneak", "flavor": flavor, "networks": [{"network": "sd-net"}]},
        ),
        ("POST", "/ports", {"network": "sd-net", "name": "sneak-port"}),
        ("POST", "/subnets", {"name": "sneak-sub", "network": "sd-net"}),
        ("DELETE", "/networks/sd-net", None),
        ("POST", "/security-groups/platform:sd/rules", {"direction": "ingress"}),
        ("DELETE", "/security-groups/platform:sd", None),
        ("PUT", "/servers/sd-web1/security-groups", {"security_groups": ["default"]}),
    ]
    for who in (mallory, {}):  # a member off the list, and the platform's owner (admin) too
        for method, path, body in tries:
            r = api.request(method, path, json=body, headers=who)
            assert r.status_code in (403, 404, 422), (who, method, path, r.status_code, r.text)
            assert r.status_code != 404 or "platform" in r.text or path.startswith("/security"), (
                r.text
            )
    assert api.get("/servers/sneak").status_code == 404
    srv = api.get("/servers/sd-web1").json()
    assert srv["security_groups"] == ["platform:sd"], srv
    # Its gateway service names are its own: a service named so first makes create refuse,
    # before any server is made.
    r = api.post("/services", json={"name": "sq-site"})
    assert r.status_code == 201, r.text
    r = api.post("/platforms", json={"name": "sq", "type": "web", "parameters": {"workers": 0}})
    assert r.status_code == 409 and "sq-site" in r.json()["detail"], r.text
    assert not [s for s in api.get("/servers").json()["items"] if s["name"].startswith("sq-")]
    # The lease a platform runs in is not changed by a patch.
    r = api.patch("/platforms/sd", json={"parameters": {"lease": "another"}})
    assert r.status_code == 422 and "lease" in r.json()["detail"], r.text
    # Who leaves the tenancy leaves the access list.
    assert api.put("/platforms/sd/access", json={"users": ["admin", "mallory"]}).is_success
    r = api.delete("/tenancies/default/members/mallory")
    assert r.status_code in (200, 204), r.text
    assert api.get("/platforms/sd").json()["access"] == ["admin"]
    api.delete("/platforms/sd")
    deadline = time.monotonic() + 60
    while api.get("/platforms/sd").status_code != 404:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    names = [g["name"] for g in api.get("/security-groups").json()["items"]]
    assert "platform:sd" not in names


@needs_gateway
def test_validating_types_on_the_server_is_for_administrators(served: Served) -> None:
    mallory = _member(served, "mallory2")
    r = served.api.post("/platform-types/validate", json={"text": "name: x"}, headers=mallory)
    assert r.status_code == 403, r.text
    r = served.api.post("/platform-types/validate", json={"text": "name: [x\n"})
    assert r.status_code == 200 and r.json()["valid"] is False


def test_yaml_aliases_are_refused_and_messages_stay_short() -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefg", "bcdefgh", strict=True)
    )
    with pytest.raises(TypeFileError) as exc:
        parse_type("name: x\nlabel: x\nversion: '1'\n" + bomb)
    assert "anchors and aliases" in str(exc.value) and len(str(exc.value)) < 500
    text = "name: x\nlabel: x\nversion: '1'\nroles: [{name: r, size: m1.tiny}]\n"
    long_default = "parameters:\n  - {name: n, kind: integer, default: '" + "9" * 5000 + "'}\n"
    with pytest.raises(TypeFileError) as exc:
        parse_type(text + long_default)
    assert len(str(exc.value)) < 500


def test_pip_takes_names_from_pypi_never_a_local_file(tmp_path: Any, monkeypatch: Any) -> None:
    for bad in ("evil-1.0.tar.gz", "evil.whl", "x.zip", "--index-url=http://x/", "./pkg", "a@b"):
        with pytest.raises(_Failed) as exc:
            fetch_wheels((bad,))
        assert "not a PyPI requirement" in str(exc.value)


def test_the_jupyter_packages_pattern_is_linear() -> None:
    import re

    from ecliptic.platforms.types import Catalogue

    entry = Catalogue().get("jupyter")
    assert entry is not None
    p = entry.type.parameter("packages")
    assert p is not None and p.pattern is not None
    started = time.monotonic()
    assert re.fullmatch(p.pattern, "a" * 999 + "#") is None
    assert time.monotonic() - started < 1.0  # catastrophic backtracking would take years
