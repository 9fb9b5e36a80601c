"""Administrator garbage collection: what no known object owns goes, nothing else."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from ecliptic.backends.local.backend import GC_CLOCK_MARGIN_S
from ecliptic.reconcile import adoption
from ecliptic.runtime import Runtime
from ecliptic.store.models import Port, Server
from tests.api.conftest import Api


def _netns() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_gc_keeps_a_server_committed_between_its_reads(
    admin: Api, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server created (and made by a worker) after the known ids were read survives GC."""
    real = adoption.known_ids

    def read_then_commit(ctx: adoption.Context) -> tuple[set[str], set[str]]:
        ids = real(ctx)
        r = admin.post("/servers", {"name": "late", "flavor": "m1.tiny"})
        assert r.status_code == 202, r.text
        admin.wait("late")  # committed, and its namespace and owner record exist
        return ids

    monkeypatch.setattr(adoption, "known_ids", read_then_commit)
    r = admin.post("/backend/gc")
    assert r.status_code == 200, r.text
    assert r.json()["removed"] == []
    monkeypatch.undo()
    late = admin.wait("late")
    assert f"ecl-{late['id'][:10]}" in _netns()
    run = admin.post("/servers/late/exec", {"argv": ["hostname"], "timeout": 10})
    assert run.status_code == 200 and run.json()["stdout"] == "late\n"
    # What no known object owns still goes: forget the server in the store only, once its
    # records are older than the margin kept for the file system's coarse clock.
    runtime.workers.stop()
    # Age its owner records past the margin instead of sleeping it out.
    old = time.time() - GC_CLOCK_MARGIN_S - 10
    for rec in Path(os.environ["ECLIPTIC_OWNERS_DIR"]).iterdir():
        if late["id"] in rec.read_text():
            os.utime(rec, (old, old))
    with runtime.db.write() as session:
        for port in session.query(Port).filter(Port.server_id == late["id"]):
            session.delete(port)
        session.delete(session.get(Server, late["id"]))
    removed = admin.post("/backend/gc").json()["removed"]
    assert {r["kind"] for r in removed} >= {"server"}
    assert f"ecl-{late['id'][:10]}" not in _netns()
