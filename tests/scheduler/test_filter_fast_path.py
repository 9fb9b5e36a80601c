"""Comparisons with plain words take a fast path; it must answer as the general one does."""

from __future__ import annotations

import pytest

from ecliptic.scheduler import filters
from ecliptic.scheduler.engine import Engine
from ecliptic.scheduler.model import HostRequest, NoFit
from tests.scheduler.factories import at, cpu

VALUES: list[object] = [
    "r005",
    "R005",
    "genoa",
    "1.2",
    "v1.2",
    "550",
    550,
    550.0,
    True,
    False,
    "true",
    "",
    ["r005", "x"],
    "r 005",
]
WORDS = ['"r005"', '"genoa"', '"1.2"', '"550"', '"true"', '"r 005"', '""']
TEXTS = [
    *(f"{name} {op} {w}" for name in ("rack", "missing") for op in ("==", "!=") for w in WORDS),
    *(
        f"{name} {op} {items}"
        for name in ("rack", "missing")
        for op in ("in", "not in")
        for items in ('["r005", "genoa"]', '["r005", "1.2"]', '["550"]')
    ),
]


@pytest.mark.parametrize("text", TEXTS)
def test_fast_path_agrees_with_the_general_rules(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = filters.compile_filter.__wrapped__(text)
    with monkeypatch.context() as m:
        m.setattr(filters, "_plain_comparison", lambda *a: None)
        general = filters.compile_filter.__wrapped__(text)
    for value in [*VALUES, None]:
        props = {} if value is None else {"rack": value}
        assert fast(props) == general(props), (text, value)


def test_plain_words_are_indexable() -> None:
    assert filters.compile_filter('rack == "r005"').words == ("rack", frozenset({"r005"}))
    assert filters.compile_filter('rack in ["r5", "r6"]').words == ("rack", frozenset({"r5", "r6"}))
    # Negations, and words that read as versions, numbers or booleans, are not.
    for text in ('rack != "r005"', 'driver == "550"', 'x == "true"', 'rack == "r5" and rdma'):
        assert filters.compile_filter(text).words is None, text


def test_engine_finds_hosts_by_plain_words_and_follows_a_property_change() -> None:
    hosts = [cpu(f"h{i}", rack=f"r{i % 3}") for i in range(9)]
    engine = Engine(hosts)
    got = engine.fit("l1", [HostRequest("hosts", 3, 3, 'rack == "r1"')], at(0), at(2))
    assert not isinstance(got, NoFit)
    assert sorted(got.hosts("hosts")) == ["h1", "h4", "h7"]
    got = engine.fit("l2", [HostRequest("hosts", 1, 9, 'name in ["h2", "h5"]')], at(0), at(2))
    assert not isinstance(got, NoFit) and sorted(got.hosts("hosts")) == ["h2", "h5"]
    # h0 moves to rack r1: the next search by rack sees it there, and no longer in r0.
    engine.set_host(cpu("h0", rack="r1"))
    got = engine.fit("l3", [HostRequest("hosts", 4, 4, 'rack == "r1"')], at(0), at(2))
    assert not isinstance(got, NoFit)
    assert sorted(got.hosts("hosts")) == ["h0", "h1", "h4", "h7"]
    assert isinstance(
        engine.fit("l4", [HostRequest("hosts", 3, 3, 'rack == "r0"')], at(0), at(2)), NoFit
    )
