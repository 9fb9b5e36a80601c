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


@pytest.mark.parametrize("kind", sorted(TABLES))
def test_every_phase_can_reach_a_final_one(kind: str) -> None:
    table = TABLES[kind]
    finals = {p for p, out in table.items() if not out}
    assert finals
    for start in table:
        seen, todo = {start}, [start]
        while todo:
            for nxt in table[todo.pop()]:
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        assert seen & finals, f"{kind} {start} can never finish"
