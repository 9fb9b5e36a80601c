"""One ``ecliptic serve`` with its gateway for the platform tests (started once for all of
them), the test platform types, and helpers that wait on phases."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.tunnel.conftest import Served, serve_with_gateway

TYPES = Path(__file__).parent / "types"


@pytest.fixture(scope="package")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``ecliptic serve`` whose servers reach its API and tunnel endpoint, with the test
    platform types besides the built-ins, shared by the platform tests (each uses names of
    its own); every platform is deleted at the end."""
    tmp = tmp_path_factory.mktemp("platforms")
    with serve_with_gateway(
        tmp,
        ECLIPTIC_HOST="0.0.0.0",
        ECLIPTIC_GATEWAY_SSH_HOST="0.0.0.0",
        ECLIPTIC_PLATFORM_TYPES=str(TYPES),
        ECLIPTIC_WORKERS="2",
        ECLIPTIC_PLATFORM_PREEMPTIBLE="on",
    ) as s:
        try:
            yield s
        finally:
            delete_all(s.api)


def delete_all(api: httpx.Client, timeout: float = 90) -> None:
    """Delete every platform and wait until they (and their servers) are gone."""
    names = [p["name"] for p in api.get("/platforms", params={"limit": 1000}).json()["items"]]
    for n in names:
        api.delete(f"/platforms/{n}")
    deadline = time.monotonic() + timeout
    for n in names:
        while api.get(f"/platforms/{n}").status_code != 404:
            assert time.monotonic() < deadline, f"platform {n} was not deleted"
            time.sleep(0.1)


def wait_phase(api: httpx.Client, name: str, *phases: str, timeout: float = 120) -> dict[str, Any]:
    """The platform once it is in one of ``phases`` (fails on FAILED unless asked for)."""
    deadline = time.monotonic() + timeout
    while True:
        r = api.get(f"/platforms/{name}")
        assert r.status_code == 200, r.text
        body = dict(r.json())
        if body["phase"] in phases:
            return body
        assert body["phase"] != "FAILED", (body["phase_reason"], body["failed"])
        assert time.monotonic() < deadline, f"{name} never reached {phases}: {body}"
        time.sleep(0.1)


def events(api: httpx.Client, name: str) -> list[str]:
    """The platform's timeline, as reasons."""
    r = api.get(f"/platforms/{name}/events", params={"limit": 1000})
    assert r.status_code == 200, r.text
    return [e["reason"] for e in r.json()["items"]]
