"""Form errors said for people: a name's rule in words, not as a regular expression."""

from __future__ import annotations

import pytest

from ecliptic.api.schemas import PlatformCreate
from ecliptic.errors import InvalidInput
from ecliptic.web.forms import errors_of, parse


def test_a_bad_platform_name_is_explained_in_words() -> None:
    with pytest.raises(InvalidInput) as refused:
        parse(PlatformCreate, {"name": "Bad_Name", "type": "slurm"})
    errors = errors_of(refused.value)
    assert errors["name"].startswith("use lower-case letters, digits and dashes")
    assert "^[a-z]" not in refused.value.message
