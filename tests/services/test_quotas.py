"""On-demand use is bounded: reservation-only flavors and per-tenancy quotas."""

from __future__ import annotations

import threading

import pytest

from ecliptic.config import InvalidSetting, load_settings
from ecliptic.errors import Forbidden
from ecliptic.services import quotas, servers
from ecliptic.services.quotas import QuotaExceeded
from ecliptic.services.servers import ReservationOnly
from tests.services.conftest import Env


def test_gpu_and_bare_metal_flavors_are_refused_on_demand_with_how_to_reserve(env: Env) -> None:
    for flavor in ("g1.a100", "bm.gpu", "bm.cpu"):
        with pytest.raises(ReservationOnly) as caught:
            servers.create_server(env.booking, env.queue, env.alice, "gpu", flavor, [])
        assert f"ecliptic lease create NAME --flavor {flavor}" in caught.value.message
        assert caught.value.status == 409
    # Preemptible use of the same flavor is allowed: it gives way to leases.
    srv = servers.create_server(
        env.booking, env.queue, env.alice, "backfill", "g1.a100", [], preemptible=True
    )
    assert srv.preemptible


def test_quotas_bound_on_demand_use_and_name_what_is_exceeded(env: Env) -> None:
    name, q = quotas.set_limits(env.db, env.admin, "physics", {"servers": 2, "vcpus": 3})
    assert name == "physics" and q.limits["servers"] == 2 and not q.defaults["servers"]
    assert q.defaults["memory_mb"] and q.limits["memory_mb"] == quotas.DEFAULTS["memory_mb"]
    servers.create_server(env.booking, env.queue, env.alice, "a", "m1.medium", [])  # 2 vCPU
    with pytest.raises(
        QuotaExceeded, match=r"quota 'vcpus' exceeded: 2 in use \+ 2 asked > limit 3"
    ):
        servers.create_server(env.booking, env.queue, env.alice, "b", "m1.medium", [])
    servers.create_server(env.booking, env.queue, env.alice, "b", "m1.tiny", [])
    with pytest.raises(QuotaExceeded, match="quota 'servers' exceeded"):
        servers.create_server(env.booking, env.queue, env.alice, "c", "m1.tiny", [])
    # Preemptible servers are outside the quota; the tenancy sees its use.
    servers.create_server(env.booking, env.queue, env.alice, "p", "m1.tiny", [], preemptible=True)
    _, q = quotas.show(env.db, env.alice)
    assert q.used == {"servers": 2, "vcpus": 3, "memory_mb": 4096 + 512, "gpus": 0}
    # Back to the default; members cannot change quotas.
    _, q = quotas.set_limits(env.db, env.admin, "physics", {"servers": None, "vcpus": None})
    assert q.defaults["servers"] and q.limits["servers"] == quotas.DEFAULTS["servers"]
    with pytest.raises(Forbidden):
        quotas.set_limits(env.db, env.alice, "physics", {"servers": 100})
    with pytest.raises(Forbidden):  # nor look at another tenancy's
        quotas.show(env.db, env.alice, "chemistry")
    assert quotas.show(env.db, env.admin, "chemistry")[0] == "chemistry"


def test_the_site_default_is_a_setting(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECLIPTIC_QUOTA_SERVERS", "many")
    with pytest.raises(InvalidSetting, match="ECLIPTIC_QUOTA_SERVERS='many': give a whole number"):
        load_settings()
    monkeypatch.setenv("ECLIPTIC_QUOTA_SERVERS", "1")
    servers.create_server(env.booking, env.queue, env.alice, "one", "m1.tiny", [])
    with pytest.raises(QuotaExceeded, match="limit 1"):
        servers.create_server(env.booking, env.queue, env.alice, "two", "m1.tiny", [])


def test_concurrent_creates_cannot_both_slip_under_the_quota(env: Env) -> None:
    quotas.set_limits(env.db, env.admin, "physics", {"servers": 3})
    outcomes: list[str] = []
    lock = threading.Lock()

    def create(i: int) -> None:
        try:
            servers.create_server(env.booking, env.queue, env.alice, f"r{i}", "m1.tiny", [])
            result = "ok"
        except QuotaExceeded:
            result = "quota"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 3 and outcomes.count("quota") == 5
