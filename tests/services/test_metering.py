"""On-demand use of metered classes is paid by the hour from credits, and stops when they
run out; on-demand servers take the room of preemptible ones only once those are gone."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select

from ecliptic.clock import ManualClock
from ecliptic.config import InvalidSetting, load_settings
from ecliptic.phases import ServerPhase
from ecliptic.reconcile.base import Context
from ecliptic.reconcile.worker import Workers
from ecliptic.services import catalogue, credits, metering, quotas, servers
from ecliptic.services.credits import InsufficientCredits
from ecliptic.services.pricing import MeterPolicy
from ecliptic.store.models import DeletedServer, Event, LedgerEntry, Server
from tests.services.conftest import Env, MemoryBackend


def _clock(env: Env) -> ManualClock:
    clock = env.booking.clock
    assert isinstance(clock, ManualClock)
    return clock


def _on_demand_gpu_flavor(env: Env) -> None:
    catalogue.create_flavor(
        env.db,
        env.admin,
        {
            "name": "g1.a100.od",
            "vcpus": 4,
            "memory_mb": 8192,
            "disk_gb": 20,
            "gpu_model": "A100",
            "gpus": 1,
            "reservation_only": False,
        },
    )
    quotas.set_limits(env.db, env.admin, "physics", {"gpus": 4})


def _grant(env: Env, rc: str, amount: str) -> None:
    now = env.booking.clock.now()
    with env.db.write() as s:
        credits.grant(
            s,
            env.alice.tenancy_id or "",
            "grant",
            rc,
            Decimal(amount),
            now,
            now + timedelta(days=30),
        )


def _ledger(env: Env, server_id: str) -> list[tuple[str, Decimal]]:
    with env.db.read() as s:
        return [
            (e.kind, Decimal(e.hours))
            for e in s.scalars(
                select(LedgerEntry)
                .where(LedgerEntry.server_id == server_id)
                .order_by(LedgerEntry.id)
            )
        ]


def _meter(env: Env) -> float:
    return metering.meter_due(env.db, env.queue, env.booking.meter, env.booking.clock.now())


def test_on_demand_gpu_use_is_charged_hour_by_hour_warned_and_stopped(env: Env) -> None:
    _on_demand_gpu_flavor(env)
    env.booking.meter = MeterPolicy(warn=timedelta(hours=2))
    # No credits for GPUs: refused, saying the price and how to reserve instead.
    with pytest.raises(InsufficientCredits) as refused:
        servers.create_server(env.booking, env.queue, env.alice, "nb", "g1.a100.od", [])
    message = refused.value.message
    assert "paid by the hour from your credits (1 A100 GPU an hour)" in message
    assert "no allocation of A100 GPU-hours" in message
    assert "ecliptic lease create NAME --flavor g1.a100.od" in message

    _grant(env, "gpu:A100", "2.5")
    srv = servers.create_server(env.booking, env.queue, env.alice, "nb", "g1.a100.od", [])
    assert _ledger(env, srv.id) == [("charge", Decimal("-1.000"))]  # the first hour
    # Free vCPUs are not metered by default; the site can say otherwise.
    assert srv.spec["meter"] == {"gpu:A100": "1"}

    clock = _clock(env)
    clock.advance(timedelta(minutes=59))
    assert 0 < _meter(env) <= 60  # nothing due yet: comes back when the hour begins
    assert len(_ledger(env, srv.id)) == 1
    clock.advance(timedelta(minutes=1))
    _meter(env)
    assert [h for _, h in _ledger(env, srv.id)] == [Decimal("-1.000"), Decimal("-1.000")]
    with env.db.read() as s:
        notes = [e.reason for e in s.scalars(select(Event).where(Event.object_id == srv.id))]
    # 0.5 GPU-hours left at 1 an hour: less than the 2 h warning time, said once.
    warned = [n for n in notes if n.startswith("credits low")]
    assert len(warned) == 1 and "0.5 A100 GPU-hours left, about 0.5 h" in warned[0]

    clock.advance(timedelta(hours=1))
    _meter(env)
    with env.db.read() as s:
        row = s.get(Server, srv.id)
        assert row is not None and row.phase == ServerPhase.DELETING
        assert "the credits for its on-demand use ran out" in row.phase_reason
        assert "ecliptic credits allocate" in row.phase_reason
    balances = {b.resource_class: b.remaining for b in credits.list_balances(env.db, env.alice)}
    assert balances["gpu:A100"] == Decimal("0.5")  # never below what was granted


def test_the_unused_part_of_the_last_hour_is_refunded_when_the_server_goes(env: Env) -> None:
    _on_demand_gpu_flavor(env)
    _grant(env, "gpu:A100", "10")
    srv = servers.create_server(env.booking, env.queue, env.alice, "nb", "g1.a100.od", [])
    ctx = Context(env.db, MemoryBackend(), env.queue, env.booking)  # type: ignore[arg-type]
    Workers(ctx).drain()
    _clock(env).advance(timedelta(minutes=20))
    servers.delete_server(env.db, env.queue, env.alice, "nb")
    Workers(ctx).drain()
    with env.db.read() as s:
        assert s.get(Server, srv.id) is None and s.get(DeletedServer, srv.id) is not None
    moves = _ledger(env, srv.id)
    assert moves[0] == ("charge", Decimal("-1.000"))
    # 21 minutes used (the minute it went in counts): 39 minutes back.
    assert moves[1] == ("refund", Decimal("0.650"))
    balances = {b.resource_class: b.remaining for b in credits.list_balances(env.db, env.alice)}
    assert balances["gpu:A100"] == Decimal("9.650")


def test_metering_is_a_site_setting(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECLIPTIC_METERED_CLASSES", "gpu:*, vcpu")
    assert load_settings().metered_classes == ("gpu:*", "vcpu")
    monkeypatch.setenv("ECLIPTIC_METERED_CLASSES", "")
    assert load_settings().metered_classes == ()
    monkeypatch.setenv("ECLIPTIC_METERED_CLASSES", "gpus")
    with pytest.raises(InvalidSetting, match="'gpus' is not a resource class pattern"):
        load_settings()
    monkeypatch.delenv("ECLIPTIC_METERED_CLASSES")
    assert load_settings().metered_classes == ("gpu:*", "host:*")
    # With vCPUs metered, every on-demand server pays; preemptible ones never do.
    env.booking.meter = MeterPolicy(("vcpu",))
    with pytest.raises(InsufficientCredits, match="2 vCPU an hour"):
        servers.create_server(env.booking, env.queue, env.alice, "web", "m1.medium", [])
    spare = servers.create_server(
        env.booking, env.queue, env.alice, "spare", "m1.medium", [], preemptible=True
    )
    assert spare.metered_until is None


def test_an_on_demand_server_waits_for_the_preemptible_servers_it_displaces(env: Env) -> None:
    clock = _clock(env)
    # Two preemptible m1.xlarge fill the only host big enough (gpu-1, 32 vCPU).
    spots = [
        servers.create_server(
            env.booking, env.queue, env.alice, f"spot-{i}", "m1.xlarge", [], preemptible=True
        )
        for i in range(2)
    ]
    assert {s.host_id for s in spots} == {spots[0].host_id}
    backend = MemoryBackend()
    ctx = Context(env.db, backend, env.queue, env.booking)  # type: ignore[arg-type]
    Workers(ctx).drain()
    # Inside their minimum lifetime they keep their room: no on-demand server there.
    with pytest.raises(servers.NoCapacity):
        servers.create_server(env.booking, env.queue, env.alice, "urgent", "m1.xlarge", [])
    clock.advance(timedelta(hours=2))
    srv = servers.create_server(env.booking, env.queue, env.alice, "urgent", "m1.xlarge", [])
    with env.db.read() as s:
        row = s.get(Server, srv.id)
        assert row is not None
        victims = [s.get(Server, sid) for sid in row.spec["after"]]
    # One makes way (one is enough), with SIGTERM and the grace.
    assert len(victims) == 1
    victim = victims[0]
    assert victim is not None and victim.phase == ServerPhase.DELETING
    assert "on-demand server 'urgent' needs the room" in victim.phase_reason
    assert victim.spec["stop_grace_s"] == env.booking.preemptible_grace.total_seconds()
    # The server is built once the victim is gone, never beside it.
    claim = env.queue.claim(["server"])
    while claim is not None and claim.object_id != srv.id:
        Workers(ctx).process(claim)
        claim = env.queue.claim(["server"])
    assert srv.id not in backend.servers
    if claim is not None:
        Workers(ctx).process(claim)
    Workers(ctx).drain()
    assert srv.id in backend.servers and victim.id not in backend.servers
    with env.db.read() as s:
        left = {r.name for r in s.scalars(select(Server))}
    assert left == {"spot-0", "spot-1", "urgent"} - {victim.name}
