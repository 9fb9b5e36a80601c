"""Form fields to validated inputs: the API's own pydantic models, errors per field."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter, ValidationError

from ecliptic.errors import EclipticError, InvalidInput

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


def field_errors(exc: ValidationError) -> dict[str, str]:
    """The first problem of every field, by its dotted name, said plainly."""
    out: dict[str, str] = {}
    for e in exc.errors():
        loc = ".".join(str(p) for p in e.get("loc", ()) if not isinstance(p, int)) or "form"
        msg = str(e.get("msg", "invalid")).removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif e.get("type") == "string_pattern_mismatch":
            msg = _pattern_hint(loc)
        out.setdefault(loc, msg)
    return out


def _pattern_hint(field_name: str) -> str:
    """What a name field takes, said for people (not as a regular expression)."""
    if field_name.split(".")[-1] == "name":
        return "use lower-case letters, digits and dashes, starting with a letter (e.g. my-cluster)"
    return "has characters it may not have: use letters, digits, dots, dashes or underscores"


def parse(model: type[M] | TypeAdapter[Any], data: dict[str, Any]) -> Any:
    """``data`` validated by the API's model: an ``InvalidInput`` naming each bad field."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(data)
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
        raise InvalidInput(
            "; ".join(f"{k}: {v}" for k, v in errors.items()),
            errors=[{"loc": k.split("."), "field": k, "msg": v} for k, v in errors.items()],
        ) from None


def errors_of(exc: InvalidInput) -> dict[str, str]:
    """An ``InvalidInput``'s problems by field (for inline messages)."""
    out: dict[str, str] = {}
    for e in exc.errors:
        key = str(e.get("field") or ".".join(str(p) for p in e.get("loc", ()) if p != "body"))
        # A form holds one reservation: its fields go by their own names.
        out.setdefault(key.removeprefix("reservations."), str(e.get("msg", "")))
    return out


@dataclass
class Checked(Generic[T]):
    """What checking a form gave: its result, or what is wrong (by field, and said whole)."""

    value: T | None = None
    errors: dict[str, str] = field(default_factory=dict)
    message: str = ""
    code: str = ""
    """The refusal's stable code (``no_capacity``, ``insufficient_credits``...)."""


async def check(step: Callable[[], Awaitable[T]]) -> Checked[T]:
    """Run a form's check (a dry run, a search): a refusal becomes messages for the page."""
    try:
        return Checked(await step())
    except InvalidInput as exc:
        return Checked(None, errors_of(exc), exc.message, exc.code)
    except EclipticError as exc:
        return Checked(None, {}, exc.message, exc.code)
