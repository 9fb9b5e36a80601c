"""The Python client on its own: waiting, error documents and saved credentials.

The API is faked at the HTTP level (``httpx.MockTransport`` answering with the API's own
payloads) only for what the real cloud cannot be made to do on demand: a server that
goes to ERROR, a proxy in front of the API that answers with HTML.
"""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from ecliptic.cli.exitcodes import ExitCode, exit_code_for
from ecliptic.client import (
    ApiError,
    Client,
    Credentials,
    WaitError,
    load_credentials,
    save_credentials,
)


def _server(phase: str, reason: str = "") -> dict[str, Any]:
    now = datetime.now(UTC).isoformat()
    return {
        "id": "0" * 32,
        "name": "web",
        "tenancy_id": "1" * 32,
        "flavor": "m1.tiny",
        "kind": "vm",
        "host": "cpu-a",
        "vcpus": 1,
        "memory_mb": 512,
        "gpu_model": None,
        "gpus": 0,
        "phase": phase,
        "phase_reason": reason,
        "generation": 1,
        "observed_generation": 0,
        "addresses": {},
        "ports": [],
        "status": {},
        "created_at": now,
        "updated_at": now,
    }


def _client(handler: Any) -> Client:
    return Client("http://ecliptic.test", token="ecl_x", transport=httpx.MockTransport(handler))


def test_wait_stops_with_a_clear_error_when_the_server_goes_to_error() -> None:
    phases = iter([("PENDING", "waiting"), ("BUILDING", "building")] * 2)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == "Bearer ecl_x"
        phase, reason = next(phases, ("ERROR", "bridge eclb-1 is owned by another instance"))
        return httpx.Response(200, json=_server(phase, reason))

    with _client(handler) as c, pytest.raises(WaitError) as err:
        c.servers.wait("web", on_change=lambda s: seen.append(s.phase))
    assert err.value.code == "phase_error"
    assert str(err.value) == (
        "server 'web' went to ERROR: bridge eclb-1 is owned by another instance; "
        "see 'ecliptic server events web'"
    )
    assert seen == ["PENDING", "BUILDING", "PENDING", "BUILDING", "ERROR"]
    assert exit_code_for(err.value) == ExitCode.WAIT_FAILED


def test_wait_deleted_returns_on_404() -> None:
    answers = iter([200, 200, 404])

    def handler(request: httpx.Request) -> httpx.Response:
        status = next(answers)
        if status == 404:
            body = {"status": 404, "code": "not_found", "detail": "no server 'web'"}
            return httpx.Response(
                404, json=body, headers={"content-type": "application/problem+json"}
            )
        return httpx.Response(200, json=_server("DELETING", "deletion requested"))

    with _client(handler) as c:
        c.servers.wait_deleted("web")
    assert next(answers, None) is None


def test_problem_documents_become_api_errors_with_fields() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = {
            "status": 422,
            "code": "invalid_input",
            "detail": "no flavor 'm9'; choose one of: m1.tiny",
            "errors": [{"loc": ["body", "flavor"], "msg": "no flavor 'm9'"}],
        }
        return httpx.Response(422, json=body)

    with _client(handler) as c, pytest.raises(ApiError) as err:
        c.servers.create("web", "m9")
    assert (err.value.status, err.value.code) == (422, "invalid_input")
    assert [(e.field, e.msg) for e in err.value.errors] == [("flavor", "no flavor 'm9'")]
    assert exit_code_for(err.value) == ExitCode.REFUSED


def test_bad_input_is_refused_before_it_is_sent() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("nothing should be sent")

    with _client(handler) as c, pytest.raises(ApiError) as err:
        c.networks.create("Bad_Name", cidr="198.18.0.0/33")
    assert err.value.status == 422
    assert {e.field for e in err.value.errors} == {"name", "cidr"}


def test_a_proxy_error_page_is_reported_as_unavailable() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    with _client(handler) as c, pytest.raises(ApiError) as err:
        c.whoami()
    assert err.value.code == "http_error" and "HTTP 502" in err.value.detail
    assert exit_code_for(err.value) == ExitCode.UNAVAILABLE


def test_saved_token_is_only_sent_to_its_own_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    for var in ("ECLIPTIC_URL", "ECLIPTIC_TOKEN", "ECLIPTIC_TENANCY", "ECLIPTIC_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    path = save_credentials(
        Credentials(url="http://a.test:8470", token="ecl_a", tenancy="lab", user="u")
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text())["token"] == "ecl_a"
    assert load_credentials() == Credentials("http://a.test:8470", "ecl_a", "lab", "u")

    c = Client.from_config()
    assert (c.url, c.token, c.tenancy) == ("http://a.test:8470", "ecl_a", "lab")
    c = Client.from_config(url="a.test:8470/api/v1/")
    assert c.token == "ecl_a"
    monkeypatch.setenv("ECLIPTIC_URL", "http://b.test")
    monkeypatch.setenv("ECLIPTIC_TENANCY", "other")
    c = Client.from_config()
    assert (c.url, c.token, c.tenancy) == ("http://b.test", None, "other")
    monkeypatch.setenv("ECLIPTIC_TOKEN", "ecl_b")
    assert Client.from_config().token == "ecl_b"
