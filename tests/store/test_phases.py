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


def test_deleting_is_final() -> None:
    for kind in TABLES:
        assert TABLES[kind]["DELETING"] == frozenset()
