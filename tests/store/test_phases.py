"""Every edge of every state table, and the refusal of every other move."""

from __future__ import annotations

import pytest

from ecliptic.phases import TABLES, IllegalTransition, check_move


@pytest.mark.parametrize("kind", sorted(TABLES))
def test_every_allowed_edge_moves(kind: str) -> None:
    for src, targets in TABLES[kind].items():
        for dst in targets:
            assert check_move(kind, src, dst) is True


@pytest.mark.parametrize("kind", sorted(TABLES))
def test_every_other_edge_is_refused(kind: str) -> None:
    phases = set(TABLES[kind])
    for src in phases:
        assert check_move(kind, src, src) is False
        for dst in phases - TABLES[kind][src] - {src}:
            with pytest.raises(IllegalTransition, match=f"from {src} to {dst}"):
                check_move(kind, src, dst)


CYCLIC = {"hostrole": {"BAREMETAL", "HYPERVISOR"}}
"""Kinds that never end (a pool host converts back and forth), with their steady phases."""


def _reachable(table: dict[str, frozenset[str]], start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        for nxt in table[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


@pytest.mark.parametrize("kind", sorted(set(TABLES) - set(CYCLIC)))
def test_every_phase_can_reach_a_final_one(kind: str) -> None:
    table = TABLES[kind]
    finals = {p for p, out in table.items() if not out}
    assert finals
    for start in table:
        assert _reachable(table, start) & finals, f"{kind} {start} can never finish"


@pytest.mark.parametrize("kind", sorted(CYCLIC))
def test_every_phase_of_a_cyclic_kind_reaches_every_steady_one(kind: str) -> None:
    table = TABLES[kind]
    assert all(table[p] for p in table), "a cyclic kind has no dead end"
    for start in table:
        assert CYCLIC[kind] <= _reachable(table, start), f"{kind} {start} gets stuck"


def test_an_illegal_move_is_a_409_problem_not_a_500() -> None:
    """An IllegalTransition that escapes a use case reaches the user as a conflict with the
    move named (it is an EclipticError), never as an unexplained server error."""
    from ecliptic.errors import EclipticError
    from ecliptic.phases import IllegalTransition, check_move

    with pytest.raises(IllegalTransition) as caught:
        check_move("network", "DELETING", "ACTIVE")
    assert isinstance(caught.value, EclipticError)
    assert caught.value.status == 409 and caught.value.code == "illegal_transition"
    assert "cannot go from DELETING to ACTIVE" in caught.value.message
