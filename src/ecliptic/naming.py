"""Names of objects: what a valid name is, the same for the API, the services and the CLI.

No name may look like an object id (32 lowercase hex characters), so a reference by name
can never reach another object by its id.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated

from pydantic import AfterValidator, Field

NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
FLAVOR_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")


ID_LIKE_RE = re.compile(r"^[0-9a-f]{32}$")
"""Object ids are 32 lowercase hex characters: no name may look like one."""


def _not_id_like(value: str) -> str:
    if ID_LIKE_RE.match(value):
        raise ValueError(
            f"'{value}' looks like an object id (32 hexadecimal characters), so it could "
            "hide another object's id: choose a name with a letter after 'f' or a '-'"
        )
    return value


def _checker(pattern: re.Pattern[str], what: str, allowed: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        _not_id_like(value)
        if not pattern.match(value):
            raise ValueError(
                f"'{value}' is not a valid {what}: use 1-63 lowercase letters, digits{allowed}, "
                "starting and ending with a letter or digit"
            )
        return value

    return check


_name = _checker(NAME_RE, "name", " and '-'")
_flavor_name = _checker(FLAVOR_NAME_RE, "flavor name", ", '.' and '-'")

Name = Annotated[str, Field(min_length=1, max_length=63), AfterValidator(_name)]
"""1-63 lowercase letters, digits and '-' (servers, networks, leases, services...)."""
FlavorName = Annotated[str, Field(min_length=1, max_length=63), AfterValidator(_flavor_name)]
"""A name that may also hold '.' (``m1.small``)."""
