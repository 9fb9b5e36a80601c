"""One envelope for every list: ``{"items": [...], "next": marker or null}``.

Every collection answers a page of at most ``limit`` items in its own order; ``next`` is
the marker of the last one when more follow: pass it as ``marker`` for the next page. A
marker that is no longer in the list (its object was deleted meanwhile) is refused with
a message, as OpenStack does, rather than silently starting over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Query

from ecliptic.api.schemas import Page
from ecliptic.errors import InvalidInput

T = TypeVar("T")
O = TypeVar("O")  # noqa: E741

MAX_LIMIT = 1000


@dataclass(frozen=True)
class Paging:
    """What page of a list was asked for."""

    limit: int
    marker: str | None


def paging(
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description="the most items to answer (1-1000)")
    ] = MAX_LIMIT,
    marker: Annotated[
        str | None,
        Query(max_length=200, description="the 'next' of the previous page: answer what follows"),
    ] = None,
) -> Paging:
    """The ``limit`` and ``marker`` query parameters of a list."""
    return Paging(limit, marker)


PagingDep = Annotated[Paging, Depends(paging)]


def paged(
    rows: Iterable[T], page: Paging, key: Callable[[T], object], out: Callable[[T], O]
) -> Page[O]:
    """The page ``page`` asks for of ``rows`` (in their order), each item made by ``out``;
    ``key`` gives an item's marker (its id, say)."""
    items = list(rows)
    first = 0
    if page.marker is not None:
        keys = [str(key(r)) for r in items]
        try:
            first = keys.index(page.marker) + 1
        except ValueError:
            raise InvalidInput(
                f"marker {page.marker!r} is not in this list (what it named may have been "
                "deleted): start again without a marker",
                errors=[{"loc": ["query", "marker"], "msg": "unknown marker"}],
            ) from None
    chunk = items[first : first + page.limit]
    more = first + page.limit < len(items)
    return Page[O](
        items=[out(r) for r in chunk], next=str(key(chunk[-1])) if more and chunk else None
    )


NameFilter = Annotated[
    str | None,
    Query(max_length=63, description="only items whose name contains this (any case)"),
]


def matches(name: str, wanted: str | None) -> bool:
    """True when no name filter is given or ``name`` contains it (case-insensitive)."""
    return wanted is None or wanted.lower() in name.lower()
