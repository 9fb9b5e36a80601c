"""A crash-test instance with the test platform types, cleaned up (platforms, servers,
networks) after the test, shared by the platform and benchmark crash tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.crash.test_crash_safety import Instance
from tests.platforms.conftest import TYPES


@pytest.fixture
def inst(tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Instance]:
    monkeypatch.setenv("ECLIPTIC_PLATFORM_TYPES", str(TYPES))
    i = Instance(tmp_path, sqlite_url)
    yield i
    i.stop()
    try:
        i.start()
        for p in i.call("GET", "/platforms").json()["items"]:
            i.call("DELETE", f"/platforms/{p['name']}")
        i.wait_for(lambda: i.call("GET", "/platforms").json()["items"] == [], "platforms gone", 90)
        for s in i.servers():
            i.call("DELETE", f"/servers/{s['id']}")
        i.wait_for(lambda: i.servers() == [], "servers gone", 60)
        for n in i.call("GET", "/networks").json()["items"]:
            i.call("DELETE", f"/networks/{n['id']}")
        i.wait_for(lambda: i.call("GET", "/networks").json()["items"] == [], "networks gone")
    finally:
        i.stop()
